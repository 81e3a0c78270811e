//! What answers from the store are made of: how they are logged and
//! labelled ([`Served`]), the heads written from a stored record (200, 304,
//! 206, 416), `Range` requests (RFC 9110 §14), and a stored body sent from
//! memory, or from disk with sendfile(2). Choosing among them is [`super::hit`]'s
//! (stored objects) and [`super::follow`]'s (objects being filled).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use cache_store::Body;
use httpx::headers::{push_field, push_u64, Framing};
use httpx::{Fields, RequestHead, Version};
use proxy::log::Code;
use proxy::Session;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::meta::{self, Meta};

/// What the `X-Cache` field of an answer says the cache did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XCache {
    /// Answered from the store.
    Hit,
    /// Fetched from the origin.
    Miss,
    /// A stored object revalidated (or replaced) by the origin.
    Refresh,
}

impl XCache {
    /// The field's value.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            XCache::Hit => b"HIT",
            XCache::Miss => b"MISS",
            XCache::Refresh => b"REFRESH",
        }
    }

    /// The field, for a response relayed from the origin (it replaces any
    /// `X-Cache` an upstream cache sent).
    pub fn field(self) -> &'static [(&'static str, &'static [u8])] {
        match self {
            XCache::Hit => &[("X-Cache", b"HIT")],
            XCache::Miss => &[("X-Cache", b"MISS")],
            XCache::Refresh => &[("X-Cache", b"REFRESH")],
        }
    }
}

/// How an answer is logged, and its `X-Cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// The access log's result code.
    pub code: Code,
    /// What `X-Cache` says.
    pub x_cache: XCache,
}

impl Served {
    /// Logged as `code`, labelled `x_cache`.
    pub const fn new(code: Code, x_cache: XCache) -> Served {
        Served { code, x_cache }
    }
}

/// Most ranges served in one multipart answer; more and the `Range` is
/// ignored (the whole object is sent, as RFC 9110 allows).
const MAX_RANGES: usize = 16;
/// Boundary of multipart/byteranges answers.
const BOUNDARY: &str = "CARPOOL_BYTERANGES_7d3a9c";
/// Most bytes one sendfile call is asked for.
const SENDFILE_CHUNK: u64 = 1 << 30;
/// A disk body not checked yet is checked and sent this many bytes at a
/// time (four of the store's blocks).
const CHECK_CHUNK: u64 = 1 << 20;

/// What goes into every head we write from a stored object.
pub struct Reply<'a> {
    /// The stored record.
    pub meta: &'a Meta,
    /// `Age` in seconds.
    pub age: u64,
    /// What `X-Cache` says.
    pub x_cache: XCache,
    /// Our `Via` entry.
    pub via: &'a str,
    /// Keep the client connection open.
    pub keep: bool,
    /// The client's protocol version (for `Via` and `Connection`).
    pub version: Version,
}

impl<'a> Reply<'a> {
    /// The answer to the request `head` from the record `m`, logged in
    /// `s` as `served`; `keep`: whether the client connection stays open.
    pub fn start(
        s: &mut Session,
        head: &RequestHead,
        m: &'a Meta,
        served: Served,
        via: &'a str,
        keep: bool,
    ) -> Reply<'a> {
        s.log.code = served.code;
        s.log.status = m.status;
        s.log
            .set_content_type(m.field("content-type").unwrap_or_default());
        Reply {
            meta: m,
            age: m.age(std::time::SystemTime::now()).as_secs(),
            x_cache: served.x_cache,
            via,
            keep,
            version: head.version,
        }
    }
}

fn tail(out: &mut Vec<u8>, r: &Reply<'_>) {
    out.extend_from_slice(b"Age: ");
    push_u64(out, r.age);
    out.extend_from_slice(b"\r\n");
    push_field(out, b"X-Cache", r.x_cache.as_bytes());
    httpx::headers::push_via(out, r.version, r.via);
    httpx::headers::push_connection(out, r.keep, r.version);
}

fn date_if_missing(out: &mut Vec<u8>, m: &Meta) {
    if m.field("date").is_none() {
        out.extend_from_slice(b"Date: ");
        httpx::date::write(out, std::time::SystemTime::now());
        out.extend_from_slice(b"\r\n");
    }
}

/// The head of the stored response itself, its body sent with `framing`
/// (a length; chunked or until close for an object still arriving).
pub fn head_full(out: &mut Vec<u8>, r: &Reply<'_>, framing: Framing) {
    out.extend_from_slice(&r.meta.head);
    date_if_missing(out, r.meta);
    httpx::headers::push_framing_fields(out, framing);
    tail(out, r);
    out.extend_from_slice(b"\r\n");
}

/// Fields a 304 carries from the stored response (RFC 9110 §15.4.5).
const KEPT_IN_304: [&str; 6] = [
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
];

