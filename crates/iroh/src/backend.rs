//! iroh implementations of the core's network traits: a thin mapping, no
//! protocol logic.
//!
//! | core trait     | iroh type                  |
//! |----------------|----------------------------|
//! | `Endpoint`     | `iroh::Endpoint`           |
//! | `Connection`   | `iroh::endpoint::Connection` |
//! | `SendStream`   | `iroh::endpoint::SendStream` (`write_all_chunks`) |
//! | `RecvStream`   | `iroh::endpoint::RecvStream` (`read_chunk`) |

use crate::endpoint::ALPN;
use crate::endpoint::{EndpointOptions, bind_endpoint, relay_config};
use crate::error::IrohTransportError;
use crate::iroh_types::{
    ConnectionError, Endpoint, EndpointAddr, EndpointId, QuicConnection, QuicRecvStream,
    QuicSendStream, RelayUrl, TransportAddr, VarInt, Watcher,
};
use crate::relay_auth::RelayAuth;
use crate::space_relays::{Release, SpaceRelayPlan, SpaceRelaySettings, SpaceRelays};
use crate::url::{parse_relay_url, peer_url};
use bytes::Bytes;
use kitsune2_api::{BoxFut, Config, K2Error, K2Result, SpaceId, Url};
use kitsune2_iroh_core::{
    CloseCode, Connection, CoreError, DynConnection, DynRecvStream, DynSendStream,
    Endpoint as CoreEndpoint, PeerAddr, RecvStream, SendStream,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::watch;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::task::JoinSet;

/// Largest chunk asked of iroh per read; chunks are views into QUIC's
/// receive buffer, so this bounds nothing the peer controls.
const READ_CHUNK_MAX: usize = 64 * 1024;

/// Renders an error with its source chain, for log lines.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The core's error for a failed `op`, keeping iroh's error as its source.
fn core_err(op: &'static str, err: IrohTransportError) -> CoreError {
    CoreError::io(op, err)
}

/// Incoming connections whose handshake may run at once, per iroh endpoint.
const MAX_CONCURRENT_HANDSHAKES: usize = 32;

/// Handshaken incoming connections waiting for the core.
const INCOMING_QUEUE: usize = 16;

type Incoming = Result<DynConnection, CoreError>;

/// An iroh endpoint seen through the core's `Endpoint` trait.
///
/// # Usage
///
/// Build the iroh endpoint with [`bind_endpoint`](crate::endpoint::bind_endpoint),
/// wrap it with [`IrohEndpoint::new`] inside a tokio runtime, hand it to the
/// core.
///
/// # Per-space relays
///
/// iroh keeps a single home relay and drops idle connections to others, so
/// a node listens on a space's relay through an iroh endpoint of its own:
/// same secret key (same endpoint id), home relay the space's relay, its
/// own UDP socket. Incoming connections of all endpoints reach the core
/// through one queue; dials to a peer on a space's relay go out through
/// that space's endpoint.
///
/// # Invariants
///
/// - The published URL is always the peer URL of the main endpoint on its
///   home relay; it is `None` until iroh reports a relay.
/// - At most one endpoint per relay carries this key, so a relay never sees
///   two clients with the same key from this node.
#[derive(Debug)]
pub struct IrohEndpoint {
    inner: Endpoint,
    url: watch::Receiver<Option<Url>>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    incoming_tx: mpsc::Sender<Incoming>,
    /// The address watcher, the accept loop and any relay keepalives;
    /// aborted on close and drop.
    tasks: Mutex<Vec<AbortHandle>>,
    /// Relays that spaces added, with their keepalives.
    spaces: Arc<SpaceRelays>,
    /// The endpoint listening on each space relay.
    space_endpoints: Mutex<HashMap<RelayUrl, SpaceEndpoint>>,
}

/// The endpoint listening on one space relay, and its accept loop.
#[derive(Debug)]
struct SpaceEndpoint {
    endpoint: Endpoint,
    accept: AbortHandle,
}

impl IrohEndpoint {
    /// Wraps `inner` and starts the tasks that follow its address and
    /// accept its connections.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(inner: Endpoint) -> Self {
        let (tx, url) = watch::channel(None);
        let mut addrs = inner.watch_addr();
        let id = inner.id();
        let watch_task = tokio::spawn(async move {
            loop {
                let addr = addrs.get();
                let next = addr
                    .relay_urls()
                    .find_map(|relay| match peer_url(relay, id) {
                        Ok(url) => Some(url),
                        Err(err) => {
                            tracing::warn!(%relay, err = %chain(&err), "unusable relay URL");
                            None
                        }
                    });
                tx.send_if_modified(|cur| {
                    if *cur == next {
                        false
                    } else {
                        tracing::debug!(url = ?next, "local peer URL");
                        *cur = next;
                        true
                    }
                });
                if addrs.updated().await.is_err() {
                    break;
                }
            }
        })
        .abort_handle();
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let accept_task = spawn_accept(inner.clone(), incoming_tx.clone());
        Self {
            inner,
            url,
            incoming: tokio::sync::Mutex::new(incoming),
            incoming_tx,
            tasks: Mutex::new(vec![watch_task, accept_task]),
            spaces: Arc::default(),
            space_endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Judges spaces' relays against `settings` (the transport's own relay
    /// and auth material); without this, any relay a space names is its
    /// own.
    pub(crate) fn with_space_relays(mut self, settings: SpaceRelaySettings) -> Self {
        self.spaces = Arc::new(SpaceRelays::new(settings));
        self
    }

    /// Adds `url` as a home relay, presenting `token` as bearer token on
    /// its websocket when given.
    pub(crate) async fn insert_relay(&self, url: RelayUrl, token: Option<String>) {
        insert_relay(&self.inner, url, token).await;
    }

    /// Ties `task` to this endpoint's lifetime.
    pub(crate) fn own_task(&self, task: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// Aborts every task and takes the space endpoints out, for closing.
    fn stop(&self) -> Vec<Endpoint> {
        self.spaces.close();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        self.space_endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, s)| {
                s.accept.abort();
                s.endpoint
            })
            .collect()
    }

    /// The wrapped iroh endpoint.
    pub fn inner(&self) -> &Endpoint {
        &self.inner
    }

    /// The endpoint to dial a peer on `relay` with.
    fn endpoint_for(&self, relay: &RelayUrl) -> Endpoint {
        self.space_endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(relay)
            .map_or_else(|| self.inner.clone(), |s| s.endpoint.clone())
    }

    /// Makes this node listen on the space relay `relay`: binds an endpoint
    /// with this key there unless one exists. With `token`, the relay is
    /// (re-)inserted with it.
    async fn listen_on(&self, relay: &RelayUrl, token: Option<String>) -> Result<(), CoreError> {
        let existing = self
            .space_endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(relay)
            .map(|s| s.endpoint.clone());
        if let Some(endpoint) = existing {
            if token.is_some() {
                insert_relay(&endpoint, relay.clone(), token).await;
            }
            return Ok(());
        }
        let endpoint = bind_endpoint(&EndpointOptions {
            relay_url: Some(relay.clone()),
            bind_addr: self
                .spaces
                .settings
                .bind_addr
                .map(|a| SocketAddr::new(a.ip(), 0)),
            secret_key: Some(self.inner.secret_key().clone()),
            defer_relay: token.is_some(),
        })
        .await
        .map_err(|e| core_err("bind space endpoint", e))?;
        if token.is_some() {
            insert_relay(&endpoint, relay.clone(), token).await;
        }
        let duplicate = {
            let mut map = self
                .space_endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map.contains_key(relay) {
                true
            } else {
                let accept = spawn_accept(endpoint.clone(), self.incoming_tx.clone());
                map.insert(
                    relay.clone(),
                    SpaceEndpoint {
                        endpoint: endpoint.clone(),
                        accept,
                    },
                );
                false
            }
        };
        if duplicate {
            // Another space bound one meanwhile; keep that one.
            endpoint.close().await;
        } else {
            tracing::info!(%relay, "listening on space relay");
        }
        Ok(())
    }
}

impl Drop for IrohEndpoint {
    fn drop(&mut self) {
        // Endpoints close themselves when dropped.
        drop(self.stop());
    }
}

async fn insert_relay(endpoint: &Endpoint, url: RelayUrl, token: Option<String>) {
    let config = relay_config(&url, token);
    endpoint.insert_relay(url, Arc::new(config)).await;
}

/// Accepts `endpoint`'s connections until it closes, running up to
/// [`MAX_CONCURRENT_HANDSHAKES`] handshakes at once (a stalled one holds up
/// no other), and queues them for the core.
fn spawn_accept(endpoint: Endpoint, queue: mpsc::Sender<Incoming>) -> AbortHandle {
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
        // Dropped with this task, aborting handshakes in progress.
        let mut handshakes = JoinSet::new();
        while let Some(incoming) = endpoint.accept().await {
            while handshakes.try_join_next().is_some() {}
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let queue = queue.clone();
            handshakes.spawn(async move {
                let result = match incoming.await {
                    Ok(conn) => Ok(Arc::new(IrohConnection::new(conn)) as DynConnection),
                    Err(source) => Err(core_err("accept", IrohTransportError::Accept { source })),
                };
                drop(permit);
                // The core is gone when this fails; nothing to hand over.
                let _ = queue.send(result).await;
            });
        }
        // Let finished handshakes reach the core before the loop ends.
        while handshakes.join_next().await.is_some() {}
    })
    .abort_handle()
}

