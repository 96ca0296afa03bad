//! The protocol of one connection as a synchronous object: bytes and time
//! in, events and frames out, no I/O and no tokio (quinn-proto's
//! `Connection` is the model).
//!
//! # Lifecycle
//!
//! ```text
//!               peer's preflight            kitsune2 validated it,
//!               decoded, identity ok        resolution won
//!   Pending ─────────────────────▶ Validating ────────────────▶ Active
//!     │  deadline passed, bad frame,   │                          │
//!     │  stream or connection error    │ refused, lost            │ error, peer close,
//!     ▼                                ▼ resolution               ▼ disconnect, close
//!   Closed { error, by } ◀─────────────┴──────────────────────────┘
//!
//!   Pending | Validating | Active ──supersede──▶ Superseded
//! ```
//!
//! `Superseded` and `Closed` are absorbing: after them every transition is
//! refused and the first error stays (errors are sticky). The state is
//! private to this module; [`ConnProto`]'s methods are the only
//! transitions:
//!
//! | transition              | method                                   |
//! |-------------------------|------------------------------------------|
//! | Pending → Validating    | [`ConnProto::poll_event`] (decodes the preflight) |
//! | Validating → Active     | [`ConnProto::activate`]                  |
//! | any open → Superseded   | [`ConnProto::supersede`]                 |
//! | any open → Closed       | [`ConnProto::close`], or a fatal input in a `handle_*` or `poll_event` |
//!
//! # Rules owned here
//!
//! - The peer's first frame on the connection is its preflight; data
//!   before it, a second preflight, or any malformed frame ends the
//!   connection (the one owner of the "preflight first" rule, for every
//!   stream); a failed read ends only the stream it came on.
//! - The preflight URL must name the QUIC-authenticated endpoint id.
//! - The acceptor waits for the peer's preflight until a deadline.
//! - Our own preflight is the first frame on our stream: it is queued
//!   before data may be sent, and [`ConnProto::poll_transmit`] hands it
//!   out before anything else.
//! - Which kitsune2 event fires when the connection ends ([`EndReport`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kitsune2_api::Url;
use kitsune2_iroh_codec::{Frame, Limits, StreamDecoder};
use tracing::debug;

use crate::close::CloseCode;
use crate::error::{CoreError, Initiator};
use crate::traits::EndpointId;

mod drain;
mod messages;
mod recv;
mod report;
#[cfg(test)]
mod tests;

pub(crate) use messages::{MsgId, StreamSlot};
pub(crate) use report::EndReport;

/// Where a connection is in its lifecycle, as seen from outside (see the
/// module docs for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Connected; preflights not yet exchanged and checked.
    Pending,
    /// Preflights exchanged; carries data.
    Active,
    /// Closing on purpose: no new data goes out; the peer's frames up to
    /// its stream's end are still delivered.
    Draining,
    /// Lost simultaneous-open resolution; closed with code 2. Absorbing.
    Superseded,
    /// Ended. Absorbing.
    Closed,
}

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// We dialed it; our preflight goes first.
    Dialer,
    /// The peer dialed it; we answer its preflight with ours.
    Acceptor,
}

/// The private lifecycle state.
#[derive(Debug)]
enum State {
    /// Waiting for the peer's preflight until `deadline`.
    Pending { deadline: Instant },
    /// The peer's preflight is decoded and its identity checked; kitsune2
    /// and the registry decide next. No further frame is decoded.
    Validating,
    /// Both preflights are out; data flows.
    Active,
    /// Closing on purpose (see `drain.rs`): nothing new goes out; the
    /// peer's frames are delivered up to its stream's end. Ends as `close`
    /// says once our stream is finished and acknowledged and the peer's
    /// has ended (`by: Local`), or once the peer closes (`by: Remote`: it
    /// finished first), or at `deadline`.
    Draining {
        close: CoreError,
        by: Initiator,
        deadline: Instant,
        ours_done: bool,
        peer_done: bool,
    },
    /// Lost simultaneous-open resolution, decided by `by` (this side's
    /// registry, or the peer's close with code 2).
    Superseded { by: Initiator },
    /// Ended by `error`, caused by `by`.
    Closed { error: CoreError, by: Initiator },
}

