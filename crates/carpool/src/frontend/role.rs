//! What makes the frontend a role of the request layer: each request goes
//! to the alive parent that CARP ranks first for its URL, and on a failure
//! that is safe to retry, to the next alive one in *that URL's* ranking;
//! with `bounded_load`, a parent at its bound is passed over for the next
//! one within it ([`super::bound`]); every exchange tells the parents'
//! health; each worker keeps within its share of a parent's `max_conn`.

use std::rc::Rc;

use carp::MAX_MEMBERS;
use httpx::body::RelayError;
use httpx::conn::Conn;
use httpx::HttpError;
use proxy::metrics::{Families, Snapshot};
use proxy::upstream::Failure;
use proxy::{Address, Claim, Filter, PeerInfo, PeerKind, Request, Retry, Role, Session};

use super::bound::Held;
use super::health::Slot;
use super::members::{Parent, Routing};
use super::Worker;

/// A parent a request was given to: its entry in the routing the request
/// started with (which stays whole while the request runs, whatever joins
/// or leaves meanwhile).
pub struct Chosen {
    routing: Rc<Routing>,
    index: usize,
}

impl Chosen {
    fn parent(&self) -> &Parent {
        self.routing.parent(self.index)
    }

    fn slot(&self) -> Slot {
        self.parent().slot
    }
}

/// The parents of one request, chosen lazily: the owner by one `select`
/// pass (the common case needs nothing more); the URL's ranking only when a
/// failover, or a parent at its bound, needs the next ones.
#[derive(Default)]
pub struct Candidates {
    /// The routing of this request, from its first `upstream_peer` (the
    /// first call picks the owner with one `select` pass).
    routing: Option<Rc<Routing>>,
    /// The URL's ranking (indices into the routing's parents), once a
    /// failover or the bound asked for it.
    order: Vec<usize>,
    /// Parents this request was given to, a bit each (by routing index).
    tried: [u64; MAX_MEMBERS / 64],
    /// The request's count on the parent it was last given to (with
    /// `bounded_load`); dropped when that attempt fails, or with the
    /// request when its exchange ends.
    held: Option<Held>,
    /// A parent already kept this request waiting for its whole first-byte
    /// timeout.
    timed_out: bool,
}

impl Candidates {
    fn was_tried(&self, i: usize) -> bool {
        self.tried[i / 64] & (1 << (i % 64)) != 0
    }

    /// Parent `i` of `routing` takes the request.
    fn give(&mut self, routing: &Rc<Routing>, i: usize, held: Option<Held>) -> Option<Chosen> {
        self.tried[i / 64] |= 1 << (i % 64);
        self.held = held;
        Some(Chosen {
            routing: routing.clone(),
            index: i,
        })
    }
}

impl Role for Worker {
    type Peer = Chosen;
    type Ctx = Candidates;

    fn describe<'a>(&'a self, p: &'a Chosen) -> PeerInfo<'a> {
        let parent = p.parent();
        PeerInfo {
            name: &parent.name,
            host: &parent.host,
            kind: PeerKind::Parent,
            address: Address::Socket(parent.addr),
            pass_credentials: parent.pass_credentials,
        }
    }

    /// Squid's internal objects (its icons, `/squid-internal-static/`) are
    /// Squid's own: a Squid frontend answers them itself, so `carpool
    /// route` says LOCAL for them, and no parent gets them here either.
    async fn request_filter(&self, s: &mut Session, req: &Request, _: &mut Candidates) -> Filter {
        let internal = req.head.target().starts_with(b"/squid-internal-")
            || req
                .uri
                .path_and_query()
                .starts_with(b"/squid-internal-static/");
        if internal {
            let e = HttpError::new(404, "a Squid-internal object: not served by carpool");
            return Filter::Answered(s.reject(e).await);
        }
        Filter::Forward
    }

