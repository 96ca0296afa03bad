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
//! `cargo bench -p kitsune2-iroh-benches --bench large_message`
//! (`LARGE_REPS` sets the repetitions of the blocked measurement, 5 by
//! default). Prints one table; the figures are in docs/benchmarks.md.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{MESSAGE_BOUND, Node, SINK, factory, node_with, runtime, space, tagged};
use kitsune2_iroh::relay::EmbeddedRelay;
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

async fn send(a: &Node, b: &Node, data: Bytes) {
    timeout(
        MESSAGE_BOUND,
        a.transport.send_space_notify(b.url.clone(), space(), data),
    )
    .await
    .expect("send timed out")
    .expect("send failed");
}

/// The next message at `b` of `len` bytes (others of other lengths are
/// skipped: none are in flight when this is called).
async fn recv(b: &mut Node, len: usize) {
    loop {
        let got = timeout(MESSAGE_BOUND, b.sink.recv())
            .await
            .expect("no message in time")
            .expect("sink open");
        if got.len() == len {
            return;
        }
    }
}

/// Idle delivery time of one `len`-byte message, median of `n`.
async fn idle(a: &Node, b: &mut Node, len: usize, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        send(a, b, tagged(SINK, len)).await;
        recv(b, len).await;
        times.push(t.elapsed());
    }
    median(times)
}

/// Delivery time of a small message sent `after` a large one started.
async fn blocked(a: &Arc<Node>, b: &mut Node, after: Duration) -> Duration {
    let large = {
        let (a, url) = (a.clone(), b.url.clone());
        tokio::spawn(async move {
            a.transport
                .send_space_notify(url, space(), tagged(SINK, LARGE))
                .await
        })
    };
    tokio::time::sleep(after).await;
    let t = Instant::now();
    send(a, b, tagged(SINK, SMALL)).await;
    let mut small_at = None;
    let mut large_seen = false;
    while small_at.is_none() || !large_seen {
        let got = timeout(MESSAGE_BOUND, b.sink.recv())
            .await
            .expect("no message in time")
            .expect("sink open");
        match got.len() {
            SMALL => small_at = Some(t.elapsed()),
            LARGE => large_seen = true,
            _ => {}
        }
    }
    large.await.expect("task").expect("large send");
    small_at.expect("loop ends with it")
}

/// MB/s of `count` messages of `len` bytes from `senders` concurrent
/// senders (each `count / senders`), until all arrived.
async fn throughput(a: &Arc<Node>, b: &mut Node, len: usize, count: usize, senders: usize) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..senders)
        .map(|_| {
            let (a, url) = (a.clone(), b.url.clone());
            tokio::spawn(async move {
                for _ in 0..count / senders {
                    a.transport
                        .send_space_notify(url.clone(), space(), tagged(SINK, len))
                        .await
                        .expect("send");
                }
            })
        })
        .collect();
    for _ in 0..count / senders * senders {
        recv(b, len).await;
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
    // Connected and warm.
    idle(&a, &mut b, SMALL, 20).await;
    idle(&a, &mut b, 1 << 20, 5).await;
    let idle_small = idle(&a, &mut b, SMALL, 50).await;
    let idle_large = idle(&a, &mut b, LARGE, 3).await;
    let mut times = Vec::new();
    for _ in 0..reps {
        times.push(blocked(&a, &mut b, idle_large / 2).await);
    }
    let blocked = median(times);
    let mbs_64k = throughput(&a, &mut b, 64 * 1024, 2000, 1).await;
    let mbs_1m = throughput(&a, &mut b, 1 << 20, 200, 1).await;
    let mbs_4x1m = throughput(&a, &mut b, 1 << 20, 200, 4).await;
    a.transport.close().await;
    b.transport.close().await;
    Row {
        name: setup.name,
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
    let rt = runtime();
    let rows = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("relay");
        let mut rows = Vec::new();
        for setup in &SETUPS {
            rows.push(measure(setup, &relay, reps).await);
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
