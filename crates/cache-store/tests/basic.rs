//! Round trips through both tiers: store, look up, replace, remove, refresh
//! meta, collisions, aborted and malformed writes, partial bodies, and the
//! directory lock within one process.

mod common;

use cache_store::{Body, Key, Store, StoreError, Tier, WriteState};
use common::*;
use std::os::unix::fs::MetadataExt;

#[test]
fn memory_only_round_trip_replace_remove() {
    let s = open(mem_cfg(MEM, MEM_MAX));
    let body = content(b"a", 1, 10_000);
    put(&s, b"a", b"meta1", &body, 777);
    let hit = s.lookup(Key::of(b"a"), b"a").expect("hit");
    assert_eq!(hit.tier, Tier::Memory);
    assert!(matches!(hit.body, Body::Memory(_)));
    assert_eq!(&hit.meta[..], b"meta1");
    assert_eq!(read_all(&hit.body, 333), body);

    let body2 = content(b"a", 2, 500);
    put(&s, b"a", b"meta2", &body2, 64);
    assert_eq!(get(&s, b"a"), Some((b"meta2".to_vec(), body2)));

    assert!(s.update_meta(Key::of(b"a"), b"a", b"meta3").unwrap());
    assert_eq!(get(&s, b"a").unwrap().0, b"meta3");

    assert!(s.remove(Key::of(b"a"), b"a"));
    assert!(!s.remove(Key::of(b"a"), b"a"));
    assert!(s.lookup(Key::of(b"a"), b"a").is_none());
    assert!(!s.update_meta(Key::of(b"a"), b"a", b"x").unwrap());
    let st = s.stats();
    assert_eq!((st.memory.objects, st.memory.hits, st.misses), (0, 3, 1));
}

#[test]
fn memory_only_refuses_bodies_it_could_not_keep() {
    let s = open(mem_cfg(MEM, 1000));
    match s.begin(Key::of(b"k"), b"k", b"", Some(1001)) {
        Err(StoreError::TooLarge {
            limit: 1000,
            attempted: 1001,
        }) => {}
        other => panic!("{other:?}"),
    }
    let mut w = s.begin(Key::of(b"k"), b"k", b"", None).unwrap();
    w.append(&[0; 600]).unwrap();
    let e = w.append(&[0; 600]).unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    assert_eq!(w.written(), 600);
    drop(w);
    assert!(s.lookup(Key::of(b"k"), b"k").is_none());
}

#[test]
fn disk_round_trip_small_and_large() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(file_cfg(dir.path(), 64 << 20, MEM));
    let small = content(b"small", 1, 5000);
    let large = content(b"large", 1, 3 << 20);
    let empty: Vec<u8> = Vec::new();
    put(&s, b"small", b"m-small", &small, 1000);
    put(&s, b"large", b"m-large", &large, 65536);
    put(&s, b"empty", b"m-empty", &empty, 1);
    // Small objects were copied into memory on the way in.
    let h = s.lookup(Key::of(b"small"), b"small").unwrap();
    assert_eq!(h.tier, Tier::Memory);
    let h = s.lookup(Key::of(b"large"), b"large").unwrap();
    assert_eq!(h.tier, Tier::Disk);
    let Body::Disk(d) = &h.body else {
        panic!("large body not on disk")
    };
    assert_eq!(d.len(), large.len() as u64);
    // The file and offset are what sendfile would use.
    let mut first = [0u8; 16];
    std::os::unix::fs::FileExt::read_exact_at(d.file(), &mut first, d.body_offset()).unwrap();
    assert_eq!(&first, &large[..16]);
    assert_eq!(read_all(&h.body, 100_000), large);
    assert_eq!(&h.meta[..], b"m-large");
    let (m, b) = get(&s, b"empty").unwrap();
    assert_eq!((m.as_slice(), b.len()), (&b"m-empty"[..], 0));

    // A store on the same directory without a memory tier reads all from disk.
    s.close().unwrap();
    drop(s);
    let s = open(file_cfg(dir.path(), 64 << 20, 0));
    for (k, body) in [
        (&b"small"[..], &small),
        (b"large", &large),
        (b"empty", &empty),
    ] {
        let h = s.lookup(Key::of(k), k).unwrap();
        assert_eq!(h.tier, Tier::Disk);
        assert!(matches!(h.body, Body::Disk(_)));
        assert_eq!(&read_all(&h.body, 4096), body);
    }
    let st = s.stats();
    assert_eq!(
        (st.disk.objects, st.disk.hits, st.memory.objects),
        (3, 3, 0)
    );
}

