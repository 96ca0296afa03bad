//! An in-process network implementing the core's traits, with fault
//! injection (feature `mem`).
//!
//! Endpoints get the URL `http://mem:1/<hex id>`. Streams are bounded
//! channels of chunks, so a slow reader slows its writer (backpressure).
//! Faults: refuse or delay connects ([`MemNetwork::refuse_connects`],
//! [`MemNetwork::delay_connects`]), fail writes
//! ([`MemNetwork::fail_writes`]), one-way latency per sender
//! ([`MemNetwork::set_latency`]), kill connections with or without an
//! application close ([`MemNetwork::kill`]), and a home relay known down
//! ([`MemEndpoint::set_home_relay_down`]). Raw bytes, malformed frames and
//! streams stalled mid-frame come from driving a [`MemConnection`] by hand.

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
use crate::traits::{
    Connection, DynConnection, DynRecvStream, DynSendStream, Endpoint, EndpointId, RecvStream,
    SendStream,
};

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
    delay: HashMap<EndpointId, Duration>,
    fail_writes: HashSet<EndpointId>,
    latency: HashMap<EndpointId, Duration>,
    pairs: Vec<Weak<Pair>>,
}

/// An in-process network of [`MemEndpoint`]s.
#[derive(Debug, Default)]
pub struct MemNetwork {
    state: Mutex<NetState>,
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
        let (delay, refuse, target) = {
            let s = self.net.state.lock().expect("poisoned");
            (
                s.delay.get(peer).copied(),
                s.refuse.contains(peer),
                s.endpoints.get(peer).cloned(),
            )
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if refuse {
            return Err(CoreError::io("connect", "connection refused"));
        }
        let target = target.ok_or_else(|| CoreError::io("connect", "no such endpoint"))?;
        let pair = Arc::new(Pair {
            a: self.id,
            b: *peer,
            closed: watch::Sender::new(None),
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
            self.id,
            *peer,
            pair.clone(),
            to_b,
            a_in,
            &self.net,
        ));
        let theirs = Arc::new(MemConnection::new(
            *peer, self.id, pair, to_a, b_in, &self.net,
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

/// One side of an in-memory connection.
pub struct MemConnection {
    local: EndpointId,
    remote: EndpointId,
    pair: Arc<Pair>,
    to_peer: mpsc::UnboundedSender<MemRecvStream>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<MemRecvStream>>,
    net: Weak<MemNetwork>,
}

impl fmt::Debug for MemConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemConnection")
            .field("remote", &&id_to_hex(&self.remote)[..16])
            .finish()
    }
}

impl MemConnection {
    fn new(
        local: EndpointId,
        remote: EndpointId,
        pair: Arc<Pair>,
        to_peer: mpsc::UnboundedSender<MemRecvStream>,
        incoming: mpsc::UnboundedReceiver<MemRecvStream>,
        net: &Arc<MemNetwork>,
    ) -> Self {
        Self {
            local,
            remote,
            pair,
            to_peer,
            incoming: tokio::sync::Mutex::new(incoming),
            net: Arc::downgrade(net),
        }
    }

    /// Opens a stream towards the peer, as the concrete type.
    pub fn open_raw(&self) -> Result<MemSendStream, CoreError> {
        if self.pair.is_closed() {
            return Err(CoreError::io("open_uni", "connection closed"));
        }
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let delivered = Arc::new(watch::Sender::new(0));
        self.to_peer
            .send(MemRecvStream {
                rx,
                pending: None,
                pair: self.pair.clone(),
                delivered: delivered.clone(),
            })
            .map_err(|_| CoreError::io("open_uni", "connection closed"))?;
        Ok(MemSendStream {
            tx: Some(tx),
            written: 0,
            delivered,
            pair: self.pair.clone(),
            from: self.local,
            net: self.net.clone(),
        })
    }

    /// Accepts the peer's next stream, as the concrete type.
    pub async fn accept_raw(&self) -> Result<MemRecvStream, CoreError> {
        let mut incoming = self.incoming.lock().await;
        tokio::select! {
            s = incoming.recv() => s.ok_or_else(|| CoreError::io("accept_uni", "connection closed")),
            () = self.pair.wait_closed() => Err(CoreError::io("accept_uni", "connection closed")),
        }
    }
}

impl Connection for MemConnection {
    fn remote_id(&self) -> EndpointId {
        self.remote
    }

    fn open_uni(&self) -> BoxFut<'_, Result<DynSendStream, CoreError>> {
        Box::pin(async move {
            // Opening a stream is asynchronous on a real network: let other
            // tasks run here, as they could there.
            tokio::task::yield_now().await;
            Ok(Box::new(self.open_raw()?) as DynSendStream)
        })
    }

    fn accept_uni(&self) -> BoxFut<'_, Result<DynRecvStream, CoreError>> {
        Box::pin(async move { Ok(Box::new(self.accept_raw().await?) as DynRecvStream) })
    }

