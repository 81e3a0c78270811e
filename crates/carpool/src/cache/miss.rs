//! Misses and revalidations: the request a fill sends, the RFC 9111 verdict
//! on the origin's answer, storing it (under its `Vary` variant key when it
//! varies) while the followers stream it, and the stale answers RFC 5861
//! allows (`stale-if-error`, `stale-while-revalidate`).

use std::time::SystemTime;

use cache_store::Key;
use httpx::body::Decoder;
use httpx::conn::Conn;
use httpx::framing::{self, BodyLen};
use httpx::headers::{self, Outgoing};
use httpx::HttpError;
use proxy::log::Code;
use proxy::upstream::Response;
use proxy::{Next, Proceed, Request, Session};
use tokio::sync::watch;

use super::fill::{End, Leader, Progress, Role as FillRole};
use super::follow::{follow, Followed};
use super::freshness::{self, Exchange, StaleWindow, Verdict};
use super::hit::{serve_hit, Object};
use super::lookup::Found;
use super::meta::{self, Meta};
use super::origin::{Hop, CLIENT_CONDITIONS};
use super::policy;
use super::respond::{Served, XCache};
use super::Worker;

/// The leader of a fill: what it found stored, its side of the fill, and
/// the validators it revalidates a stored object with.
pub(super) struct Lead {
    pub(super) found: Found,
    leader: Leader,
    validators: Vec<u8>,
    /// When the fill began: no later than its request is sent (the start
    /// of the response delay, RFC 9111 §4.2.3).
    request_time: SystemTime,
}

impl Lead {
    /// Leads the fill of what `found` found (or did not).
    pub(super) fn new(found: Found, leader: Leader) -> Lead {
        let validators = found
            .object
            .as_ref()
            .map(|(_, m)| policy::validators(m))
            .unwrap_or_default();
        Lead {
            found,
            leader,
            validators,
            request_time: SystemTime::now(),
        }
    }

    /// Adjusts the request sent upstream for this fill: a GET for the
    /// whole, current object (the client's own conditions and ranges are
    /// answered from the store), with the stored object's validators.
    pub(super) fn request<'a>(&'a self, o: &mut Outgoing<'a>) {
        o.method = b"GET";
        o.drop = CLIENT_CONDITIONS;
        o.extra = &self.validators;
    }

    /// How the leader's client is answered: a miss, or a refresh of the
    /// stored object.
    pub(super) fn served(&self) -> Served {
        match self.found.object {
            Some(_) => Served::new(Code::RefreshModified, XCache::Refresh),
            None => Served::new(Code::Miss, XCache::Miss),
        }
    }
}

/// What the origin's answer to a fill came to.
enum Filled {
    /// The origin said 304: the stored record was refreshed (this is it).
    Refreshed(Meta),
    /// The body is being stored: follow the fill.
    Filling(watch::Receiver<Progress>),
    /// Not stored: this response goes to the one client as it is.
    Pass(Response),
    /// The origin's answer cannot be used.
    Failed(HttpError),
}

/// The response filter of a fill with a client: the origin's final answer
/// stored and followed, or the refreshed object served, or the answer
/// relayed as it is.
pub(super) async fn answer(
    w: &Worker,
    s: &mut Session,
    req: &Request,
    hop: Hop,
    lead: Lead,
    resp: Response,
) -> Proceed {
    let served = lead.served();
    s.log.code = served.code;
    let Lead {
        found,
        leader,
        request_time,
        ..
    } = lead;
    let fill = Fill {
        w,
        req,
        found: &found,
        leader,
        hop,
        request_time,
    };
    let next = match fill.take(resp) {
        Filled::Pass(resp) => {
            s.log.class = "pass";
            return Proceed::Relay(resp, served.x_cache.field());
        }
        Filled::Refreshed(m) => match &found.object {
            Some((hit, _)) => {
                let obj = Object {
                    body: &hit.body,
                    meta: &m,
                };
                let served = Served::new(Code::RefreshUnmodified, XCache::Refresh);
                serve_hit(w, s, &req.head, obj, served).await
            }
            None => {
                s.reject(HttpError::new(502, "304 without a stored object"))
                    .await
            }
        },
        Filled::Filling(rx) => match follow(w, s, &req.head, rx, served).await {
            Followed::Done(next) => next,
            Followed::Again | Followed::Alone => {
                s.reject(HttpError::new(502, "origin broke during the response"))
                    .await
            }
        },
        Filled::Failed(e) => {
            w.cache.counts.fill_failed();
            match stale_if_error(w, s, req, &found, e).await {
                Some(next) => next,
                None => s.reject(e).await,
            }
        }
    };
    Proceed::Answered(next)
}

