//! What the interop tests share:
//! a node on either crate with a recording handler, and the re-run of a
//! test inside a private network namespace (`unshare -rn`), since the
//! incumbent probes the LAN gateway.
#![allow(dead_code, unreachable_pub, unused_imports)] // reason: each test binary uses a subset

pub use bytes::Bytes;
pub use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, K2Result, SpaceId, Timestamp,
    TxBaseHandler, TxHandler, TxSpaceHandler, Url,
};
pub use kitsune2_iroh::relay::EmbeddedRelay;
pub use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
pub use kitsune2_test_utils::space::TEST_SPACE_ID;
pub use std::net::SocketAddr;
pub use std::process::Command;
pub use std::sync::Arc;
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

#[derive(Debug)]
pub struct Handler {
    pub url: watch::Sender<Option<Url>>,
    pub received: mpsc::UnboundedSender<(Url, Bytes)>,
    pub disconnected: mpsc::UnboundedSender<(Url, Option<String>)>,
    pub unresponsive: mpsc::UnboundedSender<Url>,
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

pub struct Node {
    pub transport: DynTransport,
    pub url: Url,
    pub received: mpsc::UnboundedReceiver<(Url, Bytes)>,
    pub disconnected: mpsc::UnboundedReceiver<(Url, Option<String>)>,
    pub unresponsive: mpsc::UnboundedReceiver<Url>,
}
/// A node built by `factory` with the config both crates share.
pub async fn node(factory: DynTransportFactory, relay: &EmbeddedRelay, ours: bool) -> Node {
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
    if ours {
        let config: IrohTransportModConfig = serde_json::from_value(json).unwrap();
        builder.config.set_module_config(&config).unwrap();
    } else {
        let config: kitsune2_transport_iroh::IrohTransportModConfig =
            serde_json::from_value(json).unwrap();
        builder.config.set_module_config(&config).unwrap();
    }
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
