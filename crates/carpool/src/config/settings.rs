//! Frontend and health settings: every limit and timeout as a named value with
//! a default a production proxy would want.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use httpx::accesslog::Format;
use httpx::headers::Xff;
use ipnet::IpNet;

/// How a frontend listener treats request targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenMode {
    /// Forward proxy: absolute-form requests and CONNECT.
    #[default]
    Forward,
    /// Accelerator (reverse proxy): origin-form requests keyed by `Host`.
    Accel,
}

/// The frontend's settings (`[frontend]` in carpool.toml).
#[derive(Clone, Debug, PartialEq)]
pub struct FrontendSettings {
    /// Client listener.
    pub listen: SocketAddr,
    /// Worker threads, each with its own SO_REUSEPORT listener (0: one per core).
    pub workers: usize,
    /// Forward proxy or accelerator.
    pub mode: ListenMode,
    /// Accelerator: site used when a request has no `Host`.
    pub default_site: Option<String>,
    /// Clients allowed to use the proxy; others get 403.
    pub allow_clients: Vec<IpNet>,
    /// Ports CONNECT may reach; others get 403.
    pub connect_ports: Vec<u16>,
    /// `X-Forwarded-For` handling.
    pub x_forwarded_for: Xff,
    /// Name in our `Via` entries (loop detection); default: host name and port.
    pub visible_hostname: Option<String>,
    /// Access log file (none: no access log).
    pub access_log: Option<PathBuf>,
    /// Access log line format.
    pub access_log_format: Format,
    /// Simultaneous client connections, all workers together (503 beyond).
    pub max_client_connections: usize,
    /// Request head limits and client timeouts.
    pub limits: httpx::Limits,
    /// Time to connect to a parent.
    pub parent_connect_timeout: Duration,
    /// Time from sending a request to a parent's first response byte.
    pub parent_first_byte_timeout: Duration,
    /// Longest pause inside a body (either direction).
    pub body_idle_timeout: Duration,
    /// Idle keep-alive connections kept per parent and worker.
    pub parent_idle_connections: usize,
    /// How long an idle parent connection is kept.
    pub parent_idle_timeout: Duration,
    /// Longest silence in both directions of a CONNECT tunnel before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish
    /// after the listeners close.
    pub shutdown_timeout: Duration,
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
            listen: SocketAddr::from(([0, 0, 0, 0], 3128)),
            workers: 0,
            mode: ListenMode::Forward,
            default_site: None,
            allow_clients: default_allow_clients(),
            connect_ports: vec![443],
            x_forwarded_for: Xff::Append,
            visible_hostname: None,
            access_log: None,
            access_log_format: Format::Squid,
            max_client_connections: 16_384,
            limits: httpx::Limits::default(),
            parent_connect_timeout: Duration::from_secs(5),
            parent_first_byte_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
            parent_idle_connections: 64,
            parent_idle_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            tunnel_idle_timeout: Duration::from_secs(300),
        }
    }
}

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
    /// A TCP connect succeeds.
    Tcp,
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
            probe: Probe::Tcp,
        }
    }
}
