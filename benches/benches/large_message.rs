//! A large message and the small ones behind it (`kitsune2/1`), side by
//! side in one run: the incumbent (`kitsune2/0`), ours on `/0` (the
//! default), and ours on `/1` (`kitsune2V1` on: messages above 64 KiB on a
//! stream of their own). Two nodes of each over the embedded relay on
//! loopback (direct path).
//!
//! - latency ratio: a 100-byte message sent while a 64 MiB message to the
//!   same peer is halfway through (half its idle transfer time after it
//!   started), its delivery time over the idle delivery time of a 100-byte
//!   message (medians);
//! - throughput of 64 KiB and 1 MiB messages from one sender, and of four
//!   concurrent senders of 1 MiB messages to one peer.
//!
//! A fourth row, bare iroh, does what `/1` does with no kitsune2 and no
//! transport: two raw iroh endpoints bound as ours (`common::bare`), small
//! messages as frames on one stream of priority 1, every message above
//! 64 KiB - 1 (as ours, whose 64 KiB payloads are above its threshold once
//! kitsune2 wrapped them) as one frame on a stream of its own (priority
//! 0, -1, -2, ... in the order opened, as ours; finished at once), read
//! by the receiver with one task per stream.
//! Its latency ratio is what QUIC itself allows on this path.
//!
//! `cargo bench -p kitsune2-iroh-benches --bench large_message`
//! (`LARGE_REPS` sets the repetitions of the blocked measurement, 5 by
//! default; `LARGE_ONLY`, when set, runs only the rows whose name contains
//! it, e.g. `/1` or `bare`, for a profile of one). Prints one table; the
//! figures are in docs/benchmarks.md.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
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

/// A's side of the bare pair.
struct BareTx {
    conn: Connection,
    /// Message streams opened: each gets a priority below the one before,
    /// as ours gives them.
    opened: std::sync::atomic::AtomicI32,
    /// The stream of the small messages (priority 1).
    control: tokio::sync::Mutex<SendStream>,
}

/// The bare pair's row.
const BARE_NAME: &str = "bare iroh, 2 streams";

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
            Self::Bare(tx) if data.len() > BARE_LARGE_ABOVE => {
                let mut s = tx.conn.open_uni().await.expect("bare open_uni");
                let n = tx.opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                s.set_priority(-n).expect("bare priority");
                bare::write_frame(&mut s, data).await;
                s.finish().expect("bare finish");
            }
            Self::Bare(tx) => bare::write_frame(&mut *tx.control.lock().await, data).await,
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

struct Row {
    name: &'static str,
    idle_small: Duration,
    idle_large: Duration,
    blocked: Duration,
    mbs_64k: f64,
    mbs_1m: f64,
    mbs_4x1m: f64,
}

async fn measure(setup: &Setup, relay: &EmbeddedRelay, reps: usize) -> Row {
    let url = relay.url().as_str();
    let a = Arc::new(node_with(factory(setup.ours), url, setup.ours, setup.v1).await);
    let mut b = node_with(factory(setup.ours), url, setup.ours, setup.v1).await;
    let tx = Tx::K2 {
        a: a.clone(),
        to: b.url.clone(),
    };
    let row = measure_with(setup.name, &tx, &mut b.sink, reps, None).await;
    a.transport.close().await;
    b.transport.close().await;
    row
}

/// The bare iroh pair (see the module docs).
async fn measure_bare(relay: &EmbeddedRelay, reps: usize) -> Row {
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
    let (sink_tx, mut sink) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        // The control stream and each message stream alike: frames to
        // the stream's end.
        while let Ok(mut s) = b_conn.accept_uni().await {
            let sink = sink_tx.clone();
            tokio::spawn(async move {
                while let Some(frame) = bare::read_frame(&mut s).await {
                    let _ = sink.send(frame);
                }
            });
        }
    });
    let stats_conn = a_conn.clone();
    let tx = Tx::Bare(Arc::new(BareTx {
        conn: a_conn,
        opened: std::sync::atomic::AtomicI32::new(0),
        control: tokio::sync::Mutex::new(control),
    }));
    let row = measure_with(BARE_NAME, &tx, &mut sink, reps, Some(&stats_conn)).await;
    reader.abort();
    drop(tx);
    tokio::join!(bare::close(a), bare::close(b));
    row
}

async fn measure_with(
    name: &'static str,
    tx: &Tx,
    sink: &mut mpsc::UnboundedReceiver<Bytes>,
    reps: usize,
    conn: Option<&Connection>,
) -> Row {
    // QUIC's loss counters of A's connection (the bare pair), printed per
    // phase on stderr.
    let lost = || conn.map(|c| (c.stats().lost_packets, c.stats().sent_packets));
    let mut seen = lost();
    let mut phase = |what: &str| {
        if let (Some((l0, s0)), Some((l1, s1))) = (seen, lost()) {
            eprintln!("{name}: {what}: {} packets sent, {} lost", s1 - s0, l1 - l0);
        }
        seen = lost();
    };
    // Connected and warm.
    idle(tx, sink, SMALL, 20).await;
    idle(tx, sink, 1 << 20, 5).await;
    let idle_small = idle(tx, sink, SMALL, 50).await;
    phase("warm-up and idle 100 B");
    let idle_large = idle(tx, sink, LARGE, 3).await;
    phase("idle 64 MiB");
    let mut times = Vec::new();
    for _ in 0..reps {
        times.push(blocked(tx, sink, idle_large / 2).await);
    }
    let blocked = median(times);
    phase("100 B behind 64 MiB");
    let mbs_64k = throughput(tx, sink, 64 * 1024, 2000, 1).await;
    phase("64 KiB throughput");
    let mbs_1m = throughput(tx, sink, 1 << 20, 200, 1).await;
    phase("1 MiB throughput");
    let mbs_4x1m = throughput(tx, sink, 1 << 20, 200, 4).await;
    phase("4 x 1 MiB throughput");
    Row {
        name,
        idle_small,
        idle_large,
        blocked,
        mbs_64k,
        mbs_1m,
        mbs_4x1m,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` lists: nothing to list here.
        return;
    }
    let reps: usize = std::env::var("LARGE_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only = std::env::var("LARGE_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let rt = runtime();
    let rows = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("relay");
        let mut rows = Vec::new();
        for setup in SETUPS.iter().filter(|s| wanted(s.name)) {
            rows.push(measure(setup, &relay, reps).await);
        }
        if wanted(BARE_NAME) {
            rows.push(measure_bare(&relay, reps).await);
        }
        relay.shutdown().await.expect("relay shutdown");
        rows
    });
    println!(
        "| setup | idle 100 B | idle 64 MiB | 100 B behind 64 MiB | ratio | 64 KiB MB/s | 1 MiB MB/s | 4 x 1 MiB MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.3} ms | {:.1} ms | {:.3} ms | {:.1}x | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.idle_small.as_secs_f64() * 1e3,
            r.idle_large.as_secs_f64() * 1e3,
            r.blocked.as_secs_f64() * 1e3,
            r.blocked.as_secs_f64() / r.idle_small.as_secs_f64(),
            r.mbs_64k,
            r.mbs_1m,
            r.mbs_4x1m,
        );
    }
}
