//! The accept fan-in: one accept loop per iroh endpoint, all feeding one
//! queue that the core's `Endpoint::accept` drains, with the QUIC
//! handshakes of incoming connections bounded in time and number
//! ([`HandshakeLimits`]).

use crate::connection::IrohConnection;
use crate::error::{IrohTransportError, core_err};
use crate::iroh_types::{Endpoint, EndpointId, IncomingAddr, RelayUrl};
use kitsune2_iroh_core::{CoreError, DynConnection};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

/// Handshaken incoming connections waiting for the core.
const INCOMING_QUEUE: usize = 16;

/// A handshaken incoming connection, or why its handshake failed.
type Accepted = Result<DynConnection, CoreError>;

/// Bounds on the QUIC handshakes of incoming connections, shared by every
/// iroh endpoint of one transport.
///
/// A limit of 0 refuses every incoming connection.
///
/// # Usage
///
/// [`IrohEndpoint::with_handshake_limits`](crate::IrohEndpoint::with_handshake_limits)
/// takes them; [`IrohEndpoint::new`](crate::IrohEndpoint::new) and the
/// transport factory use the defaults.
/// [`IrohEndpoint::handshake_stats`](crate::IrohEndpoint::handshake_stats)
/// tells what became of the handshakes.
///
/// # Stalled handshakes
///
/// A peer can keep a QUIC handshake alive without ever finishing it: a
/// UDP proxy that forwards the peer's packets to us and drops our replies
/// makes the peer probe again and again (iroh's QUIC, noq, probes at most
/// 2 s apart), and every probe that reaches us keeps iroh's idle timeout
/// (60 s) from firing. So:
///
/// - every handshake has a deadline of its own
///   ([`HandshakeLimits::timeout`], default 30 s); at the deadline it is
///   dropped (QUIC closes it with code 0);
/// - the accept loop never waits: an incoming connection is admitted or
///   refused at once;
/// - one source holds at most [`HandshakeLimits::per_source`] handshakes
///   (default 8); its next one is refused (a QUIC `CONNECTION_REFUSED`);
/// - all sources together hold at most [`HandshakeLimits::in_flight`]
///   (default 256); when that is full, the oldest handshake in flight is
///   dropped to make room for the new one. An honest handshake takes a
///   round trip, a stalled one lasts until its deadline, so the oldest is
///   almost always a stalled one; to keep an honest peer out, attackers
///   must open the cap's worth of handshakes within that peer's round
///   trip, not merely hold the cap.
///
/// # What a source is
///
/// iroh's `Incoming::remote_addr` gives the address the first packet came
/// from: for a direct path the UDP socket address, for a packet through a
/// relay the relay's URL and the endpoint id the relay names as its sender
/// (the key that sending client proved to the relay in its own handshake).
/// A source is then:
///
/// - direct over IPv4: the IP address (every port of it is one source);
/// - direct over IPv6: the /64 prefix (what one host or site usually
///   has); an IPv4-mapped IPv6 address counts as its IPv4 address;
/// - through a relay: the relay URL and the sender's endpoint id. Keys cost
///   nothing to make, so through a relay the per-source limit stops only a
///   careless attacker; the deadline and the cap with its eviction bound
///   the rest;
/// - anything else (a custom transport, which this crate does not bind):
///   one source for all.
///
/// A handshake's source is not validated (QUIC's Retry would do that at
/// the cost of a round trip): a peer that can spoof source addresses can
/// fill another address's per-source slots, though only for as long as it
/// keeps sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// How long one handshake may take; dropped after that.
    ///
    /// Default: [`Self::DEFAULT_TIMEOUT`] (30 s).
    pub timeout: Duration,
    /// Handshakes from one source at once; the next one is refused.
    ///
    /// Default: [`Self::DEFAULT_PER_SOURCE`] (8).
    pub per_source: usize,
    /// Handshakes at once in all; when full, the oldest is dropped to make
    /// room for the next.
    ///
    /// Default: [`Self::DEFAULT_IN_FLIGHT`] (256).
    pub in_flight: usize,
}

