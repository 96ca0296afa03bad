//! [`CoreTransport`]: `kitsune2_api::TxImp` over the [`Endpoint`] trait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, CloseOnce, Config, K2Result, SpaceId, Timestamp, TransportConnectionStats,
    TransportStats, TxImp, TxImpHnd, Url,
};
use kitsune2_iroh_codec::{
    CodecError, Frame, FrameOrder, FrameType, Limits, StreamDecoder, encode_header,
};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::close::{CloseCode, TRANSPORT_CLOSED_REASON, TRANSPORT_DROPPED_REASON};
use crate::config::CoreConfig;
use crate::conn::{Conn, ConnState};
use crate::error::CoreError;
use crate::peer_url::{PeerAddr, id_to_hex};
use crate::registry::{Activation, DialRegistration, Registry};
use crate::traits::{DynConnection, DynRecvStream, Endpoint, EndpointId, WallClock};

/// The kitsune2 transport implementation, generic over an [`Endpoint`].
///
/// # Usage
///
/// Build it inside a tokio runtime with [`CoreTransport::create`], hand the
/// returned `Arc` to `kitsune2_api::DefaultTransport::create` as the
/// `DynTxImp`, and call [`TxImp::close`] when done.
///
/// # Invariants
///
/// - Data goes to a peer only over a connection on which both preflights
///   were exchanged, first frame first.
/// - Frames to one peer keep their order; sends to different peers never
///   wait on each other.
/// - `peer_disconnect` fires at most once per connection that became
///   active, never for a superseded one.
/// - Per-peer state exists only while a peer has a connection or a send in
///   progress.
/// - Dropping it without `close` aborts its tasks and closes its
///   connections; it needs no runtime to do so.
#[derive(Debug)]
pub struct CoreTransport {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    endpoint: Arc<dyn Endpoint>,
    hnd: Arc<TxImpHnd>,
    config: CoreConfig,
    limits: Limits,
    clock: Arc<dyn WallClock>,
    local_id: EndpointId,
    url: tokio::sync::watch::Receiver<Option<Url>>,
    /// Our URL in each space that has one of its own (a per-space relay).
    space_urls: Mutex<HashMap<SpaceId, SpaceUrl>>,
    registry: Mutex<Registry>,
    /// Woken whenever a connection becomes active.
    activated: Notify,
    dial_locks: Mutex<HashMap<EndpointId, Arc<tokio::sync::Mutex<()>>>>,
    closed: AtomicBool,
    close_once: CloseOnce,
    tasks: Mutex<Vec<AbortHandle>>,
    serial: AtomicU64,
}

/// Our URL in one space, with its relay part for matching peers.
#[derive(Debug, Clone)]
struct SpaceUrl {
    /// The relay part, as [`PeerAddr::relay_url`] gives it.
    relay_url: String,
    /// The whole URL.
    url: Url,
}

/// What the reader got next.
enum Incoming {
    /// A new stream from the peer (or the connection's end).
    Stream(Result<DynRecvStream, CoreError>),
    /// A read on the current stream.
    Chunk(Result<Option<Bytes>, CoreError>),
}

/// How a stream's reading ended, when not cleanly.
enum StreamEnd {
    /// The whole connection must go.
    Fatal(CoreError),
    /// Only this stream is done; wait for the peer's next one.
    Stream(CoreError),
}

impl CoreTransport {
    /// Starts the transport: the accept task and the task that publishes
    /// the endpoint's URL.
    ///
    /// # Errors
    ///
    /// [`CoreError::Codec`] when `config.max_frame_bytes` is below the
    /// frame header size.
    pub fn create(
        endpoint: Arc<dyn Endpoint>,
        hnd: Arc<TxImpHnd>,
        config: CoreConfig,
        clock: Arc<dyn WallClock>,
    ) -> Result<Arc<Self>, CoreError> {
        let limits = Limits::new(config.max_frame_bytes)?;
        let shared = Arc::new(Shared {
            local_id: endpoint.local_id(),
            url: endpoint.watch_url(),
            space_urls: Mutex::new(HashMap::new()),
            endpoint,
            hnd,
            config,
            limits,
            clock,
            registry: Mutex::new(Registry::default()),
            activated: Notify::new(),
            dial_locks: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            close_once: CloseOnce::new(),
            tasks: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
        });
        let accept = tokio::spawn(Shared::accept_task(shared.clone())).abort_handle();
        let url = tokio::spawn(Shared::url_task(shared.clone())).abort_handle();
        shared.tasks.lock().expect("poisoned").extend([accept, url]);
        Ok(Arc::new(Self { shared }))
    }

