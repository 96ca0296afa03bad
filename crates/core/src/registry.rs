//! Which connections exist, and which one carries each peer's data.
//!
//! Simultaneous-open resolution lives here, under one lock, so that the
//! decision "this connection becomes the peer's active one" and the
//! registration of a new dial can never interleave.

use std::collections::HashMap;
use std::sync::Arc;

use crate::close::{CloseCode, SUPERSEDED_REASON};
use crate::conn::{Conn, ConnState};
use crate::traits::EndpointId;

/// A peer's connections.
#[derive(Debug, Default)]
struct PeerSlot {
    /// The connection that carries data.
    active: Option<Arc<Conn>>,
    /// Our dial, registered once connected and until resolved.
    dialing: Option<Arc<Conn>>,
}

/// Outcome of [`Registry::activate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// The connection is now the peer's active one.
    Won,
    /// A preferred connection exists; this one was superseded and closed.
    Lost,
}

/// Outcome of [`Registry::register_dial`].
#[derive(Debug)]
pub(crate) enum DialRegistration {
    /// The dial is registered.
    Registered,
    /// The peer already has an active connection (it dialed us meanwhile);
    /// the new dial was closed as superseded.
    UseActive(Arc<Conn>),
}

/// All live connections, by serial, and each peer's slot.
///
/// # Invariants
///
/// - A peer's `active` and `dialing` are never the same connection.
/// - A slot with neither is removed: no state is kept for peers that are
///   gone.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: HashMap<u64, Arc<Conn>>,
    peers: HashMap<EndpointId, PeerSlot>,
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

    /// Every active connection.
    pub(crate) fn all_active(&self) -> Vec<Arc<Conn>> {
        self.peers
            .values()
            .filter_map(|s| s.active.clone())
            .collect()
    }

    /// Number of peers with any per-peer state.
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Registers a freshly connected dial, unless the peer got an active
    /// connection while we were connecting.
    pub(crate) fn register_dial(&mut self, conn: &Arc<Conn>) -> DialRegistration {
        let slot = self.peers.entry(conn.remote_id).or_default();
        if let Some(active) = &slot.active {
            let active = active.clone();
            conn.set_state(ConnState::Superseded);
            conn.close_local(CloseCode::Superseded, SUPERSEDED_REASON);
            return DialRegistration::UseActive(active);
        }
        debug_assert!(slot.dialing.is_none(), "dials to one peer are serialized");
        slot.dialing = Some(conn.clone());
        self.conns.insert(conn.serial, conn.clone());
        DialRegistration::Registered
    }

    /// Resolves `conn`, whose peer's preflight just checked out, against the
    /// peer's other connections. The loser is marked superseded and closed
    /// with code 2.
    pub(crate) fn activate(&mut self, conn: &Arc<Conn>, local_id: &EndpointId) -> Activation {
        if conn.state() != ConnState::Pending {
            return Activation::Lost;
        }
        let slot = self.peers.entry(conn.remote_id).or_default();
        let rivals: Vec<Arc<Conn>> = [slot.active.clone(), slot.dialing.clone()]
            .into_iter()
            .flatten()
            .filter(|c| !Arc::ptr_eq(c, conn))
            .collect();
        if rivals.iter().any(|r| preferred(r, conn, local_id)) {
            if slot.dialing.as_ref().is_some_and(|d| Arc::ptr_eq(d, conn)) {
                slot.dialing = None;
            }
            conn.set_state(ConnState::Superseded);
            conn.close_local(CloseCode::Superseded, SUPERSEDED_REASON);
            return Activation::Lost;
        }
        for rival in rivals {
            rival.set_state(ConnState::Superseded);
            rival.close_local(CloseCode::Superseded, SUPERSEDED_REASON);
        }
        slot.dialing = None;
        slot.active = Some(conn.clone());
        conn.set_state(ConnState::Active);
        Activation::Won
    }

    /// Forgets `conn`; returns whether it was its peer's active connection.
    pub(crate) fn remove(&mut self, conn: &Arc<Conn>) -> bool {
        self.conns.remove(&conn.serial);
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
        if slot.active.is_none() && slot.dialing.is_none() {
            self.peers.remove(&conn.remote_id);
        }
        was_active
    }

    /// Takes every connection out (transport close).
    pub(crate) fn drain(&mut self) -> Vec<(Arc<Conn>, bool)> {
        let active: Vec<u64> = self.all_active().iter().map(|c| c.serial).collect();
        self.peers.clear();
        self.conns
            .drain()
            .map(|(serial, c)| (c, active.contains(&serial)))
            .collect()
    }

    /// Every live connection.
    pub(crate) fn all(&self) -> Vec<Arc<Conn>> {
        self.conns.values().cloned().collect()
    }
}
