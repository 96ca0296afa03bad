//! End to end over the embedded relay: two transports of this crate against
//! two transports of the incumbent, `kitsune2_transport_iroh`, side by side.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench transport -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Each pair (A, B) is built on kitsune2's test builder with the same
//! config JSON (`relayUrl` = the embedded relay on 127.0.0.1,
//! `relayAllowPlainText`), connected by one warm-up message, then measured:
//!
//! - `throughput`: A sends a batch of space notifies one after the other
//!   (`send_space_notify(..).await`); the time runs until B's space handler
//!   has received all of them. Throughput counts payload bytes.
//! - `round_trip`: A sends one message, B's space handler hands it to a task
//!   that sends it back, A's handler receives it.
//!
//! Nodes are built and connected outside the measured closures; every wait
//! is bounded and panics with a message saying what did not arrive.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use kitsune2_iroh::relay::EmbeddedRelay;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at};

mod common;
use common::*;

/// Payload sizes: 1 KiB, 64 KiB, 1 MiB.
const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];

/// Messages per measured batch of `size`-byte payloads.
fn batch(size: usize) -> usize {
    if size >= 1024 * 1024 { 20 } else { 100 }
}

/// A connected pair of one crate: A measures, B counts and echoes.
struct Pair {
    name: &'static str,
    a: Node,
    b: Node,
    /// Sends B's received `ECHO` messages back to A through B's transport.
    echo_task: tokio::task::JoinHandle<()>,
}

impl Pair {
    async fn start(name: &'static str, relay_url: &str, ours: bool) -> Self {
        let t0 = Instant::now();
        let a = node(factory(ours), relay_url, ours).await;
        let mut b = node(factory(ours), relay_url, ours).await;
        eprintln!(
            "{name}: two nodes have listening addresses after {:?}",
            t0.elapsed()
        );
        // B's echo task: every ECHO message goes back to A.
        let mut echo_rx = std::mem::replace(&mut b.echo, mpsc::unbounded_channel().1);
        let b_transport = b.transport.clone();
        let a_url = a.url.clone();
        let echo_task = tokio::spawn(async move {
            while let Some(data) = echo_rx.recv().await {
                if let Err(e) = b_transport
                    .send_space_notify(a_url.clone(), space(), data)
                    .await
                {
                    eprintln!("echo send failed: {e}");
                }
            }
        });
        let mut pair = Self {
            name,
            a,
            b,
            echo_task,
        };
        // Warm-up: connects A to B and B back to A.
        let t1 = Instant::now();
        pair.round_trip(&tagged(ECHO, 16)).await;
        eprintln!(
            "{name}: first round trip (connect) took {:?}; direct: {}",
            t1.elapsed(),
            pair.direct().await
        );
        pair
    }

    /// Sends one message from A and waits for B's echo.
    async fn round_trip(&mut self, msg: &Bytes) -> Duration {
        let start = Instant::now();
        self.a
            .transport
            .send_space_notify(self.b.url.clone(), space(), msg.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: send to B failed: {e}", self.name));
        let back = timeout(MESSAGE_BOUND, self.a.echo.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: echo of a {}-byte message not back within {MESSAGE_BOUND:?}",
                    self.name,
                    msg.len()
                )
            })
            .unwrap_or_else(|| panic!("{}: A's handler is gone", self.name));
        let elapsed = start.elapsed();
        assert_eq!(
            back.len(),
            msg.len(),
            "{}: echo has the wrong size",
            self.name
        );
        elapsed
    }

    /// Sends `n` copies of `msg` from A, one after the other, and waits
    /// until B has received all of them.
    async fn batch(&mut self, msg: &Bytes, n: usize) -> Duration {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start) + MESSAGE_BOUND;
        for _ in 0..n {
            self.a
                .transport
                .send_space_notify(self.b.url.clone(), space(), msg.clone())
                .await
                .unwrap_or_else(|e| panic!("{}: send to B failed: {e}", self.name));
        }
        for got in 0..n {
            let len = timeout_at(deadline, self.b.sink.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: B received {got} of {n} messages of {} bytes within {MESSAGE_BOUND:?}",
                        self.name,
                        msg.len()
                    )
                })
                .unwrap_or_else(|| panic!("{}: B's handler is gone", self.name));
            assert_eq!(len, msg.len(), "{}: message has the wrong size", self.name);
        }
        start.elapsed()
    }

    /// Whether A's connection to B is direct, as A's network stats say.
    async fn direct(&self) -> String {
        match self.a.transport.dump_network_stats().await {
            Ok(s) => format!(
                "{:?}",
                s.transport_stats
                    .connections
                    .iter()
                    .map(|c| c.is_direct)
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("unknown ({e})"),
        }
    }

    async fn close(self) {
        self.echo_task.abort();
        self.a.transport.close().await;
        self.b.transport.close().await;
    }
}

fn transport(c: &mut Criterion) {
    let rt = runtime();
    let (relay, mut pairs) = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("embedded relay");
        let url = relay.url().to_string();
        let ours = Pair::start("ours", &url, true).await;
        let theirs = Pair::start("theirs", &url, false).await;
        (relay, [ours, theirs])
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
    for size in SIZES {
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
