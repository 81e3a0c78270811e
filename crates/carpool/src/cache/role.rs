//! What makes the cache a role of the request layer: GET and HEAD are
//! answered from the store when it can (fresh, or stale within
//! `stale-while-revalidate`), else through a fill (collapsed forwarding:
//! one origin request per key, followers stream from the store); PURGE
//! removes; every other request, and every answer that is not stored, is
//! relayed between the client and the origin (or the upstream proxy), an
//! unsafe method that succeeds invalidating its URL (RFC 9111 §4.4).

use std::time::SystemTime;

use cache_store::{Key, Tier};
use httpx::body::RelayError;
use httpx::conn::Conn;
use httpx::framing::BodyLen;
use httpx::headers::Outgoing;
use httpx::HttpError;
use proxy::log::Code;
use proxy::metrics::{Families, Snapshot};
use proxy::upstream::Response;
use proxy::{Filter, Next, PeerInfo, Proceed, Request, Role, Session};

use super::directives::Directives;
use super::fill::Role as FillRole;
use super::follow::{follow, Followed};
use super::freshness::{self, stale_within, StaleWindow, Use};
use super::hit::{serve_hit, Object};
use super::lookup::lookup;
use super::miss::{self, Lead};
use super::origin::Hop;
use super::policy;
use super::purge::purge;
use super::respond::{Served, XCache};
use super::Worker;

/// Times a request re-reads the store after a fill it waited on refreshed
/// the object, before fetching alone.
const MAX_LOOKUPS: usize = 3;

/// The cache's state of one request.
#[derive(Default)]
pub struct Job {
    /// The fill this request leads, if it leads one (else its answer is
    /// relayed, not stored).
    lead: Option<Lead>,
    /// Whether the one upstream (origin or upstream proxy) was offered.
    offered: bool,
}

impl Role for Worker {
    type Peer = Hop;
    type Ctx = Job;

    fn describe<'a>(&'a self, hop: &'a Hop) -> PeerInfo<'a> {
        hop.info()
    }

    async fn request_filter(&self, s: &mut Session, req: &Request, job: &mut Job) -> Filter {
        match req.method() {
            b"PURGE" => Filter::Answered(purge(self, s, req).await),
            // a protocol switch (WebSocket) is relayed, never stored
            b"GET" | b"HEAD"
                if req.body == BodyLen::Empty
                    && httpx::headers::upgrade_offer(&req.head).is_none() =>
            {
                self.stored_or_fill(s, req, job).await
            }
            _ => Filter::Forward,
        }
    }

    fn upstream_peer(&self, req: &Request, job: &mut Job) -> Option<Hop> {
        if std::mem::replace(&mut job.offered, true) {
            return None; // one upstream: nothing to fail over to
        }
        Some(self.cache.hop(req))
    }

    fn take_idle(&self, hop: &Hop) -> Option<Conn> {
        self.pools.borrow_mut().take(hop)
    }

    fn keep_idle(&self, hop: &Hop, conn: Conn) {
        self.pools.borrow_mut().put(hop, conn);
    }

    fn upstream_request<'a>(&'a self, _req: &'a Request, job: &'a Job, out: &mut Outgoing<'a>) {
        if let Some(lead) = &job.lead {
            lead.request(out);
        }
    }

    async fn upstream_response(
        &self,
        s: &mut Session,
        req: &Request,
        job: &mut Job,
        hop: &Hop,
        resp: Response,
    ) -> Proceed {
        if let Some(lead) = job.lead.take() {
            return miss::answer(self, s, req, hop.clone(), lead, resp).await;
        }
        let unsafe_method = !matches!(req.method(), b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE");
        if unsafe_method && resp.head.status < 400 {
            let base = req.uri.effective();
            if self.cache.store.remove(Key::of(base), base) {
                tracing::debug!(url = %String::from_utf8_lossy(base), "invalidated by an unsafe method");
            }
        }
        s.log.class = "pass";
        Proceed::Relay(resp, XCache::Miss.field())
    }

    fn metrics(&self, snapshot: &Snapshot, families: &mut Families) {
        super::metrics::families(&self.cache, snapshot, families);
    }

    async fn fail_to_proxy(
        &self,
        s: &mut Session,
        req: &Request,
        job: &mut Job,
        error: HttpError,
    ) -> Option<Next> {
        let lead = job.lead.as_ref()?;
        miss::stale_if_error(self, s, req, &lead.found, error).await
    }

    fn response_body_failed(&self, hop: &Hop, e: &RelayError) {
        tracing::info!(origin = hop.info().name, error = %e, "response body cut short");
    }
}

impl Worker {
    /// GET and HEAD: answered from the store when it can; else this request
    /// leads a fill, or follows the one in progress (and when that fill
    /// cannot be shared, fetches alone).
    async fn stored_or_fill(&self, s: &mut Session, req: &Request, job: &mut Job) -> Filter {
        let head = &req.head;
        let base = req.uri.effective();
        let plain = !policy::request_has_cache_directives(&head.fields);
        for _ in 0..MAX_LOOKUPS {
            let found = lookup(&self.cache, base, head);
            if let Some((hit, m)) = &found.object {
                let obj = Object {
                    body: &hit.body,
                    meta: m,
                };
                if is_fresh(req, m, plain) {
                    let code = match hit.tier {
                        Tier::Memory => Code::MemHit,
                        Tier::Disk => Code::DiskHit,
                    };
                    let served = Served::new(code, XCache::Hit);
                    return Filter::Answered(serve_hit(self, s, head, obj, served).await);
                }
                let swr = StaleWindow::WhileRevalidate;
                if plain && stale_within(m, &self.cache.freshness, swr, SystemTime::now()) {
                    let served = Served::new(Code::StaleHit, XCache::Hit);
                    let next = serve_hit(self, s, head, obj, served).await;
                    miss::refresh_in_background(self, req, found);
                    return Filter::Answered(next);
                }
            }
            if only_if_cached(req) {
                s.log.code = Code::Miss;
                let e = HttpError::new(504, "only-if-cached and no fresh stored response");
                return Filter::Answered(s.reject(e).await);
            }
            match self.cache.inflight.claim(found.key(base)) {
                FillRole::Lead(leader) => {
                    job.lead = Some(Lead::new(found, leader));
                    return Filter::Forward;
                }
                FillRole::Join(rx) => {
                    self.cache.counts.collapsed();
                    let served = match found.object {
                        Some(_) => Served::new(Code::RefreshModified, XCache::Miss),
                        None => Served::new(Code::Miss, XCache::Miss),
                    };
                    match follow(self, s, head, rx, served).await {
                        Followed::Done(next) => return Filter::Answered(next),
                        Followed::Again => continue,
                        Followed::Alone => break,
                    }
                }
            }
        }
        // The fill we waited for was not shared: fetch for this client alone.
        Filter::Forward
    }
}

/// Whether the stored record `m` answers `req` without the origin: by its
/// own freshness for a `plain` request (no `Cache-Control` or `Pragma` of
/// its own), else by the full RFC 9111 policy.
fn is_fresh(req: &Request, m: &super::meta::Meta, plain: bool) -> bool {
    let now = SystemTime::now();
    if plain {
        return m.is_fresh(now);
    }
    let d = freshness::request_directives(&req.head.fields);
    freshness::usable(m, &d, now) == Use::Fresh
}

/// True when the client asked for a stored answer only (`only-if-cached`).
fn only_if_cached(req: &Request) -> bool {
    Directives::cache_control(req.head.fields.get_all("cache-control")).only_if_cached
}
