//! What the tests with real transports share:
//! a node on either crate with a recording handler, and the re-run of a
//! test inside a private network namespace (`unshare -rn`), since the
//! incumbent probes the LAN gateway.
#![allow(dead_code, unreachable_pub, unused_imports)] // reason: each test binary uses a subset

pub use bytes::Bytes;
pub use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, K2Error, K2Result, SpaceId, Timestamp,
    TxBaseHandler, TxHandler, TxModuleHandler, TxSpaceHandler, Url,
};
pub use kitsune2_iroh::relay::EmbeddedRelay;
pub use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
pub use kitsune2_test_utils::space::TEST_SPACE_ID;
pub use std::net::SocketAddr;
pub use std::process::Command;
pub use std::sync::Arc;
pub use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
pub use std::time::Duration;
pub use tokio::sync::{mpsc, watch};
pub use tokio::time::timeout;

pub const NETNS_ENV: &str = "KITSUNE2_IROH_TEST_IN_NETNS";
pub const BOUND: Duration = Duration::from_secs(30);

/// Runs `body` inside a private network namespace: re-executes this test
/// binary for `test_name` under `unshare -rn` and asserts it passed.
pub fn in_netns(test_name: &str, body: impl FnOnce()) {
    if std::env::var_os(NETNS_ENV).is_some() {
        body();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args(["--exact", test_name, "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .output()
        .expect("`unshare` is needed to run interop tests offline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "in-namespace run failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Records what kitsune2 tells a node. Registered as the transport's
/// handler; the space and module handlers ([`SpaceSide`], [`ModuleSide`])
/// forward to it, so that each `peer_connect` and `peer_disconnect` (which
/// kitsune2 calls on every handler) is recorded once.
#[derive(Debug)]
pub struct Handler {
    pub url: watch::Sender<Option<Url>>,
    pub received: mpsc::UnboundedSender<(Url, Bytes)>,
    /// Module messages: sender, module, data.
    pub module_received: mpsc::UnboundedSender<(Url, String, Bytes)>,
    pub connected: mpsc::UnboundedSender<Url>,
    pub disconnected: mpsc::UnboundedSender<(Url, Option<String>)>,
    pub unresponsive: mpsc::UnboundedSender<Url>,
    /// The URL of each incoming preflight handed to validation.
    pub preflights: mpsc::UnboundedSender<Url>,
    /// When set, every incoming preflight is rejected.
    pub reject_preflights: AtomicBool,
    /// Length of the preflight data this node sends (zeros); 0 by default.
    pub preflight_len: AtomicUsize,
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

    fn peer_disconnect(&self, peer: Url, reason: Option<String>) {
        let _ = self.disconnected.send((peer, reason));
    }
}

impl TxHandler for Handler {
    fn preflight_gather_outgoing(&self, _peer_url: Url) -> BoxFut<'_, K2Result<Bytes>> {
        let len = self.preflight_len.load(Ordering::SeqCst);
        Box::pin(async move { Ok(Bytes::from(vec![0; len])) })
    }

    fn preflight_validate_incoming(&self, peer_url: Url, _data: Bytes) -> BoxFut<'_, K2Result<()>> {
        let _ = self.preflights.send(peer_url);
        let reject = self.reject_preflights.load(Ordering::SeqCst);
        Box::pin(async move {
            if reject {
                Err(K2Error::other("preflight rejected by test"))
            } else {
                Ok(())
            }
        })
    }
}

/// The test space's handler: forwards space events to the [`Handler`].
#[derive(Debug)]
pub struct SpaceSide(pub Arc<Handler>);

impl TxBaseHandler for SpaceSide {}

impl TxSpaceHandler for SpaceSide {
    fn recv_space_notify(&self, peer: Url, _space: SpaceId, data: Bytes) -> K2Result<()> {
        let _ = self.0.received.send((peer, data));
        Ok(())
    }

    fn set_unresponsive(&self, peer: Url, _when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        let _ = self.0.unresponsive.send(peer);
        Box::pin(async { Ok(()) })
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }
}

/// A module handler in the test space: forwards module messages to the
/// [`Handler`].
#[derive(Debug)]
pub struct ModuleSide(pub Arc<Handler>);

impl TxBaseHandler for ModuleSide {}

impl TxModuleHandler for ModuleSide {
    fn recv_module_msg(
        &self,
        peer: Url,
        _space: SpaceId,
        module: String,
        data: Bytes,
    ) -> K2Result<()> {
        let _ = self.0.module_received.send((peer, module, data));
        Ok(())
    }
}

pub struct Node {
    pub transport: DynTransport,
    pub url: Url,
    pub handler: Arc<Handler>,
    pub received: mpsc::UnboundedReceiver<(Url, Bytes)>,
    pub module_received: mpsc::UnboundedReceiver<(Url, String, Bytes)>,
    pub connected: mpsc::UnboundedReceiver<Url>,
    pub disconnected: mpsc::UnboundedReceiver<(Url, Option<String>)>,
    pub unresponsive: mpsc::UnboundedReceiver<Url>,
    pub preflights: mpsc::UnboundedReceiver<Url>,
}

impl Node {
    /// Delivers `module`'s messages in the test space to `module_received`
    /// (kitsune2 drops module messages that no handler is registered for).
    pub fn register_module(&self, module: &str) {
        self.transport.register_module_handler(
            TEST_SPACE_ID,
            module.to_owned(),
            Arc::new(ModuleSide(self.handler.clone())),
        );
    }
}

/// A node built by `factory` with the config both crates share.
pub async fn node(factory: DynTransportFactory, relay: &EmbeddedRelay, ours: bool) -> Node {
    node_at(factory, relay.url().as_str(), ours).await
}

/// A node built by `factory` with the config both crates share, its home
/// relay at `relay_url`.
pub async fn node_at(factory: DynTransportFactory, relay_url: &str, ours: bool) -> Node {
    let builder = builder_for(factory, relay_url, ours, true);
    builder.validate_config().unwrap();
    try_node(Arc::new(builder)).await.unwrap()
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
    .unwrap();
    let json = serde_json::to_value(IrohTransportModConfig {
        iroh_transport: config,
    })
    .unwrap();
    if ours {
        let config: IrohTransportModConfig = serde_json::from_value(json).unwrap();
        builder.config.set_module_config(&config).unwrap();
    } else {
        let config: kitsune2_transport_iroh::IrohTransportModConfig =
            serde_json::from_value(json).unwrap();
        builder.config.set_module_config(&config).unwrap();
    }
    builder
}

/// A node whose transport `builder.transport.create` makes (without
/// validating the config first), once it has a listening address; the
/// error of `create` if it fails.
pub async fn try_node(builder: Arc<Builder>) -> K2Result<Node> {
    let (url_tx, mut url_rx) = watch::channel(None);
    let (received_tx, received) = mpsc::unbounded_channel();
    let (module_tx, module_received) = mpsc::unbounded_channel();
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let (disconnected_tx, disconnected) = mpsc::unbounded_channel();
    let (unresponsive_tx, unresponsive) = mpsc::unbounded_channel();
    let (preflights_tx, preflights) = mpsc::unbounded_channel();
    let handler = Arc::new(Handler {
        url: url_tx,
        received: received_tx,
        module_received: module_tx,
        connected: connected_tx,
        disconnected: disconnected_tx,
        unresponsive: unresponsive_tx,
        preflights: preflights_tx,
        reject_preflights: AtomicBool::new(false),
        preflight_len: AtomicUsize::new(0),
    });
    let transport = builder
        .transport
        .create(builder.clone(), handler.clone())
        .await?;
    transport.register_space_handler(TEST_SPACE_ID, Arc::new(SpaceSide(handler.clone())));
    let url = timeout(BOUND, url_rx.wait_for(Option::is_some))
        .await
        .expect("no listening address in time")
        .unwrap()
        .clone()
        .unwrap();
    Ok(Node {
        transport,
        url,
        handler,
        received,
        module_received,
        connected,
        disconnected,
        unresponsive,
        preflights,
    })
}

/// Sends a space notify from `from` to `to`, within [`BOUND`].
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

/// The next event on `rx`, which must come within [`BOUND`].
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    timeout(BOUND, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} in time"))
        .expect("handler gone")
}

/// `node`'s transport stats.
pub async fn stats(node: &Node) -> kitsune2_api::TransportStats {
    timeout(BOUND, node.transport.dump_network_stats())
        .await
        .expect("dump_network_stats timed out")
        .unwrap()
        .transport_stats
}

pub fn ours() -> DynTransportFactory {
    IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)))
}

pub fn theirs() -> DynTransportFactory {
    kitsune2_transport_iroh::IrohTransportFactory::create()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
