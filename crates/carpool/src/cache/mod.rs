//! `carpool cache`: layer 3 of the array, an RFC 9111 HTTP cache. The
//! frontends send it absolute-form requests (or clients origin-form ones
//! with `Host`); it answers from its memory or disk tier, or fetches from the
//! origin, stores and streams.
//!
//! One worker thread per core, each with its own SO_REUSEPORT listener,
//! runtime and origin connections; the store and the table of fills in
//! progress ([`fill`]) are shared. A request's phases are in [`serve`];
//! stored records in [`meta`]; RFC 9111 decisions in [`policy`]; origin
//! exchanges in [`origin`]; answers from stored objects in [`respond`].

pub mod fill;
mod hit;
pub mod meta;
mod miss;
pub mod origin;
mod pass;
pub mod policy;
pub mod respond;
pub mod serve;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cache_store::{DiskConfig, Store, StoreConfig};
use httpx::accesslog::{Sink, Writer};

use crate::config::settings::CacheSettings;
use fill::InFlight;

/// How often the disk tier syncs and records a checkpoint.
const DISK_SYNC_INTERVAL: Duration = Duration::from_secs(30);

/// What every worker shares.
pub struct Cache {
    /// Settings.
    pub settings: CacheSettings,
    /// The memory and disk tiers.
    pub store: Arc<Store>,
    /// Fills in progress (collapsed forwarding).
    pub inflight: Arc<InFlight>,
    /// The upstream proxy, resolved from the settings.
    pub upstream: Option<(String, u16)>,
    /// Our `Via` entry after the protocol version: `name (carpool)`.
    pub via: String,
    /// Our received-by name, for loop detection.
    pub via_name: String,
    /// Client connections open now.
    pub active_clients: Arc<AtomicUsize>,
    /// Tells workers and connections to stop.
    pub stop: tokio::sync::watch::Sender<bool>,
}

/// What one worker thread owns.
pub struct Worker {
    /// Shared state.
    pub cache: Arc<Cache>,
    /// Idle origin connections of this worker.
    pub pools: RefCell<origin::Pools>,
    /// This worker's access log buffer.
    pub log: RefCell<Writer>,
    /// Whether this worker is stopping.
    pub stop: Rc<crate::server::LocalStop>,
}

/// Opens the store and runs the cache until SIGTERM or SIGINT.
pub fn run(settings: CacheSettings) -> Result<()> {
    let upstream = settings
        .upstream_proxy
        .as_ref()
        .map(|hp| (hp.host.clone(), hp.port));
    let mut settings = settings;
    let mem_bytes = settings.mem.memory(1);
    if settings.dir.is_none() {
        // memory only: nothing larger than the memory tier takes can be stored
        settings.max_object_size = settings
            .max_object_size
            .min(settings.mem_max_object.min(mem_bytes));
    }
    let disk_bytes = settings.dir.as_ref().map(|d| settings.disk.disk(d, 1));
    let store_cfg = StoreConfig {
        mem_bytes,
        mem_max_object: settings.mem_max_object.min(mem_bytes),
        max_object_size: settings.max_object_size,
        disk: settings
            .dir
            .as_ref()
            .zip(disk_bytes)
            .map(|(dir, max_bytes)| DiskConfig {
                dir: dir.clone(),
                max_bytes,
                sync_interval: DISK_SYNC_INTERVAL,
            }),
    };
    let started = std::time::Instant::now();
    let mut last_report = started;
    let store = Store::open(store_cfg, |p| {
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = std::time::Instant::now();
            tracing::info!(progress = ?p, "loading the disk tier");
        }
    })
    .with_context(|| match &settings.dir {
        Some(d) => format!("opening the cache store in {}", d.display()),
        None => "opening the memory store".to_string(),
    })?;
    let stats = store.stats();
    tracing::info!(
        stats = ?stats,
        seconds = started.elapsed().as_secs_f64(),
        "store opened"
    );
    let via_name = settings
        .visible_hostname
        .clone()
        .unwrap_or_else(|| format!("{}:{}", crate::server::hostname(), settings.listen.port()));
    let sink = Sink::open(settings.access_log.as_deref(), settings.access_log_format)
        .with_context(|| format!("opening access log {:?}", settings.access_log))?;
    let listeners = crate::server::listeners(settings.listen, settings.workers)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let workers = listeners.len();
    let cache = Arc::new(Cache {
        store,
        inflight: Arc::new(InFlight::default()),
        upstream,
        via: format!("{via_name} (carpool)"),
        via_name,
        active_clients: Arc::new(AtomicUsize::new(0)),
        stop: tokio::sync::watch::channel(false).0,
        settings,
    });
    tracing::info!(
        listen = %cache.settings.listen,
        workers,
        mem = mem_bytes,
        disk = ?disk_bytes,
        dir = ?cache.settings.dir,
        "carpool cache started"
    );
    for (i, listener) in listeners.into_iter().enumerate() {
        let cache = cache.clone();
        let sink = sink.clone();
        std::thread::Builder::new()
            .name(format!("cache-{i}"))
            .spawn(move || {
                if let Err(e) = worker_main(cache, listener, sink) {
                    tracing::error!(worker = i, error = %e, "worker stopped");
                }
            })
            .context("spawning a worker thread")?;
    }
    crate::server::notify_ready();
    let r = crate::server::wait_for_signals(
        &cache.stop,
        &cache.active_clients,
        cache.settings.shutdown_timeout,
        &sink,
    );
    match cache.store.close() {
        Ok(()) => tracing::info!("store closed cleanly"),
        Err(e) => tracing::error!(error = %e, "closing the store"),
    }
    r
}

fn worker_main(cache: Arc<Cache>, listener: std::net::TcpListener, sink: Arc<Sink>) -> Result<()> {
    let stop = cache.stop.subscribe();
    crate::server::run_worker(
        listener,
        stop,
        move |stop| {
            Rc::new(Worker {
                stop,
                pools: RefCell::new(origin::Pools::new(
                    origin::MAX_POOLED_ORIGINS,
                    cache.settings.origin_idle_connections,
                    cache.settings.origin_idle_timeout,
                )),
                log: RefCell::new(Writer::new(sink)),
                cache,
            })
        },
        |w| w.log.borrow_mut().flush(),
        serve::serve,
    )
}
