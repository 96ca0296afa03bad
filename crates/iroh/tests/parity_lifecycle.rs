//! Drop-in parity at the edges of a transport's life, over real iroh
//! through the embedded relay, as an integrator's existing tests see it:
//!
//! - dropping a transport without `close()` is a crash as peers see it:
//!   they report the connection lost and mark the node unresponsive,
//!   promptly (not after QUIC's idle timeout), every time;
//! - after `close()`, queries answer (`Ok`, empty), `send` fails, a second
//!   `close()` returns at once and the handler is released;
//! - both sides sending and then disconnecting at the same moment, round
//!   after round, never fails a send.
//!
//! Tests with the incumbent on the other side re-run themselves under
//! `unshare -rn` (the incumbent probes the LAN gateway).

use kitsune2_iroh_test_support::prelude::*;

/// Drops a's transport without `close()`; b must see a lost connection
/// and mark a unresponsive.
async fn drop_is_abrupt(b_ours: bool) {
    let (relay, a, mut b) = connected(true, b_ours).await;
    let a_url = a.url.clone();
    let Node { transport, .. } = a;
    drop(transport);
    let (peer, reason) = next(&mut b.disconnected, "peer_disconnect after drop").await;
    assert_eq!(peer, a_url);
    assert_ne!(
        reason.as_deref(),
        Some("Transport closed"),
        "a dropped transport must not say goodbye"
    );
    let marked = next(&mut b.unresponsive, "set_unresponsive after drop").await;
    assert_eq!(marked, a_url);
    timeout(BOUND, b.transport.close()).await.unwrap();
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_without_close_is_seen_as_a_crash_every_time() {
    for _ in 0..10 {
        drop_is_abrupt(true).await;
    }
}

#[test]
fn drop_without_close_is_seen_as_a_crash_by_the_incumbent() {
    in_netns(
        "drop_without_close_is_seen_as_a_crash_by_the_incumbent",
        || {
            runtime().block_on(async {
                for _ in 0..3 {
                    drop_is_abrupt(false).await;
                }
            });
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_close_queries_answer_and_the_handler_is_released() {
    let (relay, a, mut b) = connected(true, true).await;
    assert_eq!(
        a.transport.get_connected_peers().await.unwrap(),
        vec![b.url.clone()]
    );
    timeout(BOUND, a.transport.close()).await.unwrap();
    assert_eq!(
        a.transport.get_connected_peers().await.unwrap(),
        Vec::<Url>::new()
    );
    let stats = a.transport.dump_network_stats().await.unwrap();
    assert!(stats.transport_stats.connections.is_empty());
    let sent = a
        .transport
        .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"x"))
        .await;
    assert!(sent.is_err(), "send after close must fail");
    timeout(Duration::from_secs(1), a.transport.close())
        .await
        .expect("a second close returns at once");
    // The transport value is still held; only our own reference to the
    // handler remains once close has let go of it.
    let released = timeout(Duration::from_secs(5), async {
        while Arc::strong_count(&a.handler) > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        released.is_ok(),
        "handler still held: {} references",
        Arc::strong_count(&a.handler)
    );
    let _ = next(&mut b.disconnected, "b hears a's close").await;
    drop(a);
    timeout(BOUND, b.transport.close()).await.unwrap();
    relay.shutdown().await.unwrap();
}

/// Rounds in which both sides send to each other at once, wait for both
/// sends, then both disconnect at once. Every send returns `Ok`.
async fn disconnect_and_resend_rounds(a: &Node, b: &Node, rounds: u32) {
    for round in 0..rounds {
        let barrier = tokio::sync::Barrier::new(2);
        let send = |from: &Node, to: Url| {
            let tx = from.transport.clone();
            let barrier = &barrier;
            async move {
                barrier.wait().await;
                let msg = Bytes::from(format!("round {round}"));
                timeout(BOUND, tx.send_space_notify(to, TEST_SPACE_ID, msg)).await
            }
        };
        let (ra, rb) = tokio::join!(send(a, b.url.clone()), send(b, a.url.clone()));
        ra.expect("a's send timed out")
            .unwrap_or_else(|e| panic!("round {round}: a's send failed: {e}"));
        rb.expect("b's send timed out")
            .unwrap_or_else(|e| panic!("round {round}: b's send failed: {e}"));
        let barrier = tokio::sync::Barrier::new(2);
        let disconnect = |from: &Node, to: Url| {
            let tx = from.transport.clone();
            let barrier = &barrier;
            async move {
                barrier.wait().await;
                timeout(BOUND, tx.disconnect(to, None)).await
            }
        };
        let (da, db) = tokio::join!(disconnect(a, b.url.clone()), disconnect(b, a.url.clone()));
        da.expect("a's disconnect timed out");
        db.expect("b's disconnect timed out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_disconnect_and_resend_never_fails_a_send() {
    // 20 runs of 40 rounds, each on a fresh pair.
    for _ in 0..20 {
        let relay = EmbeddedRelay::start().await.unwrap();
        let a = node(ours(), &relay, true).await;
        let b = node(ours(), &relay, true).await;
        disconnect_and_resend_rounds(&a, &b, 40).await;
        close_all(&[&a, &b]).await;
        relay.shutdown().await.unwrap();
    }
}
