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
//! ours binds them (`common::bare`). Each pair is connected by one warm-up
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

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use iroh::endpoint::{Connection, SendStream};
use kitsune2_api::{DynTransport, DynTransportFactory, Url};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{Endpoint, RelayUrl};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at};

mod common;
use common::*;

/// Throughput payload sizes: 1 KiB, 64 KiB, 1 MiB.
const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];

/// Round-trip payload sizes: 100 B, 1 KiB, 64 KiB, 1 MiB.
const RTT_SIZES: [usize; 4] = [100, 1024, 64 * 1024, 1024 * 1024];

/// Messages per measured batch of `size`-byte payloads.
fn batch(size: usize) -> usize {
    if size >= 1024 * 1024 { 20 } else { 100 }
}

/// What A sends through.
enum Sender {
    /// A kitsune2 transport and B's URL.
    K2 { transport: DynTransport, to: Url },
    /// A's uni stream to B; with `k2`, each payload wrapped as kitsune2
    /// wraps it (`bare::k2_wrap`).
    Bare { send: SendStream, k2: bool },
}

impl Sender {
    async fn send(&mut self, name: &str, msg: Bytes) {
        match self {
            Self::K2 { transport, to } => transport
                .send_space_notify(to.clone(), space(), msg)
                .await
                .unwrap_or_else(|e| panic!("{name}: send to B failed: {e}")),
            Self::Bare { send, k2: false } => bare::write_frame(send, msg).await,
            Self::Bare { send, k2: true } => bare::write_frame(send, bare::k2_wrap(msg)).await,
        }
    }
}

/// What is closed at the end.
enum Owned {
    K2([DynTransport; 2]),
    Bare([Endpoint; 2]),
}

/// A connected pair: A measures, B counts and echoes.
struct Pair {
    name: &'static str,
    send: Sender,
    /// The `SINK` messages B received.
    b_sink: mpsc::UnboundedReceiver<Bytes>,
    /// `ECHO` messages back at A.
    a_echo: mpsc::UnboundedReceiver<Bytes>,
    /// A's transport, for its network stats (kitsune2 pairs).
    a_transport: Option<DynTransport>,
    /// A's connection (bare pairs).
    a_conn: Option<Connection>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    owned: Owned,
}

