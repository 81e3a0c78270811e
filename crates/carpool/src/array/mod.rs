//! `carpool up`: the whole array on one machine from one config (the
//! embedded default when none is given). Each component (the frontend, each
//! cache whose host is this machine) runs as its own child process under a
//! supervisor ([`supervise`]) that holds their listening sockets, restarts
//! crashed children with back-off and reloads the config on SIGHUP; a small
//! status listener ([`admin`]) says what runs.

pub mod admin;
mod changes;
mod reload;
mod run;
pub mod supervise;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cache_store::progress::Bytes;
use std::time::Duration;

use crate::config::settings::Budget;
use crate::config::{self, Config};
use changes::Settings;
use httpx::accesslog::Destination;

/// The configuration `carpool up` runs without `-c`, and `carpool config
/// default` prints.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The data directory when neither `--data` nor `[cache] dir` says.
const DEFAULT_DATA: &str = "carpool-data";
/// Time a component gets beyond its own `shutdown_timeout` to exit (the
/// cache closes its store).
const STOP_MARGIN: Duration = Duration::from_secs(5);
/// The file (in the data directory) the children read: the validated
/// config in force, so a child restarted later reads what was validated.
const SNAPSHOT: &str = "carpool.running.toml";
/// The pid file (in the data directory) unless `--pid-file` says.
const PID_FILE: &str = "carpool.pid";

/// `carpool up` options.
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// carpool.toml (none: the embedded default).
    pub config: Option<PathBuf>,
    /// The client listener, over the config.
    pub listen: Option<SocketAddr>,
    /// The data directory, over the config.
    pub data: Option<PathBuf>,
    /// The pid file (default: DATA/carpool.pid).
    pub pid_file: Option<PathBuf>,
    /// Where access logs go that the config does not place, over `log_dir`.
    pub log_dir: Option<PathBuf>,
    /// The frontend's gossip address, over `[cluster] listen`.
    pub cluster_listen: Option<SocketAddr>,
    /// The frontend's cluster seeds, over `[cluster] seeds`.
    pub cluster_seeds: Vec<String>,
}

/// What a component is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `carpool frontend`.
    Frontend,
    /// `carpool cache`.
    Cache,
}

/// How to run one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// `frontend`, or the cache's name.
    pub name: String,
    /// Frontend or cache.
    pub kind: Component,
    /// `carpool` arguments.
    pub args: Vec<String>,
    /// Where it listens (the supervisor binds it).
    pub listen: SocketAddr,
    /// Listening sockets (one per worker).
    pub workers: usize,
    /// How long it gets to finish after SIGTERM before SIGKILL (its own
    /// `shutdown_timeout` and a margin).
    pub stop_timeout: Duration,
    /// One line for the start-up summary.
    pub summary: String,
    /// What it reads from the config: when equal across a reload, it
    /// keeps running.
    pub settings: Settings,
    /// A cache's tier sizes as resolved when it was planned.
    pub sizes: Option<Sizes>,
    /// Its access log.
    pub access_log: Destination,
}

/// A cache's tier sizes: the setting and the bytes it meant. `auto` is
/// resolved from the machine once; a reload keeps those bytes while the
/// setting, the number of caches sharing the machine and the directory
/// stay the same (free memory and disk change all the time, and a new
/// size means a restart that empties the memory tier).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// `mem` as configured.
    pub mem: Budget,
    /// `disk` as configured.
    pub disk: Budget,
    /// Caches on this machine sharing `auto`.
    pub caches: u64,
    /// The disk tier's directory.
    pub dir: PathBuf,
    /// Memory tier bytes.
    pub mem_bytes: u64,
    /// Disk tier bytes.
    pub disk_bytes: u64,
}

