//! The iroh endpoint as the kitsune2 wire protocol needs it.
//!
//! - ALPN [`ALPN`] (`kitsune2/0`) only.
//! - QUIC keep-alive every [`KEEP_ALIVE_INTERVAL`] (5 s), idle timeout
//!   [`MAX_IDLE_TIMEOUT`] (60 s).
//! - Home relay: the configured relay alone (a custom relay map); iroh's
//!   default relays only when no relay URL is given.
//! - TLS through rustls with the ring provider; no address lookup services
//!   (no DNS, no pkarr) and no port mapping.

use crate::error::{IrohTransportError, Result};
use crate::iroh_types::{
    Endpoint, Minimal, PortmapperConfig, QuicTransportConfig, RelayMap, RelayMode, RelayUrl,
    SecretKey,
};
use std::net::SocketAddr;
use std::time::Duration;

/// The ALPN of the kitsune2 iroh wire protocol.
pub const ALPN: &[u8] = b"kitsune2/0";

/// Interval of QUIC keep-alive packets.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Time without traffic after which QUIC closes a connection.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How to build an endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointOptions {
    /// The home relay. `None` uses iroh's default relays.
    pub relay_url: Option<RelayUrl>,
    /// Bind the UDP socket to this address only, instead of all interfaces.
    /// Tests use `127.0.0.1:0` so that no traffic leaves loopback.
    pub bind_addr: Option<SocketAddr>,
    /// The endpoint's key; a fresh one is generated when `None`.
    pub secret_key: Option<SecretKey>,
    /// Start with an empty relay map even when `relay_url` is set, so that
    /// nothing reaches the relay before it is inserted (with a token) later.
    pub defer_relay: bool,
}

/// Binds an iroh endpoint configured for the kitsune2 wire protocol.
///
/// # Errors
///
/// [`IrohTransportError::BindAddr`] or [`IrohTransportError::Bind`] if the
/// socket cannot be bound; [`IrohTransportError::TimeoutOutOfRange`] if the
/// idle timeout does not fit QUIC's varint.
pub async fn bind_endpoint(options: &EndpointOptions) -> Result<Endpoint> {
    let idle = MAX_IDLE_TIMEOUT
        .try_into()
        .map_err(|_| IrohTransportError::TimeoutOutOfRange {
            secs: MAX_IDLE_TIMEOUT.as_secs(),
        })?;
    let transport = QuicTransportConfig::builder()
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .max_idle_timeout(Some(idle))
        .build();
    let relay_mode = match &options.relay_url {
        Some(_) if options.defer_relay => RelayMode::Custom(RelayMap::empty()),
        Some(url) => RelayMode::Custom(RelayMap::from_iter([url.clone()])),
        None => RelayMode::Default,
    };
    let mut builder = Endpoint::builder(Minimal)
        .relay_mode(relay_mode)
        .alpns(vec![ALPN.to_vec()])
        .transport_config(transport)
        .portmapper_config(PortmapperConfig::Disabled);
    if let Some(addr) = options.bind_addr {
        builder = builder
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|source| IrohTransportError::BindAddr { source })?;
    }
    if let Some(key) = &options.secret_key {
        builder = builder.secret_key(key.clone());
    }
    builder
        .bind()
        .await
        .map_err(|source| IrohTransportError::Bind { source })
}
