//! Two connected nodes over one embedded relay, and the teardown scenarios
//! that run both between two nodes of this crate and across the crates.

use crate::node::{Node, close_all, factory, node, notify};
use crate::wait::{BOUND, next};
use bytes::Bytes;
use kitsune2_iroh::relay::EmbeddedRelay;
use std::time::Duration;
use tokio::time::timeout;

/// Starts a relay and two nodes (`a_ours`/`b_ours` pick each one's crate)
/// and connects them: a sends one notify, `hi`, that b receives.
///
/// # Panics
///
/// When any step fails or takes longer than [`BOUND`].
pub async fn connected(a_ours: bool, b_ours: bool) -> (EmbeddedRelay, Node, Node) {
    let relay = EmbeddedRelay::start().await.expect("the relay starts");
    let a = node(factory(a_ours), &relay, a_ours).await;
    let mut b = node(factory(b_ours), &relay, b_ours).await;
    notify(&a, &b.url, Bytes::from_static(b"hi")).await;
    let (from, data) = next(&mut b.received, "first message").await;
    assert_eq!(from, a.url);
    assert_eq!(data, Bytes::from_static(b"hi"));
    (relay, a, b)
}

/// After `b` saw a peer leave: `b` marked nobody unresponsive, within a
/// grace period (1 s) for a late mark.
///
/// # Panics
///
/// When `b` marked a peer.
pub async fn assert_not_unresponsive(b: &mut Node) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        b.unresponsive.try_recv().is_err(),
        "a graceful disconnect marked the peer unresponsive"
    );
}

/// On a [`connected`] pair, a disconnects b with a reason: b's
/// `peer_disconnect` names a with that reason, and b marks nobody
/// unresponsive.
///
/// # Panics
///
/// When any of that does not hold.
pub async fn disconnect_with_reason(a_ours: bool, b_ours: bool) {
    let (relay, a, mut b) = connected(a_ours, b_ours).await;
    let reason = "leaving: test over".to_string();
    timeout(
        BOUND,
        a.transport.disconnect(b.url.clone(), Some(reason.clone())),
    )
    .await
    .expect("disconnect timed out");
    let (peer, got) = timeout(BOUND, b.disconnected.recv())
        .await
        .expect("no peer_disconnect in time")
        .expect("handler gone");
    assert_eq!(peer, a.url);
    assert_eq!(got, Some(reason));
    assert_not_unresponsive(&mut b).await;
    close_all(&[&a, &b]).await;
    relay.shutdown().await.expect("the relay stops");
}

/// On a [`connected`] pair, a closes: b's `peer_disconnect` names a, and
/// b marks nobody unresponsive.
///
/// # Panics
///
/// When any of that does not hold.
pub async fn close_is_graceful(a_ours: bool, b_ours: bool) {
    let (relay, a, mut b) = connected(a_ours, b_ours).await;
    timeout(BOUND, a.transport.close())
        .await
        .expect("close timed out");
    let (peer, _reason) = timeout(BOUND, b.disconnected.recv())
        .await
        .expect("no peer_disconnect in time")
        .expect("handler gone");
    assert_eq!(peer, a.url);
    assert_not_unresponsive(&mut b).await;
    timeout(BOUND, b.transport.close())
        .await
        .expect("close timed out");
    relay.shutdown().await.expect("the relay stops");
}
