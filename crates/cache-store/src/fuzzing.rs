//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing` only; not
//! an API). They run the disk tier's own decoders, unchanged, on bytes held
//! in memory: an object file goes through the recovery scan's check
//! (`check_object`: header, key string, meta, lengths, and every block
//! against the block table when verifying) and the reader's `read_head`,
//! from a memfd; then its body as a lookup checks it: the block table
//! (`read_table`), each block alone (`check_block`, what a first read of a
//! block does) and the whole body in memory (`check_in_memory`, what a read
//! into the memory tier does).

use crate::disk::format::{check_in_memory, decode_sidecar, Checkpoint};
use crate::disk::reader::{read_head, ReadError};
use crate::disk::recovery::check_object;
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
