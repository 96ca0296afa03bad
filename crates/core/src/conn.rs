//! One live connection: its protocol object ([`ConnProto`]) behind a lock,
//! the backend connection, our send stream, counters.
//!
//! [`Conn`] adds to the protocol object only what needs I/O or sharing:
//! publishing the state for waiters, writing frames, sending the close
//! that follows from the connection's end. Every state transition goes
//! through [`Conn::with`], the one place the published state is updated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use kitsune2_api::Url;
use kitsune2_iroh_codec::{Frame, Limits};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::close::CloseCode;
use crate::error::{CoreError, Initiator};
use crate::proto::{ConnProto, ConnState, Role};
use crate::traits::{DynConnection, DynSendStream, EndpointId};

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
    proto: Mutex<ConnProto>,
    state: watch::Sender<ConnState>,
    send: tokio::sync::Mutex<Option<DynSendStream>>,
    reader: Mutex<Option<AbortHandle>>,
}

impl Conn {
    pub(crate) fn new(
        serial: u64,
        connection: DynConnection,
        proto: ConnProto,
        limits: Limits,
        opened_at_s: u64,
    ) -> Self {
        Self {
            serial,
            remote_id: connection.remote_id(),
            connection,
            dialed_by_us: proto.role() == Role::Dialer,
            opened_at_s,
            counters: Counters::default(),
            limits,
            state: watch::Sender::new(proto.state()),
            proto: Mutex::new(proto),
            send: tokio::sync::Mutex::new(None),
            reader: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnProto> {
        self.proto.lock().expect("poisoned")
    }

    /// Runs `f` on the protocol object, then publishes its state.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut ConnProto) -> R) -> R {
        let mut proto = self.lock();
        let out = f(&mut proto);
        let now = proto.state();
        drop(proto);
        self.state.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
        out
    }

    pub(crate) fn state(&self) -> ConnState {
        *self.state.borrow()
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

    /// Writes one frame on `stream`, opening it first if needed. On error
    /// the stream is dropped, so the next write opens a new one.
    async fn write_frame_locked(
        &self,
        stream: &mut Option<DynSendStream>,
        frame: Frame,
    ) -> Result<(), CoreError> {
        let mut chunks = frame.encode(&self.limits)?.into_chunks();
        if stream.is_none() {
            *stream = Some(self.connection.open_uni().await?);
        }
        // INVARIANT: set just above when it was None.
        let s = stream.as_mut().expect("stream opened above");
        if let Err(e) = s.write_chunks(&mut chunks).await {
            *stream = None;
            return Err(e);
        }
        Ok(())
    }

    /// Writes what the protocol queued (our preflight), then `data` as one
    /// data frame when given and the connection is active.
    ///
    /// # Errors
    ///
    /// The backend's write error, or the error that ended the connection
    /// when data can no longer be sent on it.
    pub(crate) async fn write(&self, data: Option<Bytes>) -> Result<(), CoreError> {
        let mut stream = self.send.lock().await;
        while let Some(frame) = self.with(|p| p.poll_transmit()) {
            self.write_frame_locked(&mut stream, frame).await?;
        }
        let Some(data) = data else {
            return Ok(());
        };
        if !self.with(|p| p.may_send_data()) {
            return Err(self.with(|p| p.closed()).map_or_else(
                || CoreError::ConnectionClosed {
                    code: None,
                    reason: "connection is not active".to_owned(),
                },
                |(e, _)| e,
            ));
        }
        let len = data.len() as u64;
        self.write_frame_locked(&mut stream, Frame::data(data))
            .await?;
        drop(stream);
        self.counters.send_messages.fetch_add(1, Ordering::Relaxed);
        self.counters.send_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}
