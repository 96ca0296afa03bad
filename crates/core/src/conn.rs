//! One live connection: its protocol object ([`ConnProto`]) behind a lock,
//! the backend connection, our send stream, counters.
//!
//! [`Conn`] adds to the protocol object only what needs I/O or sharing:
//! publishing the state for waiters, writing frames, sending the close
//! that follows from the connection's end. Every state transition goes
//! through [`Conn::with`], the one place the published state is updated.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use kitsune2_api::Url;
use kitsune2_iroh_codec::{Frame, Limits};
use tokio::sync::{Notify, OwnedMutexGuard, watch};
use tokio::task::AbortHandle;
use tracing::debug;

use crate::close::CloseCode;
use crate::error::{CoreError, Initiator};
use crate::proto::{ConnProto, ConnState, Role};
use crate::traits::{DynConnection, DynSendStream, EndpointId};
use crate::version::WireVersion;

/// Send priority of the `/1` control stream: above the message streams'
/// (0 and below), so that small messages overtake the bytes of a large one.
pub(crate) const CONTROL_PRIORITY: i32 = 1;

/// Send priority of the `n`th `/1` message stream of a connection: each
/// one below the one before, so that QUIC sends message streams one after
/// the other in the order they were opened, instead of a packet of each in
/// turn (its round robin among equal priorities). A large message so
/// arrives as early as it can, the receiver holds one partial message
/// instead of up to 16 and reads one stream at a time in long runs of
/// chunks; large messages keep among themselves the order of `/0`, and
/// small ones still overtake them all. (After 2^30 message streams the
/// numbering starts over: streams then in flight may go out in another
/// order, which only delays them.)
fn message_priority(n: u32) -> i32 {
    // INVARIANT: masked to 30 bits, so it fits an i32 and negates.
    -i32::try_from(n & 0x3fff_ffff).expect("30 bits fit an i32")
}

/// Reset code of a `/1` message stream whose send was cancelled.
pub(crate) const RESET_CANCELLED: u32 = 0;

/// How a connection writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteSettings {
    /// How long a write may make no progress (see [`CoreError::WriteTimeout`]).
    pub(crate) timeout: std::time::Duration,
    /// On `/1`, data messages above this go on a stream of their own.
    pub(crate) large_message_bytes: usize,
}

/// Per-connection message and byte counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) send_messages: AtomicU64,
    pub(crate) send_bytes: AtomicU64,
    pub(crate) recv_messages: AtomicU64,
    pub(crate) recv_bytes: AtomicU64,
}

/// One connection to a peer.
///
/// # Invariants
///
/// - The protocol lock is a leaf: nothing else is locked, and nothing is
///   awaited, while it is held.
/// - Frames go out under the send lock, our preflight (from
///   [`ConnProto::poll_transmit`]) before any data.
/// - On `/1` a large message's stream is counted in `in_flight` under the
///   send lock, after the check that data may be sent, and uncounted once
///   the peer acknowledged all of it (or it failed): the finisher, which
///   takes the send lock first, so sees every such stream, and finishes
///   the control stream only after them.
/// - A written message stream's acknowledgement (its `finish`, counted in
///   `in_flight`) waits in `unacked`, in the order written, unless it was
///   complete at once. It is polled, never awaited, by later message
///   writes (which drop those at the front that are complete) and awaited
///   by the finisher, which drives them all: no task per message.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Local serial number, for logs and "newer wins" ordering.
    pub(crate) serial: u64,
    pub(crate) connection: DynConnection,
    pub(crate) remote_id: EndpointId,
    pub(crate) dialed_by_us: bool,
    pub(crate) opened_at_s: u64,
    pub(crate) counters: Counters,
    limits: Limits,
    write: WriteSettings,
    /// The negotiated wire version.
    version: WireVersion,
    /// `/1` message streams written or being written whose end the peer
    /// has not acknowledged yet.
    in_flight: Arc<watch::Sender<usize>>,
    /// `/1` message streams written and finished whose acknowledgement
    /// has not been seen yet (see the invariants).
    unacked: Mutex<VecDeque<PendingAck>>,
    /// Our control stream was opened once: on `/1` it is never replaced
    /// (a new stream would be a message stream to the peer).
    control_opened: AtomicBool,
    /// `/1` message streams opened so far (their send priorities).
    messages_opened: AtomicU32,
    proto: Mutex<ConnProto>,
    state: watch::Sender<ConnState>,
    /// Our send stream (opened with the first frame); shared, so that a
    /// cancelled write can finish its frame on a task of its own.
    send: Arc<tokio::sync::Mutex<Option<DynSendStream>>>,
    reader: Mutex<Option<AbortHandle>>,
    /// Wakes the reader when something other than the network changed the
    /// protocol state (our stream finished during a drain).
    wake: Notify,
}

