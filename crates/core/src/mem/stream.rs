//! The in-memory connection and its streams: bounded channels of chunks,
//! one-way latency, acknowledgement of a finished stream once everything
//! on it arrived (as QUIC's: received, not necessarily read), and what
//! arrived stays readable after the connection closes (as QUIC keeps it).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use kitsune2_api::BoxFut;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{CloseInfo, MemNetwork, Pair, STREAM_CAPACITY};
use crate::close::CloseCode;
use crate::error::CoreError;
use crate::peer_url::id_to_hex;
use crate::traits::{
    Connection, DynRecvStream, DynSendStream, EndpointId, MAX_READ_CHUNK, RecvStream, SendStream,
};
use crate::version::WireVersion;

/// One side of an in-memory connection.
pub struct MemConnection {
    local: EndpointId,
    remote: EndpointId,
    pair: Arc<Pair>,
    to_peer: mpsc::UnboundedSender<MemRecvStream>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<MemRecvStream>>,
    /// The peer's stream limit: a permit per stream open towards it.
    open_permits: Option<Arc<Semaphore>>,
    net: Weak<MemNetwork>,
}

impl fmt::Debug for MemConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemConnection")
            .field("remote", &&id_to_hex(&self.remote)[..16])
            .finish()
    }
}

impl MemConnection {
    /// One side: `(local, remote)` ids, the shared pair, `(to the peer,
    /// from the peer)` stream channels, and the peer's stream limit.
    pub(super) fn new(
        (local, remote): (EndpointId, EndpointId),
        pair: Arc<Pair>,
        (to_peer, incoming): (
            mpsc::UnboundedSender<MemRecvStream>,
            mpsc::UnboundedReceiver<MemRecvStream>,
        ),
        peer_stream_limit: Option<usize>,
        net: &Arc<MemNetwork>,
    ) -> Self {
        Self {
            local,
            remote,
            pair,
            to_peer,
            incoming: tokio::sync::Mutex::new(incoming),
            open_permits: peer_stream_limit.map(|l| Arc::new(Semaphore::new(l))),
            net: Arc::downgrade(net),
        }
    }

    /// Opens a stream towards the peer, as the concrete type, ignoring the
    /// peer's stream limit (as a hostile peer would).
    pub fn open_raw(&self) -> Result<MemSendStream, CoreError> {
        self.open_with(None)
    }

    fn open_with(&self, permit: Option<OwnedSemaphorePermit>) -> Result<MemSendStream, CoreError> {
        if self.pair.is_closed() {
            return Err(CoreError::io("open_uni", "connection closed"));
        }
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let delivered = Arc::new(watch::Sender::new(0));
        let reset = Arc::new(AtomicBool::new(false));
        self.to_peer
            .send(MemRecvStream {
                rx,
                pending: None,
                reader: self.remote,
                net: self.net.clone(),
                pair: self.pair.clone(),
                delivered: delivered.clone(),
                reset: reset.clone(),
                _permit: permit,
            })
            .map_err(|_| CoreError::io("open_uni", "connection closed"))?;
        Ok(MemSendStream {
            tx: Some(tx),
            written: 0,
            last_arrival: None,
            delivered,
            reset,
            pair: self.pair.clone(),
            from: self.local,
            net: self.net.clone(),
        })
    }

    /// Accepts the peer's next stream, as the concrete type.
    pub async fn accept_raw(&self) -> Result<MemRecvStream, CoreError> {
        let mut incoming = self.incoming.lock().await;
        tokio::select! {
            s = incoming.recv() => s.ok_or_else(|| CoreError::io("accept_uni", "connection closed")),
            () = self.pair.wait_closed() => Err(CoreError::io("accept_uni", "connection closed")),
        }
    }
}

impl Connection for MemConnection {
    fn remote_id(&self) -> EndpointId {
        self.remote
    }

