//! The settings of the array's servers (what every server has, then the
//! frontend's and the cache's own) and of parent health: every limit and
//! timeout as a named value with a default a production proxy would want.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use httpx::accesslog::{Destination, Format};
use httpx::headers::Xff;
use ipnet::IpNet;
use proxy::access::{Access, LocalDestinations};
use proxy::rules::Rules;

use super::refresh::RefreshPatterns;

/// How a frontend listener treats request targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenMode {
    /// Forward proxy: absolute-form requests and CONNECT.
    #[default]
    Forward,
    /// Accelerator (reverse proxy): origin-form requests keyed by `Host`.
    Accel,
}

/// What every server (a frontend, a cache) is set up with: its listener
/// and workers, who may use it, its client limits, its `Via` and
/// `X-Forwarded-For`, its access log, and the timeouts of bodies, tunnels
/// and shutdown.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// Client listener.
    pub listen: SocketAddr,
    /// Worker threads, each with its own SO_REUSEPORT listener (0: one per core).
    pub workers: usize,
    /// Clients allowed to use the server; others get 403.
    pub allow_clients: Vec<IpNet>,
    /// Clients allowed to send PURGE; others get 403.
    pub purge_clients: Vec<IpNet>,
    /// Ports CONNECT may reach; others get 403.
    pub connect_ports: Vec<RangeInclusive<u16>>,
    /// Ports other requests may reach; others get 403.
    pub safe_ports: Vec<RangeInclusive<u16>>,
    /// Who may reach this host's loopback and link-local addresses.
    pub local_destinations: LocalDestinations,
    /// Other listeners of the array that are never a destination either
    /// (`carpool up`'s admin listener); set from the config, not a key.
    pub array_listeners: Vec<SocketAddr>,
    /// The administrator's access rules (`[[http_access]]` and `[[acl]]`),
    /// checked after the built-in checks; empty: none.
    pub access_rules: Arc<Rules>,
    /// The listener's name for `myportname` ACLs (set from the config, not a
    /// key): `frontend`, or the cache's `[[parent]]` name (`cache` for a
    /// cache started without one).
    pub listener_name: String,
    /// The listener's name as configured (`port_name`; Squid's
    /// `http_port ... name=`), over `listener_name`.
    pub port_name: Option<String>,
    /// `X-Forwarded-For` handling.
    pub x_forwarded_for: Xff,
    /// Name in our `Via` entries (loop detection); default: host name and port.
    pub visible_hostname: Option<String>,
    /// Where the access log goes; `None` when the config does not say:
    /// stdout for `carpool frontend` and `carpool cache`, a file per
    /// component in the log directory under `carpool up`.
    pub access_log: Option<Destination>,
    /// Access log line format.
    pub access_log_format: Format,
    /// Simultaneous client connections, all workers together (503 beyond).
    pub max_client_connections: usize,
    /// Request head limits and client timeouts.
    pub limits: httpx::Limits,
    /// Longest a request spends on its attempts until a response head
    /// arrives (Squid's `forward_timeout`): no retry starts after it.
    pub forward_timeout: Duration,
    /// Longest pause inside a body (either direction).
    pub body_idle_timeout: Duration,
    /// Longest silence in both directions of a CONNECT tunnel before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish
    /// after the listeners close.
    pub shutdown_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 3128)),
            workers: 0,
            allow_clients: default_allow_clients(),
            purge_clients: Vec::new(),
            connect_ports: vec![443..=443],
            safe_ports: Access::squid_safe_ports(),
            local_destinations: LocalDestinations::LocalClients,
            array_listeners: Vec::new(),
            access_rules: Arc::default(),
            listener_name: "frontend".into(),
            port_name: None,
            x_forwarded_for: Xff::Append,
            visible_hostname: None,
            access_log: None,
            access_log_format: Format::Squid,
            max_client_connections: 16_384,
            limits: httpx::Limits::default(),
            forward_timeout: Duration::from_secs(90),
            body_idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// An `access_log` value: `none`, `-` (stdout) or a file path.
