//! A large message and the small ones behind it (`kitsune2/1`), side by
//! side in one run: the incumbent (`kitsune2/0`), ours on `/0` (the
//! default), and ours on `/1` (`kitsune2V1` on: messages above 64 KiB on a
//! stream of their own). Two nodes of each over the embedded relay on
//! loopback (direct path).
//!
//! - latency ratio: a 100-byte message sent while a 64 MiB message to the
//!   same peer is halfway through (half its idle transfer time after it
//!   started), its delivery time over the idle delivery time of a 100-byte
//!   message (median of 20) measured just before, in the same round;
//! - throughput of 64 KiB and 1 MiB messages from one sender, and of four
//!   concurrent senders of 1 MiB messages to one peer; with the process's
//!   CPU time per byte moved over each phase (all threads, from
//!   `/proc/self/task/*/schedstat`), which load from other processes moves
//!   far less than it moves MB/s.
//!
//! Two more rows, bare iroh, do the same with no transport: two raw iroh
//! endpoints bound as ours (`common::bare`), every payload wrapped and
//! unwrapped as kitsune2 does (`k2_wrap`, `k2_unwrap`: like with like).
//! "1 stream" sends every frame on one stream, as `/0` does; "stream per
//! message" sends small messages on one stream of priority 1 and every
//! message above 64 KiB - 1 once wrapped as one frame on a stream of its
//! own (priority 0, -1, -2, ... in the order opened, as ours; finished at
//! once), read with one task per stream, as `/1` does. Their ratios are
//! what QUIC itself allows on this path and what a stream per message
//! costs in QUIC alone.
//!
//! All pairs are connected first; then `LARGE_ROUNDS` rounds (9 by
//! default) each run every pair once, starting at another pair each
//! round, so that load from elsewhere falls on all alike. Besides each
//! row's medians over the rounds, the bench prints ratios taken within
//! each round (median, quartiles, range): `/1` against `/0`, and each
//! against its bare counterpart.
//!
//! `cargo bench -p kitsune2-iroh-benches --bench large_message`
//! (`LARGE_ROUNDS`; `LARGE_SCALE` multiplies the messages of each
//! throughput phase, 1 by default: 2000 x 64 KiB, 200 x 1 MiB, 200 x
//! 1 MiB from four senders; `LARGE_ONLY`, when set, runs only the rows
//! whose name contains it, e.g. `/1` or `bare`, for a profile of one).
//! Prints two tables; the figures are in docs/benchmarks.md.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cpu::{load_average, process_cpu_ns};
use common::stats::{quantile, summary};
use common::{MESSAGE_BOUND, Node, SINK, bare, factory, node_with, runtime, space, tagged};
use iroh::endpoint::{Connection, SendStream};
use kitsune2_api::Url;
use kitsune2_iroh::relay::EmbeddedRelay;
use tokio::sync::mpsc;
use tokio::time::timeout;

const LARGE: usize = 64 * 1024 * 1024;
const SMALL: usize = 100;

struct Setup {
    name: &'static str,
    ours: bool,
    v1: bool,
}

const SETUPS: [Setup; 3] = [
    Setup {
        name: "incumbent (/0)",
        ours: false,
        v1: false,
    },
    Setup {
        name: "ours /0",
        ours: true,
        v1: false,
    },
    Setup {
        name: "ours /1",
        ours: true,
        v1: true,
    },
];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What A sends through: a kitsune2 transport, or bare iroh.
#[derive(Clone)]
enum Tx {
    K2 { a: Arc<Node>, to: Url },
    Bare(Arc<BareTx>),
}

/// A's side of a bare pair.
struct BareTx {
    conn: Connection,
    /// Whether a large message goes on a stream of its own (as on `/1`)
    /// or on the one stream (as on `/0`).
    per_message: bool,
    /// Message streams opened: each gets a priority below the one before,
    /// as ours gives them.
    opened: std::sync::atomic::AtomicI32,
    /// The stream of the small messages (priority 1).
    control: tokio::sync::Mutex<SendStream>,
}

/// The bare pair doing what `/0` does: every frame on one stream.
const BARE_ONE: &str = "bare iroh, 1 stream";
/// The bare pair doing what `/1` does: large messages on streams of
/// their own.
const BARE_PER_MESSAGE: &str = "bare iroh, stream per message";

/// Messages above this go on a stream of their own in the bare pair.
const BARE_LARGE_ABOVE: usize = 64 * 1024 - 1;

