//! What every carpool server process shares: SO_REUSEPORT listeners (one per
//! worker), the signal loop (SIGUSR1 reopens the access log; SIGTERM/SIGINT
//! stop accepting and let in-flight requests finish), and small helpers.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use httpx::accesslog::Sink;
use socket2::{Domain, Socket, Type};

/// Handles SIGUSR1 (reopen the access log) until SIGTERM or SIGINT.
pub fn wait_for_signals(
    stop: &tokio::sync::watch::Sender<bool>,
    active: &AtomicUsize,
    shutdown_timeout: Duration,
    sink: &Sink,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    match sink.reopen() {
                        Ok(()) => tracing::info!("access log reopened (SIGUSR1)"),
                        Err(e) => tracing::error!(error = %e, "cannot reopen the access log"),
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        stop.send_replace(true);
        let open = active.load(Ordering::Relaxed);
        tracing::info!(
            open,
            "stopping: listeners closed, letting in-flight requests finish"
        );
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = active.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown_timeout reached: closing {left} connections still busy"
            );
        } else {
            tracing::info!("all connections finished");
        }
        tokio::time::sleep(Duration::from_millis(300)).await; // let workers flush their logs
        Ok::<(), anyhow::Error>(())
    })
}

/// Inherited listening sockets (`3,4`): a supervisor (`carpool up`) keeps
/// the listeners open across restarts and reloads of its children, so
/// connections wait in the backlog instead of being refused.
pub const LISTEN_FDS_ENV: &str = "CARPOOL_LISTEN_FDS";
/// A pipe to write one byte to once the workers accept (for the supervisor).
pub const READY_FD_ENV: &str = "CARPOOL_READY_FD";

/// The listeners of a server: inherited ones (see [`LISTEN_FDS_ENV`]), or
/// `workers` SO_REUSEPORT sockets bound to `addr` (0: one per core).
pub fn listeners(addr: SocketAddr, workers: usize) -> Result<Vec<std::net::TcpListener>> {
    if let Ok(list) = std::env::var(LISTEN_FDS_ENV) {
        return list
            .split(',')
            .map(|f| {
                let fd: std::os::fd::RawFd = f
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{LISTEN_FDS_ENV}: {f:?} is not a descriptor"))?;
                inherited_listener(fd)
            })
            .collect();
    }
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        workers
    };
    (0..workers).map(|_| bind_reuseport(addr)).collect()
}

fn inherited_listener(fd: std::os::fd::RawFd) -> Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    // SAFETY: fstat only reads the descriptor's metadata into `st`.
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        anyhow::bail!("{LISTEN_FDS_ENV}: descriptor {fd} is not open");
    }
    // SAFETY: fstat returned 0, so `st` is initialized.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        anyhow::bail!("{LISTEN_FDS_ENV}: descriptor {fd} is not a socket");
    }
    // SAFETY: the descriptor is an open socket handed to this process for
    // it to own (the supervisor keeps its own copy).
    let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Tells the supervisor (if any) that this server accepts connections.
pub fn notify_ready() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<std::os::fd::RawFd>().ok())
    else {
        return;
    };
    // SAFETY: the supervisor passed this pipe's write end for us to own.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = pipe.write_all(b"1");
}

/// A listening socket with SO_REUSEPORT (one per worker, same address).
pub fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// This machine's host name (for `Via`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "carpool".into())
}

/// How often workers flush their access log buffers.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Pause after a failed accept (EMFILE and friends) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// After this many accepted connections the accept loop yields once, so
/// the worker's other tasks run between batches (HAProxy's
/// `tune.maxaccept`; when connections trickle in, the extra yield every 16
/// costs nothing that matters). Without it a storm of new
/// connections is accepted 128 at a time (tokio's cooperative budget) while
/// the worker runs 61 other tasks per turn, so requests already in flight
/// queue behind hundreds of new connections: with 1,000 clients connecting
/// at the start of a paced 64 KiB run (`bench/frontend/run --connections
/// 1000 --rate-connections 1000`) the p99.9 was ~30 ms, ~10 ms with this.
const ACCEPT_BATCH: usize = 16;

