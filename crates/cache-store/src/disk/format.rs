//! On-disk formats and names: the object file (header, key string, meta,
//! body, block table), the meta sidecar written by `update_meta`, the
//! checkpoint file, and where each lives in the cache directory. Pure:
//! encodes and checks bytes, does no I/O.
//!
//! Object file (`objects/XX/<32 hex>`, XX = the key's top byte), version 2:
//!
//! ```text
//!  0  magic "carpOBJ1"            8
//!  8  format version (u32 LE)     4   2
//! 12  block size, log2 (u32)      4   18: blocks of 256 KiB
//! 16  key (u128 LE)               16
//! 32  key string length (u32)     4
//! 36  meta length (u32)           4
//! 40  body length (u64)           8
//! 48  publish sequence (u64)      8
//! 56  block table xxh3-64 (u64)   8
//! 64  header xxh3-64 (u64)        8   over bytes 0..64, the key string and the meta
//! 72  key string, meta, body, block table
//! ```
//!
//! The block table follows the body: one u64 LE per block of the body (the
//! last one may be short), the xxh3-64 of that block's bytes seeded with
//! the block's number (so a block moved elsewhere in the file does not
//! match). Its own checksum is in the header, so the header checksum covers
//! the whole chain. A body can thus be checked block by block, only where it
//! is read.
//!
//! Version 1 (written before block checksums) is still read: its bytes
//! 12..16 are 0, bytes 56..64 hold the xxh3-64 of the whole body, and there
//! is no table. It reads as a body of one block (number 0, so its seeded
//! sum is the same xxh3-64), which means checking any byte of it checks all
//! of it: the store keeps only version 1 objects up to
//! [`V1_MAX_BODY`] and discards larger ones at open.
//!
//! Sidecar (`objects/XX/<32 hex>.m`): magic "carpMET1", version, meta length,
//! key, the publish sequence of the object it belongs to, the meta, then an
//! xxh3-64 of everything before it.
//!
//! Checkpoint (`checkpoint`): magic "carpCKP1", version, clean flag, the
//! sequence below which every object is known durable, xxh3-64.

use crate::key::Key;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, Xxh3};

/// Version of the sidecar and checkpoint formats.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Version of the object files written: with a block table.
pub(crate) const OBJECT_VERSION: u32 = 2;
/// The older object version still read: one checksum for the whole body.
pub(crate) const OBJECT_VERSION_1: u32 = 1;
/// Block size of the object files written, as a power of two: 256 KiB.
pub(crate) const BLOCK_SHIFT: u32 = 18;
/// Block sizes a version 2 header may give (4 KiB to 1 GiB), as powers of two.
const BLOCK_SHIFTS: std::ops::RangeInclusive<u32> = 12..=30;
/// The block "size" of a version 1 object: its whole body is one block.
const V1_SHIFT: u32 = 63;
/// Largest version 1 body kept at open: checking any part of it means
/// reading all of it.
pub const V1_MAX_BODY: u64 = 8 << 20;
/// Why a version 1 object is discarded at open.
pub(crate) const V1_TOO_LARGE: Invalid = "older format (version 1) body over 8 MiB";
const OBJECT_MAGIC: [u8; 8] = *b"carpOBJ1";
const META_MAGIC: [u8; 8] = *b"carpMET1";
const CHECKPOINT_MAGIC: [u8; 8] = *b"carpCKP1";

/// Length of an object file's fixed header.
pub(crate) const FIXED_LEN: usize = 72;
/// Longest key string the format accepts.
pub const MAX_KEY_LEN: usize = 64 << 10;
/// Largest meta the format accepts.
pub const MAX_META_LEN: usize = 1 << 20;
/// Disk usage is counted in blocks of this size.
pub(crate) const BLOCK: u64 = 4096;

/// The lock file, held with `flock` while a store has the directory open.
pub(crate) const LOCK_FILE: &str = "lock";
/// The checkpoint file.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
/// Temporary files: objects being written, retired files, checkpoints.
pub(crate) const TMP_DIR: &str = "tmp";
/// Published objects.
pub(crate) const OBJECTS_DIR: &str = "objects";
/// The small-object log's segments.
pub(crate) const LOG_DIR: &str = "log";
/// Suffix of meta sidecar files.
pub(crate) const META_SUFFIX: &str = ".m";