    fn open_uni(&self) -> BoxFut<'_, Result<DynSendStream, CoreError>> {
        Box::pin(async move {
            // Opening a stream is asynchronous on a real network: let other
            // tasks run here, as they could there.
            tokio::task::yield_now().await;
            let permit = match &self.open_permits {
                None => None,
                // The peer's stream limit: wait for one of its streams to go.
                Some(permits) => Some(tokio::select! {
                    p = permits.clone().acquire_owned() => {
                        p.map_err(|_| CoreError::io("open_uni", "connection closed"))?
                    }
                    () = self.pair.wait_closed() => {
                        return Err(CoreError::io("open_uni", "connection closed"));
                    }
                }),
            };
            Ok(Box::new(self.open_with(permit)?) as DynSendStream)
        })
    }

    fn wire_version(&self) -> WireVersion {
        self.pair.version
    }

    fn accept_uni(&self) -> BoxFut<'_, Result<DynRecvStream, CoreError>> {
        Box::pin(async move { Ok(Box::new(self.accept_raw().await?) as DynRecvStream) })
    }

    fn close(&self, code: CloseCode, reason: &[u8]) {
        self.pair.close(CloseInfo {
            by: Some(self.local),
            code,
            reason: Bytes::copy_from_slice(reason),
        });
    }

    fn remote_close(&self) -> Option<(CloseCode, Bytes)> {
        let closed = self.pair.closed.borrow();
        match &*closed {
            Some(CloseInfo {
                by: Some(by),
                code,
                reason,
            }) if *by == self.remote => Some((*code, reason.clone())),
            _ => None,
        }
    }

    fn is_direct(&self) -> bool {
        true
    }

    fn silent_for(&self) -> std::time::Duration {
        // A crashed peer has said nothing since it crashed; a live one
        // always answers at once here.
        self.pair.crashed_for(self.remote).unwrap_or_default()
    }

    fn probe_gone(&self) -> BoxFut<'_, bool> {
        let gone = self.pair.is_closed() || self.pair.crashed() == Some(self.remote);
        Box::pin(async move { gone })
    }
}

/// Sending half of an in-memory stream.
pub struct MemSendStream {
    tx: Option<mpsc::Sender<(tokio::time::Instant, Bytes)>>,
    /// Chunks sent.
    written: u64,
    /// When the last chunk sent arrives at the reader: `finish` resolves
    /// once the acknowledgement of it is back, as QUIC's.
    last_arrival: Option<tokio::time::Instant>,
    /// Chunks the reader took ([`u64::MAX`] once it dropped the stream,
    /// which stops the stream): `finish` resolves once it took all.
    delivered: Arc<watch::Sender<u64>>,
    /// Set by [`SendStream::reset`]; the reader's next read fails.
    reset: Arc<AtomicBool>,
    pair: Arc<Pair>,
    from: EndpointId,
    net: Weak<MemNetwork>,
}

impl fmt::Debug for MemSendStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemSendStream").finish_non_exhaustive()
    }
}

impl MemSendStream {
    /// Writes raw bytes (for malformed or partial frames in tests).
    pub async fn write_raw(&mut self, bytes: Bytes) -> Result<(), CoreError> {
        self.write_chunks(&mut [bytes]).await
    }

    /// Finishes the stream: the reader sees its end after the buffered bytes.
    pub fn finish(&mut self) {
        self.tx = None;
    }
}