impl CoreEndpoint for IrohEndpoint {
    fn local_id(&self) -> [u8; 32] {
        *self.inner.id().as_bytes()
    }

    fn watch_url(&self) -> watch::Receiver<Option<Url>> {
        self.url.clone()
    }

    fn accept(&self) -> BoxFut<'_, Option<Result<DynConnection, CoreError>>> {
        Box::pin(async move {
            if self.inner.is_closed() {
                return None;
            }
            let mut incoming = self.incoming.lock().await;
            tokio::select! {
                next = incoming.recv() => next,
                () = self.inner.closed() => None,
            }
        })
    }

    fn connect<'a>(&'a self, peer: &'a PeerAddr) -> BoxFut<'a, Result<DynConnection, CoreError>> {
        Box::pin(async move {
            let id = EndpointId::from_bytes(&peer.id).map_err(|source| {
                core_err(
                    "connect",
                    IrohTransportError::InvalidEndpointId {
                        url: peer.url.as_str().to_owned(),
                        source,
                    },
                )
            })?;
            let relay = parse_relay_url(&peer.relay_url).map_err(|e| core_err("connect", e))?;
            let endpoint = self.endpoint_for(&relay);
            let addr = EndpointAddr::from_parts(id, [TransportAddr::Relay(relay)]);
            let conn = endpoint.connect(addr, ALPN).await.map_err(|source| {
                core_err(
                    "connect",
                    IrohTransportError::Connect {
                        remote: id.to_string(),
                        source,
                    },
                )
            })?;
            Ok(Arc::new(IrohConnection::new(conn)) as DynConnection)
        })
    }

    fn is_home_relay_known_down(&self) -> bool {
        self.inner
            .home_relay_status()
            .get()
            .iter()
            .any(|s| !s.is_connected() && s.last_error().is_some())
    }

    fn configure_for_space(
        &self,
        space_id: SpaceId,
        config: &Config,
    ) -> BoxFut<'_, K2Result<Option<Url>>> {
        let plan = self.spaces.settings.plan(config);
        Box::pin(async move {
            let Some(SpaceRelayPlan {
                relay,
                auth_material,
            }) = plan?
            else {
                return Ok(None);
            };
            let id = self.inner.id();
            let (auth, token) = match auth_material {
                Some(material) => {
                    let auth = Arc::new(RelayAuth::new(&relay, material, *id.as_bytes()));
                    let token = auth.register().await?;
                    (Some(auth), Some(token))
                }
                None => (None, None),
            };
            let url = peer_url(&relay, id)?;
            if self.spaces.settings.own_relay.as_ref() == Some(&relay) {
                // The space brings its own material for our own relay.
                self.insert_relay(relay.clone(), token).await;
            } else {
                self.listen_on(&relay, token).await?;
            }
            if !self.spaces.record(space_id.clone(), relay.clone(), auth) {
                // Closed meanwhile: the space endpoint went with the rest.
                return Err(K2Error::other("transport closed"));
            }
            tracing::info!(space = ?space_id, %relay, %url, "per-space relay configured");
            Ok(Some(url))
        })
    }

    fn unconfigure_for_space(&self, space_id: SpaceId) -> BoxFut<'_, K2Result<()>> {
        Box::pin(async move {
            if let Release::Remove(relay) = self.spaces.release(&space_id) {
                let gone = self
                    .space_endpoints
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&relay);
                if let Some(gone) = gone {
                    gone.accept.abort();
                    gone.endpoint.close().await;
                }
                tracing::info!(space = ?space_id, %relay, "per-space relay released");
            }
            Ok(())
        })
    }

    fn close(&self) -> BoxFut<'_, ()> {
        let space_endpoints = self.stop();
        Box::pin(async move {
            for endpoint in space_endpoints {
                endpoint.close().await;
            }
            self.inner.close().await;
        })
    }
}

