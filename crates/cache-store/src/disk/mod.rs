//! The disk tier: small objects packed into the segments of a log, larger
//! ones a file each, an in-memory index rebuilt at open, byte-bounded
//! eviction, and periodic syncs with checkpoints. Submodules own one step
//! each: `format` (bytes of object files), `segment` (bytes of the log),
//! `log` (the log's segments), `index` (what is published), `writer` (an
//! object file being written), `reader` (opening a published object file),
//! `verify` (checking bodies block by block), `recovery` (open: lock, scan,
//! verify), `evict` (space accounting and eviction), `sync` (background
//! syncs, checkpoints, close).
//!
//! Every change of a key's files (publish by rename, retire, sidecar) and
//! every append of its records to the log is made while holding that key's
//! index shard (then the log's own lock), so the index, the directory and
//! the log agree. Reads and writes of object file contents happen outside
//! it; a log append is a copy into the log's buffer, with a `pwrite` when
//! the buffer is full or a tombstone must be written out at once.

pub(crate) mod evict;
pub(crate) mod format;
pub(crate) mod index;
pub(crate) mod log;
pub(crate) mod marks;
pub(crate) mod reader;
pub(crate) mod recovery;
pub(crate) mod segment;
pub(crate) mod sync;
pub(crate) mod verify;
pub(crate) mod writer;

use crate::config::DiskConfig;
use crate::error::StoreError;
use crate::key::Key;
use crate::sync::{read, Signal};
use bytes::Bytes;
use format::{blocks, encode_sidecar, Header, Layout, BLOCK_SHIFT, OBJECT_VERSION};
use index::Spot;
use index::{Check, Entry, Index, Place, ShardGuard};
use log::Log;
use reader::OpenObject;
use segment::{decode_record, Kind};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use writer::TempObject;

/// The disk tier.
pub(crate) struct DiskTier {
    pub layout: Layout,
    pub cfg: DiskConfig,
    pub index: Arc<Index>,
    /// The small-object log.
    pub log: Log,
    /// Accounted bytes: published objects plus reservations of writers.
    used: AtomicU64,
    /// Accounted bytes reserved by writers (part of `used`).
    reserved: AtomicU64,
    /// Publish sequences and access ticks.
    clock: AtomicU64,
    /// The first sequence of this run: objects from here on were written
    /// by it, and their bodies are sound.
    run_start: AtomicU64,
    /// Objects published since open (the syncer skips idle intervals).
    publishes: AtomicU64,
    /// Publishers hold it shared from taking a sequence until their rename is
    /// done; a checkpoint takes it exclusively to read the clock.
    gate: RwLock<()>,
    closed: AtomicBool,
    /// Serializes checkpoint writes.
    checkpointing: Mutex<()>,
    temp_names: AtomicU64,
    /// The directory itself, for syncfs and fsync.
    dir_file: File,
    /// Held open with an exclusive flock while the tier lives.
    _lock: File,
    pub evict_signal: Signal,
    pub sync_signal: Signal,
    pub evictions: AtomicU64,
    pub dropped: AtomicU64,
}

impl DiskTier {
    /// A new tick of the clock.
    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The first sequence of this run.
    pub fn run_start(&self) -> u64 {
        self.run_start.load(Ordering::Relaxed)
    }

    /// A name for a temporary file, unique while this tier is open.
    pub fn temp_path(&self, kind: char) -> std::path::PathBuf {
        self.layout
            .temp(kind, self.temp_names.fetch_add(1, Ordering::Relaxed))
    }

    /// Accounted bytes reserved by writers.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Whether the tier was closed (no more publishes).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Starts writing an object.
    pub fn begin(self: &Arc<Self>, key_str: &[u8], meta: &[u8]) -> Result<TempObject, StoreError> {
        TempObject::create(self, key_str, meta)
    }

    /// Whether an object with these parts goes into the log (rather than a
    /// file of its own).
    pub fn logs(&self, key_len: usize, meta_len: usize, body_len: u64) -> bool {
        Log::record_bytes(key_len, meta_len, body_len) <= self.log.max_record()
    }