/// Serves the stored object of a fill whose origin failed, when its
/// `stale-if-error` window allows (RFC 5861); `None` otherwise.
pub(super) async fn stale_if_error(
    w: &Worker,
    s: &mut Session,
    req: &Request,
    found: &Found,
    e: HttpError,
) -> Option<Next> {
    let (hit, m) = found.object.as_ref()?;
    if !freshness::stale_within(
        m,
        &w.cache.freshness,
        StaleWindow::IfError,
        SystemTime::now(),
    ) {
        return None;
    }
    tracing::info!(url = %String::from_utf8_lossy(req.uri.effective()), reason = e.reason, "origin failed: serving stale (stale-if-error)");
    let obj = Object {
        body: &hit.body,
        meta: m,
    };
    let served = Served::new(Code::RefreshFailOld, XCache::Hit);
    Some(serve_hit(w, s, &req.head, obj, served).await)
}

/// A fill's origin answer, and what it is judged and stored with.
struct Fill<'a> {
    w: &'a Worker,
    req: &'a Request,
    found: &'a Found,
    leader: Leader,
    hop: Hop,
    request_time: SystemTime,
}

impl Fill<'_> {
    /// The origin's final answer `resp`, judged: a 304 refreshes the
    /// stored record; a storable answer starts being stored (a task of its
    /// own fills the store, the followers stream from it); anything else
    /// passes to this one client.
    fn take(self, resp: Response) -> Filled {
        let at = Exchange {
            request_time: self.request_time,
            response_time: SystemTime::now(),
        };
        let rules = &self.w.cache.freshness;
        let (uri, fields) = (self.req.uri.effective(), &self.req.head.fields);
        if let (Some((hit, m)), 304) = (&self.found.object, resp.head.status) {
            if headers::server_keep_alive(&resp.head) {
                self.w.pools.borrow_mut().put(&self.hop, resp.conn);
            }
            let merged = policy::merge_304(&m.head, &resp.head);
            let refreshed = match freshness::judge(rules, uri, fields, m.status, merged, at) {
                Verdict::Store(n) => Some(n),
                Verdict::Pass(_) => None,
            };
            let now = refresh(self.w, self.found.key(uri), hit.version, refreshed);
            self.leader.end(End::Refreshed);
            return Filled::Refreshed(now.unwrap_or_else(|| m.clone()));
        }
        let len = match framing::response_body(b"GET", &resp.head) {
            Ok(l) => l,
            Err(e) => return Filled::Failed(e),
        };
        let verdict = match known_len(len) {
            Some(n) if n > self.w.cache.settings.max_object_size => {
                Verdict::Pass("larger than max_object_size")
            }
            _ => {
                let head = policy::stored_head(&resp.head);
                freshness::judge(rules, uri, fields, resp.head.status, head, at)
            }
        };
        match verdict {
            Verdict::Store(meta) => self.store(resp, meta, len),
            Verdict::Pass(why) => {
                tracing::debug!(url = %String::from_utf8_lossy(uri), why, "not stored");
                self.leader.end(End::Pass);
                if self.found.object.is_some() {
                    let key = self.found.key(uri);
                    self.w.cache.store.remove(Key::of(key), key);
                }
                Filled::Pass(resp)
            }
        }
    }

    /// Starts storing `resp`, whose record is `meta` and body `len`: the
    /// writer, the announcement to the followers, and the task that fills
    /// the body.
    fn store(self, resp: Response, meta: Meta, len: BodyLen) -> Filled {
        if self.w.cache.disk_io.as_ref().is_some_and(|io| !io.admits()) {
            self.leader.end(End::Pass);
            return Filled::Pass(resp);
        }
        let key = storage_key(self.w, self.req, self.found, &meta);
        let store = &self.w.cache.store;
        let writer = match store.begin(Key::of(&key), &key, &meta.encode(), known_len(len)) {
            Ok(wr) => wr,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store an object: passing it through");
                self.leader.end(End::Pass);
                return Filled::Pass(resp);
            }
        };
        let rx = self.leader.subscribe();
        self.leader.head(meta, writer.reader(), known_len(len));
        let task = FillTask {
            keep_origin: headers::server_keep_alive(&resp.head) && len != BodyLen::UntilClose,
            w: self.w.clone(),
            conn: resp.conn,
            hop: self.hop,
            len,
            writer,
            leader: self.leader,
        };
        tokio::task::spawn_local(task.run());
        Filled::Filling(rx)
    }
}

