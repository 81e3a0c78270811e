//! Bodies found on disk at open are checked block by block (256 KiB blocks,
//! a checksum each in the block table after the body) before their bytes
//! are served: only the blocks a read covers, once per object; a bad block
//! drops the object and fails the read; objects written by this run, or
//! verified at open, need no check; version 1 files (one checksum for the
//! whole body) are read and checked whole, or discarded at open when over
//! 8 MiB. Offsets follow `src/disk/format.rs`.

mod common;

use cache_store::{Body, Key, OpenProgress, Store};
use common::*;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

const FIXED: u64 = 72;
const BLOCK: u64 = 256 << 10;

fn reopen(dir: &Path) -> (Arc<Store>, OpenProgress) {
    let mut last = OpenProgress::default();
    let s = Store::open(disk_cfg(dir, 256 << 20, 0), |p| last = p).unwrap();
    (s, last)
}

/// Stores `key` (meta "m") with a body of `len` bytes and closes the store
/// cleanly; returns the body.
fn stored(dir: &Path, key: &[u8], len: usize, chunk: usize) -> Vec<u8> {
    let body = content(key, 1, len);
    let s = open(disk_cfg(dir, 256 << 20, 0));
    put(&s, key, b"m", &body, chunk);
    s.close().unwrap();
    body
}

/// Offset of body byte `at` of `key` (meta "m") in its file.
fn body_at(key: &[u8], at: u64) -> u64 {
    FIXED + key.len() as u64 + 1 + at
}

fn disk_body(b: &Body) -> &cache_store::DiskBody {
    match b {
        Body::Disk(d) => d,
        Body::Memory(_) => panic!("expected a body on disk"),
    }
}

#[test]
fn objects_written_by_this_run_are_served_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 256 << 20, 0));
    put(&s, b"new", b"m", &content(b"new", 1, 1_000_000), 65536);
    let h = s.lookup(Key::of(b"new"), b"new").unwrap();
    assert!(disk_body(&h.body).is_checked());
}

#[test]
fn a_body_found_at_open_is_checked_once_then_served_as_is() {
    let dir = tempfile::tempdir().unwrap();
    // Odd chunk sizes: block sums must not depend on how the body arrived.
    for (i, chunk) in [7777usize, 262_144, 300_001, 1 << 21]
        .into_iter()
        .enumerate()
    {
        let key = format!("k{i}");
        let body = stored(dir.path(), key.as_bytes(), 1_500_000, chunk);
        let (s, p) = reopen(dir.path());
        assert_eq!((p.dropped, p.verified), (0, 0));
        let h = s.lookup(Key::of(key.as_bytes()), key.as_bytes()).unwrap();
        assert!(!h.body.is_checked(), "chunk {chunk}");
        h.body.check(0, 10).unwrap();
        assert!(!h.body.is_checked());
        assert!(read_all(&h.body, 100_000) == body, "chunk {chunk}");
        assert!(h.body.is_checked(), "every block was read");
        // Later lookups find it sound: no check left.
        let again = s.lookup(Key::of(key.as_bytes()), key.as_bytes()).unwrap();
        assert!(again.body.is_checked());
        assert_eq!(s.stats().dropped_corrupt, 0);
    }
}

#[test]
fn a_flipped_body_byte_fails_only_the_blocks_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let body = stored(dir.path(), b"big", 6 * BLOCK as usize - 1000, 65536);
    let path = object_path(dir.path(), b"big");
    let bad = 3 * BLOCK + 12_345;
    flip(&path, body_at(b"big", bad), 0x01);
    let (s, p) = reopen(dir.path());
    assert_eq!((p.objects, p.dropped), (1, 0), "not seen at a clean open");
    let h = s.lookup(Key::of(b"big"), b"big").unwrap();
    let other = s.lookup(Key::of(b"big"), b"big").unwrap();
    // Ranges away from the damage are sound.
    h.body.check(0, BLOCK).unwrap();
    h.body.check(5 * BLOCK, 100).unwrap();
    let mut buf = vec![0u8; 1000];
    let n = h.body.read_at(4 * BLOCK, &mut buf).unwrap();
    assert_eq!(&buf[..n], &body[4 * BLOCK as usize..][..n]);
    // One byte of block 3 fails it: the object is dropped...
    let e = h.body.check(bad - 5, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(s.stats().dropped_corrupt, 1);
    assert!(!path.exists());
    assert!(s.lookup(Key::of(b"big"), b"big").is_none());
    // ...and no reader of that version gets anything more from it, even of
    // blocks already checked.
    assert!(other.body.check(0, 1).is_err());
    assert!(other.body.read_at(3 * BLOCK, &mut buf).is_err());
    assert_eq!(s.stats().dropped_corrupt, 1, "counted once");
}

#[test]
fn a_read_through_read_at_is_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), b"r", 3 * BLOCK as usize, 65536);
    flip(
        &object_path(dir.path(), b"r"),
        body_at(b"r", BLOCK * 3 - 1),
        0x01,
    );
    let (s, _) = reopen(dir.path());
    let h = s.lookup(Key::of(b"r"), b"r").unwrap();
    let mut buf = vec![0u8; 10];
    assert!(h.body.read_at(0, &mut buf).is_ok());
    let e = h.body.read_at(2 * BLOCK, &mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert_eq!(s.stats().dropped_corrupt, 1);
}

