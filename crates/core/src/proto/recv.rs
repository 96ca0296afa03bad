//! The receive side of a connection's protocol: the peer's streams in,
//! frames decoded as far as the state allows, events out. The "preflight
//! first" rule, the preflight checks and what a bad stream ends live here.

use std::time::Instant;

use bytes::Bytes;
use kitsune2_api::{K2Proto, K2WireType, Url};
use kitsune2_iroh_codec::{CodecError, Frame, FrameOrder, StreamDecoder};
use tracing::debug;

use super::{BUDGET_WAIT_FACTOR, ConnProto, Event, Lost, State};
use crate::close::CloseCode;
use crate::error::{CoreError, Initiator};
use crate::peer_url::{PeerAddr, format_peer_url, id_to_hex};
use crate::version::WireVersion;

impl ConnProto {
    // ---- input -----------------------------------------------------------

    /// The peer's control stream (on `/0` its one stream) opened; its
    /// previous one, if any, is abandoned (the peer sends on one stream at
    /// a time). See [`handle_stream`](Self::handle_stream).
    pub(super) fn handle_control_stream(&mut self) {
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

    /// Bytes of the peer's current stream, arrived at `now`.
    pub(crate) fn handle_chunk(&mut self, chunk: Bytes, now: Instant) {
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.feed(chunk);
            self.last_progress = now;
        }
    }

    /// Bytes of the peer's stream held until their frame is complete (all
    /// buffered bytes: call after [`poll_event`](Self::poll_event)
    /// returned `None`, when only a partial frame is left).
    pub(crate) fn partial_frame_bytes(&self) -> usize {
        self.decoder.as_ref().map_or(0, StreamDecoder::buffered_len) + self.message_bytes()
    }

    /// At `now` the driver stops reading the peer's stream because the
    /// partial-frame budget of `budget` bytes has no room (`Some`), or
    /// reads it (`None`).
    ///
    /// While it waits, the peer is not to blame for the frame's lack of
    /// progress: the frame's deadline is then `BUDGET_WAIT_FACTOR`
    /// progress timeouts from the start of the wait, and passing it names
    /// the budget; once reading again, the peer's progress clock restarts.
    pub(crate) fn set_budget_wait(&mut self, budget: Option<usize>, now: Instant) {
        match (budget, self.budget_wait) {
            (Some(_), Some(_)) => {}
            (Some(budget), None) => self.budget_wait = Some((budget, now)),
            (None, Some(_)) => {
                self.budget_wait = None;
                self.last_progress = now;
                self.restart_message_clocks(now);
            }
            (None, None) => {}
        }
    }

    /// When a partial frame of the peer must have received its next byte:
    /// only while one is partly received and frames are being decoded.
    pub(super) fn frame_deadline(&self) -> Option<Instant> {
        let mid_frame = self
            .decoder
            .as_ref()
            .is_some_and(StreamDecoder::is_mid_frame);
        if !(self.may_decode() && mid_frame) {
            return None;
        }
        Some(match self.budget_wait {
            Some((_, since)) => since + self.frame_progress_timeout * BUDGET_WAIT_FACTOR as u32,
            None => self.last_progress + self.frame_progress_timeout,
        })
    }

    /// Whether the peer's frames are decoded now: not while kitsune2
    /// judges a preflight that came in, not once ended.
    fn may_decode(&self) -> bool {
        match self.state {
            State::Pending { .. } | State::Active => true,
            State::Draining { .. } => self.remote_url.is_none() || self.validated,
            _ => false,
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
        if self.lost.is_some() {
            // The connection's end, met after the bytes received before
            // it: judged as the end, not as a stream failure.
            debug!(%error, "the peer's stream is read out");
            return;
        }
        self.stream_failed(error, Initiator::Backend);
    }

    /// The connection is gone (accepting the peer's next stream failed).
    /// With the peer's application close in hand, that close is the error.
    ///
    /// What the peer's streams received before the end is still read (QUIC
    /// keeps it, and acknowledged it: a peer whose drain saw its FIN
    /// acknowledged closes at once, and our reader may see that close
    /// before the bytes): while a stream of the peer is being read whose
    /// frames are delivered, the end is judged only once the streams are read out
    /// (ended or failed, see [`poll_event`](Self::poll_event)), or a drain
    /// timeout after `now`. The driver accepts no stream meanwhile
    /// ([`connection_ended`](Self::connection_ended)).
    pub(crate) fn handle_connection_lost(
        &mut self,
        error: CoreError,
        remote_close: Option<(CloseCode, Bytes)>,
        now: Instant,
    ) {
        if self.lost.is_some() {
            return;
        }
        if self.reading_out() {
            debug!(%error, "connection ended; reading what the peer's streams hold first");
            self.lost = Some(Lost {
                error,
                remote_close,
                deadline: now + self.drain_timeout,
            });
            return;
        }
        self.connection_lost(error, remote_close);
    }

    /// The backend reported the connection's end: no stream of the peer
    /// is to be accepted any more (those it had are still read).
    pub(crate) fn connection_ended(&self) -> bool {
        self.lost.is_some() || !self.is_open()
    }

    /// A stream of the peer is being read whose frames are delivered:
    /// active, or draining (also a connection that lost resolution before
    /// the peer's preflight was read, see `drain.rs`). Not while pending:
    /// a peer that wrote on a connection we have not made active yet
    /// waits for our FIN up to its drain deadline before it closes.
    fn reading_out(&self) -> bool {
        let reading = self.decoder.is_some() || !self.messages.open.is_empty();
        reading && !matches!(self.state, State::Pending { .. }) && self.may_decode()
    }

    /// Judges the connection's end held in `lost` once the peer's
    /// streams are read out, or at once when `now`.
    pub(super) fn judge_lost(&mut self, now: bool) {
        if self.lost.is_none() || (!now && self.reading_out()) {
            return;
        }
        // INVARIANT: checked just above.
        let lost = self.lost.take().expect("a held end");
        if self.is_open() {
            self.connection_lost(lost.error, lost.remote_close);
        }
    }

    fn connection_lost(&mut self, error: CoreError, remote_close: Option<(CloseCode, Bytes)>) {
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

    /// The next event, decoding buffered frames as far as the state
    /// allows: nothing while validating, nothing once ended. Once none is
    /// left and the peer's streams are read out, a connection's end seen
    /// meanwhile is judged.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let event = self.next_event();
        if event.is_none() {
            self.judge_lost(false);
        }
        event
    }

    fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if !self.may_decode() {
                return None;
            }
            if self.poll_messages() || self.poll_peer_finished() {
                continue;
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
                        // `/0`: the FIN is the end at once; `/1`: once the
                        // message streams have ended too.
                        (Ok(()), Some(at)) if self.wire_version() == WireVersion::V0 => {
                            self.peer_finished(at);
                        }
                        (Ok(()), Some(at)) => self.control_finished(at),
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
        // On `/1` there is one control stream: its failure ends the
        // connection (a new stream would be a message stream).
        let v1 = self.wire_version() == WireVersion::V1;
        if past_preflight && !v1 && !matches!(error, CoreError::Codec(_)) {
            self.events.push_back(Event::StreamFailed(error));
        } else {
            self.close(error, by);
        }
    }
}