/// Bytes `len` occupies on disk, counted in whole blocks.
pub(crate) fn blocks(len: u64) -> u64 {
    len.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// Where things live in a cache directory.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The cache directory.
    pub dir: PathBuf,
    /// `dir/tmp`.
    pub tmp: PathBuf,
    /// `dir/objects`.
    pub objects: PathBuf,
    /// `dir/log`.
    pub log: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            tmp: dir.join(TMP_DIR),
            objects: dir.join(OBJECTS_DIR),
            log: dir.join(LOG_DIR),
        }
    }

    /// The subdirectory of objects whose key starts with `byte`.
    pub fn subdir(&self, byte: u8) -> PathBuf {
        self.objects.join(format!("{byte:02x}"))
    }

    /// The object file of `key`.
    pub fn object(&self, key: Key) -> PathBuf {
        self.subdir(key.dir_byte()).join(key.to_string())
    }

    /// The meta sidecar of `key`.
    pub fn sidecar(&self, key: Key) -> PathBuf {
        self.subdir(key.dir_byte())
            .join(format!("{key}{META_SUFFIX}"))
    }

    /// A temporary file: `kind` is one letter, `n` unique within this open.
    pub fn temp(&self, kind: char, n: u64) -> PathBuf {
        self.tmp.join(format!("{kind}{n}"))
    }
}

/// Why bytes are not a valid header, sidecar or checkpoint.
pub(crate) type Invalid = &'static str;

/// The fixed header of an object file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// [`OBJECT_VERSION`], or [`OBJECT_VERSION_1`] for an older file.
    pub version: u32,
    /// The body's blocks are `1 << block_shift` bytes (version 1: one block).
    pub block_shift: u32,
    pub key: Key,
    pub key_len: u32,
    pub meta_len: u32,
    pub body_len: u64,
    pub seq: u64,
    /// Version 2: the xxh3-64 of the block table; version 1: of the body
    /// (the sum of its one block).
    pub sum: u64,
}

/// The u32 LE at `at` of `b` (which holds it).
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The u64 LE at `at` of `b` (which holds it).
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

impl Header {
    /// Offset of the body in the file.
    pub fn body_offset(&self) -> u64 {
        body_offset(self.key_len as usize, self.meta_len as usize)
    }

    /// Length the file must have.
    pub fn file_len(&self) -> u64 {
        self.table_offset() + self.table_len()
    }

    /// Offset of the block table (right after the body).
    pub fn table_offset(&self) -> u64 {
        self.body_offset() + self.body_len
    }

    /// Length of the block table in the file (version 1: none).
    pub fn table_len(&self) -> u64 {
        if self.version == OBJECT_VERSION_1 {
            0
        } else {
            self.blocks() * 8
        }
    }

    /// Number of blocks of the body.
    pub fn blocks(&self) -> u64 {
        block_count(self.body_len, self.block_shift)
    }

    /// Body offsets of block `i`: `start..end`.
    pub fn block_range(&self, i: u64) -> std::ops::Range<u64> {
        let start = i.saturating_mul(1 << self.block_shift).min(self.body_len);
        let end = start
            .saturating_add(1 << self.block_shift)
            .min(self.body_len);
        start..end
    }

    /// The block sums from the bytes of the block table (version 1: the
    /// header's one sum; `table` is then empty), checked against the
    /// header.
    pub fn decode_table(&self, table: &[u8]) -> Result<Vec<u64>, Invalid> {
        if self.version == OBJECT_VERSION_1 {
            return Ok(if self.body_len == 0 {
                Vec::new()
            } else {
                vec![self.sum]
            });
        }
        if table.len() as u64 != self.table_len() {
            return Err("block table length mismatch");
        }
        if xxh3_64(table) != self.sum {
            return Err("block table checksum mismatch");
        }
        Ok(table.chunks_exact(8).map(|c| u64_at(c, 0)).collect())
    }

