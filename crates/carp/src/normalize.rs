//! Request-line parsing and URL normalization, exactly as Squid 5.7 (Debian
//! 5.7-2+deb12u6, default `squid.conf` settings) does before it hashes a URL.
//!
//! Squid hashes its *effective request URI*: the URL re-printed from its parsed
//! parts, `host:port` for CONNECT. The rules below were read from Squid 5.7's
//! source and checked against a running Squid 5.7 (`scripts/squid-vectors`,
//! `testdata/squid/`). Each rule with an example `input → key`:
//!
//! **Request line** (relaxed parser, on by default)
//! - method: 1–32 token characters, matched case-insensitively
//!   (`get http://h/ HTTP/1.1` is a GET); then one or more of SP, HTAB, VT, FF, CR.
//! - version: a trailing `HTTP/1.1`, `HTTP/1.0` or `HTTP/d.d` (exact case), after
//!   one or more delimiters. Without one, a GET is HTTP/0.9 and everything after
//!   the method is the URI (`GET http://h/a http/1.1` → `http://h/ahttp/1.1`);
//!   any other method is refused with 400. Before an explicit `HTTP/0.9` the
//!   delimiters stay part of the URI (a SP there triggers whitespace stripping:
//!   `GET http://h/a\x0bb HTTP/0.9` → `http://h/ab`).
//! - the URI may hold spaces, tabs, VT, FF and CR (see whitespace below), URI
//!   characters, the "unwise" `"<>\\^`{|}` and bytes ≥ 0x80 (Squid is built with
//!   HTTP violations allowed, the default); any other control byte or DEL → 400.
//! - a URI over 65,535 bytes → 414; a request line of 65,536 bytes or more
//!   (HTTP/1.x) → 431; HTTP/2+ or HTTP/0.x other than 0.9 → 505;
//!   method `PRI` → 405.
//!
//! **URL** (`AnyP::Uri::parse`)
//! - longer than 8,191 bytes → 400 (request lines; [`normalize_target`],
//!   for a proxy with a limit of its own, has none).
//! - scheme: letters, digits, `+ - .`, up to 16, starting with a letter, then
//!   `:`; known schemes print lowercase (`HTTP://h/` → `http://h/`), unknown ones
//!   as sent. Then `//` is required (`http:/h` → 400). No scheme (`/p`, `h/p`) → 400.
//! - host: up to the first `/ ? #` or whitespace; lowercased (ASCII only);
//!   userinfo before the last `@` dropped (`http://u:p@H/` → `http://h/`),
//!   except for ftp and unknown schemes, where it is kept, unescaped and
//!   re-escaped; brackets stripped from IPv6; all trailing dots removed
//!   (`http://h.example../` → `http://h.example/`); a leading dot or `..` inside
//!   → 400; empty host → 400. Other odd characters (`_`, `!`, bytes ≥ 0x80 in
//!   CONNECT) are accepted (check_hostnames is off by default).
//! - IP literals are re-printed: `http://127.1/` → `http://127.0.0.1/`,
//!   `http://[2001:DB8:0::1]/` → `http://[2001:db8::1]/`,
//!   `http://[::ffff:1.2.3.4]/` → `http://1.2.3.4/` (see [`crate::ip`]).
//! - port: digits after the last `:` (only when the host has exactly one `:`,
//!   or after `]`), read like C `atoi` (`:0080` → 80, `:80abc` → 80); the
//!   scheme's default port is not printed (`http://h:80/` → `http://h/`); 0,
//!   empty (`http://h:/`) or above 65535 → 400; unknown schemes have no
//!   default port, so they need one.
//! - path: everything from the first `/`; if the host ended at `?` or `#` or the
//!   end, a `/` is put in front (`http://h?x` → `http://h/?x`,
//!   `http://h` → `http://h/`). Fragments stay (`#f` is hashed), percent-escapes
//!   are left exactly as sent (`%2f` ≠ `%2F`), dot segments are not resolved,
//!   bytes ≥ 0x80 are kept raw. The URL ends at the first CR or LF: the path
//!   is copied up to it (`/a\rb` → `/a`; a host ending at a CR leaves the
//!   path `/`). Whitespace (`uri_whitespace strip`): only when the path so
//!   cut holds SP or HTAB, every C `isspace` byte is removed (`/a b` →
//!   `/ab`); VT or FF alone stay (`/a\x0bb` and `/a\x0cb\rc d` are hashed as
//!   `/a\x0bb` and `/a\x0cb`).
//! - host names longer than 255 bytes are cut to 255 (Squid's host buffer).
//! - CONNECT: `host:port` or `[v6]:port`; no port (or an unparsable one) means
//!   443; the key is `host:port` with the port always printed.
//!
//! **Requests Squid answers itself** (no parent): `OPTIONS *` / `TRACE *` → 501;
//! a method the scheme does not support (e.g. POST to ftp, anything to an
//! unknown scheme) → 501; `PURGE` → 403 (it is enabled only by an ACL naming
//! it); `/squid-internal-static/` paths and origin-form `/squid-internal-…`
//! targets are served locally; `cache_object://host/action` is the cache
//! manager (local, or 404 for an unknown action).
//!
//! **URNs**: `urn:NID:NSS` is resolved by fetching
//! `http://NID/uri-res/N2L?urn:NID:NSS`, and that URL is what CARP routes
//! (`GET urn:ISBN:1 2` → `http://isbn/uri-res/N2L?urn:ISBN:12`).

use crate::ip;
use crate::uri::PortText;
use crate::RequestUri;

/// What Squid does with a request line before contacting any parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It is routed by CARP with this effective URI.
    Route(RequestUri),
    /// Squid refuses it with this status; no parent is contacted.
    Reject {
        /// HTTP status code.
        status: u16,
        /// Why, in a few words.
        reason: &'static str,
    },
    /// Squid answers it itself (internal objects, cache manager, URNs).
    Local {
        /// Why, in a few words.
        reason: &'static str,
    },
}

