//! `carpool cache`: layer 3 of the array, an RFC 9111 HTTP cache. A role of
//! the request layer (the `proxy` crate, see [`role`]): the frontends send it
//! absolute-form requests (or clients origin-form ones with `Host`); it
//! answers from its memory or disk tier, or fetches from the origin, stores
//! and streams.
//!
//! One worker thread per core, each with its own SO_REUSEPORT listener,
//! runtime and origin connections; the store and the table of fills in
//! progress ([`fill`]) are shared. What is stored: [`meta`] (records),
//! [`policy`] (RFC 9111 decisions); finding it: [`lookup`]; answering from
//! it: [`hit`] (stored objects, with the heads and ranges of [`respond`])
//! and [`follow`] (objects being filled); filling it: [`miss`]; removing
//! it: [`purge`]; where misses go: [`origin`].

mod directives;
mod diskio;
pub mod fill;
mod follow;
mod freshness;
mod hit;
mod lookup;
pub mod meta;
mod metrics;
mod miss;
pub mod origin;
pub mod policy;
mod purge;
pub mod respond;
mod role;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cache_store::{DiskConfig, Store, StoreConfig};

use crate::config::settings::{Announce, CacheSettings, HostPort, RoleRules};
use fill::InFlight;
use origin::Pools;

/// How often the disk tier syncs and records a checkpoint.
const DISK_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// A cache forwards `http` URLs only (`https` goes through CONNECT).
const SCHEMES: &[&str] = &["http"];

/// What every worker shares.
pub struct Cache {
    /// Settings.
    pub settings: CacheSettings,
    /// The request layer's settings (this cache's `Via`, timeouts).
    pub layer: Arc<proxy::Settings>,
    /// The memory and disk tiers.
    pub store: Arc<Store>,
    /// Fills in progress (collapsed forwarding).
    pub inflight: Arc<InFlight>,
    /// The upstream proxy misses go through, if any.
    pub upstream: Option<HostPort>,
    /// What the configuration adds to RFC 9111's rules.
    pub freshness: freshness::Rules,
    /// The disk threads (none without a disk tier).
    pub disk_io: Option<Arc<diskio::DiskIo>>,
    /// Counts of the cache's own doings, for its metrics.
    pub counts: metrics::Counts,
}

impl Cache {
    /// Where `req` goes upstream (see [`origin::Hop::for_uri`]).
    pub fn hop(&self, req: &proxy::Request) -> origin::Hop {
        origin::Hop::for_uri(
            &req.uri,
            req.is_connect(),
            &self.settings.origin_servers,
            self.upstream.as_ref(),
        )
    }
}

/// One worker thread's cache: the shared cache, and its own origin
/// connections (shared with the fills it runs).
#[derive(Clone)]
pub struct Worker {
    cache: Arc<Cache>,
    pools: Rc<RefCell<Pools>>,
}

impl Worker {
    fn new(cache: Arc<Cache>) -> Worker {
        let pools = Pools::new(
            origin::MAX_POOLED_ORIGINS,
            cache.settings.origin_idle_connections,
            cache.settings.origin_idle_timeout,
        );
        Worker {
            cache,
            pools: Rc::new(RefCell::new(pools)),
        }
    }
}

/// What the request layer needs of a cache beyond its server settings.
fn rules(s: &CacheSettings) -> RoleRules {
    RoleRules {
        origin_form: proxy::OriginForm::Host {
            default_site: None,
            vhost: true,
        },
        schemes: SCHEMES,
        upstream: proxy::Timeouts {
            connect: s.origin_connect_timeout,
            first_byte: s.origin_first_byte_timeout,
        },
        // its clients are the frontends, which say when theirs are remote
        trust_client_marks: true,
    }
}

