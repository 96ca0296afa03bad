//! A preflight the acceptor rejects, across the two crates: our dialer's
//! send fails with the acceptor's reason and reports nothing else; the
//! incumbent's send returns `Ok` (the message is dropped) and it marks the
//! acceptor unresponsive and reports a lost connection. Either way the next
//! send, once the acceptor accepts, reconnects and is delivered.
//!
//! Runs in a private network namespace, as every test with the incumbent.

use kitsune2_iroh_test_support::prelude::*;

/// How long events of the failed attempt may take to arrive.
const GRACE: Duration = Duration::from_secs(1);

/// What the dialer saw of a rejected preflight.
struct Seen {
    send: K2Result<()>,
    unresponsive: Option<Url>,
    disconnected: Option<(Url, Option<String>)>,
}

/// `a` sends to `b`, which rejects its preflight, then again once `b`
/// accepts; the second message must arrive.
async fn rejected_then_accepted(a: &mut Node, b: &mut Node) -> Seen {
    b.handler.reject_preflights.store(true, Ordering::SeqCst);
    let send = timeout(
        BOUND,
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"dropped")),
    )
    .await
    .expect("send to a rejecting peer did not end in time");
    assert_eq!(next(&mut b.preflights, "preflight on b").await, a.url);
    tokio::time::sleep(GRACE).await;
    let seen = Seen {
        send,
        unresponsive: a.unresponsive.try_recv().ok(),
        disconnected: a.disconnected.try_recv().ok(),
    };
    assert!(
        b.received.try_recv().is_err(),
        "a message past a rejected preflight"
    );
    assert!(
        b.connected.try_recv().is_err(),
        "peer_connect on the rejecting side"
    );

    b.handler.reject_preflights.store(false, Ordering::SeqCst);
    notify(a, &b.url, Bytes::from_static(b"accepted")).await;
    let (from, data) = next(&mut b.received, "message once accepted").await;
    assert_eq!((from, &data[..]), (a.url.clone(), &b"accepted"[..]));
    close_all(&[a, b]).await;
    seen
}

#[test]
fn ours_dialer_gets_the_rejection_as_an_error() {
    in_netns("ours_dialer_gets_the_rejection_as_an_error", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let mut a = node(ours(), &relay, true).await;
            let mut b = node(theirs(), &relay, false).await;
            let seen = rejected_then_accepted(&mut a, &mut b).await;
            let err = seen
                .send
                .expect_err("send past a rejected preflight succeeded");
            assert!(
                err.to_string().contains("preflight rejected by test"),
                "{err}"
            );
            assert_eq!(seen.unresponsive, None);
            assert_eq!(seen.disconnected, None);
            relay.shutdown().await.unwrap();
        });
    });
}

#[test]
fn incumbent_dialer_returns_ok_and_marks_the_peer() {
    in_netns("incumbent_dialer_returns_ok_and_marks_the_peer", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let mut a = node(theirs(), &relay, false).await;
            let mut b = node(ours(), &relay, true).await;
            let seen = rejected_then_accepted(&mut a, &mut b).await;
            seen.send
                .expect("the incumbent's send reports a rejection as Ok");
            assert_eq!(seen.unresponsive, Some(b.url.clone()));
            let (peer, reason) = seen.disconnected.expect("a lost connection reported");
            assert_eq!(peer, b.url);
            let reason = reason.unwrap_or_default();
            assert!(reason.contains("preflight rejected by test"), "{reason}");
            relay.shutdown().await.unwrap();
        });
    });
}
