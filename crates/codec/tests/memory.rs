//! Never allocate on a peer's word: memory grows with bytes received.
//!
//! Capacity is read directly for `FrameDecoder`; for `StreamDecoder` the
//! process-wide allocator is instrumented (this binary holds one test, so no
//! other test thread allocates while it measures).

use bytes::{Bytes, BytesMut};
use kitsune2_iroh_codec::{
    CodecError, DEFAULT_MAX_FRAME_BYTES, Frame, FrameDecoder, Limits, RESERVE_STEP, StreamDecoder,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn header(ty: u8, len: u32) -> Vec<u8> {
    let mut h = vec![ty];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn frame_decoder_over_limit_header_reserves_nothing() {
    let max = DEFAULT_MAX_FRAME_BYTES as u32;
    let mut buf = BytesMut::with_capacity(16);
    buf.extend_from_slice(&header(1, max - 4));
    let before = buf.capacity();
    let mut d = FrameDecoder::new(Limits::default());
    assert!(matches!(
        d.decode(&mut buf),
        Err(CodecError::FrameTooLarge { .. })
    ));
    assert_eq!(buf.capacity(), before);
}

fn frame_decoder_max_header_with_ten_bytes_costs_ten_bytes_plus_a_step() {
    let max = DEFAULT_MAX_FRAME_BYTES as u32;
    let mut buf = BytesMut::with_capacity(16);
    buf.extend_from_slice(&header(1, max - 5));
    buf.extend_from_slice(&[0xaa; 10]);
    let mut d = FrameDecoder::new(Limits::default());
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 10);
    assert!(
        buf.capacity() <= 10 + RESERVE_STEP + 16,
        "capacity {} for 10 buffered bytes",
        buf.capacity()
    );
}

fn frame_decoder_capacity_tracks_a_trickling_peer() {
    // A peer announcing ~100 MiB and sending it 1500 bytes at a time: capacity
    // stays within a small factor of what arrived plus one step.
    let max = DEFAULT_MAX_FRAME_BYTES as u32;
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&header(1, max - 5));
    let mut d = FrameDecoder::new(Limits::default());
    let mut received = 0usize;
    for _ in 0..200 {
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[0x55; 1500]);
        received += 1500;
        assert!(
            buf.capacity() <= 2 * received + 2 * RESERVE_STEP,
            "capacity {} after {received} bytes",
            buf.capacity()
        );
    }
}

fn stream_decoder_oversized_header_allocates_nothing() {
    let chunk = Bytes::from(header(1, u32::MAX));
    let mut d = StreamDecoder::new(Limits::default());
    let region = Region::new(GLOBAL);
    d.feed(chunk);
    assert!(d.next_frame().is_err());
    let stats = region.change();
    assert!(
        stats.bytes_allocated <= 256,
        "allocated {} bytes",
        stats.bytes_allocated
    );
}

fn stream_decoder_allocates_only_received_bytes() {
    // Header claims the maximum; 10 payload bytes follow in 1-byte chunks.
    let mut chunks: Vec<Bytes> = vec![Bytes::from(header(1, DEFAULT_MAX_FRAME_BYTES as u32 - 5))];
    chunks.extend((0..10).map(|i| Bytes::from(vec![i as u8])));
    let mut d = StreamDecoder::new(Limits::default());
    let region = Region::new(GLOBAL);
    for c in chunks {
        d.feed(c);
        assert_eq!(d.next_frame(), Ok(None));
    }
    let stats = region.change();
    // The received bytes, plus at most one reserve step for the tail.
    assert!(
        stats.bytes_allocated <= 10 + RESERVE_STEP + 1024,
        "allocated {} bytes",
        stats.bytes_allocated
    );
    assert_eq!(d.buffered_len(), 10);
}

