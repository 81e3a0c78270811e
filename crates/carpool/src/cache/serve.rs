//! One client connection to the cache, as explicit phases per request:
//! read head → admit (ACL, framing, loop check) → key (effective URI, and
//! the `Vary` variant) → lookup → hit (fresh) | revalidate (stale) | miss
//! (lead or join a fill) | pass (other methods, uncacheable answers) → log.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use cache_store::{Hit, Key, Tier};
use carp::RequestUri;
use httpx::accesslog::Entry;
use httpx::conn::Conn;
use httpx::error::HttpError;
use httpx::framing::{self, BodyLen};
use httpx::head::Known;
use httpx::headers::{self};
use httpx::{RequestHead, Version};
use tokio::net::TcpStream;

use super::fill::Role;
use super::hit::{follow, serve_hit, Followed};
use super::meta::{self, Meta, Record as Stored};
use super::miss::{lead, refresh_in_background, stale_within};
use super::origin::{Hop, Timeouts};
use super::pass::{connect_tunnel, pass, purge};
use super::policy::{self, Use};
use super::{Cache, Worker};

/// Times a request re-reads the store after a fill it waited on refreshed
/// the object, before fetching alone.
const MAX_LOOKUPS: usize = 3;

/// What the access log says about one request.
pub(super) struct Record {
    pub(super) start: SystemTime,
    t0: Instant,
    pub(super) code: &'static str,
    pub(super) status: u16,
    pub(super) bytes: u64,
    pub(super) method: Vec<u8>,
    pub(super) url: Vec<u8>,
    pub(super) hierarchy: &'static str,
    pub(super) peer: String,
    pub(super) content_type: Vec<u8>,
    pub(super) reason: &'static str,
    /// Reused for the heads written on this connection.
    pub(super) head_out: Vec<u8>,
}

impl Record {
    fn new() -> Self {
        Record {
            start: SystemTime::UNIX_EPOCH,
            t0: Instant::now(),
            code: "NONE",
            status: 0,
            bytes: 0,
            method: Vec::new(),
            url: Vec::new(),
            hierarchy: "HIER_NONE",
            peer: String::new(),
            content_type: Vec::new(),
            reason: "",
            head_out: Vec::new(),
        }
    }

    fn reset(&mut self, head: &RequestHead) {
        self.start = SystemTime::now();
        self.t0 = Instant::now();
        self.code = "NONE";
        self.status = 0;
        self.bytes = 0;
        self.method.clear();
        self.method.extend_from_slice(head.method());
        self.url.clear();
        self.url.extend_from_slice(head.target());
        self.hierarchy = "HIER_NONE";
        self.peer.clear();
        self.content_type.clear();
        self.reason = "";
    }

    pub(super) fn went_to(&mut self, hop: &Hop) {
        self.hierarchy = if hop.proxy {
            "FIRSTUP_PARENT"
        } else {
            "HIER_DIRECT"
        };
        self.peer.clear();
        self.peer.push_str(hop.name());
    }

    pub(super) fn stored_type(&mut self, m: &Meta) {
        self.content_type.clear();
        self.content_type
            .extend_from_slice(m.field("content-type").unwrap_or_default());
    }

    pub(super) fn head_buffer(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.head_out);
        b.clear();
        b
    }

    pub(super) fn keep_buffer(&mut self, b: Vec<u8>) {
        if b.capacity() <= 64 * 1024 {
            self.head_out = b;
        }
    }
}

/// Keep the client connection for another request, or close it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    KeepAlive,
    Close,
}

/// Serves one client connection until it closes or must be closed.
pub async fn serve(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let cache = w.cache.clone();
    let settings = &cache.settings;
    let Some(mut conn) = crate::server::ClientConn::admit(
        stream,
        peer,
        &cache.active_clients,
        settings.max_client_connections,
        &settings.allow_clients,
        &w.stop,
    )
    .await
    else {
        return;
    };
    let client_ip = conn.ip;
    let mut rec = Record::new();
    while let Some(head) = conn.next_head(&settings.limits, &w.log).await {
        rec.reset(&head);
        let next = if conn.allowed {
            handle(&w, &mut conn.client, head, client_ip, &mut rec).await
        } else {
            rec.code = "TCP_DENIED";
            reject(
                &mut conn.client,
                &mut rec,
                HttpError::new(403, "client address not in allow_clients"),
            )
            .await
        };
        log(&w, client_ip, &rec);
        if next == Next::Close {
            return;
        }
    }
}

