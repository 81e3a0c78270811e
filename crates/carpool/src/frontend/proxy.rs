//! One client connection through the frontend, as explicit phases per request:
//! read head → admit (ACL, framing, loop check) → route (key, ranking) →
//! forward (parents in ranking order, retrying what is safe to retry) →
//! respond (stream the parent's response) → log.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use carp::RequestUri;
use httpx::accesslog::{Entry, Writer};
use httpx::body::{self, Out, RelayError};
use httpx::conn::{Conn, ResponseReadError};
use httpx::error::HttpError;
use httpx::framing::{self, BodyLen};
use httpx::head::Known;
use httpx::headers::{self, Framing};
use httpx::pool::Pool;
use httpx::{RequestHead, ResponseHead, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Shared;
use crate::config::settings::ListenMode;

/// What one worker thread owns: its parent connection pools and log buffer.
pub struct Worker {
    /// Configuration and state shared by all workers.
    pub shared: Arc<Shared>,
    /// Idle parent connections of this worker.
    pub pool: RefCell<Pool>,
    /// This worker's access log buffer.
    pub log: RefCell<Writer>,
    /// Parent connections of this worker in use by a request, per parent.
    pub in_use: Vec<Rc<Cell<usize>>>,
    /// Whether this worker is stopping.
    pub stop: Rc<crate::server::LocalStop>,
}

impl Worker {
    /// Claims a connection slot to parent `p`: `None` when this worker already
    /// holds its share of the parent's `max_conn` (in use plus idle).
    pub fn claim(&self, p: usize, pooled: bool) -> Option<InUse> {
        let open = self.in_use[p].get() + self.pool.borrow().idle_count(p);
        if !pooled && open >= self.shared.parents[p].max_conn_per_worker {
            return None;
        }
        self.in_use[p].set(self.in_use[p].get() + 1);
        Some(InUse(self.in_use[p].clone()))
    }
}

/// A parent connection slot in use; released when dropped.
pub struct InUse(Rc<Cell<usize>>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What the access log says about one request.
struct Record {
    start: SystemTime,
    t0: Instant,
    code: &'static str,
    status: u16,
    bytes: u64,
    method: Vec<u8>,
    url: Vec<u8>,
    peer: Option<usize>,
    content_type: Vec<u8>,
    reason: &'static str,
    /// Reused for the heads written for this connection's requests.
    head_out: Vec<u8>,
}

impl Record {
    fn new() -> Self {
        Record {
            start: SystemTime::UNIX_EPOCH,
            t0: Instant::now(),
            code: "TCP_MISS",
            status: 0,
            bytes: 0,
            method: Vec::new(),
            url: Vec::new(),
            peer: None,
            content_type: Vec::new(),
            reason: "",
            head_out: Vec::new(),
        }
    }

    /// Starts the record of the next request on this connection (its
    /// buffers are reused: no allocation per request once they are warm).
    fn reset(&mut self, head: &RequestHead) {
        self.start = SystemTime::now();
        self.t0 = Instant::now();
        self.code = "TCP_MISS";
        self.status = 0;
        self.bytes = 0;
        self.method.clear();
        self.method.extend_from_slice(head.method());
        self.url.clear();
        self.url.extend_from_slice(head.target());
        self.peer = None;
        self.content_type.clear();
        self.reason = "";
    }

    /// The connection's reusable buffer for heads we write, emptied.
    fn head_buffer(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.head_out);
        b.clear();
        b
    }

    /// Gives the head buffer back for the next use.
    fn keep_buffer(&mut self, b: Vec<u8>) {
        if b.capacity() <= 64 * 1024 {
            self.head_out = b;
        }
    }
}

/// The outcome of one request for the connection: keep it or close it.
enum Next {
    KeepAlive,
    Close,
}

/// Serves one client connection until it closes or must be closed.
pub async fn serve(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr) {
    let shared = w.shared.clone();
    let settings = &shared.settings;
    let Some(mut conn) = crate::server::ClientConn::admit(
        stream,
        peer,
        &shared.active_clients,
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
        if matches!(next, Next::Close) {
            return;
        }
    }
}

/// Answers with an error and closes the connection (the request's body, if
/// any, was not read, so the connection cannot be reused).
async fn reject(client: &mut Conn, rec: &mut Record, e: HttpError) -> Next {
    rec.status = e.status;
    rec.reason = e.reason;
    if rec.code == "TCP_MISS" {
        rec.code = "NONE";
    }
    rec.bytes += crate::server::send_error(client, e, true).await;
    Next::Close
}

fn log(w: &Worker, client: IpAddr, rec: &Record) {
    let shared = &w.shared;
    let peer = rec.peer.map_or("-", |p| shared.parents[p].name.as_str());
    w.log.borrow_mut().log(&Entry {
        start: rec.start,
        elapsed: rec.t0.elapsed(),
        client,
        code: rec.code,
        status: rec.status,
        bytes: rec.bytes,
        method: &rec.method,
        url: &rec.url,
        hierarchy: if rec.peer.is_some() {
            "CARP"
        } else {
            "HIER_NONE"
        },
        peer,
        content_type: &rec.content_type,
        reason: rec.reason,
    });
}

/// One request: admit, route, forward, respond.
async fn handle(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: RequestHead,
    client_ip: IpAddr,
    rec: &mut Record,
) -> Next {
    let shared = &w.shared;
    let settings = &shared.settings;
    // admit
    let body = match framing::request_body(&head) {
        Ok(b) => b,
        Err(e) => return reject(client, rec, e).await,
    };
    if headers::via_has(&head.fields, &shared.via_name) {
        return reject(
            client,
            rec,
            HttpError::new(508, "forwarding loop: our Via is already in the request"),
        )
        .await;
    }
    let is_connect = head.method() == b"CONNECT";
    // route
    let uri = match target_uri(shared, &head, is_connect) {
        Ok(u) => u,
        Err(e) => return reject(client, rec, e).await,
    };
    rec.url.clear();
    rec.url.extend_from_slice(uri.effective());
    if is_connect {
        if !settings.connect_ports.contains(&uri.port()) {
            rec.code = "TCP_DENIED";
            return reject(
                client,
                rec,
                HttpError::new(403, "CONNECT to a port not in connect_ports"),
            )
            .await;
        }
        rec.code = "TCP_TUNNEL";
        return match super::tunnel::connect_tunnel(
            w,
            client,
            &head,
            &uri,
            client_ip,
            rec_parts(rec),
        )
        .await
        {
            Ok(()) => Next::Close,
            Err(e) => reject(client, rec, e).await,
        };
    }
    if !matches!(uri.scheme(), b"http" | b"https" | b"ftp") {
        return reject(client, rec, HttpError::new(501, "unsupported URL scheme")).await;
    }
    forward(w, client, head, body, uri, client_ip, rec).await
}

/// The alive parents for a request in ranking order, computed lazily: the
/// owner by one `select` pass (the common case needs nothing more); the
/// full ranking only when a failover needs the next ones.
pub struct Candidates<'a> {
    shared: &'a Shared,
    uri: &'a RequestUri,
    first: Option<Option<carp::MemberId>>,
    rest: Option<Box<carp::Ranking>>,
}

