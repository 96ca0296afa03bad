//! The core's one error type, who caused each error, and the close code
//! that follows from it.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use kitsune2_api::K2Error;
use kitsune2_iroh_codec::CodecError;

use crate::close::{
    CloseCode, SUPERSEDED_REASON, TRANSPORT_CLOSED_REASON, TRANSPORT_DROPPED_REASON,
};

/// Who caused an error (as h2's `Initiator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// This side: a call of the user (`disconnect`, `close`, drop) or a
    /// decision of this transport (supersession, a refused preflight).
    Local,
    /// The peer: what it sent, what it failed to send in time, its close.
    Remote,
    /// The network backend: a failed connect, read, write or stream.
    Backend,
}

/// An error of the network backend, kept whole so callers can inspect it
/// ([`BackendError::get`], [`Error::source`]) and cheap to clone.
///
/// Its `Display` renders the backend error with its chain of causes, so a
/// log line or a `K2Error` message says everything at once.
#[derive(Clone)]
pub struct BackendError(Arc<dyn Error + Send + Sync>);

impl BackendError {
    /// Wraps a backend error (or a message: `&str` and `String` convert).
    pub fn new(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self(Arc::from(err.into()))
    }

    /// The backend's error itself, e.g. to `downcast_ref` it.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl Error for BackendError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// Errors of the transport core.
///
/// Converted to [`K2Error`] at the kitsune2 boundary ([`From`] impl, the
/// error kept as its source); the message of each variant names the peer
/// or the numbers involved. Each error knows who caused it
/// ([`CoreError::initiator`]) and which close code a connection ended by
/// it carries ([`CoreError::close_code`]).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The transport was closed; nothing more can be sent.
    #[error("transport closed")]
    Closed,

    /// The transport was dropped without `close()`.
    #[error("transport dropped")]
    Dropped,

