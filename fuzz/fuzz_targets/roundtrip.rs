//! Arbitrary frames: decode(encode(f)) == f, and the zero-copy encoding is
//! byte-identical to the one-buffer encoding.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use kitsune2_iroh_codec::{Frame, FrameOrder, Limits, StreamDecoder};
use libfuzzer_sys::fuzz_target;

/// A mirror of `Frame`, so the codec needs no `arbitrary` dependency.
#[derive(Debug, Arbitrary)]
enum ArbFrame {
    Preflight { url: String, data: Vec<u8> },
    Data(Vec<u8>),
}

impl From<ArbFrame> for Frame {
    fn from(f: ArbFrame) -> Self {
        match f {
            ArbFrame::Preflight { url, data } => Frame::preflight(url, Bytes::from(data)),
            ArbFrame::Data(d) => Frame::data(Bytes::from(d)),
        }
    }
}

fuzz_target!(|frames: Vec<ArbFrame>| {
    let limits = Limits::default();
    let frames: Vec<Frame> = frames.into_iter().map(Frame::from).collect();
    let mut one_buffer = BytesMut::new();
    let mut chunks = Vec::new();
    for f in &frames {
        f.encode_into(&mut one_buffer, &limits)
            .expect("fuzzer frames are small");
        let encoded = f.clone().encode(&limits).expect("fuzzer frames are small");
        assert_eq!(encoded.len() as u64, f.encoded_len());
        chunks.extend(encoded.into_chunks());
    }
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    assert_eq!(
        &one_buffer[..],
        &joined[..],
        "encode and encode_into differ"
    );

    let mut d = StreamDecoder::with_order(limits, FrameOrder::Any);
    for c in chunks {
        d.feed(c);
    }
    let mut decoded = Vec::new();
    while let Some(f) = d.next_frame().expect("encoded frames decode") {
        decoded.push(f);
    }
    d.finish().expect("stream ends on a frame boundary");
    assert_eq!(decoded, frames);
});
