//! The reader task of one connection: a driver, as quinn's
//! `ConnectionDriver`, that moves the peer's bytes into the connection's
//! protocol object and acts on its events. The rules are in
//! [`ConnProto`](crate::proto::ConnProto); here is only I/O and the calls
//! into kitsune2 and the registry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use kitsune2_api::{K2Proto, K2WireType, Url};
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::budget::Charge;
use crate::conn::Conn;
use crate::error::{CoreError, Initiator};
use crate::peer_url::PeerAddr;
use crate::proto::Event;
use crate::registry::Activation;
use crate::shared::Shared;
use crate::traits::DynRecvStream;

/// What the network gave next.
enum Input {
    /// A new stream from the peer, or the connection's end.
    Stream(Result<DynRecvStream, CoreError>),
    /// A read on the current stream.
    Chunk(Result<Option<Bytes>, CoreError>),
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
        let input = next_input(conn, read, may_read, freed, deadline).await;
        conn.with(|p| match input {
            Input::Stream(Ok(s)) => {
                p.handle_stream();
                stream = Some(s);
            }
            Input::Stream(Err(e)) => p.handle_connection_lost(e, conn.connection.remote_close()),
            Input::Chunk(Ok(Some(chunk))) => p.handle_chunk(chunk, Instant::now().into_std()),
            Input::Chunk(Ok(None)) => p.handle_stream_end(Instant::now().into_std()),
            Input::Chunk(Err(e)) => p.handle_stream_error(e),
            Input::Timeout => p.handle_timeout(Instant::now().into_std()),
            Input::Woken => {}
        });
    }
}

/// The next input: a chunk of `stream` (when given), a new stream, a
/// wake-up, the deadline, or (when `!may_read`, waiting for the budget)
/// `freed`.
async fn next_input(
    conn: &Conn,
    stream: Option<&mut DynRecvStream>,
    may_read: bool,
    freed: Notified<'_>,
    deadline: Option<std::time::Instant>,
) -> Input {
    let read = async {
        match stream {
            None if !may_read => tokio::select! {
                biased;
                r = conn.connection.accept_uni() => Input::Stream(r),
                () = freed => Input::Woken,
            },
            None => Input::Stream(conn.connection.accept_uni().await),
            Some(stream) => tokio::select! {
                biased;
                r = stream.read_chunk() => Input::Chunk(r),
                r = conn.connection.accept_uni() => Input::Stream(r),
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
/// replaces it at once; else resolution stands.
///
/// Returns whether `conn` is now active.
async fn activate(shared: &Shared, conn: &Arc<Conn>) -> Result<bool, CoreError> {
    let mut outcome = shared.registry().activate(conn, &shared.local_id);
    if let Activation::Contested { rival } = outcome {
        outcome = if rival.connection.probe_gone().await {
            warn!("the peer dialed anew and its old connection is silent: replacing it");
            shared.registry().retire(&rival);
            rival.close(CoreError::Superseded, Initiator::Local);
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
