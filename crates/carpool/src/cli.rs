//! Command-line interface (clap): the commands and their options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// carpool: a CARP cache array — connection spreading, CARP frontends that
/// route each URL to one parent cache, and a farm of caching backends.
///
/// Squid administrators: `carpool route --squid-conf /etc/squid/squid.conf`
/// shows which parent your `cache_peer ... carp` lines pick for each URL,
/// bit-exact with Squid 5.
#[derive(Parser, Debug)]
#[command(name = "carpool", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the parents come from: a carpool.toml or a squid.conf.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct Source {
    /// carpool.toml with `hash = ...` and `[[parent]]` entries.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// squid.conf, read as `carpool import-squid` translates it: its
    /// `cache_peer ... parent ... carp` lines are the parents (`hash =
    /// "squid"`: the same choices as Squid 5), its `http_port` and
    /// `http_access` rules apply; what is not carried over is warned.
    #[arg(long = "squid-conf", value_name = "FILE")]
    pub squid_conf: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the parent chosen for each request read from stdin.
    ///
    /// Each input line is a request target (`http://host/path`, or `host:port`
    /// for CONNECT) or a whole request line (`GET http://host/path HTTP/1.1`).
    /// Each output line is the chosen parent's name; `REJECT <status>` when a
    /// Squid frontend would refuse the request itself (400, 414, 431, 501, 505…);
    /// `LOCAL` when Squid would answer it without a parent (its internal objects);
    /// `NONE` when no parent can be chosen.
    Route {
        #[command(flatten)]
        source: Source,
        /// Also print the normalized key and every parent's rank and score.
        #[arg(long)]
        explain: bool,
    },
    /// Show what changing the configuration from OLD to NEW costs the caches.
    ///
    /// Prints each parent's expected share under NEW and the fraction of URLs
    /// that change parent (per parent: kept, lost, gained), measured over a
    /// sample of URLs: read from stdin with `--stdin`, else generated.
    /// OLD and NEW may each be a carpool.toml or a squid.conf.
    Plan {
        /// The configuration in force now.
        old: PathBuf,
        /// The configuration you intend to deploy.
        new: PathBuf,
        /// Read the URL sample from stdin (one target or request line per line).
        #[arg(long)]
        stdin: bool,
        /// How many URLs to generate when not reading stdin.
        #[arg(long, default_value_t = 200_000)]
        samples: u64,
        /// Seed of the generated sample.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a CARP frontend: a forward proxy (or accelerator) that sends each
    /// request to the parent cache that owns its URL.
    ///
    /// Parents, hash mode and `[frontend]` settings come from the config; with
    /// `--squid-conf`, from the squid.conf's translation (its `cache_peer ...
    /// carp` lines, `http_port` and access rules; Squid's routing).
    Frontend {
        #[command(flatten)]
        source: Source,
        /// Listen address, overriding the config (`[frontend] listen`).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Worker threads (0: one per core), overriding the config.
        #[arg(long)]
        workers: Option<usize>,
        /// Access log: a file, `-` for stdout (the default) or `none`;
        /// overrides the config.
        #[arg(long, value_name = "FILE", value_parser = crate::config::settings::parse_access_log)]
        access_log: Option<httpx::accesslog::Destination>,
        /// Pid file, for `carpool rotate|stop --pid-file`.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Share parent health with other frontends by gossip on this UDP
        /// address (`[cluster] listen`, overriding the config).
        #[arg(long, value_name = "ADDR:PORT")]
        cluster_listen: Option<std::net::SocketAddr>,
        /// A node of the cluster to ask first (repeat for several;
        /// replaces `[cluster] seeds`).
        #[arg(long, value_name = "HOST:PORT")]
        cluster_seed: Vec<String>,
    },
    /// Run a caching backend: an RFC 9111 HTTP cache (memory and disk
    /// tiers) that the frontends send their requests to.
    ///
    /// `-c carpool.toml --name NAME` runs the cache that the array config
    /// lists as `[[parent]] name = NAME` (its address, `[cache]` settings and
    /// the entry's own `dir`/`mem`/`disk`); without `-c`, flags and defaults.
    Cache(CacheArgs),
    /// Print (or apply) kernel NAT rules that spread new connections to PORT
    /// evenly (or by weight) over separately run instances: layer 1 of the
    /// array without a load balancer, like the Squid wiki's iptables rules,
    /// but with the probabilities right.
    LbRules {
        /// The port clients connect to.
        #[arg(long)]
        port: u16,
        /// The instances' ports, e.g. 3128,3129,3130,3131.
        #[arg(long, value_delimiter = ',', required = true)]
        instances: Vec<u16>,
        /// Relative weights, one per instance (default: equal).
        #[arg(long, value_delimiter = ',')]
        weights: Option<Vec<u32>>,
        /// iptables rules (the default).
        #[arg(long, conflicts_with = "nftables")]
        iptables: bool,
        /// An nftables table instead.
        #[arg(long)]
        nftables: bool,
        /// PREROUTING for clients on other hosts, OUTPUT for clients on this one.
        #[arg(long, default_value = "PREROUTING")]
        chain: String,
        /// Install the rules (root).
        #[arg(long, conflicts_with = "remove")]
        apply: bool,
        /// Take the rules away again (root).
        #[arg(long)]
        remove: bool,
    },
    /// Validate a configuration without running anything: every error with
    /// file, line and key; exit status 0 when it is usable.
    Check {
        #[command(flatten)]
        source: Source,
    },
    /// Run the whole array on one machine: the frontend and every cache of
    /// the config whose host is this machine, each as a supervised child
    /// process (restarted if it crashes; SIGHUP reloads the config).
    ///
    /// Without `-c`, the embedded configuration (`carpool config default`):
    /// a frontend on 0.0.0.0:3128 and four caches on 127.0.0.1:4001-4004
    /// storing under ./carpool-data.
    Up {
        /// carpool.toml (default: the embedded configuration).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The client listener, overriding `[frontend] listen`.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// Data directory (each cache stores in DIR/<name>).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Pid file, for `carpool reload|rotate|stop` (default: DATA/carpool.pid).
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Directory of the access logs the config does not place (one per
        /// component: frontend.log, CACHE.log), over `log_dir`
        /// (default: DATA/logs).
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// The frontend shares parent health with other frontends by gossip
        /// on this UDP address (`[cluster] listen`, overriding the config).
        #[arg(long, value_name = "ADDR:PORT")]
        cluster_listen: Option<std::net::SocketAddr>,
        /// A node of the cluster to ask first (repeat for several; replaces
        /// `[cluster] seeds`).
        #[arg(long, value_name = "HOST:PORT")]
        cluster_seed: Vec<String>,
    },
    /// Reload the configuration of a running `carpool up` (SIGHUP, like
    /// `squid -k reconfigure`), wait for the outcome and print it: exit
    /// status 0 when the new configuration is in force, 1 when it was
    /// rejected (the array then runs on unchanged).
    Reload {
        #[command(flatten)]
        target: Target,
        /// Send the signal and return at once.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Make a running carpool reopen its access logs (SIGUSR1, like `squid
    /// -k rotate`); for logrotate's postrotate.
    Rotate {
        #[command(flatten)]
        target: Target,
    },
    /// Stop a running carpool (SIGTERM, like `squid -k shutdown`): the
    /// frontend drains, then the caches stop; waits until it has exited.
    Stop {
        #[command(flatten)]
        target: Target,
        /// How long to wait for it to exit, in seconds.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Show a running `carpool up`: its members (expected and actual share,
    /// alive or dead since when, in flight, latency), caches (hit ratio,
    /// tier fill, objects) and processes, from its admin listener's
    /// `/status` (Squid's `mgr:carp` and `mgr:info`, live).
    Status {
        /// The admin listener (default: `[admin] listen` of `-c FILE`, else
        /// 127.0.0.1:3180, the embedded configuration's).
        #[arg(long, value_name = "ADDR:PORT")]
        admin: Option<std::net::SocketAddr>,
        /// The carpool.toml `carpool up` runs (to find its admin listener).
        #[arg(
            short = 'c',
            long = "config",
            value_name = "FILE",
            conflicts_with = "admin"
        )]
        config: Option<PathBuf>,
        /// Redraw every `--interval` seconds until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with `--watch`.
        #[arg(long, default_value_t = 2, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
        /// Print the `/status` JSON as it is.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
    },
    /// Translate a squid.conf into a carpool.toml: a CARP frontend's (its
    /// `cache_peer ... carp` parents, `http_port`, access rules) or a
    /// cache's (`cache_mem`, `cache_dir`, `refresh_pattern`, its origin
    /// server, access rules...).
    ///
    /// The output uses `hash = "squid"`, so every URL keeps its parent, and
    /// reads exactly as `--squid-conf` reads the original. Each directive
    /// not carried over is listed with its file, line and why (on stderr and
    /// at the top of the output); access rules are never loosened.
    ImportSquid {
        /// The squid.conf (its `include`s are followed).
        squid_conf: PathBuf,
        /// Write the carpool.toml here instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

/// Which running carpool a control command addresses: its pid file, given
/// or found where `carpool up` with the same `-c`/`--data` writes it.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The pid file the server was started with (`--pid-file`).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// The carpool.toml `carpool up` runs (its data directory holds the pid file).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        conflicts_with = "pid_file"
    )]
    pub config: Option<PathBuf>,
    /// The data directory `carpool up` was given.
    #[arg(long, value_name = "DIR", conflicts_with = "pid_file")]
    pub data: Option<PathBuf>,
}

