//! Core settings.

use std::time::Duration;

use kitsune2_iroh_codec::DEFAULT_MAX_FRAME_BYTES;

/// How long the acceptor waits for the dialer's preflight, and the dialer
/// for the acceptor's answer.
pub const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on establishing a connection (`connectTimeoutS`: 60 s,
/// as the incumbent).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default [`CoreConfig::drain_timeout`]: 1 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Default [`CoreConfig::write_timeout`]: 20 s without progress.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(20);

/// Default [`CoreConfig::max_pending_connections`]: 128, well above what
/// honest peers dialing at once need (each leaves pending within a round
/// trip), well below what exhausts memory (~100 KiB each).
pub const DEFAULT_MAX_PENDING_CONNECTIONS: usize = 128;

/// Default [`CoreConfig::max_connections`]: 4096 (a kitsune2 node talks to
/// hundreds of peers; each connection costs ~100 KiB).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default [`CoreConfig::partial_frame_budget`]: 256 MiB, room for two
/// frames of the default 100 MiB limit arriving at once and many smaller
/// ones.
pub const DEFAULT_PARTIAL_FRAME_BUDGET: usize = 256 * 1024 * 1024;

/// Default [`CoreConfig::frame_progress_timeout`]: 30 s.
pub const DEFAULT_FRAME_PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`CoreConfig::large_message_bytes`]: 64 KiB.
pub const DEFAULT_LARGE_MESSAGE_BYTES: usize = 64 * 1024;

/// Default [`CoreConfig::max_message_streams`]: 16.
pub const DEFAULT_MAX_MESSAGE_STREAMS: usize = 16;

/// Default [`CoreConfig::silence_timeout`]: 10 s.
pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`CoreConfig::max_concurrent_dials`]: 4.
pub const DEFAULT_MAX_CONCURRENT_DIALS: usize = 4;

/// How long one dial's handshake holds its place among the
/// [`CoreConfig::max_concurrent_dials`]: a peer that does not answer (or
/// answers slowly) must not hold up dials to others for a connect timeout.
pub const DIAL_SLOT_HOLD: Duration = Duration::from_secs(1);

/// Settings of a [`CoreTransport`](crate::CoreTransport).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Largest frame, header included, sent or accepted.
    pub max_frame_bytes: usize,
    /// Bound on establishing a connection (`connectTimeoutS`).
    pub connect_timeout: Duration,
    /// Bound on the preflight exchange ([`PREFLIGHT_TIMEOUT`]).
    pub preflight_timeout: Duration,
    /// Bound on a deliberate close's drain: how long a closing side waits
    /// for the peer to finish its stream (and to acknowledge ours) before
    /// it closes anyway. See `docs/architecture.md`, "Drain".
    pub drain_timeout: Duration,
    /// How long a write to a peer may make no progress (the peer reads
    /// nothing) before the send fails with `WriteTimeout`, the connection
    /// is closed and the peer is marked unresponsive.
    pub write_timeout: Duration,
    /// Incoming connections that may wait for their preflight at once;
    /// more are refused (code 0). Peers already connected are unaffected.
    pub max_pending_connections: usize,
    /// Live connections in total above which incoming ones are refused
    /// (our own dials are not limited).
    pub max_connections: usize,
    /// Bytes that partially received frames may hold across all
    /// connections, beyond a free 64 KiB per connection
    /// ([`UNBUDGETED_PARTIAL_BYTES`](crate::UNBUDGETED_PARTIAL_BYTES)).
    /// A connection that needs more than the budget has left is not read
    /// until there is room (its peer waits on QUIC flow control). Must be
    /// at least `max_frame_bytes`, so that the largest frame can arrive.
    pub partial_frame_budget: usize,
    /// How long a partially received frame may go without a new byte
    /// from the peer before the connection is closed (`FrameStalled`); a
    /// frame that waits for room in the partial-frame budget may wait
    /// twice as long (`FrameBudgetExhausted`), so that the stalled frames
    /// holding the budget go first.
    pub frame_progress_timeout: Duration,
    /// On a `kitsune2/1` connection, a data message larger than this
    /// (payload bytes) goes on a uni stream of its own, so that it does not
    /// hold up the small ones sent after it; smaller ones go on the control
    /// stream, in order. Ignored on `kitsune2/0`.
    pub large_message_bytes: usize,
    /// On a `kitsune2/1` connection, how many message streams the peer may
    /// have open towards us at once. The backend enforces it at the peer
    /// (the iroh adapter: QUIC's `max_concurrent_uni_streams` is this plus
    /// one for the control stream), so an honest peer waits; a peer past it
    /// is closed ([`CoreError::TooManyMessageStreams`](crate::CoreError::TooManyMessageStreams)).
    pub max_message_streams: usize,
    /// How long an established connection may hear nothing from the peer
    /// (see [`Connection::silent_for`](crate::Connection::silent_for))
    /// before it is closed as lost (`PeerSilent`) and the peer is marked
    /// unresponsive: a peer that crashed, froze or lost its network. Checked
    /// every second. Handshakes are not covered: the backend bounds those.
    pub silence_timeout: Duration,
    /// Handshakes of our own dials that may be under way at once; a dial
    /// past it waits for one to finish, or to have run for
    /// [`DIAL_SLOT_HOLD`] (within its connect timeout, and using the peer's
    /// own connection if that becomes active meanwhile). A burst of first
    /// sends to many new peers so starts a few handshakes at a time instead
    /// of all at once, which on a busy machine lets each finish instead of
    /// all of them losing packets and missing their deadlines. At least 1.
    pub max_concurrent_dials: usize,
    /// Bound on the best-effort delivery of a disconnect message.
    pub disconnect_send_timeout: Duration,
    /// Backend name reported by `dump_network_stats`.
    pub backend: String,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            preflight_timeout: PREFLIGHT_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_pending_connections: DEFAULT_MAX_PENDING_CONNECTIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            partial_frame_budget: DEFAULT_PARTIAL_FRAME_BUDGET,
            frame_progress_timeout: DEFAULT_FRAME_PROGRESS_TIMEOUT,
            large_message_bytes: DEFAULT_LARGE_MESSAGE_BYTES,
            max_message_streams: DEFAULT_MAX_MESSAGE_STREAMS,
            silence_timeout: DEFAULT_SILENCE_TIMEOUT,
            max_concurrent_dials: DEFAULT_MAX_CONCURRENT_DIALS,
            disconnect_send_timeout: Duration::from_secs(1),
            backend: "iroh".to_owned(),
        }
    }
}