pub fn parse_access_log(s: &str) -> Result<Destination, String> {
    match s.trim() {
        "" => Err("empty: give a file, `-` for stdout or `none`".into()),
        "none" => Ok(Destination::Off),
        "-" => Ok(Destination::Stdout),
        path => Ok(Destination::File(PathBuf::from(path))),
    }
}

/// What a role decides about requests that the server settings do not.
pub struct RoleRules {
    /// How origin-form requests are read.
    pub origin_form: proxy::OriginForm,
    /// URL schemes forwarded.
    pub schemes: &'static [&'static str],
    /// Timeouts towards its upstreams.
    pub upstream: proxy::Timeouts,
    /// Believe `Carpool-Client: remote` from allowed clients (a cache).
    pub trust_client_marks: bool,
}

impl ServerSettings {
    /// Our `Via` name: `visible_hostname`, else the host name and port.
    pub fn via(&self) -> proxy::Via {
        proxy::Via::new(match &self.visible_hostname {
            Some(name) => name.clone(),
            None => format!("{}:{}", hostname(), self.listen.port()),
        })
    }

    /// The request layer's settings for a server of a role with `rules`.
    pub fn layer(&self, rules: RoleRules) -> proxy::Settings {
        proxy::Settings {
            limits: self.limits.clone(),
            max_client_connections: self.max_client_connections,
            allow_clients: self.allow_clients.clone(),
            access: Access {
                safe_ports: self.safe_ports.clone(),
                own: std::iter::once(self.listen)
                    .chain(self.array_listeners.iter().copied())
                    .collect(),
                local_destinations: self.local_destinations,
                purge_clients: self.purge_clients.clone(),
            },
            rules: self.access_rules.clone(),
            listener_name: self
                .port_name
                .clone()
                .unwrap_or_else(|| self.listener_name.clone()),
            component: self.listener_name.clone(),
            trust_client_marks: rules.trust_client_marks,
            connect_ports: self.connect_ports.clone(),
            origin_form: rules.origin_form,
            schemes: rules.schemes,
            via: self.via(),
            x_forwarded_for: self.x_forwarded_for,
            upstream: rules.upstream,
            forward_timeout: self.forward_timeout,
            body_idle_timeout: self.body_idle_timeout,
            tunnel_idle_timeout: self.tunnel_idle_timeout,
            shutdown_timeout: self.shutdown_timeout,
            worker_tick: None,
        }
    }
}

/// This machine's host name (the default `Via` name and cluster node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "carpool".into())
}

/// The frontend's settings (`[frontend]` in carpool.toml).
#[derive(Clone, Debug, PartialEq)]
pub struct FrontendSettings {
    /// What every server has.
    pub server: ServerSettings,
    /// Forward proxy or accelerator.
    pub mode: ListenMode,
    /// Accelerator: site used when a request has no `Host` (with
    /// `vhost`), or for every request (without).
    pub default_site: Option<String>,
    /// Accelerator: the `Host` names the site (Squid's `vhost`); without
    /// it, a `default_site` is the site of every request.
    pub vhost: bool,
    /// Time to connect to a parent.
    pub parent_connect_timeout: Duration,
    /// Time from sending a request to a parent's first response byte.
    pub parent_first_byte_timeout: Duration,
    /// Idle keep-alive connections kept per parent and worker.
    pub parent_idle_connections: usize,
    /// How long an idle parent connection is kept.
    pub parent_idle_timeout: Duration,
    /// Consistent hashing with bounded loads (`bounded_load = C`, C > 1):
    /// a parent whose requests in flight would exceed `ceil(C × (total + 1)
    /// / alive parents)` yields to the next member of the URL's ranking.
    /// `None`: off.
    pub bounded_load: Option<f64>,
    /// The hosts `carpool up` runs a frontend on (empty: every host it
    /// runs on).
    pub hosts: Vec<String>,
}