/// The few methods whose identity changes how Squid treats a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET (the only method allowed as HTTP/0.9)
    Get,
    /// HEAD
    Head,
    /// PUT
    Put,
    /// CONNECT: the target is `host:port`
    Connect,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PRI (HTTP/2 preface; refused in HTTP/1)
    Pri,
    /// Any other method.
    Other,
}

impl Method {
    /// Classifies a method token case-insensitively (Squid's relaxed parser).
    pub fn classify(token: &[u8]) -> Method {
        const NAMES: [(&[u8], Method); 7] = [
            (b"GET", Method::Get),
            (b"HEAD", Method::Head),
            (b"PUT", Method::Put),
            (b"CONNECT", Method::Connect),
            (b"OPTIONS", Method::Options),
            (b"TRACE", Method::Trace),
            (b"PRI", Method::Pri),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(token))
            .map_or(Method::Other, |&(_, m)| m)
    }
}

/// Longest URL Squid parses (MAX_URL − 1).
const MAX_URL_LEN: usize = 8191;
/// Longest request-target the request-line parser accepts.
const MAX_URI_FIELD: usize = 65535;
/// request_header_max_size (64 KB): request line + headers.
const MAX_HEADER_BLOCK: usize = 65536;

/// A byte class as a 256-entry table (the parser's hot loops test bytes against these).
struct Class([bool; 256]);

impl Class {
    const fn new(alnum: bool, extra: &[u8]) -> Class {
        let mut t = [false; 256];
        let mut i = 0;
        while i < extra.len() {
            t[extra[i] as usize] = true;
            i += 1;
        }
        if alnum {
            let mut c = 0;
            while c < 256 {
                let b = c as u8;
                if b.is_ascii_alphanumeric() {
                    t[c] = true;
                }
                c += 1;
            }
        }
        Class(t)
    }

    #[inline]
    fn has(&self, b: u8) -> bool {
        self.0[b as usize]
    }
}

/// RFC 9110 token characters.
static TCHAR: Class = Class::new(true, b"!#$%&'*+-.^_`|~");
/// SP, HTAB, VT, FF, CR: the relaxed parser's field delimiters.
static DELIM: Class = Class::new(false, b" \t\x0b\x0c\r");
/// C `isspace` in the C locale.
static SPACE: Class = Class::new(false, b" \t\n\x0b\x0c\r");
/// RFC 3986 characters, the delimiters, the RFC 2396 "unwise" ones and bytes
/// ≥ 0x80 (Squid is built with HTTP violations allowed, the default, also in Debian).
static TARGET: Class = {
    let mut c = Class::new(true, b":/?#[]@!$&'()*+,;=-._~% \t\x0b\x0c\r\"\\|^<>`{}");
    let mut b = 0x80;
    while b < 256 {
        c.0[b] = true;
        b += 1;
    }
    c
};
/// Squid's `w_space`: the bytes whose presence triggers whitespace stripping
/// (which then removes every C `isspace` byte).
static W_SPACE: Class = Class::new(false, b" \t\n\r");
/// Where a URL host ends.
static HOST_END: Class = Class::new(false, b"/?# \t\n\x0b\x0c\r");
/// Scheme characters (`_` for `cache_object:`, an HTTP violation Squid allows).
static SCHEME: Class = Class::new(true, b"+.-_");
/// RFC 3986 userinfo characters other than `%`.
static USERINFO: Class = Class::new(true, b":-._~!$&'()*+,;=");

fn is_tchar(b: u8) -> bool {
    TCHAR.has(b)
}

fn is_delim(b: u8) -> bool {
    DELIM.has(b)
}

fn is_space(b: u8) -> bool {
    SPACE.has(b)
}

fn is_target_char(b: u8) -> bool {
    TARGET.has(b)
}

/// Interprets one line of `carpool route` input: a whole request line
/// (`METHOD SP target ...`) when it starts with a method token followed by
/// whitespace, or is a lone token (`GET`); otherwise a bare target, sent as
/// `GET target HTTP/1.1`, or as `CONNECT target HTTP/1.1` when it has no `/`
/// (`host:port`).
pub fn parse_input(line: &[u8]) -> Outcome {
    let line = first_line(line);
    let tok = line.iter().take_while(|&&b| is_tchar(b)).count();
    let lone_token = tok == line.len() && !line.is_empty();
    if lone_token || (tok > 0 && line.get(tok).is_some_and(|&b| is_delim(b))) {
        return parse_request_line(line);
    }
    // Equivalent to parsing `METHOD SP line SP HTTP/1.1`: the delimiters
    // around the target are absorbed by the request-line parser.
    let connect = !line.contains(&b'/') && line != b"*";
    let (token, method): (&[u8], Method) = if connect {
        (b"CONNECT", Method::Connect)
    } else {
        (b"GET", Method::Get)
    };
    let start = line.iter().take_while(|&&b| is_delim(b)).count();
    let end = line.len()
        - line[start..]
            .iter()
            .rev()
            .take_while(|&&b| is_delim(b))
            .count();
    finish_request(token, method, (1, 1), &line[start..end])
}

/// The bytes before the first LF: Squid's request line ends there.
fn first_line(line: &[u8]) -> &[u8] {
    line.iter()
        .position(|&b| b == b'\n')
        .map_or(line, |lf| &line[..lf])
}

/// Normalizes the target of a request a proxy has already parsed (method and
/// request-target of an HTTP/1.1 request): the Squid effective URI that
/// routing hashes, or why the target is not a usable URL (status, reason).
/// Unlike [`parse_request_line`] this applies no Squid answer-it-myself
/// policy (PURGE, cache manager, URNs) and not Squid's 8,191-byte URL limit:
/// the caller decides what to serve, and how long a target may be. It
/// refuses one thing Squid takes: a host that Squid writes out so that it
/// names another host or port, or none, when parsed again (a host in
/// brackets that is no IPv6 address: `[1000:d:1]:8443` becomes
/// `1000:d:1:8443`; a host of dots: `http://./` becomes `http:///`; a host
/// name Squid cuts to 255 bytes; a URN NID that reads as an IPv4 address).
pub fn normalize_target(method: &[u8], target: &[u8]) -> Result<RequestUri, (u16, &'static str)> {
    if target.len() > MAX_URI_FIELD {
        return Err((414, "URI longer than 65535 bytes"));
    }
    if target.iter().any(|&b| !is_target_char(b)) {
        return Err((400, "invalid character in URI"));
    }
    let uri = parse_url(Method::classify(method), target)
        .map(|p| p.uri)
        .map_err(|r| (400, r))?;
    // Squid keeps a host in brackets that is no IP address without its
    // brackets (`[1000:d:1]:8443` -> `1000:d:1:8443`): written back, the
    // effective URI names another host or port. The key is Squid's (route
    // keeps it), but a proxy, which forwards the effective URI, refuses it.
    if target != b"*" {
        reads_back(&uri).map_err(|r| (400, r))?;
    }
    Ok(uri)
}

