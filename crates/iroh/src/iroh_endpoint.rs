//! [`IrohEndpoint`]: the transport's iroh endpoints seen through the core's
//! `Endpoint` trait, a plain mapping onto the main iroh endpoint, the
//! accept fan-in ([`accept`](crate::accept)) and the per-space endpoints
//! ([`space_endpoints`](crate::space_endpoints)). No protocol logic.

use crate::accept::{AcceptQueue, HandshakeLimits, HandshakeStats};
use crate::connection::IrohConnection;
use crate::endpoint::{ALPN, ALPN_V1, insert_relay};
use crate::error::{IrohTransportError, connect_err, core_err};
use crate::iroh_types::{
    ConnectError, ConnectOptions, Endpoint, EndpointAddr, EndpointId, RelayUrl, TransportAddr,
    Watcher,
};
use crate::space_endpoints::SpaceEndpoints;
use crate::space_relays::SpaceRelaySettings;
use crate::url::{parse_relay_url, peer_url};
use kitsune2_api::{BoxFut, Config, K2Result, SpaceId, Url};
use kitsune2_iroh_core::{CoreError, DynConnection, Endpoint as CoreEndpoint, PeerAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use tokio::task::AbortHandle;

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
/// A node listens on a space's relay through an iroh endpoint of its own
/// (same key, that relay as home relay); incoming connections of all
/// endpoints reach the core through one queue, and dials to a peer on a
/// space's relay go out through that space's endpoint.
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
    /// What every accept loop feeds.
    incoming: AcceptQueue,
    /// The address watcher, the accept loop and any relay keepalives;
    /// aborted on close and drop.
    tasks: Mutex<Vec<AbortHandle>>,
    /// The spaces' relays and their endpoints.
    spaces: SpaceEndpoints,
}

impl IrohEndpoint {
    /// Wraps `inner` and starts the tasks that follow its address and
    /// accept its connections, with the default [`HandshakeLimits`].
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(inner: Endpoint) -> Self {
        Self::with_handshake_limits(inner, HandshakeLimits::default())
    }

    /// As [`new`](Self::new), bounding the QUIC handshakes of incoming
    /// connections (on `inner` and on every per-space endpoint) by
    /// `limits`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn with_handshake_limits(inner: Endpoint, limits: HandshakeLimits) -> Self {
        let (url, watch_task) = watch_peer_url(&inner);
        let incoming = AcceptQueue::new(limits);
        let accept_task = incoming.spawn_loop(inner.clone());
        Self {
            inner,
            url,
            incoming,
            tasks: Mutex::new(vec![watch_task, accept_task]),
            spaces: SpaceEndpoints::default(),
        }
    }

    /// Judges spaces' relays against `settings` (the transport's own relay
    /// and auth material); without this, any relay a space names is its
    /// own.
    pub(crate) fn with_space_relays(mut self, settings: SpaceRelaySettings) -> Self {
        self.spaces = SpaceEndpoints::new(settings);
        self
    }

    /// Adds `url` as a home relay, presenting `token` as bearer token on
    /// its websocket when given.
    pub(crate) async fn insert_relay(&self, url: RelayUrl, token: Option<String>) {
        insert_relay(&self.inner, url, token).await;
    }

    /// What became of the handshakes of incoming connections so far, on
    /// every iroh endpoint of this one.
    pub fn handshake_stats(&self) -> HandshakeStats {
        self.incoming.stats()
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
        let space_endpoints = self.spaces.stop();
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        space_endpoints
    }
}

/// Publishes `endpoint`'s peer URL on its home relay, each time it
/// changes, until the endpoint closes or the returned task is aborted.
fn watch_peer_url(endpoint: &Endpoint) -> (watch::Receiver<Option<Url>>, AbortHandle) {
    let (tx, url) = watch::channel(None);
    let mut addrs = endpoint.watch_addr();
    let id = endpoint.id();
    let task = tokio::spawn(async move {
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
    (url, task)
}

impl Drop for IrohEndpoint {
    fn drop(&mut self) {
        // Endpoints close themselves when dropped.
        drop(self.stop());
    }
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
            tokio::select! {
                next = self.incoming.next() => next,
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
            let endpoint = self
                .spaces
                .endpoint_for(&relay)
                .unwrap_or_else(|| self.inner.clone());
            let addr = EndpointAddr::from_parts(id, [TransportAddr::Relay(relay)]);
            // `kitsune2/1` preferred, `kitsune2/0` for a peer that speaks
            // only that (the incumbent): the acceptor picks.
            let options = ConnectOptions::new().with_additional_alpns(vec![ALPN.to_vec()]);
            let connect = async {
                let connecting = endpoint.connect_with_opts(addr, ALPN_V1, options).await?;
                Ok::<_, ConnectError>(connecting.await?)
            };
            let conn = connect
                .await
                .map_err(|source| connect_err(id.to_string(), source))?;
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
        let plan = self.spaces.plan(config);
        Box::pin(async move {
            let Some(plan) = plan? else {
                return Ok(None);
            };
            let start_accept = |endpoint| self.incoming.spawn_loop(endpoint);
            let url = self
                .spaces
                .configure(&self.inner, space_id, plan, start_accept)
                .await?;
            Ok(Some(url))
        })
    }

    fn unconfigure_for_space(&self, space_id: SpaceId) -> BoxFut<'_, K2Result<()>> {
        Box::pin(async move {
            self.spaces.unconfigure(&space_id).await;
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
