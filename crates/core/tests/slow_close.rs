//! `close()` does not wait for the endpoint's own close without bound: an
//! endpoint whose close hangs (the peers' acknowledgements of its close
//! packets are slow to come on a busy machine) lets `close()` return after
//! the drain and `ENDPOINT_CLOSE_WAIT`, and finishes in the background.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::*;
use kitsune2_api::{BoxFut, TxImp, TxImpHnd, Url};
use kitsune2_iroh_core::mem::{MemEndpoint, MemNetwork};
use kitsune2_iroh_core::{
    CoreError, CoreTransport, DynConnection, ENDPOINT_CLOSE_WAIT, Endpoint, EndpointId, PeerAddr,
};
use tokio::sync::watch;

/// A mem endpoint whose `close` takes an hour after closing the inner one.
#[derive(Debug)]
struct SlowClose {
    inner: Arc<MemEndpoint>,
    close_started: AtomicBool,
}

impl Endpoint for SlowClose {
    fn local_id(&self) -> EndpointId {
        self.inner.local_id()
    }
    fn watch_url(&self) -> watch::Receiver<Option<Url>> {
        self.inner.watch_url()
    }
    fn accept(&self) -> BoxFut<'_, Option<Result<DynConnection, CoreError>>> {
        self.inner.accept()
    }
    fn connect<'a>(&'a self, peer: &'a PeerAddr) -> BoxFut<'a, Result<DynConnection, CoreError>> {
        self.inner.connect(peer)
    }
    fn close(&self) -> BoxFut<'_, ()> {
        self.close_started.store(true, Ordering::SeqCst);
        Box::pin(async {
            self.inner.close().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
    }
}

#[tokio::test(start_paused = true)]
async fn close_returns_while_the_endpoint_close_is_slow() {
    let net = MemNetwork::new();
    let endpoint = Arc::new(SlowClose {
        inner: net.endpoint([1; 32]),
        close_started: AtomicBool::new(false),
    });
    let (rec, _taps) = Recorder::new();
    let config = config();
    let drain = config.drain_timeout;
    let imp = CoreTransport::create(
        endpoint.clone(),
        TxImpHnd::new(rec),
        config,
        Arc::new(TestClock(AtomicI64::new(0))),
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(60), imp.close())
        .await
        .expect("close() returned");
    let took = started.elapsed();
    assert!(endpoint.close_started.load(Ordering::SeqCst));
    assert!(
        took <= drain + ENDPOINT_CLOSE_WAIT,
        "close() took {took:?}, waiting on the endpoint's close"
    );
}