/// The body of one worker thread: a single-threaded runtime whose tasks
/// accept on `listener` until `stop`, `serve` each connection, and `flush`
/// the worker's log buffer every [`LOG_FLUSH_INTERVAL`]. After `stop` the
/// listener is closed and the connections in flight go on until the process
/// exits. `make` builds the worker's own state on this thread.
pub fn run_worker<W: 'static, Fut: Future<Output = ()> + 'static>(
    listener: std::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
    make: impl FnOnce(Rc<LocalStop>) -> Rc<W>,
    flush: fn(&W),
    serve: fn(Rc<W>, tokio::net::TcpStream, SocketAddr) -> Fut,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let local_stop = Rc::new(LocalStop::default());
    let worker = make(local_stop.clone());
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let flusher = worker.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                flush(&flusher);
            }
        });
        let mut accepted_since_yield = 0usize;
        loop {
            if accepted_since_yield == ACCEPT_BATCH {
                accepted_since_yield = 0;
                tokio::task::yield_now().await;
            }
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    accepted_since_yield += 1;
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(serve(worker.clone(), stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
        drop(listener);
        local_stop.stop();
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// How long a stopping server waits for one more request on a kept-alive
/// connection (answered with `Connection: close`) before closing it.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// The next request head on a client connection, or `None` when the
/// connection should just be closed. Once the server is stopping, the
/// first request of a new connection is still served (it was accepted, so
/// its client is owed an answer), and a kept-alive connection gets
/// [`STOP_GRACE`] for a request already on its way.
pub async fn next_request(
    client: &mut httpx::conn::Conn,
    limits: &httpx::Limits,
    stop: &StopWaiter,
    first: bool,
) -> Option<Result<httpx::RequestHead, httpx::conn::HeadReadError>> {
    if !stop.is_stopping() {
        tokio::select! {
            biased;
            r = client.read_request_head(limits) => return Some(r),
            () = stop.stopping() => {}
        }
    }
    let wait = if first {
        limits.header_timeout
    } else {
        STOP_GRACE
    };
    tokio::time::timeout(wait, client.read_request_head(limits))
        .await
        .ok()
}

/// Keep the client connection after this exchange? Never once the server
/// is stopping: the answer then says `Connection: close`.
pub fn keep_client(stop: &LocalStop, head: &httpx::RequestHead) -> bool {
    !stop.is_stopping() && httpx::headers::client_keep_alive(head)
}

/// One worker thread's "the server is stopping": set by the worker's accept
/// loop when the process stops, read by every connection of the worker
/// after each request, and awaited by those waiting for their next one.
/// Single-threaded: a flag and the wakers of the waiting connections, with
/// no lock or atomic on the per-request path.
#[derive(Default)]
pub struct LocalStop {
    stopping: std::cell::Cell<bool>,
    waiters: std::cell::RefCell<Waiters>,
}

/// Wakers of the connections waiting for a stop, by slot.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<std::task::Waker>>,
    free: Vec<usize>,
}

impl LocalStop {
    /// True once the server is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Marks the server as stopping and wakes every waiter.
    fn stop(&self) {
        self.stopping.set(true);
        let wakers: Vec<_> = self
            .waiters
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        wakers.into_iter().for_each(std::task::Waker::wake);
    }

    /// A waiter for one connection (its slot is kept across requests).
    pub fn waiter(self: &Rc<Self>) -> StopWaiter {
        StopWaiter {
            stop: self.clone(),
            slot: std::cell::Cell::new(None),
        }
    }
}

/// One connection's wait for [`LocalStop`].
pub struct StopWaiter {
    stop: Rc<LocalStop>,
    slot: std::cell::Cell<Option<usize>>,
}

impl StopWaiter {
    /// True once the server is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_stopping()
    }

    /// Resolves when the server starts stopping.
    pub async fn stopping(&self) {
        std::future::poll_fn(|cx| {
            if self.stop.is_stopping() {
                return std::task::Poll::Ready(());
            }
            let mut w = self.stop.waiters.borrow_mut();
            let slot = match self.slot.get() {
                Some(i) => i,
                None => {
                    let i = match w.free.pop() {
                        Some(i) => i,
                        None => {
                            w.slots.push(None);
                            w.slots.len() - 1
                        }
                    };
                    self.slot.set(Some(i));
                    i
                }
            };
            match &mut w.slots[slot] {
                Some(old) if old.will_wake(cx.waker()) => {}
                s => *s = Some(cx.waker().clone()),
            }
            std::task::Poll::Pending
        })
        .await
    }
}

impl Drop for StopWaiter {
    fn drop(&mut self) {
        if let Some(i) = self.slot.get() {
            let mut w = self.stop.waiters.borrow_mut();
            w.slots[i] = None;
            w.free.push(i);
        }
    }
}

/// IPv4-mapped IPv6 client addresses compare as IPv4 against allow lists.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Counts a client connection as open while it lives.
pub struct ActiveGuard(std::sync::Arc<AtomicUsize>);

impl ActiveGuard {
    /// Counts one more open connection in `active`.
    pub fn enter(active: &std::sync::Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes a short error answer; returns the bytes written.
pub async fn send_error(client: &mut httpx::conn::Conn, e: httpx::HttpError, close: bool) -> u64 {
    use tokio::io::AsyncWriteExt;
    let resp = httpx::error::error_response(e.status, e.reason, close);
    let _ = client.stream.write_all(&resp).await;
    resp.len() as u64
}

/// What a server's client connection shares with every other: the open
/// connection count and its limit, the allow list, reading request heads
/// (and answering and logging those that fail), graceful stop.
pub struct ClientConn {
    /// The connection.
    pub client: httpx::conn::Conn,
    /// The client's address (IPv4-mapped addresses as IPv4).
    pub ip: IpAddr,
    /// Whether `allow_clients` lets it use the server.
    pub allowed: bool,
    stop: StopWaiter,
    first: bool,
    _guard: ActiveGuard,
}

impl ClientConn {
    /// Takes a new connection; `None` (after answering 503) when
    /// `max_connections` are open already.
    pub async fn admit(
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        active: &std::sync::Arc<AtomicUsize>,
        max_connections: usize,
        allow: &[ipnet::IpNet],
        stop: &Rc<LocalStop>,
    ) -> Option<ClientConn> {
        let guard = ActiveGuard::enter(active);
        let ip = canonical_ip(peer.ip());
        let mut client = httpx::conn::Conn::new(stream);
        if active.load(Ordering::Relaxed) > max_connections {
            send_error(
                &mut client,
                httpx::HttpError::new(503, "too many client connections"),
                true,
            )
            .await;
            tracing::warn!(client = %ip, "refused a client connection: max_client_connections reached");
            return None;
        }
        Some(ClientConn {
            client,
            ip,
            allowed: allow.iter().any(|n| n.contains(&ip)),
            stop: stop.waiter(),
            first: true,
            _guard: guard,
        })
    }

    /// The next request head; `None` when the connection should close (the
    /// client went away or idled out, the server is stopping, or its head
    /// was bad or late: then it was answered (400, 408, 414, 431…) and
    /// logged in `log`).
    pub async fn next_head(
        &mut self,
        limits: &httpx::Limits,
        log: &std::cell::RefCell<httpx::accesslog::Writer>,
    ) -> Option<httpx::RequestHead> {
        use httpx::conn::HeadReadError;
        let first = std::mem::replace(&mut self.first, false);
        let read = next_request(&mut self.client, limits, &self.stop, first).await?;
        let e = match read {
            Ok(h) => return Some(h),
            Err(HeadReadError::Idle) | Err(HeadReadError::Io(_)) => return None,
            Err(HeadReadError::Timeout) => {
                httpx::HttpError::new(408, "request head not received in time")
            }
            Err(HeadReadError::Bad(e)) => {
                tracing::info!(client = %self.ip, status = e.status, reason = e.reason, "bad request");
                e
            }
        };
        let bytes = send_error(&mut self.client, e, true).await;
        log.borrow_mut().log(&httpx::accesslog::Entry {
            start: std::time::SystemTime::now(),
            elapsed: Duration::ZERO,
            client: self.ip,
            code: "NONE",
            status: e.status,
            bytes,
            method: b"-",
            url: b"error:invalid-request",
            hierarchy: "HIER_NONE",
            peer: "-",
            content_type: b"",
            reason: e.reason,
        });
        None
    }
}