    /// This endpoint's id.
    pub fn local_id(&self) -> EndpointId {
        self.shared.local_id
    }

    /// Peers with any per-peer state (connections or dials); for tests
    /// that check nothing leaks.
    pub fn tracked_peer_count(&self) -> usize {
        self.shared.registry.lock().expect("poisoned").peer_count()
            + self.shared.dial_locks.lock().expect("poisoned").len()
    }
}

/// Dropping without [`TxImp::close`] is a crash as peers see it, as with
/// `kitsune2_transport_iroh`: every connection is closed with code 0
/// ([`CloseCode::Unspecified`]), so peers report it lost and mark this node
/// unresponsive. Only `close()` says goodbye gracefully.
///
/// It needs no runtime and never panics. Inside a tokio runtime it hands the
/// endpoint to a task that closes it, bounded by [`DROP_FLUSH_TIMEOUT`], so
/// the close packets actually leave before the sockets go; outside one, the
/// close is best effort.
impl Drop for CoreTransport {
    fn drop(&mut self) {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in self.shared.tasks.lock().expect("poisoned").drain(..) {
            t.abort();
        }
        let conns = self.shared.registry.lock().expect("poisoned").drain();
        for (c, _) in conns {
            c.abort_reader();
            c.close_local(CloseCode::Unspecified, TRANSPORT_DROPPED_REASON);
        }
        self.shared.dial_locks.lock().expect("poisoned").clear();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let endpoint = self.shared.endpoint.clone();
            rt.spawn(async move {
                if timeout(DROP_FLUSH_TIMEOUT, endpoint.close()).await.is_err() {
                    debug!("endpoint close after drop timed out");
                }
            });
        }
    }
}