impl<'a> Candidates<'a> {
    /// Candidates for `uri`.
    pub fn new(shared: &'a Shared, uri: &'a RequestUri) -> Self {
        Candidates {
            shared,
            uri,
            first: None,
            rest: None,
        }
    }

    /// The next alive parent to try, by index.
    pub fn next(&mut self) -> Option<usize> {
        let health = &self.shared.health;
        if self.first.is_none() {
            let best = self
                .shared
                .table
                .select(self.uri, |m| health.is_alive(m.index()));
            self.first = Some(best);
            if let Some(b) = best {
                return Some(b.index());
            }
        }
        let first = self.first.flatten();
        let (table, uri) = (&self.shared.table, self.uri);
        let rest = self.rest.get_or_insert_with(|| Box::new(table.rank(uri)));
        rest.find(|m| Some(*m) != first && health.is_alive(m.index()))
            .map(carp::MemberId::index)
    }
}

/// The pieces of a log record the tunnel fills in.
pub struct TunnelLog<'a> {
    /// Status sent to the client.
    pub status: &'a mut u16,
    /// Bytes sent to the client.
    pub bytes: &'a mut u64,
    /// Parent used.
    pub peer: &'a mut Option<usize>,
}

fn rec_parts(rec: &mut Record) -> TunnelLog<'_> {
    TunnelLog {
        status: &mut rec.status,
        bytes: &mut rec.bytes,
        peer: &mut rec.peer,
    }
}