    /// Publishes a completely written object file under `key`, replacing
    /// any older version; `under_lock` runs with the new version's sequence
    /// while the key's shard is still held (to update the memory tier
    /// consistently).
    pub fn publish(
        &self,
        mut t: TempObject,
        key: Key,
        key_str: &[u8],
        meta: &[u8],
        under_lock: impl FnOnce(&mut ShardGuard<'_>, u64),
    ) -> Result<(), StoreError> {
        let sum = t.seal()?;
        let _gate = read(&self.gate);
        if self.is_closed() {
            return Err(StoreError::Closed);
        }
        let seq = self.tick();
        let h = Header {
            version: OBJECT_VERSION,
            block_shift: BLOCK_SHIFT,
            key,
            key_len: key_str.len() as u32,
            meta_len: meta.len() as u32,
            body_len: t.written(),
            seq,
            sum,
        };
        t.file()
            .write_all_at(&h.encode(key_str, meta), 0)
            .map_err(|e| StoreError::io("write header of", t.path(), e))?;
        let dest = self.layout.object(key);
        let mut g = self.index.lock(key);
        let mut renamed = fs::rename(t.path(), &dest);
        if renamed
            .as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        {
            // Subdirectories are made on first use.
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| StoreError::io("create", parent, e))?;
            }
            renamed = fs::rename(t.path(), &dest);
        }
        renamed.map_err(|e| StoreError::io("publish (rename)", &dest, e))?;
        self.publishes.fetch_add(1, Ordering::Relaxed);
        let obj_bytes = t.into_published();
        self.reserved.fetch_sub(obj_bytes, Ordering::Relaxed);
        let old = g.insert(key, Entry::file(seq, obj_bytes, Check::Sound));
        if let Some(old) = old {
            match &old.place {
                // The rename replaced its file.
                Place::File(_) => {
                    if old.has_sidecar() {
                        remove_quietly(&self.layout.sidecar(key));
                    }
                    self.used.fetch_sub(old.bytes(), Ordering::Relaxed);
                }
                // Its record stays in the log until its segment goes: say
                // it is gone, for the next open.
                Place::Log(_) => self.tombstone(key, old.seq),
            }
        }
        under_lock(&mut g, seq);
        Ok(())
    }

    /// Publishes a small object into the log (see [`DiskTier::logs`]) under
    /// `key`, replacing any older version; `under_lock` as for
    /// [`DiskTier::publish`].
    pub fn publish_logged(
        &self,
        key: Key,
        key_str: &[u8],
        meta: &[u8],
        body: &[u8],
        under_lock: impl FnOnce(&mut ShardGuard<'_>, u64),
    ) -> Result<(), StoreError> {
        let len = Log::record_bytes(key_str.len(), meta.len(), body.len() as u64);
        self.reserve(len)?;
        let _gate = read(&self.gate);
        if self.is_closed() {
            self.release(len);
            return Err(StoreError::Closed);
        }
        let mut g = self.index.lock(key);
        // Taken under the shard: the log holds a key's versions in order.
        let seq = self.tick();
        let spot = match self
            .log
            .append(Kind::Object, key, seq, key_str, meta, body, seq)
        {
            Ok(s) => s,
            Err(e) => {
                drop(g);
                self.release(len);
                return Err(e);
            }
        };
        // The reservation now belongs to the segment.
        self.reserved.fetch_sub(len, Ordering::Relaxed);
        self.publishes.fetch_add(1, Ordering::Relaxed);
        let old = g.insert(
            key,
            Entry {
                seq,
                place: Place::Log(spot),
            },
        );
        // An older record is superseded by the higher sequence; an older
        // file goes.
        let dead = match old.as_ref().and_then(Entry::as_file) {
            Some(f) => {
                let dead = self.move_out(key, f.meta_bytes > 0);
                self.used
                    .fetch_sub(f.obj_bytes + f.meta_bytes, Ordering::Relaxed);
                dead
            }
            None => None,
        };
        under_lock(&mut g, seq);
        drop(g);
        if let Some(d) = dead {
            remove_quietly(&d);
        }
        Ok(())
    }

    /// Appends a tombstone for the versions of `key` up to `seq` (called
    /// with the key's shard held) and writes it out with what the log
    /// buffers. Its few bytes are counted without waiting for room: the
    /// evictor makes it.
    pub(crate) fn tombstone(&self, key: Key, seq: u64) {
        let len = Log::record_bytes(0, 0, 0);
        self.used.fetch_add(len, Ordering::AcqRel);
        // Written out at once: a removal must survive the process.
        let appended = self
            .log
            .append(Kind::Tombstone, key, seq, b"", b"", b"", self.tick())
            .and_then(|_| self.log.flush());
        if let Err(err) = appended {
            self.used.fetch_sub(len, Ordering::AcqRel);
            tracing::warn!(%err, "cannot record a removal in the disk log: the object may come back after a restart");
        }
    }

    /// The published object of `key` (any key string), if it is there and
    /// sound. An object found corrupt is dropped.
    pub fn current(&self, key: Key) -> Option<Current> {
        let e = {
            let tick = self.tick();
            self.index.lock(key).touch(key, tick)?
        };
        let res = match &e.place {
            Place::File(_) => self
                .open_object(key, &e)
                .map(|o| o.map(|o| Current::File(e.clone(), o))),
            Place::Log(spot) => self
                .read_logged(key, e.seq, *spot)
                .map(|o| o.map(Current::Log)),
        };
        match res {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                self.forget(key, e.seq);
                None
            }
            Err(reader::ReadError::Corrupt(why)) => {
                self.drop_corrupt(key, e.seq, None, None, why);
                None
            }
            Err(reader::ReadError::Io(err)) => {
                tracing::warn!(path = %self.where_is(key, &e).display(), %err, "cannot read cached object");
                None
            }
        }
    }

    /// The file holding the object of entry `e` (for log lines).
    pub fn where_is(&self, key: Key, e: &Entry) -> std::path::PathBuf {
        match &e.place {
            Place::File(_) => self.layout.object(key),
            Place::Log(s) => self.log.path(s.seg),
        }
    }

    /// Reads and checks the log record of `key` version `seq` at `spot`.
    /// `Ok(None)`: its segment is gone.
    fn read_logged(
        &self,
        key: Key,
        seq: u64,
        spot: Spot,
    ) -> Result<Option<Logged>, reader::ReadError> {
        use reader::ReadError::Corrupt;
        let Some(b) = self.log.read(spot)? else {
            return Ok(None);
        };
        if b.len() < spot.len as usize {
            return Err(Corrupt("segment shorter than its index says"));
        }
        let h = decode_record(&b, spot.seg, u64::from(spot.off))
            .map_err(Corrupt)?
            .ok_or(Corrupt("no record where the index says"))?;
        if h.kind != Kind::Object
            || h.key != key
            || h.seq != seq
            || h.record_len() != u64::from(spot.len)
        {
            return Err(Corrupt("record differs from its index entry"));
        }
        let (k, m, body) = h.parts();
        Ok(Some(Logged {
            seq,
            key_str: b.slice(k),
            meta: b.slice(m),
            body: b.slice(body),
        }))
    }

    /// Replaces the meta of the object `key`/`key_str` (of that `version`
    /// only, if given), never touching its body file: a sidecar for an
    /// object file, a new record (the same version) for a logged one.
    /// Returns false when no such object is published. `under_lock` runs
    /// with the object's version while the shard is held.
    pub fn update_meta(
        &self,
        key: Key,
        key_str: &[u8],
        version: Option<u64>,
        meta: &[u8],
        under_lock: impl FnOnce(&mut ShardGuard<'_>, u64),
    ) -> Result<bool, StoreError> {
        let (seq, logged) = match self.current(key) {
            None => return Ok(false),
            Some(Current::File(_, obj)) => {
                if obj.key_str != key_str {
                    return Ok(false);
                }
                (obj.header.seq, None)
            }
            Some(Current::Log(l)) => {
                if l.key_str != key_str {
                    return Ok(false);
                }
                (l.seq, Some(l))
            }
        };
        if version.is_some_and(|v| v != seq) {
            return Ok(false);
        }
        match logged {
            Some(l) => self.rewrite_logged(key, l, meta, under_lock),
            None => self.write_sidecar(key, seq, meta, under_lock),
        }
    }

    /// Writes the record of `l` again with new meta.
    fn rewrite_logged(
        &self,
        key: Key,
        l: Logged,
        meta: &[u8],
        under_lock: impl FnOnce(&mut ShardGuard<'_>, u64),
    ) -> Result<bool, StoreError> {
        let len = Log::record_bytes(l.key_str.len(), meta.len(), l.body.len() as u64);
        self.reserve(len)?;
        let mut g = self.index.lock(key);
        if g.get(key).map(|e| (e.seq, e.spot().is_some())) != Some((l.seq, true)) {
            drop(g);
            self.release(len);
            return Ok(false);
        }
        let tick = self.tick();
        match self
            .log
            .append(Kind::Object, key, l.seq, &l.key_str, meta, &l.body, tick)
        {
            Ok(spot) => {
                self.reserved.fetch_sub(len, Ordering::Relaxed);
                g.set_spot(key, spot);
                under_lock(&mut g, l.seq);
                Ok(true)
            }
            Err(e) => {
                drop(g);
                self.release(len);
                Err(e)
            }
        }
    }

    /// Publishes a meta sidecar for the object file `key` version `seq`.
    fn write_sidecar(
        &self,
        key: Key,
        seq: u64,
        meta: &[u8],
        under_lock: impl FnOnce(&mut ShardGuard<'_>, u64),
    ) -> Result<bool, StoreError> {
        let bytes = encode_sidecar(key, seq, meta);
        let need = blocks(bytes.len() as u64);
        self.reserve(need)?;
        let tmp = self.temp_path('m');
        let written = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes));
        if let Err(e) = written {
            remove_quietly(&tmp);
            self.release(need);
            return Err(StoreError::io("write meta sidecar", &tmp, e));
        }
        let mut g = self.index.lock(key);
        if g.get(key).map(|e| (e.seq, e.as_file().is_some())) != Some((seq, true)) {
            drop(g);
            remove_quietly(&tmp);
            self.release(need);
            return Ok(false);
        }
        let dest = self.layout.sidecar(key);
        if let Err(e) = fs::rename(&tmp, &dest) {
            drop(g);
            remove_quietly(&tmp);
            self.release(need);
            return Err(StoreError::io("publish meta sidecar (rename)", &dest, e));
        }
        let old = g.set_meta_bytes(key, need).unwrap_or(0);
        self.reserved.fetch_sub(need, Ordering::Relaxed);
        self.used.fetch_sub(old, Ordering::Relaxed);
        under_lock(&mut g, seq);
        Ok(true)
    }

    /// Removes the object `key`/`key_str`. Returns whether it was there.
    pub fn remove(&self, key: Key, key_str: &[u8]) -> bool {
        let seq = match self.current(key) {
            Some(Current::File(e, obj)) if obj.key_str == key_str => e.seq,
            Some(Current::Log(l)) if l.key_str == key_str => l.seq,
            _ => return false,
        };
        self.retire_if(key, seq).is_some()
    }

    /// Drops the object of `key` found corrupt (in body block `block`, when
    /// one failed), if it is still version `seq`; logs it once, with its
    /// key string when known.
    pub fn drop_corrupt(
        &self,
        key: Key,
        seq: u64,
        key_str: Option<&[u8]>,
        block: Option<u64>,
        why: &str,
    ) {
        let Some(e) = self.retire_if(key, seq) else {
            // Gone or replaced meanwhile (another reader dropped it first).
            return;
        };
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let path = self.where_is(key, &e);
        match key_str {
            Some(k) => {
                tracing::warn!(key = %String::from_utf8_lossy(k), path = %path.display(), block, why, "dropping corrupt cached object: it is not served")
            }
            None => {
                tracing::warn!(path = %path.display(), why, "dropping corrupt cached object: it is not served")
            }
        }
    }

    /// Forgets the object of `key` whose file vanished, if still version `seq`.
    fn forget(&self, key: Key, seq: u64) {
        self.retire_if(key, seq);
    }

    /// Retires the object of `key` if it is still version `seq`; returns its
    /// entry.
    fn retire_if(&self, key: Key, seq: u64) -> Option<Entry> {
        let mut g = self.index.lock(key);
        if g.get(key)?.seq != seq {
            return None;
        }
        let r = self.retire_locked(&mut g, key)?;
        drop(g);
        let e = r.entry.clone();
        self.finish_retire(r);
        Some(e)
    }
}

/// The current version of a key, opened.
pub(crate) enum Current {
    /// An object file.
    File(Entry, OpenObject),
    /// A log record, read and checked.
    Log(Logged),
}

/// A small object read from the log.
pub(crate) struct Logged {
    pub seq: u64,
    pub key_str: Bytes,
    pub meta: Bytes,
    pub body: Bytes,
}

/// Removes a file, ignoring errors (it may be gone; a leftover in `tmp/`
/// is cleared at the next open).
pub(crate) fn remove_quietly(path: &std::path::Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), err = %e, "cannot remove file");
        }
    }
}
