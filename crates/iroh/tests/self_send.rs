//! A message addressed to the sender's own URL: ours refuses it with a
//! typed error before dialing and marks nobody unresponsive; the incumbent
//! dials itself, fails, and marks its own URL unresponsive.

use kitsune2_iroh_test_support::prelude::*;

/// `n` sends to its own URL; returns the error and whether `n` marked
/// itself unresponsive by the time the send returned.
async fn send_to_self(n: &mut Node) -> (String, bool) {
    let err = timeout(
        BOUND,
        n.transport
            .send_space_notify(n.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"me")),
    )
    .await
    .expect("send to self did not end in time")
    .expect_err("a send to our own URL succeeded")
    .to_string();
    let marked = match n.unresponsive.try_recv() {
        Ok(url) => {
            assert_eq!(url, n.url);
            true
        }
        Err(_) => false,
    };
    assert!(n.received.try_recv().is_err(), "delivered to ourselves");
    (err, marked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_self_is_a_typed_error_without_marks() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let mut n = node(ours(), &relay, true).await;
    let (err, marked) = send_to_self(&mut n).await;
    assert!(err.contains("own endpoint id"), "{err}");
    assert!(!marked, "marked ourselves unresponsive");
    assert!(
        n.connected.try_recv().is_err(),
        "peer_connect for ourselves"
    );
    timeout(BOUND, n.transport.close()).await.unwrap();
    relay.shutdown().await.unwrap();
}

#[test]
fn the_incumbent_marks_itself_for_a_send_to_self() {
    in_netns("the_incumbent_marks_itself_for_a_send_to_self", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let mut n = node(theirs(), &relay, false).await;
            let (err, marked) = send_to_self(&mut n).await;
            assert!(err.contains("iroh connect error"), "{err}");
            assert!(marked, "the incumbent no longer marks itself");
            timeout(BOUND, n.transport.close()).await.unwrap();
            relay.shutdown().await.unwrap();
        });
    });
}
