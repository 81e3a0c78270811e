//! Small objects packed into the log's segments: they round-trip, survive
//! clean and unclean restarts, are refreshed and removed for good (also
//! across a restart, and when a file replaces them), move to a file of
//! their own when a body of unknown length grows too large, are evicted a
//! segment at a time within the budget, and a damaged record is never
//! served.

mod common;

use cache_store::{Body, Key, OpenProgress, Store, Tier};
use common::*;
use std::path::Path;

fn reopen(dir: &Path, mem: u64) -> (std::sync::Arc<Store>, OpenProgress) {
    let mut last = OpenProgress::default();
    let s = Store::open(disk_cfg(dir, 64 << 20, mem), |p| last = p).unwrap();
    (s, last)
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    files(&dir.join("log"))
}

#[test]
fn small_objects_go_to_the_log_large_ones_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 64 << 20, 0));
    for i in 0..100 {
        let k = format!("http://small/{i}");
        put(
            &s,
            k.as_bytes(),
            b"meta",
            &content(k.as_bytes(), 1, 200),
            64,
        );
    }
    let big = content(b"big", 1, 100_000);
    put(&s, b"big", b"m", &big, 4096);
    // No memory tier: a small object is read from the log, into memory.
    let h = s
        .lookup(Key::of(b"http://small/7"), b"http://small/7")
        .unwrap();
    assert_eq!(h.tier, Tier::Disk);
    assert!(matches!(h.body, Body::Memory(_)));
    assert_eq!(read_all(&h.body, 64), content(b"http://small/7", 1, 200));
    let h = s.lookup(Key::of(b"big"), b"big").unwrap();
    assert!(matches!(h.body, Body::Disk(_)));
    // One file for the large object, one segment for the hundred small.
    assert_eq!(files(&dir.path().join("objects")).len(), 1);
    s.close().unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    let st = s.stats();
    assert_eq!(st.disk.objects, 101);
    assert_eq!(
        st.disk_used_bytes,
        usage(&dir.path().join("objects")) + log_bytes(dir.path())
    );
}

#[test]
fn logged_objects_survive_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let put_all = |s: &Store, v: u64| {
        for i in 0..300 {
            let k = format!("k{i}");
            let len = (i * 37) % 3000;
            put(
                s,
                k.as_bytes(),
                format!("v{v}").as_bytes(),
                &content(k.as_bytes(), v, len),
                500,
            );
        }
    };
    let check = |s: &Store, v: u64| {
        for i in 0..300 {
            let k = format!("k{i}");
            let (m, b) = get(s, k.as_bytes()).unwrap_or_else(|| panic!("{k} missing"));
            assert_eq!(m, format!("v{v}").into_bytes(), "{k}");
            assert!(b == content(k.as_bytes(), v, (i * 37) % 3000), "{k}");
        }
    };
    {
        let s = open(disk_cfg(dir.path(), 64 << 20, MEM));
        put_all(&s, 1);
        s.close().unwrap();
    }
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped, p.verified), (300, 0, 0), "{p:?}");
    check(&s, 1);
    // Every key replaced, then dropped without a clean close: the newer
    // version wins over the older record of each key.
    put_all(&s, 2);
    drop(s);
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped, p.verified), (300, 0, 300), "{p:?}");
    check(&s, 2);
    assert_eq!(s.stats().disk.objects, 300);
}

#[test]
fn refreshes_rewrite_the_record_and_keep_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 64 << 20, MEM));
    put(&s, b"k", b"old meta", b"body", 4);
    let v = s.lookup(Key::of(b"k"), b"k").unwrap().version;
    assert!(s
        .update_meta_if(Key::of(b"k"), b"k", v, b"new meta")
        .unwrap());
    assert!(!s
        .update_meta_if(Key::of(b"k"), b"k", v + 1, b"other")
        .unwrap());
    s.close().unwrap();
    drop(s);
    // No sidecar: the log holds the refreshed record.
    assert!(files(&dir.path().join("objects")).is_empty());
    let (s, _) = reopen(dir.path(), 0);
    let h = s.lookup(Key::of(b"k"), b"k").unwrap();
    assert_eq!((&h.meta[..], h.version), (&b"new meta"[..], v));
    assert_eq!(read_all(&h.body, 16), b"body");
}

