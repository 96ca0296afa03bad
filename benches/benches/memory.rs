//! Memory: resident bytes per idle connection and per connected peer, with
//! one node and 100 peers in one process, over the embedded relay.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench memory
//! ```
//!
//! Each kind (ours, the incumbent, bare iroh) runs in a process of its own
//! (the binary runs itself once per kind, `MEMORY_KIND` set), so that one
//! kind's freed memory does not hide the next one's growth. Resident size
//! is `/proc/self/statm`'s second field times the page size (4096 on the
//! x86-64 machines this runs on), read:
//!
//! 1. after the relay and the hub node started (`base`),
//! 2. after `MEMORY_PEERS` (default 100) peer nodes started, none connected
//!    (`peers`),
//! 3. after each peer sent the hub one message (so one connection per peer
//!    is active) and 2 s of idleness (`connected`).
//!
//! Per idle connection = (connected - peers) / n: both ends of a
//! connection, since both live in this process. Per connected peer =
//! (connected - base) / n: a peer node with its connection, both ends.

use std::time::{Duration, Instant};

use kitsune2_iroh::relay::EmbeddedRelay;
use tokio::time::timeout;

mod common;
use common::*;

/// Page size of `/proc/self/statm`'s counts.
const PAGE: u64 = 4096;

/// Peers started at once.
const BATCH: usize = 10;

/// Idle time before the last reading.
const IDLE: Duration = Duration::from_secs(2);

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm's resident field");
    pages * PAGE
}

/// The three readings, in bytes.
struct Readings {
    base: u64,
    peers: u64,
    connected: u64,
}

async fn k2(relay_url: &str, ours: bool, n: usize) -> Readings {
    let mut hub = node(factory(ours), relay_url, ours).await;
    let base = rss();
    let mut peers = Vec::with_capacity(n);
    while peers.len() < n {
        let k = BATCH.min(n - peers.len());
        let starting: Vec<_> = (0..k)
            .map(|_| {
                let relay_url = relay_url.to_owned();
                tokio::spawn(async move { node(factory(ours), &relay_url, ours).await })
            })
            .collect();
        for s in starting {
            peers.push(s.await.expect("a peer failed to start"));
        }
    }
    let with_peers = rss();
    for peer in &peers {
        timeout(
            MESSAGE_BOUND,
            peer.transport
                .send_space_notify(hub.url.clone(), space(), tagged(SINK, 16)),
        )
        .await
        .expect("connect timed out")
        .expect("send failed");
        timeout(MESSAGE_BOUND, hub.sink.recv())
            .await
            .expect("a peer's message did not arrive")
            .expect("handler gone");
    }
    tokio::time::sleep(IDLE).await;
    let connected = rss();
    for p in peers {
        p.transport.close().await;
    }
    hub.transport.close().await;
    Readings {
        base,
        peers: with_peers,
        connected,
    }
}

async fn bare_iroh(relay: &kitsune2_iroh::RelayUrl, n: usize) -> Readings {
    let hub = bare::endpoint(relay, false).await;
    let base = rss();
    let mut peers = Vec::with_capacity(n);
    while peers.len() < n {
        let k = BATCH.min(n - peers.len());
        let starting: Vec<_> = (0..k)
            .map(|_| {
                let relay = relay.clone();
                tokio::spawn(async move { bare::endpoint(&relay, false).await })
            })
            .collect();
        for s in starting {
            peers.push(s.await.expect("a peer failed to start"));
        }
    }
    let with_peers = rss();
    let mut conns = Vec::with_capacity(2 * n);
    for peer in &peers {
        let (dialed, accepted) = tokio::join!(
            bare::connect(peer, bare::addr(&hub, relay)),
            bare::accept(&hub)
        );
        let mut send = dialed.open_uni().await.expect("open_uni");
        bare::write_frame(&mut send, tagged(SINK, 16)).await;
        let mut recv = timeout(MESSAGE_BOUND, accepted.accept_uni())
            .await
            .expect("accept_uni timed out")
            .expect("accept_uni");
        bare::read_frame(&mut recv).await.expect("frame");
        conns.push((dialed, send, accepted, recv));
    }
    tokio::time::sleep(IDLE).await;
    let connected = rss();
    drop(conns);
    for p in peers {
        bare::close(p).await;
    }
    bare::close(hub).await;
    Readings {
        base,
        peers: with_peers,
        connected,
    }
}

fn child(kind: &str, n: usize) {
    let rt = runtime();
    let r = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("embedded relay");
        let url = relay.url().to_string();
        let r = match kind {
            "ours" => k2(&url, true, n).await,
            "incumbent" => k2(&url, false, n).await,
            "bare" => bare_iroh(relay.url(), n).await,
            other => panic!("unknown MEMORY_KIND {other}"),
        };
        relay.shutdown().await.expect("relay shutdown");
        r
    });
    let per_conn = r.connected.saturating_sub(r.peers) / n as u64;
    let per_peer = r.connected.saturating_sub(r.base) / n as u64;
    println!(
        "{kind:<10} base {:>7.1} MiB  +{n} peers {:>7.1} MiB  connected+idle {:>7.1} MiB  per idle connection {:>7.1} KiB  per connected peer {:>7.1} KiB",
        r.base as f64 / 1048576.0,
        r.peers as f64 / 1048576.0,
        r.connected as f64 / 1048576.0,
        per_conn as f64 / 1024.0,
        per_peer as f64 / 1024.0,
    );
}

fn main() {
    let n = std::env::var("MEMORY_PEERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .max(1);
    if let Ok(kind) = std::env::var("MEMORY_KIND") {
        child(&kind, n);
        return;
    }
    println!(
        "resident memory, one hub and {n} peers in one process (both ends of each connection)"
    );
    let exe = std::env::current_exe().expect("own executable");
    for kind in ["ours", "incumbent", "bare"] {
        let t = Instant::now();
        let status = std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env("MEMORY_KIND", kind)
            .status()
            .expect("run self");
        assert!(status.success(), "{kind}: child failed ({status})");
        eprintln!("{kind}: {:?}", t.elapsed());
    }
}
