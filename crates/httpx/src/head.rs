//! Request and response heads: parsed by `httparse` out of the connection's
//! read buffer into one `Bytes` plus index ranges, so a head costs one
//! allocation for its header index and none per header.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::error::HttpError;

/// Most header fields a head may have (the `max_headers` limit is capped here).
pub const MAX_HEADER_SLOTS: usize = 256;

/// Limits on what a client may send before its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, bytes (431 beyond).
    pub max_head_bytes: usize,
    /// Number of header fields (431 beyond).
    pub max_headers: usize,
    /// Request-target length (414 beyond).
    pub max_uri_bytes: usize,
    /// Time to receive a whole head once its first byte arrived (408).
    pub header_timeout: Duration,
    /// Time a kept-alive client connection may sit idle between requests.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// HTTP/1.0 or HTTP/1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: no keep-alive unless asked, no chunked.
    Http10,
    /// HTTP/1.1.
    Http11,
}

impl Version {
    fn from_minor(m: u8) -> Version {
        if m == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }

    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// The header names a proxy hop acts on, recognised once per field when a
/// head is parsed: lookups of these names and the hop-by-hop checks then
/// compare one byte per field instead of whole names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    /// Any other name.
    Other,
    /// `Connection`.
    Connection,
    /// `Keep-Alive`.
    KeepAlive,
    /// `Proxy-Connection` (non-standard, hop-by-hop).
    ProxyConnection,
    /// `TE`.
    Te,
    /// `Trailer`.
    Trailer,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Upgrade`.
    Upgrade,
    /// `Proxy-Authorization`.
    ProxyAuthorization,
    /// `Proxy-Authenticate`.
    ProxyAuthenticate,
    /// `Content-Length`.
    ContentLength,
    /// `Host`.
    Host,
    /// `Via`.
    Via,
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// `Expect`.
    Expect,
    /// `Content-Type` (logged with every response).
    ContentType,
    /// `Carpool-Client`: what one carpool tells the next about the client
    /// (hop-by-hop: only the hop that received it may act on it).
    CarpoolClient,
}

impl Known {
    /// The name's kind (ASCII case-insensitive). Length and first letter
    /// pick the one candidate, so most names are ruled out without a
    /// comparison.
    pub fn of(name: &[u8]) -> Known {
        let Some(&first) = name.first() else {
            return Known::Other;
        };
        let candidate = match (name.len(), first | 0x20) {
            (2, b't') => Known::Te,
            (3, b'v') => Known::Via,
            (4, b'h') => Known::Host,
            (6, b'e') => Known::Expect,
            (7, b't') => Known::Trailer,
            (7, b'u') => Known::Upgrade,
            (10, b'c') => Known::Connection,
            (10, b'k') => Known::KeepAlive,
            (12, b'c') => Known::ContentType,
            (14, b'c') if name[1] | 0x20 == b'a' => Known::CarpoolClient,
            (14, b'c') => Known::ContentLength,
            (15, b'x') => Known::XForwardedFor,
            (16, b'p') => Known::ProxyConnection,
            (17, b't') => Known::TransferEncoding,
            (18, b'p') => Known::ProxyAuthenticate,
            (19, b'p') => Known::ProxyAuthorization,
            _ => return Known::Other,
        };
        if eq_lower(name, candidate.name().as_bytes()) {
            candidate
        } else {
            Known::Other
        }
    }

    /// The name in lower case (`""` for [`Known::Other`]).
    pub fn name(self) -> &'static str {
        match self {
            Known::Other => "",
            Known::Connection => "connection",
            Known::KeepAlive => "keep-alive",
            Known::ProxyConnection => "proxy-connection",
            Known::Te => "te",
            Known::Trailer => "trailer",
            Known::TransferEncoding => "transfer-encoding",
            Known::Upgrade => "upgrade",
            Known::ProxyAuthorization => "proxy-authorization",
            Known::ProxyAuthenticate => "proxy-authenticate",
            Known::ContentLength => "content-length",
            Known::Host => "host",
            Known::Via => "via",
            Known::XForwardedFor => "x-forwarded-for",
            Known::Expect => "expect",
            Known::ContentType => "content-type",
            Known::CarpoolClient => "carpool-client",
        }
    }

    /// Fields that belong to one connection and are never forwarded (RFC
    /// 9110 §7.6.1, plus the non-standard `Proxy-Connection` and
    /// `Keep-Alive`). Framing fields are rewritten by each hop's sender.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Known::Connection
                | Known::KeepAlive
                | Known::ProxyConnection
                | Known::Te
                | Known::Trailer
                | Known::TransferEncoding
                | Known::Upgrade
                | Known::ProxyAuthorization
                | Known::ProxyAuthenticate
                | Known::CarpoolClient
        )
    }

    fn bit(self) -> u32 {
        1 << self as u8
    }
}

/// True when `name` is `lower` (lower-case letters and `-`) in any ASCII
/// case, compared eight bytes at a time: OR-ing 0x20 into a byte maps an
/// upper-case letter to its lower case and leaves lower-case letters and
/// `-` as they are. (Only a CR could pass for `-` that way, and httparse
/// admits no CR in a header name.)
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    if name.len() != lower.len() {
        return false;
    }
    let (mut a, mut b) = (name.chunks_exact(8), lower.chunks_exact(8));
    for (x, y) in (&mut a).zip(&mut b) {
        let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        if word(x) | CASE != word(y) {
            return false;
        }
    }
    a.remainder()
        .iter()
        .zip(b.remainder())
        .all(|(x, y)| x | 0x20 == *y)
}

/// A header name to look up: any `&str` (a [`Known`] one is recognised),
/// or a [`Known`] kind itself, which needs no name comparison at all
/// ([`Known::Other`] names no field and finds none).
pub trait FieldName: Copy {
    /// Its kind.
    fn kind(self) -> Known;
    /// True when a field named `name` has this name (case-insensitive).
    fn is(self, name: &[u8]) -> bool;
}

impl FieldName for &str {
    fn kind(self) -> Known {
        Known::of(self.as_bytes())
    }

    fn is(self, name: &[u8]) -> bool {
        name.eq_ignore_ascii_case(self.as_bytes())
    }
}

impl FieldName for Known {
    fn kind(self) -> Known {
        self
    }

    /// Asked only of [`Known::Other`] (the other kinds are found by kind),
    /// which is not a name.
    fn is(self, _name: &[u8]) -> bool {
        false
    }
}

/// Where one header field sits in a head's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    name: Range<u32>,
    value: Range<u32>,
    /// Just past the CRLF that ends the field's line (0: the line ended in
    /// a bare LF, so it is not copied as it came).
    line_end: u32,
    known: Known,
}

/// Header positions found by httparse, before the head is split off the buffer.
struct Indexed(Vec<Field>);

impl Indexed {
    /// Takes the head's `n` bytes off `buf` (as a copy: the read buffer
    /// must stay the only owner of its memory, or the next read could not
    /// reuse it and every message would allocate a new buffer) and pairs
    /// them with the index.
    fn freeze(self, buf: &mut BytesMut, n: usize) -> Fields {
        let raw = Bytes::copy_from_slice(&buf[..n]);
        bytes::Buf::advance(buf, n);
        let present = self.0.iter().fold(0, |p, f| p | f.known.bit());
        Fields {
            raw,
            fields: self.0,
            present,
        }
    }
}

/// Records where each header sits in `buf` (which httparse parsed).
fn index_fields(buf: &[u8], headers: &[httparse::Header<'_>]) -> Indexed {
    let base = buf.as_ptr() as usize;
    Indexed(
        headers
            .iter()
            .map(|h| {
                let value = r(base, h.value);
                Field {
                    name: r(base, h.name.as_bytes()),
                    line_end: crlf_end(buf, value.end as usize),
                    value,
                    known: Known::of(h.name.as_bytes()),
                }
            })
            .collect(),
    )
}

/// Just past the CRLF after `from` (optional trailing blanks between), or 0.
fn crlf_end(buf: &[u8], mut from: usize) -> u32 {
    while matches!(buf.get(from), Some(b' ' | b'\t')) {
        from += 1;
    }
    if buf.get(from..from + 2) == Some(b"\r\n") {
        (from + 2) as u32
    } else {
        0
    }
}

fn r(base: usize, part: &[u8]) -> Range<u32> {
    let start = part.as_ptr() as usize - base;
    start as u32..(start + part.len()) as u32
}

/// The header fields of a head.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    raw: Bytes,
    fields: Vec<Field>,
    /// A bit per [`Known`] name that occurs.
    present: u32,
}

impl Fields {
    /// All fields in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields.iter().map(|f| (self.name(f), self.value(f)))
    }

    /// All fields in order, as (kind, name, value).
    pub fn iter_known(&self) -> impl Iterator<Item = (Known, &[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (f.known, self.name(f), self.value(f)))
    }

    fn name(&self, f: &Field) -> &[u8] {
        &self.raw[f.name.start as usize..f.name.end as usize]
    }

    fn value(&self, f: &Field) -> &[u8] {
        &self.raw[f.value.start as usize..f.value.end as usize]
    }

    /// True when a field of the [`Known`] kind `k` occurs.
    pub fn has(&self, k: Known) -> bool {
        k != Known::Other && self.present & k.bit() != 0
    }

    /// Values of every field named `name` (case-insensitive): a `&str`, or
    /// a [`Known`] kind, which is found by kind and not looked for when
    /// absent.
    pub fn get_all<'a, N: FieldName + 'a>(
        &'a self,
        name: N,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        let k = name.kind();
        let fields = if k == Known::Other || self.has(k) {
            &self.fields[..]
        } else {
            &[]
        };
        fields
            .iter()
            .filter(move |f| {
                if k == Known::Other {
                    name.is(self.name(f))
                } else {
                    f.known == k
                }
            })
            .map(|f| self.value(f))
    }

    /// The first value of `name`.
    pub fn get<'a, N: FieldName + 'a>(&'a self, name: N) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// True if any field `name` holds `token` in its comma-separated list.
    pub fn has_token<N: FieldName>(&self, name: N, token: &str) -> bool {
        let token = token.as_bytes();
        for value in self.get_all(name) {
            for t in value.split(|&b| b == b',') {
                if t.trim_ascii().eq_ignore_ascii_case(token) {
                    return true;
                }
            }
        }
        false
    }

    /// Appends the fields `keep` accepts (given kind, name and value), as
    /// lines of a head. Runs of consecutive kept fields are copied from the
    /// received head in one piece, exactly as they came (each line ended in
    /// CRLF); a field whose line ended otherwise is written as `name: value`.
    pub fn write_kept<'a>(
        &'a self,
        out: &mut Vec<u8>,
        mut keep: impl FnMut(Known, &'a [u8], &'a [u8]) -> bool,
    ) {
        let mut run = 0..0usize;
        for f in &self.fields {
            let (name, value) = (self.name(f), self.value(f));
            let kept = keep(f.known, name, value);
            let line = f.name.start as usize..f.line_end as usize;
            if kept && f.line_end != 0 && (run.is_empty() || run.end == line.start) {
                run = if run.is_empty() {
                    line
                } else {
                    run.start..line.end
                };
                continue;
            }
            out.extend_from_slice(&self.raw[run.clone()]);
            run = 0..0;
            if kept && f.line_end != 0 {
                run = line;
            } else if kept {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(&self.raw[run]);
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// A parsed request head.
#[derive(Clone, Debug)]
pub struct RequestHead {
    method: Range<u32>,
    target: Range<u32>,
    /// Protocol version.
    pub version: Version,
    /// Header fields.
    pub fields: Fields,
}

impl RequestHead {
    /// The method token as sent.
    pub fn method(&self) -> &[u8] {
        &self.fields.raw[self.method.start as usize..self.method.end as usize]
    }

    /// The request-target as sent.
    pub fn target(&self) -> &[u8] {
        &self.fields.raw[self.target.start as usize..self.target.end as usize]
    }

    /// The whole head as received.
    pub fn raw(&self) -> &Bytes {
        &self.fields.raw
    }

    /// True for methods that are safe to send twice (RFC 9110 §9.2.2).
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method(),
            b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
        )
    }
}

/// Tries to parse a request head at the start of `buf`. On success the head's
/// bytes are split off `buf` (what follows stays: body or pipelined data).
/// `Ok(None)`: incomplete, read more. Errors carry the status to answer.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<RequestHead>, HttpError> {
    // Header slots are left uninitialized (httparse writes what it uses):
    // no per-request allocation or memset.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_SLOTS];
    let mut req = httparse::Request::new(&mut []);
    let max = limits.max_headers.min(MAX_HEADER_SLOTS);
    let status = match req.parse_with_uninit_headers(buf, &mut slots[..max]) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(431, "too many header fields"))
        }
        Err(httparse::Error::Version) => {
            return Err(HttpError::new(505, "unsupported HTTP version"))
        }
        Err(httparse::Error::Token) => {
            return Err(HttpError::new(400, "malformed method or request-target"))
        }
        Err(httparse::Error::HeaderName) => {
            return Err(HttpError::new(400, "malformed header name"))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HttpError::new(400, "malformed header value"))
        }
        Err(httparse::Error::NewLine) => return Err(HttpError::new(400, "malformed line ending")),
        Err(_) => return Err(HttpError::new(400, "malformed request head")),
    };
    let n = match status {
        httparse::Status::Partial => {
            if target_over(buf, limits.max_uri_bytes) {
                return Err(HttpError::new(414, "request-target too long"));
            }
            if buf.len() > limits.max_head_bytes {
                return Err(HttpError::new(431, "request head too large"));
            }
            return Ok(None);
        }
        httparse::Status::Complete(n) => n,
    };
    // the target first, as when the head is still incomplete
    let target_s = req.path.unwrap_or_default();
    if target_s.len() > limits.max_uri_bytes {
        return Err(HttpError::new(414, "request-target too long"));
    }
    if n > limits.max_head_bytes {
        return Err(HttpError::new(431, "request head too large"));
    }
    let base = buf.as_ptr() as usize;
    let method = r(base, req.method.unwrap_or_default().as_bytes());
    let target = r(base, target_s.as_bytes());
    let version = Version::from_minor(req.version.unwrap_or(1));
    let fields = index_fields(buf, req.headers);
    Ok(Some(RequestHead {
        method,
        target,
        version,
        fields: fields.freeze(buf, n),
    }))
}

/// True when the request line received so far, whole or not, already
/// holds a request-target longer than `max`: the answer is 414 whatever
/// follows, so it is given without waiting for (and buffering) the rest.
/// Only the target counts, as in a whole head, not a long method: the same
/// bytes get the same answer however they are split into reads.
fn target_over(buf: &[u8], max: usize) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = buf[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let target = &line[sp + 1..];
    target
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(target.len())
        > max
}

/// A parsed response head.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    reason: Range<u32>,
    /// Protocol version.
    pub version: Version,
    /// Header fields.
    pub fields: Fields,
}

impl ResponseHead {
    /// The reason phrase as sent.
    pub fn reason(&self) -> &[u8] {
        &self.fields.raw[self.reason.start as usize..self.reason.end as usize]
    }

    /// The whole head as received.
    pub fn raw(&self) -> &Bytes {
        &self.fields.raw
    }
}

/// Tries to parse a response head at the start of `buf` (from a parent or
/// origin). Errors are the parent's fault: callers answer 502.
pub fn parse_response(
    buf: &mut BytesMut,
    max_head_bytes: usize,
) -> Result<Option<ResponseHead>, HttpError> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADER_SLOTS];
    let mut res = httparse::Response::new(&mut []);
    let n = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_head_bytes {
                return Err(HttpError::new(502, "parent response head too large"));
            }
            return Ok(None);
        }
        Err(_) => return Err(HttpError::new(502, "malformed response head from parent")),
    };
    // whole in one read or not, the same limit
    if n > max_head_bytes {
        return Err(HttpError::new(502, "parent response head too large"));
    }
    let base = buf.as_ptr() as usize;
    let status = res.code.unwrap_or(0);
    // an empty reason may not point into `buf` (httparse gives a static "")
    let reason = match res.reason {
        Some(s) if !s.is_empty() => r(base, s.as_bytes()),
        _ => 0..0,
    };
    let version = Version::from_minor(res.version.unwrap_or(1));
    let fields = index_fields(buf, res.headers);
    Ok(Some(ResponseHead {
        status,
        reason,
        version,
        fields: fields.freeze(buf, n),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_in_any_case_and_near_misses() {
        let all = [
            Known::Connection,
            Known::KeepAlive,
            Known::ProxyConnection,
            Known::Te,
            Known::Trailer,
            Known::TransferEncoding,
            Known::Upgrade,
            Known::ProxyAuthorization,
            Known::ProxyAuthenticate,
            Known::ContentLength,
            Known::Host,
            Known::Via,
            Known::XForwardedFor,
            Known::Expect,
            Known::ContentType,
            Known::CarpoolClient,
        ];
        for k in all {
            assert_eq!(Known::of(k.name().as_bytes()), k);
            assert_eq!(Known::of(k.name().to_ascii_uppercase().as_bytes()), k);
            // one letter off, one longer, one shorter: not it
            let mut off = k.name().as_bytes().to_vec();
            let last = off.len() - 1;
            off[last] ^= 1;
            assert_eq!(Known::of(&off), Known::Other, "{off:?}");
            assert_eq!(Known::of(format!("{}s", k.name()).as_bytes()), Known::Other);
            assert_eq!(Known::of(&k.name().as_bytes()[..last]), Known::Other);
        }
        for n in [
            "",
            "x",
            "Date",
            "Content-Encoding",
            "content_type",
            "content-typ\u{7f}",
            "X-Cache-Lookup",
            "Proxy-Status",
        ] {
            assert_eq!(Known::of(n.as_bytes()), Known::Other, "{n}");
        }
        // a lookup by kind finds what a lookup by name finds
        let mut b = BytesMut::from(
            &b"GET / HTTP/1.1\r\nhOsT: a\r\nX-Other: 1\r\nCONNECTION: close, x-other\r\nconnection: te\r\n\r\n"[..],
        );
        let h = parse_request(&mut b, &Limits::default()).unwrap().unwrap();
        assert_eq!(h.fields.get(Known::Host), Some(&b"a"[..]));
        assert_eq!(h.fields.get("host"), Some(&b"a"[..]));
        assert_eq!(h.fields.get_all(Known::Connection).count(), 2);
        assert!(h.fields.has_token(Known::Connection, "te"));
        assert!(h.fields.has(Known::Connection) && !h.fields.has(Known::Via));
        assert_eq!(h.fields.get(Known::Via), None);
        assert_eq!(h.fields.get(Known::Other), None, "Other is not a name");
        assert_eq!(h.fields.get("x-other"), Some(&b"1"[..]));
    }

    #[test]
    fn request_head_and_leftover() {
        let mut b = BytesMut::from(
            &b"GET http://h/x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\nBODY"[..],
        );
        let h = parse_request(&mut b, &Limits::default()).unwrap().unwrap();
        assert_eq!(h.method(), b"GET");
        assert_eq!(h.target(), b"http://h/x");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(
            h.fields.get_all("x-a").collect::<Vec<_>>(),
            vec![&b"1"[..], b"2"]
        );
        assert_eq!(&b[..], b"BODY");
    }

    #[test]
    fn kept_fields_are_copied_as_they_came_and_bare_lf_lines_rewritten() {
        let mut b = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nA: 1\r\nB:2  \r\nDrop: x\r\nC: 3\nD: 4\r\nE: 5\r\n\r\n"[..],
        );
        let h = parse_response(&mut b, 1024).unwrap().unwrap();
        let mut out = Vec::new();
        h.fields.write_kept(&mut out, |_, n, _| n != b"Drop");
        assert_eq!(out, b"A: 1\r\nB:2  \r\nC: 3\r\nD: 4\r\nE: 5\r\n");
        let mut out = Vec::new();
        h.fields
            .write_kept(&mut out, |_, n, _| n == b"E" || n == b"A");
        assert_eq!(out, b"A: 1\r\nE: 5\r\n");
        let mut out = Vec::new();
        h.fields.write_kept(&mut out, |_, _, _| false);
        assert!(out.is_empty());
    }

    #[test]
    fn request_limits() {
        let limits = Limits {
            max_headers: 2,
            max_uri_bytes: 10,
            max_head_bytes: 200,
            ..Limits::default()
        };
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n"[..]);
        assert_eq!(parse_request(&mut b, &limits).unwrap_err().status, 431);
        let mut b = BytesMut::from(&b"GET http://example.com/long HTTP/1.1\r\n\r\n"[..]);
        assert_eq!(parse_request(&mut b, &limits).unwrap_err().status, 414);
        let mut b = BytesMut::from(&[&b"GET / HTTP/1.1\r\nx: "[..], &[b'a'; 300]].concat()[..]);
        assert_eq!(parse_request(&mut b, &limits).unwrap_err().status, 431);
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n"[..]);
        assert_eq!(parse_request(&mut b, &limits).unwrap_err().status, 400);
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: h\r\n"[..]);
        assert!(parse_request(&mut b, &limits).unwrap().is_none());
    }

    /// Found by fuzzing (fuzz/fuzz_targets/request_head.rs): a request
    /// line with a long method and a short target was refused with 414
    /// when it arrived without its line end, and accepted when it arrived
    /// whole.
    #[test]
    fn the_same_head_gets_the_same_answer_however_it_arrives() {
        let limits = Limits {
            max_uri_bytes: 33,
            ..Limits::default()
        };
        let method = "M".repeat(200);
        let head = format!("{method} /x HTTP/1.1\r\nHost: h\r\n\r\n");
        let whole = parse_request(&mut BytesMut::from(head.as_bytes()), &limits);
        assert_eq!(whole.unwrap().unwrap().method(), method.as_bytes());
        for k in 0..head.len() {
            let part = parse_request(&mut BytesMut::from(&head.as_bytes()[..k]), &limits);
            assert!(matches!(part, Ok(None)), "{k} bytes: {part:?}");
        }
        // a target over the limit is refused before its line ends, and
        // with the same status once the head is whole
        let long = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(40));
        for k in [38, 45, 56, long.len()] {
            let e = parse_request(&mut BytesMut::from(&long.as_bytes()[..k]), &limits);
            assert_eq!(e.unwrap_err().status, 414, "{k} bytes");
        }
        let tight = Limits {
            max_head_bytes: 40,
            ..limits
        };
        let e = parse_request(&mut BytesMut::from(long.as_bytes()), &tight);
        assert_eq!(e.unwrap_err().status, 414);
    }

    /// Found by fuzzing (fuzz/fuzz_targets/response_head.rs): a status
    /// line without a reason phrase made the reason's offset overflow
    /// (a panic in debug builds, a range thrown away in release ones).
    #[test]
    fn a_response_without_reason_phrase() {
        for text in [
            &b"HTTP/1.1 200\r\n\r\n"[..],
            b"HTTP/1.1 204 \r\nX: y\r\n\r\n",
        ] {
            let h = parse_response(&mut BytesMut::from(text), 1024)
                .unwrap()
                .unwrap();
            assert_eq!(h.reason(), b"");
        }
    }

    /// Found by fuzzing (fuzz/fuzz_targets/response_head.rs): a response
    /// head over the limit was refused when it came in pieces, but accepted
    /// when it came whole in one read.
    #[test]
    fn a_response_head_over_the_limit_is_refused_however_it_arrives() {
        let text = &b"HTTP/1.1 200 OK\r\nX-Long: a fairly long value\r\n\r\n"[..];
        let max = 32;
        let part = parse_response(&mut BytesMut::from(&text[..max + 1]), max);
        assert_eq!(part.unwrap_err().status, 502);
        let whole = parse_response(&mut BytesMut::from(text), max);
        assert_eq!(whole.unwrap_err().status, 502);
        // at the limit exactly, it passes
        let whole = parse_response(&mut BytesMut::from(text), text.len());
        assert!(whole.unwrap().is_some());
    }

    #[test]
    fn response_head() {
        let mut b = BytesMut::from(&b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..]);
        let h = parse_response(&mut b, 1024).unwrap().unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(h.reason(), b"Not Found");
        assert_eq!(h.fields.get("content-length"), Some(&b"0"[..]));
    }
}
