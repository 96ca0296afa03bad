//! The reader task of one connection: a driver, as quinn's
//! `ConnectionDriver`, that moves the peer's bytes into the connection's
//! protocol object and acts on its events. The rules are in
//! [`ConnProto`](crate::proto::ConnProto); here is only I/O and the calls
//! into kitsune2 and the registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use kitsune2_api::{BoxFut, K2Proto, K2WireType, Url};
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::budget::Charge;
use crate::conn::Conn;
use crate::error::{CoreError, Initiator};
use crate::peer_url::PeerAddr;
use crate::proto::{Event, MsgId, StreamSlot};
use crate::registry::Activation;
use crate::shared::Shared;
use crate::traits::DynRecvStream;
use crate::version::WireVersion;

/// What the network gave next.
enum Input {
    /// A new stream from the peer, or the connection's end.
    Stream(Result<DynRecvStream, CoreError>),
    /// A read on the control stream (on `/0`: the one stream).
    Chunk(Result<Option<Vec<Bytes>>, CoreError>),
    /// A read on a `/1` message stream.
    Message(MsgId, Result<Option<Vec<Bytes>>, CoreError>),
    /// The protocol's deadline passed.
    Timeout,
    /// The protocol state changed outside the reader (a drain step), or
    /// the partial-frame budget has room again.
    Woken,
}

/// Reads `conn` until it ends, then ends it.
pub(crate) async fn run(shared: Arc<Shared>, conn: Arc<Conn>) {
    drive(&shared, &conn).await;
    shared.end_connection(&conn).await;
}

async fn drive(shared: &Shared, conn: &Arc<Conn>) {
    let mut stream: Option<DynRecvStream> = None;
    // `/1` message streams, read concurrently (at most the protocol's
    // limit: one more ends the connection).
    let mut messages: Vec<MessageStream> = Vec::new();
    // The reader task's waker, for the message streams' own wakers.
    let task = Arc::new(Mutex::new(None));
    // Where the next poll of the message streams starts, so that one busy
    // stream does not starve the others.
    let mut turn = 0usize;
    // This connection's share of the budget for partial frames, given
    // back when the reader ends.
    let mut charge = Charge::new(&shared.budget);
    loop {
        while let Some(event) = conn.with(|p| p.poll_event()) {
            match event {
                Event::Preflight { url, data } => {
                    if let Err(e) = on_preflight(shared, conn, url, data).await {
                        conn.close(e, Initiator::Local);
                    }
                }
                Event::Data(data) => on_data(shared, conn, data).await,
                Event::PeerFinished => {
                    // No more frames come: out of use, then our FIN.
                    shared.registry().retire(conn);
                    conn.spawn_finish();
                }
                Event::StreamFailed(e) => {
                    if matches!(e, CoreError::Codec(_)) {
                        warn!(%e, "closing the peer's stream");
                    } else {
                        debug!(%e, "the peer's stream failed");
                    }
                }
            }
        }
        if conn.with(|p| p.closed()).is_some() {
            return;
        }
        if !conn.with(|p| p.has_stream()) {
            stream = None;
        }
        // Dropping a message stream the protocol let go stops it.
        if !messages.is_empty() {
            messages.retain(|m| conn.with(|p| p.has_message_stream(m.id)));
        }
        // Before the next read the budget must cover the partial frame
        // held (the read itself is within the free share).
        let freed = shared.budget.freed();
        let may_read = charge.try_cover(conn.with(|p| p.partial_frame_bytes()));
        let budget_wait = (!may_read).then_some(shared.config.partial_frame_budget);
        if budget_wait.is_some() {
            debug!("partial-frame budget full: not reading this peer for now");
        }
        conn.with(|p| p.set_budget_wait(budget_wait, Instant::now().into_std()));
        let deadline = conn.with(|p| p.poll_timeout());
        let read = if may_read { stream.as_mut() } else { None };
        let read_messages = may_read && conn.with(|p| p.may_read_messages());
        let message_reads = if read_messages {
            turn = turn.wrapping_add(1);
            MessageReads::new(&mut messages, turn, &task)
        } else {
            MessageReads::default()
        };
        // Once the connection ended, the streams held are read out
        // (QUIC keeps what it received) and no new one is accepted.
        let accept = !conn.with(|p| p.connection_ended());
        let input = next_input(conn, read, message_reads, may_read, accept, freed, deadline).await;
        let control_fin = matches!(input, Input::Chunk(Ok(None)));
        let now = Instant::now().into_std();
        conn.with(|p| match input {
            Input::Stream(Ok(s)) => match p.handle_stream(now) {
                Some(StreamSlot::Control) => stream = Some(s),
                Some(StreamSlot::Message(id)) => messages.push(MessageStream::new(id, s, &task)),
                None => {}
            },
            Input::Stream(Err(e)) => {
                p.handle_connection_lost(e, conn.connection.remote_close(), now);
            }
            Input::Chunk(Ok(Some(chunks))) => {
                for chunk in chunks {
                    p.handle_chunk(chunk, now);
                }
            }
            Input::Chunk(Ok(None)) => p.handle_stream_end(now),
            Input::Chunk(Err(e)) => p.handle_stream_error(e),
            Input::Message(id, Ok(Some(chunks))) => {
                for chunk in chunks {
                    p.handle_message_chunk(id, chunk, now);
                }
            }
            Input::Message(id, Ok(None)) => p.handle_message_end(id),
            Input::Message(id, Err(e)) => p.handle_message_error(id, e),
            Input::Timeout => p.handle_timeout(now),
            Input::Woken => {}
        });
        if control_fin && conn.with(|p| p.wire_version()) == WireVersion::V1 {
            // The peer finishes its control stream only once the peer's
            // QUIC acknowledged every message stream it opened before, so
            // those are all here to accept now: take them before the FIN
            // is judged, so that their messages come first.
            for _ in 0..=shared.config.max_message_streams {
                let Some(Ok(s)) = ready_now(conn.connection.accept_uni()) else {
                    break;
                };
                if let Some(StreamSlot::Message(id)) = conn.with(|p| p.handle_stream(now)) {
                    messages.push(MessageStream::new(id, s, &task));
                }
            }
        }
    }
}

