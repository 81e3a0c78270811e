//! The disk tier's in-memory index: which objects are published, their
//! publish sequence, accounted size, last access and whether their body is
//! known sound (see `verify`), in shards each behind
//! its own mutex. Also the per-shard recency order eviction reads. Holds no
//! file handles and does no I/O; the disk tier does its short metadata
//! operations (rename, unlink of a sidecar) while holding a shard, so the
//! index and the directory change together for one key.

use super::marks::Marks;
use crate::key::Key;
use crate::sync::lock;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Number of index shards (a power of two).
pub(crate) const SHARDS: usize = 64;

/// What is known of a published object's body.
#[derive(Clone, Debug, Default)]
pub(crate) enum Check {
    /// Sound: written by this run, or every block checked since open.
    #[default]
    Sound,
    /// Found at open and not read since: its blocks are to be checked
    /// before anything of them is served.
    Unchecked,
    /// Being checked: the blocks checked so far (shared by every reader).
    Partly(Arc<Marks>),
}

/// One published object.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Publish sequence, also in the file header or the log record.
    pub seq: u64,
    /// Where it is.
    pub place: Place,
}

/// Where a published object is.
#[derive(Clone, Debug)]
pub(crate) enum Place {
    /// An object file of its own.
    File(Box<FileObject>),
    /// A record in the small-object log.
    Log(Spot),
}

/// Where a log record is: segment, offset in it, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spot {
    pub seg: u64,
    pub off: u32,
    pub len: u32,
}

/// What the index knows of an object file.
#[derive(Clone, Debug)]
pub(crate) struct FileObject {
    /// Accounted bytes of the object file.
    pub obj_bytes: u64,
    /// Accounted bytes of its meta sidecar (0: none).
    pub meta_bytes: u64,
    /// Last access tick (the store's clock).
    pub access: u64,
    /// What is known of its body.
    pub check: Check,
}

impl Entry {
    /// An object file just published or found.
    pub fn file(seq: u64, obj_bytes: u64, check: Check) -> Entry {
        Entry {
            seq,
            place: Place::File(Box::new(FileObject {
                obj_bytes,
                meta_bytes: 0,
                access: seq,
                check,
            })),
        }
    }

    /// Bytes of the object: accounted bytes of its file and sidecar, or the
    /// length of its log record.
    pub fn bytes(&self) -> u64 {
        match &self.place {
            Place::File(f) => f.obj_bytes + f.meta_bytes,
            Place::Log(s) => u64::from(s.len),
        }
    }

    /// Whether a sidecar holds newer meta.
    pub fn has_sidecar(&self) -> bool {
        matches!(&self.place, Place::File(f) if f.meta_bytes > 0)
    }

    /// The object file's details, if it is one.
    pub fn as_file(&self) -> Option<&FileObject> {
        match &self.place {
            Place::File(f) => Some(f),
            Place::Log(_) => None,
        }
    }

    /// The log record's place, if it is one.
    pub fn spot(&self) -> Option<Spot> {
        match &self.place {
            Place::Log(s) => Some(*s),
            Place::File(_) => None,
        }
    }

    /// The last access of an object file (log records are evicted with
    /// their segment, not one by one).
    fn lru_tick(&self) -> Option<u64> {
        self.as_file().map(|f| f.access)
    }
}

/// Keys are hashes already: the map uses their low 64 bits as is.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// Hash builder for maps keyed by [`Key`].
pub(crate) type KeyBuild = BuildHasherDefault<KeyHasher>;

#[derive(Default)]
pub(crate) struct Shard {
    map: HashMap<Key, Entry, KeyBuild>,
    lru: BTreeSet<(u64, Key)>,
}

/// The index.
pub(crate) struct Index {
    shards: Box<[Mutex<Shard>]>,
    objects: AtomicU64,
    bytes: AtomicU64,
}

/// A locked shard; changes keep the index totals up to date.
pub(crate) struct ShardGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    index: &'a Index,
}

impl Index {
    pub fn new() -> Index {
        Index {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn shard_of(key: Key) -> usize {
        (key.as_u128() as usize) & (SHARDS - 1)
    }

    /// Locks the shard of `key`.
    pub fn lock(&self, key: Key) -> ShardGuard<'_> {
        self.lock_shard(Self::shard_of(key))
    }

    /// Locks shard number `i` (`i < SHARDS`).
    pub fn lock_shard(&self, i: usize) -> ShardGuard<'_> {
        ShardGuard {
            shard: lock(&self.shards[i % SHARDS]),
            index: self,
        }
    }

    /// Published objects.
    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// Accounted bytes of published objects.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl ShardGuard<'_> {
    /// The entry of `key`.
    pub fn get(&self, key: Key) -> Option<&Entry> {
        self.shard.map.get(&key)
    }