impl Sizes {
    /// The sizes of a cache, keeping those of `previous` where they still hold.
    fn resolve(
        mem: Budget,
        disk: Budget,
        caches: u64,
        dir: PathBuf,
        previous: Option<&Sizes>,
    ) -> Sizes {
        let same = |p: &&Sizes| p.caches == caches;
        let mem_bytes = match previous.filter(same).filter(|p| p.mem == mem) {
            Some(p) => p.mem_bytes,
            None => mem.memory(caches),
        };
        let disk_bytes = match previous
            .filter(same)
            .filter(|p| p.disk == disk && p.dir == dir)
        {
            Some(p) => p.disk_bytes,
            None => disk.disk(&dir, caches),
        };
        Sizes {
            mem,
            disk,
            caches,
            dir,
            mem_bytes,
            disk_bytes,
        }
    }
}

/// A config read and turned into the components to run.
pub struct Plan {
    /// The text the children read (written to the snapshot file).
    pub text: String,
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The pid file.
    pub pid_file: PathBuf,
    /// Components, caches first.
    pub specs: Vec<Spec>,
    /// The admin listener.
    pub admin: Option<SocketAddr>,
    /// Caches of the config on other machines (not started here).
    pub remote: Vec<String>,
}

/// The config text `opts` names (or the embedded one), read.
fn read_config(opts: &UpOptions) -> Result<(String, Config)> {
    let (text, source) = match &opts.config {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.clone(),
        ),
        None => (
            DEFAULT_CONFIG.to_string(),
            PathBuf::from("<embedded carpool.toml>"),
        ),
    };
    let config = config::parse_toml(&source, &text)?;
    Ok((text, config))
}

/// The data directory: `--data`, else `[cache] dir`, else ./carpool-data.
fn data_dir(opts: &UpOptions, config: &Config) -> PathBuf {
    opts.data
        .clone()
        .or_else(|| config.cache.dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA))
}

/// Where `carpool up` with `opts` keeps its pid file.
pub fn pid_file(opts: &UpOptions) -> Result<PathBuf> {
    if let Some(p) = &opts.pid_file {
        return Ok(p.clone());
    }
    if let Some(d) = &opts.data {
        // the config need not be read (nor be valid: a reload may be about
        // to reject it)
        return Ok(d.join(PID_FILE));
    }
    let (_, config) = read_config(opts)?;
    Ok(data_dir(opts, &config).join(PID_FILE))
}

