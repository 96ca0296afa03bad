//! What the end-to-end benches share: a kitsune2 node on either crate
//! over the embedded relay, with a handler that counts and echoes.
#![allow(dead_code, unreachable_pub)] // reason: each bench binary uses a subset

pub mod bare;
pub mod cpu;
pub mod pair;
pub mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, Id, K2Result, SpaceId, Timestamp,
    TxBaseHandler, TxHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// The factory of one crate: ours bound to loopback, or the incumbent's.
pub fn factory(ours: bool) -> DynTransportFactory {
    if ours {
        IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)))
    } else {
        kitsune2_transport_iroh::IrohTransportFactory::create()
    }
}

/// Ours without IP transports: everything goes through the relay (the
/// adapter's test-only `create_relay_only`).
pub fn factory_relay_only() -> DynTransportFactory {
    IrohTransportFactory::create_relay_only()
}

/// First payload byte of a message B's handler sends back to A.
pub const ECHO: u8 = 1;
/// First payload byte of a message B's handler only counts.
pub const SINK: u8 = 0;

/// Bound on building a node (until it has a listening address).
pub const STARTUP_BOUND: Duration = Duration::from_secs(30);
/// Bound on one batch or one round trip.
pub const MESSAGE_BOUND: Duration = Duration::from_secs(60);

/// The space every message is sent in.
pub fn space() -> SpaceId {
    SpaceId(Id(Bytes::from_static(b"bench_space")))
}

/// A `size`-byte payload whose first byte is `tag`.
pub fn tagged(tag: u8, size: usize) -> Bytes {
    let mut v = vec![0x5a; size];
    v[0] = tag;
    Bytes::from(v)
}

/// The transport handler: reports the listening address.
#[derive(Debug)]
pub struct Handler {
    pub url: watch::Sender<Option<Url>>,
}

impl TxBaseHandler for Handler {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.url.send_replace(Some(this_url));
        Box::pin(async {})
    }
}

impl TxHandler for Handler {}

/// The space handler: routes each notify by its first byte.
#[derive(Debug)]
pub struct SpaceSide {
    /// Received `SINK` messages.
    pub sink: mpsc::UnboundedSender<Bytes>,
    /// Received `ECHO` messages.
    pub echo: mpsc::UnboundedSender<Bytes>,
}

impl TxBaseHandler for SpaceSide {}

impl TxSpaceHandler for SpaceSide {
    fn recv_space_notify(&self, _peer: Url, _space: SpaceId, data: Bytes) -> K2Result<()> {
        if data.first() == Some(&ECHO) {
            let _ = self.echo.send(data);
        } else {
            let _ = self.sink.send(data);
        }
        Ok(())
    }

    fn set_unresponsive(&self, _peer: Url, _when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }
}

pub struct Node {
    pub transport: DynTransport,
    pub url: Url,
    pub sink: mpsc::UnboundedReceiver<Bytes>,
    pub echo: mpsc::UnboundedReceiver<Bytes>,
}

/// A node built by `factory` with the config both crates share.
pub async fn node(factory: DynTransportFactory, relay_url: &str, ours: bool) -> Node {
    node_with(factory, relay_url, ours, false).await
}

/// [`node`], ours with `kitsune2V1` on when `v1`.
pub async fn node_with(
    factory: DynTransportFactory,
    relay_url: &str,
    ours: bool,
    v1: bool,
) -> Node {
    let builder = Builder {
        transport: factory,
        ..kitsune2_core::default_test_builder()
    }
    .with_default_config()
    .expect("default config");
    let json = serde_json::to_value(IrohTransportModConfig {
        iroh_transport: IrohTransportConfig {
            relay_url: Some(relay_url.to_owned()),
            relay_allow_plain_text: true,
            ..Default::default()
        },
    })
    .expect("config to JSON");
    if ours {
        let mut config: IrohTransportModConfig =
            serde_json::from_value(json).expect("our config from JSON");
        config.iroh_transport.kitsune2_v1 = v1;
        builder
            .config
            .set_module_config(&config)
            .expect("set config");
    } else {
        let config: kitsune2_transport_iroh::IrohTransportModConfig =
            serde_json::from_value(json).expect("incumbent config from JSON");
        builder
            .config
            .set_module_config(&config)
            .expect("set config");
    }
    builder.validate_config().expect("valid config");
    let builder = Arc::new(builder);
    let (url_tx, mut url_rx) = watch::channel(None);
    let (sink_tx, sink) = mpsc::unbounded_channel();
    let (echo_tx, echo) = mpsc::unbounded_channel();
    let transport = builder
        .transport
        .create(builder.clone(), Arc::new(Handler { url: url_tx }))
        .await
        .expect("create transport");
    transport.register_space_handler(
        space(),
        Arc::new(SpaceSide {
            sink: sink_tx,
            echo: echo_tx,
        }),
    );
    let url = timeout(STARTUP_BOUND, url_rx.wait_for(Option::is_some))
        .await
        .unwrap_or_else(|_| panic!("no listening address within {STARTUP_BOUND:?}"))
        .expect("handler dropped")
        .clone()
        .expect("checked by wait_for");
    Node {
        transport,
        url,
        sink,
        echo,
    }
}

/// The runtime the benches run on: two workers, as the machine has two cores.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