/// Whether the host of a normalized URI is read back as itself: a name or
/// an IPv4 address (not empty, no `:` and no brackets, not cut to 255
/// bytes), or an IPv6 address in brackets; a URN's NID as sent.
fn reads_back(uri: &RequestUri) -> Result<(), &'static str> {
    let host = uri.host();
    if uri.scheme() == b"urn" {
        // Squid writes a NID that reads as an IPv4 address as one
        // (`urn:31:x` -> `urn:0.0.0.31:x`), which is no NID
        let nid = host.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        return if nid {
            Ok(())
        } else {
            Err("URN NID is an IP address")
        };
    }
    match host {
        [] => Err("missing host"),
        // (a DNS name has at most 253; cut, it may end in a dot)
        _ if host.len() >= MAX_HOST_LEN => Err("host name too long"),
        [b'[', inner @ .., b']'] if ip::canonical_numeric(inner).is_some() => Ok(()),
        _ if host.iter().any(|b| matches!(b, b':' | b'[' | b']')) => Err("invalid IP literal"),
        _ => Ok(()),
    }
}

/// Parses a request line (without its LF; trailing CRs are allowed) sent with
/// no headers, and says what Squid 5.7 does with it. The line ends at the
/// first LF, as Squid's does: what follows it would be header lines (an
/// HTTP/0.9 request has none), so `GET http://h/a\nb HTTP/1.1` is the
/// HTTP/0.9 request `GET http://h/a`.
pub fn parse_request_line(line: &[u8]) -> Outcome {
    let line = first_line(line);
    let reject = |status, reason| Outcome::Reject { status, reason };
    // method
    let mlen = line.iter().take(32).take_while(|&&b| is_tchar(b)).count();
    if mlen == 0 {
        return reject(400, "missing or malformed method");
    }
    let method_tok = &line[..mlen];
    let method = Method::classify(method_tok);
    let mut rest = &line[mlen..];
    let d = rest.iter().take_while(|&&b| is_delim(b)).count();
    if d == 0 {
        return reject(400, "missing delimiter after method");
    }
    rest = &rest[d..];
    // trailing CRs, then the version, parsed from the end
    while let [head @ .., b'\r'] = rest {
        rest = head;
    }
    let (version, before) = match split_version(rest) {
        Some(v) => v,
        None if method == Method::Get => ((0, 9), rest),
        None => return reject(400, "not HTTP: no version"),
    };
    let http09 = version == (0, 9) && before.len() == rest.len();
    let mut uri = before;
    if !http09 {
        let before_len = uri.len();
        while let [head @ .., last] = uri {
            if !is_delim(*last) {
                break;
            }
            uri = head;
        }
        if uri.len() == before_len {
            return reject(400, "missing delimiter before version");
        }
        // An explicit `HTTP/0.9` keeps the delimiters before it in the URI
        // (Squid 5.7): a SP or HTAB there makes whitespace stripping remove
        // every whitespace byte of the path, VT and FF too.
        if version == (0, 9) {
            uri = before;
        }
    }
    finish_request(method_tok, method, version, uri)
}

/// Everything after the request line is split: URI field checks, URL
/// parsing, version and method checks.
fn finish_request(method_tok: &[u8], method: Method, version: (u8, u8), uri: &[u8]) -> Outcome {
    let reject = |status, reason| Outcome::Reject { status, reason };
    let ulen = uri.iter().take_while(|&&b| is_target_char(b)).count();
    if ulen == 0 {
        return reject(400, "missing or malformed URI");
    }
    if ulen > MAX_URI_FIELD {
        return reject(414, "URI longer than 65535 bytes");
    }
    if ulen != uri.len() {
        return reject(400, "invalid character in URI");
    }
    if version.0 == 1 && method_tok.len() + uri.len() + 12 + 2 >= MAX_HEADER_BLOCK {
        return reject(431, "request line and headers reach 64 KB");
    }
    if method == Method::Pri {
        return reject(405, "PRI method in HTTP/1");
    }
    if uri.starts_with(b"/squid-internal-") {
        return Outcome::Local {
            reason: "internal object",
        };
    }
    if uri.len() > MAX_URL_LEN {
        return reject(400, "URL longer than 8191 bytes");
    }
    let parsed = match parse_url(method, uri) {
        Ok(p) => p,
        Err(reason) => return reject(400, reason),
    };
    if (version.0 == 0 && version.1 != 9) || version.0 > 1 {
        return reject(505, "unsupported HTTP version");
    }
    if parsed.path().starts_with(b"/squid-internal-static/") {
        return Outcome::Local {
            reason: "internal static object",
        };
    }
    if !method_allowed(method, method_tok, &parsed) {
        return reject(501, "method not supported for this scheme");
    }
    if method_tok.eq_ignore_ascii_case(b"PURGE") {
        // Squid enables PURGE only when an ACL names the method.
        return reject(403, "PURGE is not enabled");
    }
    match parsed.proto {
        Proto::Urn => urn_resolver(&parsed.uri),
        Proto::CacheObject => cache_manager(parsed.path()),
        _ => Outcome::Route(parsed.uri),
    }
}

