//! One client connection: admission (the connection limit and the allow
//! list), reading its request heads (answering and logging those that are
//! malformed or late, and closing gracefully when the server stops), and
//! what a phase needs to answer the client itself.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use httpx::accesslog::{Entry, Format, Writer};
use httpx::conn::{Conn, HeadReadError};
use httpx::{HttpError, RequestHead};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::access::canonical_ip;
use crate::log::{Code, Hierarchy, Record};
use crate::settings::Settings;
use crate::stop::{LocalStop, StopWaiter};

/// How long a stopping server waits for one more request on a kept-alive
/// connection (answered with `Connection: close`) before closing it.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// What becomes of the client connection after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the next request on it.
    KeepAlive,
    /// Close it.
    Close,
}

impl Next {
    /// `KeepAlive` when `keep`, else `Close`.
    pub fn keep_if(keep: bool) -> Next {
        if keep {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }
}

/// A client connection and the record of its request in progress.
pub struct Session {
    /// The connection.
    pub client: Conn,
    /// What the access log will say about the request in progress.
    pub log: Record,
    ip: IpAddr,
    local: bool,
    local_port: u16,
    allowed: bool,
    head_out: Vec<u8>,
    stop: StopWaiter,
    first: bool,
    _open: OpenGuard,
}

impl Session {
    /// Takes a new connection; `None` (after answering 503) when
    /// `max_client_connections` are open already. Its log records keep the
    /// request fields that `log_format` shows.
    pub(crate) async fn admit(
        stream: TcpStream,
        peer: SocketAddr,
        settings: &Settings,
        open: &Arc<AtomicUsize>,
        stop: &Rc<LocalStop>,
        log_format: Option<Format>,
    ) -> Option<Session> {
        let guard = OpenGuard::enter(open);
        let ip = canonical_ip(peer.ip());
        // on this host: a loopback client, or one that connected from the
        // very address it connected to
        let here = stream.local_addr().ok();
        let local = ip.is_loopback() || here.is_some_and(|a| canonical_ip(a.ip()) == ip);
        let local_port = here.map_or(0, |a| a.port());
        let mut client = Conn::new(stream);
        if open.load(Ordering::Relaxed) > settings.max_client_connections {
            let e = HttpError::new(503, "too many client connections");
            send_error(&mut client, e, true).await;
            tracing::warn!(client = %ip, "refused a client connection: max_client_connections reached");
            return None;
        }
        Some(Session {
            client,
            log: Record::new(log_format.is_some_and(Format::shows_request_fields)),
            ip,
            local,
            local_port,
            allowed: settings.allow_clients.iter().any(|n| n.contains(&ip)),
            head_out: Vec::new(),
            stop: stop.waiter(),
            first: true,
            _open: guard,
        })
    }

    /// The client's address (an IPv4-mapped IPv6 address as IPv4).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// True when the client is on this host.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The port of the listener the client connected to.
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Whether `allow_clients` lets the client use the server.
    pub(crate) fn allowed(&self) -> bool {
        self.allowed
    }

    /// Keep the connection after answering `head`? Never once the server is
    /// stopping: the answer then says `Connection: close`.
    pub fn keep_alive(&self, head: &RequestHead) -> bool {
        !self.stop.is_stopping() && httpx::headers::client_keep_alive(head)
    }

    /// Answers with an error and closes the connection (a request body, if
    /// any, was not read, so the connection cannot be reused).
    pub async fn reject(&mut self, e: HttpError) -> Next {
        self.log.status = e.status;
        self.log.reason = e.reason;
        self.log.bytes += send_error(&mut self.client, e, true).await;
        Next::Close
    }

    /// A buffer for a head to write, emptied: the one this request used
    /// last, else one from the thread's pool (`httpx::bufpool`).
    pub fn head_buffer(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.head_out);
        if b.capacity() == 0 {
            return httpx::bufpool::take_write();
        }
        b.clear();
        b
    }

