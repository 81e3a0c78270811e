//! `carpool frontend`: layer 2 of the array. Accepts client connections
//! (one worker thread per core, each with its own SO_REUSEPORT listener and
//! single-threaded runtime, so the kernel spreads connections and no lock sits
//! on the hot path), routes each request by the routing core, and forwards it
//! to the owning parent over pooled keep-alive connections.
//!
//! Phases of a request live in [`proxy`]; CONNECT in [`tunnel`]; parent
//! health in [`health`].

pub mod health;
pub mod proxy;
pub mod tunnel;

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::{Context, Result};
use carp::Table;
use httpx::accesslog::{Sink, Writer};
use httpx::pool::Pool;

use crate::config::settings::FrontendSettings;
use crate::config::Config;
use health::Health;
use proxy::Worker;

/// A parent as the frontend reaches it.
#[derive(Clone, Debug)]
pub struct ParentAddr {
    /// Name (hashed, logged).
    pub name: String,
    /// Resolved address.
    pub addr: SocketAddr,
    /// Most connections one worker may hold open to it (`max_conn` shared out).
    pub max_conn_per_worker: usize,
}

/// What every worker shares.
pub struct Shared {
    /// The routing table.
    pub table: Table,
    /// Parents in configuration order (indexed like the table's members).
    pub parents: Vec<ParentAddr>,
    /// Parent health.
    pub health: Arc<Health>,
    /// Settings.
    pub settings: FrontendSettings,
    /// Our `Via` entry after the protocol version: `name (carpool)`.
    pub via: String,
    /// Our received-by name, for loop detection.
    pub via_name: String,
    /// Client connections open now.
    pub active_clients: Arc<AtomicUsize>,
    /// Tells workers and connections to stop (listeners close, idle
    /// keep-alive connections close, in-flight requests finish).
    pub stop: tokio::sync::watch::Sender<bool>,
}

/// Command-line overrides of the configuration.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--workers`
    pub workers: Option<usize>,
    /// `--access-log`
    pub access_log: Option<std::path::PathBuf>,
}

/// Runs the frontend until SIGTERM or SIGINT.
pub fn run(config: Config, over: Overrides) -> Result<()> {
    let table = config.table()?;
    let mut settings = config.frontend.clone();
    if let Some(l) = over.listen {
        settings.listen = l;
    }
    if let Some(n) = over.workers {
        settings.workers = n;
    }
    if over.access_log.is_some() {
        settings.access_log = over.access_log;
    }
    let listeners = crate::server::listeners(settings.listen, settings.workers)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let workers = listeners.len();
    let parents = config
        .parents
        .iter()
        .map(|p| {
            let addr = (p.host.as_str(), p.port)
                .to_socket_addrs()
                .with_context(|| {
                    format!(
                        "{}:{}: cannot resolve parent {} ({}:{})",
                        config.source.display(),
                        p.line,
                        p.name,
                        p.host,
                        p.port
                    )
                })?
                .next()
                .with_context(|| format!("parent {} ({}) has no address", p.name, p.host))?;
            let max_conn_per_worker = if p.max_conn == 0 {
                usize::MAX
            } else {
                (p.max_conn as usize).div_ceil(workers)
            };
            Ok(ParentAddr {
                name: p.name.clone(),
                addr,
                max_conn_per_worker,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let via_name = settings
        .visible_hostname
        .clone()
        .unwrap_or_else(|| format!("{}:{}", crate::server::hostname(), settings.listen.port()));
    let health = Arc::new(Health::new(
        parents.iter().map(|p| p.name.clone()).collect(),
        config.health.fail_limit,
    ));
    let sink = Sink::open(settings.access_log.as_deref(), settings.access_log_format)
        .with_context(|| format!("opening access log {:?}", settings.access_log))?;
    let shared = Arc::new(Shared {
        table,
        parents,
        health: health.clone(),
        settings,
        via: format!("{via_name} (carpool)"),
        via_name,
        active_clients: Arc::new(AtomicUsize::new(0)),
        stop: tokio::sync::watch::channel(false).0,
    });
    tracing::info!(
        listen = %shared.settings.listen,
        workers,
        parents = shared.parents.len(),
        hash = %shared.table.mode(),
        "carpool frontend started"
    );
    for (i, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let sink = sink.clone();
        std::thread::Builder::new()
            .name(format!("frontend-{i}"))
            .spawn(move || {
                if let Err(e) = worker_main(shared, listener, sink) {
                    tracing::error!(worker = i, error = %e, "worker stopped");
                }
            })
            .context("spawning a worker thread")?;
    }
    {
        let addrs: Vec<SocketAddr> = shared.parents.iter().map(|p| p.addr).collect();
        let hs = config.health.clone();
        let timeout = shared.settings.parent_connect_timeout;
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(health::prober(health, addrs, hs, timeout));
                }
            })
            .context("spawning the health prober")?;
    }
    crate::server::notify_ready();
    crate::server::wait_for_signals(
        &shared.stop,
        &shared.active_clients,
        shared.settings.shutdown_timeout,
        &sink,
    )
}

/// One worker: its own runtime, listener, pool and log buffer.
fn worker_main(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    sink: Arc<Sink>,
) -> Result<()> {
    let stop = shared.stop.subscribe();
    crate::server::run_worker(
        listener,
        stop,
        move |stop| {
            let settings = &shared.settings;
            Rc::new(Worker {
                stop,
                pool: RefCell::new(Pool::new(
                    shared.parents.len(),
                    settings.parent_idle_connections,
                    settings.parent_idle_timeout,
                )),
                log: RefCell::new(Writer::new(sink)),
                in_use: (0..shared.parents.len())
                    .map(|_| Rc::new(std::cell::Cell::new(0)))
                    .collect(),
                shared: shared.clone(),
            })
        },
        |w| w.log.borrow_mut().flush(),
        proxy::serve,
    )
}
