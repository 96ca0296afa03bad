//! A two-or-more-node harness on the in-memory network, with kitsune2's own
//! `DefaultTransport` on top and a handler that records every event.
#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a subset

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, DefaultTransport, DynTransport, K2Error, K2Result, SpaceId, Timestamp, TxBaseHandler,
    TxHandler, TxImpHnd, TxModuleHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh_core::mem::{MemEndpoint, MemNetwork};
use kitsune2_iroh_core::{CoreConfig, CoreTransport, EndpointId, WallClock};
use tokio::sync::mpsc;

pub const MODULE: &str = "test";

pub fn space() -> SpaceId {
    SpaceId::from(Bytes::from_static(b"space-for-core-tests-32-bytes!!!"))
}

/// A wall clock tests set by hand.
#[derive(Debug, Default)]
pub struct TestClock(pub AtomicI64);

impl WallClock for TestClock {
    fn now_micros(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything kitsune2 was told.
#[derive(Debug, Default)]
pub struct Events {
    pub disconnects: Vec<(Url, Option<String>)>,
    pub unresponsive: Vec<Url>,
    pub preflights: Vec<(Url, Bytes)>,
    pub listening: Vec<Url>,
    /// Listening addresses the test space's handler heard.
    pub space_listening: Vec<Url>,
}

#[derive(Debug)]
pub struct Recorder {
    pub events: Mutex<Events>,
    pub msgs: mpsc::UnboundedSender<(Url, Bytes)>,
    pub reject_preflights: AtomicBool,
    pub no_local_agents: AtomicBool,
}

impl TxBaseHandler for Recorder {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.events.lock().unwrap().listening.push(this_url);
        Box::pin(async {})
    }

    fn peer_disconnect(&self, peer: Url, reason: Option<String>) {
        self.events.lock().unwrap().disconnects.push((peer, reason));
    }
}

impl TxHandler for Recorder {
    fn preflight_gather_outgoing(&self, _peer_url: Url) -> BoxFut<'_, K2Result<Bytes>> {
        Box::pin(async { Ok(Bytes::from_static(b"agent-infos")) })
    }

    fn preflight_validate_incoming(&self, peer_url: Url, data: Bytes) -> BoxFut<'_, K2Result<()>> {
        self.events
            .lock()
            .unwrap()
            .preflights
            .push((peer_url, data));
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

/// The space and module side of a node: forwards to the [`Recorder`], but
/// leaves `peer_disconnect` (which kitsune2 calls on every handler) to the
/// main handler, so each event is recorded once.
#[derive(Debug)]
pub struct SpaceSide(pub Arc<Recorder>);

impl TxBaseHandler for SpaceSide {
    fn new_listening_address(&self, this_url: Url) -> BoxFut<'static, ()> {
        self.0.events.lock().unwrap().space_listening.push(this_url);
        Box::pin(async {})
    }
}

impl TxSpaceHandler for SpaceSide {
    fn set_unresponsive(&self, peer: Url, _when: Timestamp) -> BoxFut<'_, K2Result<()>> {
        self.0.events.lock().unwrap().unresponsive.push(peer);
        Box::pin(async { Ok(()) })
    }

    fn is_any_agent_at_url_blocked(&self, _peer_url: &Url) -> K2Result<bool> {
        Ok(false)
    }

    fn has_local_agents(&self) -> BoxFut<'_, K2Result<bool>> {
        let none = self.0.no_local_agents.load(Ordering::SeqCst);
        Box::pin(async move { Ok(!none) })
    }
}

impl TxModuleHandler for SpaceSide {
    fn recv_module_msg(
        &self,
        peer: Url,
        _space: SpaceId,
        _module: String,
        data: Bytes,
    ) -> K2Result<()> {
        let _ = self.0.msgs.send((peer, data));
        Ok(())
    }
}

/// One node: core transport on a mem endpoint, kitsune2 on top.
pub struct Node {
    pub id: EndpointId,
    pub ep: Arc<MemEndpoint>,
    pub imp: Arc<CoreTransport>,
    pub tx: DynTransport,
    pub rec: Arc<Recorder>,
    pub inbox: mpsc::UnboundedReceiver<(Url, Bytes)>,
    pub url: Url,
}

