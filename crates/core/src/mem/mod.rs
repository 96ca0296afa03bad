//! An in-process network implementing the core's traits, with fault
//! injection (feature `mem`).
//!
//! Endpoints get the URL `http://mem:1/<hex id>`. Streams are bounded
//! channels of chunks, so a slow reader slows its writer (backpressure).
//! Faults: refuse, delay or drop connects ([`MemNetwork::refuse_connects`],
//! [`MemNetwork::delay_connects`], [`MemNetwork::fail_handshakes`]), fail writes
//! ([`MemNetwork::fail_writes`]), one-way latency per sender
//! ([`MemNetwork::set_latency`]), reads held while the bytes arrive
//! ([`MemNetwork::hold_reads`]), kill connections with or without an
//! application close ([`MemNetwork::kill`]), a crashed peer
//! ([`MemNetwork::crash`]), and a home relay known down
//! ([`MemEndpoint::set_home_relay_down`]). Raw bytes, malformed frames and
//! streams stalled mid-frame come from driving a [`MemConnection`] by hand.
//!
//! Wire versions: an endpoint speaks `kitsune2/0` only unless
//! [`MemNetwork::set_wire_version`] says more; a connection gets the
//! highest version both ends speak, as ALPN negotiation gives.
//! [`MemNetwork::set_stream_limit`] bounds the uni streams peers may have
//! open towards an endpoint at once, as QUIC's `max_concurrent_uni_streams`
//! (the trait's `open_uni` waits; [`MemConnection::open_raw`] ignores it,
//! as a hostile peer would).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use kitsune2_api::{BoxFut, Config, K2Error, K2Result, SpaceId, Url};
use tokio::sync::{mpsc, watch};

use crate::close::CloseCode;
use crate::error::CoreError;
use crate::peer_url::{PeerAddr, id_to_hex};
use crate::traits::{DynConnection, Endpoint, EndpointId};
use crate::version::WireVersion;

/// The uni streams peers may have open towards an endpoint at once unless
/// [`MemNetwork::set_stream_limit`] says otherwise: what the iroh adapter
/// gives QUIC, the default `max_message_streams` plus the control stream.
/// Without it a `/1` sender could open more message streams than the
/// reader takes, which QUIC never lets it do.
pub const DEFAULT_STREAM_LIMIT: usize = crate::config::DEFAULT_MAX_MESSAGE_STREAMS + 1;

/// Chunks a stream buffers before its writer waits.
const STREAM_CAPACITY: usize = 16;

/// Who closed a connection pair, and how.
#[derive(Debug, Clone)]
struct CloseInfo {
    /// The closing endpoint; `None` when the network dropped it.
    by: Option<EndpointId>,
    code: CloseCode,
    reason: Bytes,
}

/// State both sides of a connection share.
#[derive(Debug)]
struct Pair {
    a: EndpointId,
    b: EndpointId,
    closed: watch::Sender<Option<CloseInfo>>,
    /// Set by [`MemNetwork::crash`]: the side whose process is gone.
    crashed: Mutex<Option<(EndpointId, tokio::time::Instant)>>,
    /// The negotiated version.
    version: WireVersion,
}

impl Pair {
    fn close(&self, info: CloseInfo) {
        self.closed.send_if_modified(|c| {
            if c.is_some() {
                return false;
            }
            *c = Some(info);
            true
        });
    }

    fn crashed(&self) -> Option<EndpointId> {
        self.crashed.lock().expect("poisoned").map(|(id, _)| id)
    }

    /// How long `id`'s side has been crashed, if it has.
    fn crashed_for(&self, id: EndpointId) -> Option<Duration> {
        let crashed = *self.crashed.lock().expect("poisoned");
        crashed
            .filter(|(who, _)| *who == id)
            .map(|(_, at)| at.elapsed())
    }

    fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives in `self`: the wait ends only by a close.
        let _ = rx.wait_for(Option::is_some).await;
    }
}

#[derive(Debug, Default)]
struct NetState {
    endpoints: HashMap<EndpointId, mpsc::UnboundedSender<DynConnection>>,
    refuse: HashSet<EndpointId>,
    /// Connects to each id still to fail as a dropped handshake.
    handshake_failures: HashMap<EndpointId, usize>,
    delay: HashMap<EndpointId, Duration>,
    fail_writes: HashSet<EndpointId>,
    latency: HashMap<EndpointId, Duration>,
    versions: HashMap<EndpointId, WireVersion>,
    /// Set by [`MemNetwork::set_stream_limit`]; unset: [`DEFAULT_STREAM_LIMIT`].
    stream_limits: HashMap<EndpointId, Option<usize>>,
    pairs: Vec<Weak<Pair>>,
    /// Connects under way (the delay of [`MemNetwork::delay_connects`]
    /// is the handshake), and the most there were at once.
    connects: (usize, usize),
}

