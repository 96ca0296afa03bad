//! What the transport's tasks share, and the small steps they all use:
//! making a connection, ending one and reporting it to kitsune2.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kitsune2_api::{CloseOnce, Timestamp, TxImpHnd, Url};
use kitsune2_iroh_codec::Limits;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::budget::FrameBudget;
use crate::config::CoreConfig;
use crate::conn::{Conn, WriteSettings};
use crate::error::{CoreError, Initiator};
use crate::peer_url::{PeerAddr, id_to_hex};
use crate::proto::{ConnProto, ConnState, EndReport, Role, Timeouts};
use crate::registry::Registry;
use crate::space::SpaceUrls;
use crate::traits::{DynConnection, Endpoint, EndpointId, WallClock};

/// How often the silence task looks at every connection.
const SILENCE_CHECK: Duration = Duration::from_secs(1);

/// The state behind a [`CoreTransport`](crate::CoreTransport), shared with
/// its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) endpoint: Arc<dyn Endpoint>,
    pub(crate) hnd: Arc<TxImpHnd>,
    pub(crate) config: CoreConfig,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) local_id: EndpointId,
    pub(crate) url: watch::Receiver<Option<Url>>,
    pub(crate) spaces: SpaceUrls,
    pub(crate) registry: Mutex<Registry>,
    /// Woken whenever a connection becomes active.
    pub(crate) activated: Notify,
    pub(crate) closed: AtomicBool,
    pub(crate) close_once: CloseOnce,
    pub(crate) tasks: Mutex<Vec<AbortHandle>>,
    /// Bytes in partially received frames, across connections.
    pub(crate) budget: FrameBudget,
    /// Places for our dials' handshakes ([`CoreConfig::max_concurrent_dials`]).
    pub(crate) dial_slots: Arc<tokio::sync::Semaphore>,
    serial: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        endpoint: Arc<dyn Endpoint>,
        hnd: Arc<TxImpHnd>,
        config: CoreConfig,
        limits: Limits,
        clock: Arc<dyn WallClock>,
    ) -> Self {
        let budget = FrameBudget::new(config.partial_frame_budget);
        let dial_slots = Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_dials.max(1),
        ));
        Self {
            local_id: endpoint.local_id(),
            url: endpoint.watch_url(),
            spaces: SpaceUrls::default(),
            endpoint,
            hnd,
            config,
            limits,
            clock,
            registry: Mutex::new(Registry::default()),
            activated: Notify::new(),
            closed: AtomicBool::new(false),
            close_once: CloseOnce::new(),
            tasks: Mutex::new(Vec::new()),
            budget,
            dial_slots,
            serial: AtomicU64::new(0),
        }
    }

    pub(crate) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("poisoned")
    }

    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.clock.now_micros())
    }

    pub(crate) fn check_open(&self) -> Result<(), CoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CoreError::Closed);
        }
        Ok(())
    }

    /// A new connection; the peer's preflight is awaited for
    /// `preflight_wait` (see [`Self::dialer_preflight_wait`]).
    pub(crate) fn new_conn(
        &self,
        connection: DynConnection,
        role: Role,
        preflight_wait: Duration,
    ) -> Arc<Conn> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let opened_at_s = u64::try_from(self.clock.now_micros() / 1_000_000).unwrap_or(0);
        let mut proto = ConnProto::new(
            role,
            connection.remote_id(),
            self.limits,
            tokio::time::Instant::now().into_std(),
            Timeouts {
                preflight: preflight_wait,
                drain: self.config.drain_timeout,
                frame_progress: self.config.frame_progress_timeout,
            },
        );
        proto.set_wire_version(connection.wire_version(), self.config.max_message_streams);
        Arc::new(Conn::new(
            serial,
            connection,
            proto,
            self.limits,
            WriteSettings {
                timeout: self.config.write_timeout,
                large_message_bytes: self.config.large_message_bytes,
            },
            opened_at_s,
        ))
    }

    /// How long a dial begun at `started` waits for the acceptor's answer
    /// to our preflight: until the connect timeout's end (establishing the
    /// connection includes the preflight exchange), and at least the
    /// preflight timeout.
    ///
    /// Not the acceptor's 10 s: the acceptor's answer waits for its
    /// kitsune2 to judge our preflight, which a busy node (hundreds of
    /// peers dialing at once on two cores) may take longer for, and as
    /// soon as it answered it may send; a dialer that gave up at 10 s
    /// threw away a healthy connection and what the peer had sent on it.
    pub(crate) fn dialer_preflight_wait(&self, started: tokio::time::Instant) -> Duration {
        let connect_left = (started + self.config.connect_timeout)
            .saturating_duration_since(tokio::time::Instant::now());
        connect_left.max(self.config.preflight_timeout)
    }

    /// The URL to present in a preflight to `peer`: our URL on the peer's
    /// relay when a space gave us one there, else the global URL.
    ///
    /// A peer on a relay we know nothing of gets the global URL, at which
    /// it can reach us whatever relay it is on.
    pub(crate) fn own_url_for(&self, peer: &PeerAddr) -> Result<Url, CoreError> {
        if let Some(url) = self.spaces.on_relay_of(peer) {
            return Ok(url);
        }
        self.url.borrow().clone().ok_or(CoreError::NoLocalUrl)
    }

    pub(crate) async fn mark_unresponsive(&self, url: &Url) {
        if self.endpoint.is_home_relay_known_down() {
            debug!(%url, "home relay down: not marking peer unresponsive");
            return;
        }
        if let Err(e) = self.hnd.set_unresponsive(url.clone(), self.now()).await {
            warn!(%url, ?e, "set_unresponsive failed");
        }
    }

    /// Starts the task that reads `conn`'s peer streams.
    pub(crate) fn spawn_reader(self: &Arc<Self>, conn: &Arc<Conn>) {
        let span = info_span!(
            "conn",
            serial = conn.serial,
            peer = %&id_to_hex(&conn.remote_id)[..16],
            dialed = conn.dialed_by_us,
        );
        let task = crate::reader::run(self.clone(), conn.clone()).instrument(span);
        conn.set_reader(tokio::spawn(task).abort_handle());
    }

    /// Ends a connection whose reader stopped with `exit`: forgets it,
    /// sends the close that follows from its end, and tells kitsune2 what
    /// the protocol object decides.
    pub(crate) async fn end_connection(&self, conn: &Arc<Conn>) {
        self.registry().remove(conn);
        conn.send_close();
        let report = conn.with(|p| p.end_report(conn.connection.remote_close()));
        self.report(report).await;
    }

    /// Tells kitsune2 about a connection's end.
    pub(crate) async fn report(&self, report: EndReport) {
        match report {
            EndReport::Silent => {
                debug!("connection ended before it was active, or closed by us");
            }
            EndReport::Disconnected { url, reason } => {
                info!(%url, ?reason, "peer disconnected");
                self.hnd.peer_disconnect(url, reason);
            }
            EndReport::Lost {
                url,
                error,
                unresponsive,
            } => {
                warn!(%url, %error, "connection lost");
                self.hnd.peer_disconnect(url.clone(), Some(error));
                if unresponsive {
                    self.mark_unresponsive(&url).await;
                }
            }
        }
    }

    /// The limit a new incoming connection would pass, if any: peers that
    /// have not sent their preflight yet, or connections in total.
    fn over_limit(&self, registry: &Registry) -> Option<CoreError> {
        let (pending, total) = registry.counts();
        if pending >= self.config.max_pending_connections {
            return Some(CoreError::TooManyConnections {
                what: "connections waiting for their preflight",
                limit: self.config.max_pending_connections,
            });
        }
        if total >= self.config.max_connections {
            return Some(CoreError::TooManyConnections {
                what: "connections",
                limit: self.config.max_connections,
            });
        }
        None
    }

    /// Every [`SILENCE_CHECK`], closes the connections whose peer has been
    /// silent for the silence timeout (`PeerSilent`): their readers then
    /// end them and report them lost.
    ///
    /// One task for all connections, so a thousand idle connections cost
    /// one wake-up a second, not a thousand timers.
    pub(crate) async fn silence_task(self: Arc<Self>) {
        let limit = self.config.silence_timeout;
        let mut tick = tokio::time::interval(SILENCE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Established connections only: one still in its preflight
            // exchange has the preflight deadlines, and on a busy node
            // (its packets dropped in queues) new connections went quiet
            // for longer than a live one ever does.
            let conns = self.registry().all_active();
            for conn in conns {
                if conn.state() != ConnState::Active {
                    continue;
                }
                let silent = conn.connection.silent_for();
                if silent >= limit {
                    warn!(
                        serial = conn.serial,
                        peer = %&id_to_hex(&conn.remote_id)[..16],
                        ?silent,
                        "nothing from the peer for the silence timeout: closing"
                    );
                    let secs = limit.as_secs();
                    conn.close(CoreError::PeerSilent { secs }, Initiator::Remote);
                }
            }
        }
    }

    /// Publishes the endpoint's URL as it changes.
    pub(crate) async fn url_task(self: Arc<Self>) {
        let mut rx = self.url.clone();
        loop {
            let url = rx.borrow_and_update().clone();
            if let Some(url) = url {
                info!(%url, "listening address");
                self.hnd.new_listening_address(url, None).await;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Takes the endpoint's incoming connections and starts their readers.
    pub(crate) async fn accept_task(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let connection = match incoming {
                Ok(c) => c,
                Err(e) => {
                    debug!(%e, "incoming connection failed");
                    continue;
                }
            };
            let conn = self.new_conn(connection, Role::Acceptor, self.config.preflight_timeout);
            let refused = {
                let mut registry = self.registry();
                // As in `dial`: checked under the lock `close` drains with.
                if self.closed.load(Ordering::SeqCst) {
                    Some(CoreError::Closed)
                } else if let Some(limit) = self.over_limit(&registry) {
                    Some(limit)
                } else {
                    registry.insert(conn.clone());
                    None
                }
            };
            match refused {
                None => self.spawn_reader(&conn),
                Some(e) => {
                    debug!(%e, "incoming connection refused");
                    conn.close(e, Initiator::Local);
                }
            }
        }
        debug!("endpoint closed; accept task ends");
    }
}
