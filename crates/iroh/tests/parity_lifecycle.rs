//! Drop-in parity at the edges of a transport's life, over real iroh
//! through the embedded relay, as an integrator's existing tests see it:
//!
//! - dropping a transport without `close()` is a crash as peers see it:
//!   they report the connection lost and mark the node unresponsive,
//!   promptly (not after QUIC's idle timeout), every time;
//! - after `close()`, queries answer (`Ok`, empty), `send` fails, a second
//!   `close()` returns at once and the handler is released.
//!
//! Both sides sending and then disconnecting at the same moment, round
//! after round (every send `Ok`, every message delivered), is in
//! `no_silent_loss.rs`.
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
