//! Misses and revalidations: the leader's request to the origin, the
//! RFC 9111 verdict on the answer, storing it (under its `Vary` variant key
//! when it varies) while the followers stream it, `stale-if-error` and
//! `stale-while-revalidate`.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::SystemTime;

use cache_store::Key;
use carp::RequestUri;
use httpx::body::Decoder;
use httpx::conn::Conn;
use httpx::error::HttpError;
use httpx::framing::{self, BodyLen};
use httpx::headers::{self};
use httpx::RequestHead;
use tokio::sync::watch;

use super::fill::{End, Leader, Progress, Role};
use super::hit::{follow, serve_hit, Followed};
use super::meta::{self, Meta};
use super::origin::{self, Hop, Outgoing};
use super::pass::relay_response;
use super::policy::{self, Verdict};
use super::serve::{reject, timeouts, Found, Next, Record};
use super::{Cache, Worker};

/// What starting a fill came to.
pub(super) enum Filled {
    /// The origin said 304: the stored record was refreshed (this is it).
    Refreshed(Meta),
    /// The body is being stored: follow the fill.
    Filling(watch::Receiver<Progress>),
    /// Not stored: this response goes to the one client as it is.
    Pass(origin::Response, BodyLen),
    /// The origin could not be reached or broke before a usable head.
    Failed(HttpError),
}

/// The leader's work up to the body: the (conditional, when an object is
/// stored) request to the origin, the RFC 9111 verdict on the answer, and
/// for a stored answer the writer and the task that fills it.
pub(super) async fn start_fill(
    w: &Rc<Worker>,
    head: &RequestHead,
    uri: &RequestUri,
    found: &Found,
    leader: Leader,
    client_ip: IpAddr,
) -> Filled {
    let cache = &w.cache;
    let hop = Hop::for_uri(uri, cache.upstream.as_ref());
    let extra = found
        .object
        .as_ref()
        .map(|(_, m)| policy::validators(m))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(512);
    origin::write_head(
        &mut out,
        &hop,
        &Outgoing {
            method: b"GET",
            uri,
            client: head,
            body: BodyLen::Empty,
            fill: true,
            extra: &extra,
            via: &cache.via,
            client_ip,
        },
    );
    let mut resp = match origin::exchange(&w.pools, &hop, &out, timeouts(cache)).await {
        Ok(r) => r,
        Err(f) => {
            tracing::info!(
                origin = hop.name(),
                reason = f.error.reason,
                "origin request failed"
            );
            return Filled::Failed(f.error);
        }
    };
    // interim responses are not forwarded on a fill
    while resp.head.status < 200 && resp.head.status != 101 {
        match resp
            .conn
            .read_response_head(
                cache.settings.origin_first_byte_timeout,
                origin::MAX_RESPONSE_HEAD,
            )
            .await
        {
            Ok(Some(h)) => resp.head = h,
            _ => {
                return Filled::Failed(HttpError::new(
                    502,
                    "origin broke after an interim response",
                ))
            }
        }
    }
    if resp.head.status == 101 {
        return Filled::Failed(HttpError::new(502, "origin switched protocols on a GET"));
    }
    let response_time = SystemTime::now();
    let req_parts = policy::request_parts(b"GET", uri.effective(), &head.fields);
    if let (Some((_, m)), 304) = (&found.object, resp.head.status) {
        let merged = policy::merge_304(&m.head, &resp.head);
        if headers::server_keep_alive(&resp.head) {
            w.pools.borrow_mut().put(&hop, resp.conn);
        }
        let refreshed =
            req_parts.and_then(
                |r| match policy::judge(&r, m.status, merged, response_time) {
                    Verdict::Store(n) => Some(n),
                    Verdict::Pass(_) => None,
                },
            );
        let skey = found.key(uri.effective());
        let key = Key::of(skey);
        let m2 = match refreshed {
            Some(n) => {
                let version = found.object.as_ref().map_or(0, |(h, _)| h.version);
                // only the version we revalidated: a newer object stored
                // meanwhile keeps its own headers
                match cache.store.update_meta_if(key, skey, version, &n.encode()) {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!("stored object replaced during revalidation"),
                    Err(e) => tracing::warn!(error = %e, "cannot refresh a stored record"),
                }
                n
            }
            None => {
                cache.store.remove(key, skey);
                m.clone()
            }
        };
        leader.end(End::Refreshed);
        return Filled::Refreshed(m2);
    }
    let len = match framing::response_body(b"GET", &resp.head) {
        Ok(l) => l,
        Err(e) => return Filled::Failed(e),
    };
    let known_len = match len {
        BodyLen::Length(n) => Some(n),
        BodyLen::Empty => Some(0),
        _ => None,
    };
    let verdict = match req_parts {
        None => Verdict::Pass("request not representable for RFC 9111 rules"),
        Some(_) if known_len.is_some_and(|n| n > cache.settings.max_object_size) => {
            Verdict::Pass("larger than max_object_size")
        }
        Some(r) => policy::judge(
            &r,
            resp.head.status,
            policy::stored_head(&resp.head),
            response_time,
        ),
    };
    let meta = match verdict {
        Verdict::Store(m) => m,
        Verdict::Pass(why) => {
            tracing::debug!(url = %String::from_utf8_lossy(uri.effective()), why, "not stored");
            leader.end(End::Pass);
            if found.object.is_some() {
                let skey = found.key(uri.effective());
                cache.store.remove(Key::of(skey), skey);
            }
            return Filled::Pass(resp, len);
        }
    };
    let key = storage_key(cache, uri, head, found, &meta);
    let writer = match cache
        .store
        .begin(Key::of(&key), &key, &meta.encode(), known_len)
    {
        Ok(wr) => wr,
        Err(e) => {
            tracing::warn!(error = %e, "cannot store an object: passing it through");
            leader.end(End::Pass);
            return Filled::Pass(resp, len);
        }
    };
    let rx = leader.subscribe();
    leader.head(meta, writer.reader(), known_len);
    let keep_origin = headers::server_keep_alive(&resp.head) && len != BodyLen::UntilClose;
    tokio::task::spawn_local(fill_body(
        w.clone(),
        resp.conn,
        hop,
        keep_origin,
        len,
        writer,
        leader,
    ));
    Filled::Filling(rx)
}

