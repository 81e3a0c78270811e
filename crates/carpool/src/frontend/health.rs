//! Parent health: passive (consecutive connect failures and timeouts mark a
//! parent dead) and active (a prober brings dead parents back). Shared by all
//! workers through atomics; state changes are logged. Every change bumps the
//! parent's epoch, so that frontends sharing health ([`crate::cluster`]) can
//! tell a newer observation from an older one without comparing clocks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carp::MemberId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::settings::{HealthSettings, Probe};

/// One parent's health counters.
#[derive(Debug, Default)]
struct ParentHealth {
    dead: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Requests that failed on this parent (its connection, its answer or
    /// its body), whether they were retried elsewhere or not.
    failed_requests: AtomicU64,
    /// When it last became alive or dead (the start, at first), in
    /// milliseconds since the epoch.
    since_ms: AtomicU64,
    /// Changes of state seen so far, here or (adopted) from a peer.
    epoch: AtomicU64,
    /// What made it dead last (a failure's reason, or `peer`).
    cause: std::sync::Mutex<&'static str>,
}

/// One frontend's view of one parent, as shared with the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Alive or dead.
    pub alive: bool,
    /// The parent's epoch when this state began.
    pub epoch: u64,
    /// When this state began, milliseconds since the epoch.
    pub since_ms: u64,
    /// What made it dead (`""` while alive).
    pub cause: &'static str,
}

impl Observation {
    /// Whether `self` (a peer's) should replace `local`: a later epoch, or
    /// the same epoch found dead (two frontends saw one change each way at
    /// once: dead is the safe side, the next probe settles it).
    pub fn supersedes(&self, local: &Observation) -> bool {
        self.epoch > local.epoch || (self.epoch == local.epoch && !self.alive && local.alive)
    }
}

/// Health of every parent, in configuration order.
#[derive(Debug)]
pub struct Health {
    parents: Vec<ParentHealth>,
    names: Vec<String>,
    fail_limit: u32,
}

impl Health {
    /// All parents alive.
    pub fn new(names: Vec<String>, fail_limit: u32) -> Self {
        let now = now_ms();
        Health {
            parents: names
                .iter()
                .map(|_| ParentHealth {
                    since_ms: AtomicU64::new(now),
                    ..ParentHealth::default()
                })
                .collect(),
            names,
            fail_limit,
        }
    }

    /// When parent `m` last became alive or dead (the frontend's start if
    /// never), in seconds since the epoch.
    pub fn since(&self, m: MemberId) -> f64 {
        self.parents[m.index()].since_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Is parent `m` usable?
    pub fn is_alive(&self, m: MemberId) -> bool {
        !self.parents[m.index()].dead.load(Ordering::Relaxed)
    }

    /// A response body from parent `m` broke off after its head was sent
    /// on: the request failed, but the parent had answered.
    pub fn body_failed(&self, m: MemberId) {
        self.parents[m.index()]
            .failed_requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A failed exchange with parent `m` (connect, timeout, broken
    /// response); after `fail_limit` in a row it is dead.
    pub fn failure(&self, m: MemberId, what: &'static str) {
        let i = m.index();
        let p = &self.parents[i];
        let failed = p.failed_requests.fetch_add(1, Ordering::Relaxed) + 1;
        let n = p.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.fail_limit && !p.dead.swap(true, Ordering::Relaxed) {
            p.since_ms.store(now_ms(), Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            *lock(&p.cause) = what;
            tracing::warn!(
                parent = %self.names[i],
                failures = n,
                failed_requests = failed,
                "parent marked DEAD after {n} consecutive failures (last: {what}); \
                 {failed} requests have failed on it"
            );
        }
    }

    /// Parent `m` answered.
    pub fn success(&self, m: MemberId) {
        let i = m.index();
        let p = &self.parents[i];
        if p.consecutive_failures.load(Ordering::Relaxed) != 0 {
            p.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if p.dead.load(Ordering::Relaxed) && p.dead.swap(false, Ordering::Relaxed) {
            p.since_ms.store(now_ms(), Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            tracing::info!(parent = %self.names[i], "parent is ALIVE again");
        }
    }

    /// Marks parent `i` alive after a successful probe.
    fn revive(&self, i: usize) {
        let p = &self.parents[i];
        p.consecutive_failures.store(0, Ordering::Relaxed);
        if p.dead.swap(false, Ordering::Relaxed) {
            p.since_ms.store(now_ms(), Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            tracing::info!(parent = %self.names[i], "parent recovered: probe succeeded, marked ALIVE");
        }
    }

    /// The parents' names, in configuration order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// This frontend's view of parent `i`.
    pub fn observation(&self, i: usize) -> Observation {
        let p = &self.parents[i];
        let alive = !p.dead.load(Ordering::Relaxed);
        Observation {
            alive,
            epoch: p.epoch.load(Ordering::Relaxed),
            since_ms: p.since_ms.load(Ordering::Relaxed),
            cause: if alive { "" } else { *lock(&p.cause) },
        }
    }

    /// A peer frontend (`from`) observed parent `i` as `seen`: adopted when
    /// it is newer than this frontend's own view. A parent found dead
    /// elsewhere is dead here at once (and this frontend's prober brings it
    /// back); one a peer's probe saw answer is alive here too. Returns
    /// whether the view changed.
    pub fn adopt(&self, i: usize, seen: Observation, from: &str) -> bool {
        let Some(p) = self.parents.get(i) else {
            return false;
        };
        if !seen.supersedes(&self.observation(i)) {
            return false;
        }
        p.epoch.fetch_max(seen.epoch, Ordering::Relaxed);
        let was_alive = !p.dead.swap(!seen.alive, Ordering::Relaxed);
        if was_alive == seen.alive {
            return false;
        }
        p.since_ms.store(now_ms(), Ordering::Relaxed);
        if seen.alive {
            p.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::info!(parent = %self.names[i], peer = %from, "parent marked ALIVE: a peer frontend saw it answer");
        } else {
            *lock(&p.cause) = "peer";
            tracing::warn!(parent = %self.names[i], peer = %from, cause = seen.cause, "parent marked DEAD: a peer frontend found it dead");
        }
        true
    }
}

/// A lock that a panicked holder did not poison for good.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Probes dead parents every `settings.probe_interval`, forever.
pub async fn prober(
    health: Arc<Health>,
    addrs: Vec<SocketAddr>,
    settings: HealthSettings,
    connect_timeout: Duration,
) {
    let mut tick = tokio::time::interval(settings.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (i, addr) in addrs.iter().enumerate() {
            if health.is_alive(MemberId(i as u16)) {
                continue;
            }
            if probe(*addr, &settings.probe, connect_timeout).await {
                health.revive(i);
            }
        }
    }
}

/// One probe: TCP connect, or an HTTP request answered with a status below 500.
pub async fn probe(addr: SocketAddr, kind: &Probe, connect_timeout: Duration) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await
    else {
        return false;
    };
    match kind {
        Probe::Tcp => true,
        Probe::Http { url } => {
            let req = format!("HEAD {url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: carpool-probe\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            let mut buf = [0u8; 64];
            match tokio::time::timeout(connect_timeout, s.read(&mut buf)).await {
                Ok(Ok(n)) if n >= 12 && buf.starts_with(b"HTTP/1.") => buf[9] < b'5',
                _ => false,
            }
        }
    }
}
