//! Two transports on this crate over real iroh through the embedded relay:
//! `disconnect`'s reason reaches the peer, `close` is graceful, and
//! `dump_network_stats` counts agree across the two sides.

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, K2Result, SpaceId, Timestamp,
    TxBaseHandler, TxHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use kitsune2_test_utils::space::TEST_SPACE_ID;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Handler {
    url: watch::Sender<Option<Url>>,
    received: mpsc::UnboundedSender<(Url, Bytes)>,
    disconnected: mpsc::UnboundedSender<(Url, Option<String>)>,
    unresponsive: mpsc::UnboundedSender<Url>,
}

impl TxBaseHandler for Handler {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.url.send_replace(Some(this_url));
        Box::pin(async {})
    }

    fn peer_disconnect(&self, peer: Url, reason: Option<String>) {
        let _ = self.disconnected.send((peer, reason));
    }
}

impl TxHandler for Handler {}

impl TxSpaceHandler for Handler {
    fn recv_space_notify(&self, peer: Url, _space: SpaceId, data: Bytes) -> K2Result<()> {
        let _ = self.received.send((peer, data));
        Ok(())
    }

    fn set_unresponsive(&self, peer: Url, _when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        let _ = self.unresponsive.send(peer);
        Box::pin(async { Ok(()) })
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }
}

struct Node {
    transport: DynTransport,
    url: Url,
    received: mpsc::UnboundedReceiver<(Url, Bytes)>,
    disconnected: mpsc::UnboundedReceiver<(Url, Option<String>)>,
    unresponsive: mpsc::UnboundedReceiver<Url>,
}
/// A node built by `factory`, configured for `relay`.
async fn node(factory: DynTransportFactory, relay: &EmbeddedRelay) -> Node {
    let builder = Builder {
        transport: factory,
        ..kitsune2_core::default_test_builder()
    }
    .with_default_config()
    .unwrap();
    let json = serde_json::to_value(IrohTransportModConfig {
        iroh_transport: IrohTransportConfig {
            relay_url: Some(relay.url().to_string()),
            relay_allow_plain_text: true,
            ..Default::default()
        },
    })
    .unwrap();
    let config: IrohTransportModConfig = serde_json::from_value(json).unwrap();
    builder.config.set_module_config(&config).unwrap();
    builder.validate_config().unwrap();
    let builder = Arc::new(builder);
    let (url_tx, mut url_rx) = watch::channel(None);
    let (received_tx, received) = mpsc::unbounded_channel();
    let (disconnected_tx, disconnected) = mpsc::unbounded_channel();
    let (unresponsive_tx, unresponsive) = mpsc::unbounded_channel();
    let handler = Arc::new(Handler {
        url: url_tx,
        received: received_tx,
        disconnected: disconnected_tx,
        unresponsive: unresponsive_tx,
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
        disconnected,
        unresponsive,
    }
}

fn ours() -> DynTransportFactory {
    IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a relay and two nodes on this crate, and connects them: a sends
/// one notify that b receives.
async fn connected() -> (EmbeddedRelay, Node, Node) {
    let relay = EmbeddedRelay::start().await.unwrap();
    let a = node(ours(), &relay).await;
    let mut b = node(ours(), &relay).await;
    timeout(
        BOUND,
        a.transport
            .send_space_notify(b.url.clone(), TEST_SPACE_ID, Bytes::from_static(b"hi")),
    )
    .await
    .expect("send timed out")
    .unwrap();
    let (from, data) = timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    assert_eq!(from, a.url);
    assert_eq!(data, Bytes::from_static(b"hi"));
    (relay, a, b)
}

/// After `b` saw `a` leave: `b` marked nobody unresponsive, within a grace
/// period for a late mark.
async fn assert_not_unresponsive(b: &mut Node) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        b.unresponsive.try_recv().is_err(),
        "a graceful disconnect marked the peer unresponsive"
    );
}

async fn disconnect_with_reason() {
    let (relay, a, mut b) = connected().await;
    let reason = "leaving: test over".to_string();
    timeout(
        BOUND,
        a.transport.disconnect(b.url.clone(), Some(reason.clone())),
    )
    .await
    .unwrap();
    let (peer, got) = timeout(BOUND, b.disconnected.recv())
        .await
        .expect("no peer_disconnect in time")
        .unwrap();
    assert_eq!(peer, a.url);
    assert_eq!(got, Some(reason));
    assert_not_unresponsive(&mut b).await;
    timeout(BOUND, async {
        a.transport.close().await;
        b.transport.close().await;
    })
    .await
    .unwrap();
    relay.shutdown().await.unwrap();
}

async fn close_is_graceful() {
    let (relay, a, mut b) = connected().await;
    timeout(BOUND, a.transport.close()).await.unwrap();
    let (peer, _reason) = timeout(BOUND, b.disconnected.recv())
        .await
        .expect("no peer_disconnect in time")
        .unwrap();
    assert_eq!(peer, a.url);
    assert_not_unresponsive(&mut b).await;
    timeout(BOUND, b.transport.close()).await.unwrap();
    relay.shutdown().await.unwrap();
}

/// a sends 5 notifies and b answers 3; each side's counts for the other
/// mirror the other's, and differ by exactly the messages sent.
async fn stats_agree() {
    let (relay, mut a, mut b) = connected().await;
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
    let sa = a
        .transport
        .dump_network_stats()
        .await
        .unwrap()
        .transport_stats;
    let sb = b
        .transport
        .dump_network_stats()
        .await
        .unwrap()
        .transport_stats;
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
    timeout(BOUND, async {
        a.transport.close().await;
        b.transport.close().await;
    })
    .await
    .unwrap();
    relay.shutdown().await.unwrap();
}

#[test]
fn disconnect_reason_is_delivered() {
    runtime().block_on(disconnect_with_reason());
}

#[test]
fn close_disconnects_gracefully() {
    runtime().block_on(close_is_graceful());
}

#[test]
fn network_stats_agree_across_sides() {
    runtime().block_on(stats_agree());
}