#[test]
fn disk_hit_is_promoted_to_memory() {
    let dir = tempfile::tempdir().unwrap();
    let body = content(b"p", 1, 3000);
    {
        let s = open(disk_cfg(dir.path(), 8 << 20, 0));
        put(&s, b"p", b"meta", &body, 512);
        s.close().unwrap();
    }
    let s = open(disk_cfg(dir.path(), 8 << 20, MEM));
    let h = s.lookup(Key::of(b"p"), b"p").unwrap();
    assert_eq!(h.tier, Tier::Disk);
    assert_eq!(read_all(&h.body, 999), body);
    let h = s.lookup(Key::of(b"p"), b"p").unwrap();
    assert_eq!(h.tier, Tier::Memory);
    assert_eq!(read_all(&h.body, 999), body);
    assert_eq!(&h.meta[..], b"meta");
    let st = s.stats();
    assert_eq!((st.disk.hits, st.memory.hits, st.memory.objects), (1, 1, 1));
}

#[test]
fn replace_on_disk_keeps_open_readers_working() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 64 << 20, 0));
    let v1 = content(b"r", 1, 1 << 20);
    let v2 = content(b"r", 2, 700_000);
    put(&s, b"r", b"v1", &v1, 50_000);
    let old = s.lookup(Key::of(b"r"), b"r").unwrap();
    put(&s, b"r", b"v2", &v2, 50_000);
    assert_eq!(get(&s, b"r"), Some((b"v2".to_vec(), v2.clone())));
    // The reader opened before the replacement still reads version 1 whole.
    assert_eq!(read_all(&old.body, 4096), v1);
    // And after a removal, too; the new version is gone.
    let cur = s.lookup(Key::of(b"r"), b"r").unwrap();
    assert!(s.remove(Key::of(b"r"), b"r"));
    assert!(get(&s, b"r").is_none());
    assert_eq!(read_all(&cur.body, 4096), v2);
    assert!(files(&dir.path().join("objects")).is_empty());
    assert_eq!(s.stats().disk.bytes, 0);
}

#[test]
fn remove_clears_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 8 << 20, MEM));
    put(&s, b"x", b"m", &content(b"x", 1, 100), 100);
    assert_eq!(s.lookup(Key::of(b"x"), b"x").unwrap().tier, Tier::Memory);
    assert!(s.remove(Key::of(b"x"), b"x"));
    assert!(s.lookup(Key::of(b"x"), b"x").is_none());
    assert!(!object_path(dir.path(), b"x").exists());
    let st = s.stats();
    assert_eq!((st.memory.objects, st.disk.objects), (0, 0));
}