    /// The fixed header, its checksum covering `key_str` and `meta`.
    pub fn encode(&self, key_str: &[u8], meta: &[u8]) -> [u8; FIXED_LEN] {
        let mut b = [0u8; FIXED_LEN];
        b[0..8].copy_from_slice(&OBJECT_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        if self.version != OBJECT_VERSION_1 {
            b[12..16].copy_from_slice(&self.block_shift.to_le_bytes());
        }
        b[16..32].copy_from_slice(&self.key.as_u128().to_le_bytes());
        b[32..36].copy_from_slice(&self.key_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.meta_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.body_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.seq.to_le_bytes());
        b[56..64].copy_from_slice(&self.sum.to_le_bytes());
        let h = header_hash(&b[..64], key_str, meta);
        b[64..72].copy_from_slice(&h.to_le_bytes());
        b
    }

    /// Parses the fixed header (first [`FIXED_LEN`] bytes of `b`) and checks
    /// what it can alone: magic, version, block size, length limits. Reads
    /// versions 1 and 2. Returns the header
    /// and its stored checksum, to check with [`Header::check`] once the key
    /// string and meta are read.
    pub fn decode(b: &[u8]) -> Result<(Header, u64), Invalid> {
        if b.len() < FIXED_LEN {
            return Err("shorter than an object header");
        }
        if b[0..8] != OBJECT_MAGIC {
            return Err("bad magic");
        }
        let version = u32_at(b, 8);
        let block_shift = match version {
            OBJECT_VERSION => u32_at(b, 12),
            OBJECT_VERSION_1 => V1_SHIFT,
            _ => return Err("unknown format version"),
        };
        if version == OBJECT_VERSION && !BLOCK_SHIFTS.contains(&block_shift) {
            return Err("block size out of range");
        }
        let h = Header {
            version,
            block_shift,
            key: Key::from_u128(u128_at(b, 16)),
            key_len: u32_at(b, 32),
            meta_len: u32_at(b, 36),
            body_len: u64_at(b, 40),
            seq: u64_at(b, 48),
            sum: u64_at(b, 56),
        };
        if h.key_len as usize > MAX_KEY_LEN {
            return Err("key string length over the limit");
        }
        if h.meta_len as usize > MAX_META_LEN {
            return Err("meta length over the limit");
        }
        if h.body_len > u64::MAX / 2 {
            return Err("body length out of range");
        }
        Ok((h, u64_at(b, 64)))
    }

    /// Checks the stored header checksum against the fixed header bytes
    /// (`fixed`, as read) and the key string and meta that follow them.
    pub fn check(fixed: &[u8], key_str: &[u8], meta: &[u8], stored: u64) -> Result<(), Invalid> {
        if fixed.len() < FIXED_LEN || header_hash(&fixed[..64], key_str, meta) != stored {
            return Err("header checksum mismatch");
        }
        Ok(())
    }
}

/// Number of blocks of `1 << shift` bytes in a body of `len` bytes.
pub(crate) fn block_count(len: u64, shift: u32) -> u64 {
    len.div_ceil(1u64 << shift)
}

/// The sum of block number `index` holding `data`.
pub(crate) fn block_sum(index: u64, data: &[u8]) -> u64 {
    xxh3_64_with_seed(data, index)
}

/// A block table's bytes and its checksum (for the header).
pub(crate) fn encode_table(sums: &[u64]) -> (Vec<u8>, u64) {
    let b: Vec<u8> = sums.iter().flat_map(|s| s.to_le_bytes()).collect();
    let sum = xxh3_64(&b);
    (b, sum)
}

/// Offset of the body after a key string and meta of these lengths.
pub(crate) fn body_offset(key_len: usize, meta_len: usize) -> u64 {
    (FIXED_LEN + key_len + meta_len) as u64
}

fn header_hash(fixed64: &[u8], key_str: &[u8], meta: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(fixed64);
    h.update(key_str);
    h.update(meta);
    h.digest()
}

const SIDECAR_FIXED: usize = 40;

/// A sidecar's bytes: replacement meta for the object `key` published with `seq`.
pub(crate) fn encode_sidecar(key: Key, seq: u64, meta: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(SIDECAR_FIXED + meta.len() + 8);
    b.extend_from_slice(&META_MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    b.extend_from_slice(&key.as_u128().to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(meta);
    let h = xxh3_64(&b);
    b.extend_from_slice(&h.to_le_bytes());
    b
}

/// Parses a sidecar: returns (key, seq, meta range in `b`).
pub(crate) fn decode_sidecar(b: &[u8]) -> Result<(Key, u64, std::ops::Range<usize>), Invalid> {
    if b.len() < SIDECAR_FIXED + 8 || b[0..8] != META_MAGIC {
        return Err("not a meta sidecar");
    }
    if u32_at(b, 8) != FORMAT_VERSION {
        return Err("unknown sidecar version");
    }
    let meta_len = u32_at(b, 12) as usize;
    if meta_len > MAX_META_LEN || b.len() != SIDECAR_FIXED + meta_len + 8 {
        return Err("sidecar length mismatch");
    }
    let end = SIDECAR_FIXED + meta_len;
    if xxh3_64(&b[..end]) != u64_at(b, end) {
        return Err("sidecar checksum mismatch");
    }
    Ok((
        Key::from_u128(u128_at(b, 16)),
        u64_at(b, 32),
        SIDECAR_FIXED..end,
    ))
}

/// What the checkpoint file records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The store was closed cleanly: every object present is durable.
    pub clean: bool,
    /// Every object with a lower publish sequence was synced.
    pub synced_below: u64,
}

const CHECKPOINT_LEN: usize = 32;

impl Checkpoint {
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut b = [0u8; CHECKPOINT_LEN];
        b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&u32::from(self.clean).to_le_bytes());
        b[16..24].copy_from_slice(&self.synced_below.to_le_bytes());
        let h = xxh3_64(&b[..24]);
        b[24..32].copy_from_slice(&h.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Checkpoint, Invalid> {
        if b.len() != CHECKPOINT_LEN || b[0..8] != CHECKPOINT_MAGIC {
            return Err("not a checkpoint");
        }
        if u32_at(b, 8) != FORMAT_VERSION {
            return Err("unknown checkpoint version");
        }
        if xxh3_64(&b[..24]) != u64_at(b, 24) {
            return Err("checkpoint checksum mismatch");
        }
        Ok(Checkpoint {
            clean: u32_at(b, 12) == 1,
            synced_below: u64_at(b, 16),
        })
    }
}

/// Checks a whole body read into `body`, with the block table right after
/// it (as it lies in the file; version 1: nothing after it).
pub(crate) fn check_in_memory(h: &Header, body_and_table: &[u8]) -> Result<(), Invalid> {
    let len = usize::try_from(h.body_len).map_err(|_| "body length out of range")?;
    if (body_and_table.len() as u64) < h.body_len + h.table_len() {
        return Err("file shorter than its header says");
    }
    let (body, table) = body_and_table.split_at(len);
    let sums = h.decode_table(table)?;
    for (i, &sum) in sums.iter().enumerate() {
        let r = h.block_range(i as u64);
        if block_sum(i as u64, &body[r.start as usize..r.end as usize]) != sum {
            return Err("block checksum mismatch");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: OBJECT_VERSION,
            block_shift: BLOCK_SHIFT,
            key: Key::of(b"k"),
            key_len: 1,
            meta_len: 3,
            body_len: 5,
            seq: 9,
            sum: encode_table(&[block_sum(0, b"hello")]).1,
        }
    }

    #[test]
    fn header_round_trip_and_every_bit_counts() {
        let h = header();
        let b = h.encode(b"k", b"met");
        let (d, stored) = Header::decode(&b).unwrap();
        assert_eq!(d, h);
        Header::check(&b, b"k", b"met", stored).unwrap();
        assert_eq!(h.body_offset(), 76);
        assert_eq!((h.blocks(), h.table_offset(), h.table_len()), (1, 81, 8));
        assert_eq!(h.file_len(), 89);
        // Any flipped bit of the fixed part, key string or meta is caught.
        for i in 0..FIXED_LEN * 8 {
            let mut c = b;
            c[i / 8] ^= 1 << (i % 8);
            let caught = match Header::decode(&c) {
                Err(_) => true,
                Ok((_, s)) => Header::check(&c, b"k", b"met", s).is_err(),
            };
            assert!(caught, "bit {i}");
        }
        assert!(Header::check(&b, b"k", b"meT", stored).is_err());
        assert!(Header::check(&b, b"K", b"met", stored).is_err());
    }

    #[test]
    fn version_1_headers_read_as_one_block() {
        let h = Header {
            version: OBJECT_VERSION_1,
            block_shift: V1_SHIFT,
            sum: xxh3_64(b"hello"),
            ..header()
        };
        let b = h.encode(b"k", b"met");
        assert_eq!(&b[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);
        let (d, stored) = Header::decode(&b).unwrap();
        assert_eq!(d, h);
        Header::check(&b, b"k", b"met", stored).unwrap();
        assert_eq!((d.blocks(), d.table_len(), d.file_len()), (1, 0, 81));
        assert_eq!(d.block_range(0), 0..5);
        // Its one sum is the body's xxh3-64, which block 0's seeded sum is.
        assert_eq!(d.decode_table(&[]), Ok(vec![block_sum(0, b"hello")]));
        let big = Header {
            body_len: u64::MAX / 2,
            ..d
        };
        assert_eq!(big.blocks(), 1);
        assert_eq!(big.block_range(0), 0..u64::MAX / 2);
        let empty = Header { body_len: 0, ..d };
        assert_eq!((empty.blocks(), empty.decode_table(&[])), (0, Ok(vec![])));
    }

    #[test]
    fn blocks_and_their_table() {
        let h = Header {
            body_len: 600_000,
            ..header()
        };
        assert_eq!(h.blocks(), 3);
        assert_eq!(h.block_range(0), 0..262_144);
        assert_eq!(h.block_range(2), 524_288..600_000);
        assert_eq!(h.block_range(3), 600_000..600_000);
        assert_eq!(block_count(0, BLOCK_SHIFT), 0);
        assert_eq!(block_count(1 << BLOCK_SHIFT, BLOCK_SHIFT), 1);
        let sums = [1u64, 2, 0xdead_beef];
        let (table, sum) = encode_table(&sums);
        let h = Header { sum, ..h };
        assert_eq!(h.table_len(), table.len() as u64);
        assert_eq!(h.decode_table(&table), Ok(sums.to_vec()));
        for i in 0..table.len() {
            let mut t = table.clone();
            t[i] ^= 4;
            assert_eq!(h.decode_table(&t), Err("block table checksum mismatch"));
        }
        assert!(h.decode_table(&table[..16]).is_err());
        // Sums are seeded with the block's number.
        assert_eq!(block_sum(0, b"abc"), xxh3_64(b"abc"));
        assert_ne!(block_sum(1, b"abc"), block_sum(0, b"abc"));
    }

    #[test]
    fn unknown_versions_and_block_sizes_are_refused() {
        let mut b = header().encode(b"k", b"met");
        b[8] = 3;
        assert_eq!(Header::decode(&b), Err("unknown format version"));
        for shift in [0u32, 11, 31, 63] {
            let h = Header {
                block_shift: shift,
                ..header()
            };
            assert_eq!(
                Header::decode(&h.encode(b"k", b"met")),
                Err("block size out of range"),
                "{shift}"
            );
        }
    }

    #[test]
    fn header_limits() {
        let mut h = header();
        h.meta_len = MAX_META_LEN as u32 + 1;
        assert_eq!(
            Header::decode(&h.encode(b"", b"")),
            Err("meta length over the limit")
        );
        assert!(Header::decode(&[0u8; 10]).is_err());
    }

    #[test]
    fn sidecar_round_trip_and_corruption() {
        let k = Key::of(b"x");
        let b = encode_sidecar(k, 7, b"new meta");
        assert_eq!(b.len(), SIDECAR_FIXED + 8 + 8);
        let (dk, seq, r) = decode_sidecar(&b).unwrap();
        assert_eq!((dk, seq, &b[r]), (k, 7, &b"new meta"[..]));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(decode_sidecar(&c).is_err(), "byte {i}");
        }
        assert!(decode_sidecar(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn checkpoint_round_trip_and_corruption() {
        let c = Checkpoint {
            clean: true,
            synced_below: 42,
        };
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b), Ok(c));
        for i in 0..b.len() {
            let mut x = b;
            x[i] ^= 1;
            assert!(Checkpoint::decode(&x).is_err(), "byte {i}");
        }
    }

    #[test]
    fn blocks_round_up() {
        assert_eq!(blocks(0), 0);
        assert_eq!(blocks(1), BLOCK);
        assert_eq!(blocks(BLOCK), BLOCK);
        assert_eq!(blocks(BLOCK + 1), 2 * BLOCK);
    }
}
