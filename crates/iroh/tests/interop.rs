//! Wire compatibility: a node on this crate and a node on
//! `kitsune2_transport_iroh` 0.6.0-dev.3 talk over one embedded relay, in
//! both dial directions.
//!
//! The incumbent builds its endpoint with iroh's port mapper on, which
//! probes the LAN gateway. So that no packet leaves loopback, each test
//! re-runs itself in a fresh network namespace with only `lo` (`unshare
//! -rn`); without `unshare` the test fails rather than touch the network.

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, K2Result, SpaceId, TxBaseHandler,
    TxHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::url::{parse_peer_url, peer_url};
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use kitsune2_test_utils::space::TEST_SPACE_ID;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const NETNS_ENV: &str = "KITSUNE2_IROH_TEST_IN_NETNS";
const BOUND: Duration = Duration::from_secs(30);

/// Runs `body` inside a private network namespace: re-executes this test
/// binary for `test_name` under `unshare -rn` and asserts it passed.
fn in_netns(test_name: &str, body: impl FnOnce()) {
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
struct Handler {
    url: watch::Sender<Option<Url>>,
    received: mpsc::UnboundedSender<(Url, Bytes)>,
}

impl TxBaseHandler for Handler {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.url.send_replace(Some(this_url));
        Box::pin(async {})
    }
}

impl TxHandler for Handler {}

impl TxSpaceHandler for Handler {
    fn recv_space_notify(&self, peer: Url, _space: SpaceId, data: Bytes) -> K2Result<()> {
        let _ = self.received.send((peer, data));
        Ok(())
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }
}

struct Node {
    transport: DynTransport,
    url: Url,
    received: mpsc::UnboundedReceiver<(Url, Bytes)>,
}

/// A node built by `factory` with the config both crates share.
async fn node(factory: DynTransportFactory, relay: &EmbeddedRelay, ours: bool) -> Node {
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
    // The same JSON configures either transport.
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
    let handler = Arc::new(Handler {
        url: url_tx,
        received: received_tx,
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
    // Either crate's peer URL parses into this relay and an endpoint id, and
    // formats back byte for byte.
    let (relay_url, id) = parse_peer_url(&url).unwrap();
    assert_eq!(relay_url, *relay.url());
    assert_eq!(peer_url(&relay_url, id).unwrap(), url);
    Node {
        transport,
        url,
        received,
    }
}

fn ours() -> DynTransportFactory {
    IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn theirs() -> DynTransportFactory {
    kitsune2_transport_iroh::IrohTransportFactory::create()
}

/// `dialer` sends first, `acceptor` answers over the same connection.
async fn converse(mut dialer: Node, mut acceptor: Node) {
    timeout(
        BOUND,
        dialer.transport.send_space_notify(
            acceptor.url.clone(),
            TEST_SPACE_ID,
            Bytes::from_static(b"ping"),
        ),
    )
    .await
    .expect("send timed out")
    .unwrap();
    let (from, data) = timeout(BOUND, acceptor.received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, dialer.url);
    assert_eq!(data, Bytes::from_static(b"ping"));
    for i in 0..5u8 {
        timeout(
            BOUND,
            acceptor.transport.send_space_notify(
                dialer.url.clone(),
                TEST_SPACE_ID,
                Bytes::from(vec![i; 70_000]),
            ),
        )
        .await
        .unwrap()
        .unwrap();
    }
    for i in 0..5u8 {
        let (from, data) = timeout(BOUND, dialer.received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from, acceptor.url);
        assert_eq!(data, Bytes::from(vec![i; 70_000]));
    }
    timeout(BOUND, async {
        dialer.transport.close().await;
        acceptor.transport.close().await;
    })
    .await
    .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn ours_dials_incumbent() {
    in_netns("ours_dials_incumbent", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = node(ours(), &relay, true).await;
            let b = node(theirs(), &relay, false).await;
            converse(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}

#[test]
fn incumbent_dials_ours() {
    in_netns("incumbent_dials_ours", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = node(theirs(), &relay, false).await;
            let b = node(ours(), &relay, true).await;
            converse(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}