/// The normalized target: absolute-form (forward proxy), `Host` + origin-form
/// (accelerator), or `host:port` (CONNECT).
fn target_uri(
    shared: &Shared,
    head: &RequestHead,
    is_connect: bool,
) -> Result<RequestUri, HttpError> {
    let target = head.target();
    let built;
    let target = if !is_connect
        && target.first() == Some(&b'/')
        && shared.settings.mode == ListenMode::Accel
    {
        let host = head
            .fields
            .get(Known::Host)
            .map(<[u8]>::to_vec)
            .or_else(|| {
                shared
                    .settings
                    .default_site
                    .as_ref()
                    .map(|s| s.as_bytes().to_vec())
            })
            .ok_or(HttpError::new(400, "no Host header and no default_site"))?;
        built = [b"http://".as_slice(), &host, target].concat();
        &built[..]
    } else {
        target
    };
    carp::normalize::normalize_target(head.method(), target)
        .map_err(|(status, reason)| HttpError::new(status, reason))
}

/// Why one attempt on one parent failed.
enum Attempt {
    /// Nothing reached the parent (connect failed): always safe to try the next.
    NotSent(HttpError),
    /// The request reached the parent but no response came.
    Sent(HttpError),
    /// A stale pooled connection: try the same parent on a fresh one.
    Stale,
    /// This worker holds the parent's share of `max_conn`: skip to the next
    /// member, as Squid's CARP skips a parent at its max-conn.
    AtLimit,
    /// The client went away or sent a broken body: stop.
    ClientGone(HttpError),
}

/// Forwards to parents in ranking order and streams the response back.
#[allow(clippy::too_many_arguments)]
async fn forward(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: RequestHead,
    body: BodyLen,
    uri: RequestUri,
    client_ip: IpAddr,
    rec: &mut Record,
) -> Next {
    let shared = &w.shared;
    let settings = &shared.settings;
    let expect_continue =
        head.version == Version::Http11 && head.fields.has_token(Known::Expect, "100-continue");
    if head.fields.get(Known::Expect).is_some() && !expect_continue {
        return reject(client, rec, HttpError::new(417, "unsupported expectation")).await;
    }
    let mut out = rec.head_buffer();
    headers::write_request_head(
        &mut out,
        head.method(),
        uri.effective(),
        &head,
        body,
        &shared.via,
        settings.x_forwarded_for,
        client_ip,
    );
    let idempotent = head.is_idempotent();
    let mut body_sent = false;
    let mut tried = 0usize;
    let mut at_limit = 0usize;
    let mut last = HttpError::new(503, "no parent is alive");
    let mut candidates = Candidates::new(shared, &uri);
    while let Some(p) = candidates.next() {
        tried += 1;
        let mut fresh = false;
        loop {
            let attempt = try_parent(
                w,
                client,
                p,
                &out,
                body,
                expect_continue,
                fresh,
                &mut body_sent,
            )
            .await;
            match attempt {
                Ok(up) => {
                    shared.health.served(p);
                    rec.peer = Some(p);
                    rec.keep_buffer(std::mem::take(&mut out));
                    return respond(w, client, &head, up, rec).await;
                }
                Err(Attempt::AtLimit) => {
                    at_limit += 1;
                }
                Err(Attempt::Stale) if !fresh => {
                    fresh = true;
                    continue;
                }
                Err(Attempt::Stale) => {
                    shared
                        .health
                        .failure(p, "connection closed before a response");
                    last = HttpError::new(502, "parent closed the connection before responding");
                }
                Err(Attempt::NotSent(e)) => {
                    shared.health.failure(p, e.reason);
                    last = e;
                }
                Err(Attempt::Sent(e)) => {
                    shared.health.failure(p, e.reason);
                    shared
                        .health
                        .parent(p)
                        .failed_in_flight
                        .fetch_add(1, Ordering::Relaxed);
                    last = e;
                    rec.peer = Some(p);
                    if !idempotent || body_sent {
                        tracing::warn!(parent = %shared.parents[p].name, reason = e.reason, "request failed in flight; not retried (not idempotent or body sent)");
                        return reject(client, rec, e).await;
                    }
                    tracing::info!(parent = %shared.parents[p].name, reason = e.reason, "retrying on the next parent in the ranking");
                }
                Err(Attempt::ClientGone(e)) if e.status == 499 => {
                    rec.status = e.status;
                    rec.reason = e.reason;
                    return Next::Close;
                }
                Err(Attempt::ClientGone(e)) => {
                    // A broken request body: the parent only ever saw its
                    // valid prefix, then its connection was dropped.
                    return reject(client, rec, e).await;
                }
            }
            break;
        }
    }
    if tried == 0 {
        last = HttpError::new(503, "no parent is alive");
    } else if at_limit == tried {
        last = HttpError::new(503, "every alive parent is at its max_conn");
    }
    reject(client, rec, last).await
}