/// An iroh connection seen through the core's `Connection` trait.
///
/// # Invariants
///
/// [`remote_close`](Connection::remote_close) keeps reporting the peer's
/// application close after a later local close: iroh's QUIC replaces a
/// connection's close reason with "locally closed" when it is closed
/// locally, so the peer's close is saved first.
#[derive(Debug)]
pub struct IrohConnection {
    inner: QuicConnection,
    /// The peer's application close, saved before a local close.
    peer_close: OnceLock<(CloseCode, Bytes)>,
}

impl IrohConnection {
    fn new(inner: QuicConnection) -> Self {
        Self {
            inner,
            peer_close: OnceLock::new(),
        }
    }

    /// The peer's application close, as QUIC reports it now.
    fn peer_close_now(&self) -> Option<(CloseCode, Bytes)> {
        match self.inner.close_reason()? {
            ConnectionError::ApplicationClosed(close) => Some((
                CloseCode::from_wire(close.error_code.into_inner()),
                close.reason,
            )),
            _ => None,
        }
    }
}

fn conn_err(op: &'static str, source: ConnectionError) -> CoreError {
    core_err(op, IrohTransportError::Connection { source })
}

impl Connection for IrohConnection {
    fn remote_id(&self) -> [u8; 32] {
        *self.inner.remote_id().as_bytes()
    }