#[test]
fn update_meta_keeps_the_body_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let body = content(b"u", 1, 2 << 20);
    let path = object_path(dir.path(), b"u");
    {
        let s = open(file_cfg(dir.path(), 64 << 20, 0));
        put(&s, b"u", b"meta-one", &body, 100_000);
        let before = std::fs::metadata(&path).unwrap();
        let (ino, mtime, len) = (before.ino(), before.mtime_nsec(), before.len());
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A longer and then a shorter meta.
        let long = vec![b'L'; 10_000];
        assert!(s.update_meta(Key::of(b"u"), b"u", &long).unwrap());
        assert_eq!(get(&s, b"u").unwrap().0, long);
        assert!(s.update_meta(Key::of(b"u"), b"u", b"meta-two").unwrap());
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (after.ino(), after.mtime_nsec(), after.len()),
            (ino, mtime, len)
        );
        assert_eq!(get(&s, b"u"), Some((b"meta-two".to_vec(), body.clone())));
        // The wrong key string changes nothing.
        assert!(!s.update_meta(Key::of(b"u"), b"not-u", b"zzz").unwrap());
        s.close().unwrap();
    }
    // The new meta survives a restart.
    let s = open(file_cfg(dir.path(), 64 << 20, 0));
    assert_eq!(get(&s, b"u"), Some((b"meta-two".to_vec(), body.clone())));
    // Replacing the object drops the sidecar: the new object's own meta shows.
    put(&s, b"u", b"meta-new", b"tiny", 4);
    assert_eq!(
        get(&s, b"u"),
        Some((b"meta-new".to_vec(), b"tiny".to_vec()))
    );
    let names: Vec<_> = files(&dir.path().join("objects"));
    assert_eq!(names, vec![path], "sidecar left behind");
}

#[test]
fn update_meta_in_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 8 << 20, MEM));
    put(&s, b"b", b"old", b"body", 4);
    assert!(s.update_meta(Key::of(b"b"), b"b", b"new").unwrap());
    let h = s.lookup(Key::of(b"b"), b"b").unwrap();
    assert_eq!((h.tier, &h.meta[..]), (Tier::Memory, &b"new"[..]));
    s.close().unwrap();
    drop(s);
    let s = open(disk_cfg(dir.path(), 8 << 20, MEM));
    assert_eq!(get(&s, b"b"), Some((b"new".to_vec(), b"body".to_vec())));
}

#[test]
fn same_key_different_key_string_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    for mem in [0, MEM] {
        let s = open(disk_cfg(&dir.path().join(mem.to_string()), 8 << 20, mem));
        // A forced collision: the key of "one" with the key string "two".
        let k = Key::of(b"one");
        let mut w = s.begin(k, b"two", b"m", None).unwrap();
        w.append(b"body of two").unwrap();
        w.finish().unwrap();
        assert!(s.lookup(k, b"one").is_none());
        assert!(!s.update_meta(k, b"one", b"x").unwrap());
        assert!(!s.remove(k, b"one"));
        let h = s
            .lookup(k, b"two")
            .expect("the stored key string still hits");
        assert_eq!(read_all(&h.body, 100), b"body of two");
    }
    let s = open(mem_cfg(MEM, MEM_MAX));
    let k = Key::of(b"one");
    let mut w = s.begin(k, b"two", b"m", None).unwrap();
    w.append(b"2").unwrap();
    w.finish().unwrap();
    assert!(s.lookup(k, b"one").is_none());
    assert!(s.lookup(k, b"two").is_some());
}

#[test]
fn aborted_and_dropped_writers_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(file_cfg(dir.path(), 8 << 20, MEM));
    put(&s, b"k", b"v1", b"version one", 3);
    let mut w = s.begin(Key::of(b"k"), b"k", b"v2", None).unwrap();
    w.append(&[7; 100_000]).unwrap();
    assert!(s.stats().disk_writing_bytes >= 100_000);
    assert_eq!(files(&dir.path().join("tmp")).len(), 1);
    let r = w.reader();
    w.abort();
    assert_eq!(r.state(), WriteState::Aborted);
    assert_eq!(get(&s, b"k").unwrap().1, b"version one");
    let mut w = s.begin(Key::of(b"k2"), b"k2", b"", None).unwrap();
    w.append(b"partial").unwrap();
    drop(w);
    assert!(s.lookup(Key::of(b"k2"), b"k2").is_none());
    assert!(files(&dir.path().join("tmp")).is_empty());
    assert_eq!(s.stats().disk_writing_bytes, 0);
    assert_eq!(usage(&dir.path().join("objects")), s.stats().disk.bytes);
}