/// How many frame progress timeouts a partial frame may wait for room in
/// the partial-frame budget: more than one, so that the stalled frames
/// holding the budget are closed (after one timeout) before a frame that
/// waits for them is.
const BUDGET_WAIT_FACTOR: u64 = 2;

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// How long the peer's preflight may take (from the connection's start).
    pub(crate) preflight: Duration,
    /// Bound on a deliberate close's drain.
    pub(crate) drain: Duration,
    /// How long a partially received frame may go without a new byte.
    pub(crate) frame_progress: Duration,
}

/// What the connection tells its driver.
#[derive(Debug)]
pub(crate) enum Event {
    /// The peer's preflight, identity checked: hand `data` to kitsune2,
    /// then [`ConnProto::activate`] or [`ConnProto::close`].
    Preflight {
        /// The peer's URL, as it wrote it.
        url: Url,
        /// The preflight bytes for kitsune2.
        data: Bytes,
    },
    /// A data frame from the peer.
    Data(Bytes),
    /// The peer's current stream ended with an error that does not end
    /// the connection; the driver drops that stream.
    StreamFailed(CoreError),
    /// The peer finished its stream: no more frames come on this
    /// connection. It is draining now; the driver takes it out of use and
    /// finishes our stream after our last frame.
    PeerFinished,
}

/// The protocol state of one connection.
///
/// # Usage
///
/// The driver feeds what the network gives ([`handle_stream`],
/// [`handle_chunk`], [`handle_stream_end`], [`handle_stream_error`],
/// [`handle_connection_lost`], [`handle_timeout`] at
/// [`poll_timeout`]), then drains [`poll_event`] until `None`, acting on
/// each event; writers take [`poll_transmit`] before any data and check
/// [`may_send_data`]. When [`closed`] is `Some`, the driver stops.
///
/// [`handle_stream`]: Self::handle_stream
/// [`handle_chunk`]: Self::handle_chunk
/// [`handle_stream_end`]: Self::handle_stream_end
/// [`handle_stream_error`]: Self::handle_stream_error
/// [`handle_connection_lost`]: Self::handle_connection_lost
/// [`handle_timeout`]: Self::handle_timeout
/// [`poll_timeout`]: Self::poll_timeout
/// [`poll_event`]: Self::poll_event
/// [`poll_transmit`]: Self::poll_transmit
/// [`may_send_data`]: Self::may_send_data
/// [`closed`]: Self::closed
///
/// # Invariants
///
/// - Data events come only in `Active`, after the `Preflight` event.
/// - Once `Superseded` or `Closed`, the state never changes again and
///   `closed()` keeps returning the first error.
/// - [`end_report`](Self::end_report) reports a connection at most once.
#[derive(Debug)]
pub(crate) struct ConnProto {
    role: Role,
    remote_id: EndpointId,
    limits: Limits,
    preflight_timeout_secs: u64,
    drain_timeout: Duration,
    frame_progress_timeout: Duration,
    state: State,
    /// Decoder of the peer's current stream, `None` between streams.
    decoder: Option<StreamDecoder>,
    /// The peer finished its current stream: once its whole frames are
    /// out, what is left is judged.
    stream_finished: bool,
    /// Events decided but not yet polled.
    events: VecDeque<Event>,
    /// The peer's URL, from its preflight.
    remote_url: Option<Url>,
    /// Our preflight, until a writer takes it.
    transmit: VecDeque<Frame>,
    /// Our preflight was queued (it is or will be the first frame out).
    preflight_queued: bool,
    /// Whether the connection ever became active.
    was_active: bool,
    /// kitsune2 accepted the peer's preflight.
    validated: bool,
    /// The peer's stream ended cleanly at this time (judged once its
    /// frames are out).
    fin_at: Option<Instant>,
    /// Whether the end was reported to kitsune2 already.
    reported: bool,
    /// When the peer's bytes last arrived: a partial frame must get more
    /// by `last_progress + frame_progress_timeout`.
    last_progress: Instant,
    /// `(budget, since)` while the driver is not reading because the
    /// partial-frame budget (of `budget` bytes) has no room, since then.
    budget_wait: Option<(usize, Instant)>,
    /// The wire version and, on `kitsune2/1`, the peer's message streams
    /// (`messages.rs`).
    messages: messages::Messages,
    /// The connection's end, seen while the peer's streams were still
    /// being read: judged once they are read out (`recv.rs`).
    lost: Option<Lost>,
}

