//! Wire compatibility under load: a node on this crate and a node on
//! `kitsune2_transport_iroh` 0.6.0-dev.3, over one embedded relay, echo
//! 1000 distinct module messages, with either crate as the sender.
//!
//! Like `interop.rs`, each test re-runs itself under `unshare -rn` so the
//! incumbent's port mapper cannot reach past loopback.

mod support;

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, K2Result, SpaceId, TxBaseHandler,
    TxHandler, TxModuleHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{IrohTransportConfig, IrohTransportModConfig};
use kitsune2_test_utils::space::TEST_SPACE_ID;
use std::sync::Arc;
use std::time::Duration;
use support::{BOUND, in_netns, ours, runtime, theirs};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const ECHO_BOUND: Duration = Duration::from_secs(40);
const MODULE: &str = "echo";
const COUNT: u32 = 1000;
static SENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static ECHOED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
static CHECKED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[derive(Debug)]
struct Handler {
    url: watch::Sender<Option<Url>>,
    received: mpsc::UnboundedSender<(Url, String, Bytes)>,
}

impl TxBaseHandler for Handler {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.url.send_replace(Some(this_url));
        Box::pin(async {})
    }
}

impl TxHandler for Handler {}

// Module messages pass kitsune2's block check only in a space with a
// space handler.
impl TxSpaceHandler for Handler {
    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }
}

impl TxModuleHandler for Handler {
    fn recv_module_msg(
        &self,
        peer: Url,
        space_id: SpaceId,
        module: String,
        data: Bytes,
    ) -> K2Result<()> {
        assert_eq!(space_id, TEST_SPACE_ID);
        let _ = self.received.send((peer, module, data));
        Ok(())
    }
}

struct Node {
    transport: DynTransport,
    url: Url,
    received: mpsc::UnboundedReceiver<(Url, String, Bytes)>,
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
    let handler = Arc::new(Handler {
        url: url_tx,
        received: received_tx,
    });
    let transport = builder
        .transport
        .create(builder.clone(), handler.clone())
        .await
        .unwrap();
    transport.register_space_handler(TEST_SPACE_ID, handler.clone());
    transport.register_module_handler(TEST_SPACE_ID, MODULE.to_string(), handler);
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
    }
}

/// Message `i`: distinct content and length (1 to 4000 bytes), so a lost,
/// duplicated, reordered or corrupted message fails the check.
fn message(i: u32) -> Bytes {
    let len = 1 + (i as usize * 37) % 4000;
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(&i.to_be_bytes());
    data.extend((0..len).map(|j| (i as usize * 31 + j) as u8));
    Bytes::from(data)
}

/// `sender` sends `COUNT` module messages to `echoer`, which sends each one
/// back as it arrives; `sender` checks every echo, in order.
async fn echo(mut sender: Node, mut echoer: Node) {
    let sender_url = sender.url.clone();
    let echoer_url = echoer.url.clone();
    let echo_task = tokio::spawn(async move {
        for i in 0..COUNT {
            let (from, module, data) = echoer.received.recv().await.unwrap();
            assert_eq!(from, sender_url, "message {i} from the wrong peer");
            assert_eq!(module, MODULE);
            ECHOED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            echoer
                .transport
                .send_module(from, TEST_SPACE_ID, module, data)
                .await
                .unwrap();
        }
        echoer
    });
    let check = async {
        for i in 0..COUNT {
            sender
                .transport
                .send_module(
                    echoer_url.clone(),
                    TEST_SPACE_ID,
                    MODULE.to_string(),
                    message(i),
                )
                .await
                .unwrap();
            SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for i in 0..COUNT {
            let (from, module, data) = sender.received.recv().await.unwrap();
            assert_eq!(from, echoer_url, "echo {i} from the wrong peer");
            assert_eq!(module, MODULE);
            assert_eq!(data, message(i), "echo {i} has the wrong content");
            CHECKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    if timeout(ECHO_BOUND, check).await.is_err() {
        panic!(
            "echoes not back in time: sent {SENT:?}, echoer received {ECHOED:?}, checked {CHECKED:?}"
        );
    }
    let echoer = timeout(BOUND, echo_task).await.unwrap().unwrap();
    // Nothing beyond the COUNT echoes arrived.
    assert!(sender.received.try_recv().is_err());
    timeout(BOUND, async {
        sender.transport.close().await;
        echoer.transport.close().await;
    })
    .await
    .unwrap();
}

#[test]
fn ours_sends_1000_incumbent_echoes() {
    in_netns("ours_sends_1000_incumbent_echoes", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = node(ours(), &relay, true).await;
            let b = node(theirs(), &relay, false).await;
            echo(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}

#[test]
fn incumbent_sends_1000_ours_echoes() {
    in_netns("incumbent_sends_1000_ours_echoes", || {
        runtime().block_on(async {
            let relay = EmbeddedRelay::start().await.unwrap();
            let a = node(theirs(), &relay, false).await;
            let b = node(ours(), &relay, true).await;
            echo(a, b).await;
            relay.shutdown().await.unwrap();
        });
    });
}