/// Counts a connect as under way until dropped.
struct ConnectUnderWay<'a>(&'a MemNetwork);

impl Drop for ConnectUnderWay<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("poisoned").connects.0 -= 1;
    }
}

/// An in-process network of [`MemEndpoint`]s.
#[derive(Debug, Default)]
pub struct MemNetwork {
    state: Mutex<NetState>,
    /// Endpoints whose stream reads are held (see [`MemNetwork::hold_reads`]).
    held_reads: watch::Sender<HashSet<EndpointId>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds an endpoint with `id`, reachable at `http://mem:1/<hex id>`.
    pub fn endpoint(self: &Arc<Self>, id: EndpointId) -> Arc<MemEndpoint> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state
            .lock()
            .expect("poisoned")
            .endpoints
            .insert(id, tx);
        Arc::new(MemEndpoint {
            id,
            net: self.clone(),
            url: watch::Sender::new(Some(mem_url(&id))),
            incoming: tokio::sync::Mutex::new(rx),
            relay_down: AtomicBool::new(false),
            space_relays: Mutex::new(HashMap::new()),
        })
    }

    /// Makes connects to `to` fail at once (or succeed again).
    pub fn refuse_connects(&self, to: EndpointId, refuse: bool) {
        let mut s = self.state.lock().expect("poisoned");
        if refuse {
            s.refuse.insert(to);
        } else {
            s.refuse.remove(&to);
        }
    }

    /// Makes the next `n` connects to `to` fail, after their delay, as a
    /// handshake the peer dropped ([`CoreError::HandshakeFailed`]: a busy
    /// peer, lost packets), which the core retries.
    pub fn fail_handshakes(&self, to: EndpointId, n: usize) {
        self.state
            .lock()
            .expect("poisoned")
            .handshake_failures
            .insert(to, n);
    }

    /// Delays connects to `to` by `delay` (`None`: no delay).
    pub fn delay_connects(&self, to: EndpointId, delay: Option<Duration>) {
        let mut s = self.state.lock().expect("poisoned");
        match delay {
            Some(d) => s.delay.insert(to, d),
            None => s.delay.remove(&to),
        };
    }

    /// Delays every chunk `from` writes by `latency` before its reader gets
    /// it (`None`: no delay), keeping order: a one-way network latency.
    pub fn set_latency(&self, from: EndpointId, latency: Option<Duration>) {
        let mut s = self.state.lock().expect("poisoned");
        match latency {
            Some(d) => s.latency.insert(from, d),
            None => s.latency.remove(&from),
        };
    }

    fn latency(&self, from: &EndpointId) -> Duration {
        self.state
            .lock()
            .expect("poisoned")
            .latency
            .get(from)
            .copied()
            .unwrap_or_default()
    }

    /// Makes `id` speak every version up to `max` (the default is
    /// [`WireVersion::V0`] only). Applies to connections made afterwards.
    pub fn set_wire_version(&self, id: EndpointId, max: WireVersion) {
        self.state
            .lock()
            .expect("poisoned")
            .versions
            .insert(id, max);
    }

    /// Lets peers have at most `limit` uni streams open towards `id` at
    /// once (`None`: no limit; the default is [`DEFAULT_STREAM_LIMIT`]), as QUIC's
    /// `max_concurrent_uni_streams`: a stream counts until `id`'s reader
    /// has dropped it. Applies to connections made afterwards.
    pub fn set_stream_limit(&self, id: EndpointId, limit: Option<usize>) {
        let mut s = self.state.lock().expect("poisoned");
        s.stream_limits.insert(id, limit);
    }

    /// The most connects that were under way at once on this network
    /// (a delayed connect is under way for its delay).
    pub fn peak_concurrent_connects(&self) -> usize {
        self.state.lock().expect("poisoned").connects.1
    }

    /// Holds every stream read by `id` (or lets them go again): a read
    /// waits, while the bytes keep arriving and are acknowledged to their
    /// writer as received, and `accept_uni` still reports the
    /// connection's end. A reader task the operating system did not run
    /// for a while: it polled its stream before the peer's last bytes
    /// arrived and the connection's end after the peer closed.
    pub fn hold_reads(&self, id: EndpointId, hold: bool) {
        self.held_reads.send_modify(|held| {
            if hold {
                held.insert(id);
            } else {
                held.remove(&id);
            }
        });
    }

    /// Waits while `id`'s reads are held.
    async fn reads_released(&self, id: &EndpointId) {
        let mut rx = self.held_reads.subscribe();
        // The sender lives in `self`: the wait ends only by a release.
        let _ = rx.wait_for(|held| !held.contains(id)).await;
    }

    /// Makes every stream write by `from` fail (or work again).
    pub fn fail_writes(&self, from: EndpointId, fail: bool) {
        let mut s = self.state.lock().expect("poisoned");
        if fail {
            s.fail_writes.insert(from);
        } else {
            s.fail_writes.remove(&from);
        }
    }

    /// Ends every connection between `a` and `b`. With `close`, `a` sees it
    /// as `b`'s application close; without, neither side sees one (as on a
    /// timeout). Returns how many connections ended.
    pub fn kill(&self, a: EndpointId, b: EndpointId, close: Option<(CloseCode, Bytes)>) -> usize {
        let pairs: Vec<Arc<Pair>> = {
            let mut s = self.state.lock().expect("poisoned");
            s.pairs.retain(|p| p.strong_count() > 0);
            s.pairs.iter().filter_map(Weak::upgrade).collect()
        };
        let mut n = 0;
        for p in pairs {
            if !p.is_closed() && ((p.a == a && p.b == b) || (p.a == b && p.b == a)) {
                let info = match &close {
                    Some((code, reason)) => CloseInfo {
                        by: Some(b),
                        code: *code,
                        reason: reason.clone(),
                    },
                    None => CloseInfo {
                        by: None,
                        code: CloseCode::Unspecified,
                        reason: Bytes::from_static(b"connection lost"),
                    },
                };
                p.close(info);
                n += 1;
            }
        }
        n
    }

    /// Takes `id`'s process as crashed for every live connection it has:
    /// its peers' [`probe_gone`](crate::traits::Connection::probe_gone)
    /// answers `true` from now on (nothing will arrive from it), where it
    /// answers `false` for a live peer. A restart under the same key is
    /// [`endpoint`](Self::endpoint) with the same id (new connections go to
    /// the new endpoint). Returns how many connections it marked.
    pub fn crash(&self, id: EndpointId) -> usize {
        let s = self.state.lock().expect("poisoned");
        let mut n = 0;
        for p in s.pairs.iter().filter_map(Weak::upgrade) {
            if !p.is_closed() && (p.a == id || p.b == id) {
                *p.crashed.lock().expect("poisoned") = Some((id, tokio::time::Instant::now()));
                n += 1;
            }
        }
        n
    }

    fn write_fails(&self, from: &EndpointId) -> bool {
        self.state
            .lock()
            .expect("poisoned")
            .fail_writes
            .contains(from)
    }
}