#[test]
fn announced_length_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 8 << 20, MEM));
    let mut w = s.begin(Key::of(b"k"), b"k", b"", Some(10)).unwrap();
    w.append(&[1; 6]).unwrap();
    let e = w.append(&[1; 6]).unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::LengthMismatch {
                expected: 10,
                written: 12
            }
        ),
        "{e}"
    );
    let e = w.finish().unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::LengthMismatch {
                expected: 10,
                written: 6
            }
        ),
        "{e}"
    );
    assert!(s.lookup(Key::of(b"k"), b"k").is_none());
    assert!(files(&dir.path().join("tmp")).is_empty());
}

#[test]
fn size_limit_and_format_limits() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk_cfg(dir.path(), 8 << 20, 0);
    cfg.max_object_size = 1000;
    let s = open(cfg);
    let mut w = s.begin(Key::of(b"k"), b"k", b"", None).unwrap();
    w.append(&[0; 1000]).unwrap();
    let e = w.append(&[0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "object too large: 1001 bytes exceeds the limit of 1000 bytes"
    );
    let long_key = vec![b'k'; cache_store::MAX_KEY_LEN + 1];
    assert!(matches!(
        s.begin(Key::of(&long_key), &long_key, b"", None),
        Err(StoreError::KeyTooLong { .. })
    ));
    let big_meta = vec![b'm'; cache_store::MAX_META_LEN + 1];
    assert!(matches!(
        s.begin(Key::of(b"k"), b"k", &big_meta, None),
        Err(StoreError::MetaTooLarge { .. })
    ));
}

#[test]
fn partial_body_grows_before_finish_disk_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let stores = [
        open(disk_cfg(dir.path(), 32 << 20, MEM)),
        open(mem_cfg(MEM, MEM_MAX)),
    ];
    for s in &stores {
        let body = content(b"p", 9, 60_000);
        let mut w = s
            .begin(Key::of(b"p"), b"p", b"m", Some(body.len() as u64))
            .unwrap();
        let r = w.reader();
        let r2 = r.clone();
        let mut buf = vec![0u8; 100_000];
        assert_eq!((r.written(), r.read_at(0, &mut buf).unwrap()), (0, 0));
        assert_eq!(r.expected_len(), Some(60_000));
        let mut seen = Vec::new();
        for chunk in body.chunks(7_000) {
            w.append(chunk).unwrap();
            assert_eq!(r.state(), WriteState::Writing);
            assert_eq!(r.written(), w.written());
            // A reader on another thread sees exactly what was appended.
            let got = std::thread::scope(|sc| {
                sc.spawn(|| {
                    let mut b = vec![0u8; 100_000];
                    let mut out = Vec::new();
                    loop {
                        let n = r2.read_at(out.len() as u64, &mut b).unwrap();
                        if n == 0 {
                            break out;
                        }
                        out.extend_from_slice(&b[..n]);
                    }
                })
                .join()
                .unwrap()
            });
            assert_eq!(got, body[..w.written() as usize]);
            let n = r.read_at(seen.len() as u64, &mut buf).unwrap();
            seen.extend_from_slice(&buf[..n]);
            // Not visible to lookups before finish.
            assert!(s.lookup(Key::of(b"p"), b"p").is_none());
        }
        assert_eq!(seen, body);
        w.finish().unwrap();
        assert_eq!(r.state(), WriteState::Finished);
        let mut tail = [0u8; 10];
        assert_eq!(r.read_at(59_990, &mut tail).unwrap(), 10);
        assert_eq!(&tail, &body[59_990..]);
        assert_eq!(get(s, b"p").unwrap().1, body);
    }
}

