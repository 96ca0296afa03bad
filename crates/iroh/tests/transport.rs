//! Two real kitsune2 transports from [`IrohTransportFactory`] exchange
//! messages through the embedded iroh-relay on loopback.

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, Builder, DynTransport, K2Result, SpaceId, Timestamp, TxBaseHandler, TxHandler,
    TxSpaceHandler, Url,
};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use kitsune2_test_utils::bootstrap::TestBootstrapSrv;
use kitsune2_test_utils::space::TEST_SPACE_ID;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(20);

#[derive(Debug)]
struct Handler {
    url: watch::Sender<Option<Url>>,
    received: mpsc::UnboundedSender<(Url, SpaceId, Bytes)>,
    connected: mpsc::UnboundedSender<Url>,
    unresponsive: Arc<AtomicUsize>,
}

impl TxBaseHandler for Handler {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.url.send_replace(Some(this_url));
        Box::pin(async {})
    }

    fn peer_connect(&self, peer: Url) -> K2Result<()> {
        let _ = self.connected.send(peer);
        Ok(())
    }
}

impl TxHandler for Handler {}

impl TxSpaceHandler for Handler {
    fn recv_space_notify(&self, peer: Url, space_id: SpaceId, data: Bytes) -> K2Result<()> {
        let _ = self.received.send((peer, space_id, data));
        Ok(())
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }

    fn set_unresponsive(&self, _peer: Url, _when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        self.unresponsive.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
}

struct Node {
    transport: DynTransport,
    url: Url,
    received: mpsc::UnboundedReceiver<(Url, SpaceId, Bytes)>,
    connected: mpsc::UnboundedReceiver<Url>,
    unresponsive: Arc<AtomicUsize>,
}

async fn node(relay_url: &str) -> Node {
    let factory = IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)));
    let builder = Builder {
        transport: factory,
        ..kitsune2_core::default_test_builder()
    }
    .with_default_config()
    .unwrap();
    builder
        .config
        .set_module_config(&IrohTransportModConfig {
            iroh_transport: IrohTransportConfig {
                relay_url: Some(relay_url.to_owned()),
                relay_allow_plain_text: true,
                ..Default::default()
            },
        })
        .unwrap();
    builder.validate_config().unwrap();
    let builder = Arc::new(builder);
    let (url_tx, mut url_rx) = watch::channel(None);
    let (received_tx, received) = mpsc::unbounded_channel();
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let unresponsive = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(Handler {
        url: url_tx,
        received: received_tx,
        connected: connected_tx,
        unresponsive: unresponsive.clone(),
    });
    let transport = builder
        .transport
        .create(builder.clone(), handler.clone())
        .await
        .unwrap();
    transport.register_space_handler(TEST_SPACE_ID, handler);
    let url = timeout(BOUND, url_rx.wait_for(Option::is_some))
        .await
        .expect("no listening address in time")
        .unwrap()
        .clone()
        .unwrap();
    Node {
        transport,
        url,
        received,
        connected,
        unresponsive,
    }
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
    let (from, space, data) = timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    assert_eq!(from, a.url);
    assert_eq!(space, TEST_SPACE_ID);
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
        let (from, _, data) = timeout(BOUND, a.received.recv()).await.unwrap().unwrap();
        assert_eq!(from, b.url);
        assert_eq!(data, Bytes::from(vec![i; 1000]));
    }

    let peers = a.transport.get_connected_peers().await.unwrap();
    assert_eq!(peers, vec![b.url.clone()]);

    timeout(BOUND, async {
        a.transport.close().await;
        b.transport.close().await;
    })
    .await
    .unwrap();
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
    assert_eq!(a.unresponsive.load(Ordering::SeqCst), 0);
    timeout(BOUND, async {
        a.transport.close().await;
        b.transport.close().await;
    })
    .await
    .unwrap();
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
