//! The cache's metric families: requests by result (`hit`, `miss`,
//! `refresh`, `pass`, `purge`, `error`; the tier of a hit in its own label),
//! named from the request layer's counts; collapsed requests, fill
//! failures, and per tier the objects, bytes, hits and evictions of the
//! store.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use proxy::log::Code;
use proxy::metrics::{Families, Labels, Snapshot};

use super::Cache;

/// What the cache counts itself (the layer counts the requests).
#[derive(Debug, Default)]
pub struct Counts {
    collapsed: AtomicU64,
    fill_failures: AtomicU64,
}

impl Counts {
    /// A request joined a fill in progress instead of asking the origin.
    pub fn collapsed(&self) {
        self.collapsed.fetch_add(1, Ordering::Relaxed);
    }

    /// A fill's answer from the origin could not be used.
    pub fn fill_failed(&self) {
        self.fill_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// The result and tier of a request counted by the layer.
fn result(status: u16, code: Code, class: &str) -> (&'static str, &'static str) {
    match (class, code) {
        ("purge", _) => ("purge", ""),
        ("pass", _) | (_, Code::Tunnel) => ("pass", ""),
        _ if status >= 500 || matches!(code, Code::None | Code::Denied) => ("error", ""),
        (_, Code::MemHit) => ("hit", "memory"),
        (_, Code::DiskHit) => ("hit", "disk"),
        (_, Code::ImsHit | Code::StaleHit) => ("hit", ""),
        (_, Code::RefreshUnmodified | Code::RefreshModified | Code::RefreshFailOld) => {
            ("refresh", "")
        }
        _ => ("miss", ""),
    }
}

/// Adds the cache's families to a scrape.
pub fn families(cache: &Cache, snap: &Snapshot, f: &mut Families) {
    let name = &cache.layer.component;
    let labels = |pairs: &[(&'static str, &str)]| -> Labels {
        let mut l = vec![(Cow::Borrowed("cache"), name.clone())];
        l.extend(
            pairs
                .iter()
                .map(|(k, v)| (Cow::Borrowed(*k), v.to_string())),
        );
        l
    };
    let mut by: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for r in ["hit", "miss", "refresh", "pass", "purge", "error"] {
        by.insert((r, ""), 0);
    }
    let mut revalidations = 0;
    for p in snap.peers.values() {
        for ((status, code, class), n) in &p.answered {
            *by.entry(result(*status, *code, class)).or_default() += n;
            if matches!(code, Code::RefreshUnmodified | Code::RefreshModified) {
                revalidations += n;
            }
        }
    }
    let rows = by
        .into_iter()
        .map(|((r, tier), n)| (labels(&[("result", r), ("tier", tier)]), n as f64))
        .collect();
    f.counter(
        "carpool_cache_requests",
        "Requests answered by the cache, by result (a hit's tier in `tier`).",
        rows,
    );
    let one = |v: u64| vec![(labels(&[]), v as f64)];
    f.counter(
        "carpool_cache_collapsed",
        "Requests that joined a fill in progress instead of asking the origin.",
        one(cache.counts.collapsed.load(Ordering::Relaxed)),
    );
    f.counter(
        "carpool_cache_revalidations",
        "Stored objects revalidated with the origin.",
        one(revalidations),
    );
    f.counter(
        "carpool_cache_fill_failures",
        "Fills whose answer from the origin could not be used.",
        one(cache.counts.fill_failures.load(Ordering::Relaxed)),
    );
    let s = cache.store.stats();
    let tiers = [("memory", s.memory), ("disk", s.disk)];
    let per_tier = |pick: fn(&cache_store::TierStats) -> u64| -> Vec<(Labels, f64)> {
        tiers
            .iter()
            .map(|(t, st)| (labels(&[("tier", t)]), pick(st) as f64))
            .collect()
    };
    f.gauge(
        "carpool_cache_objects",
        "Objects stored, per tier.",
        per_tier(|t| t.objects),
    );
    f.gauge(
        "carpool_cache_bytes",
        "Bytes stored, per tier.",
        per_tier(|t| t.bytes),
    );
    f.gauge(
        "carpool_cache_capacity_bytes",
        "The tier's budget in bytes (0 without the tier).",
        per_tier(|t| t.capacity),
    );
    f.counter(
        "carpool_cache_tier_hits",
        "Lookups answered, per tier.",
        per_tier(|t| t.hits),
    );
    f.counter(
        "carpool_cache_evictions",
        "Objects evicted to stay within the tier's budget.",
        per_tier(|t| t.evictions),
    );
    f.counter(
        "carpool_cache_lookup_misses",
        "Lookups that found nothing.",
        one(s.misses),
    );
    f.gauge(
        "carpool_cache_disk_used_bytes",
        "Everything counted against the disk budget.",
        one(s.disk_used_bytes),
    );
}