impl HandshakeLimits {
    /// Default [`timeout`](Self::timeout): 30 s. An honest handshake takes
    /// a round trip, but on a loaded node (100 nodes dialing each other at
    /// once on two cores) its packets are dropped in queues and
    /// retransmitted with back-off; 10 s dropped thousands of honest
    /// handshakes there. A stalled one holds its slot no longer than this,
    /// and the cap's eviction keeps honest peers in meanwhile.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`per_source`](Self::per_source): 8, room for a few peers
    /// behind one NAT dialing at once.
    pub const DEFAULT_PER_SOURCE: usize = 8;
    /// Default [`in_flight`](Self::in_flight): 256, each a QUIC connection
    /// in its handshake (a few KiB).
    pub const DEFAULT_IN_FLIGHT: usize = 256;
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            per_source: Self::DEFAULT_PER_SOURCE,
            in_flight: Self::DEFAULT_IN_FLIGHT,
        }
    }
}

/// What became of the incoming handshakes of one transport so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeStats {
    /// Handshakes running now.
    pub in_flight: usize,
    /// Handshakes that completed (the connection went to the core).
    pub completed: u64,
    /// Handshakes that failed (iroh's error went to the core).
    pub failed: u64,
    /// Handshakes dropped at [`HandshakeLimits::timeout`].
    pub timed_out: u64,
    /// Incoming connections refused at once, their source at
    /// [`HandshakeLimits::per_source`] (or a limit of 0).
    pub refused: u64,
    /// Handshakes dropped to make room, the cap
    /// [`HandshakeLimits::in_flight`] being reached.
    pub evicted: u64,
}

/// Where an incoming connection comes from, as the limits count it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    /// An IPv4 address, or an IPv6 /64 prefix.
    Ip(IpAddr),
    /// A relay and the endpoint id it names as the sender.
    Relay(RelayUrl, EndpointId),
    /// Any other kind of address.
    Other,
}

impl Source {
    fn of(addr: IncomingAddr) -> Self {
        match addr {
            IncomingAddr::Ip(socket) => Self::Ip(match socket.ip().to_canonical() {
                IpAddr::V6(ip) => {
                    let mut octets = ip.octets();
                    octets[8..].fill(0);
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
                v4 => v4,
            }),
            IncomingAddr::Relay { url, endpoint_id } => Self::Relay(url, endpoint_id),
            _ => Self::Other,
        }
    }
}

/// How a handshake ended, for the stats.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Completed,
    Failed,
    TimedOut,
}

/// A handshake in flight.
#[derive(Debug)]
struct Slot {
    source: Source,
    /// Dropped when the slot is taken away, which ends the handshake.
    _evict: oneshot::Sender<()>,
}

/// Why an incoming connection was refused.
#[derive(Debug)]
enum Refusal {
    /// Its source holds `held` handshakes already.
    PerSource { held: usize },
    /// A cap of 0.
    NoRoom,
}

/// The handshakes in flight across every accept loop of one transport.
///
/// # Invariants
///
/// - `slots.len() <= limits.in_flight`, and `per_source[s]` is the number
///   of slots of source `s` (absent when 0), at most `limits.per_source`.
/// - A slot is removed exactly once, by its handshake's end or by
///   eviction, and only the remover counts the outcome.
#[derive(Debug)]
struct Tracker {
    limits: HandshakeLimits,
    next_id: u64,
    /// Oldest first.
    slots: BTreeMap<u64, Slot>,
    per_source: HashMap<Source, usize>,
    stats: HandshakeStats,
}

impl Tracker {
    fn new(limits: HandshakeLimits) -> Self {
        Self {
            limits,
            next_id: 0,
            slots: BTreeMap::new(),
            per_source: HashMap::new(),
            stats: HandshakeStats::default(),
        }
    }

    /// Takes a slot for a handshake from `source`, evicting the oldest
    /// when the cap is full; its id, the receiver that fires when the slot
    /// is taken away, and the evicted slot's source.
    fn admit(
        &mut self,
        source: Source,
    ) -> Result<(u64, oneshot::Receiver<()>, Option<Source>), Refusal> {
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if held >= self.limits.per_source {
            self.stats.refused += 1;
            return Err(Refusal::PerSource { held });
        }
        let mut evicted = None;
        if self.slots.len() >= self.limits.in_flight {
            let Some((_, oldest)) = self.slots.pop_first() else {
                self.stats.refused += 1;
                return Err(Refusal::NoRoom);
            };
            self.release(&oldest.source);
            self.stats.evicted += 1;
            evicted = Some(oldest.source);
        }
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        *self.per_source.entry(source.clone()).or_default() += 1;
        self.slots.insert(id, Slot { source, _evict: tx });
        debug_assert!(self.slots.len() <= self.limits.in_flight);
        Ok((id, rx, evicted))
    }

