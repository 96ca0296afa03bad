//! A two-or-more-node harness on the in-memory network, with kitsune2's own
//! `DefaultTransport` on top and a handler that records every event.
#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a subset

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kitsune2_api::{DefaultTransport, DynTransport, K2Result, SpaceId, TxImpHnd, Url};
use kitsune2_iroh_core::mem::{MemEndpoint, MemNetwork};
use kitsune2_iroh_core::{CoreConfig, CoreTransport, EndpointId, WallClock};
// The recording handler the iroh suite uses too (`kitsune2-iroh-test-support`).
pub use kitsune2_iroh_test_support::{Events, Recorder};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

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

/// The module messages a node received: sender and data, in order.
#[derive(Debug)]
pub struct Inbox(mpsc::UnboundedReceiver<(Url, String, Bytes)>);

impl Inbox {
    /// Whether no message is there now.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next message if one is there.
    pub fn try_recv(&mut self) -> Result<(Url, Bytes), TryRecvError> {
        self.0.try_recv().map(|(from, _module, data)| (from, data))
    }

    /// The next message, or `None` once the recorder is gone.
    pub async fn recv(&mut self) -> Option<(Url, Bytes)> {
        self.0
            .recv()
            .await
            .map(|(from, _module, data)| (from, data))
    }
}

/// One node: core transport on a mem endpoint, kitsune2 on top.
pub struct Node {
    pub id: EndpointId,
    pub ep: Arc<MemEndpoint>,
    pub imp: Arc<CoreTransport>,
    pub tx: DynTransport,
    pub rec: Arc<Recorder>,
    pub inbox: Inbox,
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
        let (rec, taps) = Recorder::new();
        rec.set_preflight(Bytes::from_static(b"agent-infos"));
        let inbox = Inbox(taps.module_msgs);
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
        let side = rec.space_side(space());
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

    /// The send of `data` to `to` as a future of its own (`'static`), for
    /// a task or a `JoinSet`.
    pub fn send_owned(
        &self,
        to: &Self,
        data: &'static [u8],
    ) -> impl Future<Output = K2Result<()>> + Send + 'static {
        let (tx, to) = (self.tx.clone(), to.url.clone());
        async move {
            tx.send_module(to, space(), MODULE.to_owned(), Bytes::from_static(data))
                .await
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
        self.rec.events()
    }
}

/// Runs `fut` to its end on a current-thread runtime with paused time, as
/// `#[tokio::test(start_paused = true)]` does; for proptest bodies.
pub fn block_on_paused<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(fut)
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

/// The peer's close seen before its last bytes: `a` and `b` exchanged a
/// message already; `a`'s reads are held, `b` sends `messages` (each
/// returns Ok), both disconnect at once, and `b`'s drain is through and
/// `b` closed before `a`'s reader ran again. Then `a`'s reads go on and
/// 5 s pass (paused time); what `a` delivered is in its inbox.
pub async fn peer_closes_before_our_reader_runs(
    net: &MemNetwork,
    a: &Node,
    b: &Node,
    messages: &[&'static [u8]],
) {
    net.hold_reads(a.id, true);
    for m in messages {
        b.send(a, m).await.unwrap();
    }
    let (ta, tb) = (a.tx.clone(), b.tx.clone());
    tokio::join!(
        ta.disconnect(b.url.clone(), None),
        tb.disconnect(a.url.clone(), None)
    );
    // b's drain is through well within its deadline (1 s): it read a's
    // FIN, and its own was received: b closed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(b.imp.connections().is_empty(), "b closed");
    assert!(a.inbox.is_empty(), "a's reader has read nothing yet");
    net.hold_reads(a.id, false);
    tokio::time::sleep(Duration::from_secs(5)).await;
}