impl Tx {
    async fn send(&self, data: Bytes) {
        match self {
            Self::K2 { a, to } => timeout(
                MESSAGE_BOUND,
                a.transport.send_space_notify(to.clone(), space(), data),
            )
            .await
            .expect("send timed out")
            .expect("send failed"),
            Self::Bare(tx) if tx.per_message && data.len() > BARE_LARGE_ABOVE => {
                let data = bare::k2_wrap(data);
                let mut s = tx.conn.open_uni().await.expect("bare open_uni");
                let n = tx.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                s.set_priority(-n).expect("bare priority");
                bare::write_frame(&mut s, data).await;
                s.finish().expect("bare finish");
            }
            Self::Bare(tx) => {
                bare::write_frame(&mut *tx.control.lock().await, bare::k2_wrap(data)).await;
            }
        }
    }
}

/// The next message in `sink` of `len` bytes (others of other lengths
/// are skipped: none are in flight when this is called).
async fn recv(sink: &mut mpsc::UnboundedReceiver<Bytes>, len: usize) {
    loop {
        let got = timeout(MESSAGE_BOUND, sink.recv())
            .await
            .expect("no message in time")
            .expect("sink open");
        if got.len() == len {
            return;
        }
    }
}

/// Idle delivery time of one `len`-byte message, median of `n`.
async fn idle(
    tx: &Tx,
    sink: &mut mpsc::UnboundedReceiver<Bytes>,
    len: usize,
    n: usize,
) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        tx.send(tagged(SINK, len)).await;
        recv(sink, len).await;
        times.push(t.elapsed());
    }
    median(times)
}

/// Delivery time of a small message sent `after` a large one started.
async fn blocked(tx: &Tx, sink: &mut mpsc::UnboundedReceiver<Bytes>, after: Duration) -> Duration {
    let large = {
        let tx = tx.clone();
        tokio::spawn(async move { tx.send(tagged(SINK, LARGE)).await })
    };
    tokio::time::sleep(after).await;
    let t = Instant::now();
    tx.send(tagged(SINK, SMALL)).await;
    let mut small_at = None;
    let mut large_seen = false;
    while small_at.is_none() || !large_seen {
        let got = timeout(MESSAGE_BOUND, sink.recv())
            .await
            .expect("no message in time")
            .expect("sink open");
        match got.len() {
            SMALL => small_at = Some(t.elapsed()),
            LARGE => large_seen = true,
            _ => {}
        }
    }
    large.await.expect("large send");
    small_at.expect("loop ends with it")
}

/// MB/s of `count` messages of `len` bytes from `senders` concurrent
/// senders (each `count / senders`), until all arrived.
async fn throughput(
    tx: &Tx,
    sink: &mut mpsc::UnboundedReceiver<Bytes>,
    len: usize,
    count: usize,
    senders: usize,
) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for _ in 0..count / senders {
                    tx.send(tagged(SINK, len)).await;
                }
            })
        })
        .collect();
    for _ in 0..count / senders * senders {
        recv(sink, len).await;
    }
    for task in tasks {
        task.await.expect("sender");
    }
    (len * (count / senders * senders)) as f64 / t.elapsed().as_secs_f64() / 1e6
}

/// One throughput phase: MB/s and the process's CPU nanoseconds per byte
/// moved.
#[derive(Clone, Copy, Default)]
struct Phase {
    mbs: f64,
    cpu_ns_per_byte: f64,
}

/// [`throughput`] with the process's CPU time over it.
async fn phase(
    tx: &Tx,
    sink: &mut mpsc::UnboundedReceiver<Bytes>,
    len: usize,
    count: usize,
    senders: usize,
) -> Phase {
    let cpu = process_cpu_ns();
    let mbs = throughput(tx, sink, len, count, senders).await;
    let bytes = (len * (count / senders * senders)) as f64;
    Phase {
        mbs,
        cpu_ns_per_byte: (process_cpu_ns() - cpu) as f64 / bytes,
    }
}

/// One round of one pair.
#[derive(Clone, Copy)]
struct Round {
    idle_small: Duration,
    blocked: Duration,
    /// The three throughput phases: 64 KiB, 1 MiB, 4 x 1 MiB.
    phases: [Phase; 3],
}

impl Round {
    fn ratio(&self) -> f64 {
        self.blocked.as_secs_f64() / self.idle_small.as_secs_f64()
    }
}

/// A pair of one setup, connected, with what ends it.
struct Pair {
    name: &'static str,
    tx: Tx,
    sink: mpsc::UnboundedReceiver<Bytes>,
    /// A's connection, for QUIC's loss counters (the bare pair only).
    stats: Option<Connection>,
    /// The idle delivery time of a 64 MiB message (after warm-up).
    idle_large: Duration,
    end: End,
    rounds: Vec<Round>,
}