/// Opens the store for `settings` (its sizes resolved), logging progress.
fn open_store(settings: &mut CacheSettings) -> Result<Arc<Store>> {
    let mem_bytes = settings.mem.memory(1);
    if settings.dir.is_none() {
        // memory only: nothing larger than the memory tier takes can be stored
        settings.max_object_size = settings
            .max_object_size
            .min(settings.mem_max_object.min(mem_bytes));
    }
    let disk = settings.dir.as_ref().map(|dir| DiskConfig {
        dir: dir.clone(),
        max_bytes: settings.disk.disk(dir, 1),
        sync_interval: DISK_SYNC_INTERVAL,
        small_object: settings.disk_small_object,
        progress_interval: crate::progress_interval(),
    });
    let store_cfg = StoreConfig {
        mem_bytes,
        mem_max_object: settings.mem_max_object.min(mem_bytes),
        max_object_size: settings.max_object_size,
        disk,
    };
    let started = std::time::Instant::now();
    // the store logs the progress of a slow index rebuild itself
    let store = Store::open(store_cfg, |_| {}).with_context(|| match &settings.dir {
        Some(d) => format!("opening the cache store in {}", d.display()),
        None => "opening the memory store".to_string(),
    })?;
    let st = store.stats();
    tracing::info!(
        memory_bytes = mem_bytes,
        disk_objects = st.disk.objects,
        disk_bytes = st.disk.bytes,
        dropped_corrupt = st.dropped_corrupt,
        dir = %settings.dir.as_ref().map_or("-".into(), |d| d.display().to_string()),
        seconds = format_args!("{:.3}", started.elapsed().as_secs_f64()),
        "store opened"
    );
    Ok(store)
}

/// Announces the cache listening on `listen` to the cluster of `a`, at
/// that address (a wildcard one: this host's address towards the first
/// seed).
fn announce(a: &Announce, listen: std::net::SocketAddr) -> Result<crate::cluster::Announcer> {
    let me = crate::cluster::announce::Announced {
        name: a.name.clone(),
        weight: a.weight,
        addr: crate::cluster::advertise(listen, &a.cluster.seeds),
    };
    crate::cluster::announce(&a.cluster, me)
}

/// Opens the store and runs the cache until SIGTERM or SIGINT (announced
/// to a cluster, when its settings say so, until then).
pub fn run(settings: CacheSettings) -> Result<()> {
    let mut settings = settings;
    let store = open_store(&mut settings)?;
    let mut layer = settings.server.layer(rules(&settings));
    layer.worker_tick = Some(proxy::WorkerTick(crate::memory::collect_this_thread));
    let (server, listeners) = crate::process::open_server(&settings.server, layer)?;
    let workers = listeners.len();
    let disk_io = match settings.dir {
        Some(_) => Some(
            diskio::DiskIo::start(settings.disk_threads).context("starting the disk threads")?,
        ),
        None => None,
    };
    let cache = Arc::new(Cache {
        disk_io,
        counts: metrics::Counts::default(),
        layer: server.settings().clone(),
        store,
        inflight: Arc::new(InFlight::default()),
        upstream: settings.upstream_proxy.clone(),
        freshness: freshness::Rules {
            targeted: settings.targeted_cache_control.clone(),
            stale_while_revalidate: settings.stale_while_revalidate,
            stale_if_error: settings.stale_if_error,
            refresh_patterns: settings.refresh_patterns.clone(),
        },
        settings,
    });
    let disk_threads = cache.disk_io.as_ref().map_or(0, |io| io.threads());
    tracing::info!(listen = %cache.settings.server.listen, workers, disk_threads, "carpool cache started");
    let for_workers = cache.clone();
    server
        .start("cache", listeners, move || Worker::new(for_workers.clone()))
        .context("spawning a worker thread")?;
    let announcer = match &cache.settings.announce {
        Some(a) => Some(announce(a, cache.settings.server.listen)?),
        None => None,
    };
    crate::process::notify_ready();
    let r = server.wait_for_signals_then(async move {
        if let Some(a) = announcer {
            a.leave().await;
        }
    });
    if let Some(io) = cache.disk_io.as_ref().filter(|io| io.refused() > 0) {
        tracing::info!(
            refused = io.refused(),
            "misses served without being stored because the disk was behind"
        );
    }
    match cache.store.close() {
        Ok(()) => tracing::info!("store closed cleanly"),
        Err(e) => tracing::error!(error = %e, "closing the store"),
    }
    Ok(r?)
}
