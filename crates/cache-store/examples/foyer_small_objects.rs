//! The same workload as `small_objects.rs`, stored by foyer's hybrid cache
//! (crate `foyer`, block engine on a directory) instead of carpool's store:
//! fill, file-system usage, reopen with recovery, RSS growth. Only for the
//! comparison in bench/cache/README.md ("Small objects on disk"); run by
//! `bench/cache/small-objects`:
//!
//! ```text
//! cargo run --release -p cache-store --features bench-compare \
//!     --example foyer_small_objects -- [OBJECTS] [BODY_BYTES] [DIR]
//! ```
//!
//! Keys are the strings `http://example.com/objects/NNNNNNN`, values meta
//! (100 bytes) + body (`BODY_BYTES`, default 200) in one `Vec<u8>`. The memory
//! part holds one entry; every insert is written to disk (write on insertion).
//! The fill waits for the disk writes every `BATCH` inserts so the block
//! engine's submit queue never overflows (it drops entries when it does), and
//! ends with `close` (every queued entry written). Block size stays at its
//! default (16 MiB; it only sets the eviction unit, each entry still takes a
//! 4 KiB page), compression off, psync I/O, recovery `Quiet`.

use foyer::{
    BlockEngineConfig, Compression, DeviceBuilder, FsDeviceBuilder, HybridCache,
    HybridCacheBuilder, HybridCachePolicy, PsyncIoEngineConfig, RecoverMode,
};
use std::path::Path;
use std::time::Instant;

mod measure;
use measure::{allocated, cpu_secs, rss_kib};

/// Inserts between two waits for the flusher: two batches of 4 KiB pages
/// (32 MiB) fit its write buffer (half of the buffer pool), which drops
/// entries that do not fit.
const BATCH: u64 = 4096;
/// Keys looked up after the reopen.
const SAMPLE: u64 = 10_000;
/// foyer pads every entry to this on disk (`foyer_storage::io::PAGE`).
const PAGE: u64 = 4096;
/// The block engine's buffer pool (default 16 MiB): larger, so the fill can
/// run further ahead of the disk writes (112k instead of 80k objects/s for
/// 100,000 objects in a trial run).
const BUFFER_POOL: usize = 64 << 20;

async fn open(
    dir: &Path,
    capacity: usize,
) -> Result<HybridCache<String, Vec<u8>>, Box<dyn std::error::Error>> {
    let device = FsDeviceBuilder::new(dir).with_capacity(capacity).build()?;
    let cache = HybridCacheBuilder::new()
        .with_policy(HybridCachePolicy::WriteOnInsertion)
        .memory(1)
        .with_shards(1)
        .storage()
        .with_io_engine_config(PsyncIoEngineConfig::new())
        .with_engine_config(BlockEngineConfig::new(device).with_buffer_pool_size(BUFFER_POOL))
        .with_compression(Compression::None)
        .with_recover_mode(RecoverMode::Quiet)
        .build()
        .await?;
    Ok(cache)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let body_len: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("carpool-foyer-small-{}", std::process::id())),
    };
    let key = |i: u64| format!("http://example.com/objects/{i:07}");
    let mut value = vec![b'm'; 100];
    value.resize(100 + body_len, b'b');
    let payload: u64 = (0..n).map(|i| (key(i).len() + value.len()) as u64).sum();
    // Every entry takes at least one 4 KiB page, plus a 24-byte slot in a
    // 4 KiB blob index; a third more and 64 blocks of 16 MiB leave the
    // reclaimer its clean blocks, so nothing is evicted.
    let capacity = (n * (PAGE + 32) / 3 * 4 + (1 << 30)) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rss0 = rss_kib();
    let cpu0 = cpu_secs();
    let (fill, cpu_fill) = rt.block_on(async {
        let cache = open(&dir, capacity).await?;
        let started = Instant::now();
        let mut pending = None;
        for i in 0..n {
            cache.insert(key(i), value.clone());
            if (i + 1) % BATCH == 0 {
                // Wait for the previous batch while this one is queued.
                if let Some(w) = pending.take() {
                    w.await;
                }
                pending = Some(cache.storage().wait());
            }
        }
        if let Some(w) = pending {
            w.await;
        }
        cache.close().await?;
        let fill = started.elapsed();
        Ok::<_, Box<dyn std::error::Error>>((fill, cpu_secs() - cpu0))
    })?;
    let used = allocated(&dir);
    println!("objects            {n}");
    println!(
        "fill               {fill:.2?} ({:.0} objects/s, one inserting thread; {cpu_fill:.2} CPU s)",
        n as f64 / fill.as_secs_f64()
    );
    println!("stored bytes       {payload} (key strings + meta + bodies)");
    println!(
        "file system uses   {used} bytes: {:.3}x the stored bytes",
        used as f64 / payload as f64
    );
    let (open_time, found, lookups, grown) = rt.block_on(async {
        let started = Instant::now();
        let cache = open(&dir, capacity).await?;
        let open_time = started.elapsed();
        let started = Instant::now();
        let mut found = 0u64;
        let sample = SAMPLE.min(n);
        for j in 0..sample {
            let k = key(j * n / sample);
            if let Some(e) = cache.get(&k).await? {
                if e.value() == &value {
                    found += 1;
                }
            }
        }
        let lookups = started.elapsed();
        // Read while the reopened cache (its index) is alive.
        let grown = rss_kib().saturating_sub(rss0);
        cache.close().await?;
        Ok::<_, Box<dyn std::error::Error>>((open_time, found, lookups, grown))
    })?;
    println!(
        "reopen             {open_time:.2?} (recovery), then {found} of {} sampled keys found in {lookups:.2?}",
        SAMPLE.min(n)
    );
    println!(
        "index memory       {grown} KiB RSS over the start ({:.0} bytes per object)",
        (grown * 1024) as f64 / n as f64
    );
    println!(
        "result fill_per_s={:.0} fill_cpu_s={cpu_fill:.2} fs_ratio={:.3} reopen_s={:.3} lookups_s={:.3} found={found}/{} rss_per_object={:.0}",
        n as f64 / fill.as_secs_f64(),
        used as f64 / payload as f64,
        open_time.as_secs_f64(),
        lookups.as_secs_f64(),
        SAMPLE.min(n),
        (grown * 1024) as f64 / n as f64
    );
    drop(rt);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
