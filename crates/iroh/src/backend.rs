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
use crate::error::IrohTransportError;
use crate::iroh_types::{
    ConnectionError, Endpoint, EndpointAddr, EndpointId, QuicConnection, QuicRecvStream,
    QuicSendStream, RelayConfig, RelayUrl, TransportAddr, VarInt, Watcher,
};
use crate::url::{parse_relay_url, peer_url};
use bytes::Bytes;
use kitsune2_api::{BoxFut, Url};
use kitsune2_iroh_core::{
    CloseCode, Connection, CoreError, DynConnection, DynRecvStream, DynSendStream,
    Endpoint as CoreEndpoint, PeerAddr, RecvStream, SendStream,
};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Largest chunk asked of iroh per read; chunks are views into QUIC's
/// receive buffer, so this bounds nothing the peer controls.
const READ_CHUNK_MAX: usize = 64 * 1024;

/// Renders an error with its source chain, for the core's string errors.
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

fn core_err(op: &'static str, err: IrohTransportError) -> CoreError {
    CoreError::io(op, chain(&err))
}

/// An iroh endpoint seen through the core's `Endpoint` trait.
///
/// # Usage
///
/// Build the iroh endpoint with [`bind_endpoint`](crate::endpoint::bind_endpoint),
/// wrap it with [`IrohEndpoint::new`] inside a tokio runtime, hand it to the
/// core.
///
/// # Invariants
///
/// The published URL is always the peer URL of this endpoint on its first
/// home relay; it is `None` until iroh reports a relay.
#[derive(Debug)]
pub struct IrohEndpoint {
    inner: Endpoint,
    url: watch::Receiver<Option<Url>>,
    /// The address watcher and any relay keepalives; aborted on close and
    /// drop.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl IrohEndpoint {
    /// Wraps `inner` and starts the task that follows its address.
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
        Self {
            inner,
            url,
            tasks: Mutex::new(vec![watch_task]),
        }
    }

    /// Adds `url` as a home relay, presenting `token` as bearer token on
    /// its websocket when given.
    pub(crate) async fn insert_relay(&self, url: RelayUrl, token: Option<String>) {
        let mut config = RelayConfig::from(url.clone());
        if let Some(token) = token {
            config = config.with_auth_token(token);
        }
        self.inner.insert_relay(url, Arc::new(config)).await;
    }

    /// Ties `task` to this endpoint's lifetime.
    pub(crate) fn own_task(&self, task: AbortHandle) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    fn abort_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }

    /// The wrapped iroh endpoint.
    pub fn inner(&self) -> &Endpoint {
        &self.inner
    }
}

impl Drop for IrohEndpoint {
    fn drop(&mut self) {
        self.abort_tasks();
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
            let incoming = self.inner.accept().await?;
            Some(match incoming.await {
                Ok(conn) => Ok(Arc::new(IrohConnection::new(conn)) as DynConnection),
                Err(source) => Err(core_err("accept", IrohTransportError::Accept { source })),
            })
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
            let addr = EndpointAddr::from_parts(id, [TransportAddr::Relay(relay)]);
            let conn = self.inner.connect(addr, ALPN).await.map_err(|source| {
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

    fn close(&self) -> BoxFut<'_, ()> {
        self.abort_tasks();
        Box::pin(self.inner.close())
    }
}

/// An iroh connection seen through the core's `Connection` trait.
#[derive(Debug)]
pub struct IrohConnection {
    inner: QuicConnection,
}

impl IrohConnection {
    fn new(inner: QuicConnection) -> Self {
        Self { inner }
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
        // QUIC ignores a close after the first, as the trait requires.
        self.inner
            .close(VarInt::from_u32(u32::from(code as u8)), reason);
    }

    fn remote_close(&self) -> Option<(CloseCode, Bytes)> {
        match self.inner.close_reason()? {
            ConnectionError::ApplicationClosed(close) => Some((
                CloseCode::from_wire(close.error_code.into_inner()),
                close.reason,
            )),
            _ => None,
        }
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
