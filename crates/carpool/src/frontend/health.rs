//! Parent health: passive (consecutive connect failures and timeouts mark a
//! parent dead) and active (a prober brings dead parents back). Shared by all
//! workers through atomics; state changes are logged. Every change bumps the
//! parent's epoch, so that frontends sharing health ([`crate::cluster`]) can
//! tell a newer observation from an older one without comparing clocks.
//!
//! Each parent has a [`Slot`] for the process's life, by name: the static
//! parents first, then caches that announce themselves
//! ([`crate::frontend::members`]) as they first join; at most
//! [`MAX_MEMBERS`] names in all.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use carp::MAX_MEMBERS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::settings::{HealthSettings, Probe};

/// A parent's place in the frontend's health, bounded-load counts and
/// connection pools, for as long as the frontend runs: one per parent
/// name. Not a routing table's member index (tables change as caches join
/// and leave; slots do not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(u16);

impl Slot {
    /// Index into per-slot arrays (below [`MAX_MEMBERS`]).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

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

/// Health of every parent, by slot.
#[derive(Debug)]
pub struct Health {
    /// [`MAX_MEMBERS`] entries, the first `used` of them in use.
    parents: Box<[ParentHealth]>,
    /// Each slot's parent name, set when the slot is given out.
    names: Box<[OnceLock<String>]>,
    /// Slots given out so far.
    used: AtomicUsize,
    /// Serialises giving out slots (rare: a cache joining).
    giving: std::sync::Mutex<()>,
    fail_limit: u32,
}

impl Health {
    /// The static parents `names` in slots 0.., all alive. (More than
    /// [`MAX_MEMBERS`] names: the config refuses that before.)
    pub fn new(names: Vec<String>, fail_limit: u32) -> Self {
        let h = Health {
            parents: (0..MAX_MEMBERS).map(|_| ParentHealth::default()).collect(),
            names: (0..MAX_MEMBERS).map(|_| OnceLock::new()).collect(),
            used: AtomicUsize::new(0),
            giving: std::sync::Mutex::new(()),
            fail_limit,
        };
        for n in names {
            h.slot_for(&n);
        }
        h
    }

    /// The slot of parent `name`, given out now if it has none (alive,
    /// since now); `None` when all [`MAX_MEMBERS`] are taken.
    pub fn slot_for(&self, name: &str) -> Option<Slot> {
        if let Some(s) = self.slot_of(name) {
            return Some(s);
        }
        let _one_at_a_time = lock(&self.giving);
        if let Some(s) = self.slot_of(name) {
            return Some(s);
        }
        let i = self.used.load(Ordering::Acquire);
        if i >= MAX_MEMBERS {
            return None;
        }
        self.parents[i].since_ms.store(now_ms(), Ordering::Relaxed);
        let _ = self.names[i].set(name.to_string());
        self.used.store(i + 1, Ordering::Release);
        Some(Slot(i as u16))
    }

    /// The slot of parent `name`, if it has one.
    pub fn slot_of(&self, name: &str) -> Option<Slot> {
        self.slots().find(|s| self.name(*s) == name)
    }

    /// Every slot given out, in order.
    pub fn slots(&self) -> impl Iterator<Item = Slot> {
        (0..self.used.load(Ordering::Acquire)).map(|i| Slot(i as u16))
    }

    /// The name of the parent in slot `s`.
    pub fn name(&self, s: Slot) -> &str {
        self.names[s.index()].get().map_or("", String::as_str)
    }