/// What ends a pair.
enum End {
    K2(Arc<Node>, Node),
    Bare {
        reader: tokio::task::JoinHandle<()>,
        a: iroh::Endpoint,
        b: iroh::Endpoint,
    },
}

impl Pair {
    async fn k2(setup: &Setup, relay: &EmbeddedRelay) -> Self {
        let url = relay.url().as_str();
        let a = Arc::new(node_with(factory(setup.ours), url, setup.ours, setup.v1).await);
        let mut b = node_with(factory(setup.ours), url, setup.ours, setup.v1).await;
        let tx = Tx::K2 {
            a: a.clone(),
            to: b.url.clone(),
        };
        let (_, placeholder) = mpsc::unbounded_channel();
        let sink = std::mem::replace(&mut b.sink, placeholder);
        Self::warm(setup.name, tx, sink, None, End::K2(a, b)).await
    }

    /// A bare iroh pair (see the module docs): large messages on streams
    /// of their own when `per_message`.
    async fn bare(relay: &EmbeddedRelay, per_message: bool) -> Self {
        let (a, b) = tokio::join!(
            bare::endpoint(relay.url(), false),
            bare::endpoint(relay.url(), false)
        );
        let (a_conn, b_conn) = tokio::join!(
            bare::connect(&a, bare::addr(&b, relay.url())),
            bare::accept(&b)
        );
        let control = a_conn.open_uni().await.expect("bare control stream");
        control.set_priority(1).expect("bare priority");
        let (sink_tx, sink) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            // The control stream and each message stream alike: frames to
            // the stream's end.
            while let Ok(mut s) = b_conn.accept_uni().await {
                let sink = sink_tx.clone();
                tokio::spawn(async move {
                    while let Some(frame) = bare::read_frame(&mut s).await {
                        let _ = sink.send(bare::k2_unwrap(&frame));
                    }
                });
            }
        });
        let stats = Some(a_conn.clone());
        let tx = Tx::Bare(Arc::new(BareTx {
            conn: a_conn,
            per_message,
            opened: std::sync::atomic::AtomicI32::new(0),
            control: tokio::sync::Mutex::new(control),
        }));
        let name = if per_message {
            BARE_PER_MESSAGE
        } else {
            BARE_ONE
        };
        Self::warm(name, tx, sink, stats, End::Bare { reader, a, b }).await
    }

    /// Connected and warm; the idle 64 MiB delivery time measured.
    async fn warm(
        name: &'static str,
        tx: Tx,
        mut sink: mpsc::UnboundedReceiver<Bytes>,
        stats: Option<Connection>,
        end: End,
    ) -> Self {
        idle(&tx, &mut sink, SMALL, 20).await;
        idle(&tx, &mut sink, 1 << 20, 5).await;
        let idle_large = idle(&tx, &mut sink, LARGE, 3).await;
        Self {
            name,
            tx,
            sink,
            stats,
            idle_large,
            end,
            rounds: Vec::new(),
        }
    }

    /// One round: idle 100 B, one 100 B behind 64 MiB, the throughput
    /// phases. QUIC's sent and lost packets of the bare pair on stderr.
    async fn round(&mut self, scale: usize) {
        let sent_lost = self
            .stats
            .as_ref()
            .map(|c| (c.stats().sent_packets, c.stats().lost_packets));
        let (tx, sink) = (&self.tx, &mut self.sink);
        let idle_small = idle(tx, sink, SMALL, 20).await;
        let blocked = blocked(tx, sink, self.idle_large / 2).await;
        let phases = [
            phase(tx, sink, 64 * 1024, 2000 * scale, 1).await,
            phase(tx, sink, 1 << 20, 200 * scale, 1).await,
            phase(tx, sink, 1 << 20, 200 * scale, 4).await,
        ];
        if let (Some((s0, l0)), Some(c)) = (sent_lost, &self.stats) {
            let s = c.stats();
            eprintln!(
                "{}: round {}: {} packets sent, {} lost",
                self.name,
                self.rounds.len(),
                s.sent_packets - s0,
                s.lost_packets - l0
            );
        }
        self.rounds.push(Round {
            idle_small,
            blocked,
            phases,
        });
    }

    async fn end(self) {
        drop(self.tx);
        match self.end {
            End::K2(a, b) => {
                a.transport.close().await;
                b.transport.close().await;
            }
            End::Bare { reader, a, b } => {
                reader.abort();
                tokio::join!(bare::close(a), bare::close(b));
            }
        }
    }
}

