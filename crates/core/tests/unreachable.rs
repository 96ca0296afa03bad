//! Sends to a peer that cannot be reached: each fails once the dial it
//! waited for fails, instead of queueing a connect timeout of its own
//! behind the one before.

mod common;

use std::time::Duration;

use common::*;
use kitsune2_iroh_core::CoreConfig;
use kitsune2_iroh_core::mem::MemNetwork;

const CONNECT: Duration = Duration::from_secs(5);

#[tokio::test(start_paused = true)]
async fn sends_queued_behind_a_failing_dial_share_its_outcome() {
    let net = MemNetwork::new();
    let config = CoreConfig {
        connect_timeout: CONNECT,
        ..config()
    };
    let a = Node::with_config(&net, [1; 32], config);
    let b = Node::new(&net, 2);
    // Connects to B hang: B is unreachable.
    net.delay_connects(b.id, Some(Duration::from_secs(3600)));
    let started = tokio::time::Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..10 {
        sends.spawn(a.send_owned(&b, b"lost"));
    }
    let results = sends.join_all().await;
    let took = started.elapsed();
    for r in &results {
        let e = r.as_ref().expect_err("unreachable");
        assert!(e.to_string().contains("timed out"), "{e}");
    }
    assert!(
        took < CONNECT * 2,
        "ten sends took {took:?}: one connect timeout each, one after the other"
    );
    assert_eq!(a.events().unresponsive.len(), 1, "marked once, by the dial");
    // A later send dials again (no lasting negative cache: kitsune2's
    // unresponsive mark is what keeps it away).
    net.delay_connects(b.id, None);
    a.send(&b, b"later").await.expect("reachable again");
}
