//! `carpool frontend`: layer 2 of the array. A role of the request layer
//! (the `proxy` crate): it routes each request by the routing core and
//! forwards it to the owning parent over pooled keep-alive connections,
//! failing over in the URL's own ranking ([`role`]), with parent health shared
//! by all workers ([`health`]); with `bounded_load`, a parent at its bound
//! yields to the next member of the URL's ranking ([`bound`]). The parents
//! and their table ([`members`]) change while it runs when caches announce
//! themselves to its cluster.

mod bound;
mod gossip;
pub mod health;
pub mod members;
mod metrics;
mod role;

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use carp::{Member, MAX_MEMBERS};
use httpx::pool::Pool;

use crate::config::settings::{FrontendSettings, ListenMode, RoleRules};
use crate::config::Config;
use health::Health;
use members::{Members, Parent, Routing};

/// What every worker shares.
pub struct Shared {
    /// The parents and their routing table.
    pub members: Arc<Members>,
    /// Parent health.
    pub health: Arc<Health>,
    /// Settings.
    pub settings: FrontendSettings,
    /// Requests in flight per parent, when `bounded_load` is on.
    bound: Option<bound::Bound>,
    /// The share of URLs each parent of a routing owns when all are alive,
    /// worked out at the first scrape after it changed
    /// ([`Shared::expected_shares`]).
    expected_shares: Mutex<Option<(u64, Arc<[f64]>)>>,
}

/// URLs sampled for the parents' expected shares (a few tens of
/// milliseconds, once per membership; within half a percent).
const EXPECTED_SHARE_SAMPLES: u32 = 50_000;

impl Shared {
    /// The share of URLs each parent of `routing` owns when all are alive,
    /// over a sample of [`EXPECTED_SHARE_SAMPLES`] URLs: computed on first
    /// use for each membership, never on the start path (a frontend starts
    /// serving at once).
    pub fn expected_shares(&self, routing: &Routing) -> Arc<[f64]> {
        let mut cached = self
            .expected_shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, shares)) = cached.as_ref().filter(|(g, _)| *g == routing.generation) {
            return shares.clone();
        }
        let shares: Arc<[f64]> = match routing.table() {
            Some(t) => crate::sample::expected_shares(t, EXPECTED_SHARE_SAMPLES).into(),
            None => Arc::new([]),
        };
        *cached = Some((routing.generation, shares.clone()));
        shares
    }
}

/// One worker thread's frontend: the shared routing state, its own copy
/// of the current routing, and its own parent connections.
pub struct Worker {
    shared: Arc<Shared>,
    /// The routing this worker's new requests use (a copy of the shared
    /// one, replaced when its generation changes).
    view: RefCell<Rc<Routing>>,
    /// Idle parent connections of this worker, by slot.
    pool: RefCell<Pool>,
    /// Parent connections of this worker in use by a request, by slot.
    in_use: Vec<Rc<Cell<usize>>>,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        let s = &shared.settings;
        Worker {
            view: RefCell::new(Rc::new((*shared.members.current()).clone())),
            pool: RefCell::new(Pool::new(
                MAX_MEMBERS,
                s.parent_idle_connections,
                s.parent_idle_timeout,
            )),
            in_use: (0..MAX_MEMBERS).map(|_| Rc::new(Cell::new(0))).collect(),
            shared,
        }
    }

    /// The current routing, copied from the shared one when that changed
    /// since the last request (idle connections to a parent whose address
    /// changed are dropped then).
    fn routing(&self) -> Rc<Routing> {
        let now = self.shared.members.generation();
        let mut view = self.view.borrow_mut();
        if view.generation != now {
            let next = Rc::new((*self.shared.members.current()).clone());
            let mut pool = self.pool.borrow_mut();
            for p in next.parents() {
                let moved = view
                    .parents()
                    .iter()
                    .any(|old| old.slot == p.slot && old.addr != p.addr);
                if moved {
                    pool.clear(p.slot.index());
                }
            }
            *view = next;
        }
        view.clone()
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
/// `max_conn` and their slots in `health`, each with its member of the
/// config's table.
fn parents(config: &Config, workers: usize, health: &Health) -> Result<Vec<(Parent, Member)>> {
    let members = match config.parents.is_empty() {
        true => Vec::new(),
        false => config.table()?.members().to_vec(),
    };
    config
        .parents
        .iter()
        .zip(members)
        .map(|(p, member)| {
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
            let slot = health
                .slot_of(&p.name)
                .with_context(|| format!("parent {} has no health slot", p.name))?;
            let parent = Parent {
                slot,
                name: p.name.clone(),
                host: p.host.clone(),
                addr,
                max_conn_per_worker,
                pass_credentials: p.pass_credentials,
                weight: member.weight,
                announced: false,
            };
            Ok((parent, member))
        })
        .collect()
}

/// Runs the frontend until SIGTERM or SIGINT.
pub fn run(config: Config, over: Overrides) -> Result<()> {
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
    let health = Arc::new(Health::new(
        config.parents.iter().map(|p| p.name.clone()).collect(),
        config.health.fail_limit,
    ));
    let mut layer = settings.server.layer(rules(&settings));
    layer.worker_tick = Some(proxy::WorkerTick(crate::memory::collect_this_thread));
    let (server, listeners) = crate::process::open_server(&settings.server, layer)?;
    let workers = listeners.len();
    let statics = parents(&config, workers, &health)?;
    let members = Arc::new(Members::new(config.hash, statics, health.clone()));
    let shared = Arc::new(Shared {
        expected_shares: Mutex::new(None),
        bound: settings.bounded_load.map(bound::Bound::new),
        members: members.clone(),
        health: health.clone(),
        settings,
    });
    let announced = config.cluster.as_ref().is_some_and(|c| c.announced_parents);
    tracing::info!(
        listen = %shared.settings.server.listen,
        workers,
        parents = config.parents.len(),
        announced_parents = announced,
        hash = %config.hash,
        bounded_load = shared.settings.bounded_load.unwrap_or(0.0),
        "carpool frontend started"
    );
    if let Some(cluster) = &config.cluster {
        gossip::start(cluster, health.clone(), members.clone())?;
    }
    let for_workers = shared.clone();
    server
        .start("frontend", listeners, move || {
            Worker::new(for_workers.clone())
        })
        .context("spawning a worker thread")?;
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
                let targets = move || members.probe_targets();
                rt.block_on(health::prober(health, targets, hs, timeout));
            }
        })
        .context("spawning the health prober")?;
    crate::process::notify_ready();
    server.wait_for_signals()?;
    Ok(())
}