/// The peer URL of a mem endpoint.
pub fn mem_url(id: &EndpointId) -> Url {
    // INVARIANT: the format is a canonical kitsune2 url for any id.
    Url::from_str(format!("http://mem:1/{}", id_to_hex(id))).expect("canonical mem url")
}

/// One endpoint on a [`MemNetwork`].
pub struct MemEndpoint {
    id: EndpointId,
    net: Arc<MemNetwork>,
    url: watch::Sender<Option<Url>>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<DynConnection>>,
    relay_down: AtomicBool,
    /// The relay each space names: `configure_for_space` answers with this
    /// endpoint's URL on it.
    space_relays: Mutex<HashMap<SpaceId, String>>,
}

impl fmt::Debug for MemEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemEndpoint")
            .field("id", &&id_to_hex(&self.id)[..16])
            .finish()
    }
}

impl MemEndpoint {
    /// Changes the URL this endpoint publishes.
    pub fn set_url(&self, url: Option<Url>) {
        self.url.send_replace(url);
    }

    /// Reports the home relay as known down (or up again).
    pub fn set_home_relay_down(&self, down: bool) {
        self.relay_down.store(down, Ordering::SeqCst);
    }

    /// Makes `configure_for_space(space_id, _)` put this endpoint on `relay`
    /// (a relay URL ending in `/`, e.g. `http://mem:2/`) for that space, or
    /// on none with `None`. A relay that makes no valid URL is a
    /// configuration error.
    pub fn set_space_relay(&self, space_id: SpaceId, relay: Option<&str>) {
        let mut relays = self.space_relays.lock().expect("poisoned");
        match relay {
            Some(r) => relays.insert(space_id, r.to_owned()),
            None => relays.remove(&space_id),
        };
    }