/// The output of `fut` if it is ready at its first poll.
fn ready_now<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// A read of a `/1` message stream that owns the stream and gives it
/// back with what it read.
type MessageRead = BoxFut<'static, (DynRecvStream, Result<Option<Vec<Bytes>>, CoreError>)>;

fn read_message(mut stream: DynRecvStream) -> MessageRead {
    Box::pin(async move {
        let read = stream.read_chunks().await;
        (stream, read)
    })
}

/// A `/1` message stream being read: its read lives across the reader's
/// turns, with a waker of its own that marks it ready, so the reader
/// polls only the streams that have something (or a new read), not every
/// open stream for every read. Dropped, it drops the stream.
struct MessageStream {
    id: MsgId,
    read: MessageRead,
    wake: Arc<StreamWake>,
}

impl MessageStream {
    fn new(id: MsgId, stream: DynRecvStream, task: &Arc<Mutex<Option<Waker>>>) -> Self {
        Self {
            id,
            read: read_message(stream),
            wake: Arc::new(StreamWake {
                ready: AtomicBool::new(true),
                task: task.clone(),
            }),
        }
    }
}

/// Marks one message stream ready and wakes the reader task.
struct StreamWake {
    ready: AtomicBool,
    /// The reader task's waker, as last seen by [`MessageReads::next`].
    task: Arc<Mutex<Option<Waker>>>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.lock().expect("poisoned").as_ref() {
            task.wake_by_ref();
        }
    }
}

/// One read on a ready message stream, tried in turn from a rotating
/// start.
#[derive(Default)]
struct MessageReads<'a> {
    streams: &'a mut [MessageStream],
    start: usize,
    task: Option<&'a Arc<Mutex<Option<Waker>>>>,
}

impl<'a> MessageReads<'a> {
    fn new(
        streams: &'a mut [MessageStream],
        turn: usize,
        task: &'a Arc<Mutex<Option<Waker>>>,
    ) -> Self {
        let start = turn % streams.len().max(1);
        Self {
            streams,
            start,
            task: Some(task),
        }
    }