#[test]
fn a_bad_block_table_drops_the_object_when_first_read() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), b"t", 2 * BLOCK as usize + 1, 65536);
    let path = object_path(dir.path(), b"t");
    let len = std::fs::metadata(&path).unwrap().len();
    // The table: 3 sums after the body, at the end of the file.
    assert_eq!(len, body_at(b"t", 2 * BLOCK + 1) + 24);
    flip(&path, len - 20, 0x01);
    let (s, p) = reopen(dir.path());
    assert_eq!(p.dropped, 0);
    assert!(s.lookup(Key::of(b"t"), b"t").is_none());
    assert_eq!(s.stats().dropped_corrupt, 1);
    assert!(!path.exists());
}

#[test]
fn objects_verified_at_an_unclean_open_are_not_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(dir.path(), 256 << 20, 0));
        put(&s, b"u", b"m", &content(b"u", 1, 700_000), 65536);
        put(&s, b"bad", b"m", &content(b"bad", 1, 700_000), 65536);
        // Dropped without close: unclean, nothing synced since.
    }
    flip(
        &object_path(dir.path(), b"bad"),
        body_at(b"bad", 600_000),
        0x01,
    );
    let (s, p) = reopen(dir.path());
    assert_eq!((p.objects, p.verified, p.dropped), (1, 2, 1), "{p:?}");
    assert!(s.lookup(Key::of(b"u"), b"u").unwrap().body.is_checked());
    assert!(s.lookup(Key::of(b"bad"), b"bad").is_none());
}

#[test]
fn an_empty_body_needs_no_check() {
    let dir = tempfile::tempdir().unwrap();
    stored(dir.path(), b"e", 0, 1);
    let (s, _) = reopen(dir.path());
    let h = s.lookup(Key::of(b"e"), b"e").unwrap();
    assert!(h.body.is_checked());
    assert_eq!(h.body.len(), 0);
}

/// An object file in the older format, version 1: no block table, the
/// xxh3-64 of the whole body at bytes 56..64.
fn write_v1(dir: &Path, key: &[u8], meta: &[u8], body: &[u8], seq: u64) {
    use xxhash_rust::xxh3::{xxh3_64, Xxh3};
    let mut b = Vec::new();
    b.extend_from_slice(b"carpOBJ1");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&Key::of(key).as_u128().to_le_bytes());
    b.extend_from_slice(&(key.len() as u32).to_le_bytes());
    b.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    b.extend_from_slice(&(body.len() as u64).to_le_bytes());
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&xxh3_64(body).to_le_bytes());
    let mut h = Xxh3::new();
    h.update(&b);
    h.update(key);
    h.update(meta);
    b.extend_from_slice(&h.digest().to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(meta);
    b.extend_from_slice(body);
    let path = object_path(dir, key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b).unwrap();
}

#[test]
fn version_1_objects_are_read_and_checked_whole_or_discarded_when_large() {
    let dir = tempfile::tempdir().unwrap();
    // A store of the current version, closed cleanly...
    drop(stored(dir.path(), b"v2", 10, 10));
    // ...then files of the older one, as an older carpool left them.
    let small = content(b"small", 1, 1_000_000);
    write_v1(dir.path(), b"small", b"m1", &small, 5);
    let bad = content(b"bad", 1, 500_000);
    write_v1(dir.path(), b"bad", b"m1", &bad, 6);
    flip(
        &object_path(dir.path(), b"bad"),
        FIXED + 3 + 2 + 400_000,
        0x01,
    );
    write_v1(
        dir.path(),
        b"large",
        b"m1",
        &content(b"large", 1, 9 << 20),
        7,
    );
    let (s, p) = reopen(dir.path());
    assert_eq!((p.objects, p.dropped, p.outdated), (3, 0, 1), "{p:?}");
    assert!(!object_path(dir.path(), b"large").exists());
    assert!(s.lookup(Key::of(b"large"), b"large").is_none());
    // The small one: its one checksum is checked at the first read of any
    // byte, then it is sound.
    let h = s.lookup(Key::of(b"small"), b"small").unwrap();
    assert_eq!(&h.meta[..], b"m1");
    assert!(!h.body.is_checked());
    h.body.check(999_999, 1).unwrap();
    assert!(h.body.is_checked());
    assert!(read_all(&h.body, 65536) == small);
    // The damaged one is dropped at its first read.
    let h = s.lookup(Key::of(b"bad"), b"bad").unwrap();
    assert_eq!(
        h.body.check(0, 1).unwrap_err().kind(),
        ErrorKind::InvalidData
    );
    assert_eq!(s.stats().dropped_corrupt, 1);
    // A version 1 object replaced is written in the current version.
    put(&s, b"small", b"m2", &small, 65536);
    s.close().unwrap();
    drop(s);
    let (s, _) = reopen(dir.path());
    let h = s.lookup(Key::of(b"small"), b"small").unwrap();
    assert_eq!(&h.meta[..], b"m2");
    assert!(read_all(&h.body, 65536) == small);
    assert_eq!(get(&s, b"v2").unwrap().1, content(b"v2", 1, 10));
}

#[test]
fn a_small_version_1_object_is_checked_when_read_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    drop(stored(dir.path(), b"v2", 10, 10));
    let body = content(b"s1", 1, 20_000);
    write_v1(dir.path(), b"s1", b"m", &body, 3);
    write_v1(dir.path(), b"s1bad", b"m", &body, 4);
    flip(
        &object_path(dir.path(), b"s1bad"),
        FIXED + 5 + 1 + 19_999,
        0x01,
    );
    let s = Store::open(disk_cfg(dir.path(), 256 << 20, MEM), |_| {}).unwrap();
    let h = s.lookup(Key::of(b"s1"), b"s1").unwrap();
    assert!(matches!(h.body, Body::Memory(_)));
    assert!(read_all(&h.body, 4096) == body);
    assert!(s.lookup(Key::of(b"s1bad"), b"s1bad").is_none());
    assert_eq!(s.stats().dropped_corrupt, 1);
}