    /// Connects to `peer` as a raw connection, for tests that speak the
    /// protocol by hand.
    pub async fn connect_raw(&self, peer: &EndpointId) -> Result<Arc<MemConnection>, CoreError> {
        let (delay, refuse, target, version, limits) = {
            let s = self.net.state.lock().expect("poisoned");
            let version = |id| s.versions.get(id).copied().unwrap_or_default();
            let limit = |id| {
                s.stream_limits
                    .get(id)
                    .copied()
                    .unwrap_or(Some(DEFAULT_STREAM_LIMIT))
            };
            (
                s.delay.get(peer).copied(),
                s.refuse.contains(peer),
                s.endpoints.get(peer).cloned(),
                version(&self.id).min(version(peer)),
                (limit(peer), limit(&self.id)),
            )
        };
        {
            let mut s = self.net.state.lock().expect("poisoned");
            s.connects.0 += 1;
            s.connects.1 = s.connects.1.max(s.connects.0);
        }
        let _under_way = ConnectUnderWay(&self.net);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if refuse {
            return Err(CoreError::io("connect", "connection refused"));
        }
        {
            let mut s = self.net.state.lock().expect("poisoned");
            if let Some(n) = s.handshake_failures.get_mut(peer)
                && *n > 0
            {
                *n -= 1;
                return Err(CoreError::handshake_failed(
                    "the peer dropped the handshake",
                ));
            }
        }
        let target = target.ok_or_else(|| CoreError::io("connect", "no such endpoint"))?;
        let pair = Arc::new(Pair {
            a: self.id,
            b: *peer,
            closed: watch::Sender::new(None),
            crashed: Mutex::new(None),
            version,
        });
        self.net
            .state
            .lock()
            .expect("poisoned")
            .pairs
            .push(Arc::downgrade(&pair));
        let (to_b, b_in) = mpsc::unbounded_channel();
        let (to_a, a_in) = mpsc::unbounded_channel();
        let ours = Arc::new(MemConnection::new(
            (self.id, *peer),
            pair.clone(),
            (to_b, a_in),
            limits.0,
            &self.net,
        ));
        let theirs = Arc::new(MemConnection::new(
            (*peer, self.id),
            pair,
            (to_a, b_in),
            limits.1,
            &self.net,
        ));
        target
            .send(theirs)
            .map_err(|_| CoreError::io("connect", "endpoint closed"))?;
        Ok(ours)
    }
}

impl Endpoint for MemEndpoint {
    fn local_id(&self) -> EndpointId {
        self.id
    }

    fn watch_url(&self) -> watch::Receiver<Option<Url>> {
        self.url.subscribe()
    }

    fn accept(&self) -> BoxFut<'_, Option<Result<DynConnection, CoreError>>> {
        Box::pin(async move { self.incoming.lock().await.recv().await.map(Ok) })
    }

    fn connect<'a>(&'a self, peer: &'a PeerAddr) -> BoxFut<'a, Result<DynConnection, CoreError>> {
        Box::pin(async move { Ok(self.connect_raw(&peer.id).await? as DynConnection) })
    }

    fn is_home_relay_known_down(&self) -> bool {
        self.relay_down.load(Ordering::SeqCst)
    }

    fn configure_for_space(
        &self,
        space_id: SpaceId,
        _config: &Config,
    ) -> BoxFut<'_, K2Result<Option<Url>>> {
        let relay = self
            .space_relays
            .lock()
            .expect("poisoned")
            .get(&space_id)
            .cloned();
        let id = self.id;
        Box::pin(async move {
            let Some(relay) = relay else {
                return Ok(None);
            };
            let url = Url::from_str(format!("{relay}{}", id_to_hex(&id))).map_err(|e| {
                K2Error::other_src(format!("space relay {relay:?} makes no peer url"), e)
            })?;
            Ok(Some(url))
        })
    }

    fn close(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            self.net
                .state
                .lock()
                .expect("poisoned")
                .endpoints
                .remove(&self.id);
            self.incoming.lock().await.close();
        })
    }
}

mod stream;

pub use stream::{MemConnection, MemRecvStream, MemSendStream};
