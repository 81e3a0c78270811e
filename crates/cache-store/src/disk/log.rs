//! The small-object log: small objects are packed one after the other into
//! segment files (`log/<16 hex id>`, format in `segment.rs`) instead of a
//! file each. Records are gathered in the active segment's buffer and
//! written with one positional write per [`FLUSH_BYTES`] (or per flush
//! interval, or before a sync), so storing a small object costs no file
//! creation, rename or unlink and a fraction of a write. Segments are
//! sealed when full and evicted whole, oldest first (FIFO), which frees
//! their space with one unlink; the index entries that still point into an
//! evicted segment are removed with it.
//!
//! This module owns the segments and their bytes; what is current for a
//! key is the index's (the disk tier keeps both in step under the key's
//! shard lock, always taken before the log's own lock).

use super::index::Spot;
use super::segment::{append_record, encode_segment_header, Kind, RecordHeader};
use crate::error::StoreError;
use crate::key::Key;
use crate::sync::lock;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The active segment's buffer is written out once it holds this much.
pub(crate) const FLUSH_BYTES: usize = 256 << 10;
/// Smallest and largest segment.
const SEGMENT_MIN: u64 = 256 << 10;
const SEGMENT_MAX: u64 = 16 << 20;
/// A disk budget holds about this many segments (so eviction frees about
/// 1/32 of it at a time).
const SEGMENTS_PER_BUDGET: u64 = 32;

/// The segment being filled.
struct Active {
    id: u64,
    file: Arc<File>,
    /// Offset in the file of `buf[0]`: everything before it is written.
    base: u64,
    /// Records not written yet.
    buf: Vec<u8>,
    /// Keys of the object records in the segment (for eviction).
    keys: Vec<Key>,
    /// Accounted bytes: its records (the 32-byte header is not counted).
    bytes: u64,
}

/// A full segment.
pub(crate) struct Sealed {
    pub id: u64,
    pub file: Arc<File>,
    pub keys: Vec<Key>,
    pub bytes: u64,
    /// The store's clock when it was sealed (or its newest record's
    /// sequence, found at open): eviction compares it with the last access
    /// of object files.
    pub tick: u64,
}

struct State {
    active: Option<Active>,
    sealed: BTreeMap<u64, Sealed>,
    next_id: u64,
}

/// The log.
pub(crate) struct Log {
    dir: PathBuf,
    /// Size of a segment.
    pub seg_bytes: u64,
    /// Largest record taken.
    max_record: u64,
    state: Mutex<State>,
}

/// Segment size for a disk budget of `max_bytes`.
pub(crate) fn segment_size(max_bytes: u64) -> u64 {
    (max_bytes / SEGMENTS_PER_BUDGET)
        .clamp(SEGMENT_MIN, SEGMENT_MAX)
        .next_multiple_of(4096)
}

/// The file name of segment `id`.
pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:016x}")
}

impl Log {
    /// An empty log in `dir` (see [`Log::restore`]) taking records of up
    /// to `max_record` bytes (at most a quarter of a segment).
    pub fn new(dir: PathBuf, seg_bytes: u64, max_record: u64) -> Log {
        Log {
            dir,
            seg_bytes,
            max_record: max_record.min(seg_bytes / 4),
            state: Mutex::new(State {
                active: None,
                sealed: BTreeMap::new(),
                next_id: 1,
            }),
        }
    }

    /// Installs the segments found at open; new segments are numbered from
    /// `next_id`.
    pub fn restore(&self, sealed: Vec<Sealed>, next_id: u64) {
        let mut st = lock(&self.state);
        st.sealed = sealed.into_iter().map(|s| (s.id, s)).collect();
        st.next_id = next_id;
    }

