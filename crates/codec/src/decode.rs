//! Incremental decoding.
//!
//! One state machine ([`DecodeState`]) reads frames from any byte source: a
//! caller's [`BytesMut`] ([`FrameDecoder`], the `tokio_util` contract) or a
//! queue of received chunks ([`StreamDecoder`], zero-copy).
//!
//! ```text
//!            5 bytes buffered,                 payload_len bytes
//!            header valid                      buffered
//!  Header ───────────────────────▶ Payload ─────────────────────▶ Header (frame out)
//!    │                               │
//!    └── invalid header ──▶ Failed ◀─┴── invalid preflight payload
//!                     (absorbing: every later call returns the same error)
//! ```

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use crate::error::CodecError;
use crate::frame::{FRAME_HEADER_LEN, Frame, FrameHeader, FrameType};
use crate::limits::{Limits, RESERVE_STEP};

/// Which frame sequences a decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameOrder {
    /// Any sequence of well-formed frames.
    #[default]
    Any,
    /// The protocol's order: exactly one preflight first, then only data.
    /// Anything else is [`CodecError::ExpectedPreflight`] or
    /// [`CodecError::UnexpectedPreflight`], raised at the header, before any of
    /// the offending payload is buffered.
    PreflightThenData,
    /// A `kitsune2/1` message stream: exactly one data frame, then the end
    /// of the stream. A preflight is [`CodecError::PreflightOnMessageStream`]
    /// and any byte after the frame [`CodecError::SecondFrameOnMessageStream`],
    /// both raised at the header; an end before the frame is complete (also
    /// an empty stream) is [`CodecError::TruncatedFrame`].
    OneData,
}

/// Where the decoder is within the stream.
#[derive(Debug, Clone)]
enum State {
    /// Waiting for a 5-byte header.
    Header,
    /// Header consumed and valid; waiting for its payload.
    Payload(FrameHeader),
    /// A fatal error happened; absorbing.
    Failed(CodecError),
}

/// A buffer the state machine reads from.
trait Source {
    /// Bytes available.
    fn remaining(&self) -> usize;
    /// The first 5 bytes. Callers MUST have checked `remaining() >= 5`.
    fn header(&self) -> [u8; FRAME_HEADER_LEN];
    /// Drops the first `n` bytes. Callers MUST have checked `remaining() >= n`.
    fn skip(&mut self, n: usize);
    /// Removes and returns the first `n` bytes. Callers MUST have checked
    /// `remaining() >= n`.
    fn take(&mut self, n: usize) -> Bytes;
    /// Called when `missing` more bytes are needed; a chance to reserve room.
    fn need(&mut self, missing: usize);
}

impl Source for BytesMut {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn header(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut h = [0; FRAME_HEADER_LEN];
        h.copy_from_slice(&self[..FRAME_HEADER_LEN]);
        h
    }

    fn skip(&mut self, n: usize) {
        self.advance(n);
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.split_to(n).freeze()
    }

    fn need(&mut self, missing: usize) {
        // Never reserve on the peer's word: at most one step ahead of what
        // has arrived (tokio-util's LengthDelimitedCodec reserves the whole
        // announced frame here).
        self.reserve(missing.min(RESERVE_STEP));
    }
}

/// The decoding state machine shared by both decoders.
#[derive(Debug, Clone)]
struct DecodeState {
    limits: Limits,
    order: FrameOrder,
    preflight_seen: bool,
    state: State,
}

impl DecodeState {
    fn new(limits: Limits, order: FrameOrder) -> Self {
        Self {
            limits,
            order,
            preflight_seen: false,
            state: State::Header,
        }
    }

    fn decode(&mut self, src: &mut impl Source) -> Result<Option<Frame>, CodecError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let result = self.step(src);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn step(&mut self, src: &mut impl Source) -> Result<Option<Frame>, CodecError> {
        let header = match &self.state {
            State::Payload(header) => *header,
            State::Header => {
                let have = src.remaining();
                if have < FRAME_HEADER_LEN {
                    src.need(FRAME_HEADER_LEN - have);
                    return Ok(None);
                }
                let header = self.check_header(src.header())?;
                src.skip(FRAME_HEADER_LEN);
                self.state = State::Payload(header);
                header
            }
            State::Failed(e) => return Err(e.clone()),
        };
        let len = header.payload_len as usize;
        let have = src.remaining();
        if have < len {
            src.need(len - have);
            return Ok(None);
        }
        let payload = src.take(len);
        self.state = State::Header;
        Frame::from_payload(header.frame_type, payload).map(Some)
    }