/// A parent connection with its response head, holding its `max_conn` slot.
struct Upstream {
    conn: Conn,
    head: ResponseHead,
    _slot: InUse,
    index: usize,
}

/// One attempt on parent `p`: connection (pooled unless `fresh`), request
/// head and body, response head.
#[allow(clippy::too_many_arguments)]
async fn try_parent(
    w: &Rc<Worker>,
    client: &mut Conn,
    p: usize,
    head_bytes: &[u8],
    body: BodyLen,
    expect_continue: bool,
    fresh: bool,
    body_sent: &mut bool,
) -> Result<Upstream, Attempt> {
    let shared = &w.shared;
    let settings = &shared.settings;
    let pooled = if fresh {
        None
    } else {
        w.pool.borrow_mut().take(p)
    };
    let reused = pooled.is_some();
    let slot = w.claim(p, reused).ok_or(Attempt::AtLimit)?;
    let mut parent = match pooled {
        Some(c) => c,
        None => connect(shared.parents[p].addr, settings.parent_connect_timeout)
            .await
            .map_err(Attempt::NotSent)?,
    };
    if let Err(e) = parent.stream.write_all(head_bytes).await {
        return Err(if reused {
            Attempt::Stale
        } else {
            Attempt::NotSent(io_error(&e))
        });
    }
    if body != BodyLen::Empty {
        if expect_continue {
            client
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| Attempt::ClientGone(HttpError::new(499, "client closed")))?;
        }
        *body_sent = true;
        match body::relay(
            client,
            &mut parent.stream,
            body,
            Out::Same,
            settings.body_idle_timeout,
        )
        .await
        {
            Ok(_) => {}
            Err(RelayError::Sink(_)) | Err(RelayError::SinkIdle) => {
                return Err(Attempt::Sent(HttpError::new(
                    502,
                    "parent stopped reading the request body",
                )));
            }
            Err(RelayError::Chunk(_)) => {
                return Err(Attempt::ClientGone(HttpError::new(
                    400,
                    "bad chunked request body",
                )))
            }
            Err(_) => {
                return Err(Attempt::ClientGone(HttpError::new(
                    400,
                    "client request body incomplete",
                )))
            }
        }
    }
    match parent
        .read_response_head(settings.parent_first_byte_timeout, 64 * 1024)
        .await
    {
        Ok(Some(head)) => Ok(Upstream {
            conn: parent,
            head,
            _slot: slot,
            index: p,
        }),
        Ok(None) | Err(ResponseReadError::NothingRead(_)) if reused && !*body_sent => {
            Err(Attempt::Stale)
        }
        Ok(None) | Err(ResponseReadError::NothingRead(_)) | Err(ResponseReadError::Truncated) => {
            Err(Attempt::Sent(HttpError::new(
                502,
                "parent closed the connection before responding",
            )))
        }
        Err(ResponseReadError::Timeout { .. }) => Err(Attempt::Sent(HttpError::new(
            504,
            "parent response timeout",
        ))),
        Err(ResponseReadError::Bad(e)) => Err(Attempt::Sent(e)),
    }
}

fn io_error(e: &std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            HttpError::new(502, "parent refused the connection")
        }
        std::io::ErrorKind::TimedOut => HttpError::new(504, "parent connect timeout"),
        _ => HttpError::new(502, "cannot reach parent"),
    }
}

/// Opens a connection to a parent within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: std::time::Duration) -> Result<Conn, HttpError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(HttpError::new(504, "parent connect timeout")),
        Ok(Err(e)) => Err(io_error(&e)),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(Conn::new(s))
        }
    }
}