/// Where a response is stored: the URL's own key, or, when it varies, the
/// key of the request's variant (writing the URL's `Vary` marker first when
/// it has none, or one naming other fields).
pub(super) fn storage_key(
    cache: &Cache,
    uri: &RequestUri,
    head: &RequestHead,
    found: &Found,
    meta: &Meta,
) -> Vec<u8> {
    let base = uri.effective();
    if meta.vary.is_empty() {
        return base.to_vec();
    }
    let nonce = match &found.vary {
        Some((names, nonce)) if *names == meta.vary => *nonce,
        _ => {
            let nonce = rand::random::<u64>();
            let marker = meta::encode_vary(&meta.vary, nonce);
            let stored = cache
                .store
                .begin(Key::of(base), base, &marker, Some(0))
                .and_then(|wr| wr.finish());
            if let Err(e) = stored {
                tracing::warn!(error = %e, "cannot store a Vary marker");
            }
            nonce
        }
    };
    policy::variant_key(base, nonce, &meta.vary, &head.fields)
}

/// The leader of a fill with a client: start the fill, then answer like a
/// follower (or from the refreshed record, or pass the answer through).
#[allow(clippy::too_many_arguments)]
pub(super) async fn lead(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    uri: &RequestUri,
    found: Found,
    leader: Leader,
    client_ip: IpAddr,
    rec: &mut Record,
) -> Next {
    let hop = Hop::for_uri(uri, w.cache.upstream.as_ref());
    rec.went_to(&hop);
    let (code, x_cache) = if found.object.is_some() {
        ("TCP_REFRESH_MODIFIED", "REFRESH")
    } else {
        ("TCP_MISS", "MISS")
    };
    match start_fill(w, head, uri, &found, leader, client_ip).await {
        Filled::Refreshed(m) => {
            let Some((hit, _)) = &found.object else {
                return reject(
                    client,
                    rec,
                    HttpError::new(502, "304 without a stored object"),
                )
                .await;
            };
            serve_hit(
                w,
                client,
                head,
                &hit.body,
                &m,
                SystemTime::now(),
                "TCP_REFRESH_UNMODIFIED",
                "REFRESH",
                rec,
            )
            .await
        }
        Filled::Filling(rx) => match follow(w, client, head, rx, code, x_cache, rec).await {
            Followed::Done(next) => next,
            Followed::Again | Followed::Alone => {
                reject(
                    client,
                    rec,
                    HttpError::new(502, "origin broke during the response"),
                )
                .await
            }
        },
        Filled::Pass(resp, len) => {
            rec.code = code;
            relay_response(w, client, head, resp, len, &hop, x_cache, rec).await
        }
        Filled::Failed(e) => {
            if let Some((hit, m)) = &found.object {
                if stale_within(m, "stale-if-error") {
                    tracing::info!(url = %String::from_utf8_lossy(uri.effective()), reason = e.reason, "origin failed: serving stale (stale-if-error)");
                    return serve_hit(
                        w,
                        client,
                        head,
                        &hit.body,
                        m,
                        SystemTime::now(),
                        "TCP_REFRESH_FAIL_OLD",
                        "HIT",
                        rec,
                    )
                    .await;
                }
            }
            rec.code = "TCP_MISS";
            reject(client, rec, e).await
        }
    }
}