/// Reads the config (file or embedded) and plans the components; the
/// `auto` sizes of `previous` (the running components) stay as they were.
pub fn plan(opts: &UpOptions, previous: &[Spec]) -> Result<Plan> {
    let (text, config) = read_config(opts)?;
    // (no parents only with [cluster] announced_parents: the config checks)
    if !config.parents.is_empty() {
        config.table()?;
    }
    let data = data_dir(opts, &config);
    let snapshot = data.join(SNAPSHOT);
    let pid_file = opts.pid_file.clone().unwrap_or_else(|| data.join(PID_FILE));
    let specs = specs(&config, &snapshot, &data, opts, previous)?;
    let remote = config
        .parents
        .iter()
        .filter(|p| {
            !specs
                .iter()
                .any(|s| s.kind == Component::Cache && s.name == p.name)
        })
        .map(|p| format!("{} ({}:{})", p.name, p.host, p.port))
        .collect();
    Ok(Plan {
        text,
        snapshot,
        pid_file,
        specs,
        admin: config.admin,
        remote,
    })
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn specs(
    config: &Config,
    snapshot: &Path,
    data: &Path,
    opts: &UpOptions,
    previous: &[Spec],
) -> Result<Vec<Spec>> {
    let snap = snapshot.display().to_string();
    let local: Vec<_> = config
        .parents
        .iter()
        .filter(|p| is_local(&p.host))
        .collect();
    let n = local.len() as u64;
    let log_dir = opts
        .log_dir
        .clone()
        .or_else(|| config.log_dir.clone())
        .unwrap_or_else(|| data.join("logs"));
    // a component's access log: the config's, else its own file
    let log = |said: &Option<Destination>, name: &str| match said {
        Some(d) => d.clone(),
        None => Destination::File(log_dir.join(format!("{name}.log"))),
    };
    let mut specs = Vec::new();
    for p in &local {
        let mut s = config.cache_settings(&p.name)?;
        let dir = if opts.data.is_some() || s.dir.is_none() {
            data.join(&p.name)
        } else {
            s.dir.clone().unwrap_or_else(|| data.join(&p.name))
        };
        let before = previous
            .iter()
            .find(|q| q.kind == Component::Cache && q.name == p.name)
            .and_then(|q| q.sizes.as_ref());
        let sizes = Sizes::resolve(s.mem, s.disk, n, dir.clone(), before);
        let (mem, disk) = (sizes.mem_bytes, sizes.disk_bytes);
        let workers = if s.server.workers == 0 {
            cores()
        } else {
            s.server.workers
        };
        // what the child will run with: the flags below over the config
        s.dir = Some(dir.clone());
        s.mem = Budget::Bytes(mem);
        s.disk = Budget::Bytes(disk);
        s.server.workers = workers;
        let access_log = log(&s.server.access_log, &p.name);
        s.server.access_log = Some(access_log.clone());
        specs.push(Spec {
            name: p.name.clone(),
            kind: Component::Cache,
            args: vec![
                "cache".into(),
                "-c".into(),
                snap.clone(),
                "--name".into(),
                p.name.clone(),
                "--dir".into(),
                dir.display().to_string(),
                "--mem".into(),
                mem.to_string(),
                "--disk".into(),
                disk.to_string(),
                "--access-log".into(),
                log_arg(&access_log),
            ],
            listen: s.server.listen,
            workers,
            stop_timeout: s.server.shutdown_timeout + STOP_MARGIN,
            summary: format!(
                "cache {} on {}: memory {}, disk {} in {}",
                p.name,
                s.server.listen,
                Bytes(mem),
                Bytes(disk),
                dir.display()
            ),
            settings: Settings::of(&s),
            sizes: Some(sizes),
            access_log,
        });
    }
    let hosts = &config.frontend.hosts;
    if !hosts.is_empty() && !hosts.iter().any(|h| is_local(h)) {
        // the frontend runs on other hosts of the array
        if specs.is_empty() {
            anyhow::bail!(
                "nothing of this array runs on this host: the frontend is on {} and no cache's host is an address of this machine",
                hosts.join(", ")
            );
        }
        one_log_each(&specs)?;
        return Ok(specs);
    }
    let fe = &config.frontend.server;
    let listen = opts.listen.unwrap_or(fe.listen);
    let workers = if fe.workers == 0 { cores() } else { fe.workers };
    let mut frontend = config.frontend.clone();
    frontend.server.listen = listen;
    frontend.server.workers = workers;
    let access_log = log(&frontend.server.access_log, "frontend");
    frontend.server.access_log = Some(access_log.clone());
    let mut cluster = config.cluster.clone();
    if let Some(l) = opts.cluster_listen {
        cluster
            .get_or_insert_with(|| config::settings::ClusterSettings::new(l))
            .listen = l;
    }
    if !opts.cluster_seeds.is_empty() {
        match cluster.as_mut() {
            Some(c) => c.seeds = opts.cluster_seeds.clone(),
            None => anyhow::bail!(
                "--cluster-seed: the frontend has no cluster (give --cluster-listen or [cluster] listen)"
            ),
        }
    }
    let mut cluster_args = Vec::new();
    if let Some(c) = &cluster {
        cluster_args.extend(["--cluster-listen".to_string(), c.listen.to_string()]);
        for seed in &c.seeds {
            cluster_args.extend(["--cluster-seed".to_string(), seed.clone()]);
        }
    }
    let reads = FrontendReads {
        hash: config.hash,
        parents: config.parents.iter().map(ParentReads::of).collect(),
        frontend,
        health: config.health.clone(),
        cluster: cluster.clone(),
    };
    specs.push(Spec {
        name: "frontend".into(),
        kind: Component::Frontend,
        args: vec![
            "frontend".into(),
            "-c".into(),
            snap,
            "--listen".into(),
            listen.to_string(),
            "--access-log".into(),
            log_arg(&access_log),
        ]
        .into_iter()
        .chain(cluster_args)
        .collect(),
        listen,
        workers,
        stop_timeout: fe.shutdown_timeout + STOP_MARGIN,
        summary: format!(
            "frontend on {listen} ({workers} workers, hash = \"{}\", {} parents)",
            config.hash,
            config.parents.len()
        ),
        settings: Settings::of(&reads),
        sizes: None,
        access_log,
    });
    one_log_each(&specs)?;
    Ok(specs)
}

/// An access log as a command-line value.
fn log_arg(d: &Destination) -> String {
    match d {
        Destination::Off => "none".into(),
        Destination::Stdout => "-".into(),
        Destination::File(p) => p.display().to_string(),
    }
}

/// Refuses two components writing one access log file: their lines would
/// mix (and not in time order).
fn one_log_each(specs: &[Spec]) -> Result<()> {
    for (i, a) in specs.iter().enumerate() {
        let Destination::File(path) = &a.access_log else {
            continue;
        };
        if let Some(b) = specs[..i].iter().find(|b| b.access_log == a.access_log) {
            anyhow::bail!(
                "{} and {} would write one access log, {}: give each its own \
                 (`{{name}}` in [cache] access_log is each cache's name)",
                b.name,
                a.name,
                path.display()
            );
        }
    }
    Ok(())
}

/// Creates the directories of the components' access log files.
pub fn make_log_dirs(specs: &[Spec]) -> Result<()> {
    for s in specs {
        if let Destination::File(path) = &s.access_log {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "{}: cannot create the log directory {}",
                        s.name,
                        dir.display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// What a frontend reads from the config.
#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct FrontendReads {
    hash: carp::Mode,
    parents: Vec<ParentReads>,
    frontend: config::settings::FrontendSettings,
    health: config::settings::HealthSettings,
    cluster: Option<config::settings::ClusterSettings>,
}

/// What a frontend reads of a parent (not where in the file it is).
#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct ParentReads {
    name: String,
    host: String,
    port: u16,
    weight: u32,
    carp_key: Option<carp::KeySpec>,
    max_conn: u32,
    pass_credentials: bool,
}

impl ParentReads {
    fn of(p: &config::Parent) -> ParentReads {
        ParentReads {
            name: p.name.clone(),
            host: p.host.clone(),
            port: p.port,
            weight: p.weight,
            carp_key: p.carp_key,
            max_conn: p.max_conn,
            pass_credentials: p.pass_credentials,
        }
    }
}

/// True when `host` names an address of this machine (it can be bound).
fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (host, 0)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default(),
    };
    ips.iter()
        .any(|ip| ip.is_loopback() || UdpSocket::bind((*ip, 0)).is_ok())
}