/// How long a dropped transport's endpoint gets to send its close packets.
pub const DROP_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Shared {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.clock.now_micros())
    }

    fn check_open(&self) -> Result<(), CoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CoreError::Closed);
        }
        Ok(())
    }

    fn new_conn(&self, connection: DynConnection, dialed_by_us: bool) -> Arc<Conn> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let opened_at_s = u64::try_from(self.clock.now_micros() / 1_000_000).unwrap_or(0);
        Arc::new(Conn::new(serial, connection, dialed_by_us, opened_at_s))
    }

    /// The URL to present in a preflight to `peer`: our URL on the peer's
    /// relay when a space gave us one there, else the global URL.
    ///
    /// A peer on a relay we know nothing of gets the global URL, at which
    /// it can reach us whatever relay it is on.
    fn own_url_for(&self, peer: &PeerAddr) -> Result<Url, CoreError> {
        let on_peer_relay = self
            .space_urls
            .lock()
            .expect("poisoned")
            .values()
            .find(|s| s.relay_url == peer.relay_url)
            .map(|s| s.url.clone());
        if let Some(url) = on_peer_relay {
            debug!(peer = %peer.url, own = %url, "presenting our per-space url");
            return Ok(url);
        }
        self.url.borrow().clone().ok_or(CoreError::NoLocalUrl)
    }

    /// Records and publishes the URL the endpoint gave `space_id`, if any.
    async fn space_configured(&self, space_id: SpaceId, url: Option<Url>) -> K2Result<()> {
        let Some(url) = url else {
            return Ok(());
        };
        let addr = PeerAddr::parse(&url)?;
        if addr.id != self.local_id {
            return Err(CoreError::InvalidPeerUrl {
                url: url.as_str().to_owned(),
                why: "per-space url names another endpoint than this one",
            }
            .into());
        }
        info!(space = ?space_id, %url, "per-space listening address");
        self.space_urls.lock().expect("poisoned").insert(
            space_id.clone(),
            SpaceUrl {
                relay_url: addr.relay_url,
                url: url.clone(),
            },
        );
        self.hnd.new_listening_address(url, Some(&space_id)).await;
        Ok(())
    }

    async fn unconfigure_for_space(&self, space_id: SpaceId) -> K2Result<()> {
        let removed = self.space_urls.lock().expect("poisoned").remove(&space_id);
        if removed.is_some() {
            // The space hears the global URL again.
            self.hnd.unmark_per_space_managed(&space_id);
        }
        self.endpoint.unconfigure_for_space(space_id).await
    }

    async fn mark_unresponsive(&self, url: &Url) {
        if self.endpoint.is_home_relay_known_down() {
            debug!(%url, "home relay down: not marking peer unresponsive");
            return;
        }
        if let Err(e) = self.hnd.set_unresponsive(url.clone(), self.now()).await {
            warn!(%url, ?e, "set_unresponsive failed");
        }
    }

    fn spawn_reader(self: &Arc<Self>, conn: &Arc<Conn>) {
        let span = info_span!(
            "conn",
            serial = conn.serial,
            peer = %&id_to_hex(&conn.remote_id)[..16],
            dialed = conn.dialed_by_us,
        );
        let handle = tokio::spawn(Self::reader_task(self.clone(), conn.clone()).instrument(span))
            .abort_handle();
        *conn.reader.lock().expect("poisoned") = Some(handle);
    }

    async fn url_task(self: Arc<Self>) {
        let mut rx = self.url.clone();
        loop {
            let url = rx.borrow_and_update().clone();
            if let Some(url) = url {
                info!(%url, "listening address");
                self.hnd.new_listening_address(url, None).await;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn accept_task(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let connection = match incoming {
                Ok(c) => c,
                Err(e) => {
                    debug!(?e, "incoming connection failed");
                    continue;
                }
            };
            if self.closed.load(Ordering::SeqCst) {
                connection.close(CloseCode::Graceful, TRANSPORT_CLOSED_REASON.as_bytes());
                continue;
            }
            let conn = self.new_conn(connection, false);
            self.registry.lock().expect("poisoned").insert(conn.clone());
            self.spawn_reader(&conn);
        }
        debug!("endpoint closed; accept task ends");
    }

    async fn reader_task(self: Arc<Self>, conn: Arc<Conn>) {
        let exit = self.read_connection(&conn).await;
        self.cleanup(&conn, exit).await;
    }

    /// Reads the peer's streams until the connection must end.
    ///
    /// The peer sends on one stream at a time; when it opens another (after
    /// its previous one failed), the old one is abandoned. Before the peer's
    /// preflight, everything is bounded by the preflight timeout and every
    /// error ends the connection; after it, a frame or read error ends only
    /// that stream.
    async fn read_connection(&self, conn: &Arc<Conn>) -> CoreError {
        let deadline = Instant::now() + self.config.preflight_timeout;
        let mut current: Option<(DynRecvStream, StreamDecoder)> = None;
        loop {
            let pre = conn.remote_url().is_none();
            let next = async {
                match current.as_mut() {
                    None => Incoming::Stream(conn.connection.accept_uni().await),
                    Some((stream, _)) => tokio::select! {
                        biased;
                        r = stream.read_chunk() => Incoming::Chunk(r),
                        r = conn.connection.accept_uni() => Incoming::Stream(r),
                    },
                }
            };
            let next = if pre {
                match timeout_at(deadline, next).await {
                    Ok(n) => n,
                    Err(_) => {
                        return CoreError::PreflightTimeout {
                            secs: self.config.preflight_timeout.as_secs(),
                        };
                    }
                }
            } else {
                next.await
            };
            let result = match next {
                Incoming::Stream(Ok(stream)) => {
                    if current.is_some() {
                        debug!("peer opened a new stream; abandoning its previous one");
                    }
                    let order = if pre {
                        FrameOrder::PreflightThenData
                    } else {
                        FrameOrder::Any
                    };
                    current = Some((stream, StreamDecoder::with_order(self.limits, order)));
                    continue;
                }
                Incoming::Stream(Err(e)) => return e,
                Incoming::Chunk(chunk) => {
                    // INVARIANT: chunks come only from the current stream.
                    let (_, decoder) = current.as_mut().expect("a chunk has a stream");
                    self.on_chunk(conn, decoder, chunk).await
                }
            };
            match result {
                Ok(true) => {}
                Ok(false) => {
                    debug!("peer finished its stream");
                    current = None;
                }
                Err(e) if conn.remote_url().is_none() || matches!(e, StreamEnd::Fatal(_)) => {
                    return match e {
                        StreamEnd::Fatal(e) | StreamEnd::Stream(e) => e,
                    };
                }
                Err(StreamEnd::Stream(e) | StreamEnd::Fatal(e)) => {
                    if matches!(e, CoreError::Codec(_)) {
                        warn!(%e, "closing the peer's stream");
                    } else {
                        debug!(%e, "the peer's stream failed");
                    }
                    current = None;
                }
            }
        }
    }

    /// Handles one read result of the current stream: `Ok(true)` to keep
    /// reading it, `Ok(false)` when it ended cleanly.
    async fn on_chunk(
        &self,
        conn: &Arc<Conn>,
        decoder: &mut StreamDecoder,
        chunk: Result<Option<Bytes>, CoreError>,
    ) -> Result<bool, StreamEnd> {
        match chunk {
            Ok(Some(bytes)) => decoder.feed(bytes),
            Ok(None) => {
                return decoder
                    .finish()
                    .map(|()| false)
                    .map_err(|e| StreamEnd::Stream(e.into()));
            }
            Err(e) => return Err(StreamEnd::Stream(e)),
        }
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| StreamEnd::Stream(e.into()))?
        {
            match frame {
                Frame::Preflight(p) if conn.remote_url().is_none() => {
                    self.on_preflight(conn, p.url, p.data)
                        .await
                        .map_err(StreamEnd::Fatal)?;
                }
                Frame::Preflight(_) => {
                    return Err(StreamEnd::Stream(CodecError::UnexpectedPreflight.into()));
                }
                Frame::Data(data) => self.on_data(conn, data).await,
            }
        }
        Ok(true)
    }

    async fn on_data(&self, conn: &Arc<Conn>, data: Bytes) {
        // INVARIANT: data frames are decoded only after the preflight, which
        // sets the URL.
        let url = conn
            .remote_url()
            .expect("data only after preflight")
            .clone();
        conn.counters.recv_messages.fetch_add(1, Ordering::Relaxed);
        conn.counters
            .recv_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Err(e) = self.hnd.recv_data(url.clone(), data).await {
            debug!(%url, ?e, "kitsune2 handler refused a message");
        }
    }

    /// Checks the peer's preflight, answers it when we accepted, and resolves
    /// the connection against the peer's others.
    async fn on_preflight(
        &self,
        conn: &Arc<Conn>,
        url: String,
        data: Bytes,
    ) -> Result<(), CoreError> {
        let url = Url::from_str(&url).map_err(|_| CoreError::InvalidPeerUrl {
            url: url.clone(),
            why: "preflight url is not a kitsune2 url",
        })?;
        let addr = PeerAddr::parse(&url)?;
        if addr.id != conn.remote_id {
            return Err(CoreError::PreflightIdentityMismatch {
                url: url.as_str().to_owned(),
                authenticated: id_to_hex(&conn.remote_id),
            });
        }
        debug!(%url, "preflight received");
        self.hnd
            .recv_data(url.clone(), data)
            .await
            .map_err(CoreError::from_handler)?;
        conn.set_remote_url(url.clone());
        if conn.dialed_by_us {
            return self.activate(conn);
        }
        let own_url = self.own_url_for(&addr)?;
        // We accepted: answer with our own preflight, holding the send lock
        // from before activation so that it is the stream's first frame.
        let ours = self
            .hnd
            .peer_connect(url.clone())
            .await
            .map_err(CoreError::from_handler)?;
        let mut guard = conn.send.lock().await;
        self.activate(conn)?;
        conn.write_frame_locked(
            &mut guard,
            Frame::preflight(own_url.as_str(), ours),
            &self.limits,
        )
        .await?;
        info!(%url, "connection active (accepted)");
        Ok(())
    }

    fn activate(&self, conn: &Arc<Conn>) -> Result<(), CoreError> {
        let outcome = self
            .registry
            .lock()
            .expect("poisoned")
            .activate(conn, &self.local_id);
        match outcome {
            Activation::Won => {
                self.activated.notify_waiters();
                Ok(())
            }
            Activation::Lost => Err(CoreError::ConnectionClosed {
                code: Some(CloseCode::Superseded),
                reason: "superseded by a preferred connection".to_owned(),
            }),
        }
    }

    /// Ends a connection whose reader stopped, and reports it.
    async fn cleanup(&self, conn: &Arc<Conn>, exit: CoreError) {
        // A send may have taken a deliberately closed connection out of the
        // registry already (to redial); it was still active until now.
        let was_active = self.registry.lock().expect("poisoned").remove(conn)
            || conn.state() == ConnState::Active;
        let remote_close = conn.connection.remote_close();
        let superseded = conn.state() == ConnState::Superseded
            || matches!(remote_close, Some((CloseCode::Superseded, _)));
        if superseded {
            conn.set_state(ConnState::Superseded);
            debug!("superseded connection ended");
            return;
        }
        conn.set_state(ConnState::Closed);
        conn.close_failed(&exit.to_string());
        if !was_active || conn.is_locally_closed() {
            debug!(%exit, "connection ended before it was active, or closed by us");
            return;
        }
        // INVARIANT: a connection becomes active only after its preflight
        // set the URL.
        let url = conn
            .remote_url()
            .expect("active connections have a url")
            .clone();
        match remote_close {
            Some((CloseCode::Graceful, reason)) => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                info!(%url, %reason, "peer disconnected");
                if conn.take_report() {
                    self.hnd
                        .peer_disconnect(url, (!reason.is_empty()).then_some(reason));
                }
            }
            _ => {
                warn!(%url, %exit, "connection lost");
                if conn.take_report() {
                    self.hnd
                        .peer_disconnect(url.clone(), Some(exit.to_string()));
                }
                if !matches!(exit, CoreError::NoLocalAgents) {
                    self.mark_unresponsive(&url).await;
                }
            }
        }
    }

    /// An active connection to `addr`, made if needed.
    async fn connection_for(self: &Arc<Self>, addr: &PeerAddr) -> Result<Arc<Conn>, CoreError> {
        let active = self.registry.lock().expect("poisoned").active(&addr.id);
        if let Some(c) = active {
            return Ok(c);
        }
        let lock = self
            .dial_locks
            .lock()
            .expect("poisoned")
            .entry(addr.id)
            .or_default()
            .clone();
        let result = async {
            let _dialing = lock.lock().await;
            let active = self.registry.lock().expect("poisoned").active(&addr.id);
            match active {
                Some(c) => Ok(c),
                None => self.dial(addr).await,
            }
        }
        .await;
        // Drop the per-peer lock entry once nobody else holds it.
        let mut locks = self.dial_locks.lock().expect("poisoned");
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&addr.id);
        }
        result
    }

    /// Dials, sends our preflight and waits for the connection to resolve.
    async fn dial(self: &Arc<Self>, addr: &PeerAddr) -> Result<Arc<Conn>, CoreError> {
        let url = &addr.url;
        if self.endpoint.is_home_relay_known_down() {
            return Err(CoreError::RelayDown {
                peer: url.as_str().to_owned(),
            });
        }
        let own_url = self.own_url_for(addr)?;
        let preflight = self
            .hnd
            .peer_connect(url.clone())
            .await
            .map_err(CoreError::from_handler)?;
        let connection =
            match timeout(self.config.connect_timeout, self.endpoint.connect(addr)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    self.mark_unresponsive(url).await;
                    return Err(e);
                }
                Err(_) => {
                    self.mark_unresponsive(url).await;
                    return Err(CoreError::ConnectTimeout {
                        peer: url.as_str().to_owned(),
                        secs: self.config.connect_timeout.as_secs(),
                    });
                }
            };
        if connection.remote_id() != addr.id {
            connection.close(CloseCode::Unspecified, b"unexpected peer identity");
            return Err(CoreError::io(
                "connect",
                "backend returned a connection to another endpoint",
            ));
        }
        let conn = self.new_conn(connection, true);
        let registration = self.registry.lock().expect("poisoned").register_dial(&conn);
        if let DialRegistration::UseActive(active) = registration {
            debug!(%url, "peer connected to us meanwhile; using that connection");
            return Ok(active);
        }
        self.spawn_reader(&conn);
        info!(%url, serial = conn.serial, "connected; sending preflight");
        {
            let mut guard = conn.send.lock().await;
            if let Err(e) = conn
                .write_frame_locked(
                    &mut guard,
                    Frame::preflight(own_url.as_str(), preflight),
                    &self.limits,
                )
                .await
            {
                if conn.state() != ConnState::Superseded {
                    conn.close_failed(&e.to_string());
                    return Err(e);
                }
                // The peer's own dial won while ours was opening its stream:
                // wait for that connection instead.
                debug!(%url, %e, "dial superseded before its preflight went out");
            }
        }
        self.await_usable(conn, addr).await
    }

    /// Waits for a dialed connection's resolution; if it lost, for the
    /// winner. Bounded by the preflight timeout.
    async fn await_usable(&self, conn: Arc<Conn>, addr: &PeerAddr) -> Result<Arc<Conn>, CoreError> {
        let deadline = Instant::now() + self.config.preflight_timeout;
        let timeout_err = CoreError::PreflightTimeout {
            secs: self.config.preflight_timeout.as_secs(),
        };
        match timeout_at(deadline, conn.resolved()).await {
            Err(_) => {
                conn.close_failed("preflight timeout");
                self.mark_unresponsive(&addr.url).await;
                Err(timeout_err)
            }
            Ok(ConnState::Active) => Ok(conn),
            Ok(ConnState::Superseded) => {
                debug!("dial superseded; waiting for the preferred connection");
                loop {
                    let notified = self.activated.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if let Some(c) = self.registry.lock().expect("poisoned").active(&addr.id) {
                        return Ok(c);
                    }
                    if timeout_at(deadline, notified).await.is_err() {
                        return Err(timeout_err);
                    }
                }
            }
            Ok(ConnState::Closed | ConnState::Pending) => {
                let (code, reason) = match conn.connection.remote_close() {
                    Some((code, reason)) => {
                        (Some(code), String::from_utf8_lossy(&reason).into_owned())
                    }
                    None => (None, "closed during the preflight exchange".to_owned()),
                };
                Err(CoreError::ConnectionClosed { code, reason })
            }
        }
    }

    async fn send(self: &Arc<Self>, peer: Url, data: Bytes) -> Result<(), CoreError> {
        self.check_open()?;
        encode_header(FrameType::Data, data.len() as u64, &self.limits)?;
        let addr = match PeerAddr::parse(&peer) {
            Ok(a) => a,
            Err(e) => {
                self.mark_unresponsive(&peer).await;
                return Err(e);
            }
        };
        if addr.id == self.local_id {
            return Err(CoreError::SelfConnect);
        }
        let conn = self.connection_for(&addr).await?;
        let Err(e) = conn.write_data(data.clone(), &self.limits).await else {
            return Ok(());
        };
        if !conn.ended_deliberately() {
            // The reader notices the failed connection and reports it.
            conn.close_failed(&e.to_string());
            return Err(e);
        }
        // The connection was being closed on purpose underneath this send
        // (a disconnect by either side, or supersession): the frame did not
        // go out whole, so the peer cannot have it. Forget that connection
        // and send once more over a new or the winning one.
        debug!(%peer, %e, "connection closed under a send; redialling");
        self.registry.lock().expect("poisoned").remove(&conn);
        let conn = self.connection_for(&addr).await?;
        if let Err(e) = conn.write_data(data, &self.limits).await {
            conn.close_failed(&e.to_string());
            return Err(e);
        }
        Ok(())
    }

    async fn disconnect(&self, peer: Url, payload: Option<(String, Bytes)>) {
        let Ok(addr) = PeerAddr::parse(&peer) else {
            debug!(%peer, "disconnect: not a peer url");
            return;
        };
        let Some(conn) = self.registry.lock().expect("poisoned").active(&addr.id) else {
            return;
        };
        let reason = match payload {
            Some((reason, bytes)) => {
                let sent = timeout(
                    self.config.disconnect_send_timeout,
                    conn.write_data(bytes, &self.limits),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    debug!(%peer, "disconnect message not delivered");
                }
                Some(reason)
            }
            None => None,
        };
        self.registry.lock().expect("poisoned").remove(&conn);
        conn.set_state(ConnState::Closed);
        conn.close_local(CloseCode::Graceful, reason.as_deref().unwrap_or(""));
        info!(%peer, ?reason, "disconnected");
        if conn.take_report() {
            let url = conn.remote_url().cloned().unwrap_or(peer);
            self.hnd.peer_disconnect(url, reason);
        }
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for t in self.tasks.lock().expect("poisoned").drain(..) {
            t.abort();
        }
        let conns = self.registry.lock().expect("poisoned").drain();
        for (conn, was_active) in conns {
            conn.abort_reader();
            conn.set_state(ConnState::Closed);
            conn.close_local(CloseCode::Graceful, TRANSPORT_CLOSED_REASON);
            if was_active
                && conn.take_report()
                && let Some(url) = conn.remote_url()
            {
                self.hnd
                    .peer_disconnect(url.clone(), Some(TRANSPORT_CLOSED_REASON.to_owned()));
            }
        }
        self.dial_locks.lock().expect("poisoned").clear();
        self.endpoint.close().await;
        info!("transport closed");
    }

    /// Every URL we can be reached at: the global one first, then each
    /// space's own, without repeats.
    fn peer_urls(&self) -> Vec<Url> {
        let mut urls: Vec<Url> = self.url.borrow().iter().cloned().collect();
        for s in self.space_urls.lock().expect("poisoned").values() {
            if !urls.contains(&s.url) {
                urls.push(s.url.clone());
            }
        }
        urls
    }

    fn stats(&self) -> TransportStats {
        let connections = self
            .registry
            .lock()
            .expect("poisoned")
            .all_active()
            .iter()
            .map(|c| TransportConnectionStats {
                pub_key: id_to_hex(&c.remote_id),
                send_message_count: c.counters.send_messages.load(Ordering::Relaxed),
                send_bytes: c.counters.send_bytes.load(Ordering::Relaxed),
                recv_message_count: c.counters.recv_messages.load(Ordering::Relaxed),
                recv_bytes: c.counters.recv_bytes.load(Ordering::Relaxed),
                opened_at_s: c.opened_at_s,
                is_direct: c.connection.is_direct(),
            })
            .collect();
        TransportStats {
            backend: self.config.backend.clone(),
            peer_urls: self.peer_urls(),
            connections,
        }
    }
}

