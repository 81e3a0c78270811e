//! Talking to a peer: connecting to it (an address, or a name resolved
//! first), sending a request head and reading the response head within the
//! first-byte timeout, a pooled connection that turns out closed replaced by
//! a fresh one once; and every failure classified by what the peer may have
//! seen of the request, so that a role can tell what is safe to retry.

use std::net::SocketAddr;
use std::time::Duration;

use httpx::conn::{Conn, ResponseReadError};
use httpx::headers::Outgoing;
use httpx::{HttpError, ResponseHead};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::access::Access;
use crate::peer::{Address, Claim, PeerInfo, PeerKind, Problem};
use crate::request::Request;
use crate::settings::{Settings, Timeouts};

/// Largest response head accepted from a peer.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A peer's response head, with the connection its body follows on.
#[derive(Debug)]
pub struct Response {
    /// The connection (body bytes may already be in its buffer).
    pub conn: Conn,
    /// The head.
    pub head: ResponseHead,
    /// The connection slot held on the peer while the response is relayed.
    pub(crate) claim: Claim,
    /// How long the connection took to open, in microseconds (at least 1;
    /// 0: a pooled one). Small: a response moves through every phase.
    pub(crate) connect_us: u32,
}

impl Response {
    /// Reads past interim (1xx) responses to the final head, for an
    /// exchange no client waits on (a background revalidation). A `101` is
    /// not final and cannot be followed here: an error.
    pub async fn skip_interim(&mut self, kind: PeerKind, t: &Timeouts) -> Result<(), HttpError> {
        while self.head.status < 200 {
            if self.head.status == 101 {
                return Err(kind.error(Problem::BrokeAfterInterim));
            }
            self.head = read_head(&mut self.conn, kind, t.first_byte, false, false)
                .await
                .map_err(|f| f.error().unwrap_or(kind.error(Problem::BrokeAfterInterim)))?;
        }
        Ok(())
    }
}

/// Why an attempt on a peer failed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing of the request reached the peer (no connection, or the head
    /// could not be written): another peer may always be tried.
    NotSent(HttpError),
    /// The request reached the peer and no usable response head came back.
    Sent {
        /// The status and reason for the client.
        error: HttpError,
        /// Whether the request's body was (at least partly) sent.
        body_sent: bool,
    },
    /// A pooled connection turned out closed before answering: the same
    /// request may go again on a fresh connection (the layer does that
    /// once; a role never sees this).
    Stale,
    /// The role's limit of connections to this peer is reached.
    AtLimit,
    /// The client broke the exchange: it went away (499, nothing is
    /// answered) or sent a malformed body (answered with this error).
    Client(HttpError),
    /// The request may not go where the peer's name leads (403): this
    /// proxy's own listener, or a loopback or link-local address the
    /// client may not reach.
    Denied(HttpError),
}

impl Failure {
    /// True when the peer took the request and gave no response head in
    /// time (a hung peer: retrying elsewhere costs another whole timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Failure::Sent { error, .. } if error.status == 504)
    }

    /// The error the client would get for this failure, if any.
    pub fn error(&self) -> Option<HttpError> {
        match self {
            Failure::NotSent(e)
            | Failure::Sent { error: e, .. }
            | Failure::Client(e)
            | Failure::Denied(e) => Some(*e),
            Failure::Stale | Failure::AtLimit => None,
        }
    }

    /// True when trying the request on another peer is safe: nothing
    /// reached this one, or it may be sent twice (an idempotent method whose
    /// body was not sent, or a CONNECT, which sends no client byte before
    /// its tunnel is up).
    pub fn retryable(&self, req: &Request) -> bool {
        match self {
            Failure::NotSent(_) | Failure::AtLimit | Failure::Stale => true,
            Failure::Sent { body_sent, .. } => req.replayable() && !body_sent,
            Failure::Client(_) | Failure::Denied(_) => false,
        }
    }
}

