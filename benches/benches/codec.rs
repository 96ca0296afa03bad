//! Codec throughput against `memcpy` of the same bytes.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench codec -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kitsune2_iroh_benches::{
    CHUNK, PAYLOAD_SIZES, chunks, copy_destination, data_frame, payload, wire,
};
use kitsune2_iroh_codec::{Frame, FrameDecoder, Limits, StreamDecoder};

/// Frames per iteration, so that small frames are measured over enough bytes.
fn frames_per_iter(size: usize) -> usize {
    (256 * 1024 / size).clamp(1, 1024)
}

fn decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("decode");
    for size in PAYLOAD_SIZES {
        let n = frames_per_iter(size);
        let frames: Vec<_> = (0..n).map(|_| data_frame(size)).collect();
        let wire = wire(&frames);
        let pieces = chunks(&wire, CHUNK);
        g.throughput(Throughput::Bytes(wire.len() as u64));

        g.bench_with_input(BenchmarkId::new("memcpy", size), &wire, |b, wire| {
            let mut dst = copy_destination(wire, wire.len());
            dst.resize(wire.len(), 0);
            b.iter(|| {
                dst.copy_from_slice(black_box(wire));
                black_box(&dst);
            });
        });
        g.bench_with_input(
            BenchmarkId::new("stream_one_chunk", size),
            &wire,
            |b, wire| {
                b.iter(|| {
                    let mut d = StreamDecoder::new(limits);
                    d.feed(black_box(wire.clone()));
                    let mut count = 0;
                    while let Ok(Some(f)) = d.next_frame() {
                        black_box(f);
                        count += 1;
                    }
                    assert_eq!(count, n);
                });
            },
        );
        g.bench_with_input(
            BenchmarkId::new("stream_1500b_chunks", size),
            &pieces,
            |b, pieces| {
                b.iter(|| {
                    let mut d = StreamDecoder::new(limits);
                    let mut count = 0;
                    for p in pieces {
                        d.feed(black_box(p.clone()));
                        while let Ok(Some(f)) = d.next_frame() {
                            black_box(f);
                            count += 1;
                        }
                    }
                    assert_eq!(count, n);
                });
            },
        );
        g.bench_with_input(
            BenchmarkId::new("stream_1500b_slices", size),
            &pieces,
            |b, pieces| {
                // As a reader filling a `[u8]` buffer would: feed_slice copies.
                b.iter(|| {
                    let mut d = StreamDecoder::new(limits);
                    let mut count = 0;
                    for p in pieces {
                        d.feed_slice(black_box(&p[..]));
                        while let Ok(Some(f)) = d.next_frame() {
                            black_box(f);
                            count += 1;
                        }
                    }
                    assert_eq!(count, n);
                });
            },
        );
        g.bench_with_input(
            BenchmarkId::new("bytesmut_1500b_reads", size),
            &pieces,
            |b, pieces| {
                // As tokio-util's FramedRead would: copy each read into a buffer.
                b.iter(|| {
                    let mut d = FrameDecoder::new(limits);
                    let mut buf = BytesMut::new();
                    let mut count = 0;
                    for p in pieces {
                        buf.extend_from_slice(black_box(p));
                        while let Ok(Some(f)) = d.decode(&mut buf) {
                            black_box(f);
                            count += 1;
                        }
                    }
                    assert_eq!(count, n);
                });
            },
        );
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("encode");
    for size in PAYLOAD_SIZES {
        let payload = payload(size);
        let frame = Frame::data(payload.clone());
        g.throughput(Throughput::Bytes(frame.encoded_len()));
        g.bench_with_input(BenchmarkId::new("memcpy", size), &payload, |b, payload| {
            let mut dst = copy_destination(payload, payload.len());
            dst.resize(payload.len(), 0);
            b.iter(|| {
                dst.copy_from_slice(black_box(payload));
                black_box(&dst);
            });
        });
        g.bench_with_input(BenchmarkId::new("zero_copy", size), &frame, |b, frame| {
            b.iter(|| black_box(black_box(frame.clone()).encode(&limits)));
        });
        g.bench_with_input(BenchmarkId::new("encode_into", size), &frame, |b, frame| {
            let mut buf = copy_destination(&payload, size + 16);
            b.iter(|| {
                buf.clear();
                black_box(frame)
                    .encode_into(&mut buf, &limits)
                    .expect("fits");
                black_box(&buf);
            });
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