    /// The path of segment `id`.
    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(segment_name(id))
    }

    /// Largest record the log takes (larger objects get a file).
    pub fn max_record(&self) -> u64 {
        self.max_record
    }

    /// Appends a record (an object, or a tombstone with empty parts) and
    /// returns where it is. `tick` dates a segment this append seals.
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &self,
        kind: Kind,
        key: Key,
        seq: u64,
        key_str: &[u8],
        meta: &[u8],
        body: &[u8],
        tick: u64,
    ) -> Result<Spot, StoreError> {
        let h = RecordHeader {
            kind,
            key,
            key_len: key_str.len() as u32,
            meta_len: meta.len() as u32,
            body_len: body.len() as u64,
            seq,
        };
        let len = h.record_len();
        let mut st = lock(&self.state);
        let fits = |a: &Active| a.base + a.buf.len() as u64 + len <= self.seg_bytes;
        if !st.active.as_ref().is_some_and(fits) {
            self.seal_locked(&mut st, tick)?;
            let id = st.next_id;
            let path = self.path(id);
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| StoreError::io("create segment", &path, e))?;
            st.next_id += 1;
            st.active = Some(Active {
                id,
                file: Arc::new(file),
                base: 0,
                buf: encode_segment_header(id).to_vec(),
                keys: Vec::new(),
                bytes: 0,
            });
        }
        let Some(a) = st.active.as_mut() else {
            unreachable!("an active segment was just made");
        };
        let off = a.base + a.buf.len() as u64;
        append_record(&mut a.buf, a.id, a.base, &h, key_str, meta, body);
        a.bytes += len;
        if kind == Kind::Object {
            a.keys.push(key);
        }
        let spot = Spot {
            seg: a.id,
            off: off as u32,
            len: len as u32,
        };
        if a.buf.len() >= FLUSH_BYTES {
            Self::flush_active(a, &self.dir)?;
        }
        Ok(spot)
    }

    /// Accounted bytes a record with these parts takes.
    pub fn record_bytes(key_str: usize, meta: usize, body: u64) -> u64 {
        super::segment::record_len((key_str + meta) as u64 + body)
    }

    fn flush_active(a: &mut Active, dir: &std::path::Path) -> Result<(), StoreError> {
        if a.buf.is_empty() {
            return Ok(());
        }
        a.file
            .write_all_at(&a.buf, a.base)
            .map_err(|e| StoreError::io("write segment", dir.join(segment_name(a.id)), e))?;
        a.base += a.buf.len() as u64;
        a.buf.clear();
        Ok(())
    }

    /// Writes out what the active segment holds in memory.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut st = lock(&self.state);
        match st.active.as_mut() {
            Some(a) => Self::flush_active(a, &self.dir),
            None => Ok(()),
        }
    }

    /// Whether records wait in memory to be written.
    pub fn pending(&self) -> bool {
        lock(&self.state)
            .active
            .as_ref()
            .is_some_and(|a| !a.buf.is_empty())
    }

    /// Flushes and seals the active segment, if any.
    fn seal_locked(&self, st: &mut State, tick: u64) -> Result<(), StoreError> {
        let Some(mut a) = st.active.take() else {
            return Ok(());
        };
        if let Err(e) = Self::flush_active(&mut a, &self.dir) {
            // What was not written is lost; its index entries point past the
            // end of the file and read as gone.
            tracing::warn!(err = %e, "sealing a segment whose last records could not be written");
        }
        st.sealed.insert(
            a.id,
            Sealed {
                id: a.id,
                file: a.file,
                keys: a.keys,
                bytes: a.bytes,
                tick,
            },
        );
        Ok(())
    }

    /// Seals the active segment (eviction, when nothing else is left).
    /// Returns whether there was one.
    pub fn seal(&self, tick: u64) -> bool {
        let mut st = lock(&self.state);
        let had = st.active.is_some();
        // Never fails: errors are logged by seal_locked.
        let _ = self.seal_locked(&mut st, tick);
        had
    }

    /// The tick of the oldest sealed segment.
    pub fn oldest_tick(&self) -> Option<u64> {
        lock(&self.state)
            .sealed
            .first_key_value()
            .map(|(_, s)| s.tick)
    }

    /// Takes the oldest sealed segment out of the log (its file is still
    /// there: the caller removes its index entries, then the file).
    pub fn pop_oldest(&self) -> Option<Sealed> {
        lock(&self.state).sealed.pop_first().map(|(_, s)| s)
    }

    /// The bytes of the record at `spot`, from the buffer or the file;
    /// `Ok(None)` when its segment is gone.
    pub fn read(&self, spot: Spot) -> std::io::Result<Option<Bytes>> {
        let off = u64::from(spot.off);
        let len = spot.len as usize;
        let file = {
            let st = lock(&self.state);
            match (&st.active, st.sealed.get(&spot.seg)) {
                (Some(a), _) if a.id == spot.seg => {
                    if off >= a.base {
                        let at = (off - a.base) as usize;
                        return Ok(a.buf.get(at..at + len).map(Bytes::copy_from_slice));
                    }
                    a.file.clone()
                }
                (_, Some(s)) => s.file.clone(),
                _ => return Ok(None),
            }
        };
        let mut buf = vec![0u8; len];
        let n = super::reader::read_full_at(&file, &mut buf, off)?;
        buf.truncate(n);
        Ok(Some(buf.into()))
    }

    /// Removes a segment's file (after eviction).
    pub fn remove_file(&self, id: u64) {
        super::remove_quietly(&self.path(id));
    }
}