#[test]
fn removals_and_replacements_by_files_hold_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(dir.path(), 64 << 20, MEM));
        put(&s, b"gone", b"m", b"small body", 3);
        put(&s, b"grown", b"m", b"small body", 3);
        put(&s, b"shrunk", b"m", &content(b"shrunk", 1, 200_000), 65536);
        assert!(s.remove(Key::of(b"gone"), b"gone"));
        // A large version replaces the small one, then goes too.
        put(&s, b"grown", b"m2", &content(b"grown", 2, 200_000), 65536);
        assert!(s.remove(Key::of(b"grown"), b"grown"));
        // A small version replaces a file: the file goes.
        put(&s, b"shrunk", b"m2", b"now small", 4);
        assert_eq!(files(&dir.path().join("objects")).len(), 0);
        // Dropped, not closed.
    }
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped), (1, 0), "{p:?}");
    assert!(get(&s, b"gone").is_none());
    assert!(get(&s, b"grown").is_none());
    assert_eq!(
        get(&s, b"shrunk").unwrap(),
        (b"m2".to_vec(), b"now small".to_vec())
    );
}

#[test]
fn a_body_of_unknown_length_that_grows_moves_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 64 << 20, MEM));
    let body = content(b"k", 1, 300_000);
    let mut w = s.begin(Key::of(b"k"), b"k", b"m", None).unwrap();
    let r = w.reader();
    let mut seen = Vec::new();
    for c in body.chunks(10_000) {
        w.append(c).unwrap();
        // A reader follows the body wherever it is.
        let mut buf = vec![0u8; 20_000];
        loop {
            let n = r.read_at(seen.len() as u64, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    }
    w.finish().unwrap();
    assert!(seen == body);
    assert_eq!(files(&dir.path().join("objects")).len(), 1);
    assert!(get(&s, b"k").unwrap().1 == body);
}

#[test]
fn segments_are_evicted_oldest_first_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB: segments of 256 KiB; 2,000 objects of ~1 KiB fit, 10,000 do not.
    let budget = 8 << 20;
    let s = open(disk_cfg(dir.path(), budget, 0));
    for i in 0..10_000u64 {
        let k = format!("k{i}");
        put(
            &s,
            k.as_bytes(),
            b"m",
            &content(k.as_bytes(), i, 1000),
            1000,
        );
        assert!(s.stats().disk_used_bytes <= budget, "{i}");
    }
    s.close().unwrap();
    let st = s.stats();
    assert!(st.disk.evictions > 0 && st.disk.objects > 5000, "{st:?}");
    assert!(
        usage(dir.path()) <= budget + (64 << 10),
        "{}",
        usage(dir.path())
    );
    // FIFO: what is left is the newest objects, all of them.
    let kept = (0..10_000u64)
        .filter(|i| get(&s, format!("k{i}").as_bytes()).is_some())
        .collect::<Vec<_>>();
    assert_eq!(kept.len() as u64, st.disk.objects);
    let first = kept[0];
    assert_eq!(kept, (first..10_000).collect::<Vec<_>>());
}

/// Stores `k0`..`k9`, 100-byte bodies with meta "m", and closes the store:
/// one segment of ten records of 56 + 2 + 1 + 100 bytes, padded to 160,
/// after its 32-byte header.
fn ten_small_objects(dir: &Path) {
    let s = open(disk_cfg(dir, 64 << 20, 0));
    for i in 0..10 {
        let k = format!("k{i}");
        put(&s, k.as_bytes(), b"m", &content(k.as_bytes(), 1, 100), 100);
    }
    s.close().unwrap();
}

