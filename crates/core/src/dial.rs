//! Sending: finding or making the peer's active connection, and writing
//! one message on it.
//!
//! Dials to one peer are serialized by the gate in the peer's registry
//! slot; simultaneous open (the peer dialing us meanwhile) is resolved by
//! the registry, and a dial that loses waits for the winner.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kitsune2_api::Url;
use kitsune2_iroh_codec::{FrameType, encode_header};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info};

use crate::conn::{Conn, WriteFailure};
use crate::error::{CoreError, Initiator};
use crate::peer_url::PeerAddr;
use crate::proto::{ConnState, Role};
use crate::registry::DialRegistration;
use crate::shared::Shared;
use crate::traits::EndpointId;

impl Shared {
    /// Sends `data` to `peer` as one data frame.
    ///
    /// A connection closed on purpose underneath the send (a disconnect by
    /// either side, supersession) did not carry the frame whole, so the
    /// peer cannot have it: the send goes once more over a new or the
    /// winning connection.
    pub(crate) async fn send(self: &Arc<Self>, peer: Url, data: Bytes) -> Result<(), CoreError> {
        self.check_open()?;
        encode_header(FrameType::Data, data.len() as u64, &self.limits)?;
        let addr = match PeerAddr::parse(&peer) {
            Ok(a) => a,
            Err(e) => {
                self.mark_unresponsive(&peer).await;
                return Err(e);
            }
        };
        if addr.id == self.local_id {
            return Err(CoreError::SelfConnect);
        }
        let mut retried = false;
        loop {
            let conn = self.connection_for(&addr).await?;
            let Err(failure) = conn.write(Some(data.clone())).await else {
                return Ok(());
            };
            let e = failure.error;
            // Closed on purpose, or dead before any of the frame went out
            // (a connection whose reader had not noticed its end yet): the
            // peer cannot have the frame, so it goes once more elsewhere.
            let deliberate = conn.ended_deliberately();
            if !deliberate {
                // A failed connection: out of use at once, so that the
                // next send dials anew instead of meeting its error; its
                // reader reports the loss. (One closed on purpose is left
                // to finish its drain.)
                self.registry().retire(&conn);
                conn.close(e.clone(), Initiator::Backend);
            }
            let stalled = matches!(e, CoreError::WriteTimeout { .. });
            if retried || stalled || !(deliberate || failure.untouched) {
                return Err(e);
            }
            debug!(%peer, %e, "connection closed under a send; redialling");
            self.registry().retire(&conn);
            retried = true;
        }
    }

    /// An active connection to `addr`, made if needed.
    async fn connection_for(self: &Arc<Self>, addr: &PeerAddr) -> Result<Arc<Conn>, CoreError> {
        if let Some(c) = self.registry().active(&addr.id) {
            return Ok(c);
        }
        let entered = Instant::now();
        let gate = self.registry().enter_dial(addr.id);
        let result = async {
            let _dialing = gate.lock().await;
            let (active, failed) = {
                let registry = self.registry();
                let active = registry.active(&addr.id);
                (active, registry.dial_failed_since(&addr.id, entered))
            };
            if let Some(c) = active {
                return Ok(c);
            }
            // The dial this send waited for failed: so does the send, at
            // once, instead of waiting out a connect timeout of its own
            // (ten sends queued behind an unreachable peer took ten
            // timeouts, one after the other).
            if let Some(e) = failed {
                debug!(peer = %addr.url, %e, "the dial we waited for failed");
                return Err(e);
            }
            let dialed = self.dial(addr).await;
            if let Err(e) = &dialed {
                self.registry().record_dial_failure(&addr.id, e.clone());
            }
            dialed
        }
        .await;
        self.registry().leave_dial(&addr.id);
        result
    }