    /// When parent `s` last became alive or dead (when it got its slot if
    /// never), in seconds since the epoch.
    pub fn since(&self, s: Slot) -> f64 {
        self.parents[s.index()].since_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Is parent `s` usable?
    pub fn is_alive(&self, s: Slot) -> bool {
        !self.parents[s.index()].dead.load(Ordering::Relaxed)
    }

    /// A response body from parent `s` broke off after its head was sent
    /// on: the request failed, but the parent had answered.
    pub fn body_failed(&self, s: Slot) {
        self.parents[s.index()]
            .failed_requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A failed exchange with parent `s` (connect, timeout, broken
    /// response); after `fail_limit` in a row it is dead.
    pub fn failure(&self, s: Slot, what: &'static str) {
        let i = s.index();
        let p = &self.parents[i];
        let failed = p.failed_requests.fetch_add(1, Ordering::Relaxed) + 1;
        let n = p.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.fail_limit && !p.dead.swap(true, Ordering::Relaxed) {
            p.since_ms.store(now_ms(), Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            *lock(&p.cause) = what;
            tracing::warn!(
                parent = %self.name(s),
                failures = n,
                failed_requests = failed,
                "parent marked DEAD after {n} consecutive failures (last: {what}); \
                 {failed} requests have failed on it"
            );
        }
    }

    /// Parent `s` answered.
    pub fn success(&self, s: Slot) {
        let p = &self.parents[s.index()];
        if p.consecutive_failures.load(Ordering::Relaxed) != 0 {
            p.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if p.dead.load(Ordering::Relaxed) && p.dead.swap(false, Ordering::Relaxed) {
            p.since_ms.store(now_ms(), Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            tracing::info!(parent = %self.name(s), "parent is ALIVE again");
        }
    }

    /// Marks parent `s` alive: a probe succeeded (`why`), or it announced
    /// itself again after it had gone from the cluster.
    pub fn revive(&self, s: Slot, why: &str) {
        let p = &self.parents[s.index()];
        p.consecutive_failures.store(0, Ordering::Relaxed);
        if p.dead.swap(false, Ordering::Relaxed) {
            p.since_ms.store(now_ms(), Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            tracing::info!(parent = %self.name(s), "parent recovered: {why}, marked ALIVE");
        }
    }

    /// Marks parent `s` dead for `cause` (a cache that went from the
    /// cluster); logged by the caller.
    pub fn mark_dead(&self, s: Slot, cause: &'static str) {
        let p = &self.parents[s.index()];
        if !p.dead.swap(true, Ordering::Relaxed) {
            p.since_ms.store(now_ms(), Ordering::Relaxed);
            p.epoch.fetch_add(1, Ordering::Relaxed);
            *lock(&p.cause) = cause;
        }
    }

    /// This frontend's view of parent `s`.
    pub fn observation(&self, s: Slot) -> Observation {
        let p = &self.parents[s.index()];
        let alive = !p.dead.load(Ordering::Relaxed);
        Observation {
            alive,
            epoch: p.epoch.load(Ordering::Relaxed),
            since_ms: p.since_ms.load(Ordering::Relaxed),
            cause: if alive { "" } else { *lock(&p.cause) },
        }
    }

    /// A peer frontend (`from`) observed parent `s` as `seen`: adopted when
    /// it is newer than this frontend's own view. A parent found dead
    /// elsewhere is dead here at once (and this frontend's prober brings it
    /// back); one a peer's probe saw answer is alive here too. Returns
    /// whether the view changed.
    pub fn adopt(&self, s: Slot, seen: Observation, from: &str) -> bool {
        let p = &self.parents[s.index()];
        if !seen.supersedes(&self.observation(s)) {
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
            tracing::info!(parent = %self.name(s), peer = %from, "parent marked ALIVE: a peer frontend saw it answer");
        } else {
            *lock(&p.cause) = "peer";
            tracing::warn!(parent = %self.name(s), peer = %from, cause = seen.cause, "parent marked DEAD: a peer frontend found it dead");
        }
        true
    }
}

/// A lock that a panicked holder did not poison for good.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Probes the dead parents that `targets` names (each round anew: the
/// members change as caches join and leave) every
/// `settings.probe_interval`, forever.
pub async fn prober(
    health: Arc<Health>,
    targets: impl Fn() -> Vec<(Slot, std::net::SocketAddr)>,
    settings: HealthSettings,
    connect_timeout: Duration,
) {
    let mut tick = tokio::time::interval(settings.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (s, addr) in targets() {
            if health.is_alive(s) {
                continue;
            }
            if probe(addr, &settings.probe, connect_timeout).await {
                health.revive(s, "probe succeeded");
            }
        }
    }
}

/// One probe: a TCP connect; with `Answer`, any HTTP response to
/// `OPTIONS *`; with `Http`, a response to `HEAD url` with a status below
/// 500. The answer is awaited for `connect_timeout` too.
pub async fn probe(addr: std::net::SocketAddr, kind: &Probe, connect_timeout: Duration) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await
    else {
        return false;
    };
    let (req, below_500) = match kind {
        Probe::Tcp => return true,
        Probe::Answer => (
            format!("OPTIONS * HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: carpool-probe\r\n\r\n"),
            false,
        ),
        Probe::Http { url } => (
            format!("HEAD {url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: carpool-probe\r\n\r\n"),
            true,
        ),
    };
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(connect_timeout, s.read(&mut buf)).await {
        Ok(Ok(n)) if n >= 12 && buf.starts_with(b"HTTP/1.") => !below_500 || buf[9] < b'5',
        _ => false,
    }
}