impl Pair {
    /// A kitsune2 pair of `factory`'s crate.
    async fn k2(
        name: &'static str,
        relay_url: &str,
        factory: fn() -> DynTransportFactory,
        ours: bool,
    ) -> Self {
        let t0 = Instant::now();
        let a = node(factory(), relay_url, ours).await;
        let b = node(factory(), relay_url, ours).await;
        eprintln!(
            "{name}: two nodes have listening addresses after {:?}",
            t0.elapsed()
        );
        // B's echo task: every ECHO message goes back to A.
        let mut echo_rx = b.echo;
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
            send: Sender::K2 {
                transport: a.transport.clone(),
                to: b.url.clone(),
            },
            b_sink: b.sink,
            a_echo: a.echo,
            a_transport: Some(a.transport.clone()),
            a_conn: None,
            tasks: vec![echo_task],
            owned: Owned::K2([a.transport, b.transport]),
        };
        pair.warm_up(t0).await;
        pair
    }

    /// A bare iroh pair: `relay_only` binds it without IP transports;
    /// `k2` wraps and unwraps each payload as kitsune2 does.
    async fn bare(name: &'static str, relay: &RelayUrl, relay_only: bool, k2: bool) -> Self {
        let t0 = Instant::now();
        let a = bare::endpoint(relay, relay_only).await;
        let b = bare::endpoint(relay, relay_only).await;
        eprintln!("{name}: two endpoints online after {:?}", t0.elapsed());
        let t1 = Instant::now();
        let (a_conn, b_conn) =
            tokio::join!(bare::connect(&a, bare::addr(&b, relay)), bare::accept(&b));
        let a_send = a_conn.open_uni().await.expect("A opens its stream");
        let mut b_send = b_conn.open_uni().await.expect("B opens its stream");
        let (sink_tx, b_sink) = mpsc::unbounded_channel();
        let (b_echo_tx, mut b_echo) = mpsc::unbounded_channel();
        let (a_echo_tx, a_echo) = mpsc::unbounded_channel();
        let (unused_tx, _) = mpsc::unbounded_channel();
        let b_reader = tokio::spawn(bare::read_loop(b_conn, k2, sink_tx, b_echo_tx));
        let a_reader = tokio::spawn(bare::read_loop(a_conn.clone(), k2, unused_tx, a_echo_tx));
        let echo_task = tokio::spawn(async move {
            while let Some(data) = b_echo.recv().await {
                let data = if k2 { bare::k2_wrap(data) } else { data };
                bare::write_frame(&mut b_send, data).await;
            }
        });
        let mut pair = Self {
            name,
            send: Sender::Bare { send: a_send, k2 },
            b_sink,
            a_echo,
            a_transport: None,
            a_conn: Some(a_conn),
            tasks: vec![b_reader, a_reader, echo_task],
            owned: Owned::Bare([a, b]),
        };
        pair.warm_up(t1).await;
        pair
    }

    async fn warm_up(&mut self, t: Instant) {
        let t1 = Instant::now();
        self.round_trip(&tagged(ECHO, 16)).await;
        eprintln!(
            "{}: first round trip (connect) took {:?} ({:?} since {}); direct: {}",
            self.name,
            t1.elapsed(),
            t.elapsed(),
            if self.a_conn.is_some() {
                "the dial"
            } else {
                "the nodes' start"
            },
            self.direct().await
        );
    }

    /// Sends one message from A and waits for B's echo.
    async fn round_trip(&mut self, msg: &Bytes) -> Duration {
        let start = Instant::now();
        self.send.send(self.name, msg.clone()).await;
        let back = timeout(MESSAGE_BOUND, self.a_echo.recv())
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
            self.send.send(self.name, msg.clone()).await;
        }
        for got in 0..n {
            let got_msg = timeout_at(deadline, self.b_sink.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: B received {got} of {n} messages of {} bytes within {MESSAGE_BOUND:?}",
                        self.name,
                        msg.len()
                    )
                })
                .unwrap_or_else(|| panic!("{}: B's handler is gone", self.name));
            assert_eq!(
                got_msg.len(),
                msg.len(),
                "{}: message has the wrong size",
                self.name
            );
        }
        start.elapsed()
    }

    /// Whether A's connection to B is direct: A's network stats for a
    /// kitsune2 pair, the selected path of A's connection for a bare one.
    async fn direct(&self) -> String {
        if let Some(conn) = &self.a_conn {
            return format!(
                "[{}]",
                conn.paths()
                    .iter()
                    .filter(|p| p.is_selected())
                    .map(|p| p.is_ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let Some(transport) = &self.a_transport else {
            return "unknown".to_owned();
        };
        match transport.dump_network_stats().await {
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
        for t in self.tasks {
            t.abort();
        }
        match self.owned {
            Owned::K2(transports) => {
                for t in transports {
                    t.close().await;
                }
            }
            Owned::Bare(endpoints) => {
                for ep in endpoints {
                    bare::close(ep).await;
                }
            }
        }
    }
}

/// Whether `RELAY_ONLY` is set (to anything but `0`).
fn relay_only() -> bool {
    std::env::var("RELAY_ONLY").is_ok_and(|v| v != "0")
}

fn transport(c: &mut Criterion) {
    let rt = runtime();
    let (relay, mut pairs) = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("embedded relay");
        let url = relay.url().to_string();
        let pairs = if relay_only() {
            vec![
                Pair::k2("ours_relay", &url, factory_relay_only, true).await,
                Pair::bare("bare_relay", relay.url(), true, false).await,
                Pair::bare("bare_k2_relay", relay.url(), true, true).await,
            ]
        } else {
            vec![
                Pair::k2("ours", &url, || factory(true), true).await,
                Pair::k2("theirs", &url, || factory(false), false).await,
                Pair::bare("bare", relay.url(), false, false).await,
                Pair::bare("bare_k2", relay.url(), false, true).await,
            ]
        };
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
