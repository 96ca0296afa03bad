//! [`CoreTransport`]: `kitsune2_api::TxImp` over the [`Endpoint`] trait.
//! The surface only: sending lives in `dial.rs`, reading in `reader.rs`,
//! the per-connection rules in `proto.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use kitsune2_api::{
    BoxFut, Config, K2Result, SpaceId, TransportConnectionStats, TransportStats, TxImp, TxImpHnd,
    Url,
};
use kitsune2_iroh_codec::Limits;
use tokio::time::timeout;
use tracing::{debug, info};

use crate::budget::FrameBudgetUsage;
use crate::config::CoreConfig;
use crate::error::{CoreError, Initiator};
use crate::peer_url::{PeerAddr, id_to_hex};
use crate::proto::ConnState;
use crate::shared::Shared;
use crate::traits::{Endpoint, EndpointId, WallClock};

/// How long a dropped transport's endpoint gets to send its close packets.
pub const DROP_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long `close()` waits for the endpoint's own close (the peers'
/// acknowledgements of its close packets) before it returns and leaves the
/// rest, bounded by [`DROP_FLUSH_TIMEOUT`], to a task.
pub const ENDPOINT_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

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
///   connections as failed (code 0); it needs no runtime to do so.
#[derive(Debug)]
pub struct CoreTransport {
    shared: Arc<Shared>,
}

impl CoreTransport {
    /// Starts the transport: the accept task and the task that publishes
    /// the endpoint's URL.
    ///
    /// # Errors
    ///
    /// [`CoreError::Codec`] when `config.max_frame_bytes` is below the
    /// frame header size; [`CoreError::InvalidConfig`] when
    /// `config.partial_frame_budget` is below `config.max_frame_bytes`
    /// (the largest frame could never arrive).
    pub fn create(
        endpoint: Arc<dyn Endpoint>,
        hnd: Arc<TxImpHnd>,
        config: CoreConfig,
        clock: Arc<dyn WallClock>,
    ) -> Result<Arc<Self>, CoreError> {
        let limits = Limits::new(config.max_frame_bytes)?;
        if config.partial_frame_budget < config.max_frame_bytes {
            return Err(CoreError::InvalidConfig {
                field: "partial_frame_budget",
                why: format!(
                    "is {} bytes, below max_frame_bytes ({})",
                    config.partial_frame_budget, config.max_frame_bytes
                ),
            });
        }
        let shared = Arc::new(Shared::new(endpoint, hnd, config, limits, clock));
        let accept = tokio::spawn(shared.clone().accept_task()).abort_handle();
        let url = tokio::spawn(shared.clone().url_task()).abort_handle();
        let silence = tokio::spawn(shared.clone().silence_task()).abort_handle();
        shared
            .tasks
            .lock()
            .expect("poisoned")
            .extend([accept, url, silence]);
        Ok(Arc::new(Self { shared }))
    }

    /// This endpoint's id.
    pub fn local_id(&self) -> EndpointId {
        self.shared.local_id
    }

    /// What the budget for partially received frames holds now and held
    /// at most (see [`CoreConfig::partial_frame_budget`]).
    pub fn frame_budget_usage(&self) -> FrameBudgetUsage {
        self.shared.budget.usage()
    }
}

/// Dropping without [`TxImp::close`] is a crash as peers see it, as with
/// `kitsune2_transport_iroh`: every connection is closed with code 0
/// ([`CoreError::Dropped`]), so peers report it lost and mark this node
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
        let conns = self.shared.registry().drain();
        for c in conns {
            c.abort_reader();
            c.close(CoreError::Dropped, Initiator::Local);
        }
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

impl Shared {
    async fn disconnect(&self, peer: Url, payload: Option<(String, Bytes)>) {
        let Ok(addr) = PeerAddr::parse(&peer) else {
            debug!(%peer, "disconnect: not a peer url");
            return;
        };
        let Some(conn) = self.registry().active(&addr.id) else {
            return;
        };
        let reason = match payload {
            Some((reason, bytes)) => {
                let sent =
                    timeout(self.config.disconnect_send_timeout, conn.write(Some(bytes))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    debug!(%peer, "disconnect message not delivered");
                }
                Some(reason)
            }
            None => None,
        };
        // Out of use first, so a new send opens a new connection; then the
        // drain delivers what is in flight and closes with code 1.
        self.registry().retire(&conn);
        conn.start_drain(CoreError::Disconnected {
            reason: reason.clone(),
        });
        info!(%peer, ?reason, "disconnecting");
        if conn.with(|p| p.take_report()) {
            let url = conn.remote_url().unwrap_or(peer);
            self.hnd.peer_disconnect(url, reason);
        }
    }