impl TxImp for CoreTransport {
    fn url(&self) -> Option<Url> {
        self.shared.url.borrow().clone()
    }

    fn disconnect(&self, peer: Url, payload: Option<(String, Bytes)>) -> BoxFut<'_, ()> {
        Box::pin(self.shared.disconnect(peer, payload))
    }

    fn send(&self, peer: Url, data: Bytes) -> BoxFut<'_, K2Result<()>> {
        Box::pin(async move { Ok(self.shared.send(peer, data).await?) })
    }

    /// After `close()`: `Ok` and empty, as the incumbent answers.
    fn get_connected_peers(&self) -> BoxFut<'_, K2Result<Vec<Url>>> {
        Box::pin(async move {
            let active = self.shared.registry.lock().expect("poisoned").all_active();
            Ok(active
                .iter()
                .filter_map(|c| c.remote_url().cloned())
                .collect())
        })
    }

    /// After `close()`: `Ok` with no connections, as the incumbent answers.
    fn dump_network_stats(&self) -> BoxFut<'_, K2Result<TransportStats>> {
        Box::pin(async move { Ok(self.shared.stats()) })
    }

    fn configure_for_space(&self, space_id: SpaceId, config: &Config) -> BoxFut<'_, K2Result<()>> {
        if let Err(e) = self.shared.check_open() {
            return Box::pin(async move { Err(e.into()) });
        }
        let applied = self
            .shared
            .endpoint
            .configure_for_space(space_id.clone(), config);
        Box::pin(async move { self.shared.space_configured(space_id, applied.await?).await })
    }

    fn unconfigure_for_space(&self, space_id: SpaceId) -> BoxFut<'_, K2Result<()>> {
        Box::pin(self.shared.unconfigure_for_space(space_id))
    }

    fn close(&self) -> BoxFut<'_, ()> {
        Box::pin(self.shared.close_once.run(self.shared.close()))
    }
}

impl CoreTransport {
    /// Every live connection, for tests and diagnostics.
    pub fn connections(&self) -> Vec<ConnInfo> {
        self.shared
            .registry
            .lock()
            .expect("poisoned")
            .all()
            .iter()
            .map(|c| ConnInfo {
                remote_id: c.remote_id,
                state: c.state(),
                dialed_by_us: c.dialed_by_us,
            })
            .collect()
    }

    /// `(remote id, state)` of every live connection.
    pub fn connection_states(&self) -> Vec<(EndpointId, ConnState)> {
        self.connections()
            .into_iter()
            .map(|c| (c.remote_id, c.state))
            .collect()
    }
}

/// A live connection as [`CoreTransport::connections`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer's endpoint id.
    pub remote_id: EndpointId,
    /// Where the connection is in its lifecycle.
    pub state: ConnState,
    /// True when this side dialed it.
    pub dialed_by_us: bool,
}
