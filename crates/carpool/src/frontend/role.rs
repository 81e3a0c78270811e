//! What makes the frontend a role of the request layer: each request goes
//! to the alive parent that CARP ranks first for its URL, and on a failure
//! that is safe to retry, to the next alive one in *that URL's* ranking;
//! with `bounded_load`, a parent at its bound is passed over for the next
//! one within it ([`super::bound`]); every exchange tells the parents'
//! health; each worker keeps within its share of a parent's `max_conn`.

use carp::{MemberId, MAX_MEMBERS};
use httpx::body::RelayError;
use httpx::conn::Conn;
use httpx::HttpError;
use proxy::metrics::{Families, Snapshot};
use proxy::upstream::Failure;
use proxy::{Address, Claim, Filter, PeerInfo, PeerKind, Request, Retry, Role, Session};

use super::bound::Held;
use super::Worker;

/// The parents of one request, chosen lazily: the owner by one `select`
/// pass (the common case needs nothing more); the URL's ranking only when a
/// failover, or a parent at its bound, needs the next ones.
#[derive(Default)]
pub struct Candidates {
    /// `upstream_peer` was asked already.
    asked: bool,
    /// The URL's ranking, once a failover or the bound asked for it.
    order: Vec<MemberId>,
    /// Parents this request was given to, a bit each.
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
    fn was_tried(&self, m: MemberId) -> bool {
        self.tried[m.index() / 64] & (1 << (m.index() % 64)) != 0
    }

    /// `m` takes the request.
    fn give(&mut self, m: MemberId, held: Option<Held>) -> Option<MemberId> {
        self.tried[m.index() / 64] |= 1 << (m.index() % 64);
        self.held = held;
        Some(m)
    }
}

impl Role for Worker {
    type Peer = MemberId;
    type Ctx = Candidates;

    fn describe<'a>(&'a self, p: &'a MemberId) -> PeerInfo<'a> {
        let parent = &self.shared.parents[p.index()];
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

    fn upstream_peer(&self, req: &Request, c: &mut Candidates) -> Option<MemberId> {
        let shared = &*self.shared;
        let health = &shared.health;
        // a failed attempt's count ends before the request goes elsewhere
        c.held = None;
        let bound = shared.bound.as_ref().map(|b| (b, b.limit(health)));
        if !std::mem::replace(&mut c.asked, true) {
            if let Some(owner) = shared.table.select(&req.uri, |m| health.is_alive(m)) {
                match bound {
                    None => return c.give(owner, None),
                    Some((b, limit)) => {
                        if let Some(h) = b.try_take(owner, limit) {
                            return c.give(owner, Some(h));
                        }
                    }
                }
            }
        }
        if c.order.is_empty() {
            c.order = shared.table.rank(&req.uri).collect();
        }
        // the next alive parent of the ranking, and with the bound on, the
        // next one within it
        let mut first = None;
        let mut pick = None;
        for &m in &c.order {
            if c.was_tried(m) || !health.is_alive(m) {
                continue;
            }
            let Some((b, limit)) = bound else {
                first = Some(m);
                pick = Some((m, None));
                break;
            };
            first = first.or(Some(m));
            if let Some(h) = b.try_take(m, limit) {
                pick = Some((m, Some(h)));
                break;
            }
        }
        let first = first?;
        let (to, held) = match (pick, bound) {
            (Some(p), _) => p,
            // every alive parent is at the bound: the first one takes it
            (None, Some((b, _))) => (first, Some(b.take(first))),
            (None, None) => (first, None),
        };
        if let Some((b, limit)) = bound.filter(|_| to != first) {
            b.moved_from(first);
            tracing::debug!(
                from = %shared.parents[first.index()].name,
                to = %shared.parents[to.index()].name,
                load = b.load_of(first.index()),
                limit,
                "bounded load: request moved to the next parent of its ranking"
            );
        }
        c.give(to, held)
    }

    fn no_peer(&self) -> HttpError {
        HttpError::new(503, "no parent is alive")
    }

    /// A slot within this worker's share of the parent's `max_conn` (in use
    /// plus idle); a pooled connection is always within it.
    fn claim(&self, p: &MemberId, pooled: bool) -> Option<Claim> {
        let i = p.index();
        let open = self.in_use[i].get() + self.pool.borrow().idle_count(i);
        if !pooled && open >= self.shared.parents[i].max_conn_per_worker {
            return None;
        }
        Some(Claim::counted(&self.in_use[i]))
    }

    fn take_idle(&self, p: &MemberId) -> Option<Conn> {
        self.pool.borrow_mut().take(p.index())
    }

    fn keep_idle(&self, p: &MemberId, conn: Conn) {
        self.pool.borrow_mut().put(p.index(), conn);
    }

    fn upstream_ok(&self, p: &MemberId) {
        self.shared.health.success(*p);
    }

    /// The next parent when that is safe, but after a first-byte timeout
    /// once only: hung parents cost a request one retry, not one timeout
    /// each.
    fn upstream_failed(
        &self,
        req: &Request,
        c: &mut Candidates,
        p: &MemberId,
        f: &Failure,
    ) -> Retry {
        // this attempt is over: its parent no longer counts it
        c.held = None;
        let health = &self.shared.health;
        let name = &self.shared.parents[p.index()].name;
        match f {
            Failure::AtLimit => return Retry::Next,
            Failure::NotSent(e) => health.failure(*p, e.reason),
            Failure::Sent { error, .. } => {
                health.failure(*p, error.reason);
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

    fn response_body_failed(&self, p: &MemberId, e: &RelayError) {
        self.shared.health.body_failed(*p);
        let name = &self.shared.parents[p.index()].name;
        tracing::warn!(parent = %name, error = %e, "response body cut short");
    }
}
