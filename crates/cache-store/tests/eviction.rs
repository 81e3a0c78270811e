//! Both tiers stay within their byte budgets whatever is written to them
//! (random sizes, replacements, concurrent writers caught mid-object), and
//! disk eviction takes the least recently used objects first.

mod common;

use cache_store::Key;
use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::{Arc, Barrier};

#[test]
fn memory_tier_stays_under_budget() {
    let mut rng = StdRng::seed_from_u64(seed());
    let budget = 1 << 20;
    let s = open(mem_cfg(budget, 128 << 10));
    let mut stored = 0u64;
    for i in 0..3000u32 {
        let k = format!("k{}", rng.gen_range(0..800u32));
        let len = if rng.gen_bool(0.1) {
            rng.gen_range(0..=128 << 10)
        } else {
            rng.gen_range(0..4096)
        };
        let meta = vec![b'm'; rng.gen_range(0..300)];
        put(
            &s,
            k.as_bytes(),
            &meta,
            &content(k.as_bytes(), u64::from(i), len),
            1000,
        );
        stored += 1;
        let st = s.stats();
        assert!(
            st.memory.bytes <= budget,
            "{} > {budget} after {i}",
            st.memory.bytes
        );
    }
    let st = s.stats();
    assert!(st.memory.evictions > 0, "{st:?}");
    assert!(
        st.memory.objects > 10 && st.memory.objects < stored,
        "{st:?}"
    );
}

/// Writes random objects with `threads` concurrent writers; every round each
/// writer stops halfway through an object and the directory is measured
/// while those objects are in flight, then again after they are published.
#[test]
fn disk_tier_stays_under_budget_while_writing() {
    let mut rng = StdRng::seed_from_u64(seed());
    let dir = tempfile::tempdir().unwrap();
    let budget: u64 = 6 << 20;
    let s = open(file_cfg(dir.path(), budget, 0));
    let threads = 4;
    let rounds = 40;
    let barrier = Arc::new(Barrier::new(threads + 1));
    // A failed check is recorded, not raised at once: the writers wait on
    // the barrier for the checker, and a panic here would leave them (and
    // the test) waiting forever instead of failing.
    let mut failures = Vec::new();
    let mut check = |when: &str| {
        let on_disk = usage_of(&[&dir.path().join("objects"), &dir.path().join("tmp")]);
        let st = s.stats();
        if on_disk > budget {
            failures.push(format!("{when}: directory holds {on_disk} > {budget}"));
        }
        if st.disk.bytes + st.disk_writing_bytes > budget {
            failures.push(format!("{when}: {st:?}"));
        }
        on_disk
    };
    let mut max_seen = 0;
    std::thread::scope(|sc| {
        for t in 0..threads {
            let s = &s;
            let barrier = barrier.clone();
            let seed: u64 = rng.gen();
            sc.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                for r in 0..rounds {
                    let k = format!("t{t}-{}", rng.gen_range(0..30));
                    let len = if rng.gen_bool(0.2) {
                        rng.gen_range(256 << 10..=1 << 20)
                    } else {
                        rng.gen_range(0..64 << 10)
                    };
                    let body = content(k.as_bytes(), r, len);
                    let mut w = s
                        .begin(
                            Key::of(k.as_bytes()),
                            k.as_bytes(),
                            b"meta",
                            Some(len as u64),
                        )
                        .unwrap();
                    let half = len / 2;
                    for c in body[..half].chunks(8192) {
                        w.append(c).unwrap();
                    }
                    barrier.wait(); // measured mid-object
                    barrier.wait();
                    for c in body[half..].chunks(8192) {
                        w.append(c).unwrap();
                    }
                    w.finish().unwrap();
                    barrier.wait(); // measured after publishing
                    barrier.wait();
                }
            });
        }
        for _ in 0..rounds {
            barrier.wait();
            max_seen = max_seen.max(check("mid-write"));
            barrier.wait();
            barrier.wait();
            check("published");
            barrier.wait();
        }
    });
    assert!(failures.is_empty(), "{failures:#?}");
    // Closing stops the background evictor: the directory is still now.
    s.close().unwrap();
    let st = s.stats();
    assert!(st.disk.evictions > 0, "{st:?}");
    assert_eq!(st.disk_writing_bytes, 0);
    assert!(
        max_seen > budget / 2,
        "the test never filled the budget: {max_seen}"
    );
    // What the index counts is what the directory holds.
    assert_eq!(usage(&dir.path().join("objects")), st.disk.bytes);
    assert!(files(&dir.path().join("tmp")).is_empty());
}

#[test]
fn disk_eviction_takes_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    // Objects of 8 KiB + header take 3 blocks (12 KiB): 85 fit in 1 MiB.
    let budget: u64 = 1 << 20;
    let s = open(file_cfg(dir.path(), budget, 0));
    let body = vec![1u8; 8 << 10];
    for i in 0..64 {
        put(&s, format!("old{i}").as_bytes(), b"", &body, 8192);
    }
    // The even ones are read again: they become recent.
    for i in (0..64).step_by(2) {
        assert!(get(&s, format!("old{i}").as_bytes()).is_some());
    }
    // 50 new objects push 29 old ones out (64 + 50 - 85).
    for i in 0..50 {
        put(&s, format!("new{i}").as_bytes(), b"", &body, 8192);
    }
    s.close().unwrap(); // stops the background evictor before counting
    let st = s.stats();
    assert!(st.disk.bytes <= budget);
    let alive = |p: &str| {
        (0..64)
            .filter(|i| (i % 2 == 0) == (p == "even"))
            .filter(|i| object_path(dir.path(), format!("old{i}").as_bytes()).exists())
            .count()
    };
    let (even, odd) = (alive("even"), alive("odd"));
    // At least 29 evictions; the background evictor may take up to 10% of
    // the budget more (it evicts down to a low-water mark).
    let ev = st.disk.evictions;
    assert!((29..=29 + 9).contains(&ev), "{st:?}");
    // Least recently used first: all the untouched (odd) objects go before
    // any recently read (even) one.
    let odd_evicted = 32 - odd as u64;
    let even_evicted = 32 - even as u64;
    assert_eq!(odd_evicted, ev.min(32), "even {even} odd {odd}, {st:?}");
    assert_eq!(
        even_evicted,
        ev.saturating_sub(32),
        "even {even} odd {odd}, {st:?}"
    );
    assert!((0..50).all(|i| object_path(dir.path(), format!("new{i}").as_bytes()).exists()));
}

#[test]
fn objects_larger_than_the_disk_are_refused_and_full_disk_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(file_cfg(dir.path(), 64 << 10, 0));
    assert!(s.begin(Key::of(b"k"), b"k", b"", Some(65 << 10)).is_err());
    // Two writers hold 56 KiB (24 KiB + a header block each): a third cannot
    // grow past 8 KiB.
    let mut a = s.begin(Key::of(b"a"), b"a", b"", None).unwrap();
    a.append(&[0; 24 << 10]).unwrap();
    let mut b = s.begin(Key::of(b"b"), b"b", b"", None).unwrap();
    b.append(&[0; 24 << 10]).unwrap();
    let mut c = s.begin(Key::of(b"c"), b"c", b"", None).unwrap();
    let e = c.append(&[0; 8 << 10]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("is full") && msg.contains(&dir.path().display().to_string()),
        "{msg}"
    );
    drop(a);
    c.append(&[0; 8 << 10]).unwrap();
    c.finish().unwrap();
    b.finish().unwrap();
    assert!(usage(&dir.path().join("objects")) <= 64 << 10);
}
