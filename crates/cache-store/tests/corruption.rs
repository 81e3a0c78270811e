//! Damaged files are dropped and counted: a flipped byte anywhere in a
//! header, a truncated or extended file, a flipped body byte after an
//! unclean shutdown (objects published since the last checkpoint), a bad
//! body caught when a small object is read into memory, bad sidecars, and
//! stray files. Offsets follow the object format documented in
//! `src/disk/format.rs` (fixed header of 72 bytes, then key string and meta).

mod common;

use cache_store::{Key, OpenProgress, Store, Tier};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const FIXED: u64 = 72;

fn reopen(dir: &Path, mem: u64) -> (std::sync::Arc<Store>, OpenProgress) {
    let mut last = OpenProgress::default();
    let s = Store::open(file_cfg(dir, 64 << 20, mem), |p| last = p).unwrap();
    (s, last)
}

#[test]
fn a_flipped_header_byte_anywhere_drops_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let (key, meta) = (&b"http://h/obj"[..], &b"status=200"[..]);
    let head_len = FIXED + key.len() as u64 + meta.len() as u64;
    let body = content(key, 1, 5000);
    // Every byte of the header, key string and meta, one at a time.
    for at in 0..head_len {
        {
            let s = open(file_cfg(dir.path(), 64 << 20, 0));
            put(&s, key, meta, &body, 5000);
            put(&s, b"other", b"m", b"other body", 10);
            s.close().unwrap();
        }
        let path = object_path(dir.path(), key);
        flip(&path, at, 0x40);
        let (s, p) = reopen(dir.path(), 0);
        assert_eq!((p.objects, p.dropped), (1, 1), "byte {at}");
        assert_eq!(s.stats().dropped_corrupt, 1);
        assert!(!path.exists());
        assert!(s.lookup(Key::of(key), key).is_none());
        assert_eq!(get(&s, b"other").unwrap().1, b"other body");
    }
}

#[test]
fn truncated_or_extended_files_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let body = content(b"t", 1, 100_000);
    for (what, new_len) in [
        ("truncated by one", -1i64),
        ("extended by one", 1),
        ("cut to 10 bytes", -99_990 - 72 - 2),
    ] {
        {
            let s = open(file_cfg(dir.path(), 64 << 20, 0));
            put(&s, b"t", b"m", &body, 10_000);
            s.close().unwrap();
        }
        let path = object_path(dir.path(), b"t");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len((len as i64 + new_len) as u64).unwrap();
        let (s, p) = reopen(dir.path(), 0);
        assert_eq!((p.objects, p.dropped), (0, 1), "{what}");
        assert_eq!(s.stats().dropped_corrupt, 1, "{what}");
        assert!(!path.exists(), "{what}");
    }
}

#[test]
fn a_flipped_body_byte_after_an_unclean_shutdown_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let big = content(b"big", 1, 300_000);
    {
        let s = open(file_cfg(dir.path(), 64 << 20, 0));
        put(&s, b"big", b"m", &big, 65536);
        put(&s, b"fine", b"m", b"fine body", 9);
        // Dropped without close: unclean, and no checkpoint since the writes.
    }
    let path = object_path(dir.path(), b"big");
    let len = std::fs::metadata(&path).unwrap().len();
    flip(&path, len - 150_000, 0x40);
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped, p.verified), (1, 1, 2), "{p:?}");
    assert_eq!(s.stats().dropped_corrupt, 1);
    assert!(s.lookup(Key::of(b"big"), b"big").is_none());
    assert_eq!(get(&s, b"fine").unwrap().1, b"fine body");
}