/// A `urn:` request: Squid fetches `http://NID/uri-res/N2L?urn:NID:NSS`
/// itself, and that fetch is what CARP routes.
fn urn_resolver(urn: &RequestUri) -> Outcome {
    let mut url = Vec::with_capacity(urn.text.len() + 32);
    url.extend_from_slice(b"http://");
    url.extend_from_slice(urn.host());
    url.extend_from_slice(b"/uri-res/N2L?");
    url.extend_from_slice(&urn.text);
    url.truncate(4095); // Squid formats it into a 4 KiB buffer
    match parse_url(Method::Get, &url) {
        Ok(p) => Outcome::Route(p.uri),
        Err(_) => Outcome::Reject {
            status: 404,
            reason: "URN resolver URL invalid",
        },
    }
}

/// Cache manager actions Squid 5.7 registers (those needing a password are
/// hidden without `cachemgr_passwd`, and answer 404 like unknown ones).
const MGR_ACTIONS: [&str; 62] = [
    "5min",
    "60min",
    "active_requests",
    "asndb",
    "basicauthenticator",
    "cached_ssl_cert",
    "carp",
    "cbdata",
    "cbdatahistory",
    "client_list",
    "comm_epoll_incoming",
    "comm_poll_incoming",
    "comm_select_incoming",
    "counters",
    "cpu_profile",
    "delay",
    "digest_stats",
    "digestauthenticator",
    "diskd",
    "events",
    "external_acl",
    "filedescriptors",
    "forw_headers",
    "forward",
    "fqdncache",
    "graph_variables",
    "histograms",
    "http_headers",
    "idns",
    "index",
    "info",
    "io",
    "ipcache",
    "mem",
    "menu",
    "negotiateauthenticator",
    "netdb",
    "non_peers",
    "ntlmauthenticator",
    "objects",
    "openfd_objects",
    "pconn",
    "peer_select",
    "redirector",
    "refresh",
    "sbuf",
    "server_list",
    "service_times",
    "sourcehash",
    "squidaio_counts",
    "store_check_cachable_stats",
    "store_digest",
    "store_id",
    "store_io",
    "store_log_tags",
    "storedir",
    "strings",
    "userhash",
    "username_cache",
    "utilization",
    "via_headers",
    "vm_objects",
];

/// A `cache_object://host/action[@password][?query]` request: answered by
/// Squid's cache manager; 404 for an unknown action or a malformed query.
fn cache_manager(path: &[u8]) -> Outcome {
    let local = Outcome::Local {
        reason: "cache manager request",
    };
    let not_found = Outcome::Reject {
        status: 404,
        reason: "cache manager: unknown action or bad query",
    };
    let rest = path
        .strip_prefix(b"/squid-internal-mgr/")
        .or_else(|| path.strip_prefix(b"/"))
        .unwrap_or(path);
    let field = |s: &[u8]| {
        s.iter()
            .take_while(|&&b| !matches!(b, b'@' | b'?' | b'#'))
            .count()
    };
    let alen = field(rest);
    let action: &[u8] = if alen == 0 { b"menu" } else { &rest[..alen] };
    if !MGR_ACTIONS.iter().any(|a| a.as_bytes() == action) {
        return not_found;
    }
    let mut t = &rest[alen..];
    if let Some(pw) = t.strip_prefix(b"@") {
        t = &pw[field(pw)..];
    }
    if let Some(q) = t.strip_prefix(b"?") {
        t = q;
        // name=value pairs joined by '&'; names [A-Za-z0-9_], values without "&= #"
        while let Some(&c) = t.first() {
            if c == b'#' {
                break;
            }
            if c == b'&' {
                t = &t[1..];
                continue;
            }
            let n = t
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            if n == 0 || t.get(n) != Some(&b'=') {
                return not_found;
            }
            t = &t[n + 1..];
            let v = t
                .iter()
                .take_while(|b| !matches!(b, b'&' | b'=' | b' ' | b'#'))
                .count();
            if v == 0 {
                return not_found;
            }
            t = &t[v..];
        }
    }
    if t.is_empty() || t[0] == b'#' {
        local
    } else {
        not_found
    }
}

/// Splits a trailing HTTP version off: returns (major, minor) and the text
/// before it. Multi-digit versions read as 0.0, as in Squid.
fn split_version(s: &[u8]) -> Option<((u8, u8), &[u8])> {
    if let Some(b) = s.strip_suffix(b"HTTP/1.1") {
        return Some(((1, 1), b));
    }
    if let Some(b) = s.strip_suffix(b"HTTP/1.0") {
        return Some(((1, 0), b));
    }
    let minor_len = s.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if minor_len == 0 {
        return None;
    }
    let s1 = &s[..s.len() - minor_len];
    let s2 = s1.strip_suffix(b".")?;
    let major_len = s2.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if major_len == 0 {
        return None;
    }
    let s3 = &s2[..s2.len() - major_len];
    let before = s3.strip_suffix(b"HTTP/")?;
    let (major, minor) = if major_len > 1 || minor_len > 1 {
        (0, 0)
    } else {
        (s2[s2.len() - 1] - b'0', s[s.len() - 1] - b'0')
    };
    Some(((major, minor), before))
}

/// Schemes Squid 5.7 knows (its ProtocolType names, lowercase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    None,
    Http,
    Ftp,
    Https,
    Coap,
    Coaps,
    Wais,
    CacheObject,
    Icp,
    Htcp,
    Urn,
    Whois,
    Icy,
    Tls,
    Ssl,
    AuthorityForm,
    Unknown,
}

impl Proto {
    fn find(name: &[u8]) -> Proto {
        const KNOWN: [(&[u8], Proto); 15] = [
            (b"http", Proto::Http),
            (b"ftp", Proto::Ftp),
            (b"https", Proto::Https),
            (b"coap", Proto::Coap),
            (b"coaps", Proto::Coaps),
            (b"wais", Proto::Wais),
            (b"cache_object", Proto::CacheObject),
            (b"icp", Proto::Icp),
            (b"htcp", Proto::Htcp),
            (b"urn", Proto::Urn),
            (b"whois", Proto::Whois),
            (b"icy", Proto::Icy),
            (b"tls", Proto::Tls),
            (b"ssl", Proto::Ssl),
            (b"authority_form", Proto::AuthorityForm),
        ];
        KNOWN
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Proto::Unknown, |&(_, p)| p)
    }

    fn default_port(self) -> u16 {
        match self {
            Proto::Http => 80,
            Proto::Https => 443,
            Proto::Ftp => 21,
            Proto::Coap | Proto::Coaps => 5683,
            Proto::Wais => 210,
            Proto::CacheObject => 3128,
            Proto::Whois => 43,
            _ => 0,
        }
    }
}

