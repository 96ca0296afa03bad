//! The budget for partially received frames and the frame progress
//! deadline, against peers that send most of a large frame and stop: the
//! node holds no more than the budget across connections, an honest
//! peer's messages keep arriving, and every stalled frame is closed in
//! bounded time with an error that names the cause.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kitsune2_iroh_core::mem::{MemConnection, MemNetwork, mem_url};
use kitsune2_iroh_core::{
    Connection, CoreConfig, CoreTransport, EndpointId, MAX_READ_CHUNK, UNBUDGETED_PARTIAL_BYTES,
};
use tokio::task::JoinHandle;

const MIB: usize = 1024 * 1024;
const BUDGET: usize = 4 * MIB;
const PROGRESS: Duration = Duration::from_secs(30);

fn victim_config() -> CoreConfig {
    CoreConfig {
        max_frame_bytes: BUDGET,
        partial_frame_budget: BUDGET,
        frame_progress_timeout: PROGRESS,
        ..config()
    }
}

/// A peer that sends a valid preflight, then the header of a data frame of
/// `claim` payload bytes and `send` bytes of it, as fast as the victim
/// reads, then nothing more (its stream stays open).
async fn attacker(
    net: &Arc<MemNetwork>,
    id: EndpointId,
    victim: EndpointId,
    claim: u32,
    send: usize,
) -> (Arc<MemConnection>, JoinHandle<()>) {
    let ep = net.endpoint(id);
    let conn = ep.connect_raw(&victim).await.unwrap();
    let mut s = conn.open_raw().unwrap();
    s.write_raw(preflight_frame(mem_url(&id).as_str()))
        .await
        .unwrap();
    let mut header = vec![1u8];
    header.extend(claim.to_be_bytes());
    s.write_raw(Bytes::from(header)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ep = ep;
        for _ in 0..send / MAX_READ_CHUNK {
            if s.write_raw(Bytes::from(vec![0u8; MAX_READ_CHUNK]))
                .await
                .is_err()
            {
                return;
            }
        }
        // Hold the stream open, mid-frame, until the test ends.
        std::future::pending::<()>().await;
    });
    (conn, task)
}

/// Bytes `node` holds in partial frames, over all its connections, and
/// how many connections it has.
fn held(node: &CoreTransport) -> (usize, usize) {
    let conns = node.connections();
    let bytes = conns.iter().map(|c| c.partial_frame_bytes).sum();
    (bytes, conns.len())
}

/// What the budget lets `conns` connections hold at most: the budget, plus
/// per connection its free share and one read.
fn allowed(conns: usize) -> usize {
    BUDGET + conns * (UNBUDGETED_PARTIAL_BYTES + MAX_READ_CHUNK)
}

#[tokio::test(start_paused = true)]
async fn fifty_attackers_cannot_push_the_node_past_the_budget() {
    init_logs();
    let net = MemNetwork::new();
    let honest = Node::new(&net, 1);
    let mut victim = Node::with_config(&net, [2; 32], victim_config());
    honest.send(&victim, b"before").await.unwrap();
    assert_eq!(victim.recv().await.1, Bytes::from_static(b"before"));

    // 50 peers each claim a 3 MiB frame and send 2 MiB of it: 100 MiB
    // without the budget.
    let mut attackers = Vec::new();
    for i in 0..50u8 {
        attackers.push(attacker(&net, [100 + i; 32], victim.id, 3 * MIB as u32, 2 * MIB).await);
    }
    let mut worst = 0;
    for round in 0..100 {
        settle().await;
        let (bytes, conns) = held(&victim.imp);
        assert!(
            bytes <= allowed(conns),
            "round {round}: {bytes} bytes held over {conns} connections, allowed {}",
            allowed(conns)
        );
        worst = worst.max(bytes);
        // The honest peer's messages keep arriving meanwhile.
        honest.send(&victim, b"during").await.unwrap();
        assert_eq!(victim.recv().await.1, Bytes::from_static(b"during"));
    }
    let usage = victim.imp.frame_budget_usage();
    eprintln!("held at most {worst} bytes in partial frames; budget {usage:?}");
    assert!(usage.peak <= BUDGET, "{usage:?}");
    assert!(
        usage.in_use > BUDGET / 2,
        "the attackers did fill the budget: {usage:?}"
    );

    // Stalled frames are closed after one progress timeout, frames waiting
    // for the budget after two (each wait restarting when the budget frees
    // and they read on): every attacker is gone within a few timeouts.
    let start = tokio::time::Instant::now();
    for _ in 0..10 {
        tokio::time::sleep(PROGRESS).await;
        settle().await;
        if attackers.iter().all(|(c, _)| c.remote_close().is_some()) {
            break;
        }
    }
    eprintln!("all attackers closed within {:?}", start.elapsed());
    let (mut stalled, mut starved) = (0, 0);
    for (conn, task) in &attackers {
        let (_, reason) = conn.remote_close().expect("attacker closed");
        let reason = String::from_utf8_lossy(&reason).into_owned();
        if reason.contains("sent no byte of its partial frame") {
            stalled += 1;
        } else if reason.contains("budget") {
            starved += 1;
        } else {
            panic!("unexpected close reason: {reason}");
        }
        task.abort();
    }
    eprintln!("{stalled} attackers closed as stalled, {starved} as starved by the budget");
    assert_eq!(stalled + starved, 50);
    assert!(stalled > 0 && starved > 0, "{stalled} {starved}");
    assert_eq!(victim.imp.frame_budget_usage().in_use, 0, "all given back");
    assert_eq!(held(&victim.imp), (0, 1), "only the honest peer is left");
    honest.send(&victim, b"after").await.unwrap();
    assert_eq!(victim.recv().await.1, Bytes::from_static(b"after"));
    // A peer that stalls is marked unresponsive; one that only waited for
    // our budget is not.
    assert_eq!(victim.events().unresponsive.len(), stalled);
}

