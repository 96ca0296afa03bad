//! Two real kitsune2 transports from [`IrohTransportFactory`] exchange
//! messages through the embedded iroh-relay on loopback.

use kitsune2_iroh_test_support::prelude::*;
use kitsune2_test_utils::bootstrap::TestBootstrapSrv;

const BOUND: Duration = Duration::from_secs(20);

/// A node on this crate with its home relay at `relay_url`.
async fn node(relay_url: &str) -> Node {
    node_at(ours(), relay_url, true).await
}

/// Sends one message each way, then ten in order, between two nodes on the
/// relay at `relay_url`, whose peer URLs must start with `prefix`.
async fn exchange(relay_url: &str, prefix: &str) {
    let mut a = node(relay_url).await;
    let mut b = node(relay_url).await;

    assert!(a.url.as_str().starts_with(prefix), "{}", a.url);
    assert!(b.url.as_str().starts_with(prefix), "{}", b.url);
    assert_ne!(a.url, b.url);

    timeout(
        BOUND,
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"hello b")),
    )
    .await
    .expect("send timed out")
    .unwrap();
    // Delivered to the test space's handler, which asserts the space.
    let (from, data) = timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    assert_eq!(from, a.url);
    assert_eq!(data, Bytes::from_static(b"hello b"));
    assert_eq!(
        timeout(BOUND, b.connected.recv()).await.unwrap().unwrap(),
        a.url
    );

    // And back over the same connection, several messages in order.
    for i in 0..10u8 {
        timeout(
            BOUND,
            b.transport
                .send_space_notify(a.url.clone(), TEST_SPACE_ID, Bytes::from(vec![i; 1000])),
        )
        .await
        .unwrap()
        .unwrap();
    }
    for i in 0..10u8 {
        let (from, data) = timeout(BOUND, a.received.recv()).await.unwrap().unwrap();
        assert_eq!(from, b.url);
        assert_eq!(data, Bytes::from(vec![i; 1000]));
    }

    let peers = a.transport.get_connected_peers().await.unwrap();
    assert_eq!(peers, vec![b.url.clone()]);

    close_all(&[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transports_exchange_messages_through_embedded_relay() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let url = relay.url().to_string();
    exchange(&url, &url).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_transports_exchange_messages_through_bootstrap_srv_relay() {
    // kitsune2's test bootstrap server serves its relay under /relay; the
    // path is kept in the peer URLs.
    let srv = TestBootstrapSrv::new(false).await;
    let relay_url = format!("{}/relay", srv.addr());
    exchange(&relay_url, &format!("{relay_url}/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_relay_down_fails_fast_without_marking_unresponsive() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let url = relay.url().to_string();
    let a = node(&url).await;
    let b = node(&url).await;
    relay.shutdown().await.unwrap();
    // The relay's connections are gone once shutdown returns; iroh notices
    // within milliseconds. Leave it a generous margin before dialing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = timeout(
        Duration::from_secs(5),
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"x")),
    )
    .await
    .expect("send to an unreachable peer did not fail fast")
    .unwrap_err();
    assert!(err.to_string().contains("home relay"), "{err}");
    assert_eq!(a.handler.events().unresponsive.len(), 0);
    close_all(&[&a, &b]).await;
}

#[tokio::test]
async fn validate_config_reports_bad_relay() {
    let builder = Builder {
        transport: IrohTransportFactory::create(),
        ..kitsune2_core::default_test_builder()
    }
    .with_default_config()
    .unwrap();
    builder.validate_config().unwrap();
    builder
        .config
        .set_module_config(&IrohTransportModConfig {
            iroh_transport: IrohTransportConfig {
                relay_url: Some("http://127.0.0.1:1/".into()),
                ..Default::default()
            },
        })
        .unwrap();
    let err = builder.validate_config().unwrap_err();
    assert!(err.to_string().contains("relayAllowPlainText"), "{err}");
}