struct Parsed {
    proto: Proto,
    uri: RequestUri,
}

impl Parsed {
    fn path(&self) -> &[u8] {
        self.uri.path_and_query()
    }
}

/// `urlCheckRequest`: may this method be used with this scheme?
fn method_allowed(method: Method, token: &[u8], p: &Parsed) -> bool {
    match method {
        Method::Connect => return true,
        Method::Options | Method::Trace => return p.path() != b"*",
        _ if token.eq_ignore_ascii_case(b"PURGE") => return true,
        _ => {}
    }
    match p.proto {
        Proto::Urn | Proto::Http | Proto::CacheObject | Proto::Https => true,
        Proto::Ftp => matches!(method, Method::Put | Method::Get | Method::Head),
        Proto::Wais | Proto::Whois => matches!(method, Method::Get | Method::Head),
        _ => false,
    }
}

/// `AnyP::Uri::parse` for a request target, written straight into the
/// effective URI buffer (one allocation per request).
fn parse_url(method: Method, raw: &[u8]) -> Result<Parsed, &'static str> {
    if matches!(method, Method::Options | Method::Trace) && raw == b"*" {
        let uri = RequestUri::from_parts("http", "", 80, 80, "*");
        return Ok(Parsed {
            proto: Proto::Http,
            uri,
        });
    }
    if method == Method::Connect {
        return parse_authority(raw);
    }
    // scheme
    let slen = raw.iter().take(16).take_while(|&&b| SCHEME.has(b)).count();
    if slen == 0 || raw.get(slen) != Some(&b':') || !raw[0].is_ascii_alphabetic() {
        return Err("invalid URI scheme");
    }
    let scheme = &raw[..slen];
    let proto = Proto::find(scheme);
    let after = &raw[slen + 1..];
    if proto == Proto::Urn {
        return parse_urn(after);
    }
    let Some(rest) = after.strip_prefix(b"//") else {
        return Err("no // after the scheme");
    };
    let hlen = rest.iter().take_while(|&&b| !HOST_END.has(b)).count();
    let (authority, tail) = rest.split_at(hlen);
    let (login, hostport) = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => (&authority[..at], &authority[at + 1..]),
        None => (&authority[..0], authority),
    };
    let (host, port) = host_and_port(hostport, proto.default_port() as i64)?;
    let mut text = Vec::with_capacity(raw.len() + 8);
    if proto == Proto::Unknown {
        text.extend_from_slice(scheme);
    } else {
        text.extend(scheme.iter().map(u8::to_ascii_lowercase));
    }
    let scheme_r = 0..text.len();
    text.extend_from_slice(b"://");
    if matches!(proto, Proto::Ftp | Proto::Unknown) && !login.is_empty() {
        let mut user = login.to_vec();
        rfc1738_unescape(&mut user);
        if !user.is_empty() {
            encode_userinfo(&user, &mut text);
            text.push(b'@');
        }
    }
    let h0 = text.len();
    push_host(&mut text, host)?;
    let host_r = h0..text.len();
    if !(1..=65535).contains(&port) {
        return Err("invalid port");
    }
    let port = port as u16;
    if port != proto.default_port() {
        text.push(b':');
        text.extend_from_slice(PortText::new(port).as_bytes());
    }
    let p0 = text.len();
    if tail.first() != Some(&b'/') {
        text.push(b'/');
    }
    // Squid copies the path up to the first CR or LF (or NUL, which never
    // gets this far): the rest of the target is not part of the URL. A host
    // that ends at a CR leaves an empty path (`http://h\rx/y` -> `http://h/`).
    let tail = &tail[..tail
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(tail.len())];
    // uri_whitespace strip: only when the path (so cut) holds SP or HTAB,
    // and then every C-isspace byte (VT and FF too) goes.
    if tail.iter().any(|&b| W_SPACE.has(b)) {
        text.extend(tail.iter().copied().filter(|&b| !is_space(b)));
    } else {
        text.extend_from_slice(tail);
    }
    let path_r = p0..text.len();
    let uri = RequestUri {
        text,
        scheme: scheme_r,
        host: host_r,
        path: path_r,
        port,
        authority_form: false,
    };
    Ok(Parsed { proto, uri })
}

/// Splits an authority's `host[:port]` as Squid does: a bracketed IPv6
/// literal, or a port only when there is exactly one colon; `default` when
/// no port is given. The port is not checked here.
fn host_and_port(hostport: &[u8], default: i64) -> Result<(&[u8], i64), &'static str> {
    if hostport.first() == Some(&b'[') {
        // Squid copies up to ']' one place left, then scans the bytes after
        // the copy for ':' — the ones from the ']' on.
        let end = hostport[1..]
            .iter()
            .position(|&b| b == b']')
            .map_or(hostport.len(), |p| p + 1);
        let host = &hostport[1..end];
        if host.is_empty() {
            return Err("missing host");
        }
        let port = match hostport[end..].iter().position(|&b| b == b':') {
            Some(p) => atoi(&hostport[end + p + 1..]),
            None => default,
        };
        return Ok((host, port));
    }
    // Squid checks for an empty host before it cuts the port off.
    if hostport.is_empty() {
        return Err("missing host");
    }
    let first = hostport.iter().position(|&b| b == b':');
    let last = hostport.iter().rposition(|&b| b == b':');
    Ok(match first {
        Some(p) if first == last => (&hostport[..p], atoi(&hostport[p + 1..])),
        _ => (hostport, default),
    })
}

/// Longest host name Squid stores (`SQUIDHOSTNAMELEN` − 1); longer ones are cut.
const MAX_HOST_LEN: usize = 255;