/// `carpool cache` options.
#[derive(Args, Debug)]
pub struct CacheArgs {
    /// carpool.toml describing the array.
    #[arg(short = 'c', long = "config", value_name = "FILE", requires = "name")]
    pub config: Option<PathBuf>,
    /// Which `[[parent]]` of the config this cache is; with
    /// --cluster-listen, also the name it announces (default without -c:
    /// HOSTNAME:PORT of its listener).
    #[arg(long)]
    pub name: Option<String>,
    /// Its weight when it announces itself (default: the `[[parent]]`
    /// entry's, else 1).
    #[arg(long, requires = "cluster_listen")]
    pub weight: Option<u32>,
    /// Join the cluster gossiping on this UDP address and announce this
    /// cache to the frontends with `announced_parents` (the config's
    /// `[cluster]` gives its id, seeds and interval).
    #[arg(long, value_name = "ADDR:PORT")]
    pub cluster_listen: Option<std::net::SocketAddr>,
    /// A node of the cluster to ask first (repeat for several; replaces
    /// `[cluster] seeds`).
    #[arg(long, value_name = "HOST:PORT", requires = "cluster_listen")]
    pub cluster_seed: Vec<String>,
    /// The cluster's id (default: the config's `[cluster] cluster_id`,
    /// else `carpool`).
    #[arg(long, value_name = "ID", requires = "cluster_listen")]
    pub cluster_id: Option<String>,
    /// Listen address (default 127.0.0.1:3129, or the parent's host:port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Disk tier directory (default: none, memory only).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Memory tier size, e.g. 256M, or `auto` (the default: an eighth
    /// of the memory available at start).
    #[arg(long, value_name = "SIZE", value_parser = crate::config::settings::Budget::parse)]
    pub mem: Option<crate::config::settings::Budget>,
    /// Disk tier size, e.g. 10G, or `auto` (the default: a quarter of
    /// the free space in --dir).
    #[arg(long, value_name = "SIZE", value_parser = crate::config::settings::Budget::parse)]
    pub disk: Option<crate::config::settings::Budget>,
    /// Worker threads (0: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Access log: a file, `-` for stdout (the default) or `none`.
    #[arg(long, value_name = "FILE", value_parser = crate::config::settings::parse_access_log)]
    pub access_log: Option<httpx::accesslog::Destination>,
    /// Pid file, for `carpool rotate|stop --pid-file`.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

/// `carpool config ...`
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the embedded configuration (what `carpool up` runs without
    /// `-c`) as a commented file to start from.
    Default,
}