/// Answers with an error and closes the connection.
pub(super) async fn reject(client: &mut Conn, rec: &mut Record, e: HttpError) -> Next {
    rec.status = e.status;
    rec.reason = e.reason;
    if rec.code == "NONE" && e.status >= 500 {
        rec.code = "TCP_MISS";
    }
    rec.bytes += crate::server::send_error(client, e, true).await;
    Next::Close
}

pub(super) fn log(w: &Worker, client: IpAddr, rec: &Record) {
    w.log.borrow_mut().log(&Entry {
        start: rec.start,
        elapsed: rec.t0.elapsed(),
        client,
        code: rec.code,
        status: rec.status,
        bytes: rec.bytes,
        method: &rec.method,
        url: &rec.url,
        hierarchy: rec.hierarchy,
        peer: if rec.peer.is_empty() { "-" } else { &rec.peer },
        content_type: &rec.content_type,
        reason: rec.reason,
    });
}

/// One request: admit, then the cached path, PURGE, CONNECT or pass.
pub(super) async fn handle(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: RequestHead,
    client_ip: IpAddr,
    rec: &mut Record,
) -> Next {
    let cache = &w.cache;
    let body = match framing::request_body(&head) {
        Ok(b) => b,
        Err(e) => return reject(client, rec, e).await,
    };
    if headers::via_has(&head.fields, &cache.via_name) {
        return reject(
            client,
            rec,
            HttpError::new(508, "forwarding loop: our Via is already in the request"),
        )
        .await;
    }
    let is_connect = head.method() == b"CONNECT";
    let uri = match target_uri(&head, is_connect) {
        Ok(u) => u,
        Err(e) => return reject(client, rec, e).await,
    };
    rec.url.clear();
    rec.url.extend_from_slice(uri.effective());
    if is_connect {
        if !cache.settings.connect_ports.contains(&uri.port()) {
            rec.code = "TCP_DENIED";
            return reject(
                client,
                rec,
                HttpError::new(403, "CONNECT to a port not in connect_ports"),
            )
            .await;
        }
        return connect_tunnel(w, client, &uri, rec).await;
    }
    if uri.scheme() != b"http" {
        return reject(
            client,
            rec,
            HttpError::new(501, "unsupported URL scheme (https goes through CONNECT)"),
        )
        .await;
    }
    if head.fields.get(Known::Expect).is_some() && body == BodyLen::Empty {
        // nothing to continue: ignore
    } else if head.fields.get(Known::Expect).is_some()
        && !(head.version == Version::Http11
            && head.fields.has_token(Known::Expect, "100-continue"))
    {
        return reject(client, rec, HttpError::new(417, "unsupported expectation")).await;
    }
    match head.method() {
        b"PURGE" => purge(w, client, &head, &uri, client_ip, rec).await,
        b"GET" | b"HEAD" if body == BodyLen::Empty => {
            cached(w, client, &head, &uri, client_ip, rec).await
        }
        _ => pass(w, client, &head, body, &uri, client_ip, rec).await,
    }
}

/// The effective URI: absolute-form, or `Host` + origin-form, or
/// `host:port` (CONNECT).
pub(super) fn target_uri(head: &RequestHead, is_connect: bool) -> Result<RequestUri, HttpError> {
    let target = head.target();
    let built;
    let target = if !is_connect && target.first() == Some(&b'/') {
        let host = head
            .fields
            .get(Known::Host)
            .filter(|h| !h.is_empty())
            .ok_or(HttpError::new(400, "origin-form request without Host"))?;
        built = [b"http://".as_slice(), host, target].concat();
        &built[..]
    } else {
        target
    };
    carp::normalize::normalize_target(head.method(), target)
        .map_err(|(status, reason)| HttpError::new(status, reason))
}

pub(super) fn timeouts(cache: &Cache) -> Timeouts {
    Timeouts {
        connect: cache.settings.origin_connect_timeout,
        first_byte: cache.settings.origin_first_byte_timeout,
    }
}

