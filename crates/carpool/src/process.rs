//! What a carpool server process gets from its supervisor or makes itself:
//! its listening sockets (inherited from `carpool up`, or bound with
//! SO_REUSEPORT, one per worker), its access log, and the readiness pipe
//! back to the supervisor.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use httpx::accesslog::{Destination, Sink};
use socket2::{Domain, Socket, Type};

use crate::config::settings::ServerSettings;

/// A role's server before it starts: the request layer set up with `layer`
/// and the access log of `s`, and the listening sockets of `s`.
pub fn open_server(
    s: &ServerSettings,
    layer: proxy::Settings,
) -> Result<(proxy::Server, Vec<std::net::TcpListener>)> {
    // not said: stdout (a component of `carpool up` is always told)
    let destination = s.access_log.clone().unwrap_or(Destination::Stdout);
    let sink =
        Sink::open(destination.clone(), s.access_log_format).with_context(
            || match &destination {
                Destination::File(path) => format!("cannot open the access log {}", path.display()),
                _ => "cannot open the access log on stdout".to_string(),
            },
        )?;
    let listeners =
        listeners(s.listen, s.workers).with_context(|| format!("cannot listen on {}", s.listen))?;
    Ok((proxy::Server::new(layer, sink), listeners))
}

/// Signals that reload or reopen (SIGHUP, SIGUSR1) must never kill a
/// long-running command, whose default action they are: ignored from the
/// start, until the server's own handlers take them over (a cache may take
/// seconds to load its disk tier first). `carpool up` starts its children
/// with them ignored too, across exec.
pub fn ignore_reload_signals() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no other effect.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
    }
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
    bind_workers(addr, workers)
}

/// `n` listening sockets on `addr` with SO_REUSEPORT, one per worker, once
/// it is sure that nothing listens there yet: SO_REUSEPORT would let this
/// server share the port silently with any other (another array, an old
/// instance) and take part of its clients.
pub fn bind_workers(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    ensure_unused(addr)?;
    (0..n).map(|_| bind_reuseport(addr)).collect()
}

/// `n` more SO_REUSEPORT listeners on `addr` beside ones this process
/// already holds there (a reload that changes a component's worker count),
/// without [`bind_workers`]'s check, which those would fail.
pub fn join_workers(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    (0..n).map(|_| bind_reuseport(addr)).collect()
}

/// Fails when a socket listens on `addr` (bound by a probe without
/// SO_REUSEPORT, which no listener admits beside it; leftovers of closed
/// connections do not count).
fn ensure_unused(addr: SocketAddr) -> Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "already in use by another process (another carpool, or any server: \
             `ss -ltnp 'sport = :{}'` shows which); refusing to share it",
            addr.port()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot bind {addr}")),
    }
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
fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
