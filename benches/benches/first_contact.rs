//! First contact: the time from the first send to a new peer to its
//! delivery, over the embedded relay on 127.0.0.1, ours against the
//! incumbent and bare iroh in one run; then simultaneous first sends
//! between every pair of 3 and 10 nodes at once.
//!
//! ```text
//! cargo bench -p kitsune2-iroh-benches --bench first_contact
//! ```
//!
//! - `fresh pairs`: `FIRST_CONTACT_PAIRS` (default 100) pairs of new nodes
//!   per kind, built ten at a time (the incumbent's take ~3 s each to
//!   start, so they start concurrently); for each pair, A's first
//!   `send_space_notify` to B, timed until B's space handler has it. Bare
//!   iroh: a fresh endpoint dials another by id and relay URL, opens a uni
//!   stream and writes one frame, timed until the other's reader has the
//!   frame. The pairs of a batch are measured one after the other, then
//!   closed.
//! - `simultaneous`: `SIMULTANEOUS_RUNS` (default 50) runs of 3 and of 10
//!   fresh nodes of ours in which every node sends to every other at the
//!   same moment (n·(n-1) sends over n·(n-1)/2 connections); each send is
//!   timed from the common start to its delivery. Counts deliveries that
//!   took 500 ms or more. `INCUMBENT_RUNS` (default 10) runs of the same
//!   with the incumbent, for reference.
//!
//! `FIRST_CONTACT_RELAY` picks the relay: `embedded` (the default, iroh's
//! relay server as `k2iroh` runs it), `test-bootstrap` (the relay of
//! `kitsune2_test_utils`' test bootstrap server) or `bootstrap` (the relay
//! of `kitsune2_bootstrap_srv` with its testing config), all on 127.0.0.1.
//!
//! With `FIRST_CONTACT_TRACE=1` the binary logs through `tracing` to
//! stderr (filter from `RUST_LOG`, time since start) and marks each first
//! send and delivery, for the per-step breakdown in `docs/benchmarks.md`;
//! use it with few pairs (`FIRST_CONTACT_PAIRS=5 SIMULTANEOUS_RUNS=0
//! INCUMBENT_RUNS=0`).
//!
//! Every wait is bounded (`MESSAGE_BOUND`, `STARTUP_BOUND`) and panics with
//! what did not arrive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kitsune2_bootstrap_srv::BootstrapSrv;
use kitsune2_iroh::RelayUrl;
use kitsune2_iroh::relay::EmbeddedRelay;
use kitsune2_test_utils::bootstrap::TestBootstrapSrv;
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at};

mod common;
use common::*;

/// Nodes built at once.
const BATCH: usize = 10;