/// A 304 for a conditional request the stored object satisfies.
pub fn head_304(out: &mut Vec<u8>, r: &Reply<'_>) {
    out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\n");
    for (n, v) in meta::fields(&r.meta.head) {
        if KEPT_IN_304
            .iter()
            .any(|k| n.eq_ignore_ascii_case(k.as_bytes()))
            || n.eq_ignore_ascii_case(b"last-modified")
        {
            push_field(out, n, v);
        }
    }
    date_if_missing(out, r.meta);
    tail(out, r);
    out.extend_from_slice(b"\r\n");
}

fn fields_but_length(out: &mut Vec<u8>, m: &Meta) {
    for (n, v) in meta::fields(&m.head) {
        if !n.eq_ignore_ascii_case(b"content-range") {
            push_field(out, n, v);
        }
    }
    date_if_missing(out, m);
}

/// A 206 head: one range, or the multipart whole of `body_len` bytes.
pub fn head_206(out: &mut Vec<u8>, r: &Reply<'_>, ranges: &[(u64, u64)], total: u64, len: u64) {
    out.extend_from_slice(b"HTTP/1.1 206 Partial Content\r\n");
    if let [(s, e)] = ranges {
        fields_but_length(out, r.meta);
        content_range(out, *s, *e, total);
    } else {
        for (n, v) in meta::fields(&r.meta.head) {
            if !n.eq_ignore_ascii_case(b"content-type") && !n.eq_ignore_ascii_case(b"content-range")
            {
                push_field(out, n, v);
            }
        }
        date_if_missing(out, r.meta);
        out.extend_from_slice(b"Content-Type: multipart/byteranges; boundary=");
        out.extend_from_slice(BOUNDARY.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_u64(out, len);
    out.extend_from_slice(b"\r\n");
    tail(out, r);
    out.extend_from_slice(b"\r\n");
}

/// A 416 head for a `Range` no byte of the object satisfies.
pub fn head_416(out: &mut Vec<u8>, r: &Reply<'_>, total: u64) {
    out.extend_from_slice(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */");
    push_u64(out, total);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\n");
    date_if_missing(out, r.meta);
    tail(out, r);
    out.extend_from_slice(b"\r\n");
}

fn content_range(out: &mut Vec<u8>, s: u64, e: u64, total: u64) {
    out.extend_from_slice(b"Content-Range: bytes ");
    push_u64(out, s);
    out.push(b'-');
    push_u64(out, e);
    out.push(b'/');
    push_u64(out, total);
    out.extend_from_slice(b"\r\n");
}

/// The part header before each range of a multipart answer.
fn part_header(m: &Meta, s: u64, e: u64, total: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(b"\r\n--");
    p.extend_from_slice(BOUNDARY.as_bytes());
    p.extend_from_slice(b"\r\n");
    if let Some(ct) = m.field("content-type") {
        push_field(&mut p, b"Content-Type", ct);
    }
    content_range(&mut p, s, e, total);
    p.extend_from_slice(b"\r\n");
    p
}

fn closing() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

/// Bytes of a multipart answer for `ranges`.
pub fn multipart_len(m: &Meta, ranges: &[(u64, u64)], total: u64) -> u64 {
    ranges
        .iter()
        .map(|&(s, e)| part_header(m, s, e, total).len() as u64 + (e - s + 1))
        .sum::<u64>()
        + closing().len() as u64
}

/// What a `Range` field asks of an object of `total` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Send the whole object (no Range, not bytes, malformed, too many).
    Whole,
    /// Inclusive byte ranges, in the order asked.
    Some(Vec<(u64, u64)>),
    /// None of the ranges overlaps the object: 416.
    Unsatisfiable,
}

/// Parses `Range` against an object of `total` bytes (RFC 9110 §14.1.2).
pub fn parse_range(v: &[u8], total: u64) -> Ranges {
    let Some(spec) = v.trim_ascii().strip_prefix(b"bytes=") else {
        return Ranges::Whole;
    };
    let mut out = Vec::new();
    for part in spec.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            continue;
        }
        let Some(dash) = part.iter().position(|&b| b == b'-') else {
            return Ranges::Whole;
        };
        let (a, b) = (&part[..dash], &part[dash + 1..]);
        let num = |x: &[u8]| -> Option<u64> { std::str::from_utf8(x).ok()?.parse().ok() };
        let range = if a.is_empty() {
            // suffix: the last N bytes
            let Some(n) = num(b) else {
                return Ranges::Whole;
            };
            if n == 0 || total == 0 {
                None
            } else {
                Some((total.saturating_sub(n), total - 1))
            }
        } else {
            let Some(s) = num(a) else {
                return Ranges::Whole;
            };
            let e = if b.is_empty() {
                u64::MAX
            } else {
                match num(b) {
                    Some(e) if e >= s => e,
                    _ => return Ranges::Whole,
                }
            };
            (s < total).then(|| (s, e.min(total - 1)))
        };
        if let Some(r) = range {
            out.push(r);
        }
        if out.len() > MAX_RANGES {
            return Ranges::Whole;
        }
    }
    if out.is_empty() {
        Ranges::Unsatisfiable
    } else {
        Ranges::Some(out)
    }
}

