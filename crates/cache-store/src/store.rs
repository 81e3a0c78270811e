//! The store: the public face over both tiers. Lookups try memory, then
//! disk (copying small disk hits into memory after checking their body's
//! blocks; larger ones are returned as a file with what remains to check);
//! writers stream a body to disk (or memory) and publish it
//! atomically into both tiers; `update_meta`, `remove`, `stats` and `close`.

use crate::body::{Body, DiskBody, Hit, Tier};
use crate::config::StoreConfig;
use crate::disk::format::{MAX_KEY_LEN, MAX_META_LEN};
use crate::disk::index::Index;
use crate::disk::reader::ReadError;
use crate::disk::writer::TempObject;
use crate::disk::{Current, DiskTier, Logged};
use crate::error::StoreError;
use crate::key::Key;
use crate::memory::{MemObject, MemoryTier};
use crate::partial::{Partial, PartialBody, WriteState};
use crate::stats::{OpenProgress, Stats, TierStats};
use crate::sync::lock;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// carpool's object store: a memory tier and an optional disk tier.
/// `Send + Sync`; share it as `Arc<Store>`.
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    mem: Option<MemoryTier>,
    disk: Option<Arc<DiskTier>>,
    /// Shard locks: every change of a key (in either tier) holds its shard.
    index: Arc<Index>,
    mem_max_object: u64,
    /// Largest body a writer accepts.
    limit: u64,
    closed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Versions of objects of a memory-only store (the disk tier numbers its
    /// own).
    versions: AtomicU64,
    mem_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
}

