//! What every carpool server process shares: SO_REUSEPORT listeners (one per
//! worker), the signal loop (SIGUSR1 reopens the access log; SIGTERM/SIGINT
//! stop accepting and let in-flight requests finish), and small helpers.

use std::net::{IpAddr, SocketAddr};
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

/// IPv4-mapped IPv6 client addresses compare as IPv4 against allow lists.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
