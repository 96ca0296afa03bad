//! Our own preflight larger than `maxFrameBytes`: the send fails with the
//! frame error and the peer, which did nothing wrong, is not marked
//! unresponsive; the next send with a preflight that fits goes through.
//! The incumbent fails the send too but marks the peer unresponsive.

use kitsune2_iroh_test_support::prelude::*;

/// `maxFrameBytes` of the sending node.
const LIMIT: usize = 16 * 1024;

/// A node on `factory` whose frames are limited to [`LIMIT`].
async fn limited_node(factory: DynTransportFactory, relay: &EmbeddedRelay, ours: bool) -> Node {
    let config = IrohTransportConfig {
        relay_url: Some(relay.url().to_string()),
        relay_allow_plain_text: true,
        max_frame_bytes: LIMIT,
        ..Default::default()
    };
    let builder = builder_with(factory, config, ours);
    builder.validate_config().unwrap();
    try_node(Arc::new(builder)).await.unwrap()
}

/// `a` sends to `b` with a preflight of twice `a`'s limit, then with an
/// empty one; returns the first send's error and whether `a` marked `b`
/// unresponsive by the time that send returned.
async fn oversized_then_fitting(a: &mut Node, b: &mut Node) -> (String, bool) {
    a.handler.set_preflight_len(2 * LIMIT);
    let err = timeout(
        BOUND,
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"x")),
    )
    .await
    .expect("send timed out")
    .expect_err("a preflight over maxFrameBytes cannot be sent")
    .to_string();
    // Both crates mark a peer, if at all, before the failed send returns.
    let marked = match a.unresponsive.try_recv() {
        Ok(url) => {
            assert_eq!(url, b.url);
            true
        }
        Err(_) => false,
    };
    a.handler.set_preflight_len(0);
    notify(a, &b.url, Bytes::from_static(b"fits")).await;
    let (from, data) = next(&mut b.received, "message").await;
    assert_eq!((from, &data[..]), (a.url.clone(), &b"fits"[..]));
    (err, marked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_oversized_preflight_fails_the_send_without_marking_the_peer() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let mut a = limited_node(ours(), &relay, true).await;
    let mut b = node(ours(), &relay, true).await;
    let (err, marked) = oversized_then_fitting(&mut a, &mut b).await;
    assert!(
        err.contains(&format!("exceeds the limit of {LIMIT}")),
        "{err}"
    );
    assert!(
        !marked,
        "the peer was marked unresponsive for our own preflight"
    );
    // Nor later, and the peer saw nothing of the failed attempt.
    assert!(a.unresponsive.try_recv().is_err());
    assert!(b.disconnected.try_recv().is_err());
    close_all(&[&a, &b]).await;
    relay.shutdown().await.unwrap();
}

#[test]
fn the_incumbent_marks_the_peer_for_its_own_oversized_preflight() {
    in_netns(
        "the_incumbent_marks_the_peer_for_its_own_oversized_preflight",
        || {
            runtime().block_on(async {
                let relay = EmbeddedRelay::start().await.unwrap();
                let mut a = limited_node(theirs(), &relay, false).await;
                let mut b = node(ours(), &relay, true).await;
                let (err, marked) = oversized_then_fitting(&mut a, &mut b).await;
                assert!(err.contains("frame too large"), "{err}");
                assert!(marked, "the incumbent no longer marks the peer");
                close_all(&[&a, &b]).await;
                relay.shutdown().await.unwrap();
            });
        },
    );
}
