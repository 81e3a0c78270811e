//! A 3 GiB object streams through a `Writer` to disk and back out by
//! positional reads with flat memory: the data is generated chunk by chunk
//! (no fixture), and the process's resident memory is watched throughout.
//! Alone in its test binary so no other test's allocations blur the RSS.

mod common;

use cache_store::{Body, Key};
use common::*;
use std::time::Instant;

/// The full size.
const FULL: u64 = 3 << 30;
/// The size used when the body checksum runs unoptimized.
const REDUCED: u64 = 256 << 20;
/// Hashing speed below which the checksum is taken to be unoptimized.
const OPTIMIZED_HASH_BYTES_PER_SEC: f64 = 1e9;

/// Size of the object: `CACHE_STORE_BIG_OBJECT_MIB` if set; else 3 GiB,
/// unless xxhash-rust (which checksums every body byte) is built without
/// optimization, where 3 GiB would take ~40 s: then 256 MiB, said loudly.
fn size() -> u64 {
    if let Some(m) = std::env::var("CACHE_STORE_BIG_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return m << 20;
    }
    let probe = vec![7u8; 32 << 20];
    let t = Instant::now();
    std::hint::black_box(xxhash_rust::xxh3::xxh3_64(&probe));
    let speed = probe.len() as f64 / t.elapsed().as_secs_f64();
    if speed >= OPTIMIZED_HASH_BYTES_PER_SEC {
        return FULL;
    }
    eprintln!(
        "NOTE: xxhash-rust hashes at {:.0} MB/s here (unoptimized build): streaming {} MiB instead of 3 GiB. \
         Add `[profile.dev.package.xxhash-rust] opt-level = 3` to the workspace Cargo.toml to run the full size.",
        speed / 1e6,
        REDUCED >> 20
    );
    REDUCED
}
const CHUNK: usize = 1 << 20;
/// Allowed growth of resident memory over the whole test.
const RSS_SLACK: u64 = 48 << 20;

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb << 10
}

/// Chunk `i` of the object: a fixed random block with the chunk number and
/// page number stamped on every 4 KiB page, so a misplaced page shows.
fn chunk(base: &[u8], i: u64, out: &mut [u8]) {
    out.copy_from_slice(base);
    for (p, page) in out.chunks_mut(4096).enumerate() {
        page[..8].copy_from_slice(&i.to_le_bytes());
        page[8..16].copy_from_slice(&(p as u64).to_le_bytes());
    }
}

#[test]
fn a_3_gib_object_streams_through_with_flat_memory() {
    let size = size();
    let dir = tempfile::tempdir().unwrap();
    // Room to spare: the background evictor keeps usage under 90-95%.
    let s = open(disk_cfg(dir.path(), size / 4 * 5, MEM));
    let base = content(b"big", 0, CHUNK);
    let mut buf = vec![0u8; CHUNK];
    let rss0 = rss();
    let mut peak = rss0;
    let t0 = Instant::now();

    let mut w = s
        .begin(Key::of(b"big"), b"big", b"meta", Some(size))
        .unwrap();
    let reader = w.reader();
    let chunks = size / CHUNK as u64;
    for i in 0..chunks {
        chunk(&base, i, &mut buf);
        w.append(&buf).unwrap();
        if i % 256 == 0 {
            peak = peak.max(rss());
            // The partial body is readable while the object grows.
            let mut b = [0u8; 16];
            assert_eq!(reader.read_at(i * CHUNK as u64, &mut b).unwrap(), 16);
            assert_eq!(&b[..8], &i.to_le_bytes());
        }
    }
    w.finish().unwrap();
    let wrote = t0.elapsed();

    let hit = s.lookup(Key::of(b"big"), b"big").unwrap();
    let Body::Disk(body) = &hit.body else {
        panic!("a 3 GiB body must come from disk")
    };
    assert_eq!(body.len(), size);
    let t1 = Instant::now();
    let mut expect = vec![0u8; CHUNK];
    for i in 0..chunks {
        chunk(&base, i, &mut expect);
        let mut got = 0;
        while got < CHUNK {
            let n = body
                .read_at(i * CHUNK as u64 + got as u64, &mut buf[got..])
                .unwrap();
            assert!(n > 0, "early end at chunk {i}");
            got += n;
        }
        assert!(buf == expect, "chunk {i} differs");
        if i % 256 == 0 {
            peak = peak.max(rss());
        }
    }
    assert_eq!(body.read_at(size, &mut buf).unwrap(), 0);
    let read = t1.elapsed();
    peak = peak.max(rss());
    eprintln!(
        "{} MiB: written in {wrote:?}, read back in {read:?}; RSS {} MiB -> peak {} MiB",
        size >> 20,
        rss0 >> 20,
        peak >> 20
    );
    assert!(
        peak - rss0 < RSS_SLACK,
        "RSS grew by {} MiB",
        (peak - rss0) >> 20
    );
    drop(hit);
    assert!(s.remove(Key::of(b"big"), b"big"));
}
