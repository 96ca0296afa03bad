//! The cost of a deliberate close: `close()` of a node connected to 0, 10
//! and 100 peers, and `disconnect()` of one peer, ours (which drains every
//! connection so nothing in flight is lost) against the incumbent (which
//! closes at once), side by side in one run over the embedded relay.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench close
//! ```
//!
//! Peers are always of the same crate as the node. Each peer first sends
//! the node one message, so every connection is established and active
//! before the clock starts. Prints one line per measurement; `CLOSE_RUNS`
//! (default 3) sets the repetitions, and the median is reported.

use std::time::{Duration, Instant};

use kitsune2_iroh::relay::EmbeddedRelay;
use tokio::time::timeout;

mod common;
use common::*;

const PEERS: [usize; 3] = [0, 10, 100];

/// `n` peers of one crate, each connected to `node` by one message.
async fn connected_peers(target: &mut Node, relay_url: &str, ours: bool, n: usize) -> Vec<Node> {
    // Built concurrently: the incumbent's nodes take seconds each to start.
    let mut starting = Vec::with_capacity(n);
    for _ in 0..n {
        let relay_url = relay_url.to_owned();
        starting.push(tokio::spawn(async move {
            node(factory(ours), &relay_url, ours).await
        }));
    }
    let mut peers = Vec::with_capacity(n);
    for s in starting {
        peers.push(s.await.expect("a peer failed to start"));
    }
    for peer in &peers {
        timeout(
            MESSAGE_BOUND,
            peer.transport
                .send_space_notify(target.url.clone(), space(), tagged(SINK, 16)),
        )
        .await
        .expect("connect timed out")
        .expect("connect failed");
    }
    for _ in 0..n {
        timeout(MESSAGE_BOUND, target.sink.recv())
            .await
            .expect("a peer's first message did not arrive")
            .expect("handler gone");
    }
    peers
}

async fn close_all(nodes: Vec<Node>) {
    for n in nodes {
        n.transport.close().await;
    }
}

/// Time of `close()` on a node with `n` connected peers.
async fn close_time(relay_url: &str, ours: bool, n: usize) -> Duration {
    let mut node = node(factory(ours), relay_url, ours).await;
    let peers = connected_peers(&mut node, relay_url, ours, n).await;
    let start = Instant::now();
    timeout(MESSAGE_BOUND, node.transport.close())
        .await
        .expect("close timed out");
    let took = start.elapsed();
    close_all(peers).await;
    took
}

/// Mean time of `disconnect()` over `n` connected peers, one after another.
async fn disconnect_time(relay_url: &str, ours: bool, n: usize) -> Duration {
    let mut node = node(factory(ours), relay_url, ours).await;
    let peers = connected_peers(&mut node, relay_url, ours, n).await;
    let start = Instant::now();
    for peer in &peers {
        timeout(
            MESSAGE_BOUND,
            node.transport.disconnect(peer.url.clone(), None),
        )
        .await
        .expect("disconnect timed out");
    }
    let took = start.elapsed() / u32::try_from(n.max(1)).unwrap_or(1);
    node.transport.close().await;
    close_all(peers).await;
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median of `runs` measurements for ours, then for the incumbent.
async fn medians(runs: usize, measure: impl AsyncFn(bool) -> Duration) -> [Duration; 2] {
    let mut row = [Duration::ZERO; 2];
    for (slot, ours) in row.iter_mut().zip([true, false]) {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            times.push(measure(ours).await);
        }
        *slot = median(times);
    }
    row
}

fn print_row(what: &str, [ours, theirs]: [Duration; 2]) {
    println!(
        "{what}: ours {ours:>10.2?}  incumbent {theirs:>10.2?}  ratio {:.2}",
        ours.as_secs_f64() / theirs.as_secs_f64().max(1e-9)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the
    // command line.
    let runs: usize = std::env::var("CLOSE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let rt = runtime();
    rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("embedded relay");
        let url = relay.url().to_string();
        println!("close() and disconnect() times, median of {runs} runs");
        for n in PEERS {
            let row = medians(runs, async |ours| close_time(&url, ours, n).await).await;
            print_row(&format!("close() with {n:>3} peers"), row);
        }
        let n = 10;
        let row = medians(runs, async |ours| disconnect_time(&url, ours, n).await).await;
        print_row(&format!("disconnect() (mean over {n} peers)"), row);
        relay.shutdown().await.expect("relay shutdown");
    });
}
