//! URL normalization and the CARP key (`carp::normalize`): the target of
//! every request the frontend routes (`normalize_target`), and the request
//! lines of `carpool route` / Squid mode (`parse_input`).
//!
//! Input: one byte choosing the method, then the target (or line).
//!
//! Properties:
//! - the result's parts (scheme, host, path) lie inside the effective URI,
//!   in that order, and the port is 1–65535 (0 for a URN);
//! - normalization is idempotent: the effective URI normalizes to itself
//!   (the frontend hashes it, and a cache behind it normalizes it again);
//! - a line `carpool route` routes normalizes, as a request target of
//!   the proxy, to what it routed, and so does its effective URI as a line;
//! - every `carp-key` selection of it is built without a panic, and one
//!   with the host holds the host.
#![no_main]

use carp::normalize::{normalize_target, parse_input, Outcome};
use carp::{KeySpec, RequestUri};
use libfuzzer_sys::fuzz_target;

const METHODS: [&[u8]; 8] = [
    b"GET", b"HEAD", b"POST", b"CONNECT", b"OPTIONS", b"PUT", b"PURGE", b"get",
];

fuzz_target!(|data: &[u8]| {
    let [m, target @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*m) % METHODS.len()];
    // `OPTIONS *` stands for Squid's `http://*`, which is no URL
    let url = Some(target).filter(|t| *t != b"*");
    if let Some(Ok(uri)) = url.map(|t| normalize_target(method, t)) {
        check_parts(&uri);
        let again = normalize_target(method, uri.effective());
        assert_eq!(
            again.as_ref(),
            Ok(&uri),
            "not idempotent: {:?} -> {:?}",
            String::from_utf8_lossy(target),
            uri.effective_uri()
        );
        keys(&uri);
    }
    if *m & 0x80 != 0 {
        if let Outcome::Route(uri) = parse_input(target) {
            check_parts(&uri);
            keys(&uri);
            let method: &[u8] = if uri.is_authority_form() {
                b"CONNECT"
            } else {
                b"GET"
            };
            // Squid routes a host in brackets that is no IPv6 address
            // without its brackets (`[1000:d:1]:8443` -> `1000:d:1:8443`),
            // which names another host when parsed again: a proxy refuses
            // it, `carpool route` keeps Squid's key
            if !reads_back(uri.host()) {
                return;
            }
            assert_eq!(
                normalize_target(method, uri.effective()).as_ref(),
                Ok(&uri),
                "routed line {:?} -> {:?} is not a fixed point",
                String::from_utf8_lossy(target),
                uri.effective_uri()
            );
            // (an authority-form URI as a line of its own: with its method,
            // since Squid takes a host with a `/` in it, `CONNECT /h:443`)
            let line = if uri.is_authority_form() {
                [&b"CONNECT "[..], uri.effective(), b" HTTP/1.1"].concat()
            } else {
                uri.effective().to_vec()
            };
            // (a line loses the blanks around its target, and a host or a
            // path may start or end with VT or FF, which Squid keeps)
            let blank = |b: &u8| b" \t\x0b\x0c\r".contains(b);
            let e = uri.effective();
            if e.first().is_some_and(blank) || e.last().is_some_and(blank) {
                return;
            }
            assert_eq!(
                parse_input(&line),
                Outcome::Route(uri.clone()),
                "routed line {:?}",
                String::from_utf8_lossy(target)
            );
        }
    }
});

/// A host that Squid's text of reads back as itself: not empty, shorter
/// than 255 bytes, without `:` or brackets, or an IPv6 address (all that
/// is ever in brackets) in brackets.
fn reads_back(host: &[u8]) -> bool {
    let bracket = |b: &u8| matches!(b, b'[' | b']');
    match host {
        // Squid cuts a name to 255 bytes: then it may end in a dot
        [] => false,
        _ if host.len() >= 255 => false,
        [b'[', inner @ .., b']'] => !inner.is_empty() && !inner.iter().any(bracket),
        _ => !host.iter().any(|b| *b == b':' || bracket(b)),
    }
}

fn check_parts(uri: &RequestUri) {
    let text = uri.effective();
    let within = |part: &[u8]| {
        let (start, end) = (text.as_ptr() as usize, text.as_ptr() as usize + text.len());
        let p = part.as_ptr() as usize;
        assert!(part.is_empty() || (p >= start && p + part.len() <= end));
    };
    within(uri.scheme());
    within(uri.host());
    within(uri.path_and_query());
    // a URN has no port (Squid's port 0); it routes by its resolver URL
    assert!(uri.port() >= 1 || uri.scheme() == b"urn");
    if uri.is_authority_form() {
        assert!(uri.scheme().is_empty() && uri.path_and_query().is_empty());
        assert!(text.starts_with(uri.host()));
    } else {
        assert!(text.starts_with(uri.scheme()));
        assert!(text.ends_with(uri.path_and_query()));
    }
    // (a URN's NID is kept as sent)
    assert!(
        uri.scheme() == b"urn" || !uri.host().iter().any(u8::is_ascii_uppercase),
        "host not lowercased: {:?}",
        uri.effective_uri()
    );
}

fn keys(uri: &RequestUri) {
    assert_eq!(uri.key(None), uri.effective());
    for bits in 1..32u8 {
        let spec = KeySpec {
            scheme: bits & 1 != 0,
            host: bits & 2 != 0,
            port: bits & 4 != 0,
            path: bits & 8 != 0,
            params: bits & 16 != 0,
        };
        let key = uri.key(Some(&spec));
        assert!(!key.is_empty());
        if spec.host {
            assert!(
                key.windows(uri.host().len().max(1))
                    .any(|w| w == uri.host())
                    || uri.host().is_empty()
            );
        }
    }
}
