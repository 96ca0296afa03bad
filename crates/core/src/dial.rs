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
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, info};

use crate::close::CloseCode;
use crate::config::DIAL_SLOT_HOLD;
use crate::conn::{Conn, WriteFailure};
use crate::error::{CoreError, Initiator};
use crate::peer_url::PeerAddr;
use crate::proto::{ConnState, Role};
use crate::registry::DialRegistration;
use crate::shared::Shared;
use crate::traits::{DynConnection, EndpointId};

/// The pause before a dial that failed in a way that may pass is tried
/// again; it doubles with each failure up to [`REDIAL_MAX_PAUSE`].
const REDIAL_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between two attempts of one dial.
const REDIAL_MAX_PAUSE: Duration = Duration::from_secs(4);

/// How one attempt of a dial failed.
enum Attempt {
    /// In a way that may pass (see [`CoreError::HandshakeFailed`]): the
    /// dial tries again while the connect timeout lasts.
    MayPass(CoreError),
    /// For good, or with the connect timeout spent.
    Final(CoreError),
}

/// Whether the peer closed `conn` saying it was too busy for it (see
/// [`CoreError::is_busy_close_reason`]).
fn closed_busy(conn: &Conn) -> bool {
    conn.connection
        .remote_close()
        .is_some_and(|(code, reason)| {
            code == CloseCode::Unspecified
                && CoreError::is_busy_close_reason(&String::from_utf8_lossy(&reason))
        })
}

