//! Wire compatibility: a node on this crate and a node on
//! `kitsune2_transport_iroh` 0.6.0-dev.3 talk over one embedded relay, in
//! both dial directions.
//!
//! The incumbent builds its endpoint with iroh's port mapper on, which
//! probes the LAN gateway. So that no packet leaves loopback, each test
//! re-runs itself in a fresh network namespace with only `lo` (`unshare
//! -rn`); without `unshare` the test fails rather than touch the network.

use kitsune2_iroh::url::{parse_peer_url, peer_url};
use kitsune2_iroh_test_support::prelude::*;

/// A node on either crate whose peer URL parses into this relay and an
/// endpoint id, and formats back byte for byte.
async fn checked_node(factory: DynTransportFactory, relay: &EmbeddedRelay, ours: bool) -> Node {
    let n = node(factory, relay, ours).await;
    let (relay_url, id) = parse_peer_url(&n.url).unwrap();
    assert_eq!(relay_url, *relay.url());
    assert_eq!(peer_url(&relay_url, id).unwrap(), n.url);
    n
}

/// `dialer` sends first, `acceptor` answers over the same connection.
async fn converse(mut dialer: Node, mut acceptor: Node) {
    timeout(
        BOUND,
        dialer.transport.send_space_notify(
            acceptor.url.clone(),
            TEST_SPACE_ID,
            Bytes::from_static(b"ping"),
        ),
    )
    .await
    .expect("send timed out")
    .unwrap();
    let (from, data) = timeout(BOUND, acceptor.received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, dialer.url);
    assert_eq!(data, Bytes::from_static(b"ping"));
    for i in 0..5u8 {
        timeout(
            BOUND,
            acceptor.transport.send_space_notify(
                dialer.url.clone(),
                TEST_SPACE_ID,
                Bytes::from(vec![i; 70_000]),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    }
    for i in 0..5u8 {
        let (from, data) = timeout(BOUND, dialer.received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, acceptor.url);
        assert_eq!(data, Bytes::from(vec![i; 70_000]));
    }
    close_all(&[&dialer, &acceptor]).await;
}

#[test]
fn ours_dials_incumbent() {
    in_netns("ours_dials_incumbent", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = checked_node(ours(), &relay, true).await;
            let b = checked_node(theirs(), &relay, false).await;
            converse(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}

#[test]
fn incumbent_dials_ours() {
    in_netns("incumbent_dials_ours", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = checked_node(theirs(), &relay, false).await;
            let b = checked_node(ours(), &relay, true).await;
            converse(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}