/// What the lookup found for a request.
pub(super) struct Found {
    /// The variant's key when the URL has a `Vary` marker (else the object
    /// lives under the URL's own key: see [`Found::key`]).
    pub(super) variant: Option<Vec<u8>>,
    /// The URL's `Vary` marker (fields, nonce), when it has one.
    pub(super) vary: Option<(Vec<String>, u64)>,
    /// The stored object.
    pub(super) object: Option<(Hit, Meta)>,
}

impl Found {
    /// The key the object lives (or would live) under; `base` is the URL's.
    pub(super) fn key<'a>(&'a self, base: &'a [u8]) -> &'a [u8] {
        self.variant.as_deref().unwrap_or(base)
    }
}

pub(super) fn lookup(cache: &Cache, base: &[u8], head: &RequestHead) -> Found {
    let mut found = Found {
        variant: None,
        vary: None,
        object: None,
    };
    let Some(hit) = cache.store.lookup(Key::of(base), base) else {
        return found;
    };
    match meta::decode(&hit.meta) {
        Some(Stored::Object(m)) => found.object = Some((hit, m)),
        Some(Stored::Vary { names, nonce }) => {
            let key = policy::variant_key(base, nonce, &names, &head.fields);
            if let Some(h) = cache.store.lookup(Key::of(&key), &key) {
                if let Some(Stored::Object(m)) = meta::decode(&h.meta) {
                    found.object = Some((h, m));
                }
            }
            found.variant = Some(key);
            found.vary = Some((names, nonce));
        }
        None => {
            tracing::warn!(key = %String::from_utf8_lossy(base), "unreadable stored record: dropped");
            cache.store.remove(Key::of(base), base);
        }
    }
    found
}

/// GET and HEAD: from the store when it can answer, else through a fill.
pub(super) async fn cached(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    uri: &RequestUri,
    client_ip: IpAddr,
    rec: &mut Record,
) -> Next {
    let cache = &w.cache;
    let base = uri.effective();
    let only_if_cached = head.fields.get_all("cache-control").any(|v| {
        v.windows(14)
            .any(|x| x.eq_ignore_ascii_case(b"only-if-cached"))
    });
    let req_parts = || policy::request_parts(head.method(), base, &head.fields);
    for _ in 0..MAX_LOOKUPS {
        let now = SystemTime::now();
        let found = lookup(cache, base, head);
        let fresh = match &found.object {
            None => false,
            Some((_, m)) if !policy::request_has_cache_directives(&head.fields) => m.is_fresh(now),
            Some((_, m)) => match req_parts() {
                Some(r) => matches!(policy::usable(m, &r, now), Use::Fresh),
                None => false,
            },
        };
        if fresh {
            if let Some((hit, m)) = &found.object {
                let code = match hit.tier {
                    Tier::Memory => "TCP_MEM_HIT",
                    Tier::Disk => "TCP_HIT",
                };
                return serve_hit(w, client, head, &hit.body, m, now, code, "HIT", rec).await;
            }
        }
        if let Some((hit, m)) = &found.object {
            if !policy::request_has_cache_directives(&head.fields)
                && stale_within(m, "stale-while-revalidate")
            {
                let answer = serve_hit(
                    w,
                    client,
                    head,
                    &hit.body,
                    m,
                    now,
                    "TCP_STALE_HIT",
                    "HIT",
                    rec,
                )
                .await;
                refresh_in_background(w, head, uri, found, client_ip);
                return answer;
            }
        }
        if only_if_cached {
            return reject(
                client,
                rec,
                HttpError::new(504, "only-if-cached and no fresh stored response"),
            )
            .await;
        }
        match cache.inflight.claim(found.key(base)) {
            Role::Lead(leader) => {
                return lead(w, client, head, uri, found, leader, client_ip, rec).await;
            }
            Role::Join(rx) => {
                let code = if found.object.is_some() {
                    "TCP_REFRESH_MODIFIED"
                } else {
                    "TCP_MISS"
                };
                match follow(w, client, head, rx, code, "MISS", rec).await {
                    Followed::Done(next) => return next,
                    Followed::Again => continue,
                    Followed::Alone => break,
                }
            }
        }
    }
    // The fill we waited for was not shared: fetch for this client alone.
    pass(w, client, head, BodyLen::Empty, uri, client_ip, rec).await
}
