//! One connection and its lifecycle.
//!
//! ```text
//!                 remote preflight ok,           preferred connection
//!                 resolution won                 to the same peer won
//!   Pending ───────────────────────────▶ Active        Pending ──▶ Superseded
//!      │                                   │
//!      │ error, timeout, local close       │ error, peer close, local close
//!      ▼                                   ▼
//!   Closed ◀───────────────────────────────┘           (Superseded and Closed
//!                                                        are absorbing)
//! ```
//!
//! `Pending → Active` and `Pending → Superseded` happen in
//! [`Registry::activate`](crate::registry::Registry::activate) under the
//! registry lock; `→ Closed` in the connection's reader task when it exits
//! (or in `disconnect`/`close`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use kitsune2_api::Url;
use kitsune2_iroh_codec::{Frame, Limits};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::close::CloseCode;
use crate::error::CoreError;
use crate::traits::{DynConnection, DynSendStream, EndpointId};

/// Where a connection is in its lifecycle (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Connected; preflights not yet exchanged.
    Pending,
    /// Preflights exchanged; carries data.
    Active,
    /// Lost simultaneous-open resolution; closed with code 2. Absorbing.
    Superseded,
    /// Ended. Absorbing.
    Closed,
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
/// - The first frame written on the send stream is our preflight: the
///   dialer writes it before registering for data; the acceptor holds the
///   send lock from before activation until it is written.
/// - `peer_disconnect` is reported at most once ([`Conn::take_report`]).
#[derive(Debug)]
pub(crate) struct Conn {
    /// Local serial number, for logs and "newer wins" ordering.
    pub(crate) serial: u64,
    pub(crate) connection: DynConnection,
    pub(crate) remote_id: EndpointId,
    pub(crate) dialed_by_us: bool,
    pub(crate) opened_at_s: u64,
    pub(crate) counters: Counters,
    remote_url: OnceLock<Url>,
    pub(crate) send: tokio::sync::Mutex<Option<DynSendStream>>,
    state: watch::Sender<ConnState>,
    reported: AtomicBool,
    locally_closed: AtomicBool,
    pub(crate) reader: Mutex<Option<AbortHandle>>,
}

impl Conn {
    pub(crate) fn new(
        serial: u64,
        connection: DynConnection,
        dialed_by_us: bool,
        opened_at_s: u64,
    ) -> Self {
        Self {
            serial,
            remote_id: connection.remote_id(),
            connection,
            dialed_by_us,
            opened_at_s,
            counters: Counters::default(),
            remote_url: OnceLock::new(),
            send: tokio::sync::Mutex::new(None),
            state: watch::Sender::new(ConnState::Pending),
            reported: AtomicBool::new(false),
            locally_closed: AtomicBool::new(false),
            reader: Mutex::new(None),
        }
    }

    pub(crate) fn state(&self) -> ConnState {
        *self.state.borrow()
    }

    /// Moves to `next` unless already in an absorbing state.
    pub(crate) fn set_state(&self, next: ConnState) {
        self.state.send_if_modified(|s| {
            if matches!(*s, ConnState::Superseded | ConnState::Closed) || *s == next {
                return false;
            }
            *s = next;
            true
        });
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

    pub(crate) fn remote_url(&self) -> Option<&Url> {
        self.remote_url.get()
    }

    pub(crate) fn set_remote_url(&self, url: Url) {
        let _ = self.remote_url.set(url);
    }

    /// The id of the endpoint that dialed this connection.
    pub(crate) fn dialer_id(&self, local_id: &EndpointId) -> EndpointId {
        if self.dialed_by_us {
            *local_id
        } else {
            self.remote_id
        }
    }

    /// True the first time only: whoever gets `true` reports the disconnect.
    pub(crate) fn take_report(&self) -> bool {
        !self.reported.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn is_locally_closed(&self) -> bool {
        self.locally_closed.load(Ordering::SeqCst)
    }

    /// True when this connection was closed on purpose, by either side:
    /// locally (disconnect, transport close, supersession) or by the
    /// peer's graceful or superseded close.
    pub(crate) fn ended_deliberately(&self) -> bool {
        self.is_locally_closed()
            || self.state() == ConnState::Superseded
            || matches!(
                self.connection.remote_close(),
                Some((CloseCode::Graceful | CloseCode::Superseded, _))
            )
    }

    /// Closes on purpose (disconnect, transport close, superseded): the
    /// reader's exit then reports nothing.
    pub(crate) fn close_local(&self, code: CloseCode, reason: &str) {
        self.locally_closed.store(true, Ordering::SeqCst);
        self.connection.close(code, reason.as_bytes());
    }

    /// Closes because it failed; the reader's exit reports the loss.
    pub(crate) fn close_failed(&self, reason: &str) {
        self.connection
            .close(CloseCode::Unspecified, reason.as_bytes());
    }

    pub(crate) fn abort_reader(&self) {
        if let Some(h) = self.reader.lock().expect("poisoned").take() {
            h.abort();
        }
    }

    /// Writes one frame on `stream`, opening it first if needed. On error
    /// the stream is dropped, so the next write opens a new one.
    pub(crate) async fn write_frame_locked(
        &self,
        stream: &mut Option<DynSendStream>,
        frame: Frame,
        limits: &Limits,
    ) -> Result<(), CoreError> {
        let mut chunks = frame.encode(limits)?.into_chunks();
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

    /// Writes one data frame and counts it.
    pub(crate) async fn write_data(&self, data: Bytes, limits: &Limits) -> Result<(), CoreError> {
        let len = data.len() as u64;
        let mut guard = self.send.lock().await;
        self.write_frame_locked(&mut guard, Frame::data(data), limits)
            .await?;
        drop(guard);
        self.counters.send_messages.fetch_add(1, Ordering::Relaxed);
        self.counters.send_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}
