//! iroh's QUIC connection and uni streams seen through the core's
//! `Connection`, `SendStream` and `RecvStream` traits: a plain mapping, no
//! protocol logic.
//!
//! | core trait     | iroh type                                          |
//! |----------------|-------------------------------------------------------------------------|
//! | `Connection`   | `iroh::endpoint::Connection`                                            |
//! | `SendStream`   | `iroh::endpoint::SendStream` (`write_many_chunks`, `finish`, `stopped`) |
//! | `RecvStream`   | `iroh::endpoint::RecvStream` (`read_chunk`)                             |

use crate::endpoint::COME_BACK_SILENCE;
use crate::error::{IrohTransportError, core_err};
use crate::iroh_types::{
    ConnectionError, QuicConnection, QuicRecvStream, QuicSendStream, ReadError, VarInt,
};
use bytes::Bytes;
use kitsune2_api::BoxFut;
use kitsune2_iroh_core::{
    CloseCode, Connection, CoreError, DynRecvStream, DynSendStream, RecvStream, SendStream,
    WireVersion,
};
use std::future::Future;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::Poll;
use std::time::Duration;

/// How often [`IrohConnection`]'s `probe_gone` looks at QUIC's counters.
const PROBE_POLL: Duration = Duration::from_millis(50);

/// Largest chunk asked of iroh per read: the core's bound (its budget for
/// partial frames counts on it). Chunks are views into QUIC's receive
/// buffer.
const READ_CHUNK_MAX: usize = kitsune2_iroh_core::MAX_READ_CHUNK;

/// An iroh connection seen through the core's `Connection` trait.
///
/// # Invariants
///
/// [`remote_close`](Connection::remote_close) keeps reporting the peer's
/// application close after a later local close: iroh's QUIC replaces a
/// connection's close reason with "locally closed" when it is closed
/// locally, so the peer's close is saved first.
#[derive(Debug)]
pub struct IrohConnection {
    inner: QuicConnection,
    /// The peer's application close, saved before a local close.
    peer_close: OnceLock<(CloseCode, Bytes)>,
    /// QUIC's count of datagrams from the peer when last looked at, and
    /// when it last changed (as far as the looks tell).
    heard: Mutex<(u64, tokio::time::Instant)>,
}

impl IrohConnection {
    /// Wraps an established iroh connection.
    pub(crate) fn new(inner: QuicConnection) -> Self {
        let datagrams = inner.stats().udp_rx.datagrams;
        Self {
            inner,
            peer_close: OnceLock::new(),
            heard: Mutex::new((datagrams, tokio::time::Instant::now())),
        }
    }

    /// The peer's application close, as QUIC reports it now.
    fn peer_close_now(&self) -> Option<(CloseCode, Bytes)> {
        match self.inner.close_reason()? {
            ConnectionError::ApplicationClosed(close) => Some((
                CloseCode::from_wire(close.error_code.into_inner()),
                close.reason,
            )),
            _ => None,
        }
    }
}

fn conn_err(op: &'static str, source: ConnectionError) -> CoreError {
    core_err(op, IrohTransportError::Connection { source })
}

impl Connection for IrohConnection {
    fn remote_id(&self) -> [u8; 32] {
        *self.inner.remote_id().as_bytes()
    }

    /// From the ALPN the handshake settled on; any other than
    /// `kitsune2/1` (the endpoint accepts no third) is `kitsune2/0`.
    fn wire_version(&self) -> WireVersion {
        WireVersion::from_alpn(self.inner.alpn()).unwrap_or(WireVersion::V0)
    }

    fn open_uni(&self) -> BoxFut<'_, Result<DynSendStream, CoreError>> {
        Box::pin(async move {
            let s = self
                .inner
                .open_uni()
                .await
                .map_err(|e| conn_err("open_uni", e))?;
            Ok(Box::new(IrohSendStream { inner: s }) as DynSendStream)
        })
    }

    fn accept_uni(&self) -> BoxFut<'_, Result<DynRecvStream, CoreError>> {
        Box::pin(async move {
            let s = self
                .inner
                .accept_uni()
                .await
                .map_err(|e| conn_err("accept_uni", e))?;
            Ok(Box::new(IrohRecvStream::new(s)) as DynRecvStream)
        })
    }

    fn close(&self, code: CloseCode, reason: &[u8]) {
        if let Some(peer) = self.peer_close_now() {
            // Ignored when already saved: the first close is the peer's.
            let _ = self.peer_close.set(peer);
        }
        // QUIC ignores a close after the first, as the trait requires.
        self.inner
            .close(VarInt::from_u32(u32::from(code as u8)), reason);
    }

    fn remote_close(&self) -> Option<(CloseCode, Bytes)> {
        self.peer_close
            .get()
            .cloned()
            .or_else(|| self.peer_close_now())
    }

    fn is_direct(&self) -> bool {
        self.inner
            .paths()
            .iter()
            .any(|p| p.is_selected() && p.is_ip())
    }

    /// Watches the datagrams QUIC counts from the peer: gone when none
    /// arrives within [`COME_BACK_SILENCE`] (3 s; a live peer answers the
    /// keep-alive sent after 1 s of silence, see [`KEEP_ALIVE_INTERVAL`])
    /// or the connection ends; alive at the first one.
    ///
    /// [`KEEP_ALIVE_INTERVAL`]: crate::endpoint::KEEP_ALIVE_INTERVAL
    /// From QUIC's count of datagrams received: zero when it changed since
    /// the last call, else the time since it last did. The core calls it
    /// every second; a live peer answers our keep-alive (sent after
    /// [`KEEP_ALIVE_INTERVAL`](crate::endpoint::KEEP_ALIVE_INTERVAL) of
    /// silence) well within that.
    fn silent_for(&self) -> Duration {
        let now_count = self.inner.stats().udp_rx.datagrams;
        let now = tokio::time::Instant::now();
        let mut heard = self.heard.lock().unwrap_or_else(PoisonError::into_inner);
        if heard.0 != now_count {
            *heard = (now_count, now);
            return Duration::ZERO;
        }
        now.saturating_duration_since(heard.1)
    }

    fn probe_gone(&self) -> BoxFut<'_, bool> {
        Box::pin(async move {
            let heard = || self.inner.stats().udp_rx.datagrams;
            let start = heard();
            let deadline = tokio::time::Instant::now() + COME_BACK_SILENCE;
            loop {
                if self.inner.close_reason().is_some() {
                    return true;
                }
                if heard() != start {
                    return false;
                }
                if tokio::time::Instant::now() >= deadline {
                    return true;
                }
                tokio::time::sleep(PROBE_POLL).await;
            }
        })
    }
}