/// The length of a body when it is known before it arrives.
fn known_len(len: BodyLen) -> Option<u64> {
    match len {
        BodyLen::Length(n) => Some(n),
        BodyLen::Empty => Some(0),
        BodyLen::Chunked | BodyLen::UntilClose => None,
    }
}

/// Writes a revalidated record (`Some`) over the stored object `version`
/// under `key`, or drops the object when the origin's 304 made it
/// unstorable (`None`); the new record, if any.
fn refresh(w: &Worker, key: &[u8], version: u64, refreshed: Option<Meta>) -> Option<Meta> {
    let Some(n) = refreshed else {
        w.cache.store.remove(Key::of(key), key);
        return None;
    };
    // only the version we revalidated: a newer object stored meanwhile
    // keeps its own headers
    match w
        .cache
        .store
        .update_meta_if(Key::of(key), key, version, &n.encode())
    {
        Ok(true) => {}
        Ok(false) => tracing::debug!("stored object replaced during revalidation"),
        Err(e) => tracing::warn!(error = %e, "cannot refresh a stored record"),
    }
    Some(n)
}

/// Where a response is stored: the URL's own key, or, when it varies, the
/// key of the request's variant (writing the URL's `Vary` marker first when
/// it has none, or one naming other fields).
fn storage_key(w: &Worker, req: &Request, found: &Found, meta: &Meta) -> Vec<u8> {
    let base = req.uri.effective();
    if meta.vary.is_empty() {
        return base.to_vec();
    }
    let nonce = match &found.vary {
        Some((names, nonce)) if *names == meta.vary => *nonce,
        _ => {
            let nonce = rand::random::<u64>();
            let marker = meta::encode_vary(&meta.vary, nonce);
            let stored = w
                .cache
                .store
                .begin(Key::of(base), base, &marker, Some(0))
                .and_then(|wr| wr.finish());
            if let Err(e) = stored {
                tracing::warn!(error = %e, "cannot store a Vary marker");
            }
            nonce
        }
    };
    policy::variant_key(base, nonce, &meta.vary, &req.head.fields)
}