    /// Ends slot `id` with `outcome` (`None`: cancelled, not counted),
    /// unless it was evicted already.
    fn finish(&mut self, id: u64, outcome: Option<Outcome>) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        self.release(&slot.source);
        match outcome {
            Some(Outcome::Completed) => self.stats.completed += 1,
            Some(Outcome::Failed) => self.stats.failed += 1,
            Some(Outcome::TimedOut) => self.stats.timed_out += 1,
            None => {}
        }
    }

    fn release(&mut self, source: &Source) {
        if let Some(held) = self.per_source.get_mut(source) {
            *held -= 1;
            if *held == 0 {
                self.per_source.remove(source);
            }
        }
    }

    fn stats(&self) -> HandshakeStats {
        HandshakeStats {
            in_flight: self.slots.len(),
            ..self.stats
        }
    }
}

/// The shared [`Tracker`].
type SharedTracker = Arc<Mutex<Tracker>>;

fn lock(tracker: &SharedTracker) -> MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handshake's slot, given back when dropped: with its outcome once
/// [`finish`](Self::finish) set it, uncounted when the handshake was
/// cancelled (its loop aborted).
#[derive(Debug)]
struct SlotGuard {
    tracker: SharedTracker,
    id: u64,
    outcome: Option<Outcome>,
}

impl SlotGuard {
    fn finish(mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        lock(&self.tracker).finish(self.id, self.outcome);
    }
}

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
/// - At most [`INCOMING_QUEUE`] connections wait in the queue.
/// - The loops together run at most [`HandshakeLimits::in_flight`]
///   handshakes, at most [`HandshakeLimits::per_source`] from one source,
///   each for at most [`HandshakeLimits::timeout`].
/// - A loop MUST NOT wait for anything but the next incoming connection:
///   each is admitted or refused at once.
#[derive(Debug)]
pub(crate) struct AcceptQueue {
    rx: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    tx: mpsc::Sender<Accepted>,
    tracker: SharedTracker,
}

impl AcceptQueue {
    /// An empty queue whose loops bound handshakes by `limits`.
    pub(crate) fn new(limits: HandshakeLimits) -> Self {
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        Self {
            rx: tokio::sync::Mutex::new(rx),
            tx,
            tracker: Arc::new(Mutex::new(Tracker::new(limits))),
        }
    }

    /// The next connection, or `None` once every sender is gone.
    ///
    /// Cancel safe: a connection is taken from the queue only when this
    /// returns it.
    pub(crate) async fn next(&self) -> Option<Accepted> {
        self.rx.lock().await.recv().await
    }

    /// What became of the incoming handshakes so far.
    pub(crate) fn stats(&self) -> HandshakeStats {
        lock(&self.tracker).stats()
    }