/// Streams the parent's response to the client; returns the pooled parent
/// connection when the exchange ended cleanly.
async fn respond(
    w: &Rc<Worker>,
    client: &mut Conn,
    req: &RequestHead,
    up: Upstream,
    rec: &mut Record,
) -> Next {
    let Upstream {
        conn: mut parent,
        head: mut resp,
        _slot,
        index: p,
    } = up;
    let settings = &w.shared.settings;
    let via = &w.shared.via;
    // interim responses
    while resp.status < 200 {
        if resp.status == 101 {
            rec.status = 101;
            let mut out = Vec::with_capacity(resp.raw().len());
            out.extend_from_slice(resp.raw());
            if client.stream.write_all(&out).await.is_err() {
                return Next::Close;
            }
            rec.bytes += out.len() as u64;
            let (up, down) =
                super::tunnel::splice_both(client, &mut parent, settings.tunnel_idle_timeout).await;
            rec.bytes += down;
            let _ = up;
            return Next::Close;
        }
        if req.version == Version::Http11 {
            let mut out = Vec::new();
            headers::write_response_head(
                &mut out,
                &resp,
                Framing::None,
                via,
                true,
                Version::Http11,
            );
            if client.stream.write_all(&out).await.is_err() {
                return Next::Close;
            }
            rec.bytes += out.len() as u64;
        }
        resp = match parent
            .read_response_head(settings.parent_first_byte_timeout, 64 * 1024)
            .await
        {
            Ok(Some(h)) => h,
            _ => {
                return reject(
                    client,
                    rec,
                    HttpError::new(502, "parent broke after an interim response"),
                )
                .await
            }
        };
    }
    rec.status = resp.status;
    rec.content_type.clear();
    rec.content_type
        .extend_from_slice(resp.fields.get("content-type").unwrap_or_default());
    let len = match framing::response_body(req.method(), &resp) {
        Ok(l) => l,
        Err(e) => return reject(client, rec, e).await,
    };
    let (framing, out_mode) = body::client_framing(req, &resp, len);
    let keep = crate::server::keep_client(&w.stop, req) && framing != Framing::Close;
    let mut out = rec.head_buffer();
    headers::write_response_head(&mut out, &resp, framing, via, keep, req.version);
    // Send the body bytes that arrived with the head in the same write
    // (sendmsg, no copy): one syscall per small response instead of two.
    let mut len = len;
    let mut take = 0usize;
    if let BodyLen::Length(n) = len {
        // A small body split over segments: wait for all of it, so head and
        // body still leave in one sendmsg.
        if n < body::LOWAT_WORTHWHILE && (parent.rbuf.len() as u64) < n {
            if let Err(e) = body::fill_to(&mut parent, n as usize, settings.body_idle_timeout).await
            {
                tracing::warn!(parent = %w.shared.parents[p].name, error = %e, "response body cut short");
                return reject(
                    client,
                    rec,
                    HttpError::new(502, "parent broke during the response body"),
                )
                .await;
            }
        }
        take = (parent.rbuf.len() as u64).min(n) as usize;
        len = if n == take as u64 {
            BodyLen::Empty
        } else {
            BodyLen::Length(n - take as u64)
        };
    }
    rec.bytes += (out.len() + take) as u64;
    let written = body::write_head_and_body(&client.stream, &mut out, &parent.rbuf[..take]).await;
    rec.keep_buffer(out);
    if written.is_err() {
        return Next::Close;
    }
    bytes::Buf::advance(&mut parent.rbuf, take);
    match body::relay(
        &mut parent,
        &mut client.stream,
        len,
        out_mode,
        settings.body_idle_timeout,
    )
    .await
    {
        Ok(n) => rec.bytes += n,
        Err(e) => {
            // Headers are out: the only honest signal left is closing.
            rec.reason = match e {
                RelayError::Sink(_) | RelayError::SinkIdle => "client stopped reading the response",
                _ => "parent broke during the response body",
            };
            if !matches!(e, RelayError::Sink(_) | RelayError::SinkIdle) {
                w.shared
                    .health
                    .parent(p)
                    .failed_in_flight
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(parent = %w.shared.parents[p].name, error = %e, "response body cut short");
            }
            return Next::Close;
        }
    }
    if headers::server_keep_alive(&resp) && len != BodyLen::UntilClose {
        w.pool.borrow_mut().put(p, parent);
    }
    if keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}