/// What the head of `req` is made of when it goes to `peer`:
/// absolute-form to a proxy, origin-form to an origin; `Host` the target's
/// authority either way (written into `authority`; RFC 9112 §3.2.2: the
/// target's host wins over the client's `Host`); this hop's `Via` and
/// `X-Forwarded-For`; the client's `Proxy-Authorization` to a proxy that
/// [passes credentials](PeerInfo::pass_credentials). A role adjusts it
/// before it is written ([`crate::Role::upstream_request`]).
pub fn outgoing<'a>(
    req: &'a Request,
    peer: &PeerInfo<'_>,
    settings: &'a Settings,
    authority: &'a mut Vec<u8>,
) -> Outgoing<'a> {
    let kind = peer.kind;
    origin_authority(&req.uri, authority);
    let target = if kind.is_proxy() {
        req.uri.effective()
    } else {
        req.uri.path_and_query()
    };
    Outgoing {
        method: req.method(),
        target,
        host: authority,
        drop: &[],
        extra: b"",
        via: settings.via.entry(),
        xff: settings.x_forwarded_for,
        client: req.client,
        // a carpool cache behind this frontend checks resolved addresses
        // for the client this one saw
        remote_client: kind == PeerKind::Parent && req.remote(),
        body: req.body,
        // a protocol switch (WebSocket) is offered on requests without a body
        upgrade: match req.body {
            httpx::framing::BodyLen::Empty => httpx::headers::upgrade_offer(&req.head),
            _ => None,
        },
        proxy_authorization: peer.pass_credentials && kind.is_proxy(),
    }
}

/// `host[:port]` of a URI into `out`, the port only when it is not the
/// scheme's default.
fn origin_authority(uri: &carp::RequestUri, out: &mut Vec<u8>) {
    let default = match uri.scheme() {
        b"https" => 443,
        b"ftp" => 21,
        _ => 80,
    };
    out.extend_from_slice(uri.host());
    if uri.port() != default {
        out.push(b':');
        httpx::headers::push_u64(out, uri.port() as u64);
    }
}

/// Which addresses a request may be sent to once its origin's name is
/// resolved (configured peers, parents and upstream proxies, are not
/// checked: the administrator named them).
#[derive(Clone, Copy, Debug)]
pub struct Reach<'a> {
    /// The rules.
    pub access: &'a Access,
    /// The request's client is not on this host.
    pub remote: bool,
}

impl<'a> Reach<'a> {
    /// What `req` may reach under `settings`.
    pub fn of(req: &Request, settings: &'a Settings) -> Reach<'a> {
        Reach {
            access: &settings.access,
            remote: req.remote(),
        }
    }
}

/// Opens a connection to `peer` within `timeout` (the name lookup
/// included; every address a name resolves to is tried in order, but for
/// an origin only those `reach` allows).
pub async fn connect(
    peer: &PeerInfo<'_>,
    timeout: Duration,
    reach: Reach<'_>,
) -> Result<Conn, Failure> {
    let kind = peer.kind;
    let deadline = tokio::time::Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = match peer.address {
        Address::Socket(a) => vec![a],
        Address::Name(host, port) => {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
                Err(_) => return Err(Failure::NotSent(kind.error(Problem::NameLookupTimeout))),
                Ok(Err(_)) => return Err(Failure::NotSent(kind.error(Problem::NameUnresolved))),
                Ok(Ok(a)) => a.collect(),
            }
        }
    };
    let addrs = if kind == PeerKind::Origin {
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match reach.access.reachable(*a, reach.remote) {
                Ok(()) => true,
                Err(e) => {
                    refused = Some(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (true, Some(e)) => return Err(Failure::Denied(e)),
            _ => allowed,
        }
    } else {
        addrs
    };
    let mut last = kind.error(Problem::NoAddress);
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(Failure::NotSent(kind.error(Problem::ConnectTimeout))),
            Ok(Err(e)) => last = kind.error(connect_problem(&e)),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(Conn::new(s));
            }
        }
    }
    Err(Failure::NotSent(last))
}

fn connect_problem(e: &std::io::Error) -> Problem {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Problem::Refused,
        std::io::ErrorKind::TimedOut => Problem::ConnectTimeout,
        _ => Problem::Unreachable,
    }
}

/// Writes a request head on `conn` (see [`sent`]).
pub(crate) async fn send_head(
    conn: &mut Conn,
    kind: PeerKind,
    head: &[u8],
    reused: bool,
) -> Result<(), Failure> {
    sent(conn.stream.write_all(head).await, kind, reused)
}

/// What writing a request head came to. On a pooled (`reused`)
/// connection a failed write means the peer had closed it:
/// [`Failure::Stale`].
fn sent(written: std::io::Result<()>, kind: PeerKind, reused: bool) -> Result<(), Failure> {
    match written {
        Ok(()) => Ok(()),
        Err(_) if reused => Err(Failure::Stale),
        Err(e) => Err(Failure::NotSent(kind.error(connect_problem(&e)))),
    }
}

/// Reads a response head within `first_byte` (see [`received`]).
pub(crate) async fn read_head(
    conn: &mut Conn,
    kind: PeerKind,
    first_byte: Duration,
    reused: bool,
    body_sent: bool,
) -> Result<ResponseHead, Failure> {
    let read = conn.read_response_head(first_byte, MAX_RESPONSE_HEAD).await;
    received(read, kind, reused, body_sent)
}