impl Inner {
    /// Stops the background threads and waits for them.
    fn stop_threads(&self) {
        if let Some(d) = &self.disk {
            d.sync_signal.stop();
            d.evict_signal.stop();
        }
        for t in lock(&self.threads).drain(..) {
            if t.join().is_err() {
                tracing::error!("a disk cache background thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_threads();
        // Small objects still buffered reach the file (not the disk: an
        // unclean stop, found as such at the next open).
        if let Some(Err(err)) = self.disk.as_ref().map(|d| d.log.flush()) {
            tracing::warn!(%err, "writing the last small objects to the disk log failed");
        }
    }
}

impl Store {
    /// Opens the store: creates the disk directory if needed, locks it
    /// (a second store on the same directory gets [`StoreError::Locked`]),
    /// rebuilds the disk index, reporting progress, and starts the
    /// background syncer and evictor.
    pub fn open(
        cfg: StoreConfig,
        mut progress: impl FnMut(OpenProgress),
    ) -> Result<Arc<Store>, StoreError> {
        cfg.validate()?;
        let index = Arc::new(Index::new());
        let mem = (cfg.mem_bytes > 0).then(|| MemoryTier::new(cfg.mem_bytes, cfg.mem_max_object));
        let mut threads = Vec::new();
        let disk = match &cfg.disk {
            None => None,
            Some(d) => {
                let tier = DiskTier::open(d, index.clone(), &mut progress)?;
                for (name, f) in [
                    ("store-sync", DiskTier::sync_loop as fn(Arc<DiskTier>)),
                    ("store-evict", DiskTier::evict_loop),
                ] {
                    let t = tier.clone();
                    let h = std::thread::Builder::new()
                        .name(name.into())
                        .spawn(move || f(t))
                        .map_err(|e| StoreError::io("start a thread for", &d.dir, e))?;
                    threads.push(h);
                }
                Some(tier)
            }
        };
        let limit = match &cfg.disk {
            Some(d) => cfg.max_object_size.min(d.max_bytes),
            None => cfg.max_object_size.min(cfg.mem_max_object),
        };
        Ok(Arc::new(Store {
            inner: Arc::new(Inner {
                mem,
                disk,
                index,
                mem_max_object: cfg.mem_max_object,
                limit,
                closed: AtomicBool::new(false),
                threads: Mutex::new(threads),
                versions: AtomicU64::new(1),
                mem_hits: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }))
    }

    /// The object stored under `key` whose key string is `key_str`.
    pub fn lookup(&self, key: Key, key_str: &[u8]) -> Option<Hit> {
        let inner = &*self.inner;
        if let Some(o) = inner.mem.as_ref().and_then(|m| m.get(key, key_str)) {
            inner.mem_hits.fetch_add(1, Ordering::Relaxed);
            return Some(Hit {
                meta: o.meta.clone(),
                body: Body::Memory(o.body.clone()),
                tier: Tier::Memory,
                version: o.version,
            });
        }
        let hit = inner
            .disk
            .as_ref()
            .and_then(|d| self.lookup_disk(d, key, key_str));
        let counter = if hit.is_some() {
            &inner.disk_hits
        } else {
            &inner.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    fn lookup_disk(&self, d: &Arc<DiskTier>, key: Key, key_str: &[u8]) -> Option<Hit> {
        let (e, o) = match d.current(key)? {
            Current::File(e, o) => (e, o),
            Current::Log(l) => return self.logged_hit(key, key_str, l),
        };
        if o.key_str != key_str {
            return None;
        }
        let h = o.header;
        let mem = self.inner.mem.as_ref().filter(|m| m.admits(h.body_len));
        let Some(mem) = mem else {
            // Served from the file: what to check before its bytes go out.
            let check = match d.body_check(key, e.seq, e.as_file().map(|f| &f.check), &o) {
                Ok(c) => c,
                Err(ReadError::Corrupt(why)) => {
                    d.drop_corrupt(key, h.seq, Some(key_str), None, why);
                    return None;
                }
                Err(ReadError::Io(err)) => {
                    tracing::warn!(path = %d.layout.object(key).display(), %err, "cannot read cached object");
                    return None;
                }
            };
            let body = DiskBody::new(o.file, h.body_offset(), h.body_len, check);
            return Some(Hit {
                meta: o.meta,
                body: Body::Disk(body),
                tier: Tier::Disk,
                version: h.seq,
            });
        };
        // Small enough for memory: read it whole, check it, keep a copy.
        let body = match d.read_body(&o) {
            Ok(b) => b,
            Err(ReadError::Corrupt(why)) => {
                d.drop_corrupt(key, h.seq, Some(key_str), None, why);
                return None;
            }
            Err(ReadError::Io(err)) => {
                tracing::warn!(path = %d.layout.object(key).display(), %err, "cannot read cached object");
                return None;
            }
        };
        let g = self.inner.index.lock(key);
        if g.get(key).map(|e| e.seq) == Some(h.seq) {
            mem.insert(
                key,
                MemObject {
                    version: h.seq,
                    key_str: o.key_str.into(),
                    meta: o.meta.clone(),
                    body: body.clone(),
                },
            );
        }
        drop(g);
        Some(Hit {
            meta: o.meta,
            body: Body::Memory(body),
            tier: Tier::Disk,
            version: h.seq,
        })
    }

    /// A hit on a small object read from the log: it is in memory already,
    /// and goes into the memory tier when that admits it.
    fn logged_hit(&self, key: Key, key_str: &[u8], l: Logged) -> Option<Hit> {
        if l.key_str != key_str {
            return None;
        }
        if let Some(mem) = self
            .inner
            .mem
            .as_ref()
            .filter(|m| m.admits(l.body.len() as u64))
        {
            let g = self.inner.index.lock(key);
            if g.get(key).map(|e| e.seq) == Some(l.seq) {
                mem.insert(
                    key,
                    MemObject {
                        version: l.seq,
                        key_str: l.key_str.to_vec().into(),
                        meta: l.meta.clone(),
                        body: l.body.clone(),
                    },
                );
            }
        }
        Some(Hit {
            meta: l.meta,
            body: Body::Memory(l.body),
            tier: Tier::Disk,
            version: l.seq,
        })
    }

    /// Starts storing an object: its body is appended through the returned
    /// [`Writer`] and becomes visible at [`Writer::finish`]. `expected_len`,
    /// when known, is checked (and refused early if over the size limit).
    pub fn begin(
        &self,
        key: Key,
        key_str: &[u8],
        meta: &[u8],
        expected_len: Option<u64>,
    ) -> Result<Writer, StoreError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if key_str.len() > MAX_KEY_LEN {
            return Err(StoreError::KeyTooLong {
                len: key_str.len(),
                limit: MAX_KEY_LEN,
            });
        }
        if meta.len() > MAX_META_LEN {
            return Err(StoreError::MetaTooLarge {
                len: meta.len(),
                limit: MAX_META_LEN,
            });
        }
        if let Some(n) = expected_len.filter(|&n| n > inner.limit) {
            return Err(StoreError::TooLarge {
                limit: inner.limit,
                attempted: n,
            });
        }
        let small = |cap: u64| expected_len.unwrap_or(0).min(cap) as usize;
        let (sink, partial) = match &inner.disk {
            // Small, or of unknown length (it moves to a file of its own
            // if it grows too large for the log).
            Some(d) if expected_len.is_none_or(|n| d.logs(key_str.len(), meta.len(), n)) => (
                Sink::Log,
                Partial::memory(small(d.log.max_record()), expected_len),
            ),
            Some(d) => {
                let t = d.begin(key_str, meta)?;
                let p = Partial::file(t.file().clone(), t.body_offset(), expected_len);
                let mem_copy = inner
                    .mem
                    .as_ref()
                    .filter(|m| expected_len.is_none_or(|n| m.admits(n)))
                    .map(|_| BytesMut::with_capacity(small(inner.mem_max_object)));
                (
                    Sink::File {
                        temp: Box::new(t),
                        mem_copy,
                    },
                    p,
                )
            }
            None => (
                Sink::Memory,
                Partial::memory(small(inner.limit), expected_len),
            ),
        };
        Ok(Writer {
            inner: inner.clone(),
            key,
            key_str: key_str.into(),
            meta: Bytes::copy_from_slice(meta),
            expected_len,
            written: 0,
            partial: Arc::new(partial),
            sink,
            done: false,
        })
    }

    /// Replaces the meta of the stored object (a 304 refresh) without
    /// rewriting its body: on disk a small sidecar file is published by
    /// rename. Returns false when the object is not stored. Prefer
    /// [`Store::update_meta_if`] when the refresh was validated against a
    /// version read earlier.
    pub fn update_meta(&self, key: Key, key_str: &[u8], meta: &[u8]) -> Result<bool, StoreError> {
        self.refresh(key, key_str, None, meta)
    }

    /// [`Store::update_meta`], only if the stored object is still `version`
    /// ([`Hit::version`]); returns false (changing nothing) otherwise.
    pub fn update_meta_if(
        &self,
        key: Key,
        key_str: &[u8],
        version: u64,
        meta: &[u8],
    ) -> Result<bool, StoreError> {
        self.refresh(key, key_str, Some(version), meta)
    }

    fn refresh(
        &self,
        key: Key,
        key_str: &[u8],
        version: Option<u64>,
        meta: &[u8],
    ) -> Result<bool, StoreError> {
        if meta.len() > MAX_META_LEN {
            return Err(StoreError::MetaTooLarge {
                len: meta.len(),
                limit: MAX_META_LEN,
            });
        }
        let inner = &*self.inner;
        let meta_b = Bytes::copy_from_slice(meta);
        // Run with the key's shard held.
        let update_mem = |version: Option<u64>| {
            let Some(m) = &inner.mem else { return false };
            let Some(o) = m.get(key, key_str) else {
                return false;
            };
            if version.is_some_and(|v| v != o.version) {
                return false;
            }
            m.insert(
                key,
                MemObject {
                    version: o.version,
                    key_str: o.key_str.clone(),
                    meta: meta_b.clone(),
                    body: o.body.clone(),
                },
            )
        };
        if let Some(d) = &inner.disk {
            if d.update_meta(key, key_str, version, meta, |_, seq| {
                update_mem(Some(seq));
            })? {
                return Ok(true);
            }
        }
        let _g = inner.index.lock(key);
        Ok(update_mem(version))
    }

    /// Removes an object from both tiers. Returns whether it was stored.
    pub fn remove(&self, key: Key, key_str: &[u8]) -> bool {
        let inner = &*self.inner;
        let on_disk = inner.disk.as_ref().is_some_and(|d| d.remove(key, key_str));
        let _g = inner.index.lock(key);
        let in_mem = inner.mem.as_ref().is_some_and(|m| m.remove(key, key_str));
        on_disk || in_mem
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let inner = &*self.inner;
        let mut s = Stats {
            misses: inner.misses.load(Ordering::Relaxed),
            ..Stats::default()
        };
        if let Some(m) = &inner.mem {
            let (objects, bytes, evictions) = m.stats();
            s.memory = TierStats {
                objects,
                bytes,
                hits: inner.mem_hits.load(Ordering::Relaxed),
                evictions,
                capacity: m.capacity(),
            };
        }
        if let Some(d) = &inner.disk {
            s.disk = TierStats {
                objects: d.index.objects(),
                bytes: d.index.bytes(),
                hits: inner.disk_hits.load(Ordering::Relaxed),
                evictions: d.evictions.load(Ordering::Relaxed),
                capacity: d.cfg.max_bytes,
            };
            s.dropped_corrupt = d.dropped.load(Ordering::Relaxed);
            s.disk_writing_bytes = d.reserved();
            s.disk_used_bytes = d.used();
        }
        s
    }

    /// Closes the store: refuses new objects, stops the background threads,
    /// syncs the disk and records a clean checkpoint, so the next open
    /// trusts every object without verifying bodies. Lookups keep working;
    /// the directory stays locked until the store is dropped.
    pub fn close(&self) -> Result<(), StoreError> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.stop_threads();
        match &self.inner.disk {
            Some(d) => d.checkpoint(true),
            None => Ok(()),
        }
    }
}

/// Streams one object's body into the store. Nothing is visible to lookups
/// until [`Writer::finish`]; dropping the writer aborts.
pub struct Writer {
    inner: Arc<Inner>,
    key: Key,
    key_str: Box<[u8]>,
    meta: Bytes,
    expected_len: Option<u64>,
    written: u64,
    partial: Arc<Partial>,
    sink: Sink,
    done: bool,
}

/// Where a writer's body goes.
enum Sink {
    /// A memory-only store: the partial body becomes the object.
    Memory,
    /// A small object so far: held in the partial body, for the log.
    Log,
    /// An object file of its own, with a copy for the memory tier while the
    /// body is small enough for it.
    File {
        temp: Box<TempObject>,
        mem_copy: Option<BytesMut>,
    },
}

impl Writer {
    /// Appends body bytes. Fails with [`StoreError::TooLarge`] past the size
    /// limit, [`StoreError::LengthMismatch`] past the announced length, or a
    /// disk error; the writer should then be aborted.
    pub fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let total = self.written + data.len() as u64;
        if total > self.inner.limit {
            return Err(StoreError::TooLarge {
                limit: self.inner.limit,
                attempted: total,
            });
        }
        if let Some(e) = self.expected_len.filter(|&e| total > e) {
            return Err(StoreError::LengthMismatch {
                expected: e,
                written: total,
            });
        }
        if let (Sink::Log, Some(d)) = (&self.sink, &self.inner.disk) {
            if !d.logs(self.key_str.len(), self.meta.len(), total) {
                self.sink = self.spill(d)?;
            }
        }
        match &mut self.sink {
            Sink::File { temp, mem_copy } => {
                temp.append(data)?;
                if mem_copy.is_some() && total > self.inner.mem_max_object {
                    *mem_copy = None;
                }
                if let Some(c) = mem_copy {
                    c.extend_from_slice(data);
                }
            }
            Sink::Log | Sink::Memory => self.partial.push(data),
        }
        self.written = total;
        self.partial.set_written(total);
        Ok(())
    }

    /// Moves a body grown too large for the log into an object file of its
    /// own: what was written so far goes into the file, and readers of the
    /// partial body follow it there.
    fn spill(&self, d: &Arc<DiskTier>) -> Result<Sink, StoreError> {
        let mut temp = d.begin(&self.key_str, &self.meta)?;
        let so_far = self.partial.snapshot();
        temp.append(&so_far)?;
        let mem_copy = self
            .inner
            .mem
            .as_ref()
            .filter(|m| m.admits(so_far.len() as u64))
            .map(|_| BytesMut::from(&so_far[..]));
        self.partial.spill(temp.file().clone(), temp.body_offset());
        Ok(Sink::File {
            temp: Box::new(temp),
            mem_copy,
        })
    }

    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A reader of the body written so far, for other tasks.
    pub fn reader(&self) -> PartialBody {
        PartialBody::new(self.partial.clone())
    }

    /// Publishes the object atomically: lookups see it from now on, and it
    /// replaces any older version. Fails (and aborts) if fewer bytes than
    /// announced were written or the store was closed.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.done = true;
        let res = self.publish();
        self.partial.set_state(if res.is_ok() {
            WriteState::Finished
        } else {
            WriteState::Aborted
        });
        res
    }

    fn publish(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.expected_len.filter(|&e| e != self.written) {
            return Err(StoreError::LengthMismatch {
                expected: e,
                written: self.written,
            });
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let inner = &*self.inner;
        let key = self.key;
        let mem_obj = |body: Bytes, version: u64| MemObject {
            version,
            key_str: self.key_str.clone(),
            meta: self.meta.clone(),
            body,
        };
        let sink = std::mem::replace(&mut self.sink, Sink::Memory);
        match (sink, &inner.disk) {
            (Sink::File { temp, mem_copy }, Some(d)) => {
                let copy = mem_copy.map(BytesMut::freeze);
                d.publish(*temp, key, &self.key_str, &self.meta, |_, seq| {
                    if let Some(m) = &inner.mem {
                        match copy {
                            Some(body) => {
                                m.insert(key, mem_obj(body, seq));
                            }
                            None => m.remove_any(key),
                        }
                    }
                })
            }
            (Sink::Log, Some(d)) => {
                let body = self.partial.freeze();
                d.publish_logged(key, &self.key_str, &self.meta, &body, |_, seq| {
                    if let Some(m) = &inner.mem {
                        if m.admits(body.len() as u64) {
                            m.insert(key, mem_obj(body.clone(), seq));
                        } else {
                            m.remove_any(key);
                        }
                    }
                })
            }
            _ => {
                let body = self.partial.freeze();
                let version = inner.versions.fetch_add(1, Ordering::Relaxed);
                let _g = inner.index.lock(key);
                if let Some(m) = &inner.mem {
                    m.insert(key, mem_obj(body, version));
                }
                Ok(())
            }
        }
    }

    /// Abandons the object: it never becomes visible. Dropping does the same.
    pub fn abort(self) {}
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            self.partial.set_state(WriteState::Aborted);
            self.sink = Sink::Memory; // deletes a temporary file
        }
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("key", &self.key)
            .field("written", &self.written)
            .finish()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("disk", &self.inner.disk.as_ref().map(|d| &d.layout.dir))
            .finish()
    }
}