    /// This side disconnected the peer on purpose.
    #[error("disconnected{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Disconnected {
        /// The reason given to `disconnect`, if any.
        reason: Option<String>,
    },

    /// Simultaneous open: a preferred connection to the same peer won.
    #[error("superseded by a preferred connection")]
    Superseded,

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
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },

    /// A handshake with the peer failed in a way that may pass: it timed
    /// out, or the peer reset or dropped it (busy, or its packets were
    /// lost). The core dials again while the connect timeout lasts; a
    /// send sees this only once that ran out.
    #[error("connect failed: {source}")]
    HandshakeFailed {
        /// The backend's error.
        #[source]
        source: BackendError,
    },

    /// Bytes from or for the wire were not valid frames, or frames came in
    /// an order the protocol forbids.
    #[error("frame error: {0}")]
    Codec(#[from] CodecError),

    /// The peer did not send its preflight in time. A connection closed
    /// for it carries this message as its close reason, which
    /// [`CoreError::is_busy_close_reason`] recognizes.
    #[error("{PREFLIGHT_TIMEOUT_REASON} {secs} s")]
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

    /// An incoming connection was refused: a limit is reached. A
    /// connection closed for it carries this message as its close reason,
    /// which [`CoreError::is_busy_close_reason`] recognizes.
    #[error("{TOO_MANY_REASON} {what} (limit {limit})")]
    TooManyConnections {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: usize,
    },

    /// A write to the peer made no progress for the write timeout (the
    /// peer reads nothing).
    #[error("the peer took none of our bytes for {secs} s")]
    WriteTimeout {
        /// The timeout, in seconds.
        secs: u64,
    },

    /// A frame from the peer received no byte for the frame progress
    /// timeout, mid-frame (the peer stalls).
    #[error("the peer sent no byte of its partial frame for {secs} s")]
    FrameStalled {
        /// The timeout, in seconds.
        secs: u64,
    },

    /// A frame from the peer could not go on for the frame progress
    /// timeout because the transport-wide budget for partial frames had
    /// no room for it.
    #[error("no room for the peer's partial frame in the {budget}-byte budget for {secs} s")]
    FrameBudgetExhausted {
        /// The budget, in bytes.
        budget: usize,
        /// The timeout, in seconds.
        secs: u64,
    },

    /// The peer had more `kitsune2/1` message streams open at once than
    /// this side allows (QUIC's stream limit makes an honest peer wait).
    #[error("the peer opened more than {max} message streams at once")]
    TooManyMessageStreams {
        /// The limit, in streams.
        max: usize,
    },

    /// Nothing arrived from the peer for the silence timeout on an
    /// established connection: it crashed, froze or lost its network.
    #[error("nothing from the peer for {secs} s")]
    PeerSilent {
        /// The timeout, in seconds.
        secs: u64,
    },

    /// A setting is out of range.
    #[error("invalid config: {field} {why}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },

    /// The peer's preflight carries something else than a kitsune2
    /// preflight message.
    #[error("the peer's preflight is not a kitsune2 preflight: {found}")]
    NotAPreflight {
        /// What it carries instead.
        found: String,
    },

    /// The peer closed the connection (with an application close when
    /// `code` is set).
    #[error("connection closed: {reason}")]
    ConnectionClosed {
        /// The close code, when the peer sent one.
        code: Option<CloseCode>,
        /// Why.
        reason: String,
    },

    /// kitsune2 refused (preflight gathering or validation).
    #[error("kitsune2 handler: {0}")]
    Handler(#[source] K2Error),

    /// This endpoint's own URL is not known yet (no relay connection), so
    /// no preflight can name it.
    #[error("own peer url not known yet; cannot send a preflight")]
    NoLocalUrl,

    /// No local agents yet: kitsune2 cannot produce a preflight.
    #[error("no local agents during preflight")]
    NoLocalAgents,
}

/// The start of the close reason of a connection closed because the
/// peer's preflight did not come in time (the message of
/// [`CoreError::PreflightTimeout`]).
const PREFLIGHT_TIMEOUT_REASON: &str = "no preflight from the peer within";

/// The start of the close reason of a connection refused at a limit (the
/// message of [`CoreError::TooManyConnections`]).
const TOO_MANY_REASON: &str = "too many";

impl CoreError {
    /// Whether a peer's close `reason` says it was too busy for our
    /// connection: it refused it at one of its connection limits, or gave
    /// up waiting for our preflight (a peer of this crate; the incumbent
    /// sends no such reason). Not a refusal of us, so the dial may be
    /// tried again.
    pub fn is_busy_close_reason(reason: &str) -> bool {
        reason.starts_with(PREFLIGHT_TIMEOUT_REASON) || reason.starts_with(TOO_MANY_REASON)
    }

    /// Builds a [`CoreError::Io`] from a backend error or message.
    pub fn io(op: &'static str, err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Io {
            op,
            source: BackendError::new(err),
        }
    }

    /// Builds a [`CoreError::HandshakeFailed`] from a backend error.
    pub fn handshake_failed(err: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::HandshakeFailed {
            source: BackendError::new(err),
        }
    }

    /// Maps a kitsune2 handler error, keeping the one kind the core treats
    /// specially.
    pub(crate) fn from_handler(err: K2Error) -> Self {
        match err {
            K2Error::NoLocalAgentsDuringPreflight => Self::NoLocalAgents,
            other => Self::Handler(other),
        }
    }

    /// Who caused this error.
    pub fn initiator(&self) -> Initiator {
        match self {
            Self::Closed
            | Self::Dropped
            | Self::Disconnected { .. }
            | Self::Superseded
            | Self::InvalidPeerUrl { .. }
            | Self::SelfConnect
            | Self::Handler(_)
            | Self::NoLocalUrl
            | Self::TooManyConnections { .. }
            | Self::FrameBudgetExhausted { .. }
            | Self::InvalidConfig { .. }
            | Self::NoLocalAgents => Initiator::Local,
            Self::Codec(_)
            | Self::PreflightTimeout { .. }
            | Self::PreflightIdentityMismatch { .. }
            | Self::NotAPreflight { .. }
            | Self::WriteTimeout { .. }
            | Self::FrameStalled { .. }
            | Self::PeerSilent { .. }
            | Self::TooManyMessageStreams { .. }
            | Self::ConnectionClosed { .. } => Initiator::Remote,
            Self::ConnectTimeout { .. }
            | Self::RelayDown { .. }
            | Self::Io { .. }
            | Self::HandshakeFailed { .. } => Initiator::Backend,
        }
    }

    /// The application close code of a connection this error ends: 1 for
    /// a deliberate goodbye, 2 for supersession, 0 for everything else
    /// (failures, and a dropped transport, which peers must take as lost).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Closed | Self::Disconnected { .. } => CloseCode::Graceful,
            Self::Superseded => CloseCode::Superseded,
            _ => CloseCode::Unspecified,
        }
    }

    /// The reason text sent with the close: the wire's conventional text
    /// for the deliberate closes, the error's message otherwise.
    pub fn close_reason(&self) -> String {
        match self {
            Self::Closed => TRANSPORT_CLOSED_REASON.to_owned(),
            Self::Dropped => TRANSPORT_DROPPED_REASON.to_owned(),
            Self::Superseded => SUPERSEDED_REASON.to_owned(),
            Self::Disconnected { reason } => reason.clone().unwrap_or_default(),
            other => other.to_string(),
        }
    }

    /// True for the errors that end a connection on purpose, on either
    /// side: a disconnect, a transport close, supersession, or the peer's
    /// graceful or superseded close.
    pub fn is_deliberate(&self) -> bool {
        match self {
            Self::Closed | Self::Disconnected { .. } | Self::Superseded => true,
            Self::ConnectionClosed { code, .. } => {
                matches!(code, Some(CloseCode::Graceful | CloseCode::Superseded))
            }
            _ => false,
        }
    }
}

