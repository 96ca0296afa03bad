//! Wire compatibility of connection teardown between a node on this crate
//! and a node on `kitsune2_transport_iroh` 0.6.0-dev.3 over one embedded
//! relay: `disconnect` with a reason reaches the other side's
//! `peer_disconnect`, and `close` is a graceful disconnect that marks no
//! peer unresponsive, with either crate on either side.
//!
//! Like `interop.rs`, each test re-runs itself under `unshare -rn`.

mod support;

use support::*;
/// Starts a relay and two nodes (`a_ours` picks a's crate, b is the other
/// crate), and connects them: a sends one notify that b receives.
async fn connected(a_ours: bool) -> (EmbeddedRelay, Node, Node) {
    let relay = EmbeddedRelay::start().await.unwrap();
    let (fa, fb) = if a_ours {
        (ours(), theirs())
    } else {
        (theirs(), ours())
    };
    let a = node(fa, &relay, a_ours).await;
    let mut b = node(fb, &relay, !a_ours).await;
    timeout(
        BOUND,
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"hi")),
    )
    .await
    .expect("send timed out")
    .unwrap();
    let (from, data) = timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    assert_eq!(from, a.url);
    assert_eq!(data, Bytes::from_static(b"hi"));
    (relay, a, b)
}

/// After `b` saw `a` leave: `b` marked nobody unresponsive, within a grace
/// period for a late mark.
async fn assert_not_unresponsive(b: &mut Node) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        b.unresponsive.try_recv().is_err(),
        "a graceful disconnect marked the peer unresponsive"
    );
}

async fn disconnect_with_reason(a_ours: bool) {
    let (relay, a, mut b) = connected(a_ours).await;
    let reason = "leaving: test over".to_string();
    timeout(
        BOUND,
        a.transport.disconnect(b.url.clone(), Some(reason.clone())),
    )
    .await
    .unwrap();
    let (peer, got) = timeout(BOUND, b.disconnected.recv())
        .await
        .expect("no peer_disconnect in time")
        .unwrap();
    assert_eq!(peer, a.url);
    assert_eq!(got, Some(reason));
    assert_not_unresponsive(&mut b).await;
    timeout(BOUND, async {
        a.transport.close().await;
        b.transport.close().await;
    })
    .await
    .unwrap();
    relay.shutdown().await.unwrap();
}

async fn close_is_graceful(a_ours: bool) {
    let (relay, a, mut b) = connected(a_ours).await;
    timeout(BOUND, a.transport.close()).await.unwrap();
    let (peer, _reason) = timeout(BOUND, b.disconnected.recv())
        .await
        .expect("no peer_disconnect in time")
        .unwrap();
    assert_eq!(peer, a.url);
    assert_not_unresponsive(&mut b).await;
    timeout(BOUND, b.transport.close()).await.unwrap();
    relay.shutdown().await.unwrap();
}

#[test]
fn ours_disconnects_incumbent_with_reason() {
    in_netns("ours_disconnects_incumbent_with_reason", || {
        runtime().block_on(disconnect_with_reason(true));
    });
}

#[test]
fn incumbent_disconnects_ours_with_reason() {
    in_netns("incumbent_disconnects_ours_with_reason", || {
        runtime().block_on(disconnect_with_reason(false));
    });
}

#[test]
fn ours_close_is_graceful_for_incumbent() {
    in_netns("ours_close_is_graceful_for_incumbent", || {
        runtime().block_on(close_is_graceful(true));
    });
}

#[test]
fn incumbent_close_is_graceful_for_ours() {
    in_netns("incumbent_close_is_graceful_for_ours", || {
        runtime().block_on(close_is_graceful(false));
    });
}
