//! The disk tier: a directory of one file per object, an in-memory index
//! rebuilt at open, byte-bounded eviction, and periodic syncs with
//! checkpoints. Submodules own one step each: `format` (bytes on disk),
//! `index` (what is published), `writer` (an object being written),
//! `reader` (opening a published object), `verify` (checking bodies block
//! by block), `recovery` (open: lock, scan, verify), `evict` (space
//! accounting and eviction), `sync` (background syncs, checkpoints,
//! close).
//!
//! Every change of a key's files (publish by rename, retire, sidecar) is
//! made while holding that key's index shard, so the index and the
//! directory agree; reads and writes of file contents happen outside it.

pub(crate) mod evict;
pub(crate) mod format;
pub(crate) mod index;
pub(crate) mod marks;
pub(crate) mod reader;
pub(crate) mod recovery;
pub(crate) mod sync;
pub(crate) mod verify;
pub(crate) mod writer;

use crate::config::DiskConfig;
use crate::error::StoreError;
use crate::key::Key;
use crate::sync::{read, Signal};
use format::{blocks, encode_sidecar, Header, Layout, BLOCK_SHIFT, OBJECT_VERSION};
use index::{Check, Entry, Index, ShardGuard};
use reader::OpenObject;
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

    /// Publishes a completely written object under `key`, replacing any older
    /// one; `under_lock` runs with the new version's sequence while the key's
    /// shard is still held (to update the memory tier consistently).
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
        let old = g.insert(
            key,
            Entry {
                seq,
                obj_bytes,
                meta_bytes: 0,
                access: seq,
                check: Check::Sound,
            },
        );
        if let Some(old) = old {
            if old.has_sidecar() {
                remove_quietly(&self.layout.sidecar(key));
            }
            self.used.fetch_sub(old.bytes(), Ordering::Relaxed);
        }
        under_lock(&mut g, seq);
        Ok(())
    }

    /// The published object of `key` (any key string), if its file is there
    /// and sound. A file found corrupt is dropped.
    pub fn open_current(&self, key: Key) -> Option<(Entry, OpenObject)> {
        let e = {
            let tick = self.tick();
            self.index.lock(key).touch(key, tick)?
        };
        match self.open_object(key, &e) {
            Ok(Some(o)) => Some((e, o)),
            Ok(None) => {
                self.forget(key, e.seq);
                None
            }
            Err(reader::ReadError::Corrupt(why)) => {
                self.drop_corrupt(key, e.seq, None, None, why);
                None
            }
            Err(reader::ReadError::Io(err)) => {
                tracing::warn!(path = %self.layout.object(key).display(), %err, "cannot read cached object");
                None
            }
        }
    }

    /// Replaces the meta of the object `key`/`key_str` (of that `version`
    /// only, if given) with a sidecar, never touching its body. Returns false
    /// when no such object is published. `under_lock` runs with the object's
    /// version while the shard is held.
    pub fn update_meta(
        &self,
        key: Key,
        key_str: &[u8],
        version: Option<u64>,
        meta: &[u8],
        under_lock: impl FnOnce(&mut ShardGuard<'_>, u64),
    ) -> Result<bool, StoreError> {
        let Some((_, obj)) = self.open_current(key) else {
            return Ok(false);
        };
        let seq = obj.header.seq;
        if obj.key_str != key_str || version.is_some_and(|v| v != seq) {
            return Ok(false);
        }
        drop(obj);
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
        if g.get(key).map(|e| e.seq) != Some(seq) {
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
        let Some((e, obj)) = self.open_current(key) else {
            return false;
        };
        if obj.key_str != key_str {
            return false;
        }
        drop(obj);
        self.retire_if(key, e.seq).is_some()
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
        if self.retire_if(key, seq).is_none() {
            // Gone or replaced meanwhile (another reader dropped it first).
            return;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let path = self.layout.object(key);
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

/// Removes a file, ignoring errors (it may be gone; a leftover in `tmp/`
/// is cleared at the next open).
pub(crate) fn remove_quietly(path: &std::path::Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), err = %e, "cannot remove file");
        }
    }
}