    /// Gives a head buffer back for the next head of this request (the
    /// connection lets go of it when it goes idle); one that grew past
    /// `httpx::bufpool::WRITE_BUF_MAX` is freed.
    pub fn keep_buffer(&mut self, b: Vec<u8>) {
        if b.capacity() <= httpx::bufpool::WRITE_BUF_MAX {
            self.head_out = b;
        }
    }

    /// Between requests: the write buffer goes back to the thread's pool
    /// and oversized log fields are freed, so that an idle connection
    /// holds no buffer (the read buffer is `Conn`'s business).
    fn go_idle(&mut self) {
        httpx::bufpool::give_back_write(std::mem::take(&mut self.head_out));
        self.log.shed();
    }

    /// Writes `out` (a head, or a whole small answer) to the client, counts
    /// it in the log and keeps the buffer; false when the client is gone.
    pub async fn send(&mut self, out: Vec<u8>) -> bool {
        let ok = self.client.stream.write_all(&out).await.is_ok();
        self.log.bytes += out.len() as u64;
        self.keep_buffer(out);
        ok
    }

    /// The next request head; `None` when the connection should close (the
    /// client went away or idled out, the server is stopping, or its head
    /// was bad or late: then it was answered (400, 408, 414, 431…) and
    /// logged in `log`).
    pub(crate) async fn next_head(
        &mut self,
        limits: &httpx::Limits,
        log: &RefCell<Writer>,
    ) -> Option<RequestHead> {
        let first = std::mem::replace(&mut self.first, false);
        self.go_idle();
        let e = match self.read_head(limits, first).await? {
            Ok(h) => return Some(h),
            Err(HeadReadError::Idle) | Err(HeadReadError::Io(_)) => return None,
            Err(HeadReadError::Timeout) => HttpError::new(408, "request head not received in time"),
            Err(HeadReadError::Bad(e)) => {
                tracing::info!(client = %self.ip, status = e.status, reason = e.reason, "bad request");
                e
            }
        };
        let bytes = send_error(&mut self.client, e, true).await;
        log.borrow_mut().log(&Entry {
            start: SystemTime::now(),
            elapsed: Duration::ZERO,
            client: self.ip,
            code: Code::None.as_squid(),
            status: e.status,
            bytes,
            method: b"-",
            url: b"error:invalid-request",
            // unread: HTTP/1.1, as Squid writes it
            version: httpx::Version::Http11,
            referer: b"",
            user_agent: b"",
            hierarchy: Hierarchy::None.as_squid(),
            peer: "-",
            peer_host: "-",
            content_type: b"",
            reason: e.reason,
        });
        None
    }

    /// Reads a head; `None` when the connection should just close. Once the
    /// server is stopping, the first request of a new connection is still
    /// served (it was accepted, so its client is owed an answer), and a
    /// kept-alive connection gets [`STOP_GRACE`] for a request already on
    /// its way.
    async fn read_head(
        &mut self,
        limits: &httpx::Limits,
        first: bool,
    ) -> Option<Result<RequestHead, HeadReadError>> {
        if !self.stop.is_stopping() {
            tokio::select! {
                biased;
                r = self.client.read_request_head(limits) => return Some(r),
                () = self.stop.stopping() => {}
            }
        }
        let wait = if first {
            limits.header_timeout
        } else {
            STOP_GRACE
        };
        tokio::time::timeout(wait, self.client.read_request_head(limits))
            .await
            .ok()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        httpx::bufpool::give_back_write(std::mem::take(&mut self.head_out));
    }
}

/// Writes a short error answer; returns the bytes written.
async fn send_error(client: &mut Conn, e: HttpError, close: bool) -> u64 {
    let resp = httpx::error::error_response(e.status, e.reason, close);
    let _ = client.stream.write_all(&resp).await;
    resp.len() as u64
}

/// Counts a client connection as open while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn enter(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