    fn check_header(&mut self, bytes: [u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, CodecError> {
        let header = FrameHeader::parse(bytes)?;
        self.limits
            .check_payload_len(u64::from(header.payload_len))?;
        if self.order == FrameOrder::PreflightThenData {
            match (self.preflight_seen, header.frame_type) {
                (false, FrameType::Preflight) => self.preflight_seen = true,
                (false, found @ FrameType::Data) => {
                    return Err(CodecError::ExpectedPreflight { found });
                }
                (true, FrameType::Preflight) => return Err(CodecError::UnexpectedPreflight),
                (true, FrameType::Data) => {}
            }
        }
        if self.order == FrameOrder::OneData {
            match (self.preflight_seen, header.frame_type) {
                (_, FrameType::Preflight) => return Err(CodecError::PreflightOnMessageStream),
                (true, FrameType::Data) => return Err(CodecError::SecondFrameOnMessageStream),
                // `preflight_seen` stands for "a frame seen" in this order.
                (false, FrameType::Data) => self.preflight_seen = true,
            }
        }
        Ok(header)
    }

    /// Checks that the stream may end here, with `remaining` bytes unread.
    fn finish(&self, remaining: usize) -> Result<(), CodecError> {
        let remaining = remaining as u64;
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::Header if remaining == 0 && self.order == FrameOrder::OneData => {
                if self.preflight_seen {
                    Ok(())
                } else {
                    Err(CodecError::TruncatedFrame {
                        buffered: 0,
                        expected: FRAME_HEADER_LEN as u64,
                    })
                }
            }
            State::Header if remaining == 0 => Ok(()),
            State::Header => Err(CodecError::TruncatedFrame {
                buffered: remaining,
                expected: FRAME_HEADER_LEN as u64,
            }),
            State::Payload(h) => Err(CodecError::TruncatedFrame {
                buffered: FRAME_HEADER_LEN as u64 + remaining,
                expected: FRAME_HEADER_LEN as u64 + u64::from(h.payload_len),
            }),
        }
    }

    fn is_mid_frame(&self, remaining: usize) -> bool {
        matches!(self.state, State::Payload(_)) || remaining > 0
    }
}

/// Decodes frames from a caller-owned [`BytesMut`], following the
/// `tokio_util::codec::Decoder` contract.
///
/// # Usage
///
/// Append received bytes to a `BytesMut`, then call [`decode`](Self::decode)
/// until it returns `Ok(None)`; at end of stream call
/// [`decode_eof`](Self::decode_eof).
///
/// # Invariants
///
/// - `Ok(Some(frame))`: exactly the frame's bytes were removed from the buffer.
/// - `Ok(None)`: more bytes are needed. A complete, valid header is consumed
///   and remembered (the half-read frame's state lives in the decoder);
///   otherwise nothing is consumed. An empty buffer is legal.
/// - `Err(e)`: fatal and sticky: every later call returns `e` again.
/// - The buffer's capacity grows by at most [`RESERVE_STEP`] beyond the bytes
///   it holds, whatever length a header announced; a header over the limit is
///   rejected before anything is reserved for it.
/// - Payloads are split off the buffer without copying.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    state: DecodeState,
}

impl FrameDecoder {
    /// A decoder accepting any sequence of frames within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_order(limits, FrameOrder::Any)
    }

    /// A decoder that also enforces `order`.
    pub fn with_order(limits: Limits, order: FrameOrder) -> Self {
        Self {
            state: DecodeState::new(limits, order),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.state.limits
    }

    /// Decodes the next frame from `src`, if it is complete.
    ///
    /// # Errors
    ///
    /// Any [`CodecError`] the bytes call for; see the type's invariants.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.state.decode(src)
    }

    /// Like [`decode`](Self::decode), for when no more bytes will come.
    ///
    /// # Errors
    ///
    /// As `decode`, plus [`CodecError::TruncatedFrame`] when the stream ends
    /// inside a frame.
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => self.state.finish(src.len()).map(|()| None),
        }
    }

    /// True while a frame is partly received (its header consumed, or bytes
    /// of it in `src`).
    pub fn is_mid_frame(&self, src: &BytesMut) -> bool {
        self.state.is_mid_frame(src.len())
    }
}

/// Chunks shorter than this are copied into a shared tail buffer instead of
/// being held, so that a peer trickling tiny chunks cannot make the decoder
/// pin one (possibly much larger) receive buffer per byte it sent.
pub(crate) const COALESCE_BELOW: usize = 4 * 1024;

/// Received bytes not yet decoded: held chunks, then a tail of small ones.
///
/// # Invariants
///
/// `len == queue.iter().map(Bytes::len).sum() + tail.len()`; every chunk in
/// `queue` is non-empty; the tail's bytes come after the queue's.
#[derive(Debug, Default)]
struct Chunks {
    queue: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        if chunk.len() < COALESCE_BELOW {
            self.tail.extend_from_slice(&chunk);
        } else {
            if !self.tail.is_empty() {
                self.queue.push_back(self.tail.split().freeze());
            }
            self.queue.push_back(chunk);
        }
    }

    /// The segments in stream order.
    fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.queue
            .iter()
            .map(|b| &b[..])
            .chain(std::iter::once(&self.tail[..]))
    }
}

impl Source for Chunks {
    fn remaining(&self) -> usize {
        self.len
    }

