//! Talking to origins: resolving the URL's host, keep-alive connections per
//! origin and worker, the request head a cache sends (origin-form with
//! `Host`, or absolute-form to a configured upstream proxy), and reading the
//! response head within the first-byte timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use carp::RequestUri;
use httpx::conn::{Conn, ResponseReadError};
use httpx::framing::BodyLen;
use httpx::headers::push_field;
use httpx::{HttpError, RequestHead, ResponseHead};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Most distinct origins one worker keeps idle connections for.
pub const MAX_POOLED_ORIGINS: usize = 4096;
/// Largest response head accepted from an origin.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Request fields a cache fill never forwards: the client's own conditions
/// and ranges (the cache wants the whole, current object to store; it
/// answers the client's conditions itself).
const CLIENT_CONDITIONS: [&str; 6] = [
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// Where a request goes: the origin itself, or the upstream proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    host: String,
    port: u16,
    /// True for the upstream proxy (absolute-form requests).
    pub proxy: bool,
}

impl Hop {
    /// The hop for `uri`: the upstream proxy when configured, else the origin.
    pub fn for_uri(uri: &RequestUri, upstream: Option<&(String, u16)>) -> Hop {
        match upstream {
            Some((h, p)) => Hop {
                host: h.clone(),
                port: *p,
                proxy: true,
            },
            None => Hop {
                host: String::from_utf8_lossy(uri.host())
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: uri.port(),
                proxy: false,
            },
        }
    }

    /// `host:port`, for logs.
    pub fn name(&self) -> &str {
        &self.host
    }
}

/// Idle origin connections of one worker, by hop.
pub type Pools = httpx::pool::KeyedPool<Hop>;

/// Timeouts of an origin exchange.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// First response byte.
    pub first_byte: Duration,
}

/// An origin's response head, with the connection its body follows on.
pub struct Response {
    /// The connection (body bytes may already be in its buffer).
    pub conn: Conn,
    /// The head.
    pub head: ResponseHead,
}

/// Why an exchange failed, and whether the request may have been seen.
pub struct Failure {
    /// The status and reason for the client.
    pub error: HttpError,
    /// A pooled connection that turned out closed: retry on a fresh one.
    pub stale: bool,
}

fn fail(status: u16, reason: &'static str) -> Failure {
    Failure {
        error: HttpError::new(status, reason),
        stale: false,
    }
}

/// Opens a connection to `hop` (every address its name resolves to, in
/// order) within `timeout`.
pub async fn connect(hop: &Hop, timeout: Duration) -> Result<Conn, Failure> {
    let addrs = match tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((hop.host.as_str(), hop.port)),
    )
    .await
    {
        Err(_) => return Err(fail(504, "origin name lookup timeout")),
        Ok(Err(_)) => return Err(fail(502, "cannot resolve the origin's host name")),
        Ok(Ok(a)) => a.collect::<Vec<SocketAddr>>(),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = fail(502, "origin host has no address");
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(fail(504, "origin connect timeout")),
            Ok(Err(e)) => {
                last = fail(
                    502,
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        "origin refused the connection"
                    } else {
                        "cannot reach the origin"
                    },
                )
            }
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(Conn::new(s));
            }
        }
    }
    Err(last)
}