/// Private and loopback ranges: the default `allow_clients` (not an open proxy).
pub fn default_allow_clients() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}

impl Default for FrontendSettings {
    fn default() -> Self {
        FrontendSettings {
            server: ServerSettings::default(),
            mode: ListenMode::Forward,
            default_site: None,
            vhost: true,
            parent_connect_timeout: Duration::from_secs(5),
            parent_first_byte_timeout: Duration::from_secs(60),
            parent_idle_connections: 1024,
            parent_idle_timeout: Duration::from_secs(30),
            bounded_load: None,
            hosts: Vec::new(),
        }
    }
}

/// The frontends' gossip (`[cluster]`): who this node is and whom it
/// asks first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Where it gossips (UDP).
    pub listen: SocketAddr,
    /// Nodes asked first (`ADDRESS:PORT` or `HOST:PORT`); the rest are
    /// learnt from them.
    pub seeds: Vec<String>,
    /// This node's name, unique in the cluster (default: `HOSTNAME:PORT`).
    pub node: String,
    /// Arrays with different ids never mix, even on one network.
    pub cluster_id: String,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// A frontend adds the caches that announce themselves to its table
    /// (and needs no `[[parent]]`).
    pub announced_parents: bool,
    /// How long an announced cache may be gone from the cluster, or dead,
    /// before a frontend takes it out of its table.
    pub announced_grace: Duration,
}

impl ClusterSettings {
    /// Gossip on `listen` with the defaults: no seeds, named
    /// `HOSTNAME:PORT`, cluster id `carpool`.
    pub fn new(listen: SocketAddr) -> ClusterSettings {
        ClusterSettings {
            listen,
            seeds: Vec::new(),
            node: format!("{}:{}", hostname(), listen.port()),
            cluster_id: DEFAULT_CLUSTER_ID.into(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            announced_parents: false,
            announced_grace: DEFAULT_ANNOUNCED_GRACE,
        }
    }
}

/// Default `[cluster] cluster_id`.
pub const DEFAULT_CLUSTER_ID: &str = "carpool";
/// Default `[cluster] gossip_interval`.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
/// Default `[cluster] announced_grace`.
pub const DEFAULT_ANNOUNCED_GRACE: Duration = Duration::from_secs(30);

/// How parents are declared dead and brought back (`[health]`).
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSettings {
    /// Consecutive connect failures or timeouts that mark a parent dead
    /// (Squid's `connect-fail-limit`, default 10).
    pub fail_limit: u32,
    /// How often a dead parent is probed.
    pub probe_interval: Duration,
    /// Probe kind.
    pub probe: Probe,
}

/// A health probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect succeeds. (A hung process passes: the kernel
    /// completes the connect.)
    Tcp,
    /// `OPTIONS * HTTP/1.1` gets any HTTP response, whatever its status:
    /// the parent's process reads and answers (the default).
    Answer,
    /// An HTTP request gets any response with a status below 500.
    Http {
        /// Request target sent to the parent (absolute-form).
        url: String,
    },
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            fail_limit: 10,
            probe_interval: Duration::from_secs(2),
            probe: Probe::Answer,
        }
    }
}

