//! Checking bodies block by block against their block table (format in
//! `format`): before anything of an object found at open is served, the
//! blocks that hold it are read and their sums compared, once per object:
//! [`Marks`] (`marks.rs`) remember which blocks were checked (shared by
//! every reader of that version through its index entry), and once all
//! are, the entry says the body is sound and readers skip checking
//! altogether. Objects
//! written by this run are sound from the start. A block that fails drops
//! the object (index and file), logged with its key and counted.

use super::format::{block_sum, Header};
use super::index::Check;
use super::marks::Marks;
use super::reader::{read_full_at, OpenObject, ReadError};
use super::DiskTier;
use crate::key::Key;
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

/// Reads the block sums of the object `o` describes (version 1: its one
/// body sum), checked against its header.
pub(crate) fn read_table(file: &File, h: &Header) -> Result<Vec<u64>, ReadError> {
    // The length first, so a table is never allocated larger than the file.
    if file.metadata()?.len() < h.file_len() {
        return Err(ReadError::Corrupt("file shorter than its header says"));
    }
    let mut table = vec![0u8; usize::try_from(h.table_len()).unwrap_or(usize::MAX)];
    if read_full_at(file, &mut table, h.table_offset())? < table.len() {
        return Err(ReadError::Corrupt("file shorter than its header says"));
    }
    h.decode_table(&table).map_err(ReadError::Corrupt)
}

/// Reads block `i` of the body of `h` in `file` into `buf` and compares
/// its sum with `sum`.
pub(crate) fn check_block(
    file: &File,
    h: &Header,
    i: u64,
    sum: u64,
    buf: &mut Vec<u8>,
) -> Result<(), ReadError> {
    let r = h.block_range(i);
    let n = (r.end - r.start) as usize;
    buf.resize(n, 0);
    if read_full_at(file, buf, h.body_offset() + r.start)? < n {
        return Err(ReadError::Corrupt("file shorter than its header says"));
    }
    if block_sum(i, buf) != sum {
        return Err(ReadError::Corrupt("block checksum mismatch"));
    }
    Ok(())
}

/// Checks every block of the body of `h` in `file` (at open, after an
/// unclean stop).
pub(crate) fn check_all(file: &File, h: &Header) -> Result<(), ReadError> {
    let sums = read_table(file, h)?;
    let mut buf = Vec::new();
    for (i, &sum) in sums.iter().enumerate() {
        check_block(file, h, i as u64, sum, &mut buf)?;
    }
    Ok(())
}

/// One reader's hold on the check of an object's body.
pub(crate) struct BodyCheck {
    /// Weak: a body read after its store was dropped must not keep the
    /// directory locked (it is still checked, but then drops nothing).
    tier: Weak<DiskTier>,
    key: Key,
    key_str: Box<[u8]>,
    marks: Arc<Marks>,
}

impl std::fmt::Debug for BodyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyCheck")
            .field("key", &self.key)
            .field("marks", &self.marks)
            .finish()
    }
}

impl BodyCheck {
    /// Every block was checked and is sound.
    pub fn complete(&self) -> bool {
        self.marks.complete()
    }

    /// Checks the blocks holding body bytes `off..off + len` that were not
    /// checked yet, reading them from `file`. A block that fails drops the
    /// object and gives an `InvalidData` error: none of these bytes may be
    /// served.
    pub fn check(&self, file: &File, off: u64, len: u64) -> io::Result<()> {
        let m = &*self.marks;
        let h = &m.header;
        let end = off.saturating_add(len).min(h.body_len);
        if off >= end || m.complete() {
            return Ok(());
        }
        let failed =
            || io::Error::new(io::ErrorKind::InvalidData, "stored object failed its check");
        if m.failed.load(Ordering::Acquire) {
            return Err(failed());
        }
        let mut buf = Vec::new();
        for i in (off >> h.block_shift)..=((end - 1) >> h.block_shift) {
            if m.is_done(i) {
                continue;
            }
            let sum = m.sums.get(i as usize).copied().unwrap_or_default();
            match check_block(file, h, i, sum, &mut buf) {
                Ok(()) => {
                    if m.mark(i) {
                        if let Some(t) = self.tier.upgrade() {
                            t.mark_sound(self.key, h.seq);
                        }
                    }
                }
                Err(ReadError::Corrupt(why)) => {
                    m.failed.store(true, Ordering::Release);
                    if let Some(t) = self.tier.upgrade() {
                        t.drop_corrupt(self.key, h.seq, Some(&self.key_str), Some(i), why);
                    }
                    return Err(failed());
                }
                Err(ReadError::Io(e)) => return Err(e),
            }
        }
        Ok(())
    }
}

impl DiskTier {
    /// What a reader of the object `o` (index entry check `state`) must
    /// check before serving its body: `None` when it is sound. Reads the
    /// block table on the first read after open; a bad table drops nothing
    /// here but is returned as corrupt.
    pub(crate) fn body_check(
        self: &Arc<Self>,
        key: Key,
        entry_seq: u64,
        state: Option<&Check>,
        o: &OpenObject,
    ) -> Result<Option<BodyCheck>, ReadError> {
        let h = o.header;
        let shared = h.seq == entry_seq;
        let marks = match state.unwrap_or(&Check::Unchecked) {
            _ if h.seq >= self.run_start() => return Ok(None),
            Check::Sound if shared => return Ok(None),
            Check::Partly(m) if shared => m.clone(),
            _ => {
                let m = Arc::new(Marks::new(h, read_table(&o.file, &h)?));
                if m.complete() {
                    self.mark_sound(key, h.seq);
                    return Ok(None);
                }
                if shared {
                    self.share_marks(key, h.seq, m)
                } else {
                    m
                }
            }
        };
        Ok(Some(BodyCheck {
            tier: Arc::downgrade(self),
            key,
            key_str: o.key_str.clone().into(),
            marks,
        }))
    }

    /// Installs `m` as the marks of `key` version `seq` unless another
    /// reader did first; returns the marks to use.
    fn share_marks(&self, key: Key, seq: u64, m: Arc<Marks>) -> Arc<Marks> {
        let mut g = self.index.lock(key);
        if g.get(key).is_none_or(|e| e.seq != seq) {
            return m;
        }
        let Some(c) = g.check_mut(key) else { return m };
        match c {
            Check::Partly(theirs) => theirs.clone(),
            Check::Unchecked => {
                *c = Check::Partly(m.clone());
                m
            }
            // Completed meanwhile by another reader: a recheck is harmless.
            Check::Sound => m,
        }
    }

    /// Records that every block of `key` version `seq` was checked.
    pub(crate) fn mark_sound(&self, key: Key, seq: u64) {
        let mut g = self.index.lock(key);
        if g.get(key).is_some_and(|e| e.seq == seq) {
            if let Some(c) = g.check_mut(key) {
                *c = Check::Sound;
            }
        }
    }
}
