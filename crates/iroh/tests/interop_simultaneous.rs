//! Wire compatibility of simultaneous open between a node on this crate and
//! a node on `kitsune2_transport_iroh` 0.6.0-dev.3 over one embedded relay:
//! both send first at the same moment, before any connection exists; both
//! messages arrive, each side ends with one connected peer, and nobody sees
//! a disconnect or marks the other unresponsive.
//!
//! Like `interop.rs`, each test re-runs itself under `unshare -rn`.

use kitsune2_iroh_test_support::prelude::*;
async fn simultaneous_first_sends(a_ours: bool) {
    let relay = EmbeddedRelay::start().await.unwrap();
    let (fa, fb) = if a_ours {
        (ours(), theirs())
    } else {
        (theirs(), ours())
    };
    let mut a = node(fa, &relay, a_ours).await;
    let mut b = node(fb, &relay, !a_ours).await;
    let (sent_a, sent_b) = timeout(BOUND, async {
        tokio::join!(
            a.transport.send_space_notify(
                b.url.clone(),
                TEST_SPACE_ID,
                Bytes::from_static(b"from a"),
            ),
            b.transport.send_space_notify(
                a.url.clone(),
                TEST_SPACE_ID,
                Bytes::from_static(b"from b"),
            ),
        )
    })
    .await
    .expect("sends timed out");
    sent_a.unwrap();
    sent_b.unwrap();
    let (from, data) = timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    assert_eq!((from, data), (a.url.clone(), Bytes::from_static(b"from a")));
    let (from, data) = timeout(BOUND, a.received.recv()).await.unwrap().unwrap();
    assert_eq!((from, data), (b.url.clone(), Bytes::from_static(b"from b")));
    // Let the losing connection of the race close, then check both sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    for (node, other) in [(&mut a, b_url), (&mut b, a_url)] {
        let peers = node.transport.get_connected_peers().await.unwrap();
        assert_eq!(peers, vec![other]);
        assert!(
            node.disconnected.try_recv().is_err(),
            "simultaneous open reported a disconnect"
        );
        assert!(
            node.unresponsive.try_recv().is_err(),
            "simultaneous open marked a peer unresponsive"
        );
    }
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

#[test]
fn ours_and_incumbent_send_first_simultaneously() {
    in_netns("ours_and_incumbent_send_first_simultaneously", || {
        runtime().block_on(simultaneous_first_sends(true));
    });
}

#[test]
fn incumbent_and_ours_send_first_simultaneously() {
    in_netns("incumbent_and_ours_send_first_simultaneously", || {
        runtime().block_on(simultaneous_first_sends(false));
    });
}