/// The connection's end, held until the peer's streams are read out.
#[derive(Debug)]
struct Lost {
    /// What the backend reported.
    error: CoreError,
    /// The peer's application close, if it sent one.
    remote_close: Option<(CloseCode, Bytes)>,
    /// The end is judged at this time at the latest.
    deadline: Instant,
}

impl ConnProto {
    /// A new connection in `Pending`, started at `now`, waiting for the
    /// peer's preflight until `now + timeouts.preflight`.
    pub(crate) fn new(
        role: Role,
        remote_id: EndpointId,
        limits: Limits,
        now: Instant,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            role,
            remote_id,
            limits,
            preflight_timeout_secs: timeouts.preflight.as_secs(),
            drain_timeout: timeouts.drain,
            frame_progress_timeout: timeouts.frame_progress,
            state: State::Pending {
                deadline: now + timeouts.preflight,
            },
            decoder: None,
            stream_finished: false,
            events: VecDeque::new(),
            remote_url: None,
            transmit: VecDeque::new(),
            preflight_queued: false,
            was_active: false,
            validated: false,
            fin_at: None,
            reported: false,
            last_progress: now,
            budget_wait: None,
            messages: messages::Messages::default(),
            lost: None,
        }
    }

    /// The lifecycle state as seen from outside.
    pub(crate) fn state(&self) -> ConnState {
        match self.state {
            State::Pending { .. } | State::Validating => ConnState::Pending,
            State::Active => ConnState::Active,
            State::Draining { .. } => ConnState::Draining,
            State::Superseded { .. } => ConnState::Superseded,
            State::Closed { .. } => ConnState::Closed,
        }
    }

    /// Which side opened the connection.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The peer's URL, once its preflight was decoded.
    pub(crate) fn remote_url(&self) -> Option<&Url> {
        self.remote_url.as_ref()
    }

    fn is_open(&self) -> bool {
        !matches!(self.state, State::Superseded { .. } | State::Closed { .. })
    }

    /// The error that ended the connection and who caused it; a
    /// superseded connection reports [`CoreError::Superseded`].
    pub(crate) fn closed(&self) -> Option<(CoreError, Initiator)> {
        match &self.state {
            State::Closed { error, by } => Some((error.clone(), *by)),
            State::Superseded { by } => Some((CoreError::Superseded, *by)),
            _ => None,
        }
    }

    /// The application close to send for this connection's end.
    pub(crate) fn close_frame(&self) -> Option<(CloseCode, String)> {
        self.closed()
            .map(|(error, _)| (error.close_code(), error.close_reason()))
    }

    /// True when it ended on purpose, by either side (see
    /// [`CoreError::is_deliberate`]).
    pub(crate) fn ended_deliberately(&self) -> bool {
        matches!(self.state, State::Draining { .. })
            || self.closed().is_some_and(|(e, _)| e.is_deliberate())
    }

    /// Time passed: a pending connection whose deadline is reached closes
    /// with [`CoreError::PreflightTimeout`]; a drain whose deadline is
    /// reached ends as if the peer had finished; a partial frame past its
    /// progress deadline closes the connection with
    /// [`CoreError::FrameStalled`] (or [`CoreError::FrameBudgetExhausted`]
    /// while the driver waits for the budget).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.frame_deadline().is_some_and(|d| now >= d) {
            let secs = self.frame_progress_timeout.as_secs();
            let (error, by) = match self.budget_wait {
                Some((budget, _)) => (
                    CoreError::FrameBudgetExhausted {
                        budget,
                        secs: secs * BUDGET_WAIT_FACTOR,
                    },
                    Initiator::Local,
                ),
                None => (CoreError::FrameStalled { secs }, Initiator::Remote),
            };
            self.close(error, by);
            return;
        }
        if self.message_deadline().is_some_and(|d| now >= d) {
            if let Some((budget, _)) = self.budget_wait {
                let secs = self.frame_progress_timeout.as_secs() * BUDGET_WAIT_FACTOR;
                self.close(
                    CoreError::FrameBudgetExhausted { budget, secs },
                    Initiator::Local,
                );
                return;
            }
            self.message_timeouts(now);
        }
        if self.lost.as_ref().is_some_and(|l| now >= l.deadline) {
            debug!("the peer's streams were not read out in time after the connection's end");
            self.judge_lost(true);
            return;
        }
        match self.state {
            State::Pending { deadline } if now >= deadline => {
                let secs = self.preflight_timeout_secs;
                self.close(CoreError::PreflightTimeout { secs }, Initiator::Remote);
            }
            State::Draining { deadline, .. } if now >= deadline => self.drain_timed_out(),
            _ => {}
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            State::Pending { deadline } | State::Draining { deadline, .. } => Some(deadline),
            _ => None,
        };
        let lost = self.lost.as_ref().map(|l| l.deadline);
        [state, self.frame_deadline(), self.message_deadline(), lost]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- output ----------------------------------------------------------

    /// Our next frame to write, before any data: our preflight.
    pub(crate) fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    /// Whether data may be written now: active, with our preflight
    /// handed out first.
    pub(crate) fn may_send_data(&self) -> bool {
        matches!(self.state, State::Active) && self.transmit.is_empty()
    }

    // ---- transitions -----------------------------------------------------

    /// Queues our preflight, naming `own_url`: the first frame out.
    pub(crate) fn queue_preflight(&mut self, own_url: &Url, data: Bytes) {
        debug_assert!(!self.preflight_queued, "one preflight per connection");
        self.transmit
            .push_front(Frame::preflight(own_url.as_str(), data));
        self.preflight_queued = true;
    }

    /// `Validating → Active`: kitsune2 accepted the peer's preflight, our
    /// preflight is queued and the connection won resolution. Returns
    /// false (and changes nothing) in any other state.
    pub(crate) fn activate(&mut self) -> bool {
        if !matches!(self.state, State::Validating) {
            return false;
        }
        debug_assert!(self.preflight_queued, "our preflight goes out first");
        self.state = State::Active;
        self.was_active = true;
        self.validated = true;
        true
    }

    /// kitsune2 accepted the peer's preflight on a connection that is
    /// draining (it lost resolution while kitsune2 judged): the peer's
    /// frames after it are delivered until its stream ends, but the
    /// connection does not become active.
    pub(crate) fn accept_preflight(&mut self) {
        self.validated = true;
    }

    /// `→ Superseded`: a preferred connection to the same peer won, as
    /// `by` decided. Returns whether this call made the change.
    pub(crate) fn supersede(&mut self, by: Initiator) -> bool {
        if !self.is_open() {
            return false;
        }
        self.state = State::Superseded { by };
        self.decoder = None;
        self.messages.open.clear();
        self.events.clear();
        true
    }

    /// `→ Closed { error, by }`, unless already ended (the first error
    /// stays). Returns whether this call made the change.
    pub(crate) fn close(&mut self, error: CoreError, by: Initiator) -> bool {
        if !self.is_open() {
            return false;
        }
        debug!(%error, ?by, "connection closing");
        self.state = State::Closed { error, by };
        self.decoder = None;
        self.messages.open.clear();
        self.events.clear();
        true
    }
}