    fn close(&self, code: CloseCode, reason: &[u8]) {
        self.pair.close(CloseInfo {
            by: Some(self.local),
            code,
            reason: Bytes::copy_from_slice(reason),
        });
    }

    fn remote_close(&self) -> Option<(CloseCode, Bytes)> {
        let closed = self.pair.closed.borrow();
        match &*closed {
            Some(CloseInfo {
                by: Some(by),
                code,
                reason,
            }) if *by == self.remote => Some((*code, reason.clone())),
            _ => None,
        }
    }

    fn is_direct(&self) -> bool {
        true
    }
}

/// Sending half of an in-memory stream.
pub struct MemSendStream {
    tx: Option<mpsc::Sender<(tokio::time::Instant, Bytes)>>,
    /// Chunks sent.
    written: u64,
    /// Chunks the reader took ([`u64::MAX`] once it dropped the stream):
    /// what `finish` waits for, as QUIC waits for the peer's ack.
    delivered: Arc<watch::Sender<u64>>,
    pair: Arc<Pair>,
    from: EndpointId,
    net: Weak<MemNetwork>,
}

impl fmt::Debug for MemSendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemSendStream").finish_non_exhaustive()
    }
}

impl MemSendStream {
    /// Writes raw bytes (for malformed or partial frames in tests).
    pub async fn write_raw(&mut self, bytes: Bytes) -> Result<(), CoreError> {
        self.write_chunks(&mut [bytes]).await
    }

    /// Finishes the stream: the reader sees its end after the buffered bytes.
    pub fn finish(&mut self) {
        self.tx = None;
    }
}

impl SendStream for MemSendStream {
    fn write_chunks<'a>(
        &'a mut self,
        chunks: &'a mut [Bytes],
    ) -> BoxFut<'a, Result<(), CoreError>> {
        Box::pin(async move {
            for chunk in chunks.iter_mut() {
                if self
                    .net
                    .upgrade()
                    .is_some_and(|n| n.write_fails(&self.from))
                {
                    return Err(CoreError::io("write", "injected write failure"));
                }
                let tx = self
                    .tx
                    .as_ref()
                    .ok_or_else(|| CoreError::io("write", "stream finished"))?;
                if chunk.is_empty() {
                    continue;
                }
                let latency = self
                    .net
                    .upgrade()
                    .map(|n| n.latency(&self.from))
                    .unwrap_or_default();
                let arrives = tokio::time::Instant::now() + latency;
                // Reserve first, so that a cancelled write took nothing
                // out of `chunks` (resumable, as the trait requires).
                // A closed connection takes nothing, as QUIC's does.
                let permit = tokio::select! {
                    biased;
                    () = self.pair.wait_closed() => return Err(CoreError::io("write", "connection closed")),
                    r = tx.reserve() => r.map_err(|_| CoreError::io("write", "stream stopped"))?,
                };
                permit.send((arrives, std::mem::take(chunk)));
                self.written += 1;
            }
            Ok(())
        })
    }

    fn finish(&mut self) -> BoxFut<'_, Result<(), CoreError>> {
        Box::pin(async move {
            self.tx = None;
            let written = self.written;
            let mut delivered = self.delivered.subscribe();
            tokio::select! {
                r = delivered.wait_for(|d| *d >= written) => {
                    r.map(drop).map_err(|_| CoreError::io("finish", "stream gone"))
                }
                () = self.pair.wait_closed() => Err(CoreError::io("finish", "connection closed")),
            }
        })
    }
}

/// Receiving half of an in-memory stream.
pub struct MemRecvStream {
    rx: mpsc::Receiver<(tokio::time::Instant, Bytes)>,
    delivered: Arc<watch::Sender<u64>>,
    /// A chunk taken off the channel that has not arrived yet (latency);
    /// kept here so that a cancelled read loses nothing.
    pending: Option<(tokio::time::Instant, Bytes)>,
    pair: Arc<Pair>,
}

impl Drop for MemRecvStream {
    fn drop(&mut self) {
        // A reader gone is a stream stopped: nothing more will be taken.
        self.delivered.send_replace(u64::MAX);
    }
}

impl fmt::Debug for MemRecvStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemRecvStream").finish_non_exhaustive()
    }
}

impl RecvStream for MemRecvStream {
    fn read_chunk(&mut self) -> BoxFut<'_, Result<Option<Bytes>, CoreError>> {
        Box::pin(async move {
            let next = async {
                if self.pending.is_none() {
                    self.pending = self.rx.recv().await;
                }
                let arrives = self.pending.as_ref()?.0;
                tokio::time::sleep_until(arrives).await;
                let chunk = self.pending.take().map(|(_, chunk)| chunk);
                self.delivered.send_modify(|d| *d = d.saturating_add(1));
                chunk
            };
            tokio::select! {
                biased;
                c = next => Ok(c),
                () = self.pair.wait_closed() => Err(CoreError::io("read", "connection closed")),
            }
        })
    }
}