    /// Accepts `endpoint`'s connections until it closes, each handshake
    /// within the [`HandshakeLimits`], and queues them. Aborting the
    /// returned handle ends the loop and its handshakes in progress.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn spawn_loop(&self, endpoint: Endpoint) -> AbortHandle {
        let queue = self.tx.clone();
        let tracker = self.tracker.clone();
        let deadline = lock(&tracker).limits.timeout;
        tokio::spawn(async move {
            // Dropped with this task, aborting handshakes in progress.
            let mut handshakes = JoinSet::new();
            while let Some(incoming) = endpoint.accept().await {
                while handshakes.try_join_next().is_some() {}
                let source = Source::of(incoming.remote_addr());
                let admitted = lock(&tracker).admit(source.clone());
                let (id, evict, evicted) = match admitted {
                    Ok(admitted) => admitted,
                    Err(Refusal::PerSource { held }) => {
                        tracing::debug!(
                            ?source,
                            held,
                            "incoming handshake refused: its source is at the limit"
                        );
                        incoming.refuse();
                        continue;
                    }
                    Err(Refusal::NoRoom) => {
                        tracing::debug!(?source, "incoming handshake refused: a limit of 0");
                        incoming.refuse();
                        continue;
                    }
                };
                if let Some(evicted) = evicted {
                    tracing::debug!(?evicted, "oldest incoming handshake dropped to make room");
                }
                let slot = SlotGuard {
                    tracker: tracker.clone(),
                    id,
                    outcome: None,
                };
                let queue = queue.clone();
                handshakes.spawn(async move {
                    let result = tokio::select! {
                        // Fires when the slot is taken away; the slot is
                        // gone and counted already.
                        _ = evict => return,
                        result = tokio::time::timeout(deadline, incoming.into_future()) => result,
                    };
                    let accepted = match result {
                        Ok(Ok(conn)) => {
                            slot.finish(Outcome::Completed);
                            Ok(Arc::new(IrohConnection::new(conn)) as DynConnection)
                        }
                        Ok(Err(source)) => {
                            slot.finish(Outcome::Failed);
                            Err(core_err("accept", IrohTransportError::Accept { source }))
                        }
                        Err(_elapsed) => {
                            // Dropping the handshake closed it.
                            slot.finish(Outcome::TimedOut);
                            tracing::debug!(
                                ?source,
                                secs = deadline.as_secs_f64(),
                                "incoming handshake dropped at its deadline"
                            );
                            return;
                        }
                    };
                    // The core is gone when this fails; nothing to hand over.
                    let _ = queue.send(accepted).await;
                });
            }
            // Let finished handshakes reach the core before the loop ends.
            while handshakes.join_next().await.is_some() {}
        })
        .abort_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn ip(addr: &str) -> Source {
        Source::of(IncomingAddr::Ip(addr.parse::<SocketAddr>().unwrap()))
    }

    fn limits(per_source: usize, in_flight: usize) -> HandshakeLimits {
        HandshakeLimits {
            per_source,
            in_flight,
            ..HandshakeLimits::default()
        }
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64_prefix() {
        assert_eq!(ip("10.0.0.1:1"), ip("10.0.0.1:2"));
        assert_ne!(ip("10.0.0.1:1"), ip("10.0.0.2:1"));
        assert_eq!(ip("[2001:db8:0:1::1]:1"), ip("[2001:db8:0:1:ffff::9]:2"));
        assert_ne!(ip("[2001:db8:0:1::1]:1"), ip("[2001:db8:0:2::1]:1"));
        assert_eq!(ip("[::ffff:10.0.0.1]:7"), ip("10.0.0.1:1"));
    }

    #[test]
    fn a_source_over_its_limit_is_refused_and_the_others_are_not() {
        let mut t = Tracker::new(limits(2, 10));
        let a = ip("10.0.0.1:1");
        let _held: Vec<_> = (0..2).map(|_| t.admit(a.clone()).unwrap()).collect();
        assert!(matches!(t.admit(a), Err(Refusal::PerSource { held: 2 })));
        t.admit(ip("10.0.0.2:1")).unwrap();
        assert_eq!(t.stats().refused, 1);
        assert_eq!(t.stats().in_flight, 3);
    }

    #[test]
    fn a_full_cap_evicts_the_oldest_and_wakes_its_handshake() {
        let mut t = Tracker::new(limits(8, 2));
        let (first, mut first_rx, _) = t.admit(ip("10.0.0.1:1")).unwrap();
        let (second, mut second_rx, _) = t.admit(ip("10.0.0.2:1")).unwrap();
        let (_, _, evicted) = t.admit(ip("10.0.0.3:1")).unwrap();
        assert_eq!(evicted, Some(ip("10.0.0.1:1")));
        assert_eq!(
            first_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        );
        assert_eq!(
            second_rx.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        );
        // The evicted handshake's own end counts nothing more.
        t.finish(first, Some(Outcome::Completed));
        t.finish(second, Some(Outcome::TimedOut));
        let stats = t.stats();
        assert_eq!(
            (
                stats.in_flight,
                stats.evicted,
                stats.completed,
                stats.timed_out
            ),
            (1, 1, 0, 1)
        );
        assert!(!t.per_source.contains_key(&ip("10.0.0.1:1")));
        assert!(!t.per_source.contains_key(&ip("10.0.0.2:1")));
    }

    #[test]
    fn limits_of_zero_refuse_everything() {
        let mut t = Tracker::new(limits(0, 8));
        assert!(t.admit(Source::Other).is_err());
        let mut t = Tracker::new(limits(8, 0));
        assert!(matches!(t.admit(Source::Other), Err(Refusal::NoRoom)));
        assert_eq!(t.stats().refused, 1);
    }
}
