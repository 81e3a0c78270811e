//! `carpool frontend`: layer 2 of the array. A role of the request layer
//! (the `proxy` crate): it routes each request by the routing core and
//! forwards it to the owning parent over pooled keep-alive connections,
//! failing over in the URL's own ranking ([`role`]), with parent health shared
//! by all workers ([`health`]); with `bounded_load`, a parent at its bound
//! yields to the next member of the URL's ranking ([`bound`]).

mod bound;
pub mod health;
mod metrics;
mod role;

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result};
use carp::Table;
use httpx::pool::Pool;

use crate::config::settings::{FrontendSettings, ListenMode, RoleRules};
use crate::config::Config;
use health::Health;

/// A parent as the frontend reaches it.
#[derive(Clone, Debug)]
pub struct ParentAddr {
    /// Name (hashed, logged in JSON lines).
    pub name: String,
    /// Host as configured (logged in Squid's native lines, as Squid does).
    pub host: String,
    /// Resolved address.
    pub addr: SocketAddr,
    /// Most connections one worker may hold open to it (`max_conn` shared out).
    pub max_conn_per_worker: usize,
    /// Its clients' credentials go to it (`pass_credentials`).
    pub pass_credentials: bool,
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
    /// Requests in flight per parent, when `bounded_load` is on.
    bound: Option<bound::Bound>,
    /// The share of URLs each parent owns when all are alive, worked out
    /// at the first scrape ([`Shared::expected_shares`]).
    expected_shares: std::sync::OnceLock<Vec<f64>>,
}

/// URLs sampled for the parents' expected shares (a few tens of
/// milliseconds, once; within half a percent).
const EXPECTED_SHARE_SAMPLES: u32 = 50_000;

impl Shared {
    /// The share of URLs each parent owns when all are alive, over a sample
    /// of [`EXPECTED_SHARE_SAMPLES`] URLs: computed on first use, never on
    /// the start path (a frontend starts serving at once).
    pub fn expected_shares(&self) -> &[f64] {
        self.expected_shares
            .get_or_init(|| crate::sample::expected_shares(&self.table, EXPECTED_SHARE_SAMPLES))
    }
}

/// One worker thread's frontend: the shared routing state, and its own
/// parent connections.
pub struct Worker {
    shared: Arc<Shared>,
    /// Idle parent connections of this worker.
    pool: RefCell<Pool>,
    /// Parent connections of this worker in use by a request, per parent.
    in_use: Vec<Rc<Cell<usize>>>,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let s = &shared.settings;
        Worker {
            pool: RefCell::new(Pool::new(
                shared.parents.len(),
                s.parent_idle_connections,
                s.parent_idle_timeout,
            )),
            in_use: (0..shared.parents.len())
                .map(|_| Rc::new(Cell::new(0)))
                .collect(),
            shared,
        }
    }
}

/// Command-line overrides of the configuration.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--workers`
    pub workers: Option<usize>,
    /// `--access-log`
    pub access_log: Option<httpx::accesslog::Destination>,
}

/// URL schemes a frontend forwards to its parents.
const SCHEMES: &[&str] = &["http", "https", "ftp"];

/// What the request layer needs of a frontend beyond its server settings.
fn rules(s: &FrontendSettings) -> RoleRules {
    RoleRules {
        origin_form: match s.mode {
            ListenMode::Forward => proxy::OriginForm::Refuse,
            ListenMode::Accel => proxy::OriginForm::Host {
                default_site: s.default_site.clone(),
                vhost: s.vhost,
            },
        },
        schemes: SCHEMES,
        upstream: proxy::Timeouts {
            connect: s.parent_connect_timeout,
            first_byte: s.parent_first_byte_timeout,
        },
        trust_client_marks: false,
    }
}

/// The parents of `config`, resolved, with each worker's share of their
/// `max_conn`.
fn parents(config: &Config, workers: usize) -> Result<Vec<ParentAddr>> {
    config
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
                host: p.host.clone(),
                addr,
                max_conn_per_worker,
                pass_credentials: p.pass_credentials,
            })
        })
        .collect()
}

/// Runs the frontend until SIGTERM or SIGINT.
pub fn run(config: Config, over: Overrides) -> Result<()> {
    let table = config.table()?;
    let mut settings = config.frontend.clone();
    if let Some(l) = over.listen {
        settings.server.listen = l;
    }
    if let Some(n) = over.workers {
        settings.server.workers = n;
    }
    if over.access_log.is_some() {
        settings.server.access_log = over.access_log;
    }
    let mut layer = settings.server.layer(rules(&settings));
    layer.worker_tick = Some(proxy::WorkerTick(crate::memory::collect_this_thread));
    let (server, listeners) = crate::process::open_server(&settings.server, layer)?;
    let workers = listeners.len();
    let parents = parents(&config, workers)?;
    let health = Arc::new(Health::new(
        parents.iter().map(|p| p.name.clone()).collect(),
        config.health.fail_limit,
    ));
    let shared = Arc::new(Shared {
        expected_shares: std::sync::OnceLock::new(),
        bound: settings
            .bounded_load
            .map(|c| bound::Bound::new(c, parents.len())),
        table,
        parents,
        health: health.clone(),
        settings,
    });
    tracing::info!(
        listen = %shared.settings.server.listen,
        workers,
        parents = shared.parents.len(),
        hash = %shared.table.mode(),
        bounded_load = shared.settings.bounded_load.unwrap_or(0.0),
        "carpool frontend started"
    );
    if let Some(cluster) = &config.cluster {
        crate::cluster::start(cluster, health.clone())?;
    }
    let for_workers = shared.clone();
    server
        .start("frontend", listeners, move || {
            Worker::new(for_workers.clone())
        })
        .context("spawning a worker thread")?;
    let addrs: Vec<SocketAddr> = shared.parents.iter().map(|p| p.addr).collect();
    let (hs, timeout) = (
        config.health.clone(),
        shared.settings.parent_connect_timeout,
    );
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
    crate::process::notify_ready();
    server.wait_for_signals()?;
    Ok(())
}
