//! Disk space accounting and eviction. Every byte of the directory's
//! objects is counted against `max_bytes` — object files and their
//! sidecars in 4 KiB blocks, log records by their length, and the space
//! writers reserve as their bodies grow — so the directory stays under its
//! limit while objects are being written. Object files are evicted LRU by
//! last access (publish or lookup): each index shard keeps its object files
//! in access order. The log's segments are evicted whole, oldest first,
//! dated by when they were sealed. The victim is whichever is older: the
//! oldest of the shards' oldest files (one short lock per shard, cheap next
//! to the rename and unlink an eviction costs) or the oldest segment. A
//! background thread evicts down to a low-water mark once usage passes a
//! high-water mark (and writes out the log's buffer every
//! [`LOG_FLUSH_INTERVAL`]); a writer that would cross the limit itself
//! evicts synchronously.

use super::index::{Entry, Place, ShardGuard, SHARDS};
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
/// The background evictor checks usage, and writes out the log's buffered
/// records, this often unprompted: a small object stored is on its way to
/// the disk within this time (or once 256 KiB are buffered).
pub(crate) const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

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

    /// Evicts the least recently used object file or the oldest log
    /// segment, whichever is older. Returns false when nothing is left.
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
            let segment = self.log.oldest_tick();
            let Some((tick, key)) = best else {
                if segment.is_some() {
                    return self.evict_segment();
                }
                // All that is left is in the segment being filled.
                if self.log.seal(self.tick()) {
                    continue;
                }
                return false;
            };
            if segment.is_some_and(|s| s < tick) {
                return self.evict_segment();
            }
            let mut g = self.index.lock(key);
            if g.get(key).and_then(Entry::as_file).map(|f| f.access) != Some(tick) {
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

    /// Evicts the oldest sealed segment of the log: the objects whose
    /// current version is in it leave the index, then the file goes.
    fn evict_segment(&self) -> bool {
        let Some(s) = self.log.pop_oldest() else {
            return false;
        };
        let mut evicted = 0;
        for &key in &s.keys {
            let mut g = self.index.lock(key);
            if g.get(key)
                .and_then(Entry::spot)
                .is_some_and(|spot| spot.seg == s.id)
            {
                g.remove(key);
                evicted += 1;
            }
        }
        self.log.remove_file(s.id);
        self.used.fetch_sub(s.bytes, Ordering::AcqRel);
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
        true
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
        let dead = match &entry.place {
            Place::File(_) => self.move_out(key, entry.has_sidecar()),
            // The record stays in its segment (whose space goes with it):
            // the tombstone keeps it from coming back at the next open.
            Place::Log(_) => {
                self.tombstone(key, entry.seq);
                None
            }
        };
        Some(Retired { dead, entry })
    }

    /// Moves the object file of `key` out of `objects/` into `tmp/` (and
    /// removes its sidecar), with the key's shard held; returns where it
    /// went, for deletion once the shard is released.
    pub(crate) fn move_out(&self, key: crate::key::Key, sidecar: bool) -> Option<PathBuf> {
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
        if sidecar {
            remove_quietly(&self.layout.sidecar(key));
        }
        dead
    }

    /// Deletes a retired object's file and returns its space (a log
    /// record's space returns with its segment).
    pub(crate) fn finish_retire(&self, r: Retired) {
        if let Some(d) = r.dead {
            remove_quietly(&d);
        }
        if let Place::File(f) = &r.entry.place {
            self.used
                .fetch_sub(f.obj_bytes + f.meta_bytes, Ordering::AcqRel);
        }
    }

    /// Evicts until usage is at most `target` or nothing is left.
    pub(crate) fn evict_to(&self, target: u64) {
        while self.used() > target && self.evict_one() {}
    }

    /// The background evictor's loop; it also writes out the log's buffer.
    pub(crate) fn evict_loop(self: Arc<Self>) {
        while self.evict_signal.wait(LOG_FLUSH_INTERVAL) {
            if self.log.pending() {
                if let Err(err) = self.log.flush() {
                    tracing::warn!(%err, "writing small objects to the disk log failed");
                }
            }
            if self.used() > self.water(HIGH_WATER_PERCENT) {
                self.evict_to(self.water(LOW_WATER_PERCENT));
            }
        }
    }
}
