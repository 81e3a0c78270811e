//! Fills a disk store with many small objects and reopens it: how much the
//! file system uses for them, and how long the index rebuild takes. Run by
//! `bench/cache/small-objects` (see bench/cache/README.md):
//!
//! ```text
//! cargo run --release -p cache-store --example small_objects -- [OBJECTS] [BODY_BYTES] [DIR]
//! ```
//!
//! Keys are `http://example.com/objects/NNNNNNN`, meta 100 bytes, bodies
//! `BODY_BYTES` (default 200) bytes; the budget leaves room for all.

use cache_store::{DiskConfig, Key, Store, StoreConfig};
use std::time::Instant;

mod measure;
use measure::{allocated, cpu_secs, rss_kib};

/// Keys looked up after the reopen.
const SAMPLE: u64 = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let body_len: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let tmp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = std::env::temp_dir().join(format!("carpool-small-{}", std::process::id()));
            tmp.clone()
        }
    };
    let key = |i: u64| format!("http://example.com/objects/{i:07}");
    let meta = [b'm'; 100];
    let body = vec![b'b'; body_len];
    let payload: u64 = (0..n).map(|i| (key(i).len() + 100 + body_len) as u64).sum();
    let cfg = || StoreConfig {
        mem_bytes: 0,
        mem_max_object: 0,
        disk: Some(DiskConfig::new(&dir, payload / 10 * 13 + (64 << 20))),
        max_object_size: u64::MAX,
    };
    let rss0 = rss_kib();
    let s = Store::open(cfg(), |_| {})?;
    let cpu0 = cpu_secs();
    let started = Instant::now();
    for i in 0..n {
        let k = key(i);
        let mut w = s.begin(
            Key::of(k.as_bytes()),
            k.as_bytes(),
            &meta,
            Some(body_len as u64),
        )?;
        w.append(&body)?;
        w.finish()?;
    }
    let after_fill = rss_kib().saturating_sub(rss0);
    s.close()?;
    let fill = started.elapsed();
    let cpu_fill = cpu_secs() - cpu0;
    let st = s.stats();
    drop(s);
    let used = allocated(&dir);
    println!("objects            {n} ({} kept)", st.disk.objects);
    println!(
        "memory after fill  {after_fill} KiB RSS over the start ({:.0} bytes per object)",
        (after_fill * 1024) as f64 / n as f64
    );
    println!(
        "fill               {fill:.2?} ({:.0} objects/s, one thread; {cpu_fill:.2} CPU s)",
        n as f64 / fill.as_secs_f64()
    );
    println!("stored bytes       {payload} (key strings + meta + bodies)");
    println!(
        "file system uses   {used} bytes: {:.3}x the stored bytes, {:.3}x the bodies",
        used as f64 / payload as f64,
        used as f64 / (n * body_len as u64) as f64
    );
    let started = Instant::now();
    let s = Store::open(cfg(), |_| {})?;
    let open = started.elapsed();
    println!(
        "reopen             {open:.2?} ({} objects indexed)",
        s.stats().disk.objects
    );
    let grown = rss_kib().saturating_sub(rss0);
    let started = Instant::now();
    let sample = SAMPLE.min(n);
    let mut found = 0u64;
    let mut buf = vec![0u8; body_len];
    for j in 0..sample {
        let k = key(j * n / sample);
        if let Some(h) = s.lookup(Key::of(k.as_bytes()), k.as_bytes()) {
            // Read the body too, as foyer's get returns the whole value.
            let got = h.body.read_at(0, &mut buf)?;
            found += u64::from(h.meta[..] == meta[..] && got == body_len && buf == body);
        }
    }
    let lookups = started.elapsed();
    println!("lookups            {found} of {sample} sampled keys found in {lookups:.2?}");
    println!(
        "index memory       {grown} KiB RSS over the start ({:.0} bytes per object)",
        (grown * 1024) as f64 / n as f64
    );
    println!(
        "result fill_per_s={:.0} fill_cpu_s={cpu_fill:.2} fs_ratio={:.3} reopen_s={:.3} lookups_s={:.3} found={found}/{sample} rss_per_object={:.0}",
        n as f64 / fill.as_secs_f64(),
        used as f64 / payload as f64,
        open.as_secs_f64(),
        lookups.as_secs_f64(),
        (grown * 1024) as f64 / n as f64
    );
    drop(s);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
