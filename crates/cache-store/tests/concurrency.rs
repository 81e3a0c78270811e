//! Many threads look up, write, refresh and remove the same few keys at once
//! while eviction runs: every hit is a whole, consistent object (its body is
//! the one its meta names), readers of disk bodies keep reading whole
//! versions while those are replaced or evicted, and the budgets hold.

mod common;

use cache_store::{Body, Key, Store, StoreError};
use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};

const KEYS: u32 = 24;
const THREADS: usize = 6;
const OPS: u32 = 250;

fn meta(version: u64, len: usize) -> Vec<u8> {
    format!("{version} {len}").into_bytes()
}

fn parse(m: &[u8]) -> (u64, usize) {
    let s = std::str::from_utf8(m).unwrap();
    let (v, l) = s.split_once(' ').unwrap();
    (v.parse().unwrap(), l.parse().unwrap())
}

/// Stores an object; a full disk (every byte held by concurrent writers) is
/// an expected outcome here, any other error is not. Returns whether stored.
fn try_put(s: &Store, k: &[u8], meta: &[u8], body: &[u8]) -> bool {
    let res = s
        .begin(Key::of(k), k, meta, Some(body.len() as u64))
        .and_then(|mut w| {
            for c in body.chunks(16_384) {
                w.append(c)?;
            }
            w.finish()
        });
    match res {
        Ok(()) => true,
        Err(StoreError::DiskFull { .. }) => false,
        Err(e) => panic!("{e}"),
    }
}

fn hammer(s: &Store, seed: u64) -> (u64, u64) {
    let versions = AtomicU64::new(1);
    let hits = AtomicU64::new(0);
    let writes = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (versions, hits, writes) = (&versions, &hits, &writes);
            sc.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ t as u64);
                for _ in 0..OPS {
                    let k = format!("k{}", rng.gen_range(0..KEYS));
                    let kb = k.as_bytes();
                    match rng.gen_range(0..10) {
                        0..=4 => {
                            let Some(h) = s.lookup(Key::of(kb), kb) else {
                                continue;
                            };
                            let (v, len) = parse(&h.meta);
                            // Disk bodies are read slowly, in small pieces,
                            // so replacements and evictions happen meanwhile.
                            let chunk = if matches!(h.body, Body::Disk(_)) {
                                4096
                            } else {
                                65536
                            };
                            let body = read_all(&h.body, chunk);
                            assert!(
                                body == content(kb, v, len),
                                "{k} v{v}: body does not match meta"
                            );
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        5..=7 => {
                            let v = versions.fetch_add(1, Ordering::Relaxed);
                            let len = if rng.gen_bool(0.2) {
                                rng.gen_range(100_000..600_000)
                            } else {
                                rng.gen_range(0..30_000)
                            };
                            if try_put(s, kb, &meta(v, len), &content(kb, v, len)) {
                                writes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        8 => {
                            // A refresh validated against the version read:
                            // it must never land on a newer version. Its
                            // sidecar record takes a block too, so with every
                            // byte held by concurrent writers a full disk is an
                            // expected outcome, as for a write.
                            if let Some(h) = s.lookup(Key::of(kb), kb) {
                                let (v, len) = parse(&h.meta);
                                match s.update_meta_if(Key::of(kb), kb, h.version, &meta(v, len)) {
                                    Ok(_) | Err(StoreError::DiskFull { .. }) => {}
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                        _ => {
                            s.remove(Key::of(kb), kb);
                        }
                    }
                }
            });
        }
    });
    (hits.into_inner(), writes.into_inner())
}

/// The storm below on a store made by `cfg` (the log for small objects,
/// or files only): afterwards the index and the directory agree, exactly,
/// and survive a restart.
fn storm_stays_consistent(cfg: fn(&std::path::Path, u64, u64) -> cache_store::StoreConfig) {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    // A disk budget below the working set: eviction runs all along.
    let budget = 1 << 20;
    let s = open(cfg(dir.path(), budget, 1 << 20));
    let (hits, writes) = hammer(&s, seed);
    // Closing stops the background evictor: the directory is still now.
    s.close().unwrap();
    let st = s.stats();
    eprintln!("{hits} verified hits, {writes} writes: {st:?}");
    assert!(hits > 100 && writes > 100);
    assert!(st.disk.evictions > 0);
    assert!(st.disk.bytes <= budget && st.memory.bytes <= 1 << 20);
    assert!(st.disk_used_bytes <= budget);
    assert_eq!(st.disk_writing_bytes, 0);
    assert_eq!(st.dropped_corrupt, 0);
    // Index and directory agree after the storm, and survive a restart.
    let on_disk = usage(&dir.path().join("objects")) + log_bytes(dir.path());
    assert_eq!(on_disk, st.disk_used_bytes);
    assert!(files(&dir.path().join("tmp")).is_empty());
    drop(s);
    let s = open(cfg(dir.path(), budget, 0));
    let again = s.stats();
    assert_eq!(
        (again.disk.objects, again.disk.bytes, again.disk_used_bytes),
        (st.disk.objects, st.disk.bytes, st.disk_used_bytes)
    );
}

#[test]
fn concurrent_lookups_writes_refreshes_and_removals_stay_consistent() {
    storm_stays_consistent(disk_cfg);
}

#[test]
fn the_same_storm_on_object_files_only_stays_consistent() {
    storm_stays_consistent(file_cfg);
}

#[test]
fn concurrent_use_of_a_memory_only_store_stays_consistent() {
    let s = open(mem_cfg(2 << 20, 1 << 20));
    let (hits, writes) = hammer(&s, seed());
    assert!(hits > 100 && writes > 100);
    assert!(s.stats().memory.bytes <= 2 << 20);
}
