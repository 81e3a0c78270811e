//! Helpers shared by the integration tests: store configurations in fresh
//! temporary directories, deterministic object contents derived from the
//! key, and measurements of the cache directory.

#![allow(dead_code)] // each test file uses a part

use cache_store::{Body, DiskConfig, Key, Store, StoreConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of memory-tier budget used by the tests that want one.
pub const MEM: u64 = 4 << 20;
/// Largest object kept in memory in those tests.
pub const MEM_MAX: u64 = 64 << 10;

/// A memory-only configuration.
pub fn mem_cfg(mem_bytes: u64, mem_max_object: u64) -> StoreConfig {
    StoreConfig {
        mem_bytes,
        mem_max_object,
        disk: None,
        max_object_size: mem_max_object,
    }
}

/// A configuration with a disk tier in `dir` (and a memory tier of `mem`
/// bytes, 0 for none). Syncs rarely unless the test says otherwise.
pub fn disk_cfg(dir: &Path, max_bytes: u64, mem: u64) -> StoreConfig {
    StoreConfig {
        mem_bytes: mem,
        mem_max_object: if mem > 0 { MEM_MAX } else { 0 },
        disk: Some(DiskConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            sync_interval: Duration::from_secs(3600),
            small_object: cache_store::DEFAULT_SMALL_OBJECT,
            progress_interval: cache_store::DEFAULT_PROGRESS_INTERVAL,
        }),
        max_object_size: u64::MAX,
    }
}

/// [`disk_cfg`] with every object in a file of its own (no log): for the
/// tests of the object file format.
pub fn file_cfg(dir: &Path, max_bytes: u64, mem: u64) -> StoreConfig {
    let mut c = disk_cfg(dir, max_bytes, mem);
    if let Some(d) = c.disk.as_mut() {
        d.small_object = 0;
    }
    c
}

/// Opens a store, ignoring progress.
pub fn open(cfg: StoreConfig) -> Arc<Store> {
    Store::open(cfg, |_| {}).expect("open store")
}

/// Deterministic content of `len` bytes for (`key_str`, `version`): an
/// xorshift stream seeded from both, so any wrong byte shows.
pub fn content(key_str: &[u8], version: u64, len: usize) -> Vec<u8> {
    let mut s = xxhash_rust::xxh3::xxh3_64_with_seed(key_str, version) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Stores one object, appending in chunks of `chunk` bytes.
pub fn put(store: &Store, key_str: &[u8], meta: &[u8], body: &[u8], chunk: usize) {
    let mut w = store
        .begin(Key::of(key_str), key_str, meta, Some(body.len() as u64))
        .expect("begin");
    for c in body.chunks(chunk.max(1)) {
        w.append(c).expect("append");
    }
    w.finish().expect("finish");
}

/// Reads a whole body through `read_at` in chunks of `chunk` bytes.
pub fn read_all(body: &Body, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() as usize);
    let mut buf = vec![0u8; chunk];
    loop {
        let n = body.read_at(out.len() as u64, &mut buf).expect("read_at");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len() as u64, body.len(), "body shorter than announced");
    out
}

/// The (meta, body) stored under `key_str`, if any.
pub fn get(store: &Store, key_str: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let hit = store.lookup(Key::of(key_str), key_str)?;
    Some((hit.meta.to_vec(), read_all(&hit.body, 64 << 10)))
}

/// Sum of the sizes of the files under `dir`, each rounded up to 4 KiB.
pub fn usage(dir: &Path) -> u64 {
    usage_of(&[dir])
}

/// [`usage`] of several directories, each file counted once: while the
/// store runs, an evictor may rename a file from one of them into another
/// during the walk (`objects/` to `tmp/`), and a file is one inode wherever
/// the walk meets it.
pub fn usage_of(dirs: &[&Path]) -> u64 {
    fn walk(dir: &Path, seen: &mut std::collections::HashSet<u64>) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let mut total = 0;
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                total += walk(&e.path(), seen);
            } else if seen.insert(md.ino()) {
                total += md.len().div_ceil(4096) * 4096;
            }
        }
        total
    }
    let mut seen = std::collections::HashSet::new();
    dirs.iter().map(|d| walk(d, &mut seen)).sum()
}

/// Bytes of records in the log's segments under the cache directory `dir`
/// (each segment file's length less its 32-byte header): what the store
/// counts for them.
pub fn log_bytes(dir: &Path) -> u64 {
    files(&dir.join("log"))
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len().saturating_sub(32)))
        .sum()
}

/// The files under `dir` (recursively), sorted.
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The object file of `key_str` in a cache directory.
pub fn object_path(dir: &Path, key_str: &[u8]) -> std::path::PathBuf {
    let k = Key::of(key_str).to_string();
    dir.join("objects").join(&k[..2]).join(k)
}

/// A seed for randomized tests: `CACHE_STORE_SEED` if set, else random;
/// printed so a failure can be replayed.
pub fn seed() -> u64 {
    let s = std::env::var("CACHE_STORE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed: {s} (CACHE_STORE_SEED={s} to replay)");
    s
}

/// Flips bit `mask` of the byte at `at` of the file `path` (damage on disk).
pub fn flip(path: &Path, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, at).unwrap();
}