/// A delivery at least this late counts as a stall.
const STALL: Duration = Duration::from_millis(500);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `n` nodes of one crate, built concurrently.
async fn nodes(relay_url: &str, ours: bool, n: usize) -> Vec<Node> {
    let mut starting = Vec::with_capacity(n);
    for _ in 0..n {
        let relay_url = relay_url.to_owned();
        starting.push(tokio::spawn(async move {
            node(factory(ours), &relay_url, ours).await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for s in starting {
        out.push(s.await.expect("a node failed to start"));
    }
    out
}

async fn close_nodes(nodes: Vec<Node>) {
    let closing: Vec<_> = nodes
        .into_iter()
        .map(|n| tokio::spawn(async move { n.transport.close().await }))
        .collect();
    for c in closing {
        let _ = timeout(MESSAGE_BOUND, c).await;
    }
}

/// A's first send to B, timed until B's handler has it.
async fn first_send(a: &Node, b: &mut Node) -> Duration {
    let msg = tagged(SINK, 16);
    let start = Instant::now();
    tracing::info!(to = %b.url, "bench: first send");
    let send = a.transport.send_space_notify(b.url.clone(), space(), msg);
    let recv = async {
        let got = timeout(MESSAGE_BOUND, b.sink.recv())
            .await
            .unwrap_or_else(|_| panic!("first message not delivered within {MESSAGE_BOUND:?}"))
            .expect("handler gone");
        let took = start.elapsed();
        tracing::info!(?took, "bench: delivered");
        assert_eq!(got.len(), 16, "wrong message");
        took
    };
    let (sent, took) = tokio::join!(send, recv);
    sent.expect("first send failed");
    took
}

/// First contact over `pairs` fresh pairs of one crate.
async fn fresh_pairs(relay_url: &str, ours: bool, pairs: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(pairs);
    while times.len() < pairs {
        let k = BATCH.min(pairs - times.len());
        let mut built = nodes(relay_url, ours, 2 * k).await;
        for pair in built.chunks_mut(2) {
            let [a, b] = pair else {
                unreachable!("chunks of two")
            };
            times.push(first_send(a, b).await);
        }
        close_nodes(built).await;
    }
    times
}

/// First contact over `pairs` fresh pairs of bare iroh endpoints.
async fn fresh_bare_pairs(relay: &RelayUrl, pairs: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let (a, b) = tokio::join!(bare::endpoint(relay, false), bare::endpoint(relay, false));
        let to = bare::addr(&b, relay);
        let start = Instant::now();
        let dial = async {
            let conn = bare::connect(&a, to).await;
            let mut send = conn.open_uni().await.expect("bare open_uni");
            bare::write_frame(&mut send, tagged(SINK, 16)).await;
            (conn, send)
        };
        let answer = async {
            let conn = bare::accept(&b).await;
            let mut recv = timeout(MESSAGE_BOUND, conn.accept_uni())
                .await
                .expect("bare accept_uni timed out")
                .expect("bare accept_uni");
            let got = timeout(MESSAGE_BOUND, bare::read_frame(&mut recv))
                .await
                .expect("bare frame not delivered in time")
                .expect("bare stream ended");
            let took = start.elapsed();
            assert_eq!(got.len(), 16, "wrong message");
            (conn, took)
        };
        let (_dialed, (_accepted, took)) = tokio::join!(dial, answer);
        times.push(took);
        tokio::join!(bare::close(a), bare::close(b));
    }
    times
}

/// How long a simultaneous run waits for its deliveries; what has not
/// arrived by then counts as lost.
const SIMULTANEOUS_BOUND: Duration = Duration::from_secs(15);

/// What one simultaneous run saw.
#[derive(Default)]
struct Simultaneous {
    /// Each delivery's time since the common start.
    times: Vec<Duration>,
    /// Messages not delivered within [`SIMULTANEOUS_BOUND`].
    lost: usize,
    /// Sends that returned an error.
    failed: usize,
}

/// Every node of `n` fresh ones sends to every other at once; the time of
/// each of the n·(n-1) deliveries since the common start.
async fn simultaneous(relay_url: &str, ours: bool, n: usize) -> Simultaneous {
    let mut all = nodes(relay_url, ours, n).await;
    let urls: Arc<Vec<_>> = Arc::new(all.iter().map(|node| node.url.clone()).collect());
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start) + SIMULTANEOUS_BOUND;
    let mut sends = Vec::new();
    for (i, node) in all.iter().enumerate() {
        for j in (0..n).filter(|&j| j != i) {
            let transport = node.transport.clone();
            let urls = urls.clone();
            sends.push(tokio::spawn(async move {
                let mut msg = vec![SINK; 16];
                msg[1] = u8::try_from(i).expect("fewer than 256 nodes");
                timeout_at(
                    deadline,
                    transport.send_space_notify(urls[j].clone(), space(), Bytes::from(msg)),
                )
                .await
                .map_err(|_| ())
                .and_then(|r| r.map_err(|_| ()))
            }));
        }
    }
    // One receiver task per node, so that each delivery is timed when it
    // happens.
    let mut receivers = Vec::with_capacity(n);
    for node in &mut all {
        let mut sink = std::mem::replace(&mut node.sink, mpsc::unbounded_channel().1);
        receivers.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(n - 1);
            while times.len() < n - 1 {
                match timeout_at(deadline, sink.recv()).await {
                    Ok(Some(_)) => times.push(start.elapsed()),
                    Ok(None) | Err(_) => break,
                }
            }
            times
        }));
    }
    let mut out = Simultaneous::default();
    for r in receivers {
        out.times.extend(r.await.expect("a receiver panicked"));
    }
    out.lost = n * (n - 1) - out.times.len();
    for s in sends {
        if s.await.expect("send task panicked").is_err() {
            out.failed += 1;
        }
    }
    close_nodes(all).await;
    out
}

