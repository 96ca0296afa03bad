//! The crate's one error type.

use crate::iroh_types::{
    BindError, ConnectError, ConnectingError, ConnectionError, InvalidSocketAddr, KeyParsingError,
    ReadError, RelayUrlParseError, StoppedError, TransportErrorCode, WriteError,
};
#[cfg(feature = "relay")]
use crate::iroh_types::{RelaySpawnError, RelaySupervisorError};
use kitsune2_api::K2Error;
use kitsune2_iroh_core::CoreError;

/// Result with [`IrohTransportError`].
pub type Result<T, E = IrohTransportError> = std::result::Result<T, E>;

/// Everything that can go wrong in the iroh adapter.
///
/// iroh's own errors are kept as the [`source`](std::error::Error::source);
/// at the kitsune2 boundary this converts into [`K2Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IrohTransportError {
    /// A relay URL that does not parse as a URL.
    #[error("invalid relay URL {url:?}")]
    InvalidRelayUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: RelayUrlParseError,
    },
    /// A relay URL whose scheme is neither `http` nor `https`.
    #[error("relay URL {url:?} has scheme {scheme:?}; only http and https are supported")]
    UnsupportedRelayScheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// A relay URL without a host.
    #[error("relay URL {url:?} has no host")]
    RelayUrlWithoutHost {
        /// The URL as given.
        url: String,
    },
    /// A relay URL with neither a port nor a scheme with a known default port.
    #[error("relay URL {url:?} has no port and its scheme has no default port")]
    RelayUrlWithoutPort {
        /// The URL as given.
        url: String,
    },
    /// A plain `http` relay URL while `relayAllowPlainText` is false.
    #[error("relay URL {url:?} uses plain http but relayAllowPlainText is false")]
    PlainTextRelayDisallowed {
        /// The URL as given.
        url: String,
    },
    /// `relayKeepaliveIntervalS` is zero, which would spin the keepalive loop.
    #[error("relayKeepaliveIntervalS must be greater than zero")]
    ZeroKeepaliveInterval,
    /// `maxFrameBytes` is too small for a preflight frame carrying this
    /// node's URL.
    #[error("maxFrameBytes is {max_frame_bytes} but a preflight frame needs at least {min}")]
    MaxFrameBytesTooSmall {
        /// The configured limit.
        max_frame_bytes: usize,
        /// The smallest limit that carries a preflight with an empty body.
        min: usize,
    },
    /// A config key's value is out of its range.
    #[error("{key} {why}")]
    OutOfRange {
        /// The config key (camelCase, as in JSON).
        key: &'static str,
        /// What the range is.
        why: String,
    },
    /// A peer URL whose last path segment is missing or empty.
    #[error("peer URL {url:?} has no endpoint id as its last path segment")]
    PeerUrlWithoutEndpointId {
        /// The URL as given.
        url: String,
    },
    /// A peer URL whose last path segment is not an endpoint id.
    #[error("peer URL {url:?} does not end in a valid endpoint id")]
    InvalidEndpointId {
        /// The URL as given.
        url: String,
        /// Why the segment is not an endpoint id.
        #[source]
        source: KeyParsingError,
    },
    /// A peer URL that kitsune2 does not accept as a URL.
    #[error("peer URL {url:?} is not a valid kitsune2 URL")]
    InvalidPeerUrl {
        /// The URL as built or given.
        url: String,
        /// kitsune2's reason.
        #[source]
        source: K2Error,
    },
    /// A space's `authMaterialRelayBase64` is not valid base64.
    #[error("authMaterialRelayBase64 is not valid base64")]
    InvalidAuthMaterial {
        /// The decoder's reason.
        #[source]
        source: base64::DecodeError,
    },
    /// The module config could not be read from or written to kitsune2's
    /// config.
    #[error("iroh transport module config")]
    Config {
        /// kitsune2's reason.
        #[source]
        source: K2Error,
    },
    /// Binding the iroh endpoint failed.
    #[error("failed to bind the iroh endpoint")]
    Bind {
        /// iroh's reason.
        #[source]
        source: BindError,
    },
    /// The bind address cannot be used.
    #[error("invalid bind address")]
    BindAddr {
        /// iroh's reason.
        #[source]
        source: InvalidSocketAddr,
    },
    /// A QUIC timeout value that iroh cannot represent.
    #[error("timeout of {secs} s is out of range for QUIC")]
    TimeoutOutOfRange {
        /// The timeout in seconds.
        secs: u64,
    },
    /// Connecting to a peer failed.
    #[error("failed to connect to peer {remote}")]
    Connect {
        /// The peer's endpoint id.
        remote: String,
        /// iroh's reason.
        #[source]
        source: ConnectError,
    },
    /// An incoming connection failed during its handshake.
    #[error("incoming connection failed")]
    Accept {
        /// iroh's reason.
        #[source]
        source: ConnectingError,
    },
    /// Writing to a stream failed.
    #[error("stream write failed")]
    Write {
        /// iroh's reason.
        #[source]
        source: WriteError,
    },
    /// Waiting for the peer to receive a finished stream failed.
    #[error("finishing the stream")]
    Finish {
        /// iroh's reason.
        #[source]
        source: StoppedError,
    },
    /// Reading from a stream failed.
    #[error("stream read failed")]
    Read {
        /// iroh's reason.
        #[source]
        source: ReadError,
    },
    /// Relay authentication with the bootstrap server failed.
    #[error("relay authentication failed at step {step:?}")]
    RelayAuth {
        /// `"fetch token"` or `"keepalive"`.
        step: &'static str,
        /// The bootstrap client's reason.
        #[source]
        source: K2Error,
    },
    /// A blocking helper task panicked or was cancelled.
    #[error("blocking task failed")]
    BlockingTask {
        /// tokio's reason.
        #[source]
        source: tokio::task::JoinError,
    },
    /// An established connection failed or was closed.
    #[error("connection failed")]
    Connection {
        /// iroh's reason.
        #[source]
        source: ConnectionError,
    },
    /// The embedded relay server could not start.
    #[cfg(feature = "relay")]
    #[error("failed to start the embedded relay server")]
    RelaySpawn {
        /// iroh-relay's reason.
        #[source]
        source: RelaySpawnError,
    },
    /// The embedded relay server did not shut down cleanly.
    #[cfg(feature = "relay")]
    #[error("embedded relay server shut down with an error")]
    RelayShutdown {
        /// iroh-relay's reason.
        #[source]
        source: RelaySupervisorError,
    },
    /// The embedded relay's thread or runtime could not be created.
    #[cfg(feature = "relay")]
    #[error("failed to create the embedded relay's thread or runtime")]
    RelayRuntime {
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// The embedded relay's thread ended without reporting (it panicked).
    #[cfg(feature = "relay")]
    #[error("embedded relay thread ended unexpectedly")]
    RelayThreadGone,
    /// The embedded relay server started without an HTTP listener.
    #[cfg(feature = "relay")]
    #[error("embedded relay server has no HTTP address")]
    RelayWithoutHttpAddr,
}

