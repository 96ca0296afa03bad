//! End to end over the embedded relay: two transports of this crate against
//! two transports of the incumbent, `kitsune2_transport_iroh`, and two bare
//! iroh endpoints carrying the same frames (the baseline), side by side.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench transport -- --warm-up-time 1 --measurement-time 3
//! RELAY_ONLY=1 cargo bench -p kitsune2-iroh-benches --bench transport -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Each kitsune2 pair (A, B) is built on kitsune2's test builder with the
//! same config JSON (`relayUrl` = the embedded relay on 127.0.0.1,
//! `relayAllowPlainText`); the bare pair is two raw iroh endpoints bound as
//! ours binds them (`common::bare`); the pairs are `common::pair`'s, which
//! the `steady` bench shares. Each pair is connected by one warm-up
//! message, then measured:
//!
//! - `throughput`: A sends a batch of messages one after the other (a
//!   kitsune2 pair: `send_space_notify(..).await`; bare: one frame written
//!   with `write_all_chunks`); the time runs until B's handler (or B's
//!   reader) has received all of them. Throughput counts payload bytes.
//! - `round_trip`: A sends one message, B's handler (reader) hands it to a
//!   task that sends it back, A's handler (reader) receives it.
//!
//! Two bare pairs: `bare` carries the payloads as they are; `bare_k2`
//! carries what kitsune2 hands a transport (each payload wrapped as a
//! space notify, unwrapped on receipt as kitsune2's `recv_data` does), so
//! it has the same frames on the wire and the same copies of each payload
//! as the kitsune2 pairs (one to wrap, one to read the frame, one to
//! unwrap), without the transport in between.
//!
//! With `RELAY_ONLY=1`, ours and bare iroh are bound without IP
//! transports (the adapter's test-only relay-only mode), so every packet
//! goes through the relay; the incumbent, which has no such mode, is left
//! out.
//!
//! Nodes are built and connected outside the measured closures; every wait
//! is bounded and panics with a message saying what did not arrive.

use std::time::Duration;

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use kitsune2_iroh::relay::EmbeddedRelay;

mod common;
use common::pair::Pair;
use common::*;

/// Throughput payload sizes: 1 KiB, 64 KiB, 1 MiB.
const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];

/// Round-trip payload sizes: 100 B, 1 KiB, 64 KiB, 1 MiB.
const RTT_SIZES: [usize; 4] = [100, 1024, 64 * 1024, 1024 * 1024];

/// Messages per measured batch of `size`-byte payloads.
fn batch(size: usize) -> usize {
    if size >= 1024 * 1024 { 20 } else { 100 }
}

fn transport(c: &mut Criterion) {
    let rt = runtime();
    let (relay, mut pairs) = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("embedded relay");
        let pairs = Pair::all(&relay).await;
        (relay, pairs)
    });

    let mut g = c.benchmark_group("throughput");
    g.sampling_mode(SamplingMode::Flat);
    for size in SIZES {
        let n = batch(size);
        let msg = tagged(SINK, size);
        g.throughput(Throughput::Bytes((n * size) as u64));
        g.sample_size(if size >= 64 * 1024 { 10 } else { 30 });
        for pair in &mut pairs {
            g.bench_function(BenchmarkId::new(pair.name, size), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += pair.batch(&msg, n).await;
                        }
                        total
                    })
                });
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("round_trip");
    for size in RTT_SIZES {
        let msg = tagged(ECHO, size);
        g.throughput(Throughput::Bytes(size as u64));
        g.sample_size(if size >= 1024 * 1024 { 10 } else { 50 });
        for pair in &mut pairs {
            g.bench_function(BenchmarkId::new(pair.name, size), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += pair.round_trip(&msg).await;
                        }
                        total
                    })
                });
            });
        }
    }
    g.finish();

    rt.block_on(async {
        for pair in pairs {
            eprintln!("{}: direct at the end: {}", pair.name, pair.direct().await);
            pair.close().await;
        }
        let _ = relay.shutdown().await;
    });
}

criterion_group!(benches, transport);
criterion_main!(benches);
