//! The core's one error type.

use kitsune2_api::K2Error;
use kitsune2_iroh_codec::CodecError;

use crate::close::CloseCode;

/// Errors of the transport core.
///
/// Converted to [`K2Error`] at the kitsune2 boundary ([`From`] impl); the
/// message of each variant names the peer or the numbers involved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The transport was closed; nothing more can be sent.
    #[error("transport closed")]
    Closed,

    /// A peer URL is not `<relay url>/<64 hex digit endpoint id>`.
    #[error("invalid peer url {url:?}: {why}")]
    InvalidPeerUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },

    /// A message was addressed to this endpoint itself.
    #[error("refusing to connect to our own endpoint id")]
    SelfConnect,

    /// Connecting to the peer did not finish within the connect timeout.
    #[error("connecting to {peer} timed out after {secs} s")]
    ConnectTimeout {
        /// The peer URL.
        peer: String,
        /// The timeout, in seconds.
        secs: u64,
    },

    /// The home relay is known to be down: connects fail fast.
    #[error("home relay is not connected; not dialing {peer}")]
    RelayDown {
        /// The peer URL.
        peer: String,
    },

    /// The backend failed (connect, accept, open/accept stream, read, write).
    #[error("{op} failed: {message}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The backend's error text.
        message: String,
    },

    /// Bytes from or for the wire were not valid frames.
    #[error("frame error: {0}")]
    Codec(#[from] CodecError),

    /// The peer did not send its preflight in time.
    #[error("no preflight from the peer within {secs} s")]
    PreflightTimeout {
        /// The timeout, in seconds.
        secs: u64,
    },

    /// A preflight's URL names another endpoint than the one QUIC
    /// authenticated.
    #[error("preflight url {url} does not name the authenticated peer {authenticated}")]
    PreflightIdentityMismatch {
        /// The URL the peer claimed.
        url: String,
        /// The authenticated endpoint id, hex.
        authenticated: String,
    },

    /// The connection closed before it became usable, or while in use.
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// The close code, when the peer sent one.
        code: Option<CloseCode>,
        /// Why.
        reason: String,
    },

    /// kitsune2 refused (preflight gathering or validation).
    #[error("kitsune2 handler: {0}")]
    Handler(String),

    /// This endpoint's own URL is not known yet (no relay connection), so
    /// no preflight can name it.
    #[error("own peer url not known yet; cannot send a preflight")]
    NoLocalUrl,

    /// No local agents yet: kitsune2 cannot produce a preflight.
    #[error("no local agents during preflight")]
    NoLocalAgents,
}

impl CoreError {
    /// Builds an [`CoreError::Io`] from a backend error.
    pub fn io(op: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Io {
            op,
            message: err.to_string(),
        }
    }

    /// Maps a kitsune2 handler error, keeping the one kind the core treats
    /// specially.
    pub(crate) fn from_handler(err: K2Error) -> Self {
        match err {
            K2Error::NoLocalAgentsDuringPreflight => Self::NoLocalAgents,
            other => Self::Handler(other.to_string()),
        }
    }
}

impl From<CoreError> for K2Error {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::NoLocalAgents => Self::NoLocalAgentsDuringPreflight,
            other => Self::other(other.to_string()),
        }
    }
}