impl SendStream for MemSendStream {
    fn write_chunks<'a>(
        &'a mut self,
        chunks: &'a mut [Bytes],
    ) -> BoxFut<'a, Result<(), CoreError>> {
        Box::pin(async move {
            for chunk in chunks.iter_mut() {
                if self
                    .net
                    .upgrade()
                    .is_some_and(|n| n.write_fails(&self.from))
                {
                    return Err(CoreError::io("write", "injected write failure"));
                }
                let tx = self
                    .tx
                    .as_ref()
                    .ok_or_else(|| CoreError::io("write", "stream finished"))?;
                if chunk.is_empty() {
                    continue;
                }
                let latency = self
                    .net
                    .upgrade()
                    .map(|n| n.latency(&self.from))
                    .unwrap_or_default();
                let arrives = tokio::time::Instant::now() + latency;
                // Reserve first, so that a cancelled write took nothing
                // out of `chunks` (resumable, as the trait requires).
                // A closed connection takes nothing, as QUIC's does.
                let permit = tokio::select! {
                    biased;
                    () = self.pair.wait_closed() => return Err(CoreError::io("write", "connection closed")),
                    r = tx.reserve() => r.map_err(|_| CoreError::io("write", "stream stopped"))?,
                };
                permit.send((arrives, std::mem::take(chunk)));
                self.written += 1;
                self.last_arrival = Some(arrives);
            }
            Ok(())
        })
    }

    fn finish(&mut self) -> BoxFut<'_, Result<(), CoreError>> {
        Box::pin(async move {
            self.tx = None;
            let written = self.written;
            // The reader's side acknowledges what arrived, read or not;
            // the acknowledgement takes the way back.
            let peer = if self.pair.a == self.from {
                self.pair.b
            } else {
                self.pair.a
            };
            let back = self
                .net
                .upgrade()
                .map(|n| n.latency(&peer))
                .unwrap_or_default();
            let acked = async {
                match self.last_arrival {
                    Some(at) => tokio::time::sleep_until(at + back).await,
                    None => std::future::pending().await,
                }
            };
            let mut delivered = self.delivered.subscribe();
            tokio::select! {
                biased;
                r = delivered.wait_for(|d| *d >= written) => {
                    r.map(drop).map_err(|_| CoreError::io("finish", "stream gone"))
                }
                () = acked => Ok(()),
                () = self.pair.wait_closed() => Err(CoreError::io("finish", "connection closed")),
            }
        })
    }

    fn reset(&mut self, _code: u32) {
        self.reset.store(true, Ordering::SeqCst);
        self.tx = None;
    }
}

/// Receiving half of an in-memory stream.
pub struct MemRecvStream {
    rx: mpsc::Receiver<(tokio::time::Instant, Bytes)>,
    delivered: Arc<watch::Sender<u64>>,
    /// A chunk taken off the channel that has not arrived yet (latency);
    /// kept here so that a cancelled read loses nothing.
    pending: Option<(tokio::time::Instant, Bytes)>,
    pair: Arc<Pair>,
    /// The writer reset the stream: reads fail.
    reset: Arc<AtomicBool>,
    /// This stream's place in the reader's stream limit, freed on drop.
    _permit: Option<OwnedSemaphorePermit>,
    /// The reading endpoint, for [`MemNetwork::hold_reads`].
    reader: EndpointId,
    net: Weak<MemNetwork>,
}

impl Drop for MemRecvStream {
    fn drop(&mut self) {
        // A reader gone is a stream stopped: nothing more will be taken.
        self.delivered.send_replace(u64::MAX);
    }
}

impl fmt::Debug for MemRecvStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemRecvStream").finish_non_exhaustive()
    }
}

impl RecvStream for MemRecvStream {
    fn read_chunk(&mut self) -> BoxFut<'_, Result<Option<Bytes>, CoreError>> {
        Box::pin(async move {
            let was_reset = |reset: &AtomicBool| {
                reset
                    .load(Ordering::SeqCst)
                    .then(|| CoreError::io("read", "stream reset by the peer"))
            };
            if let Some(net) = self.net.upgrade() {
                net.reads_released(&self.reader).await;
            }
            if let Some(e) = was_reset(&self.reset) {
                return Err(e);
            }
            let next = async {
                if self.pending.is_none() {
                    self.pending = self.rx.recv().await;
                }
                let arrives = self.pending.as_ref()?.0;
                tokio::time::sleep_until(arrives).await;
                // At most MAX_READ_CHUNK per read, as the trait promises;
                // the rest of a larger write stays pending.
                let (_, rest) = self.pending.as_mut()?;
                if rest.len() > MAX_READ_CHUNK {
                    return Some(rest.split_to(MAX_READ_CHUNK));
                }
                let chunk = self.pending.take().map(|(_, chunk)| chunk);
                self.delivered.send_modify(|d| *d = d.saturating_add(1));
                chunk
            };
            let chunk = tokio::select! {
                biased;
                c = next => c,
                () = self.pair.wait_closed() => return Err(CoreError::io("read", "connection closed")),
            };
            // The end of a reset stream is its reset, not a FIN.
            match (chunk, was_reset(&self.reset)) {
                (None, Some(e)) => Err(e),
                (chunk, _) => Ok(chunk),
            }
        })
    }
}