#[tokio::test(start_paused = true)]
async fn a_large_frame_waits_for_the_budget_then_arrives() {
    let net = MemNetwork::new();
    let honest = Node::new(&net, 1);
    let mut victim = Node::with_config(&net, [2; 32], victim_config());
    honest.send(&victim, b"hi").await.unwrap();
    victim.recv().await;
    // Two attackers hold nearly the whole budget, then stall.
    let mut attackers = Vec::new();
    for i in 0..2u8 {
        attackers.push(attacker(&net, [100 + i; 32], victim.id, 3 * MIB as u32, 2 * MIB).await);
    }
    settle().await;
    // A 3 MiB message has to wait until the stalled ones are closed.
    let big = Bytes::from(vec![9u8; 3 * MIB]);
    let send = {
        let tx = honest.tx.clone();
        let to = victim.url.clone();
        let big = big.clone();
        tokio::spawn(async move { tx.send_module(to, space(), MODULE.to_owned(), big).await })
    };
    let (from, got) = tokio::time::timeout(PROGRESS * 3, victim.inbox.recv())
        .await
        .expect("arrives once the stalled frames are closed")
        .expect("inbox open");
    assert_eq!(from, honest.url);
    assert_eq!(got, big);
    send.await.unwrap().unwrap();
    for (conn, _) in &attackers {
        assert!(conn.remote_close().is_some(), "stalled attacker closed");
    }
}

#[tokio::test(start_paused = true)]
async fn a_frame_stalled_mid_way_closes_the_connection_with_a_named_error() {
    let net = MemNetwork::new();
    let victim = Node::with_config(&net, [2; 32], victim_config());
    let (conn, _task) = attacker(&net, [100; 32], victim.id, 1000, 0).await;
    tokio::time::sleep(PROGRESS - Duration::from_secs(1)).await;
    assert!(
        conn.remote_close().is_none(),
        "still open before the deadline"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    let (_, reason) = conn.remote_close().expect("closed at the deadline");
    assert_eq!(
        String::from_utf8_lossy(&reason),
        "the peer sent no byte of its partial frame for 30 s"
    );
    assert!(victim.imp.connections().is_empty());
}

#[test]
fn a_budget_below_the_frame_limit_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let net = MemNetwork::new();
        let (rec, _taps) = Recorder::new();
        let config = CoreConfig {
            partial_frame_budget: BUDGET - 1,
            ..victim_config()
        };
        let err = CoreTransport::create(
            net.endpoint([1; 32]),
            kitsune2_api::TxImpHnd::new(rec),
            config,
            Arc::new(kitsune2_iroh_core::SystemClock),
        )
        .unwrap_err();
        assert!(err.to_string().contains("partial_frame_budget"), "{err}");
    });
}