/// How a dial's connect ended.
enum Connect {
    /// The backend's connect returned.
    Done(Result<DynConnection, CoreError>),
    /// The peer's own connection became active first: it carries the send.
    PeerActive(Arc<Conn>),
    /// The connect timeout passed.
    TimedOut,
}

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
        let deadline = Instant::now() + self.config.connect_timeout;
        let mut pause = REDIAL_FIRST_PAUSE;
        loop {
            let e = match self
                .dial_once(addr, &own_url, &preflight, started, deadline)
                .await
            {
                Ok(conn) => return Ok(conn),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::MayPass(e)) => e,
            };
            if Instant::now() + pause >= deadline {
                debug!(%url, %e, "dial failed and the connect timeout is spent");
                self.mark_unresponsive(url).await;
                return Err(e);
            }
            debug!(%url, %e, ?pause, "dial failed in a way that may pass; dialing again");
            tokio::select! {
                biased;
                active = self.wait_active(&addr.id) => return Ok(active),
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(REDIAL_MAX_PAUSE);
        }
    }

    /// One attempt of [`Shared::dial`]: a slot, the handshake, our
    /// preflight, the connection's resolution, all by `deadline`.
    async fn dial_once(
        self: &Arc<Self>,
        addr: &PeerAddr,
        own_url: &Url,
        preflight: &Bytes,
        started: Instant,
        deadline: Instant,
    ) -> Result<Arc<Conn>, Attempt> {
        let url = &addr.url;
        // The peer may dial us meanwhile (simultaneous first sends) and its
        // connection become active while our handshake is still under way,
        // e.g. waiting out a retransmission, or while this dial waits for a
        // slot: then that one carries the send, and our attempt is
        // abandoned.
        let slot = tokio::select! {
            biased;
            slot = timeout_at(deadline, self.dial_slots.clone().acquire_owned()) => slot,
            active = self.wait_active(&addr.id) => {
                debug!(%url, "peer's own connection became active while we waited to dial; using it");
                return Ok(active);
            }
        };
        let connected = match slot {
            // INVARIANT: the semaphore is never closed.
            Ok(slot) => {
                let slot = slot.expect("dial slots are never closed");
                match self.connect_in_slot(addr, slot, deadline).await {
                    Connect::Done(r) => Ok(r),
                    Connect::PeerActive(active) => {
                        debug!(%url, "peer's own connection became active while we dialed; using it");
                        return Ok(active);
                    }
                    Connect::TimedOut => Err(()),
                }
            }
            Err(_) => Err(()),
        };
        let connection = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e @ CoreError::HandshakeFailed { .. })) => return Err(Attempt::MayPass(e)),
            Ok(Err(e)) => {
                self.mark_unresponsive(url).await;
                return Err(Attempt::Final(e));
            }
            Err(()) => {
                self.mark_unresponsive(url).await;
                return Err(Attempt::Final(CoreError::ConnectTimeout {
                    peer: url.as_str().to_owned(),
                    secs: self.config.connect_timeout.as_secs(),
                }));
            }
        };
        if connection.remote_id() != addr.id {
            let err = CoreError::io(
                "connect",
                "backend returned a connection to another endpoint",
            );
            connection.close(err.close_code(), b"unexpected peer identity");
            return Err(Attempt::Final(err));
        }
        let preflight_wait = self.dialer_preflight_wait(started);
        let conn = self.new_conn(connection, Role::Dialer, preflight_wait);
        conn.with(|p| p.queue_preflight(own_url, preflight.clone()));
        let registration = {
            let mut registry = self.registry();
            // `close` sets the flag before it drains the registry, under
            // this lock: a dial done after that must not be registered.
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                drop(registry);
                conn.close(CoreError::Closed, Initiator::Local);
                return Err(Attempt::Final(CoreError::Closed));
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
                // The peer closed it at once, too busy for it: a refusal
                // for now.
                return Err(if closed_busy(&conn) {
                    Attempt::MayPass(e)
                } else {
                    Attempt::Final(e)
                });
            }
            // The peer's own dial won while ours was opening its stream:
            // wait for that connection instead.
            debug!(%url, %e, "dial superseded before its preflight went out");
        }
        self.await_usable(conn, addr, preflight_wait).await
    }

    /// Runs the backend's connect to `addr` until `deadline`, holding
    /// `slot` (one of [`CoreConfig::max_concurrent_dials`]) until the
    /// handshake ends or has run for [`DIAL_SLOT_HOLD`], whichever comes
    /// first.
    ///
    /// [`CoreConfig::max_concurrent_dials`]: crate::CoreConfig::max_concurrent_dials
    async fn connect_in_slot(
        &self,
        addr: &PeerAddr,
        slot: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Connect {
        let connect = timeout_at(deadline, self.endpoint.connect(addr));
        tokio::pin!(connect);
        let hold = tokio::time::sleep(DIAL_SLOT_HOLD);
        tokio::pin!(hold);
        let mut slot = Some(slot);
        loop {
            tokio::select! {
                biased;
                r = &mut connect => return r.map_or(Connect::TimedOut, Connect::Done),
                active = self.wait_active(&addr.id) => return Connect::PeerActive(active),
                () = &mut hold, if slot.is_some() => {
                    debug!(peer = %addr.url, "handshake still under way; its dial slot goes to the next");
                    slot = None;
                }
            }
        }
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
    ) -> Result<Arc<Conn>, Attempt> {
        let deadline = Instant::now() + wait;
        let timeout_err = CoreError::PreflightTimeout {
            secs: wait.as_secs(),
        };
        match timeout_at(deadline, conn.resolved()).await {
            Err(_) => {
                conn.close(timeout_err.clone(), Initiator::Remote);
                self.mark_unresponsive(&addr.url).await;
                Err(Attempt::Final(timeout_err))
            }
            Ok(ConnState::Active) => Ok(conn),
            Ok(ConnState::Superseded | ConnState::Draining) => {
                debug!("dial superseded; waiting for the preferred connection");
                timeout_at(deadline, self.wait_active(&addr.id))
                    .await
                    .map_err(|_| Attempt::Final(timeout_err))
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
                    return Err(Attempt::Final(err));
                }
                // Lost underneath (no close by the peer's protocol) before
                // the peer's preflight came: as a handshake that failed,
                // e.g. the peer dropped it at its own handshake deadline
                // after ours had finished.
                // Or the peer was too busy: it gave up waiting for our
                // preflight or refused us at a connection limit (a
                // refusal by its kitsune2 says something else).
                let lost = match conn.connection.remote_close() {
                    None => err.initiator() == Initiator::Backend,
                    Some(_) => closed_busy(&conn),
                };
                Err(if lost {
                    Attempt::MayPass(err)
                } else {
                    Attempt::Final(err)
                })
            }
        }
    }
}
