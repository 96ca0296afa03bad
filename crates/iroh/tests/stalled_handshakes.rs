//! Stalled QUIC handshakes: an attacker whose packets reach our node
//! through a UDP proxy that drops our replies keeps each handshake alive
//! with its own retransmissions, so iroh's idle timeout never ends it.
//! Before `HandshakeLimits`, 32 of them held every accept slot and locked
//! every new peer out. Now each handshake has a deadline, one source holds
//! at most `per_source` at once (the next is refused at once), a full cap
//! drops the oldest handshake, and honest peers keep connecting.
//!
//! The attacker is a raw iroh endpoint (no relay) per proxy, dialing our
//! node's direct address through the proxy; each proxy sends from a
//! loopback address of its own (127.0.0.2, 127.0.0.3, ...), so each is one
//! source. The honest peers are transports of this crate dialing through
//! the embedded relay on loopback.

use iroh::endpoint::presets::Minimal;
use iroh::{EndpointAddr, RelayMode};
use kitsune2_api::{DefaultTransport, TxImpHnd};
use kitsune2_iroh::endpoint::ALPN;
use kitsune2_iroh::{EndpointId, HandshakeLimits, HandshakeStats, IrohEndpoint};
use kitsune2_iroh_core::{CoreConfig, CoreTransport, SystemClock};
use kitsune2_iroh_test_support::prelude::*;
use std::net::Ipv4Addr;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Longer than any test here runs: handshakes stalled in a test stay
/// stalled until it ends, unless the test is about the deadline.
const LONG: Duration = Duration::from_secs(300);

/// Packets a proxy handles before it stops, a bound on its loop.
const PROXY_PACKETS: usize = 200_000;

/// How often a wait for the handshake stats looks, and how many times.
const POLL: Duration = Duration::from_millis(50);
const POLLS: u32 = 600;

/// Our node: a transport of this crate whose `IrohEndpoint` the test keeps
/// (for its handshake stats), and its direct address and id.
struct Victim {
    node: Node,
    endpoint: Arc<IrohEndpoint>,
    socket: SocketAddr,
    id: EndpointId,
}

/// A transport of this crate on `relay`, built as `create_transport`
/// builds one but with `limits` for its handshakes.
async fn victim(relay: &EmbeddedRelay, limits: HandshakeLimits) -> Victim {
    let iroh = loopback_endpoint(relay.url()).await;
    let socket = iroh
        .bound_sockets()
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .expect("an IPv4 socket");
    let id = iroh.id();
    let endpoint = Arc::new(IrohEndpoint::with_handshake_limits(iroh, limits));
    let (handler, taps) = Recorder::new();
    let hnd = TxImpHnd::new(handler.clone());
    let imp = CoreTransport::create(
        endpoint.clone(),
        hnd.clone(),
        CoreConfig::default(),
        Arc::new(SystemClock),
    )
    .expect("the core transport starts");
    let transport = DefaultTransport::create(&hnd, imp);
    Victim {
        node: Node::from_transport(transport, handler, taps).await,
        endpoint,
        socket,
        id,
    }
}

