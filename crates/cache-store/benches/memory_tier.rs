//! Picks the memory tier's cache crate by measurement: moka (sync), quick_cache
//! (sync, weighted) and foyer's in-memory cache on one hit-heavy workload —
//! 1 KiB `Bytes` values weighed by length, a Zipf-like hot set that fits the
//! budget (95% of operations) and a stream of one-off keys (5%, each a miss
//! followed by an insert) — with 1 and 2 threads. Run with
//! `cargo bench -p cache-store --features bench-compare --bench memory_tier`.
//! Each iteration is one lookup (plus the insert on a miss) per thread; the
//! observed hit ratio of every candidate is printed before the timings.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Memory budget of every candidate.
const BUDGET: u64 = 64 << 20;
/// Size of every value.
const VALUE_LEN: usize = 1024;
/// Keys of the hot set: 40,000 × 1 KiB fits the 64 MiB budget with room.
const HOT_KEYS: usize = 40_000;
/// Zipf exponent of the hot set.
const ZIPF_S: f64 = 0.9;
/// Share of operations that touch a one-off (cold) key.
const COLD_SHARE: f64 = 0.05;
/// Pre-generated operations per thread (cycled).
const OPS: usize = 1 << 20;

trait Candidate: Sync {
    fn get(&self, k: u128) -> Option<Bytes>;
    fn insert(&self, k: u128, v: Bytes);
}

struct Moka(moka::sync::Cache<u128, Bytes>);
impl Candidate for Moka {
    fn get(&self, k: u128) -> Option<Bytes> {
        self.0.get(&k)
    }
    fn insert(&self, k: u128, v: Bytes) {
        self.0.insert(k, v)
    }
}

#[derive(Clone)]
struct LenWeighter;
impl quick_cache::Weighter<u128, Bytes> for LenWeighter {
    fn weight(&self, _k: &u128, v: &Bytes) -> u64 {
        v.len() as u64
    }
}
struct Quick(quick_cache::sync::Cache<u128, Bytes, LenWeighter>);
impl Candidate for Quick {
    fn get(&self, k: u128) -> Option<Bytes> {
        self.0.get(&k)
    }
    fn insert(&self, k: u128, v: Bytes) {
        self.0.insert(k, v)
    }
}

struct Foyer(foyer_memory::Cache<u128, Bytes>);
impl Candidate for Foyer {
    fn get(&self, k: u128) -> Option<Bytes> {
        self.0.get(&k).map(|e| e.value().clone())
    }
    fn insert(&self, k: u128, v: Bytes) {
        self.0.insert(k, v);
    }
}

fn candidates() -> Vec<(&'static str, Box<dyn Candidate>)> {
    let moka = moka::sync::Cache::builder()
        .max_capacity(BUDGET)
        .weigher(|_k: &u128, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
        .build();
    let quick = quick_cache::sync::Cache::with_weighter(
        (BUDGET / VALUE_LEN as u64) as usize,
        BUDGET,
        LenWeighter,
    );
    let foyer = foyer_memory::CacheBuilder::new(BUDGET as usize)
        .with_weighter(|_k: &u128, v: &Bytes| v.len())
        .build();
    vec![
        ("moka", Box::new(Moka(moka)) as Box<dyn Candidate>),
        ("quick_cache", Box::new(Quick(quick))),
        ("foyer", Box::new(Foyer(foyer))),
    ]
}

/// One thread's operations: keys, hot ones drawn from a Zipf-like law.
fn ops(seed: u64) -> Vec<u128> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cdf = Vec::with_capacity(HOT_KEYS);
    let mut sum = 0.0;
    for i in 1..=HOT_KEYS {
        sum += 1.0 / (i as f64).powf(ZIPF_S);
        cdf.push(sum);
    }
    (0..OPS)
        .map(|_| {
            if rng.gen::<f64>() < COLD_SHARE {
                // A key nobody asks for twice.
                (1u128 << 64) | u128::from(rng.gen::<u64>())
            } else {
                let x = rng.gen::<f64>() * sum;
                cdf.partition_point(|&c| c < x) as u128
            }
        })
        .map(|k| xxhash_rust::xxh3::xxh3_128(&k.to_le_bytes()))
        .collect()
}

fn run(c: &dyn Candidate, ops: &[u128], start: usize, n: u64, value: &Bytes) -> u64 {
    let mut hits = 0;
    for i in 0..n as usize {
        let k = ops[(start + i) % ops.len()];
        match c.get(k) {
            Some(v) => {
                black_box(v);
                hits += 1;
            }
            None => c.insert(k, value.clone()),
        }
    }
    hits
}

fn bench(cr: &mut Criterion) {
    let value = Bytes::from(vec![0xa5u8; VALUE_LEN]);
    let per_thread: Vec<Vec<u128>> = (0..2).map(|t| ops(0x5eed + t)).collect();
    let mut group = cr.benchmark_group("memory_tier");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for threads in [1usize, 2] {
        for (name, cache) in candidates() {
            // Warm the cache and report the hit ratio it reaches.
            run(cache.as_ref(), &per_thread[0], 0, OPS as u64, &value);
            let hits = run(cache.as_ref(), &per_thread[0], 0, OPS as u64, &value);
            eprintln!(
                "{name} ({threads} thread(s)): hit ratio {:.3}",
                hits as f64 / OPS as f64
            );
            let mut offset = 0usize;
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_function(BenchmarkId::new(name, format!("{threads}t")), |b| {
                b.iter_custom(|iters| {
                    offset = offset.wrapping_add(iters as usize);
                    let cache = cache.as_ref();
                    let value = &value;
                    let t0 = Instant::now();
                    std::thread::scope(|s| {
                        for ops in per_thread.iter().take(threads) {
                            s.spawn(move || run(cache, ops, offset, iters, value));
                        }
                    });
                    t0.elapsed()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
