//! What makes the frontend a role of the request layer: each request goes
//! to the alive parent that CARP ranks first for its URL, and on a failure
//! that is safe to retry, to the next alive one in *that URL's* ranking;
//! every exchange tells the parents' health; each worker keeps within its
//! share of a parent's `max_conn`.

use carp::{MemberId, Ranking};
use httpx::body::RelayError;
use httpx::conn::Conn;
use httpx::HttpError;
use proxy::upstream::Failure;
use proxy::{Address, Claim, PeerInfo, PeerKind, Request, Retry, Role};

use super::Worker;

/// The alive parents of one request in ranking order, computed lazily: the
/// owner by one `select` pass (the common case needs nothing more); the
/// full ranking only when a failover needs the next ones.
#[derive(Default)]
pub struct Candidates {
    /// The owner, once looked for (`Some(None)`: no member was alive).
    first: Option<Option<MemberId>>,
    /// The rest of the ranking, once a failover asked for it.
    rest: Option<Box<Ranking>>,
}

impl Role for Worker {
    type Peer = MemberId;
    type Ctx = Candidates;

    fn describe<'a>(&'a self, p: &'a MemberId) -> PeerInfo<'a> {
        let parent = &self.shared.parents[p.index()];
        PeerInfo {
            name: &parent.name,
            kind: PeerKind::Parent,
            address: Address::Socket(parent.addr),
        }
    }

    fn upstream_peer(&self, req: &Request, c: &mut Candidates) -> Option<MemberId> {
        let (table, health) = (&self.shared.table, &self.shared.health);
        if c.first.is_none() {
            let best = table.select(&req.uri, |m| health.is_alive(m));
            c.first = Some(best);
            if best.is_some() {
                return best;
            }
        }
        let first = c.first.flatten();
        let rest = c.rest.get_or_insert_with(|| Box::new(table.rank(&req.uri)));
        rest.find(|m| Some(*m) != first && health.is_alive(*m))
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

    fn upstream_failed(&self, req: &Request, p: &MemberId, f: &Failure) -> Retry {
        let health = &self.shared.health;
        let name = &self.shared.parents[p.index()].name;
        match f {
            Failure::AtLimit => return Retry::Next,
            Failure::NotSent(e) => health.failure(*p, e.reason),
            Failure::Sent { error, .. } => {
                health.failure(*p, error.reason);
                health.failed_in_flight(*p);
                if !f.retryable(req) {
                    tracing::warn!(parent = %name, reason = error.reason, "request failed in flight; not retried (not idempotent or body sent)");
                    return Retry::Stop;
                }
                tracing::info!(parent = %name, reason = error.reason, "retrying on the next parent in the ranking");
            }
            Failure::Stale | Failure::Client(_) | Failure::Denied(_) => return Retry::Stop,
        }
        Retry::Next
    }

    fn response_body_failed(&self, p: &MemberId, e: &RelayError) {
        self.shared.health.failed_in_flight(*p);
        let name = &self.shared.parents[p.index()].name;
        tracing::warn!(parent = %name, error = %e, "response body cut short");
    }
}
