//! A healthy but busy peer is not given up on: the dialer waits for the
//! acceptor's answer to its preflight until the connect timeout, not the
//! acceptor's 10 s, so a node whose kitsune2 takes long to judge a
//! preflight (hundreds of peers dialing at once on two cores) keeps its
//! connections and nothing it sends on them is thrown away.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use kitsune2_iroh_core::mem::MemNetwork;
use kitsune2_iroh_core::{CoreConfig, PREFLIGHT_TIMEOUT};

/// Default settings (connect timeout 60 s), as a real node has them.
fn real_config() -> CoreConfig {
    CoreConfig {
        backend: "mem".to_owned(),
        ..CoreConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_acceptor_slower_than_the_preflight_timeout_keeps_the_connection() {
    init_logs();
    let net = MemNetwork::new();
    let mut a = Node::with_config(&net, [1; 32], real_config());
    let mut b = Node::with_config(&net, [2; 32], real_config());
    // B's kitsune2 takes 1.5 preflight timeouts to judge A's preflight.
    let judging = PREFLIGHT_TIMEOUT * 3 / 2;
    b.rec
        .validate_delay_ms
        .store(judging.as_millis() as u64, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    // B answers as soon as it accepted, and sends at once.
    let b_sends = {
        let tx = b.tx.clone();
        let to = a.url.clone();
        let rec = b.rec.clone();
        async move {
            for _ in 0..1000 {
                if !rec.events().preflights.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(judging).await;
            tx.send_module(
                to,
                space(),
                MODULE.to_owned(),
                Bytes::from_static(b"from b"),
            )
            .await
        }
    };
    let (a_sent, b_sent) = tokio::join!(a.send(&b, b"from a"), b_sends);
    a_sent.expect("A's send waits for the busy acceptor");
    b_sent.expect("B's send goes over the same connection");
    assert!(
        started.elapsed() >= judging,
        "the exchange took {:?}",
        started.elapsed()
    );
    assert_eq!(b.recv().await.1, Bytes::from_static(b"from a"));
    assert_eq!(a.recv().await.1, Bytes::from_static(b"from b"));
    for node in [&a, &b] {
        let events = node.events();
        assert!(events.unresponsive.is_empty(), "{:?}", events.unresponsive);
        assert!(events.disconnects.is_empty(), "{:?}", events.disconnects);
    }
}

#[tokio::test(start_paused = true)]
async fn an_acceptor_that_never_answers_fails_the_dial_at_the_connect_timeout() {
    let net = MemNetwork::new();
    let config = CoreConfig {
        connect_timeout: Duration::from_secs(30),
        ..real_config()
    };
    let a = Node::with_config(&net, [1; 32], config);
    let b = Node::with_config(&net, [2; 32], real_config());
    b.rec.validate_delay_ms.store(3_600_000, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let err = a.send(&b, b"lost").await.expect_err("no answer");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "waited {waited:?}"
    );
    assert!(
        err.to_string().contains("no preflight from the peer"),
        "{err}"
    );
    assert_eq!(
        a.events().unresponsive.len(),
        1,
        "the silent peer is marked"
    );
}

/// Both peers send first at once, and our handshake is slow (a lost
/// packet, retransmitted a second later): the peer's connection, active
/// before ours is through, carries our send at once.
#[tokio::test(start_paused = true)]
async fn a_slow_dial_gives_way_to_the_peers_connection() {
    init_logs();
    let net = MemNetwork::new();
    let mut a = Node::with_config(&net, [1; 32], real_config());
    let mut b = Node::with_config(&net, [2; 32], real_config());
    // A's connects to B take 5 s; B's to A are instant.
    net.delay_connects(b.id, Some(Duration::from_secs(5)));
    let started = tokio::time::Instant::now();
    let (a_sent, b_sent) = tokio::join!(a.send(&b, b"from a"), b.send(&a, b"from b"));
    a_sent.unwrap();
    b_sent.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "both sends took {took:?}");
    assert_eq!(b.recv().await.1, Bytes::from_static(b"from a"));
    assert_eq!(a.recv().await.1, Bytes::from_static(b"from b"));
    settle().await;
    assert_eq!(a.imp.connections().len(), 1, "one connection per peer");
    for node in [&a, &b] {
        assert!(node.events().unresponsive.is_empty());
    }
}
