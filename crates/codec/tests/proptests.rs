//! Property tests: round trip, split invariance, no panics on any input.

mod common;

use bytes::{Bytes, BytesMut};
use common::{decode_all, decode_all_bytesmut};
use kitsune2_iroh_codec::{Frame, FrameOrder, Limits, StreamDecoder};
use proptest::prelude::*;

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| Frame::data(Bytes::from(d))),
        (".{0,40}", proptest::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(url, d)| Frame::preflight(url, Bytes::from(d))),
    ]
}

fn encode_stream(frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for f in frames {
        f.encode_into(&mut buf, &Limits::default()).unwrap();
    }
    buf.to_vec()
}

/// Feeds `wire` split at `cuts` (positions, any order), alternating `feed`
/// and `feed_slice`, and collects frames.
fn decode_split(
    wire: &[u8],
    cuts: &[usize],
    limits: Limits,
) -> Result<Vec<Frame>, kitsune2_iroh_codec::CodecError> {
    let wire = Bytes::copy_from_slice(wire);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(0);
    cuts.push(wire.len());
    cuts.sort_unstable();
    cuts.dedup();
    let mut d = StreamDecoder::new(limits);
    let mut out = Vec::new();
    for (i, w) in cuts.windows(2).enumerate() {
        // Alternate the two ways of feeding, so their interplay is covered.
        if i % 2 == 0 {
            d.feed(wire.slice(w[0]..w[1]));
        } else {
            d.feed_slice(&wire[w[0]..w[1]]);
        }
        while let Some(f) = d.next_frame()? {
            out.push(f);
        }
    }
    d.finish()?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(frames in proptest::collection::vec(arb_frame(), 0..8)) {
        let wire = encode_stream(&frames);
        prop_assert_eq!(decode_all(&wire, Limits::default(), FrameOrder::Any), Ok(frames.clone()));
        prop_assert_eq!(decode_all_bytesmut(&wire, Limits::default(), FrameOrder::Any), Ok(frames.clone()));
        // The zero-copy encoding is byte-identical to the one-buffer encoding.
        let chunked: Vec<u8> = frames.iter().flat_map(|f| f.clone().encode(&Limits::default()).unwrap().to_bytes()).collect();
        prop_assert_eq!(chunked, wire);
    }

    #[test]
    fn any_chunking_yields_the_same_frames(
        frames in proptest::collection::vec(arb_frame(), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let wire = encode_stream(&frames);
        prop_assert_eq!(decode_split(&wire, &cuts, Limits::default()), Ok(frames));
    }

    #[test]
    fn mixed_large_and_small_chunks_yield_the_same_frames(
        sizes in proptest::collection::vec(0usize..12_000, 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        // Payloads and chunks on both sides of the 4 KiB coalescing threshold.
        let frames: Vec<Frame> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| Frame::data(Bytes::from(vec![i as u8; *n])))
            .collect();
        let wire = encode_stream(&frames);
        prop_assert_eq!(decode_split(&wire, &cuts, Limits::default()), Ok(frames));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_chunking_agrees(
        wire in proptest::collection::vec(any::<u8>(), 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
        max in 5usize..300,
    ) {
        let limits = Limits::new(max).unwrap();
        let one_shot = decode_all(&wire, limits, FrameOrder::Any);
        prop_assert_eq!(&decode_split(&wire, &cuts, limits), &one_shot);
        prop_assert_eq!(&decode_all_bytesmut(&wire, limits, FrameOrder::Any), &one_shot);
        // Order enforcement only ever turns success into an error.
        if let Ok(strict) = decode_all(&wire, limits, FrameOrder::PreflightThenData) {
            prop_assert_eq!(Ok(strict), one_shot);
        }
    }

    #[test]
    fn arbitrary_bytes_bound_capacity(
        wire in proptest::collection::vec(any::<u8>(), 0..4096),
        step in 1usize..600,
    ) {
        // FrameDecoder over a BytesMut fed `step` bytes at a time, as a reader
        // would: capacity never exceeds what arrived plus a bounded amount.
        let mut d = kitsune2_iroh_codec::FrameDecoder::new(Limits::default());
        let mut buf = BytesMut::new();
        for chunk in wire.chunks(step) {
            buf.extend_from_slice(chunk);
            let mut frames = 0;
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(_)) if frames < wire.len() => frames += 1,
                    _ => break,
                }
            }
            prop_assert!(
                buf.capacity() <= 2 * wire.len() + 2 * kitsune2_iroh_codec::RESERVE_STEP,
                "capacity {} for {} input bytes", buf.capacity(), wire.len()
            );
        }
    }
}

#[test]
fn every_split_position_of_a_stream() {
    let frames = vec![
        Frame::preflight("http://127.0.0.1:4433/relay/abc", Bytes::from_static(b"pf")),
        Frame::data(Bytes::from_static(b"hello")),
        Frame::data(Bytes::new()),
        Frame::data(Bytes::from(vec![9; 40])),
    ];
    let wire = encode_stream(&frames);
    for i in 0..=wire.len() {
        for j in i..=wire.len() {
            assert_eq!(
                decode_split(&wire, &[i, j], Limits::default()),
                Ok(frames.clone()),
                "cuts {i} {j}"
            );
        }
    }
}
