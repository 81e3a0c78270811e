//! The supervised processes of `carpool up`: one child process per
//! component (the loop that runs them and answers signals is `run.rs`).
//!
//! - The supervisor binds every component's listening sockets itself and hands them to
//!   the child (`CARPOOL_LISTEN_FDS`), so a frontend restarted or replaced
//!   on reload never leaves clients with a refused connect: they wait in the
//!   backlog. A crashed cache's sockets are closed until it is back, so the
//!   frontends see it dead (and its URLs go to their next cache) meanwhile.
//! - Children die with it (`PR_SET_PDEATHSIG`), so none is left orphaned.
//! - A crashed child is restarted with exponential back-off (logged).
//! - SIGHUP re-reads the config and applies it all or nothing
//!   ([`super::reload`]).
//! - SIGUSR1 is passed on to every component: they reopen their logs.
//! - SIGTERM/SIGINT stop the frontend first, then the caches, each within
//!   its shutdown timeout.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Component, Plan, Spec};

/// First wait before restarting a crashed child; doubles up to the maximum.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A child that ran this long before exiting restarts without back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// How long a child may take to say it accepts connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often children are checked.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// One component and its process.
pub(super) struct Proc {
    pub(super) spec: Spec,
    /// Listening sockets, held while the component should accept.
    pub(super) sockets: Option<Vec<socket2::Socket>>,
    pub(super) child: Option<Child>,
    started: Instant,
    pub(super) restarts: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
}

pub(super) fn bind(spec: &Spec) -> Result<Vec<socket2::Socket>> {
    let listeners = crate::process::bind_workers(spec.listen, spec.workers.max(1))
        .with_context(|| format!("{}: cannot listen on {}", spec.name, spec.listen))?;
    Ok(listeners.into_iter().map(socket2::Socket::from).collect())
}

/// Starts `spec`'s process on `sockets` and waits until it accepts.
pub(super) async fn spawn(spec: &Spec, sockets: &[socket2::Socket]) -> Result<Child> {
    let exe = std::env::current_exe().context("locating the carpool binary")?;
    let fds: Vec<RawFd> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error()).context("creating a readiness pipe");
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (ready_r, ready_w) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let list = fds
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new(exe);
    cmd.args(&spec.args)
        .env(crate::process::LISTEN_FDS_ENV, list)
        .env(
            crate::process::READY_FD_ENV,
            ready_w.as_raw_fd().to_string(),
        )
        .stdin(Stdio::null())
        // an access log on stdout (`access_log = "-"`) is up's stdout
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let inherit: Vec<RawFd> = fds.iter().copied().chain([ready_w.as_raw_fd()]).collect();
    // SAFETY: between fork and exec the closure only calls fcntl, prctl and
    // signal, which are async-signal-safe, on descriptors that exist in the
    // child.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // die with the supervisor: no orphans
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // a reload or rotate signal must not kill a child that is still
            // starting: ignored (across exec) until its handlers take over
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.name))?;
    drop(ready_w);
    if let Some(err) = child.stderr.take() {
        let name = spec.name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{name}] {line}");
            }
        });
    }
    let mut ready = std::fs::File::from(ready_r);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut b = [0u8; 1];
        match ready.read(&mut b) {
            Ok(1) => return Ok(child),
            Ok(_) => {
                let status = child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                anyhow::bail!(
                    "{} exited before accepting connections ({status}; its own error is logged above)",
                    spec.name
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("reading the readiness pipe"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "{} did not accept connections within {READY_TIMEOUT:?}",
                spec.name
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) fn signal_child(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// SIGTERM, then SIGKILL once the component's stop timeout has passed.
pub(super) async fn stop_child(spec: &Spec, mut child: Child) {
    let name = spec.name.as_str();
    signal_child(&child, libc::SIGTERM);
    let deadline = Instant::now() + spec.stop_timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) => {}
        }
        if Instant::now() >= deadline {
            tracing::warn!(component = name, "did not stop in time: killed");
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Proc {
    /// Notices an exit and schedules the restart; restarts when due.
    pub(super) async fn tend(&mut self) {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(None) | Err(_) => return,
                Ok(Some(status)) => {
                    self.child = None;
                    if self.started.elapsed() >= HEALTHY_RUN {
                        self.backoff = BACKOFF_START;
                    }
                    tracing::error!(
                        component = %self.spec.name,
                        %status,
                        restart_in = ?self.backoff,
                        "component exited; restarting"
                    );
                    if self.spec.kind == Component::Cache {
                        // refused connects make the frontends fail over now
                        self.sockets = None;
                    }
                    self.restart_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        let Some(at) = self.restart_at else { return };
        if Instant::now() < at {
            return;
        }
        self.restart_at = None;
        let sockets = match self.sockets.take() {
            Some(s) => s,
            None => match bind(&self.spec) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(component = %self.spec.name, error = %e, "cannot listen; retrying");
                    self.restart_at = Some(Instant::now() + self.backoff);
                    return;
                }
            },
        };
        match spawn(&self.spec, &sockets).await {
            Ok(child) => {
                self.restarts += 1;
                self.started = Instant::now();
                tracing::info!(component = %self.spec.name, pid = child.id(), restarts = self.restarts, "component restarted");
                self.child = Some(child);
            }
            Err(e) => {
                tracing::error!(component = %self.spec.name, error = %e, "restart failed");
                self.restart_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
        self.sockets = Some(sockets);
    }

    /// Starts its process again on its sockets (an undone reload had
    /// stopped it); when that fails, the restart is left to back-off.
    pub(super) async fn start_again(&mut self) {
        let started = match &self.sockets {
            Some(s) => spawn(&self.spec, s).await,
            None => return,
        };
        match started {
            Ok(child) => {
                tracing::info!(component = %self.spec.name, pid = child.id(), "running the old config again");
                self.started = Instant::now();
                self.child = Some(child);
            }
            Err(e) => {
                tracing::error!(component = %self.spec.name, error = %format!("{e:#}"), "cannot start again; retrying");
                self.restart_at = Some(Instant::now() + self.backoff);
            }
        }
    }

    /// What the admin listener needs of it: where it is reached from this
    /// host (an unspecified listen address through loopback), its process.
    pub(super) fn target(&self) -> super::admin::Target {
        let mut addr = self.spec.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        super::admin::Target {
            name: self.spec.name.clone(),
            kind: self.spec.kind,
            listen: self.spec.listen,
            addr,
            pid: self.child.as_ref().map(Child::id),
            started: self.child.as_ref().map(|_| self.started),
            restarting: self.child.is_none() && self.restart_at.is_some(),
            restarts: self.restarts,
        }
    }
}

pub(super) fn write_snapshot(plan: &Plan) -> Result<()> {
    if let Some(dir) = plan.snapshot.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    }
    let tmp = plan.snapshot.with_extension("tmp");
    std::fs::write(&tmp, &plan.text)
        .and_then(|()| std::fs::rename(&tmp, &plan.snapshot))
        .with_context(|| format!("cannot write {}", plan.snapshot.display()))
}

impl Proc {
    /// `spec` running as `child` (or to be restarted soon when `None`) on
    /// `sockets`, after `restarts` restarts.
    pub(super) fn on(
        spec: &Spec,
        sockets: Vec<socket2::Socket>,
        child: Option<Child>,
        restarts: u32,
    ) -> Proc {
        Proc {
            spec: spec.clone(),
            sockets: Some(sockets),
            restart_at: child.is_none().then(|| Instant::now() + BACKOFF_START),
            child,
            started: Instant::now(),
            restarts,
            backoff: BACKOFF_START,
        }
    }
}