/// True when `If-Range` (if any) lets the `Range` apply: a strong entity
/// tag equal to the stored one, or the stored `Last-Modified` date itself.
pub fn if_range_allows(m: &Meta, fields: &Fields) -> bool {
    let Some(v) = fields.get("if-range") else {
        return true;
    };
    let v = v.trim_ascii();
    if v.starts_with(b"\"") {
        return m.field("etag").is_some_and(|e| e == v);
    }
    if v.starts_with(b"W/") {
        return false;
    }
    match (httpx::date::parse(v), m.field("last-modified")) {
        (Some(d), Some(lm)) => httpx::date::parse(lm) == Some(d),
        _ => false,
    }
}

/// Writes bytes `start..start+len` of a stored body. A body on disk that
/// is not known sound yet (found at start, not read since) is checked a
/// chunk at a time just before each chunk is sent; a chunk that fails is
/// never sent, and the error is `InvalidData` (the store dropped the
/// object). A sound body goes out in one sendfile loop, unchecked.
pub async fn send_body(
    client: &mut TcpStream,
    body: &Body,
    start: u64,
    len: u64,
    idle: Duration,
) -> io::Result<()> {
    match body {
        Body::Memory(b) => {
            let s = start as usize;
            let e = (start + len) as usize;
            let part = b.get(s..e).ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "stored body shorter")
            })?;
            timed(idle, client.write_all(part)).await
        }
        Body::Disk(d) if d.is_checked() => {
            sendfile_all(client, d.file(), d.body_offset() + start, len, idle).await
        }
        Body::Disk(d) => {
            let (mut off, end) = (start, start + len);
            while off < end {
                let n = (end - off).min(CHECK_CHUNK);
                d.check(off, n)?;
                sendfile_all(client, d.file(), d.body_offset() + off, n, idle).await?;
                off += n;
            }
            Ok(())
        }
    }
}

/// Writes the ranges of a 206 (one range bare, several as multipart parts).
pub async fn send_ranges(
    client: &mut TcpStream,
    m: &Meta,
    body: &Body,
    ranges: &[(u64, u64)],
    total: u64,
    idle: Duration,
) -> io::Result<()> {
    if let [(s, e)] = ranges {
        return send_body(client, body, *s, e - s + 1, idle).await;
    }
    for &(s, e) in ranges {
        timed(idle, client.write_all(&part_header(m, s, e, total))).await?;
        send_body(client, body, s, e - s + 1, idle).await?;
    }
    timed(idle, client.write_all(&closing())).await
}

async fn timed(
    idle: Duration,
    f: impl std::future::Future<Output = io::Result<()>>,
) -> io::Result<()> {
    match tokio::time::timeout(idle, f).await {
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
        Ok(r) => r,
    }
}

/// sendfile(2) from `file` at `off` to the socket until `len` bytes are out.
async fn sendfile_all(
    client: &mut TcpStream,
    file: &std::fs::File,
    mut off: u64,
    mut len: u64,
    idle: Duration,
) -> io::Result<()> {
    let in_fd = file.as_raw_fd();
    while len > 0 {
        match tokio::time::timeout(idle, client.writable()).await {
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            Ok(r) => r?,
        }
        let out_fd = client.as_raw_fd();
        let want = len.min(SENDFILE_CHUNK) as usize;
        let r = client.try_io(Interest::WRITABLE, || {
            let mut o = off as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the call
            // and `o` is a valid off_t the kernel updates.
            let n = unsafe { libc::sendfile(out_fd, in_fd, &mut o, want) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as u64)
            }
        });
        match r {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stored body shorter than its record",
                ))
            }
            Ok(n) => {
                off += n;
                len -= n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(b"bytes=0-9", 100), Ranges::Some(vec![(0, 9)]));
        assert_eq!(parse_range(b"bytes=90-", 100), Ranges::Some(vec![(90, 99)]));
        assert_eq!(parse_range(b"bytes=-10", 100), Ranges::Some(vec![(90, 99)]));
        assert_eq!(
            parse_range(b"bytes=-1000", 100),
            Ranges::Some(vec![(0, 99)])
        );
        assert_eq!(
            parse_range(b"bytes=95-200", 100),
            Ranges::Some(vec![(95, 99)])
        );
        assert_eq!(
            parse_range(b"bytes=0-0, 5-9", 100),
            Ranges::Some(vec![(0, 0), (5, 9)])
        );
        assert_eq!(parse_range(b"bytes=100-", 100), Ranges::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=5-1", 100), Ranges::Whole);
        assert_eq!(parse_range(b"items=0-1", 100), Ranges::Whole);
        assert_eq!(parse_range(b"bytes=a-b", 100), Ranges::Whole);
        let many = format!(
            "bytes={}",
            (0..20)
                .map(|i| format!("{i}-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(parse_range(many.as_bytes(), 100), Ranges::Whole);
    }
}
