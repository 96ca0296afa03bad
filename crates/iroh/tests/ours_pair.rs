//! Two transports on this crate over real iroh through the embedded relay:
//! `disconnect`'s reason reaches the peer, `close` is graceful, and
//! `dump_network_stats` counts agree across the two sides.

mod support;

use support::*;

/// Starts a relay and two nodes on this crate, and connects them: a sends
/// one notify that b receives.
async fn connected() -> (EmbeddedRelay, Node, Node) {
    let relay = EmbeddedRelay::start().await.unwrap();
    let a = node(ours(), &relay, true).await;
    let mut b = node(ours(), &relay, true).await;
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

async fn disconnect_with_reason() {
    let (relay, a, mut b) = connected().await;
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

async fn close_is_graceful() {
    let (relay, a, mut b) = connected().await;
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

/// a sends 5 notifies and b answers 3; each side's counts for the other
/// mirror the other's, and differ by exactly the messages sent.
async fn stats_agree() {
    let (relay, mut a, mut b) = connected().await;
    for i in 0..5u8 {
        timeout(
            BOUND,
            a.transport
                .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from(vec![i; 100])),
        )
        .await
        .unwrap()
        .unwrap();
    }
    for i in 0..3u8 {
        timeout(
            BOUND,
            b.transport
                .send_space_notify(a.url.clone(), TEST_SPACE_ID, Bytes::from(vec![i; 1000])),
        )
        .await
        .unwrap()
        .unwrap();
    }
    for _ in 0..5 {
        timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    }
    for _ in 0..3 {
        timeout(BOUND, a.received.recv()).await.unwrap().unwrap();
    }
    let sa = stats(&a).await;
    let sb = stats(&b).await;
    assert_eq!(sa.connections.len(), 1, "{sa:?}");
    assert_eq!(sb.connections.len(), 1, "{sb:?}");
    let (ca, cb) = (&sa.connections[0], &sb.connections[0]);
    assert_eq!(ca.send_message_count, cb.recv_message_count);
    assert_eq!(cb.send_message_count, ca.recv_message_count);
    assert_eq!(ca.send_bytes, cb.recv_bytes);
    assert_eq!(cb.send_bytes, ca.recv_bytes);
    // The 1 handshake notify plus 5 from a, 3 from b.
    assert_eq!(ca.send_message_count - cb.send_message_count, 3);
    assert!(ca.send_bytes > 500 && cb.send_bytes > 3000, "{ca:?} {cb:?}");
    timeout(BOUND, async {
        a.transport.close().await;
        b.transport.close().await;
    })
    .await
    .unwrap();
    relay.shutdown().await.unwrap();
}

#[test]
fn disconnect_reason_is_delivered() {
    runtime().block_on(disconnect_with_reason());
}

#[test]
fn close_disconnects_gracefully() {
    runtime().block_on(close_is_graceful());
}

#[test]
fn network_stats_agree_across_sides() {
    runtime().block_on(stats_agree());
}