/// A UDP proxy: what reaches `front` goes to the target from a socket on
/// a loopback address of its own; every reply is dropped.
struct Proxy {
    front: SocketAddr,
    replies_dropped: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// A [`Proxy`] to `target`, sending from `source`.
async fn proxy(source: Ipv4Addr, target: SocketAddr) -> Proxy {
    let front = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let back = UdpSocket::bind((source, 0))
        .await
        .unwrap_or_else(|e| panic!("binding {source}: {e}"));
    back.connect(target).await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let replies_dropped = Arc::new(AtomicUsize::new(0));
    let dropped = replies_dropped.clone();
    let task = tokio::spawn(async move {
        let mut inbound = vec![0u8; 65_536];
        let mut reply = vec![0u8; 65_536];
        for _ in 0..PROXY_PACKETS {
            tokio::select! {
                got = front.recv_from(&mut inbound) => {
                    let Ok((len, _)) = got else { break };
                    if back.send(&inbound[..len]).await.is_err() {
                        break;
                    }
                }
                got = back.recv(&mut reply) => {
                    if got.is_err() {
                        break;
                    }
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    Proxy {
        front: front_addr,
        replies_dropped,
        task,
    }
}

/// An attacker: a raw iroh endpoint on loopback, no relay, the kitsune2
/// ALPN.
async fn attacker() -> iroh::Endpoint {
    iroh::Endpoint::builder(Minimal)
        .relay_mode(RelayMode::Disabled)
        .alpns(vec![ALPN.to_vec()])
        .clear_ip_transports()
        .bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .unwrap()
        .bind()
        .await
        .unwrap()
}

/// `count` dials from `attacker` to `victim` through `proxy`, each left to
/// hang (their replies never arrive); aborted by the caller.
fn stall(
    attacker: &iroh::Endpoint,
    victim: &Victim,
    proxy: &Proxy,
    count: usize,
) -> Vec<JoinHandle<()>> {
    let addr = EndpointAddr::new(victim.id).with_ip_addr(proxy.front);
    (0..count)
        .map(|_| {
            let attacker = attacker.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                // Never completes before the test ends it; a failure after
                // the attacker's own idle timeout is fine too.
                let _ = attacker.connect(addr, ALPN).await;
            })
        })
        .collect()
}

/// Attackers on `sources` loopback addresses (127.0.0.2 on), `per_source`
/// stalled dials each.
struct Attack {
    endpoints: Vec<iroh::Endpoint>,
    proxies: Vec<Proxy>,
    dials: Vec<JoinHandle<()>>,
}

async fn attack(victim: &Victim, sources: u8, per_source: usize) -> Attack {
    let mut attack = Attack {
        endpoints: Vec::new(),
        proxies: Vec::new(),
        dials: Vec::new(),
    };
    for i in 0..sources {
        let proxy = proxy(Ipv4Addr::new(127, 0, 0, 2 + i), victim.socket).await;
        let endpoint = attacker().await;
        attack
            .dials
            .extend(stall(&endpoint, victim, &proxy, per_source));
        attack.endpoints.push(endpoint);
        attack.proxies.push(proxy);
    }
    attack
}

impl Attack {
    /// Replies of ours the proxies dropped so far.
    fn replies_dropped(&self) -> usize {
        self.proxies
            .iter()
            .map(|p| p.replies_dropped.load(Ordering::Relaxed))
            .sum()
    }

    async fn stop(self) {
        for dial in &self.dials {
            dial.abort();
        }
        for proxy in &self.proxies {
            proxy.task.abort();
        }
        for endpoint in self.endpoints {
            timeout(BOUND, endpoint.close())
                .await
                .expect("closing an attacker timed out");
        }
    }
}

/// The victim's handshake stats once `done` holds for them, polled within
/// [`POLL`] x [`POLLS`].
async fn stats_when(
    victim: &Victim,
    what: &str,
    done: impl Fn(&HandshakeStats) -> bool,
) -> HandshakeStats {
    let mut stats = victim.endpoint.handshake_stats();
    for _ in 0..POLLS {
        if done(&stats) {
            return stats;
        }
        tokio::time::sleep(POLL).await;
        stats = victim.endpoint.handshake_stats();
    }
    panic!("{what}: not reached in time; last stats {stats:?}");
}

/// An honest transport of this crate sends to `victim` and the message
/// arrives.
async fn honest_message_arrives(relay: &EmbeddedRelay, victim: &mut Victim) -> Node {
    let honest = node(ours(), relay, true).await;
    notify(&honest, &victim.node.url, Bytes::from_static(b"honest")).await;
    let (from, data) = next(&mut victim.node.received, "the honest message").await;
    assert_eq!((from, &data[..]), (honest.url.clone(), &b"honest"[..]));
    honest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_from_many_sources_lock_no_honest_peer_out() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let mut victim = victim(
        &relay,
        HandshakeLimits {
            timeout: LONG,
            ..HandshakeLimits::default()
        },
    )
    .await;
    let per_source = HandshakeLimits::DEFAULT_PER_SOURCE;
    // 6 sources x 10 dials: 48 admitted and stalled, 2 per source over the
    // limit.
    let attack = attack(&victim, 6, per_source + 2).await;
    let stalled = 6 * per_source;
    // As many as the old pool had slots: it would take no one else now.
    stats_when(&victim, "32 stalled", |s| s.in_flight >= 32).await;
    let first = honest_message_arrives(&relay, &mut victim).await;
    let before = stats_when(&victim, "48 stalled, the excess refused", |s| {
        s.in_flight == stalled && s.refused >= 12
    })
    .await;
    assert_eq!((before.timed_out, before.evicted), (0, 0), "{before:?}");

    let honest = honest_message_arrives(&relay, &mut victim).await;

    // The attacker's handshakes were stalled all along and still are:
    // we answered, the proxies dropped our answers.
    let after = victim.endpoint.handshake_stats();
    assert_eq!(after.in_flight, stalled, "{after:?}");
    assert_eq!((after.timed_out, after.evicted), (0, 0), "{after:?}");
    assert!(after.completed >= 2, "{after:?}");
    assert!(attack.replies_dropped() > 0);

    attack.stop().await;
    close_all(&[&victim.node, &first, &honest]).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_dropped_at_its_deadline() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let deadline = Duration::from_secs(2);
    let victim = victim(
        &relay,
        HandshakeLimits {
            timeout: deadline,
            ..HandshakeLimits::default()
        },
    )
    .await;
    let started = tokio::time::Instant::now();
    let attack = attack(&victim, 1, 4).await;
    let stats = stats_when(&victim, "4 handshakes timed out", |s| s.timed_out >= 4).await;
    // Not one before its deadline.
    assert!(started.elapsed() >= deadline);
    assert_eq!((stats.completed, stats.evicted, stats.refused), (0, 0, 0));

    attack.stop().await;
    close_all(&[&victim.node]).await;
    relay.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cap_drops_the_oldest_handshake_to_let_an_honest_peer_in() {
    let relay = EmbeddedRelay::start().await.unwrap();
    let cap = 16;
    let mut victim = victim(
        &relay,
        HandshakeLimits {
            timeout: LONG,
            per_source: 8,
            in_flight: cap,
        },
    )
    .await;
    // 3 sources x 8 dials: each source within its limit, the cap full.
    let attack = attack(&victim, 3, 8).await;
    stats_when(&victim, "the cap full", |s| s.in_flight == cap).await;

    let honest = honest_message_arrives(&relay, &mut victim).await;

    // 25 handshakes at least (the attacker's 24, ours) through 16 slots.
    let after = stats_when(&victim, "9 evicted", |s| s.evicted >= 9).await;
    assert!(after.completed >= 1, "{after:?}");
    assert_eq!((after.refused, after.timed_out), (0, 0), "{after:?}");
    assert!(after.in_flight <= cap, "{after:?}");

    attack.stop().await;
    close_all(&[&victim.node, &honest]).await;
    relay.shutdown().await.unwrap();
}
