//! What makes the frontend a role of the request layer: each request goes
//! to the alive parent that CARP ranks first for its URL, and on a failure
//! that is safe to retry, to the next alive one in *that URL's* ranking;
//! every exchange tells the parents' health; each worker keeps within its
//! share of a parent's `max_conn`.

use carp::{MemberId, Ranking};
use httpx::body::RelayError;
use httpx::conn::Conn;
use httpx::HttpError;
use proxy::metrics::{Families, Snapshot};
use proxy::upstream::Failure;
use proxy::{Address, Claim, Filter, PeerInfo, PeerKind, Request, Retry, Role, Session};

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
    /// A parent already kept this request waiting for its whole first-byte
    /// timeout.
    timed_out: bool,
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