/// Revalidates (or refetches) an object in the background, for a client
/// that was answered stale within `stale-while-revalidate`.
pub(super) fn refresh_in_background(w: &Worker, req: &Request, found: Found) {
    let FillRole::Lead(leader) = w.cache.inflight.claim(found.key(req.uri.effective())) else {
        return; // a fill of this key is already running
    };
    let (w, req) = (w.clone(), req.clone());
    tokio::task::spawn_local(async move {
        let hop = w.cache.hop(&req);
        let lead = Lead::new(found, leader);
        let resp = match fetch(&w, &req, &hop, &lead).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(url = %String::from_utf8_lossy(req.uri.effective()), reason = e.reason, "background revalidation failed");
                return;
            }
        };
        let Lead {
            found,
            leader,
            request_time,
            ..
        } = lead;
        let fill = Fill {
            w: &w,
            req: &req,
            found: &found,
            leader,
            hop,
            request_time,
        };
        if let Filled::Failed(e) = fill.take(resp) {
            tracing::info!(url = %String::from_utf8_lossy(req.uri.effective()), reason = e.reason, "background revalidation failed");
        }
    });
}

/// The fill's request to `hop` and its final response head, with no
/// client waiting (interim responses are skipped).
async fn fetch(w: &Worker, req: &Request, hop: &Hop, lead: &Lead) -> Result<Response, HttpError> {
    let info = hop.info();
    let layer = &w.cache.layer;
    let mut authority = Vec::new();
    let mut o = proxy::upstream::outgoing(req, &info, layer, &mut authority);
    lead.request(&mut o);
    let mut head = Vec::new();
    headers::write_request_head(&mut head, &req.head, &o);
    let idle = w.pools.borrow_mut().take(hop);
    let reach = proxy::upstream::Reach::of(req, layer);
    let mut resp = proxy::upstream::exchange(idle, &info, &head, &layer.upstream, reach)
        .await
        .map_err(|f| {
            f.error()
                .unwrap_or(HttpError::new(502, "origin request failed"))
        })?;
    resp.skip_interim(info.kind, &layer.upstream).await?;
    Ok(resp)
}

/// Reads the origin's body into the store, announcing progress to the
/// fill's followers; runs on its own so that a client going away does not
/// stop the object from being stored for the others.
struct FillTask {
    w: Worker,
    conn: Conn,
    hop: Hop,
    keep_origin: bool,
    len: BodyLen,
    writer: cache_store::Writer,
    leader: Leader,
}

impl FillTask {
    async fn run(self) {
        let FillTask {
            w,
            mut conn,
            hop,
            keep_origin,
            len,
            mut writer,
            leader,
        } = self;
        let idle = w.cache.settings.server.body_idle_timeout;
        let disk_io = w.cache.disk_io.clone();
        let mut dec = Decoder::new(len);
        loop {
            let piece = match dec.next(&mut conn, idle).await {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(origin = hop.info().name, error = %e, "origin body cut short");
                    writer.abort();
                    leader.end(End::Failed);
                    return;
                }
            };
            let appended = match &disk_io {
                // on a disk thread: a slow or throttled disk stalls this
                // fill only (it waits for room in the queue), not the
                // worker's other connections
                Some(io) => match io
                    .run(move || {
                        let r = writer.append(&piece);
                        (writer, r)
                    })
                    .await
                {
                    Some((wr, r)) => {
                        writer = wr;
                        r
                    }
                    None => {
                        leader.end(End::Failed);
                        return;
                    }
                },
                None => writer.append(&piece),
            };
            if let Err(e) = appended {
                tracing::warn!(error = %e, "storing an object failed");
                writer.abort();
                leader.end(End::Failed);
                return;
            }
            if dec.is_done() {
                // the last bytes are announced once the object is
                // published: a client that has the whole body finds the
                // object stored when it asks again
                break;
            }
            leader.progress(writer.written());
        }
        let written = writer.written();
        let finished = match &disk_io {
            Some(io) => io.run(move || writer.finish()).await.unwrap_or(Ok(())),
            None => writer.finish(),
        };
        if let Err(e) = finished {
            // the followers have every byte already; only later hits are lost
            tracing::warn!(error = %e, "publishing a stored object failed");
        }
        leader.progress(written);
        leader.end(End::Complete);
        if keep_origin {
            w.pools.borrow_mut().put(&hop, conn);
        }
    }
}