/// The median, quartiles and range of `v`, as printed.
fn spread(v: &[f64]) -> String {
    let [median, q1, q3, min, max] = summary(v);
    format!("{median:.2} [{q1:.2}-{q3:.2}] ({min:.2}-{max:.2})")
}

fn median_f(v: impl IntoIterator<Item = f64>) -> f64 {
    quantile(&v.into_iter().collect::<Vec<_>>(), 0.5)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists: nothing to list here.
        return;
    }
    let rounds: usize = std::env::var("LARGE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let scale: usize = std::env::var("LARGE_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let only = std::env::var("LARGE_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let rt = runtime();
    println!("load average at start: {}", load_average());
    let pairs = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("relay");
        let mut pairs = Vec::new();
        for setup in SETUPS.iter().filter(|s| wanted(s.name)) {
            pairs.push(Pair::k2(setup, &relay).await);
        }
        for per_message in [false, true] {
            let name = if per_message {
                BARE_PER_MESSAGE
            } else {
                BARE_ONE
            };
            if wanted(name) {
                pairs.push(Pair::bare(&relay, per_message).await);
            }
        }
        let n = pairs.len();
        for r in 0..rounds {
            // Each round starts at another pair: no pair always goes first.
            for i in 0..n {
                pairs[(r + i) % n].round(scale).await;
            }
        }
        let mut done = Vec::new();
        for mut p in pairs {
            let rounds = std::mem::take(&mut p.rounds);
            done.push((p.name, p.idle_large, rounds));
            p.end().await;
        }
        relay.shutdown().await.expect("relay shutdown");
        done
    });
    println!("load average at end: {}", load_average());
    println!(
        "{rounds} rounds; medians over the rounds, the ratio's quartiles and range in brackets and parentheses"
    );
    println!();
    println!(
        "| setup | idle 100 B | idle 64 MiB | 100 B behind 64 MiB | ratio | 64 KiB MB/s | 1 MiB MB/s | 4 x 1 MiB MB/s | CPU ns/B (64 KiB, 1 MiB, 4 x 1 MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, idle_large, rs) in &pairs {
        let mb = |i: usize| median_f(rs.iter().map(|r| r.phases[i].mbs));
        let ns = |i: usize| median_f(rs.iter().map(|r| r.phases[i].cpu_ns_per_byte));
        println!(
            "| {name} | {:.3} ms | {:.1} ms | {:.3} ms | {}x | {:.0} | {:.0} | {:.0} | {:.2}, {:.2}, {:.2} |",
            median_f(rs.iter().map(|r| r.idle_small.as_secs_f64() * 1e3)),
            idle_large.as_secs_f64() * 1e3,
            median_f(rs.iter().map(|r| r.blocked.as_secs_f64() * 1e3)),
            spread(&rs.iter().map(Round::ratio).collect::<Vec<_>>()),
            mb(0),
            mb(1),
            mb(2),
            ns(0),
            ns(1),
            ns(2),
        );
    }
    // Paired ratios: each taken within one round.
    let find = |name: &str| pairs.iter().find(|(n, ..)| *n == name).map(|(.., rs)| rs);
    let pairs_of = [
        ("ours /1", "ours /0"),
        (BARE_PER_MESSAGE, BARE_ONE),
        ("ours /0", BARE_ONE),
        ("ours /1", BARE_PER_MESSAGE),
    ];
    println!();
    println!(
        "| within each round | 64 KiB MB/s | 1 MiB MB/s | 4 x 1 MiB MB/s | CPU ns/B 64 KiB | CPU ns/B 1 MiB |"
    );
    println!("|---|---|---|---|---|---|");
    for (x, y) in pairs_of {
        let (Some(xs), Some(ys)) = (find(x), find(y)) else {
            continue;
        };
        let ratio = |i: usize, f: fn(&Phase) -> f64| {
            spread(
                &xs.iter()
                    .zip(ys)
                    .map(|(a, b)| f(&a.phases[i]) / f(&b.phases[i]))
                    .collect::<Vec<_>>(),
            )
        };
        println!(
            "| {x} / {y} | {} | {} | {} | {} | {} |",
            ratio(0, |p| p.mbs),
            ratio(1, |p| p.mbs),
            ratio(2, |p| p.mbs),
            ratio(0, |p| p.cpu_ns_per_byte),
            ratio(1, |p| p.cpu_ns_per_byte),
        );
    }
}