    /// Drains every connection at once, bounded by the drain timeout in
    /// total, then closes what is left and the endpoint.
    async fn close(&self) {
        for t in self.tasks.lock().expect("poisoned").drain(..) {
            t.abort();
        }
        let conns = {
            // The flag is set under the registry lock, so that a dial or an
            // accept either registers before this drain or sees the flag.
            let mut registry = self.registry();
            self.closed.store(true, Ordering::SeqCst);
            registry.drain()
        };
        for conn in &conns {
            let was_active = conn.state() == ConnState::Active;
            conn.start_drain(CoreError::Closed);
            if was_active
                && conn.with(|p| p.take_report())
                && let Some(url) = conn.remote_url()
            {
                self.hnd
                    .peer_disconnect(url, Some(CoreError::Closed.close_reason()));
            }
        }
        let drained = timeout(
            self.config.drain_timeout,
            futures_join_all(conns.iter().map(|c| c.ended())),
        )
        .await;
        if drained.is_err() {
            debug!("drains not through in time; closing anyway");
        }
        for conn in conns {
            conn.abort_reader();
            conn.close(CoreError::Closed, Initiator::Local);
        }
        // The endpoint's own close waits until the peers acknowledge its
        // close packets, up to three probe timeouts per connection: seconds
        // on a busy machine (10 s at the p99 with 100 nodes in a process).
        // Our connections are drained and closed by now, so the caller
        // need not wait for that: the rest goes on in a task of its own.
        let endpoint = self.endpoint.clone();
        let flush = tokio::spawn(async move {
            if timeout(DROP_FLUSH_TIMEOUT, endpoint.close()).await.is_err() {
                debug!("endpoint close timed out");
            }
        });
        if timeout(ENDPOINT_CLOSE_WAIT, flush).await.is_err() {
            debug!("endpoint close goes on in the background");
        }
        info!("transport closed");
    }

    async fn configure_for_space(&self, space_id: SpaceId, url: Option<Url>) -> K2Result<()> {
        let Some(url) = url else {
            return Ok(());
        };
        self.spaces.insert(space_id.clone(), &url, &self.local_id)?;
        info!(space = ?space_id, %url, "per-space listening address");
        self.hnd.new_listening_address(url, Some(&space_id)).await;
        Ok(())
    }

    async fn unconfigure_for_space(&self, space_id: SpaceId) -> K2Result<()> {
        if self.spaces.remove(&space_id) {
            // The space hears the global URL again.
            self.hnd.unmark_per_space_managed(&space_id);
        }
        self.endpoint.unconfigure_for_space(space_id).await
    }

    fn stats(&self) -> TransportStats {
        let connections = self
            .registry()
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
            peer_urls: self.spaces.all(self.url.borrow().clone()),
            connections,
        }
    }
}

/// Waits for every future of `futs`, without a dependency for it.
async fn futures_join_all<F: Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    for f in set {
        f.await;
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
            let active = self.shared.registry().all_active();
            Ok(active.iter().filter_map(|c| c.remote_url()).collect())
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
        Box::pin(async move {
            self.shared
                .configure_for_space(space_id, applied.await?)
                .await
        })
    }

    fn unconfigure_for_space(&self, space_id: SpaceId) -> BoxFut<'_, K2Result<()>> {
        Box::pin(self.shared.unconfigure_for_space(space_id))
    }

    fn close(&self) -> BoxFut<'_, ()> {
        Box::pin(self.shared.close_once.run(self.shared.close()))
    }
}

/// Diagnostics for tests (feature `mem`): what the transport holds.
#[cfg(feature = "mem")]
impl CoreTransport {
    /// Peers with any per-peer state (connections or dials); for tests
    /// that check nothing leaks.
    pub fn tracked_peer_count(&self) -> usize {
        self.shared.registry().peer_count()
    }

    /// Every live connection.
    pub fn connections(&self) -> Vec<ConnInfo> {
        self.shared
            .registry()
            .all()
            .iter()
            .map(|c| ConnInfo {
                remote_id: c.remote_id,
                state: c.state(),
                dialed_by_us: c.dialed_by_us,
                partial_frame_bytes: c.with(|p| p.partial_frame_bytes()),
                wire_version: c.with(|p| p.wire_version()),
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
#[cfg(feature = "mem")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The peer's endpoint id.
    pub remote_id: EndpointId,
    /// Where the connection is in its lifecycle.
    pub state: ConnState,
    /// True when this side dialed it.
    pub dialed_by_us: bool,
    /// Bytes of the peer's streams held for frames not yet complete.
    pub partial_frame_bytes: usize,
    /// The negotiated wire version.
    pub wire_version: crate::WireVersion,
}
