//! The drain: how a deliberate close loses no frame (no change on the
//! wire; a stream's FIN says "no more frames on this connection").
//!
//! QUIC discards what the peer has not received when a connection closes,
//! so a side that closes on purpose (`disconnect`, `close`, supersession)
//! does not close at once:
//!
//! 1. It stops putting frames on the connection (it is out of use; new
//!    sends go to a new or the winning connection), lets the write in
//!    progress end, and finishes its stream (FIN): [`ConnProto::start_drain`].
//! 2. The peer reads up to that FIN, so every frame before it reaches its
//!    handler; then it finishes its own stream after its last frame
//!    ([`Event::PeerFinished`]) and waits for the close.
//! 3. The closing side reads up to the peer's FIN, and once its own FIN
//!    is acknowledged (the peer's QUIC received everything: received, not
//!    read), it closes with the code and reason it meant: 1 graceful,
//!    2 superseded. What the peer's QUIC received stays readable after
//!    that close, and the peer's reader reads its streams out before it
//!    judges the close (`handle_connection_lost` in `recv.rs`), so a
//!    received frame is a delivered frame: also when the peer's reader
//!    sees the close before the bytes (its task not run in between).
//! 4. Bounded: at the drain deadline the drain ends as if the peer had
//!    finished. The incumbent never finishes its stream, so against it a
//!    close takes the deadline.
//!
//! When both sides start a drain at once, each waits for the other's FIN
//! and for its own to be acknowledged before closing, so whichever closes
//! first, the other has received everything, and reads it before it acts
//! on the close.

use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::{ConnProto, Event, State};
use crate::close::CloseCode;
use crate::error::{CoreError, Initiator};

impl ConnProto {
    /// True while a drain runs.
    pub(crate) fn is_draining(&self) -> bool {
        matches!(self.state, State::Draining { .. })
    }

    /// `→ Draining` on purpose: this side closes, and `close`
    /// ([`CoreError::Disconnected`], [`CoreError::Closed`] or
    /// [`CoreError::Superseded`]) is how the connection ends once the
    /// drain is through. Returns whether a drain of ours started; after
    /// it, the driver finishes our stream and reports it with
    /// [`handle_ours_finished`](Self::handle_ours_finished).
    pub(crate) fn start_drain(&mut self, close: CoreError, now: Instant) -> bool {
        debug_assert!(close.is_deliberate(), "a drain ends deliberately");
        let deadline = now + self.drain_timeout;
        match &mut self.state {
            State::Pending { .. } | State::Validating | State::Active => {
                debug!(%close, "draining");
                self.state = State::Draining {
                    close,
                    by: Initiator::Local,
                    deadline,
                    ours_done: false,
                    peer_done: false,
                };
                true
            }
            State::Draining {
                close: end,
                by: by @ Initiator::Remote,
                ..
            } => {
                // The peer finished first; now we close too, as we meant.
                *end = close;
                *by = Initiator::Local;
                self.maybe_end_drain();
                true
            }
            _ => false,
        }
    }

    /// Our stream is finished and the peer acknowledged all of it (or we
    /// never opened one, or it failed: nothing more can go out).
    pub(crate) fn handle_ours_finished(&mut self) {
        if let State::Draining { ours_done, .. } = &mut self.state {
            *ours_done = true;
            self.maybe_end_drain();
        }
    }

    /// The peer's stream ended cleanly after its last frame, at `now`.
    pub(super) fn peer_finished(&mut self, now: Instant) {
        match &mut self.state {
            State::Active => {
                debug!("peer finished its stream: draining");
                self.state = State::Draining {
                    // Only used if the peer never closes (see
                    // `drain_timed_out`).
                    close: CoreError::ConnectionClosed {
                        code: Some(CloseCode::Graceful),
                        reason: String::new(),
                    },
                    by: Initiator::Remote,
                    deadline: now + self.drain_timeout,
                    ours_done: false,
                    peer_done: true,
                };
                self.events.push_back(Event::PeerFinished);
            }
            State::Draining { peer_done, .. } => {
                *peer_done = true;
                self.maybe_end_drain();
            }
            _ => debug!("peer finished a stream before its preflight"),
        }
    }

    /// The connection ended while draining.
    pub(super) fn drain_connection_lost(
        &mut self,
        error: CoreError,
        remote_close: Option<(CloseCode, Bytes)>,
    ) {
        let State::Draining { by, .. } = self.state else {
            return;
        };
        match (by, remote_close) {
            // We were closing anyway: it ends as we meant.
            (Initiator::Local, _) => self.end_drain(),
            (_, Some((CloseCode::Superseded, _))) => {
                self.state = State::Superseded {
                    by: Initiator::Remote,
                };
            }
            (_, Some((code, reason))) => {
                self.state = State::Closed {
                    error: CoreError::ConnectionClosed {
                        code: Some(code),
                        reason: String::from_utf8_lossy(&reason).into_owned(),
                    },
                    by: Initiator::Remote,
                };
            }
            (_, None) => {
                self.state = State::Closed {
                    error,
                    by: Initiator::Backend,
                };
            }
        }
        self.decoder = None;
        self.messages.open.clear();
    }

