//! End to end over the embedded relay: two transports of this crate against
//! two transports of the incumbent, `kitsune2_transport_iroh`, side by side.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench transport -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Each pair (A, B) is built on kitsune2's test builder with the same
//! config JSON (`relayUrl` = the embedded relay on 127.0.0.1,
//! `relayAllowPlainText`), connected by one warm-up message, then measured:
//!
//! - `throughput`: A sends a batch of space notifies one after the other
//!   (`send_space_notify(..).await`); the time runs until B's space handler
//!   has received all of them. Throughput counts payload bytes.
//! - `round_trip`: A sends one message, B's space handler hands it to a task
//!   that sends it back, A's handler receives it.
//!
//! Nodes are built and connected outside the measured closures; every wait
//! is bounded and panics with a message saying what did not arrive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use kitsune2_api::{
    BoxFut, Builder, DynTransport, DynTransportFactory, Id, K2Result, SpaceId, Timestamp,
    TxBaseHandler, TxHandler, TxSpaceHandler, Url,
};
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_iroh::{IrohTransportConfig, IrohTransportFactory, IrohTransportModConfig};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, timeout_at};

/// Payload sizes: 1 KiB, 64 KiB, 1 MiB.
const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];

/// First payload byte of a message B's handler sends back to A.
const ECHO: u8 = 1;
/// First payload byte of a message B's handler only counts.
const SINK: u8 = 0;

/// Bound on building a node (until it has a listening address).
const STARTUP_BOUND: Duration = Duration::from_secs(30);
/// Bound on one batch or one round trip.
const MESSAGE_BOUND: Duration = Duration::from_secs(60);

/// The space every message is sent in.
fn space() -> SpaceId {
    SpaceId(Id(Bytes::from_static(b"bench_space")))
}

/// Messages per measured batch of `size`-byte payloads.
fn batch(size: usize) -> usize {
    if size >= 1024 * 1024 { 20 } else { 100 }
}

/// A `size`-byte payload whose first byte is `tag`.
fn tagged(tag: u8, size: usize) -> Bytes {
    let mut v = vec![0x5a; size];
    v[0] = tag;
    Bytes::from(v)
}