#[test]
fn second_open_of_a_locked_dir_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 8 << 20, 0));
    let e = Store::open(disk_cfg(dir.path(), 8 << 20, 0), |_| {}).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("in use by another process"), "{msg}");
    drop(s);
    // Dropping the store releases the lock.
    open(disk_cfg(dir.path(), 8 << 20, 0));
}

#[test]
fn closed_store_refuses_new_objects_but_serves() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(disk_cfg(dir.path(), 8 << 20, 0));
    put(&s, b"a", b"m", b"abc", 1);
    let mut w = s.begin(Key::of(b"b"), b"b", b"", None).unwrap();
    w.append(b"x").unwrap();
    s.close().unwrap();
    assert!(matches!(w.finish(), Err(StoreError::Closed)));
    assert!(matches!(
        s.begin(Key::of(b"c"), b"c", b"", None),
        Err(StoreError::Closed)
    ));
    assert_eq!(get(&s, b"a").unwrap().1, b"abc");
    assert!(s.lookup(Key::of(b"b"), b"b").is_none());
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let e = Store::open(disk_cfg(&file.join("cache"), 1 << 20, 0), |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
}

#[test]
fn invalid_configurations_are_refused() {
    let mut c = mem_cfg(0, 0);
    assert!(matches!(
        Store::open(c.clone(), |_| {}),
        Err(StoreError::Config(_))
    ));
    c.mem_bytes = 100;
    c.mem_max_object = 1000;
    assert!(matches!(Store::open(c, |_| {}), Err(StoreError::Config(_))));
    let dir = tempfile::tempdir().unwrap();
    let mut c = disk_cfg(dir.path(), 0, 0);
    assert!(matches!(
        Store::open(c.clone(), |_| {}),
        Err(StoreError::Config(_))
    ));
    c.disk.as_mut().unwrap().max_bytes = 1 << 20;
    c.disk.as_mut().unwrap().sync_interval = std::time::Duration::ZERO;
    assert!(matches!(Store::open(c, |_| {}), Err(StoreError::Config(_))));
}

#[test]
fn update_meta_if_refuses_a_replaced_version() {
    let dir = tempfile::tempdir().unwrap();
    let stores = [
        open(disk_cfg(dir.path(), 8 << 20, MEM)),
        open(mem_cfg(MEM, MEM_MAX)),
    ];
    for s in &stores {
        put(s, b"v", b"meta-1", b"body-1", 6);
        let v1 = s.lookup(Key::of(b"v"), b"v").unwrap().version;
        assert!(s
            .update_meta_if(Key::of(b"v"), b"v", v1, b"meta-1b")
            .unwrap());
        let h = s.lookup(Key::of(b"v"), b"v").unwrap();
        assert_eq!(
            (h.version, &h.meta[..]),
            (v1, &b"meta-1b"[..]),
            "a refresh keeps the version"
        );
        put(s, b"v", b"meta-2", b"body-2", 6);
        let v2 = s.lookup(Key::of(b"v"), b"v").unwrap().version;
        assert_ne!(v1, v2);
        // A refresh validated against version 1 must not touch version 2.
        assert!(!s.update_meta_if(Key::of(b"v"), b"v", v1, b"stale").unwrap());
        assert_eq!(get(s, b"v"), Some((b"meta-2".to_vec(), b"body-2".to_vec())));
    }
    // Versions survive a restart (they are the objects' publish sequences).
    let v = stores[0].lookup(Key::of(b"v"), b"v").unwrap().version;
    stores[0].close().unwrap();
    drop(stores);
    let s = open(disk_cfg(dir.path(), 8 << 20, 0));
    assert_eq!(s.lookup(Key::of(b"v"), b"v").unwrap().version, v);
    put(&s, b"w", b"", b"", 1);
    assert!(s.lookup(Key::of(b"w"), b"w").unwrap().version > v);
}

#[test]
fn types_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send_sync::<cache_store::PartialBody>();
    send_sync::<cache_store::Hit>();
    send_sync::<cache_store::DiskBody>();
    send::<cache_store::Writer>();
}
