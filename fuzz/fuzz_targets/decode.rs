//! Arbitrary bytes into both decoders, in both orders: never panics, and the
//! two decoders (and `StreamDecoder`'s `feed` and `feed_slice`) agree on
//! every frame and on the error.
#![no_main]

use bytes::{Bytes, BytesMut};
use kitsune2_iroh_codec::{CodecError, Frame, FrameDecoder, FrameOrder, Limits, StreamDecoder};
use libfuzzer_sys::fuzz_target;

fn with_stream(
    data: &[u8],
    limits: Limits,
    order: FrameOrder,
    by_slice: bool,
) -> (Vec<Frame>, Option<CodecError>) {
    let mut d = StreamDecoder::with_order(limits, order);
    if by_slice {
        d.feed_slice(data);
    } else {
        d.feed(Bytes::copy_from_slice(data));
    }
    let mut frames = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, d.finish().err()),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn with_bytesmut(
    data: &[u8],
    limits: Limits,
    order: FrameOrder,
) -> (Vec<Frame>, Option<CodecError>) {
    let mut d = FrameDecoder::with_order(limits, order);
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    loop {
        match d.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a small limit so FrameTooLarge paths are reached.
    let (max, data) = match data.split_first() {
        Some((m, rest)) => (usize::from(*m) * 4 + 5, rest),
        None => (5, data),
    };
    let limits = Limits::new(max).expect("at least the header length");
    for order in [FrameOrder::Any, FrameOrder::PreflightThenData] {
        let a = with_stream(data, limits, order, false);
        let b = with_bytesmut(data, limits, order);
        assert_eq!(a, b, "decoders disagree");
        let c = with_stream(data, limits, order, true);
        assert_eq!(a, c, "feed and feed_slice disagree");
        for f in &a.0 {
            assert!(
                f.encoded_len() <= max as u64,
                "a frame over the limit got through"
            );
        }
    }
});