/// Sends `head_bytes` (a whole request head; the request has no body) to
/// `hop` and reads the response head. A pooled connection found closed is
/// replaced by a fresh one once.
pub async fn exchange(
    pools: &std::cell::RefCell<Pools>,
    hop: &Hop,
    head_bytes: &[u8],
    t: Timeouts,
) -> Result<Response, Failure> {
    let mut fresh = false;
    loop {
        let pooled = if fresh {
            None
        } else {
            pools.borrow_mut().take(hop)
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => connect(hop, t.connect).await?,
        };
        let result = async {
            conn.stream
                .write_all(head_bytes)
                .await
                .map_err(|_| Failure {
                    error: HttpError::new(502, "origin closed the connection"),
                    stale: reused,
                })?;
            match conn
                .read_response_head(t.first_byte, MAX_RESPONSE_HEAD)
                .await
            {
                Ok(Some(h)) => Ok(h),
                Ok(None) | Err(ResponseReadError::NothingRead(_)) => Err(Failure {
                    error: HttpError::new(502, "origin closed the connection before responding"),
                    stale: reused,
                }),
                Err(ResponseReadError::Truncated) => Err(fail(
                    502,
                    "origin closed the connection inside the response head",
                )),
                Err(ResponseReadError::Timeout { .. }) => Err(fail(504, "origin response timeout")),
                Err(ResponseReadError::Bad(e)) => Err(Failure {
                    error: e,
                    stale: false,
                }),
            }
        }
        .await;
        match result {
            Ok(head) => return Ok(Response { conn, head }),
            Err(f) if f.stale && !fresh => fresh = true,
            Err(f) => return Err(Failure { stale: false, ..f }),
        }
    }
}

/// What the request head sent to an origin is made of.
pub struct Outgoing<'a> {
    /// The request method.
    pub method: &'a [u8],
    /// The effective URI.
    pub uri: &'a RequestUri,
    /// The client's request.
    pub client: &'a RequestHead,
    /// The body framing sent after the head.
    pub body: BodyLen,
    /// Drop the client's conditions and ranges (a cache fill).
    pub fill: bool,
    /// Extra fields (our validators on a revalidation).
    pub extra: &'a [(&'static [u8], Vec<u8>)],
    /// Our `Via` entry.
    pub via: &'a str,
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_ip: IpAddr,
}

/// Writes the request head for `hop`.
pub fn write_head(out: &mut Vec<u8>, hop: &Hop, o: &Outgoing<'_>) {
    out.extend_from_slice(o.method);
    out.push(b' ');
    if hop.proxy {
        out.extend_from_slice(o.uri.effective());
    } else {
        out.extend_from_slice(o.uri.path_and_query());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(&authority(o.uri));
    out.extend_from_slice(b"\r\n");
    let mut prior_xff: Option<&[u8]> = None;
    for (n, v) in httpx::headers::end_to_end(&o.client.fields) {
        let skip = n.eq_ignore_ascii_case(b"host")
            || n.eq_ignore_ascii_case(b"content-length")
            || n.eq_ignore_ascii_case(b"expect")
            || (o.fill
                && CLIENT_CONDITIONS
                    .iter()
                    .any(|c| n.eq_ignore_ascii_case(c.as_bytes())));
        if skip {
            continue;
        }
        if n.eq_ignore_ascii_case(b"x-forwarded-for") {
            prior_xff = Some(v);
            continue;
        }
        push_field(out, n, v);
    }
    for (n, v) in o.extra {
        push_field(out, n, v);
    }
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(
        o.client
            .version
            .as_str()
            .trim_start_matches("HTTP/")
            .as_bytes(),
    );
    out.push(b' ');
    out.extend_from_slice(o.via.as_bytes());
    out.extend_from_slice(b"\r\nX-Forwarded-For: ");
    if let Some(p) = prior_xff {
        out.extend_from_slice(p);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(o.client_ip.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    match o.body {
        BodyLen::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            httpx::headers::push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyLen::Chunked => push_field(out, b"Transfer-Encoding", b"chunked"),
        BodyLen::Empty | BodyLen::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// `host[:port]` of the URI, the port only when not the scheme's default.
fn authority(uri: &RequestUri) -> Vec<u8> {
    let default = match uri.scheme() {
        b"https" => 443,
        b"ftp" => 21,
        _ => 80,
    };
    let mut a = uri.host().to_vec();
    if uri.port() != default {
        a.push(b':');
        a.extend_from_slice(uri.port().to_string().as_bytes());
    }
    a
}
