//! Which connections exist, which one carries each peer's data, and who
//! may dial each peer.
//!
//! Simultaneous-open resolution lives here, under one lock, so that the
//! decision "this connection becomes the peer's active one" and the
//! registration of a new dial can never interleave. The registry decides
//! (which connection carries data; a fresh dial that found the peer
//! active is marked superseded, as nothing went out on it); it returns
//! what lost, and the caller drains those once the lock is released.
//! A connection that a preferred one beat while it was still being
//! resolved stays beaten, so that both sides agree on the loser however
//! late its own resolution ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::conn::Conn;
use crate::error::{CoreError, Initiator};
use crate::proto::ConnState;
use crate::traits::EndpointId;

/// A peer's connections and its dial gate.
#[derive(Debug, Default)]
struct PeerSlot {
    /// The connection that carries data.
    active: Option<Arc<Conn>>,
    /// Our dial, registered once connected and until resolved.
    dialing: Option<Arc<Conn>>,
    /// Serializes our dials to this peer: one at a time.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Sends holding or waiting for the gate.
    gate_users: usize,
    /// When our last dial to the peer failed, and how: sends that waited
    /// for that dial take its outcome instead of dialing again.
    failed_dial: Option<(tokio::time::Instant, CoreError)>,
}

impl PeerSlot {
    fn is_empty(&self) -> bool {
        self.active.is_none() && self.dialing.is_none() && self.gate_users == 0
    }
}

/// Outcome of [`Registry::activate`].
#[derive(Debug)]
pub(crate) enum Activation {
    /// The connection is now the peer's active one; `superseded` lost and
    /// must be drained (they are out of use already).
    Won {
        /// Rivals that lost.
        superseded: Vec<Arc<Conn>>,
    },
    /// The connection lost, or had ended or started draining already.
    Lost,
    /// The connection, which the peer dialed, loses only to `rival`, our
    /// own dial and the peer's active connection: the peer dialing anew
    /// while that is active means it restarted (its old connection is
    /// dead) or dialed at the same time as we did. The caller asks the
    /// backend whether `rival` is gone ([`Connection::probe_gone`]); if
    /// so it [`retire`](Registry::retire)s and closes `rival` and
    /// resolves again, else the connection lost.
    ///
    /// [`Connection::probe_gone`]: crate::traits::Connection::probe_gone
    Contested {
        /// The peer's active connection, dialed by us.
        rival: Arc<Conn>,
    },
}

/// Outcome of [`Registry::register_dial`].
#[derive(Debug)]
pub(crate) enum DialRegistration {
    /// The dial is registered.
    Registered,
    /// The peer already has an active connection (it dialed us meanwhile);
    /// the new dial was marked superseded and must be closed.
    UseActive(Arc<Conn>),
}

/// All live connections, by serial, and each peer's slot.
///
/// # Invariants
///
/// - A peer's `active` and `dialing` are never the same connection.
/// - A slot with no connection and no gate user is removed: no state is
///   kept for peers that are gone.
/// - A connection in `beaten` never becomes active, except through the
///   come-back probe ([`Registry::retire_gone`]).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: HashMap<u64, Arc<Conn>>,
    peers: HashMap<EndpointId, PeerSlot>,
    /// Serials of connections still being resolved when a preferred
    /// connection to the same peer became active: they lost resolution
    /// then, as they did on the peer's side, even if the winner is out
    /// of use by the time their own resolution ends (see
    /// [`Registry::activate`]).
    beaten: HashSet<u64>,
}

/// True when `a` is preferred over `b` (same peer): the connection dialed
/// by the endpoint with the larger id; between two dialed by the same side,
/// the newer one.
fn preferred(a: &Conn, b: &Conn, local_id: &EndpointId) -> bool {
    if a.dialed_by_us != b.dialed_by_us {
        a.dialer_id(local_id) > b.dialer_id(local_id)
    } else {
        a.serial > b.serial
    }
}

impl Registry {
    pub(crate) fn insert(&mut self, conn: Arc<Conn>) {
        self.conns.insert(conn.serial, conn);
    }

