//! [`Node`]: a kitsune2 transport of either crate (this workspace's
//! `kitsune2-iroh` or the incumbent `kitsune2_transport_iroh`) with a
//! [`Recorder`] as its handler, built as kitsune2's own tests build one.

use crate::recorder::{Recorder, Taps};
use crate::wait::BOUND;
use bytes::Bytes;
use kitsune2_api::{Builder, DynTransport, DynTransportFactory, K2Result, TransportStats, Url};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use kitsune2_test_utils::space::TEST_SPACE_ID;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A transport and what its [`Recorder`] heard, one channel per kind.
///
/// The recorder's space side is registered for
/// [`TEST_SPACE_ID`](kitsune2_test_utils::space::TEST_SPACE_ID).
#[derive(Debug)]
pub struct Node {
    /// The transport.
    pub transport: DynTransport,
    /// Its listening address once the node was built.
    pub url: Url,
    /// Its handler (and the test space's, through its space side).
    pub handler: Arc<Recorder>,
    /// Space notifies: sender, data.
    pub received: mpsc::UnboundedReceiver<(Url, Bytes)>,
    /// Module messages: sender, module, data.
    pub module_received: mpsc::UnboundedReceiver<(Url, String, Bytes)>,
    /// Peers reported connected.
    pub connected: mpsc::UnboundedReceiver<Url>,
    /// Peers reported disconnected, with the reason.
    pub disconnected: mpsc::UnboundedReceiver<(Url, Option<String>)>,
    /// Peers marked unresponsive.
    pub unresponsive: mpsc::UnboundedReceiver<Url>,
    /// The URL of each incoming preflight handed to validation.
    pub preflights: mpsc::UnboundedReceiver<Url>,
}

impl Node {
    /// Delivers `module`'s messages in the test space to `module_received`
    /// (kitsune2 drops module messages that no handler is registered for).
    pub fn register_module(&self, module: &str) {
        self.transport.register_module_handler(
            TEST_SPACE_ID,
            module.to_owned(),
            self.handler.space_side(TEST_SPACE_ID),
        );
    }
}

/// This workspace's factory, bound to 127.0.0.1.
pub fn ours() -> DynTransportFactory {
    IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// The incumbent's factory.
pub fn theirs() -> DynTransportFactory {
    kitsune2_transport_iroh::IrohTransportFactory::create()
}

/// [`ours`] when `ours` is true, else [`theirs`].
pub fn factory(ours: bool) -> DynTransportFactory {
    if ours { self::ours() } else { theirs() }
}

/// A node built by `factory` with the config both crates share, its home
/// relay `relay`.
///
/// # Panics
///
/// When the config does not validate or the node cannot be built.
pub async fn node(factory: DynTransportFactory, relay: &EmbeddedRelay, ours: bool) -> Node {
    node_at(factory, relay.url().as_str(), ours).await
}

/// A node built by `factory` with the config both crates share, its home
/// relay at `relay_url`.
///
/// # Panics
///
/// As [`node`].
pub async fn node_at(factory: DynTransportFactory, relay_url: &str, ours: bool) -> Node {
    let builder = builder_for(factory, relay_url, ours, true);
    builder
        .validate_config()
        .expect("the node's config validates");
    try_node(Arc::new(builder))
        .await
        .expect("the node is built")
}

/// A kitsune2 `Builder` made as kitsune2's own tests make one:
/// `default_test_builder` with `factory`, `with_default_config`, then the
/// module config of `ours` (or the incumbent's) with `relayUrl` =
/// `relay_url` and `relayAllowPlainText` = `allow_plain_text`. Not
/// validated.
pub fn builder_for(
    factory: DynTransportFactory,
    relay_url: &str,
    ours: bool,
    allow_plain_text: bool,
) -> Builder {
    let config = IrohTransportConfig {
        relay_url: Some(relay_url.to_owned()),
        relay_allow_plain_text: allow_plain_text,
        ..Default::default()
    };
    builder_with(factory, config, ours)
}

/// As [`builder_for`], with the module config `config` (given as ours,
/// read by the incumbent's type from its JSON when `!ours`).
///
/// # Panics
///
/// When kitsune2 refuses the config.
pub fn builder_with(
    factory: DynTransportFactory,
    config: IrohTransportConfig,
    ours: bool,
) -> Builder {
    let builder = Builder {
        transport: factory,
        ..kitsune2_core::default_test_builder()
    }
    .with_default_config()
    .expect("kitsune2's default config");
    let json = serde_json::to_value(IrohTransportModConfig {
        iroh_transport: config,
    })
    .expect("the config as JSON");
    if ours {
        let config: IrohTransportModConfig =
            serde_json::from_value(json).expect("our config from its JSON");
        builder
            .config
            .set_module_config(&config)
            .expect("kitsune2 takes our config");
    } else {
        let config: kitsune2_transport_iroh::IrohTransportModConfig =
            serde_json::from_value(json).expect("the incumbent's config from our JSON");
        builder
            .config
            .set_module_config(&config)
            .expect("kitsune2 takes the incumbent's config");
    }
    builder
}

impl Node {
    /// The node of `transport`, whose handler is `handler` with its
    /// `taps`: registers the handler for [`TEST_SPACE_ID`] and waits for
    /// the listening address.
    ///
    /// # Panics
    ///
    /// When the transport has no listening address within [`BOUND`].
    pub async fn from_transport(
        transport: DynTransport,
        handler: Arc<Recorder>,
        mut taps: Taps,
    ) -> Self {
        transport.register_space_handler(TEST_SPACE_ID, handler.space_side(TEST_SPACE_ID));
        let url = timeout(BOUND, taps.url.wait_for(Option::is_some))
            .await
            .expect("no listening address in time")
            .expect("handler gone")
            .clone()
            .expect("a listening address");
        Self {
            transport,
            url,
            handler,
            received: taps.notifies,
            module_received: taps.module_msgs,
            connected: taps.connects,
            disconnected: taps.disconnects,
            unresponsive: taps.unresponsive,
            preflights: taps.preflights,
        }
    }
}

/// A node whose transport `builder.transport.create` makes (without
/// validating the config first), once it has a listening address; the
/// error of `create` if it fails.
///
/// # Panics
///
/// When the transport has no listening address within [`BOUND`].
pub async fn try_node(builder: Arc<Builder>) -> K2Result<Node> {
    let (handler, taps) = Recorder::new();
    let transport = builder
        .transport
        .create(builder.clone(), handler.clone())
        .await?;
    Ok(Node::from_transport(transport, handler, taps).await)
}

/// Sends a space notify from `from` to `to`, within [`BOUND`].
///
/// # Panics
///
/// When the send fails or takes longer.
pub async fn notify(from: &Node, to: &Url, data: Bytes) {
    timeout(
        BOUND,
        from.transport
            .send_space_notify(to.clone(), TEST_SPACE_ID, data),
    )
    .await
    .expect("notify timed out")
    .expect("notify failed");
}

/// `node`'s transport stats.
///
/// # Panics
///
/// When they do not come within [`BOUND`] or are an error.
pub async fn stats(node: &Node) -> TransportStats {
    timeout(BOUND, node.transport.dump_network_stats())
        .await
        .expect("dump_network_stats timed out")
        .expect("dump_network_stats failed")
        .transport_stats
}

/// Closes every node's transport, one after the other, within [`BOUND`]
/// in all.
///
/// # Panics
///
/// When that takes longer.
pub async fn close_all(nodes: &[&Node]) {
    timeout(BOUND, async {
        for node in nodes {
            node.transport.close().await;
        }
    })
    .await
    .expect("closing the nodes timed out");
}