    /// The drain deadline passed.
    pub(super) fn drain_timed_out(&mut self) {
        let State::Draining { by, .. } = self.state else {
            return;
        };
        debug!(?by, "drain deadline reached");
        match by {
            Initiator::Local => self.end_drain(),
            // The peer said goodbye with its FIN but never closed.
            _ => {
                let State::Draining { close, .. } =
                    std::mem::replace(&mut self.state, State::Validating)
                else {
                    return;
                };
                self.state = State::Closed {
                    error: close,
                    by: Initiator::Remote,
                };
                self.decoder = None;
            }
        }
    }

    fn maybe_end_drain(&mut self) {
        if let State::Draining {
            by: Initiator::Local,
            ours_done: true,
            peer_done: true,
            ..
        } = self.state
        {
            self.end_drain();
        }
    }

    /// `Draining → Closed { close, Local }` (or `Superseded { Local }`).
    fn end_drain(&mut self) {
        let State::Draining { close, .. } = std::mem::replace(&mut self.state, State::Validating)
        else {
            return;
        };
        debug!(%close, "drain done");
        self.state = match close {
            CoreError::Superseded => State::Superseded {
                by: Initiator::Local,
            },
            error => State::Closed {
                error,
                by: Initiator::Local,
            },
        };
        // Events not yet polled (data decoded before the end) still come
        // out: poll_event hands them out whatever the state.
        self.decoder = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use kitsune2_iroh_codec::Frame;

    use super::super::tests::{active, data, read_out, t0};
    use super::*;
    use crate::proto::ConnState;

    fn disconnected() -> CoreError {
        CoreError::Disconnected {
            reason: Some("bye".to_owned()),
        }
    }

    #[test]
    fn our_drain_ends_once_both_streams_are_through() {
        let mut p = active(t0());
        assert!(p.start_drain(disconnected(), t0()));
        assert_eq!(p.state(), ConnState::Draining);
        assert!(!p.may_send_data());
        assert!(p.ended_deliberately());
        assert!(!p.start_drain(CoreError::Closed, t0()), "once");
        // The peer's frames up to its FIN are still delivered.
        p.handle_chunk(data(b"in flight"), t0());
        assert!(matches!(p.poll_event(), Some(Event::Data(_))));
        p.handle_ours_finished();
        assert_eq!(p.state(), ConnState::Draining, "the peer's FIN is missing");
        p.handle_stream_end(t0());
        assert!(p.poll_event().is_none());
        assert_eq!(p.state(), ConnState::Closed);
        assert_eq!(
            p.close_frame(),
            Some((CloseCode::Graceful, "bye".to_owned()))
        );
        assert_eq!(p.end_report(None), super::super::EndReport::Silent);
    }

    #[test]
    fn our_drain_waits_for_our_fin_to_be_acknowledged() {
        let mut p = active(t0());
        p.start_drain(CoreError::Closed, t0());
        p.handle_stream_end(t0());
        assert!(p.poll_event().is_none());
        assert_eq!(p.state(), ConnState::Draining, "our FIN is not acked yet");
        p.handle_ours_finished();
        assert_eq!(p.state(), ConnState::Closed);
    }

    #[test]
    fn a_superseding_drain_ends_superseded() {
        let mut p = active(t0());
        p.start_drain(CoreError::Superseded, t0());
        p.handle_ours_finished();
        p.handle_stream_end(t0());
        assert!(p.poll_event().is_none());
        assert_eq!(p.state(), ConnState::Superseded);
        assert_eq!(p.close_frame().unwrap().0, CloseCode::Superseded);
    }

    #[test]
    fn the_deadline_ends_a_drain_the_peer_never_answers() {
        let start = t0();
        let mut p = active(start);
        p.start_drain(disconnected(), start);
        assert_eq!(p.poll_timeout(), Some(start + Duration::from_secs(1)));
        p.handle_timeout(start + Duration::from_millis(999));
        assert_eq!(p.state(), ConnState::Draining);
        p.handle_timeout(start + Duration::from_secs(1));
        assert_eq!(p.state(), ConnState::Closed);
        assert_eq!(p.close_frame().unwrap().0, CloseCode::Graceful);
    }

    #[test]
    fn the_peers_fin_starts_its_drain_and_its_close_ends_it() {
        let mut p = active(t0());
        p.handle_chunk(data(b"last"), t0());
        p.handle_stream_end(t0());
        assert!(matches!(p.poll_event(), Some(Event::Data(_))));
        assert!(matches!(p.poll_event(), Some(Event::PeerFinished)));
        p.handle_ours_finished();
        assert_eq!(p.state(), ConnState::Draining, "waits for the peer's close");
        let close = Some((CloseCode::Graceful, Bytes::from_static(b"bye")));
        p.handle_connection_lost(CoreError::io("accept_uni", "closed"), close.clone(), t0());
        assert!(matches!(
            p.closed(),
            Some((CoreError::ConnectionClosed { .. }, Initiator::Remote))
        ));
        assert_eq!(
            p.end_report(close),
            super::super::EndReport::Disconnected {
                url: p.remote_url().unwrap().clone(),
                reason: Some("bye".to_owned()),
            }
        );
    }

    #[test]
    fn both_sides_draining_at_once() {
        let mut p = active(t0());
        p.handle_stream_end(t0());
        assert!(matches!(p.poll_event(), Some(Event::PeerFinished)));
        // Now we close too: the peer's FIN is in already.
        assert!(p.start_drain(disconnected(), t0()));
        assert_eq!(p.state(), ConnState::Draining);
        p.handle_ours_finished();
        assert_eq!(p.state(), ConnState::Closed);
        assert_eq!(p.end_report(None), super::super::EndReport::Silent);
    }

    #[test]
    fn the_peers_close_during_our_drain_ends_it_as_we_meant() {
        let mut p = active(t0());
        p.start_drain(CoreError::Superseded, t0());
        p.handle_connection_lost(
            CoreError::io("accept_uni", "closed"),
            Some((CloseCode::Superseded, Bytes::new())),
            t0(),
        );
        read_out(&mut p);
        assert_eq!(p.state(), ConnState::Superseded);
        assert_eq!(p.closed().unwrap().1, Initiator::Local);
    }

    /// Both sides drained at once: the peer read our FIN, saw its own
    /// acknowledged and closed; its last frame and FIN, which our QUIC
    /// received (and acknowledged) before the close, are still in our
    /// stream when our reader sees the close. They are delivered first.
    #[test]
    fn the_peers_close_is_judged_after_what_its_stream_holds() {
        let mut p = active(t0());
        assert!(p.start_drain(disconnected(), t0()));
        let close = Some((CloseCode::Graceful, Bytes::new()));
        p.handle_connection_lost(CoreError::io("accept_uni", "closed"), close, t0());
        assert_eq!(p.state(), ConnState::Draining, "the stream is not read out");
        assert!(p.connection_ended(), "no stream is accepted any more");
        p.handle_chunk(data(b"acknowledged before the close"), t0());
        assert!(matches!(p.poll_event(), Some(Event::Data(_))));
        p.handle_stream_end(t0());
        assert!(p.poll_event().is_none());
        assert_eq!(p.state(), ConnState::Closed);
        assert_eq!(p.closed().unwrap().1, Initiator::Local, "as we meant");
    }

    #[test]
    fn an_active_connection_delivers_what_its_stream_holds_before_the_peers_close() {
        let mut p = active(t0());
        let close = Some((CloseCode::Graceful, Bytes::from_static(b"bye")));
        p.handle_connection_lost(CoreError::io("accept_uni", "closed"), close, t0());
        assert_eq!(p.state(), ConnState::Active);
        p.handle_chunk(data(b"sent before the close"), t0());
        assert!(matches!(p.poll_event(), Some(Event::Data(_))));
        // The read after the bytes fails: the connection's end, not a
        // stream failure.
        read_out(&mut p);
        assert!(matches!(
            p.closed(),
            Some((
                CoreError::ConnectionClosed {
                    code: Some(CloseCode::Graceful),
                    ..
                },
                Initiator::Remote
            ))
        ));
    }

    #[test]
    fn a_connections_end_held_for_the_streams_is_judged_by_a_drain_timeout() {
        let start = t0();
        let mut p = active(start);
        p.handle_connection_lost(CoreError::io("accept_uni", "gone"), None, start);
        assert_eq!(p.poll_timeout(), Some(start + Duration::from_secs(1)));
        p.handle_timeout(start + Duration::from_millis(999));
        assert_eq!(p.state(), ConnState::Active);
        p.handle_timeout(start + Duration::from_secs(1));
        assert!(matches!(p.closed(), Some((_, Initiator::Backend))));
    }

    #[test]
    fn a_pending_connection_drained_still_takes_the_peers_preflight_and_data() {
        let mut p = ConnProto::new(
            super::super::Role::Dialer,
            super::super::tests::PEER,
            kitsune2_iroh_codec::Limits::default(),
            t0(),
            super::super::tests::TIMEOUTS,
        );
        p.start_drain(CoreError::Superseded, t0());
        p.handle_stream(t0());
        let mut bytes = super::super::tests::preflight(&super::super::tests::PEER).to_vec();
        bytes.extend_from_slice(&data(b"written before it lost"));
        p.handle_chunk(Bytes::from(bytes), t0());
        assert!(matches!(p.poll_event(), Some(Event::Preflight { .. })));
        assert!(p.poll_event().is_none(), "not before kitsune2 accepted it");
        p.accept_preflight();
        assert!(matches!(p.poll_event(), Some(Event::Data(_))));
        assert_eq!(p.state(), ConnState::Draining, "never active");
        p.handle_stream(t0());
        p.handle_chunk(
            Frame::preflight("http://h:1/x", Bytes::new())
                .encode(&kitsune2_iroh_codec::Limits::default())
                .unwrap()
                .to_bytes(),
            t0(),
        );
        assert!(p.poll_event().is_none());
        assert!(
            matches!(p.closed(), Some((CoreError::Codec(_), Initiator::Remote))),
            "a second preflight ends the connection, drain or not"
        );
    }
}
