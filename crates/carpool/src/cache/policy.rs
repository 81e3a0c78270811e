//! The heads and keys around RFC 9111's decisions (those are `freshness`):
//! the response head a cache judges and stores, `Vary` variant keys,
//! revalidation requests, merging a 304's fields, and the client
//! conditionals a stored head answers.

use httpx::{Fields, ResponseHead};

use super::meta::{self, Meta};

/// Fields a response head loses before it is judged, beyond the hop-by-hop
/// ones: framing (re-written when served) and an upstream cache's
/// `X-Cache` (ours says what this cache did). `Age` is judged, then dropped
/// ([`super::freshness::judge`]): it is computed when served.
const NOT_STORED: [&str; 2] = ["content-length", "x-cache"];

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

/// The head of a response as it is judged, then stored: its status line
/// and end-to-end fields (`Age` still in).
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

/// `head` (a status line and fields) without the fields named in `names`.
pub fn without_fields(head: &[u8], names: &[&[u8]]) -> Vec<u8> {
    let status_line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |i| i + 1);
    let mut out = head[..status_line_end].to_vec();
    for (n, v) in meta::fields(head) {
        if !names.iter().any(|x| x.eq_ignore_ascii_case(n)) {
            httpx::headers::push_field(&mut out, n, v);
        }
    }
    out
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
        // without Last-Modified, the stored response's Date stands in (RFC
        // 9111 §4.3.2): it was current then
        let validator = meta.field("last-modified").or_else(|| meta.field("date"));
        let (Some(since), Some(lm)) = (
            httpx::date::parse(ims),
            validator.and_then(httpx::date::parse),
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
    use crate::cache::freshness;
    use bytes::BytesMut;
    use httpx::RequestHead;
    use std::time::SystemTime;

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

    /// `resp` (status line and fields, without the blank line) stored as
    /// the answer to a plain GET received now.
    fn stored(resp: &str) -> Meta {
        let head = response(&format!("{resp}\r\n"));
        let now = SystemTime::now();
        let at = freshness::Exchange {
            request_time: now,
            response_time: now,
        };
        let rules = freshness::Rules::default();
        match freshness::judge(
            &rules,
            b"http://h.example/a",
            &request("").fields,
            head.status,
            stored_head(&head),
            at,
        ) {
            freshness::Verdict::Store(m) => m,
            freshness::Verdict::Pass(why) => panic!("not stored: {why}"),
        }
    }

    #[test]
    fn the_stored_head_keeps_end_to_end_fields_only() {
        let head = response(
            "HTTP/1.1 200 Fine\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 5\r\nAge: 7\r\nX-Cache: HIT\r\nETag: \"e\"\r\nContent-Type: text/plain\r\n\r\n",
        );
        assert_eq!(
            String::from_utf8(stored_head(&head)).unwrap(),
            "HTTP/1.1 200 Fine\r\nAge: 7\r\nETag: \"e\"\r\nContent-Type: text/plain\r\n"
        );
        assert_eq!(
            String::from_utf8(without_fields(&stored_head(&head), &[b"age", b"ETAG"])).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\n"
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
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nETag: W/\"v1\"\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n",
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
        // no Last-Modified: its Date is the validator
        let m = stored(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\n",
        );
        let nm = |f: &str| not_modified_for(&m, &request(f).fields);
        assert!(nm("If-Modified-Since: Thu, 01 Jan 2026 00:00:00 GMT\r\n"));
        assert!(!nm("If-Modified-Since: Wed, 31 Dec 2025 00:00:00 GMT\r\n"));
    }
}