/// Runs the array until SIGTERM or SIGINT.
pub fn run(opts: UpOptions) -> Result<()> {
    let plan = plan(&opts, &[])?;
    run::run(plan, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_config_plans_four_caches_and_a_frontend() {
        let plan = plan(
            &UpOptions {
                data: Some(PathBuf::from("/tmp/carpool-plan-test")),
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        let caches: Vec<&str> = plan
            .specs
            .iter()
            .filter(|s| s.kind == Component::Cache)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(caches, ["cache1", "cache2", "cache3", "cache4"]);
        assert_eq!(plan.specs.last().unwrap().kind, Component::Frontend);
        assert_eq!(plan.admin, Some("127.0.0.1:3180".parse().unwrap()));
        assert!(plan.remote.is_empty());
        let c1 = &plan.specs[0];
        assert!(c1
            .args
            .contains(&"/tmp/carpool-plan-test/cache1".to_string()));
    }

    #[test]
    fn caches_on_other_hosts_are_not_started_here() {
        assert!(is_local("127.0.0.1"));
        assert!(is_local("::1"));
        assert!(!is_local("192.0.2.1")); // TEST-NET-1: never ours
        assert_eq!(Bytes(1536 * 1024 * 1024).to_string(), "1.5 GiB");
    }

    fn plan_text(name: &str, text: &str) -> Result<Plan> {
        let dir = std::env::temp_dir().join(format!("carpool-logs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("carpool.toml");
        std::fs::write(&conf, text).unwrap();
        plan(
            &UpOptions {
                config: Some(conf),
                data: Some(dir.join("data")),
                ..Default::default()
            },
            &[],
        )
    }

    /// Issue 17: one config for many hosts: `[frontend] hosts` says where
    /// the frontend runs; a host with neither it nor a cache refuses.
    #[test]
    fn each_host_runs_its_own_part_of_a_many_host_config() {
        let parents = "[[parent]]\nname = \"here\"\nhost = \"127.0.0.1\"\nport = 1\n\
                       [[parent]]\nname = \"there\"\nhost = \"198.51.100.2\"\nport = 2\n";
        let names = |p: &Plan| p.specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let elsewhere = format!("[frontend]\nhosts = [\"198.51.100.1\"]\n{parents}");
        assert_eq!(
            names(&plan_text("fe-elsewhere", &elsewhere).unwrap()),
            ["here"]
        );
        let here = format!("[frontend]\nhosts = [\"198.51.100.1\", \"127.0.0.1\"]\n{parents}");
        assert_eq!(
            names(&plan_text("fe-here", &here).unwrap()),
            ["here", "frontend"]
        );
        let none = "[frontend]\nhosts = [\"198.51.100.1\"]\n[[parent]]\nname = \"there\"\nhost = \"198.51.100.2\"\nport = 2\n";
        let Err(e) = plan_text("nothing", none) else {
            panic!("a host with nothing to run is refused");
        };
        assert!(
            e.to_string().contains(
                "nothing of this array runs on this host: the frontend is on 198.51.100.1"
            ),
            "{e}"
        );
    }

    /// With `[frontend] hosts`, a `[cluster]` without seeds gossips with
    /// the frontend hosts.
    #[test]
    fn the_frontend_hosts_are_the_default_seeds() {
        let text = "[frontend]\nhosts = [\"10.0.1.10\", \"fe2.example\", \"::1\"]\n[cluster]\nlisten = \"0.0.0.0:7946\"\n\
                    [[parent]]\nname = \"p\"\nhost = \"127.0.0.1\"\nport = 1\n";
        let c = crate::config::parse_toml(std::path::Path::new("t.toml"), text).unwrap();
        let seeds = c.cluster.unwrap().seeds;
        assert_eq!(seeds, ["10.0.1.10:7946", "fe2.example:7946", "[::1]:7946"]);
    }

    fn logs(plan: &Plan) -> Vec<String> {
        plan.specs.iter().map(|s| log_arg(&s.access_log)).collect()
    }

    #[test]
    fn every_component_has_its_own_access_log() {
        let parents = "[[parent]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = 1\n\
                       [[parent]]\nname = \"b\"\nhost = \"127.0.0.1\"\nport = 2\n";
        let p = plan_text("default", parents).unwrap();
        let data = p.snapshot.parent().unwrap().to_path_buf();
        let want: Vec<String> = ["a", "b", "frontend"]
            .iter()
            .map(|n| {
                data.join("logs")
                    .join(format!("{n}.log"))
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(logs(&p), want);
        let p = plan_text(
            "placed",
            &format!("log_dir = \"/l\"\n[cache]\naccess_log = \"/c/{{name}}.log\"\n{parents}access_log = \"none\"\n"),
        )
        .unwrap();
        assert_eq!(logs(&p), ["/c/a.log", "none", "/l/frontend.log"]);
        let Err(e) = plan_text(
            "shared",
            &format!("[cache]\naccess_log = \"/c/all.log\"\n{parents}"),
        ) else {
            panic!("a shared access log is refused");
        };
        assert!(
            e.to_string()
                .contains("a and b would write one access log, /c/all.log"),
            "{e}"
        );
    }
}