/// A cache's settings (`[cache]` in carpool.toml, overridden per cache by
/// its `[[parent]]` entry and by `carpool cache` flags).
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSettings {
    /// What every server has (the frontends connect to its listener).
    pub server: ServerSettings,
    /// Directory of the disk tier (none: memory only).
    pub dir: Option<PathBuf>,
    /// Memory tier size.
    pub mem: Budget,
    /// Disk tier size.
    pub disk: Budget,
    /// Largest object kept in the memory tier.
    pub mem_max_object: u64,
    /// Largest object stored at all; bigger ones pass through uncached.
    pub max_object_size: u64,
    /// Misses go through this HTTP proxy instead of straight to the origin.
    pub upstream_proxy: Option<HostPort>,
    /// Misses of these sites (or of every site) go to these origin servers
    /// instead of the address their host name resolves to.
    pub origin_servers: OriginServers,
    /// Time to connect to an origin.
    pub origin_connect_timeout: Duration,
    /// Time from sending a request to an origin's first response byte.
    pub origin_first_byte_timeout: Duration,
    /// Idle keep-alive connections kept per origin and worker.
    pub origin_idle_connections: usize,
    /// How long an idle origin connection is kept.
    pub origin_idle_timeout: Duration,
    /// Threads that write the disk tier (bounded: see `cache/diskio.rs`).
    pub disk_threads: usize,
    /// Objects whose stored record (URL key, response head, body and a
    /// 56-byte header) is at most this many bytes are packed into the disk
    /// tier's log; larger ones get a file each; 0: every object a file.
    pub disk_small_object: u64,
    /// Targeted cache-control fields (RFC 9213) this cache obeys instead of
    /// `Cache-Control`, first one first, lower case. Default: none for a
    /// forward proxy; `carpool-cache-control`, `cdn-cache-control` when the
    /// frontend is an accelerator ([`DEFAULT_TARGETED`]).
    pub targeted_cache_control: Vec<String>,
    /// How long past its freshness a stored object may be served while it
    /// is refreshed in the background, when the response does not say
    /// (`stale-while-revalidate`, RFC 5861). Zero: off.
    pub stale_while_revalidate: Duration,
    /// How long past its freshness a stored object may be served when the
    /// origin fails, when the response does not say (`stale-if-error`).
    /// Zero: off.
    pub stale_if_error: Duration,
    /// Squid's `refresh_pattern` lines (`[[cache.refresh_pattern]]`): the
    /// heuristic lifetime of responses without explicit freshness, by URL.
    /// Empty: carpool's own heuristic (10% of the time since
    /// `Last-Modified`, at most a day).
    pub refresh_patterns: RefreshPatterns,
    /// Announce this cache to a cluster (none: it is a configured parent).
    pub announce: Option<Announce>,
}

/// The targeted cache-control fields of the caches of an accelerator.
pub const DEFAULT_TARGETED: [&str; 2] = ["carpool-cache-control", "cdn-cache-control"];

/// A `host:port` (`[v6]:port` too), checked when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address (without brackets).
    pub host: String,
    /// Port (1..65535).
    pub port: u16,
}

/// Configured origin servers (Squid's `cache_peer ... originserver`): the
/// server of each site, by the URL's host, and one for every other site.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginServers {
    /// (host, lower case; its server), in the order configured.
    pub sites: Vec<(String, HostPort)>,
    /// For every site not in `sites`.
    pub default: Option<HostPort>,
}

impl OriginServers {
    /// The server configured for URLs of `host`, if any.
    pub fn for_host(&self, host: &[u8]) -> Option<&HostPort> {
        self.sites
            .iter()
            .find(|(h, _)| h.as_bytes().eq_ignore_ascii_case(host))
            .map(|(_, s)| s)
            .or(self.default.as_ref())
    }
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not HOST:PORT");
        let (h, p) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let host = h.trim_start_matches('[').trim_end_matches(']');
        let port = p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

/// Loopback only: the default `allow_clients` and `purge_clients` of a cache.
pub fn loopback_clients() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            server: ServerSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 3129)),
                // caches sit behind the frontends, which pass on only the
                // PURGEs of their own purge_clients
                allow_clients: loopback_clients(),
                purge_clients: loopback_clients(),
                listener_name: "cache".into(),
                ..ServerSettings::default()
            },
            dir: None,
            mem: Budget::Auto,
            disk: Budget::Auto,
            mem_max_object: 4 * MIB,
            max_object_size: 8 * 1024 * MIB,
            upstream_proxy: None,
            origin_servers: OriginServers::default(),
            origin_connect_timeout: Duration::from_secs(5),
            origin_first_byte_timeout: Duration::from_secs(60),
            origin_idle_connections: 32,
            origin_idle_timeout: Duration::from_secs(30),
            disk_threads: 4,
            disk_small_object: cache_store::DEFAULT_SMALL_OBJECT,
            targeted_cache_control: Vec::new(),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            refresh_patterns: RefreshPatterns::default(),
            announce: None,
        }
    }
}

