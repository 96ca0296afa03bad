//! Helpers shared by the codec's integration tests.
#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a subset

use bytes::{Bytes, BytesMut};
use kitsune2_iroh_codec::{CodecError, Frame, FrameDecoder, FrameOrder, Limits, StreamDecoder};

/// Decodes all of `wire` in one chunk with a StreamDecoder, then checks EOF.
pub fn decode_all(
    wire: &[u8],
    limits: Limits,
    order: FrameOrder,
) -> Result<Vec<Frame>, CodecError> {
    let mut d = StreamDecoder::with_order(limits, order);
    d.feed(Bytes::copy_from_slice(wire));
    let mut out = Vec::new();
    // Bounded: every frame consumes at least its 5-byte header.
    for _ in 0..=wire.len() / 5 {
        match d.next_frame()? {
            Some(f) => out.push(f),
            None => break,
        }
    }
    d.finish()?;
    Ok(out)
}

/// Decodes all of `wire` with a FrameDecoder over one BytesMut, as tokio-util would.
pub fn decode_all_bytesmut(
    wire: &[u8],
    limits: Limits,
    order: FrameOrder,
) -> Result<Vec<Frame>, CodecError> {
    let mut d = FrameDecoder::with_order(limits, order);
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    for _ in 0..=wire.len() / 5 + 1 {
        match d.decode_eof(&mut buf)? {
            Some(f) => out.push(f),
            None => break,
        }
    }
    Ok(out)
}

/// Parses whitespace-separated hex.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length in {s:?}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}