/// The `q`-quantile of sorted `v` (nearest rank).
fn quantile(v: &[Duration], q: f64) -> Duration {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn report(what: &str, mut v: Vec<Duration>) {
    if v.is_empty() {
        return;
    }
    v.sort();
    let stalls = v.iter().filter(|d| **d >= STALL).count();
    println!(
        "{what:<40} n={:<4} p50 {:>9.2?}  p90 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  >=500ms: {stalls}",
        v.len(),
        quantile(&v, 0.5),
        quantile(&v, 0.9),
        quantile(&v, 0.99),
        v[v.len() - 1],
    );
}

fn main() {
    if std::env::var("FIRST_CONTACT_TRACE").is_ok_and(|v| v != "0") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .with_writer(std::io::stderr)
            .init();
    }
    let pairs = env_usize("FIRST_CONTACT_PAIRS", 100);
    let runs = env_usize("SIMULTANEOUS_RUNS", 50);
    let incumbent_runs = env_usize("INCUMBENT_RUNS", 10);
    let rt = runtime();
    rt.block_on(async {
        let relay = Relay::start().await;
        let url = relay.url();
        let relay_url: RelayUrl = url.parse().expect("relay URL");
        println!("first send to first delivery, fresh pairs over {}", relay.name());
        if pairs > 0 {
            report("ours", fresh_pairs(&url, true, pairs).await);
            report("incumbent", fresh_pairs(&url, false, pairs).await);
            report("bare iroh", fresh_bare_pairs(&relay_url, pairs).await);
        }
        for n in [3, 10] {
            for (ours, runs) in [(true, runs), (false, incumbent_runs)] {
                let mut total = Simultaneous::default();
                let mut bad_runs = 0;
                for _ in 0..runs {
                    let r = simultaneous(&url, ours, n).await;
                    bad_runs +=
                        usize::from(r.lost > 0 || r.times.iter().any(|d| *d >= STALL));
                    total.times.extend(r.times);
                    total.lost += r.lost;
                    total.failed += r.failed;
                }
                let name = if ours { "ours" } else { "incumbent" };
                report(
                    &format!("simultaneous, {n} nodes, {runs} runs, {name}"),
                    total.times,
                );
                if runs > 0 {
                    println!(
                        "{:<40} lost {} (not delivered within {SIMULTANEOUS_BOUND:?}), sends failed {}, runs with a loss or a delivery >=500ms: {bad_runs}",
                        "", total.lost, total.failed
                    );
                }
            }
        }
        relay.shutdown().await;
    });
}

/// The relay the nodes use, chosen by `FIRST_CONTACT_RELAY`.
enum Relay {
    /// `embedded` (the default): `kitsune2_iroh::relay::EmbeddedRelay`,
    /// iroh-relay's own server.
    Embedded(EmbeddedRelay),
    /// `test-bootstrap`: `kitsune2_test_utils`' test bootstrap server,
    /// whose relay is served by `axum::serve` (its sockets keep Nagle on).
    TestBootstrap(TestBootstrapSrv),
    /// `bootstrap`: `kitsune2_bootstrap_srv` with its testing config
    /// (served by `axum_server`, which turns Nagle off).
    Bootstrap(Box<BootstrapSrv>),
}

impl Relay {
    async fn start() -> Self {
        match std::env::var("FIRST_CONTACT_RELAY").as_deref() {
            Ok("test-bootstrap") => Self::TestBootstrap(TestBootstrapSrv::new(false).await),
            Ok("bootstrap") => Self::Bootstrap(Box::new(
                // BootstrapSrv runs its own runtime; start it off this one.
                tokio::task::spawn_blocking(|| {
                    BootstrapSrv::new(kitsune2_bootstrap_srv::Config::testing())
                })
                .await
                .expect("bootstrap server task")
                .expect("bootstrap server"),
            )),
            Ok("embedded") | Err(_) => {
                Self::Embedded(EmbeddedRelay::start().await.expect("embedded relay"))
            }
            Ok(other) => panic!(
                "FIRST_CONTACT_RELAY={other}: expected embedded, test-bootstrap or bootstrap"
            ),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "the embedded relay",
            Self::TestBootstrap(_) => "kitsune2_test_utils' TestBootstrapSrv relay",
            Self::Bootstrap(_) => "kitsune2_bootstrap_srv's relay",
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Embedded(r) => r.url().to_string(),
            Self::TestBootstrap(s) => format!("{}/relay", s.addr()),
            Self::Bootstrap(s) => format!("http://{}/relay", s.listen_addrs()[0]),
        }
    }

    async fn shutdown(self) {
        match self {
            Self::Embedded(r) => r.shutdown().await.expect("relay shutdown"),
            Self::TestBootstrap(s) => drop(s),
            Self::Bootstrap(s) => {
                // Its runtime is dropped off this one, as it was started.
                let _ = tokio::task::spawn_blocking(move || drop(s)).await;
            }
        }
    }
}