/// A cache that announces itself to a cluster's frontends (`carpool cache
/// --cluster-listen`): where it gossips, and its name and weight there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// Its gossip node.
    pub cluster: ClusterSettings,
    /// The name the frontends hash it by.
    pub name: String,
    /// Its weight in their tables.
    pub weight: u32,
}

/// A tier's size: bytes, or `auto` (a share of what the machine has free).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Sized from the machine at start (see [`Budget::resolve`]).
    Auto,
    /// This many bytes.
    Bytes(u64),
}

/// Bounds of `auto` sizes, per cache.
const AUTO_MEM_MIN: u64 = 16 * MIB;
const AUTO_MEM_MAX: u64 = 4096 * MIB;
const AUTO_DISK_MIN: u64 = 64 * MIB;
const AUTO_DISK_MAX: u64 = 64 * 1024 * MIB;

impl Budget {
    /// Parses `auto` or a size.
    pub fn parse(s: &str) -> Result<Budget, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(Budget::Auto)
        } else {
            parse_size(s).map(Budget::Bytes)
        }
    }

    /// The memory tier's bytes: `auto` is an eighth of the memory available
    /// now, split between `caches` caches on this machine (16 MiB..4 GiB each).
    pub fn memory(self, caches: u64) -> u64 {
        match self {
            Budget::Bytes(n) => n,
            Budget::Auto => (mem_available().unwrap_or(2048 * MIB) / 8 / caches.max(1))
                .clamp(AUTO_MEM_MIN, AUTO_MEM_MAX),
        }
    }

    /// The disk tier's bytes: `auto` is a quarter of the space free in `dir`
    /// (or the nearest existing parent), split between `caches` caches
    /// (64 MiB..64 GiB each).
    pub fn disk(self, dir: &std::path::Path, caches: u64) -> u64 {
        match self {
            Budget::Bytes(n) => n,
            Budget::Auto => (free_space(dir).unwrap_or(4096 * MIB) / 4 / caches.max(1))
                .clamp(AUTO_DISK_MIN, AUTO_DISK_MAX),
        }
    }
}

/// `MemAvailable` from /proc/meminfo.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Bytes free for unprivileged users on the file system holding `dir`.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let mut d = dir;
    while !d.exists() {
        d = match d.parent() {
            Some(p) if p.as_os_str().is_empty() => std::path::Path::new("."),
            Some(p) => p,
            None => return None,
        };
    }
    let c = std::ffi::CString::new(d.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable
    // memory the size of a statvfs, which the call fills on success.
    let r = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Parses a size: bytes, or a number with a K, M, G or T suffix (powers of
/// 1024; an optional `B`/`iB` after it), e.g. `256M`, `1.5G`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: unknown size suffix {c:?} (K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 256M, 1.5G)"))?;
    let bytes = x * mult as f64;
    if !(x >= 0.0 && bytes.is_finite() && bytes < 9.0e18) {
        return Err(format!("{s:?} is not a size (e.g. 4096, 256M, 1.5G)"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::{parse_size, HostPort};

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("10k"), Ok(10 << 10));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn host_ports() {
        let hp: HostPort = "[::1]:3128".parse().unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("::1", 3128));
        assert!("proxy:0".parse::<HostPort>().is_err());
        assert!(":80".parse::<HostPort>().is_err());
        assert!("proxy".parse::<HostPort>().is_err());
    }
}