pub fn config() -> CoreConfig {
    CoreConfig {
        backend: "mem".to_owned(),
        connect_timeout: Duration::from_secs(5),
        ..CoreConfig::default()
    }
}

impl Node {
    pub fn new(net: &Arc<MemNetwork>, id_byte: u8) -> Self {
        Self::with_config(net, [id_byte; 32], config())
    }

    pub fn with_config(net: &Arc<MemNetwork>, id: EndpointId, config: CoreConfig) -> Self {
        let (msgs, inbox) = mpsc::unbounded_channel();
        let rec = Arc::new(Recorder {
            events: Mutex::new(Events::default()),
            msgs,
            reject_preflights: AtomicBool::new(false),
            no_local_agents: AtomicBool::new(false),
        });
        let ep = net.endpoint(id);
        let hnd = TxImpHnd::new(rec.clone());
        let imp = CoreTransport::create(
            ep.clone(),
            hnd.clone(),
            config,
            Arc::new(TestClock(AtomicI64::new(1_700_000_000_000_000))),
        )
        .unwrap();
        let tx = DefaultTransport::create(&hnd, imp.clone());
        let side = Arc::new(SpaceSide(rec.clone()));
        tx.register_space_handler(space(), side.clone());
        tx.register_module_handler(space(), MODULE.to_owned(), side);
        let url = kitsune2_iroh_core::mem::mem_url(&id);
        Self {
            id,
            ep,
            imp,
            tx,
            rec,
            inbox,
            url,
        }
    }

    pub async fn send(&self, to: &Self, data: &'static [u8]) -> K2Result<()> {
        self.tx
            .send_module(
                to.url.clone(),
                space(),
                MODULE.to_owned(),
                Bytes::from_static(data),
            )
            .await
    }

    /// The next message, waiting at most 30 s (of paused time, in most tests).
    pub async fn recv(&mut self) -> (Url, Bytes) {
        tokio::time::timeout(Duration::from_secs(30), self.inbox.recv())
            .await
            .expect("no message within 30 s")
            .expect("inbox open")
    }

    pub fn events(&self) -> std::sync::MutexGuard<'_, Events> {
        self.rec.events.lock().unwrap()
    }
}

/// Logs to the test's output when `RUST_LOG` is set (e.g.
/// `RUST_LOG=kitsune2_iroh_core=debug`).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// Runs every task to quiescence without moving the clock on: under paused
/// time the runtime advances the clock only once no task can run, so a
/// nanosecond's sleep returns exactly when everything else is idle (no
/// deadline of the transport, all at least a millisecond away, fires).
/// Repeated, so that work woken by the last round runs too.
pub async fn settle() {
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_nanos(1)).await;
    }
}

/// A frame's wire bytes.
pub fn wire(frame: kitsune2_iroh_codec::Frame) -> Bytes {
    frame
        .encode(&kitsune2_iroh_codec::Limits::default())
        .unwrap()
        .to_bytes()
}

/// A preflight frame claiming `url`, with valid kitsune2 preflight bytes.
pub fn preflight_frame(url: &str) -> Bytes {
    let pf = kitsune2_api::K2Proto {
        ty: kitsune2_api::K2WireType::Preflight as i32,
        data: Bytes::from_static(b"raw-agent-infos"),
        space_id: None,
        module_id: None,
    }
    .encode()
    .unwrap();
    wire(kitsune2_iroh_codec::Frame::preflight(url, pf))
}

/// A data frame carrying a module message for the test module.
pub fn module_frame(data: &'static [u8]) -> Bytes {
    let msg = kitsune2_api::K2Proto {
        ty: kitsune2_api::K2WireType::Module as i32,
        data: Bytes::from_static(data),
        space_id: Some(space().into()),
        module_id: Some(MODULE.to_owned()),
    }
    .encode()
    .unwrap();
    wire(kitsune2_iroh_codec::Frame::data(msg))
}

/// Nodes 1 and 2 on a fresh network, connected by a first message from 1 to 2.
pub async fn connected_pair() -> (Arc<MemNetwork>, Node, Node) {
    let net = MemNetwork::new();
    let a = Node::new(&net, 1);
    let mut b = Node::new(&net, 2);
    a.send(&b, b"hi").await.unwrap();
    assert_eq!(&b.recv().await.1[..], b"hi");
    (net, a, b)
}
