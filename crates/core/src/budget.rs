//! The transport-wide budget for bytes held in partially received frames.
//!
//! A frame is delivered only once all of it has arrived, so its bytes
//! wait in the connection's decoder until then. Per connection that is
//! bounded by the frame limit (100 MiB by default); across connections
//! only this budget bounds it: without it, ten peers each sending most of
//! one large frame would make the node hold ten such frames.
//!
//! # Rule
//!
//! Each connection may hold [`UNBUDGETED_PARTIAL_BYTES`] of partial frame
//! without asking, so small messages never wait on the budget. Beyond
//! that, before each read the connection's reader must hold a
//! [`Charge`] for all its partial bytes beyond the free share; when the
//! budget cannot cover it, the reader stops reading that connection (QUIC
//! flow control then holds the peer back, and the bytes stay in QUIC's
//! window) until another connection's charge shrinks. A partial frame
//! whose peer stalls is closed after the frame progress timeout, which
//! frees its charge; a frame that waits for the budget is closed after
//! twice that (see `proto`), so two large frames that each hold half the
//! budget cannot wait on each other for ever.
//!
//! # Invariants
//!
//! - The sum of all charges never exceeds the limit.
//! - A read returns at most [`MAX_READ_CHUNK`] bytes, so a connection's
//!   partial bytes never exceed its charge plus
//!   `UNBUDGETED_PARTIAL_BYTES + MAX_READ_CHUNK`.
//! - A charge is given back when it shrinks and when it is dropped (its
//!   connection ended), and waiting readers are woken then.
//!
//! [`MAX_READ_CHUNK`]: crate::MAX_READ_CHUNK

use std::sync::Mutex;

use tokio::sync::Notify;

/// Bytes of partial frame a connection may hold without a charge on the
/// budget: 64 KiB, enough for the messages kitsune2 sends most (gossip,
/// notify, fetch requests) to pass without waiting.
pub const UNBUDGETED_PARTIAL_BYTES: usize = 64 * 1024;

/// What a [`CoreTransport`](crate::CoreTransport)'s partial-frame budget
/// holds now, and the most it ever held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBudgetUsage {
    /// The budget, in bytes ([`CoreConfig::partial_frame_budget`](crate::CoreConfig::partial_frame_budget)).
    pub limit: usize,
    /// Bytes charged now.
    pub in_use: usize,
    /// The most bytes ever charged at once.
    pub peak: usize,
}

#[derive(Debug, Default)]
struct Counts {
    in_use: usize,
    peak: usize,
}

/// The budget shared by all connections of one transport.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    limit: usize,
    counts: Mutex<Counts>,
    freed: Notify,
}

impl FrameBudget {
    /// A budget of `limit` bytes, nothing charged.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Mutex::new(Counts::default()),
            freed: Notify::new(),
        }
    }

    /// What it holds now.
    pub(crate) fn usage(&self) -> FrameBudgetUsage {
        let counts = self.counts.lock().expect("poisoned");
        FrameBudgetUsage {
            limit: self.limit,
            in_use: counts.in_use,
            peak: counts.peak,
        }
    }

    /// Resolves once some charge shrank after this call. Create it before
    /// a [`Charge::try_set`] that failed, so no release in between is
    /// missed (a `Notified` sees every `notify_waiters` after its
    /// creation).
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Moves `charge` from `from` to `to` bytes if the budget allows.
    fn resize(&self, from: usize, to: usize) -> bool {
        let mut counts = self.counts.lock().expect("poisoned");
        if to > from {
            let in_use = counts.in_use - from + to;
            if in_use > self.limit {
                return false;
            }
            counts.in_use = in_use;
            counts.peak = counts.peak.max(in_use);
            return true;
        }
        counts.in_use -= from - to;
        drop(counts);
        if to < from {
            self.freed.notify_waiters();
        }
        true
    }
}

/// One connection's share of a [`FrameBudget`], given back on drop.
#[derive(Debug)]
pub(crate) struct Charge<'a> {
    budget: &'a FrameBudget,
    bytes: usize,
}

impl<'a> Charge<'a> {
    /// An empty charge on `budget`.
    pub(crate) fn new(budget: &'a FrameBudget) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Makes the charge cover `partial` bytes of partial frame (the free
    /// share not counted). Shrinking always succeeds; growing fails,
    /// changing nothing, when the budget cannot cover it.
    pub(crate) fn try_cover(&mut self, partial: usize) -> bool {
        let want = partial.saturating_sub(UNBUDGETED_PARTIAL_BYTES);
        if want == self.bytes {
            return true;
        }
        let ok = self.budget.resize(self.bytes, want);
        if ok {
            self.bytes = want;
        }
        ok
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        self.budget.resize(self.bytes, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FREE: usize = UNBUDGETED_PARTIAL_BYTES;

    #[test]
    fn the_free_share_needs_no_budget() {
        let budget = FrameBudget::new(0);
        let mut charge = Charge::new(&budget);
        assert!(charge.try_cover(FREE));
        assert!(!charge.try_cover(FREE + 1));
        assert_eq!(budget.usage().in_use, 0);
    }

    #[test]
    fn charges_never_exceed_the_limit_and_come_back_on_drop() {
        let budget = FrameBudget::new(1000);
        let mut a = Charge::new(&budget);
        let mut b = Charge::new(&budget);
        assert!(a.try_cover(FREE + 600));
        assert!(!b.try_cover(FREE + 401), "would exceed the limit");
        assert!(b.try_cover(FREE + 400));
        assert_eq!(budget.usage().in_use, 1000);
        assert!(a.try_cover(FREE + 100), "shrinking always works");
        assert!(b.try_cover(FREE + 900));
        drop(b);
        assert_eq!(budget.usage().in_use, 100);
        drop(a);
        let usage = budget.usage();
        assert_eq!((usage.in_use, usage.peak, usage.limit), (0, 1000, 1000));
    }

    #[tokio::test]
    async fn a_shrinking_charge_wakes_waiters() {
        let budget = FrameBudget::new(10);
        let mut a = Charge::new(&budget);
        assert!(a.try_cover(FREE + 10));
        let freed = budget.freed();
        assert!(a.try_cover(FREE));
        tokio::time::timeout(std::time::Duration::from_secs(5), freed)
            .await
            .expect("woken by the release");
    }
}