#[test]
fn only_objects_published_after_the_last_checkpoint_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = file_cfg(dir.path(), 64 << 20, 0);
    cfg.disk.as_mut().unwrap().sync_interval = Duration::from_millis(500);
    let checkpoint = dir.path().join("checkpoint");
    let stamp = || {
        std::fs::metadata(&checkpoint)
            .and_then(|m| m.modified())
            .ok()
    };
    {
        let s = Store::open(cfg.clone(), |_| {}).unwrap();
        for i in 0..5 {
            put(&s, format!("early{i}").as_bytes(), b"m", &[1; 1000], 1000);
        }
        // Wait for a periodic checkpoint, then write at once (well inside
        // the next interval) and stop uncleanly.
        let t0 = stamp();
        let deadline = Instant::now() + Duration::from_secs(20);
        while stamp() == t0 {
            assert!(Instant::now() < deadline, "no periodic checkpoint");
            std::thread::sleep(Duration::from_millis(2));
        }
        for i in 0..3 {
            put(&s, format!("late{i}").as_bytes(), b"m", &[2; 1000], 1000);
        }
    }
    let mut last = OpenProgress::default();
    let s = Store::open(cfg, |p| last = p).unwrap();
    assert_eq!(
        (last.objects, last.verified, last.dropped),
        (8, 3, 0),
        "{last:?}"
    );
    assert_eq!(s.stats().disk.objects, 8);
}

#[test]
fn a_bad_body_is_caught_when_a_small_object_is_read_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let body = content(b"s", 1, 10_000);
    {
        let s = open(file_cfg(dir.path(), 64 << 20, 0));
        put(&s, b"s", b"m", &body, 10_000);
        s.close().unwrap();
    }
    let path = object_path(dir.path(), b"s");
    let len = std::fs::metadata(&path).unwrap().len();
    flip(&path, len - 1, 0x40);
    // A clean shutdown: bodies are trusted at open...
    let (s, p) = reopen(dir.path(), MEM);
    assert_eq!((p.objects, p.dropped, p.verified), (1, 0, 0));
    // ...and checked when the object is read whole for the memory tier.
    assert!(s.lookup(Key::of(b"s"), b"s").is_none());
    assert_eq!(s.stats().dropped_corrupt, 1);
    assert!(!path.exists());
}

#[test]
fn bad_and_stale_sidecars_fall_back_to_the_objects_meta() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(file_cfg(dir.path(), 64 << 20, 0));
        put(&s, b"a", b"inline-a", b"body a", 6);
        put(&s, b"b", b"inline-b", b"body b", 6);
        assert!(s.update_meta(Key::of(b"a"), b"a", b"fresh-a").unwrap());
        assert!(s.update_meta(Key::of(b"b"), b"b", b"fresh-b").unwrap());
        s.close().unwrap();
    }
    let side = |k: &[u8]| object_path(dir.path(), k).with_extension("m");
    // a: corrupt sidecar; b: a sidecar of another version (copied from a's).
    let good_a = std::fs::read(side(b"a")).unwrap();
    flip(&side(b"a"), 45, 0x40);
    std::fs::write(side(b"b"), &good_a).unwrap();
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped), (2, 1), "{p:?}");
    assert_eq!(
        get(&s, b"a"),
        Some((b"inline-a".to_vec(), b"body a".to_vec()))
    );
    assert_eq!(
        get(&s, b"b"),
        Some((b"inline-b".to_vec(), b"body b".to_vec()))
    );
    assert!(!side(b"a").exists() && !side(b"b").exists());
}

#[test]
fn temporary_and_stray_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(file_cfg(dir.path(), 64 << 20, 0));
        put(&s, b"keep", b"m", b"kept", 4);
        s.close().unwrap();
    }
    // Leftovers of writes cut short (the crash test makes real ones).
    std::fs::write(dir.path().join("tmp/w1"), b"partial").unwrap();
    std::fs::write(dir.path().join("tmp/w999"), b"leftover").unwrap();
    std::fs::create_dir_all(dir.path().join("tmp/sub")).unwrap();
    std::fs::write(dir.path().join("objects/junk"), b"x").unwrap();
    let keep = object_path(dir.path(), b"keep");
    let sub = keep.parent().unwrap();
    std::fs::write(sub.join("not-a-key"), b"x").unwrap();
    std::fs::write(
        sub.join(format!("{}", Key::of(b"elsewhere"))),
        b"wrong subdirectory",
    )
    .unwrap();
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped), (1, 3), "{p:?}");
    assert!(files(&dir.path().join("tmp")).is_empty());
    assert_eq!(files(&dir.path().join("objects")), vec![keep]);
    assert_eq!(get(&s, b"keep").unwrap().1, b"kept");
    let h = s.lookup(Key::of(b"keep"), b"keep").unwrap();
    assert_eq!(h.tier, Tier::Disk);
}
