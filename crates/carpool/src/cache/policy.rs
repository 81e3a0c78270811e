//! RFC 9111 decisions through `http-cache-semantics` (cacheability,
//! freshness lifetime, age, whether a stored response satisfies a request),
//! and the pieces the crate leaves to its user: the response head we store,
//! `Vary` variant keys, revalidation requests and merging a 304's fields.

use std::time::SystemTime;

use http_cache_semantics::{BeforeRequest, CacheOptions, CachePolicy};
use httpx::{Fields, ResponseHead};

use super::meta::{self, Meta};

/// Fields a stored head never keeps beyond the hop-by-hop ones: framing
/// (re-written when served), `Age` (computed when served) and an upstream
/// cache's `X-Cache` (ours says what this cache did).
const NOT_STORED: [&str; 3] = ["content-length", "age", "x-cache"];

/// Fields a 304 does not update in the stored head (RFC 9111 §3.2, plus
/// what describes the stored body itself).
const NOT_UPDATED: [&str; 4] = [
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "content-range",
];

fn is_in(list: &[&str], name: &[u8]) -> bool {
    list.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// The request as `http-cache-semantics` sees it: method, effective URI and
/// the fields (with `Host` taken from the URI, which wins over the field).
pub fn request_parts(method: &[u8], uri: &[u8], fields: &Fields) -> Option<http::request::Parts> {
    let uri: http::Uri = http::Uri::try_from(uri).ok()?;
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(method).ok()?)
        .uri(uri.clone());
    for (n, v) in fields.iter() {
        if n.eq_ignore_ascii_case(b"host") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n),
            http::HeaderValue::from_bytes(v),
        ) {
            b = b.header(n, v);
        }
    }
    if let Some(a) = uri.authority() {
        b = b.header(http::header::HOST, a.as_str());
    }
    Some(b.body(()).ok()?.into_parts().0)
}

/// A response status and head bytes (a stored head, or one from the
/// origin) as `http-cache-semantics` sees them.
pub fn response_parts(status: u16, head: &[u8]) -> Option<http::response::Parts> {
    let mut b = http::Response::builder().status(status);
    for (n, v) in meta::fields(head) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(n),
            http::HeaderValue::from_bytes(v),
        ) {
            b = b.header(n, v);
        }
    }
    Some(b.body(()).ok()?.into_parts().0)
}