fn stream_decoder_zero_copy_within_a_chunk() {
    let payload = vec![0x42u8; 64 * 1024];
    let wire = Frame::data(Bytes::from(payload))
        .encode(&Limits::default())
        .unwrap()
        .to_bytes();
    let chunk_ptr = wire.as_ptr();
    let mut d = StreamDecoder::new(Limits::default());
    let region = Region::new(GLOBAL);
    d.feed(wire);
    let frame = d.next_frame().unwrap().unwrap();
    let stats = region.change();
    let Frame::Data(body) = frame else {
        panic!("data frame expected")
    };
    assert_eq!(
        body.as_ptr(),
        chunk_ptr.wrapping_add(5),
        "payload is a slice of the chunk"
    );
    assert!(
        stats.bytes_allocated < 1024,
        "allocated {} bytes",
        stats.bytes_allocated
    );
}

fn stream_decoder_spanning_payload_is_copied_once() {
    let payload = vec![0x42u8; 64 * 1024];
    let wire = Frame::data(Bytes::from(payload.clone()))
        .encode(&Limits::default())
        .unwrap()
        .to_bytes();
    let mut d = StreamDecoder::new(Limits::default());
    let chunks: Vec<Bytes> = (0..wire.len())
        .step_by(1500)
        .map(|i| wire.slice(i..(i + 1500).min(wire.len())))
        .collect();
    let region = Region::new(GLOBAL);
    for c in chunks {
        d.feed(c);
    }
    let frame = d.next_frame().unwrap().unwrap();
    let stats = region.change();
    assert_eq!(frame, Frame::data(Bytes::from(payload)));
    assert!(
        stats.bytes_allocated <= 3 * 64 * 1024,
        "allocated {} bytes for a 64 KiB payload (small chunks coalesce into a growing tail)",
        stats.bytes_allocated
    );
}

fn stream_decoder_tiny_chunks_do_not_pin_their_buffers() {
    // Each 1-byte chunk is a slice of its own 64 KiB buffer, as a receive
    // path might hand out. Held as-is, 200 of them would pin 12.5 MiB.
    let max = DEFAULT_MAX_FRAME_BYTES as u32;
    let mut d = StreamDecoder::new(Limits::default());
    d.feed(Bytes::from(header(1, max - 5)));
    let weak: Vec<std::sync::Weak<()>> = (0..200)
        .map(|i| {
            let owner = std::sync::Arc::new(());
            let w = std::sync::Arc::downgrade(&owner);
            // A buffer whose lifetime we can observe through `owner`.
            let buf = Bytes::from_owner(Pinned(vec![i as u8; 64 * 1024], owner));
            d.feed(buf.slice(0..1));
            w
        })
        .collect();
    assert_eq!(d.next_frame(), Ok(None));
    assert_eq!(d.buffered_len(), 200);
    assert!(
        weak.iter().all(|w| w.upgrade().is_none()),
        "no 64 KiB buffer is pinned"
    );
}

/// A byte buffer that keeps an `Arc` alive for as long as it lives.
struct Pinned(Vec<u8>, #[allow(dead_code)] std::sync::Arc<()>); // reason: held for its drop

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn encode_does_not_touch_the_payload() {
    let payload = Bytes::from(vec![1u8; 1024 * 1024]);
    let ptr = payload.as_ptr();
    let region = Region::new(GLOBAL);
    let encoded = Frame::data(payload).encode(&Limits::default()).unwrap();
    let stats = region.change();
    assert_eq!(
        encoded.body().as_ptr(),
        ptr,
        "body is the caller's allocation"
    );
    assert!(
        stats.bytes_allocated <= 64,
        "allocated {} bytes",
        stats.bytes_allocated
    );
}

#[test]
fn memory_bounds() {
    frame_decoder_over_limit_header_reserves_nothing();
    frame_decoder_max_header_with_ten_bytes_costs_ten_bytes_plus_a_step();
    frame_decoder_capacity_tracks_a_trickling_peer();
    stream_decoder_oversized_header_allocates_nothing();
    stream_decoder_allocates_only_received_bytes();
    stream_decoder_zero_copy_within_a_chunk();
    stream_decoder_spanning_payload_is_copied_once();
    stream_decoder_tiny_chunks_do_not_pin_their_buffers();
    encode_does_not_touch_the_payload();
}