/// Revalidates (or refetches) an object in the background, for a client
/// that was answered stale within `stale-while-revalidate`.
pub(super) fn refresh_in_background(
    w: &Rc<Worker>,
    head: &RequestHead,
    uri: &RequestUri,
    found: Found,
    client_ip: IpAddr,
) {
    let Role::Lead(leader) = w.cache.inflight.claim(found.key(uri.effective())) else {
        return; // a fill of this key is already running
    };
    let (w, head, uri) = (w.clone(), head.clone(), uri.clone());
    tokio::task::spawn_local(async move {
        match start_fill(&w, &head, &uri, &found, leader, client_ip).await {
            Filled::Failed(e) => {
                tracing::info!(url = %String::from_utf8_lossy(uri.effective()), reason = e.reason, "background revalidation failed");
            }
            Filled::Refreshed(_) | Filled::Filling(_) | Filled::Pass(..) => {}
        }
    });
}

/// True when the stored response is stale by less than its `directive`
/// window (`stale-if-error` or `stale-while-revalidate`, RFC 5861).
pub(super) fn stale_within(m: &Meta, directive: &str) -> bool {
    let Some(window) = directive_secs(m, directive) else {
        return false;
    };
    let resident = SystemTime::now()
        .duration_since(m.response_time)
        .unwrap_or_default();
    resident < m.ttl + std::time::Duration::from_secs(window)
}

/// The seconds of a `Cache-Control` directive of the stored response.
pub(super) fn directive_secs(m: &Meta, name: &str) -> Option<u64> {
    meta::fields(&m.head)
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"cache-control"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .find_map(|d| {
            let d = std::str::from_utf8(d).ok()?.trim();
            let (k, v) = d.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().trim_matches('"').parse().ok())?
        })
}

/// Reads the origin's body into the store, announcing progress to the
/// fill's followers; runs on its own so that a client going away does not
/// stop the object from being stored for the others.
pub(super) async fn fill_body(
    w: Rc<Worker>,
    mut conn: Conn,
    hop: Hop,
    keep_origin: bool,
    len: BodyLen,
    mut writer: cache_store::Writer,
    leader: Leader,
) {
    let idle = w.cache.settings.body_idle_timeout;
    let on_disk = w.cache.settings.dir.is_some();
    let mut dec = Decoder::new(len);
    loop {
        match dec.next(&mut conn, idle).await {
            Ok(Some(piece)) => {
                let appended = if on_disk {
                    // off the event loop: a slow or throttled disk stalls
                    // this fill only, not the worker's other connections
                    match tokio::task::spawn_blocking(move || {
                        let r = writer.append(&piece);
                        (writer, r)
                    })
                    .await
                    {
                        Ok((wr, r)) => {
                            writer = wr;
                            r
                        }
                        Err(_) => {
                            leader.end(End::Failed);
                            return;
                        }
                    }
                } else {
                    writer.append(&piece)
                };
                if let Err(e) = appended {
                    tracing::warn!(error = %e, "storing an object failed");
                    writer.abort();
                    leader.end(End::Failed);
                    return;
                }
                if dec.is_done() {
                    // the last bytes are announced once the object is
                    // published: a client that has the whole body finds
                    // the object stored when it asks again
                    break;
                }
                leader.progress(writer.written());
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(origin = hop.name(), error = %e, "origin body cut short");
                writer.abort();
                leader.end(End::Failed);
                return;
            }
        }
    }
    let written = writer.written();
    let finished = if on_disk {
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap_or(Ok(()))
    } else {
        writer.finish()
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
