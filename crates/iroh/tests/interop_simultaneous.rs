//! Wire compatibility of simultaneous open between a node on this crate and
//! a node on `kitsune2_transport_iroh` 0.6.0-dev.3 over one embedded relay:
//! both send first at the same moment, before any connection exists; both
//! messages arrive, each side ends with one connected peer, and nobody sees
//! a disconnect or marks the other unresponsive.
//!
//! Like `interop.rs`, each test re-runs itself under `unshare -rn`.

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, K2Result, SpaceId, Timestamp,
    TxBaseHandler, TxHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh::relay::EmbeddedRelay;
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

fn ours() -> DynTransportFactory {
    IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn theirs() -> DynTransportFactory {
    kitsune2_transport_iroh::IrohTransportFactory::create()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn simultaneous_first_sends(a_ours: bool) {
    let relay = EmbeddedRelay::start().await.unwrap();
    let (fa, fb) = if a_ours {
        (ours(), theirs())
    } else {
        (theirs(), ours())
    };
    let mut a = node(fa, &relay, a_ours).await;
    let mut b = node(fb, &relay, !a_ours).await;
    let (sent_a, sent_b) = timeout(BOUND, async {
        tokio::join!(
            a.transport.send_space_notify(
                b.url.clone(),
                TEST_SPACE_ID,
                Bytes::from_static(b"from a"),
            ),
            b.transport.send_space_notify(
                a.url.clone(),
                TEST_SPACE_ID,
                Bytes::from_static(b"from b"),
            ),
        )
    })
    .await
    .expect("sends timed out");
    sent_a.unwrap();
    sent_b.unwrap();
    let (from, data) = timeout(BOUND, b.received.recv()).await.unwrap().unwrap();
    assert_eq!((from, data), (a.url.clone(), Bytes::from_static(b"from a")));
    let (from, data) = timeout(BOUND, a.received.recv()).await.unwrap().unwrap();
    assert_eq!((from, data), (b.url.clone(), Bytes::from_static(b"from b")));
    // Let the losing connection of the race close, then check both sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    for (node, other) in [(&mut a, b_url), (&mut b, a_url)] {
        let peers = node.transport.get_connected_peers().await.unwrap();
        assert_eq!(peers, vec![other]);
        assert!(
            node.disconnected.try_recv().is_err(),
            "simultaneous open reported a disconnect"
        );
        assert!(
            node.unresponsive.try_recv().is_err(),
            "simultaneous open marked a peer unresponsive"
        );
    }
    timeout(BOUND, async {
        a.transport.close().await;
        b.transport.close().await;
    })
    .await
    .unwrap();
    relay.shutdown().await.unwrap();
}

#[test]
fn ours_and_incumbent_send_first_simultaneously() {
    in_netns("ours_and_incumbent_send_first_simultaneously", || {
        runtime().block_on(simultaneous_first_sends(true));
    });
}

#[test]
fn incumbent_and_ours_send_first_simultaneously() {
    in_netns("incumbent_and_ours_send_first_simultaneously", || {
        runtime().block_on(simultaneous_first_sends(false));
    });
}
