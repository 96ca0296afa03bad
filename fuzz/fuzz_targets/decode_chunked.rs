//! Arbitrary bytes split at fuzzer-chosen boundaries decode exactly as the
//! same bytes in one piece: same frames, same error. The chunks go in as
//! `Bytes` (`feed`), as slices (`feed_slice`) and as reads appended to a
//! `BytesMut` (`FrameDecoder`).
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use kitsune2_iroh_codec::{CodecError, Frame, FrameDecoder, FrameOrder, Limits, StreamDecoder};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Chunk sizes; each is scaled so both sides of the decoder's 4 KiB
    /// coalescing threshold are reached.
    cuts: Vec<u16>,
    strict: bool,
    data: Vec<u8>,
}

type Outcome = (Vec<Frame>, Option<CodecError>);

fn limits() -> Limits {
    Limits::new(64 * 1024).expect("above the header length")
}

fn decode(chunks: &[Bytes], order: FrameOrder, by_slice: bool) -> Outcome {
    let mut d = StreamDecoder::with_order(limits(), order);
    let mut frames = Vec::new();
    for c in chunks {
        if by_slice {
            d.feed_slice(c);
        } else {
            d.feed(c.clone());
        }
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, d.finish().err())
}

fn decode_bytesmut(chunks: &[Bytes], order: FrameOrder) -> Outcome {
    let mut d = FrameDecoder::with_order(limits(), order);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    loop {
        match d.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fuzz_target!(|input: Input| {
    let order = if input.strict {
        FrameOrder::PreflightThenData
    } else {
        FrameOrder::Any
    };
    let wire = Bytes::from(input.data);
    let mut chunks = Vec::new();
    let mut at = 0;
    for cut in input.cuts {
        if at >= wire.len() {
            break;
        }
        let len = if cut & 1 == 1 {
            usize::from(cut >> 1)
        } else {
            usize::from(cut >> 8)
        };
        let end = (at + len).min(wire.len());
        chunks.push(wire.slice(at..end));
        at = end;
    }
    chunks.push(wire.slice(at..));
    let one_shot = decode(&[wire.clone()], order, false);
    assert_eq!(
        one_shot,
        decode(&chunks, order, false),
        "chunking changed the result (feed)"
    );
    assert_eq!(
        one_shot,
        decode(&chunks, order, true),
        "chunking changed the result (feed_slice)"
    );
    assert_eq!(
        one_shot,
        decode_bytesmut(&chunks, order),
        "chunking changed the result (FrameDecoder)"
    );
});