    /// The first read to complete; never resolves without streams.
    /// Cancel safe: the reads live in the streams, across calls.
    async fn next(&mut self) -> Input {
        std::future::poll_fn(|cx| {
            let (Some(task), false) = (self.task, self.streams.is_empty()) else {
                return Poll::Pending;
            };
            {
                let mut task = task.lock().expect("poisoned");
                if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *task = Some(cx.waker().clone());
                }
            }
            let n = self.streams.len();
            for i in 0..n {
                let m = &mut self.streams[(self.start + i) % n];
                if !m.wake.ready.swap(false, Ordering::SeqCst) {
                    continue;
                }
                let waker = Waker::from(m.wake.clone());
                let mut stream_cx = Context::from_waker(&waker);
                if let Poll::Ready((stream, read)) = m.read.as_mut().poll(&mut stream_cx) {
                    // The next read, polled on the next turn.
                    m.read = read_message(stream);
                    m.wake.ready.store(true, Ordering::SeqCst);
                    return Poll::Ready(Input::Message(m.id, read));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// The next input: a chunk of `stream` (when given), of a message stream,
/// a new stream (when `accept`), a wake-up, the deadline, or (when
/// `!may_read`, waiting for the budget) `freed`.
///
/// The reads are polled before the accept, but the backend may see the
/// connection end between the two polls (its I/O runs on other threads):
/// a connection's end says nothing about what the streams still hold.
async fn next_input(
    conn: &Conn,
    stream: Option<&mut DynRecvStream>,
    mut messages: MessageReads<'_>,
    may_read: bool,
    accept: bool,
    freed: Notified<'_>,
    deadline: Option<std::time::Instant>,
) -> Input {
    let accept_uni = async {
        if accept {
            Input::Stream(conn.connection.accept_uni().await)
        } else {
            std::future::pending().await
        }
    };
    let read = async {
        match stream {
            None if !may_read => tokio::select! {
                biased;
                input = accept_uni => input,
                () = freed => Input::Woken,
            },
            None => tokio::select! {
                biased;
                input = messages.next() => input,
                input = accept_uni => input,
            },
            // The control stream first: its small messages are the ones a
            // large message must not hold up.
            Some(stream) => tokio::select! {
                biased;
                r = stream.read_chunks() => Input::Chunk(r),
                input = messages.next() => input,
                input = accept_uni => input,
            },
        }
    };
    let deadline = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(Instant::from_std(deadline)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        input = read => input,
        () = conn.woken() => Input::Woken,
        () = deadline => Input::Timeout,
    }
}

async fn on_data(shared: &Shared, conn: &Conn, data: Bytes) {
    // INVARIANT: data events come only after the preflight set the URL.
    let url = conn.remote_url().expect("data only after preflight");
    conn.counters.recv_messages.fetch_add(1, Ordering::Relaxed);
    conn.counters
        .recv_bytes
        .fetch_add(data.len() as u64, Ordering::Relaxed);
    let Err(e) = shared.hnd.recv_data(url.clone(), data.clone()).await else {
        return;
    };
    if is_disconnect_message(&data) {
        // kitsune2 answers the peer's goodbye with an error; the peer's
        // drain and close follow.
        debug!(%url, %e, "the peer said goodbye");
        return;
    }
    // kitsune2 expects the connection to go when its handler fails ("peer
    // connection will be closed"): a message it could not take, or bytes
    // that are no kitsune2 message.
    warn!(%url, %e, "kitsune2 handler failed; closing the connection");
    conn.close(CoreError::Handler(e), Initiator::Local);
}

/// Whether `data` is kitsune2's disconnect message (looked at only when
/// the handler failed, so the common path decodes nothing twice).
fn is_disconnect_message(data: &Bytes) -> bool {
    K2Proto::decode(data).is_ok_and(|m| m.ty() == K2WireType::Disconnect)
}

/// Hands the peer's preflight to kitsune2; when we accepted the
/// connection, queues our answer; then resolves the connection against the
/// peer's others and, once it won, writes our preflight if still queued.
async fn on_preflight(
    shared: &Shared,
    conn: &Arc<Conn>,
    url: Url,
    data: Bytes,
) -> Result<(), CoreError> {
    shared
        .hnd
        .recv_data(url.clone(), data)
        .await
        .map_err(CoreError::from_handler)?;
    if conn.with(|p| p.is_draining()) {
        // It lost resolution (or is being closed) while kitsune2 judged:
        // the peer's frames are still delivered until its stream ends.
        conn.with(|p| p.accept_preflight());
        return Ok(());
    }
    if conn.dialed_by_us {
        activate(shared, conn).await?;
        return Ok(());
    }
    let own_url = shared.own_url_for(&PeerAddr::parse(&url)?)?;
    let ours = shared
        .hnd
        .peer_connect(url.clone())
        .await
        .map_err(CoreError::from_handler)?;
    conn.with(|p| p.queue_preflight(&own_url, ours));
    if activate(shared, conn).await? {
        conn.write(None).await?;
        info!(%url, "connection active (accepted)");
    }
    Ok(())
}

/// Resolves `conn` in the registry; drains the losers outside its lock.
/// A connection that lost is drained too: the peer may have written on it
/// already, and those frames are delivered until its stream ends.
///
/// A connection the peer dialed while our own dial to it is active is
/// contested (see [`Activation::Contested`]): when the backend finds that
/// dial gone (the peer restarted under the same key), the new connection
/// replaces it at once; else resolution stands, also when that dial was
/// closed on purpose meanwhile (the peer was alive: see
/// [`Registry::retire_gone`](crate::registry::Registry::retire_gone)).
///
/// Returns whether `conn` is now active.
async fn activate(shared: &Shared, conn: &Arc<Conn>) -> Result<bool, CoreError> {
    let mut outcome = shared.registry().activate(conn, &shared.local_id);
    if let Activation::Contested { rival } = outcome {
        outcome = if rival.connection.probe_gone().await {
            // Still active (no drain started meanwhile): replaced.
            if shared.registry().retire_gone(&rival, conn) {
                warn!("the peer dialed anew and its old connection is silent: replacing it");
                rival.close(CoreError::Superseded, Initiator::Local);
            }
            shared.registry().activate(conn, &shared.local_id)
        } else {
            Activation::Lost
        };
    }
    match outcome {
        Activation::Won { superseded } => {
            for loser in superseded {
                loser.start_drain(CoreError::Superseded);
            }
            shared.activated.notify_waiters();
            Ok(true)
        }
        Activation::Lost | Activation::Contested { .. } => {
            conn.with(|p| p.accept_preflight());
            if conn.start_drain(CoreError::Superseded) || conn.with(|p| p.is_draining()) {
                return Ok(false);
            }
            Err(CoreError::Superseded)
        }
    }
}