impl From<IrohTransportError> for K2Error {
    fn from(err: IrohTransportError) -> Self {
        Self::other_src("kitsune2-iroh", err)
    }
}

/// The core's error for a failed connect to `remote`: a handshake that
/// timed out, or that the peer reset, dropped (a busy acceptor gives up on
/// it at its deadline) or refused for now, may pass, and the core dials
/// again ([`CoreError::HandshakeFailed`]); anything else (no common ALPN,
/// a TLS failure, our own endpoint closed) is for good.
pub(crate) fn connect_err(remote: String, source: ConnectError) -> CoreError {
    let may_pass = match &source {
        ConnectError::Connecting {
            source: ConnectingError::ConnectionError { source, .. },
            ..
        }
        | ConnectError::Connection { source, .. } => handshake_may_pass(source),
        _ => false,
    };
    let err = IrohTransportError::Connect { remote, source };
    if may_pass {
        CoreError::handshake_failed(err)
    } else {
        core_err("connect", err)
    }
}

/// Whether a connection that failed during its handshake with `e` may
/// succeed when dialed again.
fn handshake_may_pass(e: &ConnectionError) -> bool {
    match e {
        ConnectionError::TimedOut | ConnectionError::Reset => true,
        ConnectionError::ConnectionClosed(close) => {
            close.error_code == TransportErrorCode::APPLICATION_ERROR
                || close.error_code == TransportErrorCode::CONNECTION_REFUSED
        }
        _ => false,
    }
}

/// The core's error for a failed `op`, keeping `err` (and iroh's error
/// under it) as its source.
pub(crate) fn core_err(op: &'static str, err: IrohTransportError) -> CoreError {
    CoreError::io(op, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_that_timed_out_or_were_reset_may_pass_the_rest_not() {
        assert!(handshake_may_pass(&ConnectionError::TimedOut));
        assert!(handshake_may_pass(&ConnectionError::Reset));
        assert!(!handshake_may_pass(&ConnectionError::LocallyClosed));
        assert!(!handshake_may_pass(&ConnectionError::VersionMismatch));
        assert!(!handshake_may_pass(&ConnectionError::CidsExhausted));
    }
}
