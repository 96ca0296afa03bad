//! The accept fan-in: one accept loop per iroh endpoint, each running a
//! bounded number of handshakes at once, all feeding one queue that the
//! core's `Endpoint::accept` drains.

use crate::connection::IrohConnection;
use crate::error::{IrohTransportError, core_err};
use crate::iroh_types::Endpoint;
use kitsune2_iroh_core::{CoreError, DynConnection};
use std::sync::Arc;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};

/// Incoming connections whose handshake may run at once, per iroh endpoint.
const MAX_CONCURRENT_HANDSHAKES: usize = 32;

/// Handshaken incoming connections waiting for the core.
const INCOMING_QUEUE: usize = 16;

/// A handshaken incoming connection, or why its handshake failed.
type Incoming = Result<DynConnection, CoreError>;

/// The queue every accept loop of one transport feeds.
///
/// # Usage
///
/// [`AcceptQueue::new`], then [`spawn_loop`](Self::spawn_loop) for each
/// iroh endpoint (the loop's handle aborts it); the core takes connections
/// with [`next`](Self::next).
///
/// # Invariants
///
/// At most [`INCOMING_QUEUE`] connections wait in the queue, and each loop
/// runs at most [`MAX_CONCURRENT_HANDSHAKES`] handshakes, so a peer that
/// opens connections faster than the core takes them holds up its own
/// handshakes and nothing else.
#[derive(Debug)]
pub(crate) struct AcceptQueue {
    rx: Mutex<mpsc::Receiver<Incoming>>,
    tx: mpsc::Sender<Incoming>,
}

impl AcceptQueue {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        Self {
            rx: Mutex::new(rx),
            tx,
        }
    }

    /// The next connection, or `None` once every sender is gone.
    ///
    /// Cancel safe: a connection is taken from the queue only when this
    /// returns it.
    pub(crate) async fn next(&self) -> Option<Incoming> {
        self.rx.lock().await.recv().await
    }

    /// Accepts `endpoint`'s connections until it closes, running up to
    /// [`MAX_CONCURRENT_HANDSHAKES`] handshakes at once (a stalled one
    /// holds up no other), and queues them. Aborting the returned handle
    /// ends the loop and its handshakes in progress.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn spawn_loop(&self, endpoint: Endpoint) -> AbortHandle {
        let queue = self.tx.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
            // Dropped with this task, aborting handshakes in progress.
            let mut handshakes = JoinSet::new();
            while let Some(incoming) = endpoint.accept().await {
                while handshakes.try_join_next().is_some() {}
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let queue = queue.clone();
                handshakes.spawn(async move {
                    let result = match incoming.await {
                        Ok(conn) => Ok(Arc::new(IrohConnection::new(conn)) as DynConnection),
                        Err(source) => {
                            Err(core_err("accept", IrohTransportError::Accept { source }))
                        }
                    };
                    drop(permit);
                    // The core is gone when this fails; nothing to hand over.
                    let _ = queue.send(result).await;
                });
            }
            // Let finished handshakes reach the core before the loop ends.
            while handshakes.join_next().await.is_some() {}
        })
        .abort_handle()
    }
}
