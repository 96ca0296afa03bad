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
use kitsune2_api::{K2Proto, K2WireType, Url};
use kitsune2_iroh_codec::{CodecError, Frame, FrameOrder, Limits, StreamDecoder};
use tracing::debug;

use crate::close::CloseCode;
use crate::error::{CoreError, Initiator};
use crate::peer_url::{PeerAddr, format_peer_url, id_to_hex};
use crate::traits::EndpointId;

mod drain;
mod report;
#[cfg(test)]
mod tests;

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
}

impl ConnProto {
    /// A new connection in `Pending`, waiting for the peer's preflight
    /// until `deadline`.
    pub(crate) fn new(
        role: Role,
        remote_id: EndpointId,
        limits: Limits,
        now: Instant,
        preflight_timeout: Duration,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            role,
            remote_id,
            limits,
            preflight_timeout_secs: preflight_timeout.as_secs(),
            drain_timeout,
            state: State::Pending {
                deadline: now + preflight_timeout,
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

    // ---- input -----------------------------------------------------------

    /// The peer opened a new stream; its previous one, if any, is
    /// abandoned (the peer sends on one stream at a time).
    pub(crate) fn handle_stream(&mut self) {
        if !self.is_open() {
            return;
        }
        if self.decoder.is_some() {
            debug!("peer opened a new stream; abandoning its previous one");
        }
        self.decoder = Some(StreamDecoder::with_order(self.limits, FrameOrder::Any));
        self.stream_finished = false;
    }

    /// Whether a peer stream is being read; the driver drops its stream
    /// handle when this turns false.
    pub(crate) fn has_stream(&self) -> bool {
        self.decoder.is_some()
    }

    /// Bytes of the peer's current stream.
    pub(crate) fn handle_chunk(&mut self, chunk: Bytes) {
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.feed(chunk);
        }
    }

    /// The peer finished its current stream at `now`. Whole frames still
    /// buffered come out of [`poll_event`](Self::poll_event) first; a
    /// partial frame left over is then a stream error, a clean end means
    /// "no more frames on this connection" (see `drain.rs`).
    pub(crate) fn handle_stream_end(&mut self, now: Instant) {
        if self.decoder.is_some() {
            self.stream_finished = true;
            self.fin_at = Some(now);
        }
    }

    /// Reading the peer's current stream failed.
    pub(crate) fn handle_stream_error(&mut self, error: CoreError) {
        self.decoder = None;
        self.stream_failed(error, Initiator::Backend);
    }

    /// The connection is gone (accepting the peer's next stream failed).
    /// With the peer's application close in hand, that close is the error.
    pub(crate) fn handle_connection_lost(
        &mut self,
        error: CoreError,
        remote_close: Option<(CloseCode, Bytes)>,
    ) {
        if self.is_draining() {
            self.drain_connection_lost(error, remote_close);
            return;
        }
        match remote_close {
            Some((CloseCode::Superseded, _)) => self.supersede(Initiator::Remote),
            Some((code, reason)) => self.close(
                CoreError::ConnectionClosed {
                    code: Some(code),
                    reason: String::from_utf8_lossy(&reason).into_owned(),
                },
                Initiator::Remote,
            ),
            None => self.close(error, Initiator::Backend),
        };
    }

    /// Time passed: a pending connection whose deadline is reached closes
    /// with [`CoreError::PreflightTimeout`]; a drain whose deadline is
    /// reached ends as if the peer had finished.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
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
        match self.state {
            State::Pending { deadline } | State::Draining { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    // ---- output ----------------------------------------------------------

    /// The next event, decoding buffered frames as far as the state
    /// allows: nothing while validating, nothing once ended.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            let may_decode = match self.state {
                State::Pending { .. } | State::Active => true,
                // Not while kitsune2 judges a preflight that came in.
                State::Draining { .. } => self.remote_url.is_none() || self.validated,
                _ => false,
            };
            if !may_decode {
                return None;
            }
            let decoder = self.decoder.as_mut()?;
            match decoder.next_frame() {
                Ok(Some(frame)) => self.on_frame(frame),
                Ok(None) if self.stream_finished => {
                    let end = decoder.finish();
                    self.decoder = None;
                    self.stream_finished = false;
                    let at = self.fin_at.take();
                    match (end, at) {
                        (Ok(()), Some(at)) => self.peer_finished(at),
                        (Ok(()), None) => debug!("peer finished its stream"),
                        (Err(e), _) => self.stream_failed(e.into(), Initiator::Remote),
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    self.decoder = None;
                    self.stream_failed(e.into(), Initiator::Remote);
                }
            }
        }
    }

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
        self.events.clear();
        true
    }