/// What reading a response head came to, after a request whose body was
/// sent or not (`body_sent`). Nothing at all on a pooled (`reused`)
/// connection is [`Failure::Stale`] (requests with a body never ride a
/// pooled connection: it could not be sent again).
fn received(
    read: Result<Option<ResponseHead>, ResponseReadError>,
    kind: PeerKind,
    reused: bool,
    body_sent: bool,
) -> Result<ResponseHead, Failure> {
    let sent = |problem| Failure::Sent {
        error: kind.error(problem),
        body_sent,
    };
    match read {
        Ok(Some(h)) => Ok(h),
        Ok(None) | Err(ResponseReadError::NothingRead(_)) if reused => Err(Failure::Stale),
        Ok(None) | Err(ResponseReadError::NothingRead(_)) => {
            Err(sent(Problem::ClosedBeforeResponse))
        }
        Err(ResponseReadError::Truncated) => Err(sent(Problem::ClosedInHead)),
        Err(ResponseReadError::Timeout { .. }) => Err(sent(Problem::ResponseTimeout)),
        Err(ResponseReadError::Bad(error)) => Err(Failure::Sent { error, body_sent }),
    }
}

/// Sends `head` (a whole request without a body) to `peer` and reads the
/// response head: on `idle` (a pooled connection) if given, else on a new
/// connection; a pooled connection found closed is replaced by a new one
/// once.
pub async fn exchange(
    idle: Option<Conn>,
    peer: &PeerInfo<'_>,
    head: &[u8],
    t: &Timeouts,
    reach: Reach<'_>,
) -> Result<Response, Failure> {
    let mut idle = idle;
    loop {
        let reused = idle.is_some();
        let started = std::time::Instant::now();
        let (mut conn, connect_us) = match idle.take() {
            Some(c) => (c, 0),
            None => (connect(peer, t.connect, reach).await?, micros(started)),
        };
        // the I/O awaited right here: no future of our own in between
        let answer = match sent(conn.stream.write_all(head).await, peer.kind, reused) {
            Ok(()) => {
                let read = conn
                    .read_response_head(t.first_byte, MAX_RESPONSE_HEAD)
                    .await;
                received(read, peer.kind, reused, false)
            }
            Err(f) => Err(f),
        };
        match answer {
            Ok(head) => {
                return Ok(Response {
                    conn,
                    head,
                    claim: Claim::unlimited(),
                    connect_us,
                })
            }
            Err(Failure::Stale) => {} // again, on a new connection
            Err(f) => return Err(f),
        }
    }
}

/// The attempts made for one request, within its `forward_timeout`, and
/// the error the client gets when none succeeded.
#[derive(Debug)]
pub(crate) struct Tally {
    tried: usize,
    at_limit: usize,
    last: Option<HttpError>,
    deadline: tokio::time::Instant,
}

impl Tally {
    /// Attempts that may go on until `forward_timeout` from now.
    pub(crate) fn new(forward_timeout: Duration) -> Tally {
        Tally {
            tried: 0,
            at_limit: 0,
            last: None,
            deadline: tokio::time::Instant::now() + forward_timeout,
        }
    }

    /// The timeouts of the next attempt: the first-byte wait cut to what is
    /// left of the budget; `None` when nothing is left.
    pub(crate) fn timeouts(&mut self, t: &Timeouts) -> Option<Timeouts> {
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            self.last = Some(HttpError::new(504, "forward_timeout reached"));
            return None;
        }
        Some(Timeouts {
            connect: t.connect.min(left),
            first_byte: t.first_byte.min(left),
        })
    }

    /// Counts a failed attempt.
    pub(crate) fn failed(&mut self, f: &Failure) {
        self.tried += 1;
        match f {
            Failure::AtLimit => self.at_limit += 1,
            f => self.last = f.error().or(self.last),
        }
    }

    /// The error to answer with: `none` when no peer was offered at all, a
    /// 503 when every peer tried was at its limit, else the last failure's.
    pub(crate) fn error(&self, none: HttpError) -> HttpError {
        if self.tried == 0 {
            none
        } else if self.at_limit == self.tried {
            HttpError::new(503, "every candidate is at its max_conn")
        } else {
            self.last.unwrap_or(none)
        }
    }
}

/// Microseconds since `t`, at least 1 (0 means "no connection was opened").
pub(crate) fn micros(t: std::time::Instant) -> u32 {
    u32::try_from(t.elapsed().as_micros())
        .unwrap_or(u32::MAX)
        .max(1)
}