/// The transport handler: reports the listening address.
#[derive(Debug)]
struct Handler {
    url: watch::Sender<Option<Url>>,
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
struct SpaceSide {
    /// Lengths of received `SINK` messages.
    sink: mpsc::UnboundedSender<usize>,
    /// Received `ECHO` messages.
    echo: mpsc::UnboundedSender<Bytes>,
}

impl TxBaseHandler for SpaceSide {}

impl TxSpaceHandler for SpaceSide {
    fn recv_space_notify(&self, _peer: Url, _space: SpaceId, data: Bytes) -> K2Result<()> {
        if data.first() == Some(&ECHO) {
            let _ = self.echo.send(data);
        } else {
            let _ = self.sink.send(data.len());
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

struct Node {
    transport: DynTransport,
    url: Url,
    sink: mpsc::UnboundedReceiver<usize>,
    echo: mpsc::UnboundedReceiver<Bytes>,
}

/// A node built by `factory` with the config both crates share.
async fn node(factory: DynTransportFactory, relay_url: &str, ours: bool) -> Node {
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
        let config: IrohTransportModConfig =
            serde_json::from_value(json).expect("our config from JSON");
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

/// A connected pair of one crate: A measures, B counts and echoes.
struct Pair {
    name: &'static str,
    a: Node,
    b: Node,
    /// Sends B's received `ECHO` messages back to A through B's transport.
    echo_task: tokio::task::JoinHandle<()>,
}

impl Pair {
    async fn start(name: &'static str, relay_url: &str, ours: bool) -> Self {
        let factory = || -> DynTransportFactory {
            if ours {
                IrohTransportFactory::create_bound(SocketAddr::from(([127, 0, 0, 1], 0)))
            } else {
                kitsune2_transport_iroh::IrohTransportFactory::create()
            }
        };
        let t0 = Instant::now();
        let a = node(factory(), relay_url, ours).await;
        let mut b = node(factory(), relay_url, ours).await;
        eprintln!(
            "{name}: two nodes have listening addresses after {:?}",
            t0.elapsed()
        );
        // B's echo task: every ECHO message goes back to A.
        let mut echo_rx = std::mem::replace(&mut b.echo, mpsc::unbounded_channel().1);
        let b_transport = b.transport.clone();
        let a_url = a.url.clone();
        let echo_task = tokio::spawn(async move {
            while let Some(data) = echo_rx.recv().await {
                if let Err(e) = b_transport
                    .send_space_notify(a_url.clone(), space(), data)
                    .await
                {
                    eprintln!("echo send failed: {e}");
                }
            }
        });
        let mut pair = Self {
            name,
            a,
            b,
            echo_task,
        };
        // Warm-up: connects A to B and B back to A.
        let t1 = Instant::now();
        pair.round_trip(&tagged(ECHO, 16)).await;
        eprintln!(
            "{name}: first round trip (connect) took {:?}; direct: {}",
            t1.elapsed(),
            pair.direct().await
        );
        pair
    }

    /// Sends one message from A and waits for B's echo.
    async fn round_trip(&mut self, msg: &Bytes) -> Duration {
        let start = Instant::now();
        self.a
            .transport
            .send_space_notify(self.b.url.clone(), space(), msg.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: send to B failed: {e}", self.name));
        let back = timeout(MESSAGE_BOUND, self.a.echo.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: echo of a {}-byte message not back within {MESSAGE_BOUND:?}",
                    self.name,
                    msg.len()
                )
            })
            .unwrap_or_else(|| panic!("{}: A's handler is gone", self.name));
        let elapsed = start.elapsed();
        assert_eq!(
            back.len(),
            msg.len(),
            "{}: echo has the wrong size",
            self.name
        );
        elapsed
    }

    /// Sends `n` copies of `msg` from A, one after the other, and waits
    /// until B has received all of them.
    async fn batch(&mut self, msg: &Bytes, n: usize) -> Duration {
        let start = Instant::now();
        let deadline = tokio::time::Instant::from_std(start) + MESSAGE_BOUND;
        for _ in 0..n {
            self.a
                .transport
                .send_space_notify(self.b.url.clone(), space(), msg.clone())
                .await
                .unwrap_or_else(|e| panic!("{}: send to B failed: {e}", self.name));
        }
        for got in 0..n {
            let len = timeout_at(deadline, self.b.sink.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: B received {got} of {n} messages of {} bytes within {MESSAGE_BOUND:?}",
                        self.name,
                        msg.len()
                    )
                })
                .unwrap_or_else(|| panic!("{}: B's handler is gone", self.name));
            assert_eq!(len, msg.len(), "{}: message has the wrong size", self.name);
        }
        start.elapsed()
    }

    /// Whether A's connection to B is direct, as A's network stats say.
    async fn direct(&self) -> String {
        match self.a.transport.dump_network_stats().await {
            Ok(s) => format!(
                "{:?}",
                s.transport_stats
                    .connections
                    .iter()
                    .map(|c| c.is_direct)
                    .collect::<Vec<_>>()
            ),
            Err(e) => format!("unknown ({e})"),
        }
    }

    async fn close(self) {
        self.echo_task.abort();
        self.a.transport.close().await;
        self.b.transport.close().await;
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn transport(c: &mut Criterion) {
    let rt = runtime();
    let (relay, mut pairs) = rt.block_on(async {
        let relay = EmbeddedRelay::start().await.expect("embedded relay");
        let url = relay.url().to_string();
        let ours = Pair::start("ours", &url, true).await;
        let theirs = Pair::start("theirs", &url, false).await;
        (relay, [ours, theirs])
    });

    let mut g = c.benchmark_group("throughput");
    g.sampling_mode(SamplingMode::Flat);
    for size in SIZES {
        let n = batch(size);
        let msg = tagged(SINK, size);
        g.throughput(Throughput::Bytes((n * size) as u64));
        g.sample_size(if size >= 64 * 1024 { 10 } else { 30 });
        for pair in &mut pairs {
            g.bench_function(BenchmarkId::new(pair.name, size), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += pair.batch(&msg, n).await;
                        }
                        total
                    })
                });
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("round_trip");
    for size in SIZES {
        let msg = tagged(ECHO, size);
        g.throughput(Throughput::Bytes(size as u64));
        g.sample_size(if size >= 1024 * 1024 { 10 } else { 50 });
        for pair in &mut pairs {
            g.bench_function(BenchmarkId::new(pair.name, size), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += pair.round_trip(&msg).await;
                        }
                        total
                    })
                });
            });
        }
    }
    g.finish();

    rt.block_on(async {
        for pair in pairs {
            eprintln!("{}: direct at the end: {}", pair.name, pair.direct().await);
            pair.close().await;
        }
        let _ = relay.shutdown().await;
    });
}

criterion_group!(benches, transport);
criterion_main!(benches);
