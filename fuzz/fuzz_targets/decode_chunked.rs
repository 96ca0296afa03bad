//! Arbitrary bytes split at fuzzer-chosen boundaries decode exactly as the
//! same bytes in one piece: same frames, same error.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use kitsune2_iroh_codec::{CodecError, Frame, FrameOrder, Limits, StreamDecoder};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    /// Chunk sizes; each is scaled so both sides of the decoder's 4 KiB
    /// coalescing threshold are reached.
    cuts: Vec<u16>,
    strict: bool,
    data: Vec<u8>,
}

fn decode(chunks: &[Bytes], order: FrameOrder) -> (Vec<Frame>, Option<CodecError>) {
    let mut d = StreamDecoder::with_order(Limits::new(64 * 1024).expect("valid"), order);
    let mut frames = Vec::new();
    for c in chunks {
        d.feed(c.clone());
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
    let one_shot = decode(&[wire.clone()], order);
    let chunked = decode(&chunks, order);
    assert_eq!(one_shot, chunked, "chunking changed the result");
});