/// The head we store for a response: its status line and end-to-end fields.
pub fn stored_head(resp: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::with_capacity(resp.raw().len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(resp.status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.reason());
    out.extend_from_slice(b"\r\n");
    for (n, v) in httpx::headers::end_to_end(&resp.fields) {
        if !is_in(&NOT_STORED, n) {
            httpx::headers::push_field(&mut out, n, v);
        }
    }
    out
}

/// A stored head updated by the fields of a 304 (RFC 9111 §4.3.4).
pub fn merge_304(stored: &[u8], not_modified: &ResponseHead) -> Vec<u8> {
    let fresh = stored_head(not_modified);
    let updated: Vec<(&[u8], &[u8])> = meta::fields(&fresh)
        .filter(|(n, _)| !is_in(&NOT_UPDATED, n))
        .collect();
    let status_line_end = stored
        .iter()
        .position(|&b| b == b'\n')
        .map_or(stored.len(), |i| i + 1);
    let mut out = stored[..status_line_end].to_vec();
    for (n, v) in meta::fields(stored) {
        if !updated.iter().any(|(u, _)| u.eq_ignore_ascii_case(n)) {
            httpx::headers::push_field(&mut out, n, v);
        }
    }
    for (n, v) in updated {
        httpx::headers::push_field(&mut out, n, v);
    }
    out
}

/// The options of a shared cache.
fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// What a response may become in the cache.
pub enum Verdict {
    /// Store it with this record.
    Store(Meta),
    /// Do not store it (the reason is logged at debug level).
    Pass(&'static str),
}

/// Decides whether `head` (the response to `req`) is stored, and builds its
/// record.
pub fn judge(
    req: &http::request::Parts,
    status: u16,
    head: Vec<u8>,
    response_time: SystemTime,
) -> Verdict {
    let Some(res) = response_parts(status, &head) else {
        return Verdict::Pass("response fields not representable");
    };
    let policy = CachePolicy::new_options(req, &res, response_time, options());
    if !policy.is_storable() {
        return Verdict::Pass("not storable (RFC 9111)");
    }
    let Some(vary) = vary_names(meta::fields(&head)) else {
        return Verdict::Pass("Vary: *");
    };
    let ttl = policy.time_to_live(response_time);
    let initial_age = policy.age(response_time);
    let policy_json = match serde_json::to_vec(&policy) {
        Ok(j) => j,
        Err(_) => return Verdict::Pass("policy not serializable"),
    };
    Verdict::Store(Meta {
        status,
        response_time,
        initial_age,
        ttl,
        head: head.into(),
        vary,
        policy_json: policy_json.into(),
    })
}

/// How a stored object may answer a request.
pub enum Use {
    /// As it is.
    Fresh,
    /// Only after revalidation with the origin.
    Stale,
}

/// Does the stored object satisfy this request without the origin?
pub fn usable(meta: &Meta, req: &http::request::Parts, now: SystemTime) -> Use {
    match meta.policy() {
        Some(p) => match p.before_request(req, now) {
            BeforeRequest::Fresh(_) => Use::Fresh,
            BeforeRequest::Stale { .. } => Use::Stale,
        },
        None => Use::Stale,
    }
}

/// True when the request adds conditions on freshness of its own
/// (`Cache-Control`, `Pragma`): then the full policy decides.
pub fn request_has_cache_directives(fields: &Fields) -> bool {
    fields.get("cache-control").is_some() || fields.get("pragma").is_some()
}

/// The field names a `Vary` lists (lower case, sorted, unique); `None` for `*`.
pub fn vary_names<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for (n, v) in fields {
        if !n.eq_ignore_ascii_case(b"vary") {
            continue;
        }
        for name in v.split(|&b| b == b',') {
            let name = String::from_utf8_lossy(name.trim_ascii()).to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The key of a request's variant: the URL's key plus the values of the
/// fields the responses vary on (whitespace runs folded, so equivalent
/// values share a variant).
pub fn variant_key(base: &[u8], nonce: u64, vary: &[String], fields: &Fields) -> Vec<u8> {
    let mut k = base.to_vec();
    k.extend_from_slice(format!("\nvariant {nonce:016x}").as_bytes());
    for name in vary {
        k.push(b'\n');
        k.extend_from_slice(name.as_bytes());
        k.push(b':');
        let mut first = true;
        for v in fields.get_all(name.as_str()) {
            if !first {
                k.push(b',');
            }
            first = false;
            let mut space = false;
            for &b in v.trim_ascii() {
                if b == b' ' || b == b'\t' {
                    space = true;
                    continue;
                }
                if space {
                    k.push(b' ');
                    space = false;
                }
                k.push(b);
            }
        }
    }
    k
}

/// The validators to revalidate a stored head with, as header lines:
/// `If-None-Match` from its `ETag`, `If-Modified-Since` from its
/// `Last-Modified`.
pub fn validators(meta: &Meta) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(etag) = meta.field("etag") {
        httpx::headers::push_field(&mut v, b"If-None-Match", etag);
    }
    if let Some(lm) = meta.field("last-modified") {
        httpx::headers::push_field(&mut v, b"If-Modified-Since", lm);
    }
    v
}

/// True when the client's conditional request is answered by 304 from the
/// stored head (RFC 9110 §13.2.2: If-None-Match, else If-Modified-Since).
pub fn not_modified_for(meta: &Meta, fields: &Fields) -> bool {
    if let Some(inm) = fields.get("if-none-match") {
        let Some(etag) = meta.field("etag") else {
            return false;
        };
        let etag = weak_tag(etag);
        return inm
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|t| t == b"*" || weak_tag(t) == etag);
    }
    if let Some(ims) = fields.get("if-modified-since") {
        let (Some(since), Some(lm)) = (
            httpx::date::parse(ims),
            meta.field("last-modified").and_then(httpx::date::parse),
        ) else {
            return false;
        };
        return lm <= since;
    }
    false
}

/// An entity tag without its weakness prefix (weak comparison).
fn weak_tag(t: &[u8]) -> &[u8] {
    t.strip_prefix(b"W/").unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use httpx::RequestHead;
    use std::time::Duration;

    const URL: &[u8] = b"http://h.example/a";

    fn request(fields: &str) -> RequestHead {
        let text = format!(
            "GET {} HTTP/1.1\r\nHost: h.example\r\n{fields}\r\n",
            "http://h.example/a"
        );
        httpx::head::parse_request(&mut BytesMut::from(text.as_bytes()), &Default::default())
            .unwrap()
            .unwrap()
    }

    fn response(text: &str) -> ResponseHead {
        httpx::head::parse_response(&mut BytesMut::from(text.as_bytes()), 64 * 1024)
            .unwrap()
            .unwrap()
    }

    /// The verdict on `resp` (status line and fields, without the blank
    /// line) to a GET with `req_fields`, received at `at`.
    fn verdict(req_fields: &str, resp: &str, at: SystemTime) -> Verdict {
        let req = request(req_fields);
        let parts = request_parts(b"GET", URL, &req.fields).unwrap();
        let head = response(&format!("{resp}\r\n"));
        judge(&parts, head.status, stored_head(&head), at)
    }

    fn stored(req_fields: &str, resp: &str, at: SystemTime) -> Meta {
        match verdict(req_fields, resp, at) {
            Verdict::Store(m) => m,
            Verdict::Pass(why) => panic!("not stored: {why}"),
        }
    }

    fn passes(req_fields: &str, resp: &str) -> bool {
        matches!(
            verdict(req_fields, resp, SystemTime::now()),
            Verdict::Pass(_)
        )
    }

    #[test]
    fn what_a_shared_cache_may_store() {
        let now = SystemTime::now();
        let m = stored("", "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n", now);
        assert_eq!(m.ttl, Duration::from_secs(60));
        assert!(m.is_fresh(now + Duration::from_secs(59)));
        assert!(!m.is_fresh(now + Duration::from_secs(61)));
        // s-maxage is for shared caches and wins over max-age
        let m = stored(
            "",
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60, s-maxage=5\r\n",
            now,
        );
        assert_eq!(m.ttl, Duration::from_secs(5));
        assert!(passes(
            "",
            "HTTP/1.1 200 OK\r\nCache-Control: no-store, max-age=60\r\n"
        ));
        assert!(passes(
            "",
            "HTTP/1.1 200 OK\r\nCache-Control: private, max-age=60\r\n"
        ));
        assert!(passes(
            "",
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nVary: *\r\n"
        ));
        assert!(passes(
            "Cache-Control: no-store\r\n",
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
        ));
        // an answer to a request with Authorization only when it says so
        let auth = "Authorization: Basic eDp5\r\n";
        assert!(passes(
            auth,
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
        ));
        stored(
            auth,
            "HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\n",
            now,
        );
    }

    #[test]
    fn the_stored_head_keeps_end_to_end_fields_only() {
        let head = response(
            "HTTP/1.1 200 Fine\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 5\r\nAge: 7\r\nX-Cache: HIT\r\nETag: \"e\"\r\nContent-Type: text/plain\r\n\r\n",
        );
        assert_eq!(
            String::from_utf8(stored_head(&head)).unwrap(),
            "HTTP/1.1 200 Fine\r\nETag: \"e\"\r\nContent-Type: text/plain\r\n"
        );
    }

    #[test]
    fn a_304_updates_the_stored_fields_but_not_those_of_the_body() {
        let stored = b"HTTP/1.1 200 OK\r\nETag: \"1\"\r\nContent-Encoding: gzip\r\nCache-Control: max-age=1\r\nX-Old: kept\r\n";
        let nm = response(
            "HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=600\r\nContent-Encoding: br\r\nX-New: added\r\n\r\n",
        );
        let merged = String::from_utf8(merge_304(stored, &nm)).unwrap();
        assert!(merged.starts_with("HTTP/1.1 200 OK\r\n"), "{merged}");
        assert!(
            merged.contains("Cache-Control: max-age=600\r\n") && !merged.contains("max-age=1\r"),
            "{merged}"
        );
        assert!(
            merged.contains("Content-Encoding: gzip\r\n") && !merged.contains(" br"),
            "{merged}"
        );
        assert!(
            merged.contains("X-Old: kept\r\n") && merged.contains("X-New: added\r\n"),
            "{merged}"
        );
    }

    #[test]
    fn a_request_with_its_own_directives_is_judged_by_the_policy() {
        let now = SystemTime::now();
        let m = stored("", "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n", now);
        let usable_with = |fields: &str, at: SystemTime| {
            let req = request(fields);
            assert!(request_has_cache_directives(&req.fields) != fields.is_empty());
            matches!(
                usable(&m, &request_parts(b"GET", URL, &req.fields).unwrap(), at),
                Use::Fresh
            )
        };
        assert!(usable_with("Cache-Control: max-stale\r\n", now));
        assert!(!usable_with("Cache-Control: no-cache\r\n", now));
        assert!(!usable_with("Pragma: no-cache\r\n", now));
        assert!(!usable_with(
            "Cache-Control: max-age=0\r\n",
            now + Duration::from_secs(1)
        ));
        assert!(!usable_with("Cache-Control: min-fresh=120\r\n", now));
        assert!(!usable_with(
            "Cache-Control: max-stale=1\r\n",
            now + Duration::from_secs(120)
        ));
    }

    #[test]
    fn variants_are_keyed_by_the_fields_they_vary_on() {
        let fields = [
            (&b"Vary"[..], &b"Accept-Language, accept-encoding"[..]),
            (b"vary", b"Accept-Language"),
        ];
        let names = vary_names(fields.into_iter()).unwrap();
        assert_eq!(names, ["accept-encoding", "accept-language"]);
        assert_eq!(
            vary_names([(&b"Vary"[..], &b"Accept, *"[..])].into_iter()),
            None
        );
        let key = |f: &str| variant_key(URL, 7, &names, &request(f).fields);
        // whitespace runs fold: equivalent values share a variant
        assert_eq!(
            key("Accept-Language: en,  fr\r\n"),
            key("Accept-Language:  en, fr\r\n")
        );
        assert_ne!(
            key("Accept-Language: en\r\n"),
            key("Accept-Language: fr\r\n")
        );
        assert_ne!(key("Accept-Language: en\r\n"), key(""));
        // a new marker (another nonce) never reaches older variants
        let f = request("Accept-Language: en\r\n");
        assert_ne!(
            variant_key(URL, 7, &names, &f.fields),
            variant_key(URL, 8, &names, &f.fields)
        );
    }

    #[test]
    fn validators_and_the_conditions_a_stored_object_satisfies() {
        let m = stored(
            "",
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nETag: W/\"v1\"\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n",
            SystemTime::now(),
        );
        assert_eq!(
            String::from_utf8(validators(&m)).unwrap(),
            "If-None-Match: W/\"v1\"\r\nIf-Modified-Since: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
        );
        let nm = |f: &str| not_modified_for(&m, &request(f).fields);
        assert!(nm("If-None-Match: \"v1\"\r\n"), "weak comparison");
        assert!(nm("If-None-Match: \"v0\", W/\"v1\"\r\n"));
        assert!(nm("If-None-Match: *\r\n"));
        assert!(!nm("If-None-Match: \"v2\"\r\n"));
        assert!(nm("If-Modified-Since: Thu, 01 Jan 2026 00:00:00 GMT\r\n"));
        assert!(nm("If-Modified-Since: Fri, 02 Jan 2026 00:00:00 GMT\r\n"));
        assert!(!nm("If-Modified-Since: Wed, 31 Dec 2025 00:00:00 GMT\r\n"));
        // If-None-Match wins over If-Modified-Since
        assert!(!nm(
            "If-None-Match: \"v2\"\r\nIf-Modified-Since: Fri, 02 Jan 2026 00:00:00 GMT\r\n"
        ));
        assert!(!nm(""));
    }
}