    pub(crate) fn active(&self, id: &EndpointId) -> Option<Arc<Conn>> {
        self.peers.get(id).and_then(|s| s.active.clone())
    }

    /// Live connections still pending (no preflight through yet), and all
    /// live connections.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let pending = self
            .conns
            .values()
            .filter(|c| c.state() == ConnState::Pending)
            .count();
        (pending, self.conns.len())
    }

    /// Every active connection.
    pub(crate) fn all_active(&self) -> Vec<Arc<Conn>> {
        self.peers
            .values()
            .filter_map(|s| s.active.clone())
            .collect()
    }

    /// Number of peers with any per-peer state.
    #[cfg(feature = "mem")]
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Takes a place at `id`'s dial gate; pair with
    /// [`leave_dial`](Self::leave_dial).
    pub(crate) fn enter_dial(&mut self, id: EndpointId) -> Arc<tokio::sync::Mutex<()>> {
        let slot = self.peers.entry(id).or_default();
        slot.gate_users += 1;
        slot.gate.clone()
    }

    /// Records that a dial to `id` failed with `error` just now.
    pub(crate) fn record_dial_failure(&mut self, id: &EndpointId, error: CoreError) {
        if let Some(slot) = self.peers.get_mut(id) {
            slot.failed_dial = Some((tokio::time::Instant::now(), error));
        }
    }

    /// The error of a dial to `id` that failed at or after `since` (while a
    /// send that entered the gate at `since` waited for it).
    pub(crate) fn dial_failed_since(
        &self,
        id: &EndpointId,
        since: tokio::time::Instant,
    ) -> Option<CoreError> {
        let (at, error) = self.peers.get(id)?.failed_dial.as_ref()?;
        (*at >= since).then(|| error.clone())
    }

    /// Gives up a place taken with [`enter_dial`](Self::enter_dial).
    pub(crate) fn leave_dial(&mut self, id: &EndpointId) {
        if let Some(slot) = self.peers.get_mut(id) {
            slot.gate_users = slot.gate_users.saturating_sub(1);
            if slot.is_empty() {
                self.peers.remove(id);
            }
        }
    }

    /// Registers a freshly connected dial, unless the peer got an active
    /// connection while we were connecting.
    pub(crate) fn register_dial(&mut self, conn: &Arc<Conn>) -> DialRegistration {
        let slot = self.peers.entry(conn.remote_id).or_default();
        if let Some(active) = &slot.active {
            let active = active.clone();
            conn.with(|p| p.supersede(Initiator::Local));
            return DialRegistration::UseActive(active);
        }
        debug_assert!(slot.dialing.is_none(), "dials to one peer are serialized");
        slot.dialing = Some(conn.clone());
        self.conns.insert(conn.serial, conn.clone());
        DialRegistration::Registered
    }

    /// Resolves `conn`, whose peer's preflight kitsune2 accepted, against
    /// the peer's other connections: when it is preferred it becomes
    /// active and the others are returned, out of use, for the caller to
    /// drain once the lock is released; else it lost.
    ///
    /// A connection that a preferred one beat while it was still being
    /// resolved (its preflight judged by kitsune2, or the come-back probe
    /// under way) stays beaten when that winner has left use since (a
    /// disconnect drained it): the peer saw the same pair and drained
    /// this one already, so making it active here would put our sends on
    /// a connection the peer is closing. Both sides agree on the loser
    /// whenever its resolution ends.
    pub(crate) fn activate(&mut self, conn: &Arc<Conn>, local_id: &EndpointId) -> Activation {
        if conn.state() != ConnState::Pending {
            return Activation::Lost;
        }
        let beaten = self.beaten.contains(&conn.serial);
        let slot = self.peers.entry(conn.remote_id).or_default();
        let rivals: Vec<Arc<Conn>> = [slot.active.clone(), slot.dialing.clone()]
            .into_iter()
            .flatten()
            .filter(|c| !Arc::ptr_eq(c, conn))
            .collect();
        let is_dialing = slot.dialing.as_ref().is_some_and(|d| Arc::ptr_eq(d, conn));
        let winners: Vec<&Arc<Conn>> = rivals
            .iter()
            .filter(|r| preferred(r, conn, local_id))
            .collect();
        if let [rival] = winners[..]
            && !conn.dialed_by_us
            && rival.dialed_by_us
            && slot.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, rival))
        {
            return Activation::Contested {
                rival: rival.clone(),
            };
        }
        if !winners.is_empty() || beaten || !conn.with(|p| p.activate()) {
            if is_dialing {
                slot.dialing = None;
            }
            return Activation::Lost;
        }
        slot.dialing = None;
        slot.active = Some(conn.clone());
        // The peer's connections still being resolved that this one is
        // preferred over lost now, as on the peer's side.
        for other in self.conns.values() {
            if other.remote_id == conn.remote_id
                && !Arc::ptr_eq(other, conn)
                && other.state() == ConnState::Pending
                && preferred(conn, other, local_id)
            {
                self.beaten.insert(other.serial);
            }
        }
        Activation::Won { superseded: rivals }
    }

    /// Takes `rival`, found gone by [`Activation::Contested`]'s probe of
    /// `conn`, out of use if it is still its peer's active connection and
    /// not closing on purpose (a drain that started meanwhile must
    /// finish); true when it did, and the caller then closes it.
    ///
    /// `conn` is no longer beaten when `rival` is replaced, or failed
    /// meanwhile (the peer restarted: what it lost to is dead). A rival
    /// closed on purpose meanwhile (a disconnect by either side) was
    /// alive, as "alive" from the probe: `conn` lost to it, as on the
    /// peer's side, and is beaten.
    pub(crate) fn retire_gone(&mut self, rival: &Arc<Conn>, conn: &Arc<Conn>) -> bool {
        let still_active = self
            .peers
            .get(&rival.remote_id)
            .and_then(|s| s.active.as_ref())
            .is_some_and(|a| Arc::ptr_eq(a, rival));
        if !still_active || rival.state() != ConnState::Active {
            if rival.ended_deliberately() {
                self.beaten.insert(conn.serial);
            } else {
                self.beaten.remove(&conn.serial);
            }
            return false;
        }
        self.retire(rival);
        self.beaten.remove(&conn.serial);
        true
    }

    /// Takes `conn` out of use: new sends no longer find it. Its entry
    /// stays until its reader ends.
    pub(crate) fn retire(&mut self, conn: &Arc<Conn>) {
        if let Some(slot) = self.peers.get_mut(&conn.remote_id) {
            if slot.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, conn)) {
                slot.active = None;
            }
            if slot.dialing.as_ref().is_some_and(|d| Arc::ptr_eq(d, conn)) {
                slot.dialing = None;
            }
            if slot.is_empty() {
                self.peers.remove(&conn.remote_id);
            }
        }
    }

    /// Forgets `conn`; returns whether it was its peer's active connection.
    pub(crate) fn remove(&mut self, conn: &Arc<Conn>) -> bool {
        self.conns.remove(&conn.serial);
        self.beaten.remove(&conn.serial);
        let Some(slot) = self.peers.get_mut(&conn.remote_id) else {
            return false;
        };
        let mut was_active = false;
        if slot.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, conn)) {
            slot.active = None;
            was_active = true;
        }
        if slot.dialing.as_ref().is_some_and(|d| Arc::ptr_eq(d, conn)) {
            slot.dialing = None;
        }
        if slot.is_empty() {
            self.peers.remove(&conn.remote_id);
        }
        was_active
    }

    /// Takes every connection out (transport close or drop).
    pub(crate) fn drain(&mut self) -> Vec<Arc<Conn>> {
        self.peers.clear();
        self.beaten.clear();
        self.conns.drain().map(|(_, c)| c).collect()
    }

    /// Every live connection.
    #[cfg(feature = "mem")]
    pub(crate) fn all(&self) -> Vec<Arc<Conn>> {
        self.conns.values().cloned().collect()
    }
}
