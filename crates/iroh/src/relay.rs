//! An iroh-relay server embedded in the process, on loopback, plain HTTP.
//!
//! For tests, demos and benchmarks that must run without the internet: it
//! serves the relay protocol over plain `http` on 127.0.0.1 (by default on a
//! free port) with QUIC address discovery off (`quic: None`), so endpoints
//! using it come online without waiting for QUIC probes. A config naming it
//! needs `relayAllowPlainText: true` to pass `validate_config` (the
//! incumbent's rule); `create` accepts it without the flag, since it is on
//! loopback ([`PlainTextPolicy`](crate::PlainTextPolicy)).
//!
//! # Usage
//!
//! [`EmbeddedRelay::start`], give [`EmbeddedRelay::url`] to the endpoints,
//! then [`EmbeddedRelay::shutdown`] or drop it. Dropping stops the server
//! without waiting for it to finish.

use crate::error::{IrohTransportError, Result};
use crate::iroh_types::{RelayHttpConfig, RelayServer, RelayServerConfig, RelayUrl};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest the relay's runtime waits for its blocking tasks when stopping.
const RUNTIME_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// An iroh-relay server running in this process.
///
/// # Invariants
///
/// The server runs on a runtime of its own, on its own thread, so stopping
/// it ends every task it started: no client connection outlives it (iroh's
/// relay server hands upgraded connections to detached tasks, which a
/// shared runtime would keep alive).
#[derive(Debug)]
pub struct EmbeddedRelay {
    addr: SocketAddr,
    url: RelayUrl,
    /// Dropping or sending stops the server.
    stop: Option<oneshot::Sender<()>>,
    /// The server's shutdown result.
    done: Option<oneshot::Receiver<Result<()>>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedRelay {
    /// Starts a relay on 127.0.0.1 with a free port.
    ///
    /// # Errors
    ///
    /// As [`Self::start_on`].
    pub async fn start() -> Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts a relay listening for plain HTTP on `bind_addr` (port 0 picks
    /// a free port).
    ///
    /// # Errors
    ///
    /// [`IrohTransportError::RelaySpawn`] if the server cannot start (for
    /// example the address is in use), [`IrohTransportError::RelayRuntime`]
    /// if its thread or runtime cannot be created.
    pub async fn start_on(bind_addr: SocketAddr) -> Result<Self> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("kitsune2-iroh-relay".into())
            .spawn(move || run_server(bind_addr, ready_tx, stop_rx, done_tx))
            .map_err(|source| IrohTransportError::RelayRuntime { source })?;
        let addr = ready_rx
            .await
            .map_err(|_| IrohTransportError::RelayThreadGone)??;
        let url_text = format!("http://{addr}/");
        let url = RelayUrl::from_str(&url_text).map_err(|source| {
            IrohTransportError::InvalidRelayUrl {
                url: url_text,
                source,
            }
        })?;
        tracing::debug!(%url, "embedded relay started");
        Ok(Self {
            addr,
            url,
            stop: Some(stop_tx),
            done: Some(done_rx),
            thread: Some(thread),
        })
    }

    /// The relay's URL, `http://{addr}/`.
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// The address the relay listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until its runtime, and with it every
    /// connection it served, is gone.
    ///
    /// # Errors
    ///
    /// [`IrohTransportError::RelayShutdown`] if a server task ended with an
    /// error, [`IrohTransportError::RelayThreadGone`] if the server thread
    /// ended without reporting.
    pub async fn shutdown(mut self) -> Result<()> {
        drop(self.stop.take());
        let result = match self.done.take() {
            Some(done) => done
                .await
                .unwrap_or(Err(IrohTransportError::RelayThreadGone)),
            None => Err(IrohTransportError::RelayThreadGone),
        };
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|source| IrohTransportError::BlockingTask { source })?
                .map_err(|_| IrohTransportError::RelayThreadGone)?;
        }
        result
    }
}

/// The relay thread: a runtime of its own, the server on it until `stop`
/// fires or is dropped, then the runtime torn down.
fn run_server(
    bind_addr: SocketAddr,
    ready: oneshot::Sender<Result<SocketAddr>>,
    stop: oneshot::Receiver<()>,
    done: oneshot::Sender<Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = ready.send(Err(IrohTransportError::RelayRuntime { source }));
            return;
        }
    };
    runtime.block_on(async move {
        let mut config = RelayServerConfig::default();
        config.relay = Some(RelayHttpConfig::new(bind_addr));
        config.quic = None;
        let server = match RelayServer::spawn(config).await {
            Ok(server) => server,
            Err(source) => {
                let _ = ready.send(Err(IrohTransportError::RelaySpawn { source }));
                return;
            }
        };
        let Some(addr) = server.http_addr() else {
            let _ = ready.send(Err(IrohTransportError::RelayWithoutHttpAddr));
            return;
        };
        if ready.send(Ok(addr)).is_err() {
            // The starter is gone; nobody will use this relay.
            return;
        }
        // Sent or dropped: either way, stop.
        let _ = stop.await;
        let result = server
            .shutdown()
            .await
            .map_err(|source| IrohTransportError::RelayShutdown { source });
        let _ = done.send(result);
    });
    runtime.shutdown_timeout(RUNTIME_STOP_TIMEOUT);
}