    fn header(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut h = [0; FRAME_HEADER_LEN];
        let mut filled = 0;
        for seg in self.segments() {
            let n = seg.len().min(FRAME_HEADER_LEN - filled);
            h[filled..filled + n].copy_from_slice(&seg[..n]);
            filled += n;
            if filled == FRAME_HEADER_LEN {
                break;
            }
        }
        debug_assert_eq!(filled, FRAME_HEADER_LEN, "caller checked remaining()");
        h
    }

    fn skip(&mut self, mut n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                self.tail.advance(n);
                return;
            };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }

    fn take(&mut self, n: usize) -> Bytes {
        debug_assert!(n <= self.len);
        if let Some(front) = self.queue.front_mut() {
            if front.len() >= n {
                // The whole payload is in one held chunk: hand out a slice.
                self.len -= n;
                let out = front.split_to(n);
                if front.is_empty() {
                    self.queue.pop_front();
                }
                return out;
            }
        } else {
            // Everything left is in the tail, which holds at least `n`.
            self.len -= n;
            return self.tail.split_to(n).freeze();
        }
        // The payload spans segments: all `n` bytes have arrived, so this
        // allocation is bounded by bytes received.
        let mut out = BytesMut::with_capacity(n);
        let mut missing = n;
        while missing > 0 {
            let Some(front) = self.queue.front_mut() else {
                out.extend_from_slice(&self.tail.split_to(missing));
                break;
            };
            let k = front.len().min(missing);
            out.extend_from_slice(&front[..k]);
            missing -= k;
            if k == front.len() {
                self.queue.pop_front();
            } else {
                front.advance(k);
            }
        }
        self.len -= n;
        out.freeze()
    }

    fn need(&mut self, missing: usize) {
        // Small chunks land in the tail: make room for the rest of the frame
        // once, instead of regrowing the tail chunk by chunk, but never more
        // than one step ahead of what has arrived.
        if self.tail.capacity() == self.tail.len() {
            self.tail.reserve(missing.min(RESERVE_STEP));
        }
    }
}

/// Decodes frames from chunks as a transport reads them (e.g. iroh's
/// `read_chunk`), whose boundaries need not match frame boundaries.
///
/// # Usage
///
/// [`feed`](Self::feed) each chunk, then call [`next_frame`](Self::next_frame)
/// until it returns `Ok(None)`. When the stream ends, call
/// [`finish`](Self::finish) to learn whether it ended cleanly.
///
/// # Invariants
///
/// - Memory held is the received bytes not yet handed out plus at most
///   [`RESERVE_STEP`] of room reserved ahead: a header is checked against the
///   limits before any of its payload counts, and a payload is assembled only
///   once all of it has arrived.
/// - A payload that lies inside one fed chunk of at least 4 KiB is returned
///   as a slice of that chunk (no copy). Smaller chunks are copied into a
///   tail buffer as they are fed, so tiny chunks never pin larger receive
///   buffers; a payload that spans chunks is copied once.
/// - Errors are sticky; after one, fed bytes are dropped.
/// - Any split of the same bytes into chunks yields the same frames.
#[derive(Debug)]
pub struct StreamDecoder {
    state: DecodeState,
    chunks: Chunks,
}

impl StreamDecoder {
    /// A decoder accepting any sequence of frames within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self::with_order(limits, FrameOrder::Any)
    }

    /// A decoder that also enforces `order`.
    pub fn with_order(limits: Limits, order: FrameOrder) -> Self {
        Self {
            state: DecodeState::new(limits, order),
            chunks: Chunks::default(),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.state.limits
    }

    /// Adds a received chunk. Empty chunks are ignored.
    pub fn feed(&mut self, chunk: Bytes) {
        if chunk.is_empty() || matches!(self.state.state, State::Failed(_)) {
            return;
        }
        self.chunks.push(chunk);
    }

    /// Adds received bytes by copying them (for readers that fill a slice).
    pub fn feed_slice(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || matches!(self.state.state, State::Failed(_)) {
            return;
        }
        if bytes.len() < COALESCE_BELOW {
            // Straight into the tail: one copy, no allocation per call.
            self.chunks.len += bytes.len();
            self.chunks.tail.extend_from_slice(bytes);
        } else {
            self.chunks.push(Bytes::copy_from_slice(bytes));
        }
    }

    /// The next complete frame, if any.
    ///
    /// # Errors
    ///
    /// Any [`CodecError`] the bytes call for; sticky.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        let result = self.state.decode(&mut self.chunks);
        if result.is_err() {
            self.chunks = Chunks::default();
        }
        result
    }

    /// Received bytes not yet returned in a frame (a consumed header excluded).
    pub fn buffered_len(&self) -> usize {
        self.chunks.len
    }

    /// True while a frame is partly received.
    pub fn is_mid_frame(&self) -> bool {
        self.state.is_mid_frame(self.chunks.len)
    }

    /// Checks that the stream may end here: no partial frame pending.
    ///
    /// Call after [`next_frame`](Self::next_frame) returned `Ok(None)`.
    ///
    /// # Errors
    ///
    /// [`CodecError::TruncatedFrame`] when a frame is partly received; the
    /// sticky error if one happened.
    pub fn finish(&self) -> Result<(), CodecError> {
        self.state.finish(self.chunks.len)
    }
}