/// Appends the host as Squid stores it: whitespace dropped (if it holds SP,
/// HTAB, CR or LF), ASCII-lowercased, trailing dots removed, a leading dot or
/// `..` refused, IP literals canonical, names cut to 255 bytes.
fn push_host(text: &mut Vec<u8>, host: &[u8]) -> Result<(), &'static str> {
    let h0 = text.len();
    if host.iter().any(|&b| W_SPACE.has(b)) {
        text.extend(
            host.iter()
                .filter(|&&b| !is_space(b))
                .map(u8::to_ascii_lowercase),
        );
    } else {
        text.extend(host.iter().map(u8::to_ascii_lowercase));
    }
    while text.len() > h0 && text.last() == Some(&b'.') {
        text.pop();
    }
    let h = &text[h0..];
    if h.first() == Some(&b'.') || h.windows(2).any(|w| w == b"..") {
        return Err("illegal hostname (leading dot or '..')");
    }
    // `Ip::Address::fromHost` unwraps one more pair of brackets if present.
    let probe: &[u8] = match h {
        [b'[', inner @ .., _] => inner,
        _ => h,
    };
    if let Some(n) = ip::canonical_numeric(probe) {
        text.truncate(h0);
        ip::push_numeric(text, n);
    } else if text.len() - h0 > MAX_HOST_LEN {
        text.truncate(h0 + MAX_HOST_LEN);
    }
    Ok(())
}

/// The CONNECT branch: `sscanf("[%[^]]]:%d")`, else `sscanf("%[^:]:%d")`, port 443 by default.
fn parse_authority(raw: &[u8]) -> Result<Parsed, &'static str> {
    let mut port: i64 = 443;
    let host: Vec<u8>;
    let bracket_host = if raw.first() == Some(&b'[') {
        let inner: Vec<u8> = raw[1..]
            .iter()
            .take_while(|&&b| b != b']')
            .copied()
            .collect();
        (!inner.is_empty()).then(|| {
            let after = &raw[1 + inner.len()..];
            if let Some(p) = after.strip_prefix(b"]:") {
                if let Some(v) = scan_int(p) {
                    port = v;
                }
            }
            inner
        })
    } else {
        None
    };
    match bracket_host {
        Some(h) => host = h,
        None => {
            let n = raw.iter().take_while(|&&b| b != b':').count();
            if n == 0 {
                return Err("missing host in CONNECT target");
            }
            host = raw[..n].to_vec();
            if let Some(p) = raw[n..].strip_prefix(b":") {
                if let Some(v) = scan_int(p) {
                    port = v;
                }
            }
        }
    }
    let mut text = Vec::with_capacity(host.len() + 6);
    push_host(&mut text, &host)?;
    if !(1..=65535).contains(&port) {
        return Err("invalid port");
    }
    let host_r = 0..text.len();
    text.push(b':');
    text.extend_from_slice(PortText::new(port as u16).as_bytes());
    let end = text.len();
    let uri = RequestUri {
        text,
        scheme: 0..0,
        host: host_r,
        path: end..end,
        port: port as u16,
        authority_form: true,
    };
    Ok(Parsed {
        proto: Proto::None,
        uri,
    })
}

/// `urn:NID:NSS` — accepted, then resolved by Squid itself.
fn parse_urn(after: &[u8]) -> Result<Parsed, &'static str> {
    let nid_len = after
        .iter()
        .take(32)
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-')
        .count();
    let nid = &after[..nid_len];
    if after.get(nid_len) != Some(&b':') {
        return Err("URN NID too long or missing ':'");
    }
    if nid.len() < 2
        || !nid[0].is_ascii_alphanumeric()
        || !nid[nid.len() - 1].is_ascii_alphanumeric()
    {
        return Err("bad URN NID");
    }
    // Squid stores the NID as the host (not lowercased) and the NSS as the
    // path; `absolute()` prints `urn:NID:NSS`.
    let mut text = b"urn:".to_vec();
    let h0 = text.len();
    match ip::canonical_host(nid) {
        Some(c) => text.extend_from_slice(c.as_bytes()),
        None => text.extend_from_slice(nid),
    }
    let host_r = h0..text.len();
    text.push(b':');
    let p0 = text.len();
    text.extend_from_slice(&after[nid_len + 1..]);
    let path_r = p0..text.len();
    let uri = RequestUri {
        text,
        scheme: 0..3,
        host: host_r,
        path: path_r,
        port: 0,
        authority_form: false,
    };
    Ok(Parsed {
        proto: Proto::Urn,
        uri,
    })
}

/// C `atoi`: optional whitespace and sign, then digits; stops at the first
/// other byte; values are clamped so out-of-range ports stay out of range.
fn atoi(s: &[u8]) -> i64 {
    scan_int(s).unwrap_or(0)
}

/// `%d` of sscanf / strtol: `None` when no digits. Result truncated to C `int`.
fn scan_int(s: &[u8]) -> Option<i64> {
    let mut i = s.iter().take_while(|&&b| is_space(b)).count();
    let mut neg = false;
    if let Some(&c) = s.get(i) {
        if c == b'+' || c == b'-' {
            neg = c == b'-';
            i += 1;
        }
    }
    let digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut v: i64 = 0;
    let mut saturated = false;
    for &d in &s[i..i + digits] {
        match v
            .checked_mul(10)
            .and_then(|x| x.checked_add((d - b'0') as i64))
        {
            Some(x) => v = x,
            None => {
                saturated = true;
                break;
            }
        }
    }
    // strtol saturates at LONG_MAX/LONG_MIN; the result is then cast to int.
    let long = match (saturated, neg) {
        (true, false) => i64::MAX,
        (true, true) => i64::MIN,
        (false, true) => -v,
        (false, false) => v,
    };
    Some(long as i32 as i64)
}

/// Squid's `rfc1738_unescape`: `%XX` (non-zero) decoded, `%%` → `%`, others kept.
fn rfc1738_unescape(s: &mut Vec<u8>) {
    let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
    let mut out = Vec::with_capacity(s.len());
    let mut j = 0;
    while j < s.len() {
        let c = s[j];
        out.push(c);
        if c == b'%' {
            if s.get(j + 1) == Some(&b'%') {
                j += 1;
            } else if let (Some(a), Some(b)) = (hex(s.get(j + 1)), hex(s.get(j + 2))) {
                let x = (a << 4 | b) as u8;
                if x > 0 {
                    *out.last_mut().expect("just pushed") = x;
                    j += 2;
                }
            }
        }
        j += 1;
    }
    *s = out;
}

