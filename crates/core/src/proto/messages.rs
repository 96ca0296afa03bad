//! `kitsune2/1` message streams on the receive side: the peer's streams
//! after its first (the control stream), each carrying one data frame and
//! then its end (`docs/wire-format.md`, "kitsune2/1").
//!
//! # Rules owned here
//!
//! - On `/1` the peer's first stream is its control stream (frames as on
//!   `/0`); every later one is a message stream. On `/0` a new stream
//!   replaces the previous one, as before.
//! - At most `max_message_streams` message streams are open at once; one
//!   more ends the connection ([`CoreError::TooManyMessageStreams`]).
//! - Message streams are read only once kitsune2 accepted the peer's
//!   preflight (until then they wait, unread, in the backend's flow
//!   control), and their message is delivered as soon as its frame is
//!   whole; the stream must then end.
//! - A malformed message stream (a preflight, a second frame, an end
//!   mid-frame) is a protocol violation and ends the connection, as on the
//!   control stream. A message stream that fails (the peer reset it: its
//!   send was cancelled) is discarded alone, its partial message with it.
//! - A message stream that receives nothing for the frame progress timeout
//!   before its end is discarded (the driver drops it: the peer's write
//!   fails), and `StreamFailed` says so.
//! - The peer's control FIN means "no more frames" only once every message
//!   stream it opened before has ended: `PeerFinished` waits for them.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use kitsune2_iroh_codec::{Frame, FrameOrder, StreamDecoder};
use tracing::debug;

use super::{BUDGET_WAIT_FACTOR, ConnProto, Event, State};
use crate::error::{CoreError, Initiator};
use crate::version::WireVersion;

/// A message stream's local id, given by [`ConnProto::handle_stream`].
pub(crate) type MsgId = u64;

/// What a new stream of the peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamSlot {
    /// The control stream (on `/0`: the one stream).
    Control,
    /// A `/1` message stream.
    Message(MsgId),
}

/// One open message stream.
#[derive(Debug)]
pub(super) struct MsgStream {
    decoder: StreamDecoder,
    /// When its bytes last arrived (or it was opened).
    last_progress: Instant,
    /// The peer finished it.
    ended: bool,
}

/// The `/1` receive state of a connection.
#[derive(Debug, Default)]
pub(super) struct Messages {
    pub(super) version: WireVersion,
    pub(super) max_streams: usize,
    /// The peer's first stream was taken as its control stream.
    pub(super) control_taken: bool,
    pub(super) open: BTreeMap<MsgId, MsgStream>,
    next_id: MsgId,
    /// The control stream ended cleanly at this time; `PeerFinished`
    /// waits for the open message streams.
    pub(super) control_fin: Option<Instant>,
}

impl ConnProto {
    /// Sets the wire version negotiated for the connection and, for `/1`,
    /// how many message streams the peer may have open at once. Call
    /// before the first stream.
    pub(crate) fn set_wire_version(&mut self, version: WireVersion, max_message_streams: usize) {
        self.messages.version = version;
        self.messages.max_streams = max_message_streams;
    }

    /// The negotiated wire version.
    pub(crate) fn wire_version(&self) -> WireVersion {
        self.messages.version
    }

    /// The peer opened a new stream at `now`: which one it is, `None` when
    /// it is to be dropped (the connection ended, or the stream was one too
    /// many and ended it).
    pub(crate) fn handle_stream(&mut self, now: Instant) -> Option<StreamSlot> {
        if !self.is_open() {
            return None;
        }
        if self.messages.version == WireVersion::V0 || !self.messages.control_taken {
            self.messages.control_taken = true;
            self.handle_control_stream();
            return Some(StreamSlot::Control);
        }
        if self.messages.open.len() >= self.messages.max_streams {
            let max = self.messages.max_streams;
            self.close(CoreError::TooManyMessageStreams { max }, Initiator::Remote);
            return None;
        }
        let id = self.messages.next_id;
        self.messages.next_id += 1;
        self.messages.open.insert(
            id,
            MsgStream {
                decoder: StreamDecoder::with_order(self.limits, FrameOrder::OneData),
                last_progress: now,
                ended: false,
            },
        );
        Some(StreamSlot::Message(id))
    }

    /// Whether message stream `id` is still open; the driver drops its
    /// handle when this turns false.
    pub(crate) fn has_message_stream(&self, id: MsgId) -> bool {
        self.messages.open.contains_key(&id)
    }

    /// Whether message streams are read now: once kitsune2 accepted the
    /// peer's preflight, while the connection lives.
    pub(crate) fn may_read_messages(&self) -> bool {
        match self.state {
            State::Active => true,
            State::Draining { .. } => self.validated,
            _ => false,
        }
    }