    fn upstream_peer(&self, req: &Request, c: &mut Candidates) -> Option<Chosen> {
        let shared = &*self.shared;
        let health = &shared.health;
        // a failed attempt's count ends before the request goes elsewhere
        c.held = None;
        let first_ask = c.routing.is_none();
        let routing = c.routing.get_or_insert_with(|| self.routing()).clone();
        let bound = shared
            .bound
            .as_ref()
            .map(|b| (b, b.limit(health, &routing)));
        if first_ask {
            if let Some(owner) = routing.select(&req.uri, |s| health.is_alive(s)) {
                match bound {
                    None => return c.give(&routing, owner, None),
                    Some((b, limit)) => {
                        let p = routing.parent(owner);
                        if let Some(h) = b.try_take(p.slot, limit.of(p.weight)) {
                            return c.give(&routing, owner, Some(h));
                        }
                    }
                }
            }
        }
        if c.order.is_empty() {
            c.order = routing.rank(&req.uri);
        }
        // the next alive parent of the ranking, and with the bound on, the
        // next one within it
        let mut first = None;
        let mut pick = None;
        for &i in &c.order {
            let p = routing.parent(i);
            if c.was_tried(i) || !health.is_alive(p.slot) {
                continue;
            }
            let Some((b, limit)) = bound else {
                first = Some(i);
                pick = Some((i, None));
                break;
            };
            first = first.or(Some(i));
            if let Some(h) = b.try_take(p.slot, limit.of(p.weight)) {
                pick = Some((i, Some(h)));
                break;
            }
        }
        let first = first?;
        let (to, held) = match (pick, bound) {
            (Some(p), _) => p,
            // every alive parent is at the bound: the first one takes it
            (None, Some((b, _))) => (first, Some(b.take(routing.parent(first).slot))),
            (None, None) => (first, None),
        };
        if let Some((b, limit)) = bound.filter(|_| to != first) {
            let from = routing.parent(first);
            b.moved_from(from.slot);
            tracing::debug!(
                from = %from.name,
                to = %routing.parent(to).name,
                load = b.load_of(from.slot),
                limit = limit.of(from.weight),
                "bounded load: request moved to the next parent of its ranking"
            );
        }
        c.give(&routing, to, held)
    }

    fn no_peer(&self) -> HttpError {
        HttpError::new(503, "no parent is alive")
    }

    /// A slot within this worker's share of the parent's `max_conn` (in use
    /// plus idle); a pooled connection is always within it.
    fn claim(&self, p: &Chosen, pooled: bool) -> Option<Claim> {
        let i = p.slot().index();
        let open = self.in_use[i].get() + self.pool.borrow().idle_count(i);
        if !pooled && open >= p.parent().max_conn_per_worker {
            return None;
        }
        Some(Claim::counted(&self.in_use[i]))
    }

    fn take_idle(&self, p: &Chosen) -> Option<Conn> {
        self.pool.borrow_mut().take(p.slot().index())
    }

    fn keep_idle(&self, p: &Chosen, conn: Conn) {
        self.pool.borrow_mut().put(p.slot().index(), conn);
    }

    fn upstream_ok(&self, p: &Chosen) {
        self.shared.health.success(p.slot());
    }

    /// The next parent when that is safe, but after a first-byte timeout
    /// once only: hung parents cost a request one retry, not one timeout
    /// each.
    fn upstream_failed(&self, req: &Request, c: &mut Candidates, p: &Chosen, f: &Failure) -> Retry {
        // this attempt is over: its parent no longer counts it
        c.held = None;
        let health = &self.shared.health;
        let name = &p.parent().name;
        match f {
            Failure::AtLimit => return Retry::Next,
            Failure::NotSent(e) => health.failure(p.slot(), e.reason),
            Failure::Sent { error, .. } => {
                health.failure(p.slot(), error.reason);
                if !f.retryable(req) {
                    tracing::warn!(parent = %name, reason = error.reason, "request failed in flight; not retried (not idempotent or body sent)");
                    return Retry::Stop;
                }
                if f.is_timeout() && std::mem::replace(&mut c.timed_out, true) {
                    tracing::warn!(parent = %name, "second first-byte timeout for one request: not retried again");
                    return Retry::Stop;
                }
                tracing::info!(parent = %name, reason = error.reason, "retrying on the next parent in the ranking");
            }
            Failure::Stale | Failure::Client(_) | Failure::Denied(_) => return Retry::Stop,
        }
        Retry::Next
    }

    fn metrics(&self, snapshot: &Snapshot, families: &mut Families) {
        super::metrics::families(&self.shared, snapshot, families);
    }

    fn response_body_failed(&self, p: &Chosen, e: &RelayError) {
        self.shared.health.body_failed(p.slot());
        let name = &p.parent().name;
        tracing::warn!(parent = %name, error = %e, "response body cut short");
    }
}