/// Percent-encodes userinfo bytes outside RFC 3986 userinfo characters (`%` too).
fn encode_userinfo(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        if USERINFO.has(b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(line: &str) -> String {
        match parse_input(line.as_bytes()) {
            Outcome::Route(r) => r.effective_uri(),
            Outcome::Reject { status, .. } => format!("REJECT {status}"),
            Outcome::Local { .. } => "LOCAL".into(),
        }
    }

    /// Found by a fresh random sample against Squid 5.7 (seed 11648) and
    /// pinned down by hand with scripts/squid-vectors: before an explicit
    /// `HTTP/0.9` the delimiters stay in the URI, so a SP or HTAB there
    /// strips VT and FF from the path, and a VT there stays in it.
    #[test]
    fn an_explicit_http_0_9_keeps_its_delimiters_in_the_uri() {
        let cases = [
            (
                "GET http://cdn-15.img.test\x0b?page=34133 HTTP/0.9",
                "http://cdn-15.img.test/?page=34133",
            ),
            (
                "GET http://h.test\x0b?p=1 HTTP/1.1",
                "http://h.test/\x0b?p=1",
            ),
            ("GET http://h.test/a\x0bb HTTP/0.9", "http://h.test/ab"),
            ("GET http://h.test/a\x0cb HTTP/0.9", "http://h.test/ab"),
            ("GET http://h.test/a\x0bb\tHTTP/0.9", "http://h.test/ab"),
            ("GET http://h.test/a\x0bb  HTTP/0.9", "http://h.test/ab"),
            (
                "GET http://h.test/a\x0bb\x0bHTTP/0.9",
                "http://h.test/a\x0bb\x0b",
            ),
            ("GET http://h.test/a\x0bb HTTP/1.1", "http://h.test/a\x0bb"),
            ("GET http://h.test/a\x0bb HTTP/1.2", "http://h.test/a\x0bb"),
            ("GET http://h.test/a\x0bb", "http://h.test/a\x0bb"),
        ];
        for (line, want) in cases {
            assert_eq!(key(line), want, "{line:?}");
        }
    }

    /// Issue 15, checked against Squid 5.7 (scripts/squid-vectors): Squid
    /// copies the path up to the first CR or LF (`AnyP::Uri::parse`), and
    /// only then looks for whitespace to strip, so the bytes after a CR are
    /// not hashed and a form feed before it stays. The request line itself
    /// ends at the first LF.
    #[test]
    fn the_url_ends_at_the_first_cr_or_lf() {
        let cases = [
            ("GET http://h/a\rb HTTP/1.1", "http://h/a"),
            ("GET http://h/a\x0cb\rc d HTTP/1.1", "http://h/a\x0cb"),
            ("GET http://h/a b\rc d HTTP/1.1", "http://h/ab"),
            ("GET http://h\rx/y HTTP/1.1", "http://h/"),
            ("GET http://h/p?q=1\r#f HTTP/1.1", "http://h/p?q=1"),
            ("GET http://h/a\rb", "http://h/a"),
            ("GET http://h/a\rb HTTP/0.9", "http://h/a"),
            ("GET http://h/a\nb HTTP/1.1", "http://h/a"),
            ("HEAD http://h/a\nb HTTP/1.1", "REJECT 400"),
            (
                "GET urn:isbn:1\r2 HTTP/1.1",
                "http://isbn/uri-res/N2L?urn:isbn:1",
            ),
            ("http://h/a\rb", "http://h/a"),
        ];
        for (line, want) in cases {
            assert_eq!(key(line), want, "{line:?}");
        }
        let uri = normalize_target(b"GET", b"http://h/a\x0cb\rc d").unwrap();
        assert_eq!(uri.effective(), b"http://h/a\x0cb");
    }

    /// Issue 15, checked against Squid 5.7 (testdata/squid): a host that is
    /// only a port is accepted (Squid looks for an empty host before it cuts
    /// the port off), the port read by `atoi` (strtol, then cut to a C
    /// `int`). With no header lines the default port is not printed; Squid
    /// prints it (`http://:80/x`) only when the request has a `Host:` header,
    /// which `parse_request_line` does not model (FINDINGS.md, section 4).
    #[test]
    fn a_host_that_is_only_a_port_is_accepted() {
        let cases = [
            ("GET http://:80/x HTTP/1.1", "http:///x"),
            ("GET http://:8080/x HTTP/1.1", "http://:8080/x"),
            ("GET http://user@:80/ HTTP/1.1", "http:///"),
            ("GET https://:443/ HTTP/1.1", "https:///"),
            ("GET https://:80/ HTTP/1.1", "https://:80/"),
            ("GET ftp://user@:21/x HTTP/1.1", "ftp://user@/x"),
            ("GET http://:4294967376/x HTTP/1.1", "http:///x"),
            ("GET http://:-4294967216/x HTTP/1.1", "http:///x"),
            ("GET http://:4294967296/x HTTP/1.1", "REJECT 400"),
            ("GET http://:99999999999/x HTTP/1.1", "REJECT 400"),
            ("GET http://:18446744073709551696/x HTTP/1.1", "REJECT 400"),
            ("GET http://.:8080/ HTTP/1.1", "http://:8080/"),
            ("GET http://:/x HTTP/1.1", "REJECT 400"),
        ];
        for (line, want) in cases {
            assert_eq!(key(line), want, "{line:?}");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/normalize.rs): a bracketed host
    /// that is no IP address lost its brackets in the effective URI, which
    /// then named another host and port: `CONNECT [1000:d:1]:8443` became
    /// `1000:d:1:8443`, which a parent normalizes to `0.0.3.232:443`; and
    /// `http://./x` became `http:///x`, with no host; a host cut to 255
    /// bytes lost the dot it ended in; `urn:31:x` became `urn:0.0.0.31:x`,
    /// which is no URN. A proxy refuses them;
    /// `carpool route` still routes them as Squid does.
    #[test]
    fn a_host_that_does_not_read_back_as_itself_is_refused() {
        for (method, target) in [
            ("CONNECT", "[1000:d:1]:8443"),
            ("GET", "http://[1000:d:1]:8443/"),
            ("GET", "http://[fe80::1%25eth0]/"),
            ("GET", "http://fe80::1%25eth0/"),
            ("GET", "http://[::]:8080/"),
            // no closing bracket: the rest is the host
            ("CONNECT", "[[a:b"),
            // dots only: no host left
            ("GET", "http://./x"),
            ("CONNECT", "..:443"),
            // a URN NID that reads as an IPv4 address
            ("GET", "urn:31:N-B0B1"),
        ] {
            let got = normalize_target(method.as_bytes(), target.as_bytes());
            assert_eq!(got.map_err(|e| e.0), Err(400), "{method} {target}");
        }
        for (method, target, effective) in [
            ("CONNECT", "[2001:DB8::1]:8443", "[2001:db8::1]:8443"),
            ("GET", "http://[::1]:8080/", "http://[::1]:8080/"),
            ("GET", "http://[::ffff:1.2.3.4]/", "http://1.2.3.4/"),
            // an IPvFuture loses its brackets too, but names the same host again
            ("GET", "http://[v1.x]/", "http://v1.x/"),
            ("GET", "urn:ISBN:0-395-36341-1", "urn:ISBN:0-395-36341-1"),
        ] {
            let uri = normalize_target(method.as_bytes(), target.as_bytes()).unwrap();
            assert_eq!(uri.effective(), effective.as_bytes());
            let again = normalize_target(method.as_bytes(), uri.effective()).unwrap();
            assert_eq!(again, uri);
        }
        // cut to 255 bytes, ending in a dot
        let long = format!("{}.{}", "a".repeat(254), "b".repeat(20));
        let got = normalize_target(b"CONNECT", long.as_bytes());
        assert_eq!(got.map_err(|e| e.0), Err(400));
        assert_eq!(
            key(&format!("CONNECT {long} HTTP/1.1")),
            format!("{}.:443", "a".repeat(254))
        );
        assert_eq!(key("CONNECT [1000:d:1]:8443 HTTP/1.1"), "1000:d:1:8443");
        assert_eq!(key("GET http://[v1.x]/ HTTP/1.1"), "http://v1.x/");
    }

    #[test]
    fn documented_examples() {
        let cases = [
            ("get http://h/ HTTP/1.1", "http://h/"),
            ("GET http://h/a http/1.1", "http://h/ahttp/1.1"),
            ("POST http://h/a http/1.1", "REJECT 400"),
            ("HTTP://h/", "http://h/"),
            ("http:/h", "REJECT 400"),
            ("/p", "REJECT 400"),
            ("http://u:p@H/", "http://h/"),
            ("http://h.example../", "http://h.example/"),
            ("http://.h/", "REJECT 400"),
            ("http://a..b/", "REJECT 400"),
            ("http://127.1/", "http://127.0.0.1/"),
            ("http://[2001:DB8:0::1]/", "http://[2001:db8::1]/"),
            ("http://[::ffff:1.2.3.4]/", "http://1.2.3.4/"),
            ("http://h:0080/", "http://h/"),
            ("http://h:80abc/", "http://h/"),
            ("http://h:80/", "http://h/"),
            ("http://h:8080/", "http://h:8080/"),
            ("http://h:/", "REJECT 400"),
            ("http://h:99999/", "REJECT 400"),
            ("http://h?x", "http://h/?x"),
            ("http://h", "http://h/"),
            ("http://h#f", "http://h/#f"),
            ("http://h/%2f", "http://h/%2f"),
            ("GET http://h/a b HTTP/1.1", "http://h/ab"),
            ("h.example:443", "h.example:443"),
            ("H.Example:443", "h.example:443"),
            ("GET", "REJECT 400"),
            ("PURGE http://h/ HTTP/1.1", "REJECT 403"),
            (
                "GET urn:ISBN:1 2 HTTP/1.1",
                "http://isbn/uri-res/N2L?urn:ISBN:12",
            ),
            ("GET cache_object://h/info HTTP/1.1", "LOCAL"),
            ("GET cache_object://h/nope HTTP/1.1", "REJECT 404"),
            ("GET http://h/a\u{b}b HTTP/1.1", "http://h/a\u{b}b"),
            ("GET http://h/a\u{b} b HTTP/1.1", "http://h/ab"),
            ("[::1]:8443", "[::1]:8443"),
            ("foo://h/", "REJECT 400"),
            ("foo://h:1/", "REJECT 501"),
            ("FOO://h:1/", "REJECT 501"),
            ("OPTIONS * HTTP/1.1", "REJECT 501"),
            ("GET http://h/ HTTP/2.0", "REJECT 505"),
            ("GET http://h/\u{e9}|^ HTTP/1.1", "http://h/\u{e9}|^"),
            ("GET http://h/\u{7f} HTTP/1.1", "REJECT 400"),
            ("ftp://us%65r:p@ss@h/", "ftp://user:p%40ss@h/"),
            ("http://h/squid-internal-static/icons/x", "LOCAL"),
        ];
        for (input, want) in cases {
            assert_eq!(key(input), want, "input {input:?}");
        }
    }

    #[test]
    fn long_urls() {
        let u = format!("http://h/{}", "a".repeat(8182));
        assert_eq!(u.len(), 8191);
        assert_eq!(key(&u), u);
        assert_eq!(key(&format!("{u}b")), "REJECT 400");
        assert_eq!(
            key(&format!("http://h/{}", "a".repeat(70000))),
            "REJECT 414"
        );
        assert_eq!(
            key(&format!("http://h/{}", "a".repeat(65520))),
            "REJECT 431"
        );
    }

    #[test]
    fn scan_int_like_c() {
        assert_eq!(scan_int(b" +12x"), Some(12));
        assert_eq!(scan_int(b"-5"), Some(-5));
        assert_eq!(scan_int(b"x"), None);
        assert_eq!(scan_int(b"4294967377"), Some(81));
        assert_eq!(scan_int(b"99999999999999999999999"), Some(-1));
    }
}