    /// Dials, sends our preflight and waits for the connection to resolve.
    async fn dial(self: &Arc<Self>, addr: &PeerAddr) -> Result<Arc<Conn>, CoreError> {
        let url = &addr.url;
        let started = Instant::now();
        if self.endpoint.is_home_relay_known_down() {
            return Err(CoreError::RelayDown {
                peer: url.as_str().to_owned(),
            });
        }
        let own_url = self.wait_own_url_for(addr).await?;
        let preflight = self
            .hnd
            .peer_connect(url.clone())
            .await
            .map_err(CoreError::from_handler)?;
        // The peer may dial us meanwhile (simultaneous first sends) and its
        // connection become active while our handshake is still under way,
        // e.g. waiting out a retransmission: then that one carries the
        // send, and our attempt is abandoned.
        let connect = timeout(self.config.connect_timeout, self.endpoint.connect(addr));
        let connected = tokio::select! {
            biased;
            r = connect => r,
            active = self.wait_active(&addr.id) => {
                debug!(%url, "peer's own connection became active while we dialed; using it");
                return Ok(active);
            }
        };
        let connection = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.mark_unresponsive(url).await;
                return Err(e);
            }
            Err(_) => {
                self.mark_unresponsive(url).await;
                return Err(CoreError::ConnectTimeout {
                    peer: url.as_str().to_owned(),
                    secs: self.config.connect_timeout.as_secs(),
                });
            }
        };
        if connection.remote_id() != addr.id {
            let err = CoreError::io(
                "connect",
                "backend returned a connection to another endpoint",
            );
            connection.close(err.close_code(), b"unexpected peer identity");
            return Err(err);
        }
        let preflight_wait = self.dialer_preflight_wait(started);
        let conn = self.new_conn(connection, Role::Dialer, preflight_wait);
        conn.with(|p| p.queue_preflight(&own_url, preflight));
        let registration = {
            let mut registry = self.registry();
            // `close` sets the flag before it drains the registry, under
            // this lock: a dial done after that must not be registered.
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                drop(registry);
                conn.close(CoreError::Closed, Initiator::Local);
                return Err(CoreError::Closed);
            }
            registry.register_dial(&conn)
        };
        if let DialRegistration::UseActive(active) = registration {
            debug!(%url, "peer connected to us meanwhile; using that connection");
            conn.send_close();
            return Ok(active);
        }
        self.spawn_reader(&conn);
        info!(%url, serial = conn.serial, "connected; sending preflight");
        if let Err(WriteFailure { error: e, .. }) = conn.write(None).await {
            if !matches!(conn.state(), ConnState::Superseded | ConnState::Draining) {
                conn.close(e.clone(), Initiator::Backend);
                return Err(e);
            }
            // The peer's own dial won while ours was opening its stream:
            // wait for that connection instead.
            debug!(%url, %e, "dial superseded before its preflight went out");
        }
        self.await_usable(conn, addr, preflight_wait).await
    }

    /// Resolves with the peer's active connection once it has one.
    async fn wait_active(&self, id: &EndpointId) -> Arc<Conn> {
        loop {
            let notified = self.activated.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(c) = self.registry().active(id) {
                return c;
            }
            notified.await;
        }
    }

    /// The URL our preflight to `peer` presents; right after the
    /// transport started, the endpoint may not know its own URL yet (no
    /// relay connection): waits for it, bounded by the connect timeout.
    async fn wait_own_url_for(&self, peer: &PeerAddr) -> Result<Url, CoreError> {
        if let Ok(url) = self.own_url_for(peer) {
            return Ok(url);
        }
        let mut rx = self.url.clone();
        let known = timeout(self.config.connect_timeout, rx.wait_for(Option::is_some)).await;
        if !matches!(known, Ok(Ok(_))) {
            return Err(CoreError::NoLocalUrl);
        }
        self.own_url_for(peer)
    }

    /// Waits for a dialed connection's resolution; if it lost, for the
    /// winner. Bounded by `wait` (the connection's own preflight wait).
    async fn await_usable(
        &self,
        conn: Arc<Conn>,
        addr: &PeerAddr,
        wait: Duration,
    ) -> Result<Arc<Conn>, CoreError> {
        let deadline = Instant::now() + wait;
        let timeout_err = CoreError::PreflightTimeout {
            secs: wait.as_secs(),
        };
        match timeout_at(deadline, conn.resolved()).await {
            Err(_) => {
                conn.close(timeout_err.clone(), Initiator::Remote);
                self.mark_unresponsive(&addr.url).await;
                Err(timeout_err)
            }
            Ok(ConnState::Active) => Ok(conn),
            Ok(ConnState::Superseded | ConnState::Draining) => {
                debug!("dial superseded; waiting for the preferred connection");
                timeout_at(deadline, self.wait_active(&addr.id))
                    .await
                    .map_err(|_| timeout_err)
            }
            Ok(ConnState::Closed | ConnState::Pending) => {
                // The error that ended it, as the reader saw it; a peer's
                // application close (e.g. its refusal of our preflight)
                // is what it said.
                let err = match conn.connection.remote_close() {
                    Some((code, reason)) => CoreError::ConnectionClosed {
                        code: Some(code),
                        reason: String::from_utf8_lossy(&reason).into_owned(),
                    },
                    None => conn.with(|p| p.closed()).map_or_else(
                        || CoreError::ConnectionClosed {
                            code: None,
                            reason: "closed during the preflight exchange".to_owned(),
                        },
                        |(e, _)| e,
                    ),
                };
                // The reader's own preflight deadline may fire just before
                // ours: the peer is as unresponsive either way.
                if matches!(err, CoreError::PreflightTimeout { .. }) {
                    self.mark_unresponsive(&addr.url).await;
                }
                Err(err)
            }
        }
    }
}
