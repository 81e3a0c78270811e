//! Consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam; HAProxy's `hash-balance-factor`): with `bounded_load = C`,
//! a parent of weight `w` takes a request only while its requests in
//! flight stay within `ceil(C × (total in flight + 1) × w / W)`, `W` the
//! alive parents' weights together (with equal weights: C times the mean);
//! otherwise the request goes to the next member of its URL's ranking that
//! is within its bound.
//!
//! The counts are shared by every worker of the frontend. A request counts
//! on a parent from the moment [`Bound::try_take`] or [`Bound::take`] gives
//! it to that parent until its [`Held`] is dropped: by the role when the
//! attempt fails (before a retry goes elsewhere), or with the request's
//! state when its exchange ends in any way (answered, failed, timed out, or
//! its client gone and its future dropped). Nothing else changes a count,
//! so none can leak.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use carp::MAX_MEMBERS;

use super::health::{Health, Slot};
use super::members::Routing;

/// The factor is kept in thousandths, so that the bound is integer
/// arithmetic (1.25 → 1250).
const SCALE: u64 = 1000;

/// The shared counts of a frontend with `bounded_load` on.
pub struct Bound {
    /// C × [`SCALE`].
    factor: u64,
    /// Requests in flight per parent, by slot.
    load: Arc<[AtomicUsize]>,
    /// Requests moved away from each parent because it was at the bound.
    moves: Box<[AtomicU64]>,
}

/// The bound every parent has for one request: C × (total in flight + 1)
/// shared out by weight over the alive parents.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// C × (total + 1), in thousandths.
    slots: u64,
    /// The alive parents' weights together (at least 1).
    alive_weight: u64,
}

impl Limit {
    /// The most requests in flight a parent of `weight` may have once it
    /// takes one more: `ceil(C × (total + 1) × weight / W)`, at least 1.
    pub fn of(&self, weight: u32) -> usize {
        let share = self.slots.saturating_mul(u64::from(weight));
        share.div_ceil(SCALE * self.alive_weight).max(1) as usize
    }
}

/// One request counted on one parent until dropped.
pub struct Held {
    load: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.load[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Bound {
    /// Counts for every slot, with factor `c` (> 1).
    pub fn new(c: f64) -> Bound {
        Bound {
            factor: (c * SCALE as f64).round() as u64,
            load: (0..MAX_MEMBERS).map(|_| AtomicUsize::new(0)).collect(),
            moves: (0..MAX_MEMBERS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The bounds of `routing`'s parents for one request (see [`Limit`]).
    pub fn limit(&self, health: &Health, routing: &Routing) -> Limit {
        let parents = routing.parents();
        let total: usize = parents.iter().map(|p| self.load_of(p.slot)).sum();
        let alive_weight: u64 = parents
            .iter()
            .filter(|p| health.is_alive(p.slot))
            .map(|p| u64::from(p.weight))
            .sum();
        Limit {
            slots: self.factor.saturating_mul(total as u64 + 1),
            alive_weight: alive_weight.max(1),
        }
    }

    /// Counts the request on `m` if that keeps it within `limit` (one
    /// atomic step, so that workers deciding at once cannot both take the
    /// last slot).
    pub fn try_take(&self, s: Slot, limit: usize) -> Option<Held> {
        let i = s.index();
        self.load[i]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                (l < limit).then_some(l + 1)
            })
            .ok()?;
        Some(self.held(i))
    }

    /// Counts the request on `m` whatever its load (every alive parent is
    /// at the bound: the URL's first choice takes it).
    pub fn take(&self, s: Slot) -> Held {
        let i = s.index();
        self.load[i].fetch_add(1, Ordering::Relaxed);
        self.held(i)
    }

    fn held(&self, index: usize) -> Held {
        Held {
            load: self.load.clone(),
            index,
        }
    }

    /// A request that `s` would have taken went elsewhere.
    pub fn moved_from(&self, s: Slot) {
        self.moves[s.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests moved away from parent `s`.
    pub fn moves_of(&self, s: Slot) -> u64 {
        self.moves[s.index()].load(Ordering::Relaxed)
    }

    /// Requests in flight on parent `s`, as the bound counts them.
    pub fn load_of(&self, s: Slot) -> usize {
        self.load[s.index()].load(Ordering::Relaxed)
    }
}
