//! Two transports on this crate over real iroh through the embedded relay:
//! `disconnect`'s reason reaches the peer, `close` is graceful, and
//! `dump_network_stats` counts agree across the two sides.

use kitsune2_iroh_test_support::prelude::*;

/// a sends 5 notifies and b answers 3; each side's counts for the other
/// mirror the other's, and differ by exactly the messages sent.
async fn stats_agree() {
    let (relay, mut a, mut b) = connected(true, true).await;
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
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

#[test]
fn disconnect_reason_is_delivered() {
    runtime().block_on(disconnect_with_reason(true, true));
}

#[test]
fn close_disconnects_gracefully() {
    runtime().block_on(close_is_graceful(true, true));
}

#[test]
fn network_stats_agree_across_sides() {
    runtime().block_on(stats_agree());
}
