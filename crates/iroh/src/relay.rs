//! An iroh-relay server embedded in the process, on loopback, plain HTTP.
//!
//! For tests, demos and benchmarks that must run without the internet: it
//! serves the relay protocol over plain `http` on 127.0.0.1 (by default on a
//! free port) with QUIC address discovery off (`quic: None`), so endpoints
//! using it come online without waiting for QUIC probes. Transports that use
//! it need `relayAllowPlainText: true`.
//!
//! # Usage
//!
//! [`EmbeddedRelay::start`], give [`EmbeddedRelay::url`] to the endpoints,
//! then [`EmbeddedRelay::shutdown`] or drop it. Dropping stops the server
//! without waiting for its tasks to finish.

use crate::error::{IrohTransportError, Result};
use crate::iroh_types::{RelayHttpConfig, RelayServer, RelayServerConfig, RelayUrl};
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// An iroh-relay server running in this process.
#[derive(Debug)]
pub struct EmbeddedRelay {
    server: RelayServer,
    addr: SocketAddr,
    url: RelayUrl,
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
    /// example the address is in use).
    pub async fn start_on(bind_addr: SocketAddr) -> Result<Self> {
        let mut config = RelayServerConfig::default();
        config.relay = Some(RelayHttpConfig::new(bind_addr));
        config.quic = None;
        let server = RelayServer::spawn(config)
            .await
            .map_err(|source| IrohTransportError::RelaySpawn { source })?;
        let addr = server
            .http_addr()
            .ok_or(IrohTransportError::RelayWithoutHttpAddr)?;
        let url = RelayUrl::from_str(&format!("http://{addr}/")).map_err(|source| {
            IrohTransportError::InvalidRelayUrl {
                url: format!("http://{addr}/"),
                source,
            }
        })?;
        tracing::debug!(%url, "embedded relay started");
        Ok(Self { server, addr, url })
    }

    /// The relay's URL, `http://{addr}/`.
    pub fn url(&self) -> &RelayUrl {
        &self.url
    }

    /// The address the relay listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until all its tasks have ended.
    ///
    /// # Errors
    ///
    /// [`IrohTransportError::RelayShutdown`] if a server task ended with an
    /// error.
    pub async fn shutdown(self) -> Result<()> {
        self.server
            .shutdown()
            .await
            .map_err(|source| IrohTransportError::RelayShutdown { source })
    }
}