/// The sending half of an iroh uni stream.
#[derive(Debug)]
pub struct IrohSendStream {
    inner: QuicSendStream,
}

impl SendStream for IrohSendStream {
    fn write_chunks<'a>(
        &'a mut self,
        chunks: &'a mut [Bytes],
    ) -> BoxFut<'a, Result<(), CoreError>> {
        // Resumable (the trait's cancel safety): `write_many_chunks` writes
        // nothing unless it resolves, and after each call the chunks it
        // wrote are emptied here, a partly written one already cut by it.
        Box::pin(async move {
            let mut start = 0;
            loop {
                while chunks.get(start).is_some_and(Bytes::is_empty) {
                    start += 1;
                }
                if start == chunks.len() {
                    return Ok(());
                }
                let written = {
                    let mut rest = &mut chunks[start..];
                    let before = rest.len();
                    self.inner
                        .write_many_chunks(&mut rest)
                        .await
                        .map_err(|source| {
                            core_err("write", IrohTransportError::Write { source })
                        })?;
                    before - rest.len()
                };
                for chunk in &mut chunks[start..start + written] {
                    *chunk = Bytes::new();
                }
                start += written;
            }
        })
    }

    fn finish(&mut self) -> BoxFut<'_, Result<(), CoreError>> {
        Box::pin(async move {
            // Finishing twice is harmless; the ack wait is what matters.
            let _ = self.inner.finish();
            self.inner
                .stopped()
                .await
                .map(drop)
                .map_err(|source| core_err("finish", IrohTransportError::Finish { source }))
        })
    }

    fn set_priority(&mut self, priority: i32) {
        // Fails only on a stream already finished or reset: nothing to order.
        let _ = self.inner.set_priority(priority);
    }

    fn reset(&mut self, code: u32) {
        // Fails only on a stream already finished or reset. Without it, a
        // dropped stream would be finished implicitly, its frame cut short.
        let _ = self.inner.reset(VarInt::from_u32(code));
    }
}

/// The receiving half of an iroh uni stream.
#[derive(Debug)]
pub struct IrohRecvStream {
    inner: QuicRecvStream,
    /// An error met by `read_chunks` after it had taken chunks, returned
    /// by the next read (QUIC reports a reset once, then an end).
    deferred: Option<CoreError>,
}

impl IrohRecvStream {
    fn new(inner: QuicRecvStream) -> Self {
        Self {
            inner,
            deferred: None,
        }
    }
}

fn read_err(source: ReadError) -> CoreError {
    core_err("read", IrohTransportError::Read { source })
}

impl RecvStream for IrohRecvStream {
    fn read_chunk(&mut self) -> BoxFut<'_, Result<Option<Bytes>, CoreError>> {
        Box::pin(async move {
            if let Some(e) = self.deferred.take() {
                return Err(e);
            }
            self.inner
                .read_chunk(READ_CHUNK_MAX)
                .await
                .map_err(read_err)
        })
    }

    /// Takes QUIC's ready chunks one `read_chunk` after the other within
    /// one poll, so nothing taken is held across a wait (cancel safe).
    fn read_chunks(&mut self) -> BoxFut<'_, Result<Option<Vec<Bytes>>, CoreError>> {
        Box::pin(std::future::poll_fn(move |cx| {
            if let Some(e) = self.deferred.take() {
                return Poll::Ready(Err(e));
            }
            let mut out = Vec::new();
            let mut taken = 0;
            while taken < READ_CHUNK_MAX {
                let read = std::pin::pin!(self.inner.read_chunk(READ_CHUNK_MAX - taken)).poll(cx);
                match read {
                    Poll::Ready(Ok(Some(chunk))) => {
                        taken += chunk.len();
                        out.push(chunk);
                    }
                    // QUIC answers the end again on the next read.
                    Poll::Ready(Ok(None)) if out.is_empty() => return Poll::Ready(Ok(None)),
                    Poll::Ready(Err(e)) if out.is_empty() => return Poll::Ready(Err(read_err(e))),
                    Poll::Ready(Err(e)) => {
                        self.deferred = Some(read_err(e));
                        break;
                    }
                    Poll::Pending if out.is_empty() => return Poll::Pending,
                    Poll::Ready(Ok(None)) | Poll::Pending => break,
                }
            }
            Poll::Ready(Ok(Some(out)))
        }))
    }
}
