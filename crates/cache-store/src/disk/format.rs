//! On-disk formats and names: the object file (header, key string, meta,
//! body), the meta sidecar written by `update_meta`, the checkpoint file, and
//! where each lives in the cache directory. Pure: encodes and checks bytes,
//! does no I/O.
//!
//! Object file (`objects/XX/<32 hex>`, XX = the key's top byte):
//!
//! ```text
//!  0  magic "carpOBJ1"            8
//!  8  format version (u32 LE)     4
//! 12  flags (u32, 0)              4
//! 16  key (u128 LE)               16
//! 32  key string length (u32)     4
//! 36  meta length (u32)           4
//! 40  body length (u64)           8
//! 48  publish sequence (u64)      8
//! 56  body xxh3-64 (u64)          8
//! 64  header xxh3-64 (u64)        8   over bytes 0..64, the key string and the meta
//! 72  key string, meta, body
//! ```
//!
//! Sidecar (`objects/XX/<32 hex>.m`): magic "carpMET1", version, meta length,
//! key, the publish sequence of the object it belongs to, the meta, then an
//! xxh3-64 of everything before it.
//!
//! Checkpoint (`checkpoint`): magic "carpCKP1", version, clean flag, the
//! sequence below which every object is known durable, xxh3-64.

use crate::key::Key;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Current version of all three formats.
pub(crate) const FORMAT_VERSION: u32 = 1;
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
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            tmp: dir.join(TMP_DIR),
            objects: dir.join(OBJECTS_DIR),
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
    pub key: Key,
    pub key_len: u32,
    pub meta_len: u32,
    pub body_len: u64,
    pub seq: u64,
    pub body_hash: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
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
        self.body_offset() + self.body_len
    }

    /// The fixed header, its checksum covering `key_str` and `meta`.
    pub fn encode(&self, key_str: &[u8], meta: &[u8]) -> [u8; FIXED_LEN] {
        let mut b = [0u8; FIXED_LEN];
        b[0..8].copy_from_slice(&OBJECT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..32].copy_from_slice(&self.key.as_u128().to_le_bytes());
        b[32..36].copy_from_slice(&self.key_len.to_le_bytes());
        b[36..40].copy_from_slice(&self.meta_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.body_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.seq.to_le_bytes());
        b[56..64].copy_from_slice(&self.body_hash.to_le_bytes());
        let h = header_hash(&b[..64], key_str, meta);
        b[64..72].copy_from_slice(&h.to_le_bytes());
        b
    }

    /// Parses the fixed header (first [`FIXED_LEN`] bytes of `b`) and checks
    /// what it can alone: magic, version, length limits. Returns the header
    /// and its stored checksum, to check with [`Header::check`] once the key
    /// string and meta are read.
    pub fn decode(b: &[u8]) -> Result<(Header, u64), Invalid> {
        if b.len() < FIXED_LEN {
            return Err("shorter than an object header");
        }
        if b[0..8] != OBJECT_MAGIC {
            return Err("bad magic");
        }
        if u32_at(b, 8) != FORMAT_VERSION {
            return Err("unknown format version");
        }
        let h = Header {
            key: Key::from_u128(u128_at(b, 16)),
            key_len: u32_at(b, 32),
            meta_len: u32_at(b, 36),
            body_len: u64_at(b, 40),
            seq: u64_at(b, 48),
            body_hash: u64_at(b, 56),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            key: Key::of(b"k"),
            key_len: 1,
            meta_len: 3,
            body_len: 5,
            seq: 9,
            body_hash: xxh3_64(b"hello"),
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
        assert_eq!(h.file_len(), 81);
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