    fn open_uni(&self) -> BoxFut<'_, Result<DynSendStream, CoreError>> {
        Box::pin(async move {
            let s = self
                .inner
                .open_uni()
                .await
                .map_err(|e| conn_err("open_uni", e))?;
            Ok(Box::new(IrohSendStream { inner: s }) as DynSendStream)
        })
    }

    fn accept_uni(&self) -> BoxFut<'_, Result<DynRecvStream, CoreError>> {
        Box::pin(async move {
            let s = self
                .inner
                .accept_uni()
                .await
                .map_err(|e| conn_err("accept_uni", e))?;
            Ok(Box::new(IrohRecvStream { inner: s }) as DynRecvStream)
        })
    }

    fn close(&self, code: CloseCode, reason: &[u8]) {
        if let Some(peer) = self.peer_close_now() {
            // Ignored when already saved: the first close is the peer's.
            let _ = self.peer_close.set(peer);
        }
        // QUIC ignores a close after the first, as the trait requires.
        self.inner
            .close(VarInt::from_u32(u32::from(code as u8)), reason);
    }

    fn remote_close(&self) -> Option<(CloseCode, Bytes)> {
        self.peer_close
            .get()
            .cloned()
            .or_else(|| self.peer_close_now())
    }

    fn is_direct(&self) -> bool {
        self.inner
            .paths()
            .iter()
            .any(|p| p.is_selected() && p.is_ip())
    }
}

/// The sending half of an iroh uni stream.
#[derive(Debug)]
pub struct IrohSendStream {
    inner: QuicSendStream,
}

impl SendStream for IrohSendStream {
    fn write_chunks<'a>(
        &'a mut self,
        chunks: &'a mut [Bytes],
    ) -> BoxFut<'a, Result<(), CoreError>> {
        Box::pin(async move {
            self.inner
                .write_all_chunks(chunks)
                .await
                .map_err(|source| core_err("write", IrohTransportError::Write { source }))
        })
    }

    fn finish(&mut self) -> BoxFut<'_, Result<(), CoreError>> {
        Box::pin(async move {
            // An error here means the stream is finished or reset already;
            // `stopped` still says whether the peer got everything.
            let _ = self.inner.finish();
            self.inner
                .stopped()
                .await
                .map(drop)
                .map_err(|source| core_err("finish", IrohTransportError::Finish { source }))
        })
    }
}

/// The receiving half of an iroh uni stream.
#[derive(Debug)]
pub struct IrohRecvStream {
    inner: QuicRecvStream,
}

impl RecvStream for IrohRecvStream {
    fn read_chunk(&mut self) -> BoxFut<'_, Result<Option<Bytes>, CoreError>> {
        Box::pin(async move {
            self.inner
                .read_chunk(READ_CHUNK_MAX)
                .await
                .map_err(|source| core_err("read", IrohTransportError::Read { source }))
        })
    }
}