impl Conn {
    pub(crate) fn new(
        serial: u64,
        connection: DynConnection,
        proto: ConnProto,
        limits: Limits,
        write: WriteSettings,
        opened_at_s: u64,
    ) -> Self {
        Self {
            version: proto.wire_version(),
            serial,
            remote_id: connection.remote_id(),
            connection,
            dialed_by_us: proto.role() == Role::Dialer,
            opened_at_s,
            counters: Counters::default(),
            limits,
            write,
            in_flight: Arc::new(watch::Sender::new(0)),
            unacked: Mutex::new(VecDeque::new()),
            control_opened: AtomicBool::new(false),
            messages_opened: AtomicU32::new(0),
            state: watch::Sender::new(proto.state()),
            proto: Mutex::new(proto),
            send: Arc::new(tokio::sync::Mutex::new(None)),
            reader: Mutex::new(None),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnProto> {
        self.proto.lock().expect("poisoned")
    }

    /// Runs `f` on the protocol object, then publishes its state if `f`
    /// changed it.
    ///
    /// Every change of the state goes through here, so the published
    /// state is the one `f` started from: an unchanged state (most calls,
    /// e.g. the reader's several per chunk) publishes nothing. A change is
    /// published before the lock is released, so that two calls publish in
    /// the order they changed the state (published after the lock, an
    /// earlier call's state could overwrite a later one's, e.g. `Active`
    /// over `Closed`, and leave `ended` waiting).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut ConnProto) -> R) -> R {
        let mut proto = self.lock();
        let before = proto.state();
        let out = f(&mut proto);
        let now = proto.state();
        if now != before {
            // Receivers only compare states under the watch's lock and
            // never take the proto lock, so this nests safely.
            self.state.send_replace(now);
        }
        drop(proto);
        out
    }

    pub(crate) fn state(&self) -> ConnState {
        *self.state.borrow()
    }

    /// Waits until the connection has ended (closed or superseded).
    pub(crate) async fn ended(&self) {
        let mut rx = self.state.subscribe();
        // INVARIANT: the sender lives in `self`, so the channel is open.
        let _ = rx
            .wait_for(|s| matches!(s, ConnState::Closed | ConnState::Superseded))
            .await;
    }

    /// Waits until the connection is no longer pending.
    pub(crate) async fn resolved(&self) -> ConnState {
        let mut rx = self.state.subscribe();
        // INVARIANT: the sender lives in `self`, so the channel is open.
        let state = rx
            .wait_for(|s| *s != ConnState::Pending)
            .await
            .expect("state sender outlives its receivers");
        *state
    }

    pub(crate) fn remote_url(&self) -> Option<Url> {
        self.lock().remote_url().cloned()
    }

    /// The id of the endpoint that dialed this connection.
    pub(crate) fn dialer_id(&self, local_id: &EndpointId) -> EndpointId {
        if self.dialed_by_us {
            *local_id
        } else {
            self.remote_id
        }
    }

    /// True when it was closed on purpose by either side, including a
    /// peer close the reader has not seen yet.
    pub(crate) fn ended_deliberately(&self) -> bool {
        self.with(|p| p.ended_deliberately())
            || matches!(
                self.connection.remote_close(),
                Some((CloseCode::Graceful | CloseCode::Superseded, _))
            )
    }

    /// Ends the connection with `error` (the first error stays) and sends
    /// the close that follows from its end. Call outside registry locks.
    pub(crate) fn close(&self, error: CoreError, by: Initiator) {
        self.with(|p| p.close(error, by));
        self.send_close();
    }

    /// Sends the application close that follows from how the connection
    /// ended (code and reason from its error); nothing while it is open.
    pub(crate) fn send_close(&self) {
        if let Some((code, reason)) = self.with(|p| p.close_frame()) {
            self.connection.close(code, reason.as_bytes());
        }
    }

    pub(crate) fn set_reader(&self, handle: AbortHandle) {
        *self.reader.lock().expect("poisoned") = Some(handle);
    }

    pub(crate) fn abort_reader(&self) {
        if let Some(h) = self.reader.lock().expect("poisoned").take() {
            h.abort();
        }
    }

    /// Waits until the reader is woken by [`Conn::wake_reader`].
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    fn wake_reader(&self) {
        self.wake.notify_one();
    }

    /// Starts a drain of ours that ends the connection with `close` (see
    /// `proto/drain.rs`); false when it had ended or was draining already.
    /// The caller takes the connection out of use first.
    pub(crate) fn start_drain(self: &Arc<Self>, close: CoreError) -> bool {
        let now = tokio::time::Instant::now().into_std();
        let started = self.with(|p| p.start_drain(close, now));
        if started {
            self.spawn_finish();
        }
        self.wake_reader();
        started
    }

    /// Finishes our stream after the write in progress, on a task of its
    /// own, and tells the protocol once the peer has received it all.
    pub(crate) fn spawn_finish(self: &Arc<Self>) {
        let conn = self.clone();
        tokio::spawn(async move {
            let mut stream = conn.send.clone().lock_owned().await;
            // `/1`: the message streams started before (none starts now)
            // are acknowledged before our control FIN, so the peer has
            // them all when it reads the FIN. Bounded by the drain deadline
            // (the connection then closes, which ends them).
            conn.await_message_acks().await;
            // Our preflight still queued never went out: nothing to send.
            if let Some(s) = stream.as_mut()
                && let Err(e) = s.finish().await
            {
                debug!(%e, "finishing our stream failed");
            }
            conn.with(|p| p.handle_ours_finished());
            conn.wake_reader();
        });
    }

    /// Writes what the protocol queued (our preflight), then `data` as one
    /// data frame when given and the connection is active.
    ///
    /// Cancel safety: a frame whose first bytes went out is finished on a
    /// task of its own when this future is dropped (or, without a runtime,
    /// the connection is closed), so the stream never carries a partial
    /// frame followed by another; a frame not yet started is not sent.
    ///
    /// # Errors
    ///
    /// The backend's write error, or the error that ended the connection
    /// when data can no longer be sent on it.
    pub(crate) async fn write(self: &Arc<Self>, data: Option<Bytes>) -> Result<(), WriteFailure> {
        let untouched = |error| WriteFailure {
            error,
            untouched: true,
        };
        let mut stream = self.send.clone().lock_owned().await;
        while let Some(frame) = self.with(|p| p.poll_transmit()) {
            stream = self
                .write_frame(stream, frame)
                .await
                .map_err(|(e, _)| untouched(e))?;
        }
        let Some(data) = data else {
            return Ok(());
        };
        if !self.with(|p| p.may_send_data()) {
            return Err(untouched(self.with(|p| p.closed()).map_or_else(
                || CoreError::ConnectionClosed {
                    code: None,
                    reason: "connection is draining".to_owned(),
                },
                |(e, _)| e,
            )));
        }
        let len = data.len() as u64;
        if self.version == WireVersion::V1 && data.len() > self.write.large_message_bytes {
            // Counted under the send lock: see the invariants.
            let ticket = MessageTicket::new(&self.in_flight);
            drop(stream);
            self.write_message(data, ticket).await?;
            self.counters.send_messages.fetch_add(1, Ordering::Relaxed);
            self.counters.send_bytes.fetch_add(len, Ordering::Relaxed);
            return Ok(());
        }
        let stream = self
            .write_frame(stream, Frame::data(data))
            .await
            .map_err(|(error, untouched)| WriteFailure { error, untouched })?;
        drop(stream);
        self.counters.send_messages.fetch_add(1, Ordering::Relaxed);
        self.counters.send_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one frame, opening the stream first if needed; on error the
    /// stream is dropped, so the next write opens a new one. The error
    /// says whether none of the frame went out.
    async fn write_frame(
        self: &Arc<Self>,
        mut stream: SendGuard,
        frame: Frame,
    ) -> Result<SendGuard, (CoreError, bool)> {
        let chunks = frame
            .encode(&self.limits)
            .map_err(|e| (e.into(), true))?
            .into_chunks();
        if stream.is_none() {
            if self.version == WireVersion::V1 && self.control_opened.load(Ordering::SeqCst) {
                return Err((
                    CoreError::io("write", "the control stream failed earlier"),
                    true,
                ));
            }
            let mut opened = self.connection.open_uni().await.map_err(|e| (e, true))?;
            if self.version == WireVersion::V1 {
                opened.set_priority(CONTROL_PRIORITY);
            }
            self.control_opened.store(true, Ordering::SeqCst);
            *stream = Some(opened);
        }
        let total = chunks.iter().map(Bytes::len).sum();
        let mut job = WriteJob {
            conn: self.clone(),
            stream: Some(stream),
            total,
            chunks,
        };
        let result = job.run().await;
        // INVARIANT: run() leaves the guard in place when it returns.
        let mut stream = job.stream.take().expect("guard kept");
        match result {
            Ok(()) => Ok(stream),
            Err(e) => {
                *stream = None;
                Err((e, job.remaining() == total))
            }
        }
    }
}

impl Conn {
    /// Writes `data` on a `/1` message stream of its own: one data frame,
    /// then FIN; its acknowledgement (which holds `ticket` until then)
    /// waits in `unacked` (see the invariants).
    ///
    /// Cancel safety: dropped before the frame is written, the stream is
    /// reset, so the peer discards the partial message; nothing else is
    /// affected.
    async fn write_message(&self, data: Bytes, ticket: MessageTicket) -> Result<(), WriteFailure> {
        let chunks = Frame::data(data)
            .encode(&self.limits)
            .map_err(|e| WriteFailure {
                error: e.into(),
                untouched: true,
            })?
            .into_chunks();
        let total: usize = chunks.iter().map(Bytes::len).sum();
        let mut stream = self
            .connection
            .open_uni()
            .await
            .map_err(|error| WriteFailure {
                error,
                untouched: true,
            })?;
        stream.set_priority(message_priority(
            self.messages_opened.fetch_add(1, Ordering::Relaxed),
        ));
        let mut job = MessageJob {
            stream: Some(stream),
            chunks,
            ticket: Some(ticket),
        };
        let result = {
            let MessageJob { stream, chunks, .. } = &mut job;
            // INVARIANT: set just above, taken only below.
            let s = stream.as_mut().expect("stream present");
            write_all(s, chunks, self.write.timeout).await
        };
        if let Err(error) = result {
            let untouched = job.remaining() == total;
            // Drop resets the stream.
            drop(job);
            return Err(WriteFailure { error, untouched });
        }
        // INVARIANT: both are taken only here.
        let mut stream = job.stream.take().expect("stream present");
        let ticket = job.ticket.take().expect("ticket present");
        let mut ack = PendingAck {
            ack: Box::pin(async move { stream.finish().await }),
            _ticket: ticket,
        };
        // The first poll sends the FIN.
        if !ack.is_done() {
            let mut unacked = self.unacked.lock().expect("poisoned");
            unacked.push_back(ack);
            // Acknowledgements come mostly in the order written.
            while unacked.front_mut().is_some_and(PendingAck::is_done) {
                unacked.pop_front();
            }
        }
        Ok(())
    }

    /// Waits until every `/1` message stream written or being written is
    /// acknowledged (or failed), driving the waiting acknowledgements;
    /// writes in progress add theirs as they end.
    async fn await_message_acks(&self) {
        let mut in_flight = self.in_flight.subscribe();
        loop {
            let waiting: Vec<PendingAck> =
                self.unacked.lock().expect("poisoned").drain(..).collect();
            if waiting.is_empty() {
                if *in_flight.borrow_and_update() == 0 {
                    return;
                }
                // A write in progress: it ends by adding its
                // acknowledgement (counted) or by failing (uncounted).
                if in_flight.changed().await.is_err() {
                    return;
                }
                continue;
            }
            for PendingAck { ack, _ticket } in waiting {
                if let Err(e) = ack.await {
                    debug!(%e, "finishing a message stream failed");
                }
            }
        }
    }
}

/// A written `/1` message stream's acknowledgement: its `finish`, which
/// holds the stream and its place in `in_flight` until dropped.
struct PendingAck {
    ack: Pin<Box<dyn Future<Output = Result<(), CoreError>> + Send>>,
    _ticket: MessageTicket,
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAck").finish_non_exhaustive()
    }
}

impl PendingAck {
    /// Whether the acknowledgement came (or can no longer come), polled
    /// without a waker: whoever needs it awaits it later.
    fn is_done(&mut self) -> bool {
        match self
            .ack
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Err(e)) => {
                debug!(%e, "finishing a message stream failed");
                true
            }
            Poll::Ready(Ok(())) => true,
            Poll::Pending => false,
        }
    }
}