    fn on_frame(&mut self, frame: Frame) {
        match (&self.state, frame) {
            (State::Pending { .. }, Frame::Preflight(p)) => {
                match self.check_preflight(&p.url, &p.data) {
                    Ok(url) => {
                        debug!(%url, "preflight received");
                        self.remote_url = Some(url.clone());
                        self.state = State::Validating;
                        self.events
                            .push_back(Event::Preflight { url, data: p.data });
                    }
                    Err(e) => {
                        self.close(e, Initiator::Remote);
                    }
                }
            }
            (State::Pending { .. }, frame @ Frame::Data(_)) => {
                let found = frame.frame_type();
                self.close(
                    CodecError::ExpectedPreflight { found }.into(),
                    Initiator::Remote,
                );
            }
            (State::Active, Frame::Data(data)) => self.events.push_back(Event::Data(data)),
            (State::Draining { .. }, Frame::Preflight(p)) if self.remote_url.is_none() => {
                match self.check_preflight(&p.url, &p.data) {
                    Ok(url) => {
                        self.remote_url = Some(url.clone());
                        self.events
                            .push_back(Event::Preflight { url, data: p.data });
                    }
                    Err(e) => {
                        self.close(e, Initiator::Remote);
                    }
                }
            }
            (State::Draining { .. }, frame @ Frame::Data(_)) if self.remote_url.is_none() => {
                let found = frame.frame_type();
                self.close(
                    CodecError::ExpectedPreflight { found }.into(),
                    Initiator::Remote,
                );
            }
            (State::Draining { .. }, Frame::Data(data)) => self.events.push_back(Event::Data(data)),
            (State::Active | State::Draining { .. }, Frame::Preflight(_)) => {
                self.decoder = None;
                self.stream_failed(CodecError::UnexpectedPreflight.into(), Initiator::Remote);
            }
            // poll_event decodes only in Pending, Active and Draining.
            _ => debug_assert!(false, "frame decoded in state {:?}", self.state),
        }
    }

    /// Checks a preflight: its URL must be a peer URL naming the
    /// authenticated peer (returned with the id in lower case, so one peer
    /// has one URL), and its bytes a kitsune2 message of type preflight (so
    /// that kitsune2 cannot take anything else, which it would accept
    /// without validation, for one).
    fn check_preflight(&self, url: &str, data: &Bytes) -> Result<Url, CoreError> {
        let parsed = Url::from_str(url).map_err(|_| CoreError::InvalidPeerUrl {
            url: url.to_owned(),
            why: "preflight url is not a kitsune2 url",
        })?;
        let addr = PeerAddr::parse(&parsed)?;
        if addr.id != self.remote_id {
            return Err(CoreError::PreflightIdentityMismatch {
                url: url.to_owned(),
                authenticated: id_to_hex(&self.remote_id),
            });
        }
        let found = match K2Proto::decode(data) {
            Ok(msg) if msg.ty() == K2WireType::Preflight => None,
            Ok(msg) => Some(format!("{:?}", msg.ty())),
            Err(_) => Some("bytes that are not a kitsune2 message".to_owned()),
        };
        if let Some(found) = found {
            return Err(CoreError::NotAPreflight { found });
        }
        Url::from_str(format_peer_url(&addr.relay_url, &addr.id)).map_err(|_| {
            CoreError::InvalidPeerUrl {
                url: url.to_owned(),
                why: "preflight url does not normalize",
            }
        })
    }

    /// A stream ended badly: before the peer's preflight is through, the
    /// whole connection goes; after it, only that stream.
    ///
    /// A protocol violation by the peer (a malformed or oversized frame, a
    /// second preflight) ends the whole connection at any time: every
    /// frame the peer has in flight behind it would be lost silently
    /// otherwise. The close (code 0) names the error, so a sender of this
    /// crate learns at once.
    fn stream_failed(&mut self, error: CoreError, by: Initiator) {
        let past_preflight = match self.state {
            State::Active => true,
            State::Draining { .. } => self.validated,
            _ => false,
        };
        if past_preflight && !matches!(error, CoreError::Codec(_)) {
            self.events.push_back(Event::StreamFailed(error));
        } else {
            self.close(error, by);
        }
    }
}