    /// The entry of an object file `key`, to change what is known of its
    /// body.
    pub fn check_mut(&mut self, key: Key) -> Option<&mut Check> {
        match &mut self.shard.map.get_mut(&key)?.place {
            Place::File(f) => Some(&mut f.check),
            Place::Log(_) => None,
        }
    }

    /// Records an access at `tick` (of an object file: log records keep
    /// no recency); returns the entry.
    pub fn touch(&mut self, key: Key, tick: u64) -> Option<Entry> {
        let s = &mut *self.shard;
        let e = s.map.get_mut(&key)?;
        if let Place::File(f) = &mut e.place {
            if tick > f.access {
                s.lru.remove(&(f.access, key));
                f.access = tick;
                s.lru.insert((tick, key));
            }
        }
        Some(e.clone())
    }

    /// Inserts or replaces; returns the entry replaced.
    pub fn insert(&mut self, key: Key, e: Entry) -> Option<Entry> {
        let old = self.remove(key);
        if let Some(t) = e.lru_tick() {
            self.shard.lru.insert((t, key));
        }
        self.index.objects.fetch_add(1, Ordering::Relaxed);
        self.index.bytes.fetch_add(e.bytes(), Ordering::Relaxed);
        self.shard.map.insert(key, e);
        old
    }

    /// Removes; returns the entry removed.
    pub fn remove(&mut self, key: Key) -> Option<Entry> {
        let e = self.shard.map.remove(&key)?;
        if let Some(t) = e.lru_tick() {
            self.shard.lru.remove(&(t, key));
        }
        self.index.objects.fetch_sub(1, Ordering::Relaxed);
        self.index.bytes.fetch_sub(e.bytes(), Ordering::Relaxed);
        Some(e)
    }

    /// Sets the accounted sidecar size of the object file `key`; returns
    /// the previous one.
    pub fn set_meta_bytes(&mut self, key: Key, meta_bytes: u64) -> Option<u64> {
        let Place::File(f) = &mut self.shard.map.get_mut(&key)?.place else {
            return None;
        };
        let old = f.meta_bytes;
        f.meta_bytes = meta_bytes;
        self.index.bytes.fetch_add(meta_bytes, Ordering::Relaxed);
        self.index.bytes.fetch_sub(old, Ordering::Relaxed);
        Some(old)
    }

    /// Replaces the place of the log record `key` (a rewrite with new meta);
    /// the record's length counts in the totals.
    pub fn set_spot(&mut self, key: Key, spot: Spot) {
        if let Some(e) = self.shard.map.get_mut(&key) {
            let old = e.bytes();
            e.place = Place::Log(spot);
            self.index
                .bytes
                .fetch_add(u64::from(spot.len), Ordering::Relaxed);
            self.index.bytes.fetch_sub(old, Ordering::Relaxed);
        }
    }

    /// The least recently used object file of this shard: (access tick, key).
    pub fn oldest(&self) -> Option<(u64, Key)> {
        self.shard.lru.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, bytes: u64) -> Entry {
        Entry::file(seq, bytes, Check::Sound)
    }

    #[test]
    fn totals_and_recency_follow_changes() {
        let idx = Index::new();
        // Keys that land in one shard: same low bits.
        let k = |i: u128| Key::from_u128((i << 64) | 5);
        let mut g = idx.lock(k(1));
        assert!(g.insert(k(1), entry(1, 4096)).is_none());
        assert!(g.insert(k(2), entry(2, 8192)).is_none());
        assert!(g.insert(k(3), entry(3, 4096)).is_none());
        assert_eq!((idx.objects(), idx.bytes()), (3, 16384));
        assert_eq!(g.oldest(), Some((1, k(1))));
        g.touch(k(1), 10);
        assert_eq!(g.oldest(), Some((2, k(2))));
        // An older tick never moves an entry back.
        g.touch(k(1), 4);
        assert_eq!(g.get(k(1)).and_then(|e| e.lru_tick()), Some(10));
        assert_eq!(g.set_meta_bytes(k(2), 4096), Some(0));
        assert_eq!(idx.bytes(), 20480);
        let old = g.insert(k(2), entry(11, 4096)).unwrap();
        assert_eq!(old.bytes(), 12288);
        assert_eq!((idx.objects(), idx.bytes()), (3, 12288));
        assert_eq!(g.oldest(), Some((3, k(3))));
        assert_eq!(g.remove(k(3)).map(|e| e.seq), Some(3));
        assert!(g.remove(k(3)).is_none());
        assert_eq!(g.oldest(), Some((10, k(1))));
        assert_eq!((idx.objects(), idx.bytes()), (2, 8192));
    }
}