impl From<CoreError> for K2Error {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::NoLocalAgents => Self::NoLocalAgentsDuringPreflight,
            other => Self::other_src(other.to_string(), other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_keep_their_source_and_show_their_chain() {
        let inner = std::io::Error::other("socket gone");
        let err = CoreError::io("read", inner);
        assert_eq!(err.to_string(), "read failed: socket gone");
        let CoreError::Io { source, .. } = &err else {
            panic!("not io");
        };
        assert!(source.get().downcast_ref::<std::io::Error>().is_some());
        assert!(Error::source(&err).is_some());
        let k2: K2Error = err.clone().into();
        assert!(k2.to_string().contains("read failed: socket gone"), "{k2}");
        assert!(Error::source(&k2).is_some(), "the core error is kept");
    }

    #[test]
    fn close_codes_follow_from_the_error() {
        assert_eq!(CoreError::Closed.close_code(), CloseCode::Graceful);
        let bye = CoreError::Disconnected {
            reason: Some("bye".into()),
        };
        assert_eq!(bye.close_code(), CloseCode::Graceful);
        assert_eq!(bye.close_reason(), "bye");
        assert_eq!(CoreError::Superseded.close_code(), CloseCode::Superseded);
        assert_eq!(CoreError::Dropped.close_code(), CloseCode::Unspecified);
        let timeout = CoreError::PreflightTimeout { secs: 10 };
        assert_eq!(timeout.close_code(), CloseCode::Unspecified);
        assert_eq!(timeout.initiator(), Initiator::Remote);
        assert_eq!(CoreError::io("x", "y").initiator(), Initiator::Backend);
        assert_eq!(CoreError::Closed.initiator(), Initiator::Local);
    }

    #[test]
    fn handler_errors_keep_the_k2_error() {
        let err = CoreError::from_handler(K2Error::other("nope"));
        assert!(matches!(err, CoreError::Handler(_)));
        assert!(Error::source(&err).is_some());
        assert!(matches!(
            CoreError::from_handler(K2Error::NoLocalAgentsDuringPreflight),
            CoreError::NoLocalAgents
        ));
    }
}
