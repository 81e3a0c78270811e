//! Disk space accounting and eviction. Every byte of the directory's
//! objects is counted against `max_bytes` in 4 KiB blocks — published
//! objects and their sidecars, and the space writers reserve as their bodies
//! grow — so the directory stays under its limit while objects are being
//! written. Eviction is LRU by last access (publish or lookup): each index
//! shard keeps its entries in access order, and the victim is the oldest of
//! the shards' oldest entries (one short lock per shard, cheap next to the
//! rename and unlink an eviction costs). A background thread
//! evicts down to a low-water mark once usage passes a high-water mark; a
//! writer that would cross the limit itself evicts synchronously.

use super::index::{Entry, ShardGuard, SHARDS};
use super::{remove_quietly, DiskTier};
use crate::error::StoreError;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Background eviction starts above this share of `max_bytes` (percent)...
const HIGH_WATER_PERCENT: u64 = 95;
/// ...and stops at this one.
const LOW_WATER_PERCENT: u64 = 90;
/// The background evictor also checks usage this often unprompted.
const EVICT_POLL: Duration = Duration::from_secs(1);

/// An object taken out of the index whose files are still to be deleted.
pub(crate) struct Retired {
    /// Where the object file was moved (in `tmp/`), if it existed.
    dead: Option<PathBuf>,
    /// The entry removed.
    pub entry: Entry,
}

impl DiskTier {
    fn water(&self, percent: u64) -> u64 {
        self.cfg.max_bytes / 100 * percent + self.cfg.max_bytes % 100 * percent / 100
    }

    /// Accounted bytes in use (published + reserved).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Counts `n` published bytes found at open.
    pub(crate) fn add_used(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Reserves `n` bytes for a writer, evicting published objects if the
    /// limit would be crossed. Fails when nothing is left to evict.
    pub fn reserve(&self, n: u64) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let max = self.cfg.max_bytes;
        loop {
            let cur = self.used.load(Ordering::Acquire);
            if cur.saturating_add(n) <= max {
                if self
                    .used
                    .compare_exchange_weak(cur, cur + n, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.reserved.fetch_add(n, Ordering::Relaxed);
                    if cur + n > self.water(HIGH_WATER_PERCENT) {
                        self.evict_signal.notify();
                    }
                    return Ok(());
                }
                continue;
            }
            if !self.evict_one() {
                return Err(StoreError::DiskFull {
                    dir: self.layout.dir.clone(),
                    needed: n,
                });
            }
        }
    }

    /// Returns `n` reserved bytes.
    pub fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.reserved.fetch_sub(n, Ordering::Relaxed);
    }

    /// Evicts the least recently used object. Returns false when the index
    /// is empty.
    pub fn evict_one(&self) -> bool {
        loop {
            let mut best: Option<(u64, crate::key::Key)> = None;
            for i in 0..SHARDS {
                if let Some(o) = self.index.lock_shard(i).oldest() {
                    if best.is_none_or(|b| o.0 < b.0) {
                        best = Some(o);
                    }
                }
            }
            let Some((tick, key)) = best else {
                return false;
            };
            let mut g = self.index.lock(key);
            if g.get(key).map(|e| e.access) != Some(tick) {
                continue; // touched or gone meanwhile: pick again
            }
            let Some(r) = self.retire_locked(&mut g, key) else {
                continue;
            };
            drop(g);
            self.finish_retire(r);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return true;
        }
    }

    /// Takes `key` out of the index and its files out of `objects/` (a
    /// rename into `tmp/`, cheap whatever the size); the deletion is
    /// [`DiskTier::finish_retire`], done after the shard is released.
    pub(crate) fn retire_locked(
        &self,
        g: &mut ShardGuard<'_>,
        key: crate::key::Key,
    ) -> Option<Retired> {
        let entry = g.remove(key)?;
        let path = self.layout.object(key);
        let dead_path = self.temp_path('d');
        let dead = match fs::rename(&path, &dead_path) {
            Ok(()) => Some(dead_path),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), err = %e, "cannot move object out; deleting in place");
                    remove_quietly(&path);
                }
                None
            }
        };
        if entry.has_sidecar() {
            remove_quietly(&self.layout.sidecar(key));
        }
        Some(Retired { dead, entry })
    }

    /// Deletes a retired object's file and returns its space.
    pub(crate) fn finish_retire(&self, r: Retired) {
        if let Some(d) = r.dead {
            remove_quietly(&d);
        }
        self.used.fetch_sub(r.entry.bytes(), Ordering::AcqRel);
    }

    /// Evicts until usage is at most `target` or nothing is left.
    pub(crate) fn evict_to(&self, target: u64) {
        while self.used() > target && self.evict_one() {}
    }

    /// The background evictor's loop.
    pub(crate) fn evict_loop(self: Arc<Self>) {
        while self.evict_signal.wait(EVICT_POLL) {
            if self.used() > self.water(HIGH_WATER_PERCENT) {
                self.evict_to(self.water(LOW_WATER_PERCENT));
            }
        }
    }
}
