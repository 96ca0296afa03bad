//! A peer that restarts under the same key and dials us replaces its dead
//! connection at once (issue 13 item 2), and a live peer dialing anew
//! does not: resolution stands and both sides keep agreeing.
//!
//! The case that needs the rule: we (the larger id) dialed the peer, so
//! resolution prefers our dial over anything the peer dials. When the
//! peer restarts, its new dial would lose to the dead connection. The
//! registry calls that contest; the backend's `probe_gone` decides (the
//! mem backend: gone once `MemNetwork::crash` marked the peer).

mod common;

use std::time::Duration;

use bytes::Bytes;

use common::*;
use kitsune2_iroh_core::CloseCode;
use kitsune2_iroh_core::mem::{MemNetwork, mem_url};
use kitsune2_iroh_core::{ConnState, Connection, RecvStream};

/// `big` dialed `small`; `small` crashes and comes back under its key;
/// its first send goes through on a new connection that `big` takes at
/// once, and `big`'s next send reaches the new process.
#[tokio::test(start_paused = true)]
async fn restarted_peer_replaces_its_dead_connection_at_once() {
    init_logs();
    let net = MemNetwork::new();
    let mut big = Node::new(&net, 2);
    let small = Node::new(&net, 1);
    big.send(&small, b"before").await.unwrap();
    let conns = big.imp.connections();
    assert_eq!(conns.len(), 1);
    assert!(conns[0].dialed_by_us, "big dialed the connection");

    assert_eq!(net.crash(small.id), 1, "one connection marked dead");
    // The same key on a fresh endpoint: the old process is gone (its
    // transport stays in memory, inert, so that nothing closes).
    let mut back = Node::new(&net, 1);
    back.send(&big, b"I am back")
        .await
        .expect("the restarted peer's first send goes through");
    let (from, msg) = big.recv().await;
    assert_eq!((from, &msg[..]), (back.url.clone(), &b"I am back"[..]));

    big.send(&back, b"welcome back").await.unwrap();
    assert_eq!(&back.recv().await.1[..], b"welcome back");
    settle().await;

    let ours = big.imp.connections();
    assert_eq!(ours.len(), 1, "the dead connection is gone: {ours:?}");
    assert_eq!(ours[0].state, ConnState::Active);
    assert!(
        !ours[0].dialed_by_us,
        "the peer's new dial carries the data"
    );
    let theirs = back.imp.connections();
    assert_eq!(theirs.len(), 1);
    assert!(
        theirs[0].dialed_by_us,
        "both sides keep the same connection"
    );
    let ev = big.events();
    assert!(ev.unresponsive.is_empty(), "{:?}", ev.unresponsive);
    assert!(ev.disconnects.is_empty(), "{:?}", ev.disconnects);
}

/// The same contest with the peer alive (its old connection answers):
/// the new dial loses with code 2 as resolution says, the old connection
/// keeps carrying data, nothing is reported.
#[tokio::test(start_paused = true)]
async fn live_peer_dialing_anew_loses_to_the_active_connection() {
    let net = MemNetwork::new();
    let big = Node::new(&net, 2);
    let mut small = Node::new(&net, 1);
    big.send(&small, b"first").await.unwrap();
    assert_eq!(&small.recv().await.1[..], b"first");

    let raw = small.ep.connect_raw(&big.id).await.unwrap();
    let mut s = raw.open_raw().unwrap();
    s.write_raw(preflight_frame(small.url.as_str()))
        .await
        .unwrap();
    // big's answer never comes: the connection is closed as superseded
    // (bounded: 30 s of paused time).
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        if let Ok(mut stream) = raw.accept_raw().await {
            while let Ok(Some(_)) = stream.read_chunk().await {}
        }
    })
    .await;
    settle().await;
    assert!(
        matches!(raw.remote_close(), Some((CloseCode::Superseded, _))),
        "the new dial lost: {:?}",
        raw.remote_close()
    );

    big.send(&small, b"second").await.unwrap();
    assert_eq!(&small.recv().await.1[..], b"second");
    let ours = big.imp.connections();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].dialed_by_us, "the old connection stays");
    for n in [&big, &small] {
        let ev = n.events();
        assert!(ev.unresponsive.is_empty(), "{:?}", ev.unresponsive);
        assert!(ev.disconnects.is_empty(), "{:?}", ev.disconnects);
    }
}

/// A peer that never reads fails a send at the write timeout; the next
/// send does not meet that dead connection again (it dials anew), and
/// neither do the sends queued behind it.
#[tokio::test(start_paused = true)]
async fn after_a_write_timeout_the_next_send_dials_anew() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 2);
    let raw_id = [9; 32];
    let raw = net.endpoint(raw_id);
    let conn = raw.connect_raw(&a.id).await.unwrap();
    let mut s = conn.open_raw().unwrap();
    s.write_raw(preflight_frame(mem_url(&raw_id).as_str()))
        .await
        .unwrap();
    // a answers with its preflight; the raw peer never reads further.
    let mut from_a = conn.accept_raw().await.unwrap();
    assert!(from_a.read_chunk().await.unwrap().is_some());
    let raw_url = mem_url(&raw_id);
    let send = |i: u32| {
        a.tx.send_module(
            raw_url.clone(),
            space(),
            MODULE.to_owned(),
            Bytes::from(vec![i as u8; 64 * 1024]),
        )
    };
    let mut failed = None;
    tokio::time::timeout(Duration::from_secs(600), async {
        for i in 0..1000u32 {
            if let Err(e) = send(i).await {
                failed = Some(e);
                break;
            }
        }
    })
    .await
    .expect("bounded");
    let err = failed.expect("the write timeout fails a send");
    assert!(err.to_string().contains("took none of our bytes"), "{err}");
    // At once, before the dead connection's reader has run.
    let next = send(1000).await;
    let stale = next
        .as_ref()
        .is_err_and(|e| e.to_string().contains("took none of our bytes"));
    assert!(!stale, "the next send met the dead connection: {next:?}");
}