/// A `/1` message stream counted in a connection's `in_flight` until
/// dropped.
#[derive(Debug)]
struct MessageTicket(Arc<watch::Sender<usize>>);

impl MessageTicket {
    fn new(in_flight: &Arc<watch::Sender<usize>>) -> Self {
        in_flight.send_modify(|n| *n += 1);
        Self(in_flight.clone())
    }
}

impl Drop for MessageTicket {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A `/1` message stream being written. Dropped with the stream still in
/// it (the send was cancelled, or the write failed), it resets the stream.
struct MessageJob {
    stream: Option<DynSendStream>,
    chunks: [Bytes; 2],
    ticket: Option<MessageTicket>,
}

impl MessageJob {
    fn remaining(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

impl Drop for MessageJob {
    fn drop(&mut self) {
        if let Some(mut s) = self.stream.take() {
            debug!(
                remaining = self.remaining(),
                "message send cancelled or failed; resetting its stream"
            );
            s.reset(RESET_CANCELLED);
        }
    }
}

/// Writes all of `chunks` on `s`; fails with [`CoreError::WriteTimeout`]
/// when the peer took none of it for `timeout` (a stalled peer: the write
/// is resumed as long as bytes move, so a large frame on a slow link is
/// fine). Cancel safe as `write_chunks`: `chunks` keeps what is left.
async fn write_all(
    s: &mut DynSendStream,
    chunks: &mut [Bytes; 2],
    timeout: std::time::Duration,
) -> Result<(), CoreError> {
    let remaining = |c: &[Bytes; 2]| c.iter().map(Bytes::len).sum::<usize>();
    let mut left = remaining(chunks);
    loop {
        match tokio::time::timeout(timeout, s.write_chunks(chunks)).await {
            Ok(result) => return result,
            // The write is resumable: go on while bytes move.
            Err(_) if remaining(chunks) < left => left = remaining(chunks),
            Err(_) => {
                return Err(CoreError::WriteTimeout {
                    secs: timeout.as_secs(),
                });
            }
        }
    }
}

/// A failed [`Conn::write`].
#[derive(Debug)]
pub(crate) struct WriteFailure {
    pub(crate) error: CoreError,
    /// None of the data frame went out (so sending it elsewhere cannot
    /// duplicate it).
    pub(crate) untouched: bool,
}

impl From<WriteFailure> for CoreError {
    fn from(f: WriteFailure) -> Self {
        f.error
    }
}

type SendGuard = OwnedMutexGuard<Option<DynSendStream>>;

/// One frame being written. Dropped before it finished (the send was
/// cancelled), it finishes the frame on a task of its own.
struct WriteJob {
    conn: Arc<Conn>,
    stream: Option<SendGuard>,
    chunks: [Bytes; 2],
    total: usize,
}

impl WriteJob {
    /// Writes the frame (see [`write_all`]).
    async fn run(&mut self) -> Result<(), CoreError> {
        let timeout = self.conn.write.timeout;
        // INVARIANT: the guard is taken only by the caller after run().
        let guard = self.stream.as_mut().expect("guard present");
        // INVARIANT: write_frame opened the stream before the job.
        let s = guard.as_mut().expect("stream open");
        write_all(s, &mut self.chunks, timeout).await?;
        // Marks the frame done for Drop.
        self.total = 0;
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }
}

impl Drop for WriteJob {
    fn drop(&mut self) {
        let Some(mut guard) = self.stream.take() else {
            return;
        };
        let remaining = self.remaining();
        if self.total == 0 || remaining == 0 || remaining == self.total {
            // Done, or not started: the stream is clean.
            return;
        }
        debug!(remaining, "send cancelled mid-frame; finishing the frame");
        let mut chunks = std::mem::take(&mut self.chunks);
        let conn = self.conn.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Some(s) = guard.as_mut()
                        && let Err(e) = s.write_chunks(&mut chunks).await
                    {
                        *guard = None;
                        conn.close(e, Initiator::Backend);
                    }
                });
            }
            Err(_) => {
                *guard = None;
                conn.close(
                    CoreError::io("write", "send cancelled mid-frame without a runtime"),
                    Initiator::Local,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CONTROL_PRIORITY, message_priority};

    #[test]
    fn message_streams_go_out_in_the_order_opened_below_the_control_stream() {
        assert_eq!(message_priority(0), 0);
        assert!(message_priority(1) < message_priority(0));
        assert!(message_priority(1000) < message_priority(999));
        assert!(message_priority(u32::MAX) <= 0);
        assert!((0..5).all(|n| message_priority(n) < CONTROL_PRIORITY));
    }
}
