//! Dialing under load: first sends to many new peers at once start their
//! handshakes a few at a time (`max_concurrent_dials`) and all arrive; a
//! peer that does not answer holds its place for at most `DIAL_SLOT_HOLD`;
//! a handshake the peer dropped, or a connection lost before the peer's
//! preflight came, is dialed again while the connect timeout lasts.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use kitsune2_iroh_core::mem::MemNetwork;
use kitsune2_iroh_core::{CoreConfig, DIAL_SLOT_HOLD};

const PEERS: u8 = 20;
const SLOTS: usize = 4;

#[tokio::test(start_paused = true)]
async fn first_sends_to_many_peers_dial_a_few_at_a_time_and_all_arrive() {
    let net = MemNetwork::new();
    let config = CoreConfig {
        max_concurrent_dials: SLOTS,
        ..config()
    };
    let a = Node::with_config(&net, [1; 32], config);
    let mut peers: Vec<Node> = (0..PEERS).map(|i| Node::new(&net, 10 + i)).collect();
    for p in &peers {
        // Each handshake takes 100 ms: well within the slot's hold.
        net.delay_connects(p.id, Some(Duration::from_millis(100)));
    }
    let mut sends = tokio::task::JoinSet::new();
    for p in &peers {
        sends.spawn(a.send_owned(p, b"hi"));
    }
    for r in sends.join_all().await {
        r.expect("every peer is reachable");
    }
    for p in &mut peers {
        assert_eq!(p.recv().await.1, Bytes::from_static(b"hi"));
    }
    let peak = net.peak_concurrent_connects();
    assert!(
        (2..=SLOTS).contains(&peak),
        "{peak} handshakes at once, with {SLOTS} slots"
    );
    assert!(a.events().unresponsive.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_holds_its_dial_slot_for_a_moment_only() {
    let net = MemNetwork::new();
    let config = CoreConfig {
        max_concurrent_dials: 1,
        connect_timeout: Duration::from_secs(60),
        ..config()
    };
    let a = Node::with_config(&net, [1; 32], config);
    let silent = Node::new(&net, 2);
    let mut b = Node::new(&net, 3);
    net.delay_connects(silent.id, Some(Duration::from_secs(3600)));
    let to_silent = tokio::spawn(a.send_owned(&silent, b"lost"));
    // The silent peer's dial has the one slot.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    a.send(&b, b"through").await.expect("b is reachable");
    assert_eq!(b.recv().await.1, Bytes::from_static(b"through"));
    assert!(
        !to_silent.is_finished(),
        "the silent peer's send is still dialing"
    );
    let waited = started.elapsed();
    assert!(
        waited <= DIAL_SLOT_HOLD,
        "b's dial waited {waited:?} for the silent peer's slot"
    );
    let e = to_silent.await.unwrap().expect_err("never answers");
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn handshakes_the_peer_dropped_are_dialed_again() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    let mut b = Node::new(&net, 2);
    net.fail_handshakes(b.id, 3);
    a.send(&b, b"after three")
        .await
        .expect("the fourth handshake works");
    assert_eq!(b.recv().await.1, Bytes::from_static(b"after three"));
    assert!(a.events().unresponsive.is_empty(), "b was busy, not gone");
    assert!(b.inbox.try_recv().is_err(), "delivered once");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_keeps_dropping_handshakes_fails_the_send_at_the_connect_timeout() {
    let net = MemNetwork::new();
    let config = CoreConfig {
        connect_timeout: Duration::from_secs(5),
        ..config()
    };
    let a = Node::with_config(&net, [1; 32], config);
    let b = Node::new(&net, 2);
    net.fail_handshakes(b.id, usize::MAX);
    let started = tokio::time::Instant::now();
    let e = a
        .send(&b, b"never")
        .await
        .expect_err("every handshake fails");
    let took = started.elapsed();
    assert!(e.to_string().contains("dropped the handshake"), "{e}");
    assert!(
        took > Duration::from_secs(3) && took <= Duration::from_secs(5),
        "gave up after {took:?}: not within the connect timeout's end"
    );
    assert_eq!(a.events().unresponsive.len(), 1, "marked once, at the end");
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_before_the_peers_preflight_is_dialed_again() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    let mut b = Node::new(&net, 2);
    // b's preflight answer takes 200 ms to arrive; the connection dies
    // underneath (no close by either side) before it does.
    net.set_latency(b.id, Some(Duration::from_millis(200)));
    let send = tokio::spawn(a.send_owned(&b, b"again"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(net.kill(a.id, b.id, None), 1, "the dial's connection");
    net.set_latency(b.id, None);
    send.await.unwrap().expect("dialed again");
    assert_eq!(b.recv().await.1, Bytes::from_static(b"again"));
    assert!(a.events().unresponsive.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_gave_up_waiting_for_our_preflight_is_dialed_again() {
    let net = MemNetwork::new();
    let config = CoreConfig {
        connect_timeout: Duration::from_secs(60),
        ..config()
    };
    let a = Node::with_config(&net, [1; 32], config);
    let mut b = Node::new(&net, 2);
    // Our preflight takes longer than the 10 s b waits for it: b closes
    // the connection saying so (a busy path, not a refusal).
    net.set_latency(a.id, Some(Duration::from_secs(11)));
    let send = tokio::spawn(a.send_owned(&b, b"late"));
    tokio::time::sleep(Duration::from_millis(10_100)).await;
    net.set_latency(a.id, None);
    send.await.unwrap().expect("dialed again");
    assert_eq!(b.recv().await.1, Bytes::from_static(b"late"));
    assert!(a.events().unresponsive.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_refuses_our_preflight_fails_the_send_at_once() {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    let b = Node::new(&net, 2);
    b.rec
        .reject_preflights
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    a.send(&b, b"no").await.expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a refusal is not dialed again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_at_its_pending_connection_limit_is_dialed_again_once_it_has_room() {
    let net = MemNetwork::new();
    let a_config = CoreConfig {
        connect_timeout: Duration::from_secs(60),
        ..config()
    };
    let a = Node::with_config(&net, [1; 32], a_config);
    let b_config = CoreConfig {
        max_pending_connections: 1,
        ..config()
    };
    let mut b = Node::with_config(&net, [2; 32], b_config);
    // A silent peer holds b's one pending place until b's 10 s preflight
    // deadline: b refuses a's connection, saying why.
    let raw = net.endpoint([9; 32]);
    let _silent = raw.connect_raw(&b.id).await.unwrap();
    settle().await;
    a.send(&b, b"room")
        .await
        .expect("dialed again once b had room");
    assert_eq!(b.recv().await.1, Bytes::from_static(b"room"));
    assert!(a.events().unresponsive.is_empty());
}
