//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing` only; not
//! an API). They run the disk tier's own decoders, unchanged, on bytes held
//! in memory: an object file goes through the recovery scan's check
//! (`check_object`: header, key string, meta, lengths, and every block
//! against the block table when verifying) and the reader's `read_head`,
//! from a memfd; then its body as a lookup checks it: the block table
//! (`read_table`), each block alone (`check_block`, what a first read of a
//! block does) and the whole body in memory (`check_in_memory`, what a read
//! into the memory tier does). A segment of the small-object log goes
//! through the walk the open runs over every segment (`segment::walk`),
//! and records are written with the log's own encoder.

use crate::disk::format::{check_in_memory, decode_sidecar, Checkpoint};
use crate::disk::reader::{read_head, ReadError};
use crate::disk::recovery::check_object;
use crate::disk::segment::{
    append_record, decode_segment_header, encode_segment_header, walk, End, Kind, RecordHeader,
    Walk, SEGMENT_HEADER_LEN,
};
use crate::disk::verify::{check_block, read_table};
use crate::Key;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// What the decoders found in an object file they accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFile {
    /// Format version (1 or 2).
    pub version: u32,
    /// Publish sequence.
    pub seq: u64,
    /// Length of the file.
    pub len: u64,
    /// Key string.
    pub key_str: Vec<u8>,
    /// Meta.
    pub meta: Vec<u8>,
    /// Where the body starts.
    pub body_offset: u64,
    /// Body length.
    pub body_len: u64,
    /// Header bytes 56..64 as recorded: the block table's checksum (version
    /// 2) or the body's (version 1).
    pub sum: u64,
    /// The body's blocks, as ranges of body offsets.
    pub blocks: Vec<Range<u64>>,
    /// The block sums a first read finds (the table, checked against the
    /// header; version 1: its one sum), or `None` when that is refused.
    pub table: Option<Vec<u64>>,
    /// Each block read alone and checked against its sum, as the first read
    /// of it does (empty when the table is refused).
    pub sound: Vec<bool>,
    /// The whole body and table read into memory and checked, as when the
    /// body is copied into the memory tier.
    pub in_memory: bool,
}

/// Checks `bytes` as the object file named after `key`, as a store's open
/// does (every block too when `verify_body`, as after an unclean stop),
/// then reads its head and checks its body as lookups do. `Err`: why the
/// open drops it.
pub fn check_object_file(
    bytes: &[u8],
    key: Key,
    verify_body: bool,
) -> Result<ObjectFile, &'static str> {
    let file = memfd(bytes);
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let verify_from = if verify_body { 0 } else { u64::MAX };
    let mut verified = 0;
    let (seq, len) = check_object(&path, key, verify_from, &mut verified).map_err(corrupt)?;
    let (h, key_str, meta) = read_head(&file, key).map_err(corrupt)?;
    assert_eq!(h.seq, seq, "the scan and a lookup read different headers");
    let blocks: Vec<Range<u64>> = (0..h.blocks()).map(|i| h.block_range(i)).collect();
    let table = read_table(&file, &h).map_err(corrupt).ok();
    let mut sound = Vec::new();
    let mut buf = Vec::new();
    for (i, &sum) in table.iter().flatten().enumerate() {
        sound.push(
            check_block(&file, &h, i as u64, sum, &mut buf)
                .map_err(corrupt)
                .is_ok(),
        );
    }
    // What `DiskTier::read_body` reads: body and table, from the body on
    // (the scan made sure the file has that length).
    let start = h.body_offset() as usize;
    let whole = &bytes[start..start + (h.body_len + h.table_len()) as usize];
    Ok(ObjectFile {
        version: h.version,
        seq,
        len,
        key_str,
        meta: meta.to_vec(),
        body_offset: h.body_offset(),
        body_len: h.body_len,
        sum: h.sum,
        blocks,
        table,
        sound,
        in_memory: check_in_memory(&h, whole).is_ok(),
    })
}

/// A meta sidecar's key, object sequence and meta, or why it is ignored.
pub fn check_sidecar(bytes: &[u8]) -> Result<(Key, u64, Vec<u8>), &'static str> {
    decode_sidecar(bytes).map(|(k, seq, r)| (k, seq, bytes[r].to_vec()))
}