    /// Bytes of message stream `id`, arrived at `now`.
    pub(crate) fn handle_message_chunk(&mut self, id: MsgId, chunk: Bytes, now: Instant) {
        if let Some(m) = self.messages.open.get_mut(&id) {
            m.decoder.feed(chunk);
            m.last_progress = now;
        }
    }

    /// The peer finished message stream `id`.
    pub(crate) fn handle_message_end(&mut self, id: MsgId) {
        if let Some(m) = self.messages.open.get_mut(&id) {
            m.ended = true;
        }
    }

    /// Reading message stream `id` failed (the peer reset it): its
    /// message, if partial, is discarded; nothing else changes.
    pub(crate) fn handle_message_error(&mut self, id: MsgId, error: CoreError) {
        if self.messages.open.remove(&id).is_some() {
            debug!(id, %error, "message stream failed; its message is discarded");
            self.events.push_back(Event::StreamFailed(error));
        }
    }

    /// Bytes held in message streams (partial messages).
    pub(super) fn message_bytes(&self) -> usize {
        self.messages
            .open
            .values()
            .map(|m| m.decoder.buffered_len())
            .sum()
    }

    /// The earliest time an open message stream must have made progress.
    /// While the driver waits for the partial-frame budget, the wait's
    /// own deadline applies instead (as for the control stream).
    pub(super) fn message_deadline(&self) -> Option<Instant> {
        if !self.may_read_messages() || self.messages.open.is_empty() {
            return None;
        }
        if let Some((_, since)) = self.budget_wait {
            return Some(since + self.frame_progress_timeout * BUDGET_WAIT_FACTOR as u32);
        }
        self.messages
            .open
            .values()
            .map(|m| m.last_progress)
            .min()
            .map(|t| t + self.frame_progress_timeout)
    }

    /// The driver reads again after waiting for the budget: every message
    /// stream's progress clock restarts at `now`.
    pub(super) fn restart_message_clocks(&mut self, now: Instant) {
        for m in self.messages.open.values_mut() {
            m.last_progress = now;
        }
    }

    /// Discards the message streams without progress by `now`.
    pub(super) fn message_timeouts(&mut self, now: Instant) {
        let timeout = self.frame_progress_timeout;
        let stalled: Vec<MsgId> = self
            .messages
            .open
            .iter()
            .filter(|(_, m)| now >= m.last_progress + timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            self.messages.open.remove(&id);
            let secs = timeout.as_secs();
            debug!(id, secs, "message stream stalled; discarding it");
            self.events
                .push_back(Event::StreamFailed(CoreError::FrameStalled { secs }));
        }
    }

    /// Decodes the message streams as far as they go: a whole message is
    /// delivered, a clean end closes the stream, a violation the
    /// connection. Returns whether anything changed.
    pub(super) fn poll_messages(&mut self) -> bool {
        if !self.may_read_messages() {
            return false;
        }
        let mut changed = false;
        let ids: Vec<MsgId> = self.messages.open.keys().copied().collect();
        for id in ids {
            let Some(m) = self.messages.open.get_mut(&id) else {
                continue;
            };
            let result = match m.decoder.next_frame() {
                Ok(Some(Frame::Data(data))) => Ok(Some(data)),
                // OneData refuses a preflight at its header.
                Ok(Some(Frame::Preflight(_))) => Err(CoreError::Codec(
                    kitsune2_iroh_codec::CodecError::PreflightOnMessageStream,
                )),
                Ok(None) if m.ended => m.decoder.finish().map(|()| None).map_err(Into::into),
                Ok(None) => continue,
                Err(e) => Err(e.into()),
            };
            changed = true;
            match result {
                Ok(Some(data)) => self.events.push_back(Event::Data(data)),
                Ok(None) => {
                    self.messages.open.remove(&id);
                }
                Err(e) => {
                    // A protocol violation: the connection ends.
                    self.close(e, Initiator::Remote);
                    return true;
                }
            }
        }
        changed
    }

    /// The control stream ended cleanly at `at`: the peer is finished
    /// once its message streams have ended too.
    pub(super) fn control_finished(&mut self, at: Instant) {
        self.messages.control_fin = Some(at);
    }

    /// `PeerFinished` once the control stream ended and no message stream
    /// is open. Returns whether it fired.
    pub(super) fn poll_peer_finished(&mut self) -> bool {
        if !self.messages.open.is_empty() {
            return false;
        }
        let Some(at) = self.messages.control_fin.take() else {
            return false;
        };
        self.peer_finished(at);
        true
    }
}