#[test]
fn a_damaged_record_is_dropped_at_open_and_the_rest_of_its_segment_with_it() {
    let dir = tempfile::tempdir().unwrap();
    ten_small_objects(dir.path());
    let seg = &segments(dir.path())[0];
    // Records of 56 + 2 + 1 + 100 bytes, padded to 160, after a 32-byte
    // header: a byte of the fourth record's body.
    flip(seg, 32 + 3 * 160 + 80, 0x10);
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped), (3, 1), "{p:?}");
    for i in 0..10 {
        assert_eq!(get(&s, format!("k{i}").as_bytes()).is_some(), i < 3, "k{i}");
    }
    assert_eq!(s.stats().dropped_corrupt, 1);
}

#[test]
fn a_segment_cut_in_the_padding_of_its_last_record_drops_that_record_quietly() {
    let dir = tempfile::tempdir().unwrap();
    ten_small_objects(dir.path());
    // Records of 56 + 2 + 1 + 100 bytes, padded to 160: a write cut short
    // after the last body, in its one byte of padding.
    let seg = &segments(dir.path())[0];
    let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 32 + 10 * 160);
    f.set_len(32 + 10 * 160 - 1).unwrap();
    let (s, p) = reopen(dir.path(), 0);
    assert_eq!((p.objects, p.dropped), (9, 0), "{p:?}");
    for i in 0..10 {
        assert_eq!(get(&s, format!("k{i}").as_bytes()).is_some(), i < 9, "k{i}");
    }
    assert_eq!(s.stats().dropped_corrupt, 0);
}

#[test]
fn a_record_damaged_after_open_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(dir.path(), 64 << 20, 0));
        put(&s, b"k", b"m", &content(b"k", 1, 500), 100);
        put(&s, b"j", b"m", &content(b"j", 1, 500), 100);
        s.close().unwrap();
    }
    let (s, _) = reopen(dir.path(), 0);
    // Damage done after the scan (the page cache is the file's content).
    let seg = &segments(dir.path())[0];
    flip(seg, 32 + 100, 0x01);
    assert!(get(&s, b"k").is_none());
    assert_eq!(s.stats().dropped_corrupt, 1);
    assert!(get(&s, b"j").unwrap().1 == content(b"j", 1, 500));
}

/// Bytes the file system uses for everything under `dir` (allocated
/// blocks, not lengths).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for f in files(dir) {
        total += std::fs::metadata(&f).map_or(0, |m| m.blocks() * 512);
    }
    total
}

#[test]
fn a_million_small_objects_fit_the_budget_at_under_one_and_a_half_times_their_size() {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let meta = [b'm'; 100];
    let key = |i: u64| format!("http://example.com/objects/{i:07}");
    let payload: u64 = (0..N).map(|i| (key(i).len() + 100 + 200) as u64).sum();
    // Room for every record (56-byte header, 8-byte alignment) and a few
    // spare segments: nothing may be evicted.
    let budget = payload / 10 * 13;
    let s = open(disk_cfg(dir.path(), budget, 0));
    for i in 0..N {
        let k = key(i);
        put(&s, k.as_bytes(), &meta, &content(k.as_bytes(), i, 200), 200);
    }
    s.close().unwrap();
    let st = s.stats();
    drop(s);
    assert_eq!((st.disk.objects, st.disk.evictions), (N, 0), "{st:?}");
    let used = allocated(dir.path());
    eprintln!(
        "{N} objects: {payload} bytes of key strings, meta and bodies; the file system uses {used} bytes ({:.3}x; {:.3}x the bodies alone)",
        used as f64 / payload as f64,
        used as f64 / (N * 200) as f64
    );
    assert!(used * 2 <= payload * 3, "{used} bytes used for {payload}");
    let started = std::time::Instant::now();
    let (s, p) = {
        let mut last = OpenProgress::default();
        let s = Store::open(disk_cfg(dir.path(), budget, 0), |p| last = p).unwrap();
        (s, last)
    };
    eprintln!("reopened in {:?}: {p:?}", started.elapsed());
    assert_eq!((p.objects, p.dropped), (N, 0));
    for i in [0, 1, N / 2, N - 1] {
        let k = key(i);
        assert!(get(&s, k.as_bytes()).unwrap().1 == content(k.as_bytes(), i, 200));
    }
}