/// A checkpoint's (clean, synced_below), or why it is ignored.
pub fn check_checkpoint(bytes: &[u8]) -> Result<(bool, u64), &'static str> {
    Checkpoint::decode(bytes).map(|c| (c.clean, c.synced_below))
}

/// Length of a segment file's header: its records start there.
pub const SEGMENT_HEADER: usize = SEGMENT_HEADER_LEN;

/// A record the walk over a segment accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Where it starts in the segment.
    pub offset: usize,
    /// A tombstone (else an object).
    pub tombstone: bool,
    /// Its key.
    pub key: Key,
    /// Length of the key string.
    pub key_len: u32,
    /// Length of the meta.
    pub meta_len: u32,
    /// Length of the body.
    pub body_len: u64,
    /// Publish sequence.
    pub seq: u64,
    /// Bytes the record takes in the segment, padding included.
    pub len: u64,
}

/// How a walk over a segment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The end of the bytes, or zeros: the end of what was written.
    Written,
    /// The record at `offset` runs past the end: a write cut short.
    CutShort {
        /// Where the record starts.
        offset: usize,
    },
    /// The record at `offset` is bad (counted as damage by the open).
    Damage {
        /// Where the record starts.
        offset: usize,
        /// Why.
        why: &'static str,
    },
}

/// The walk the open runs over a segment file's bytes (segment `id`): its
/// records in order, then [`SegmentWalk::end`]. Allocates nothing.
pub struct SegmentWalk<'a>(Walk<'a>);

/// Walks the records of `bytes`, a whole segment file of segment `id`.
pub fn walk_segment(bytes: &[u8], id: u64) -> SegmentWalk<'_> {
    SegmentWalk(walk(bytes, id))
}

impl SegmentWalk<'_> {
    /// How the walk ended; `None` while records may remain.
    pub fn end(&self) -> Option<SegmentEnd> {
        self.0.end().map(|e| match e {
            End::Written => SegmentEnd::Written,
            End::CutShort { offset } => SegmentEnd::CutShort { offset },
            End::Damage { offset, why } => SegmentEnd::Damage { offset, why },
        })
    }
}

impl Iterator for SegmentWalk<'_> {
    type Item = SegmentRecord;

    fn next(&mut self) -> Option<SegmentRecord> {
        let (offset, h) = self.0.next()?;
        Some(SegmentRecord {
            offset,
            tombstone: h.kind == Kind::Tombstone,
            key: h.key,
            key_len: h.key_len,
            meta_len: h.meta_len,
            body_len: h.body_len,
            seq: h.seq,
            len: h.record_len(),
        })
    }
}

/// The header of segment `id`'s file.
pub fn segment_header(id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    encode_segment_header(id)
}

/// The segment id a segment file's header names, or why the open drops
/// the file.
pub fn segment_id(bytes: &[u8]) -> Result<u64, &'static str> {
    decode_segment_header(bytes)
}

/// Appends a record as the log writes it: to `out`, which holds segment
/// `id`'s bytes from offset `base` on (a tombstone takes empty parts).
#[allow(clippy::too_many_arguments)]
pub fn append_segment_record(
    out: &mut Vec<u8>,
    id: u64,
    base: u64,
    tombstone: bool,
    key: Key,
    seq: u64,
    key_str: &[u8],
    meta: &[u8],
    body: &[u8],
) {
    let h = RecordHeader {
        kind: if tombstone {
            Kind::Tombstone
        } else {
            Kind::Object
        },
        key,
        key_len: key_str.len() as u32,
        meta_len: meta.len() as u32,
        body_len: body.len() as u64,
        seq,
    };
    append_record(out, id, base, &h, key_str, meta, body);
}

fn corrupt(e: ReadError) -> &'static str {
    match e {
        ReadError::Corrupt(why) => why,
        ReadError::Io(e) => panic!("I/O error on a memfd: {e}"),
    }
}

/// An anonymous in-memory file holding `bytes`.
fn memfd(bytes: &[u8]) -> File {
    // SAFETY: a NUL-terminated name; the returned descriptor is checked and
    // then owned by the File alone.
    let fd = unsafe { libc::memfd_create(c"fuzz-object".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(bytes).expect("write to a memfd");
    f
}
