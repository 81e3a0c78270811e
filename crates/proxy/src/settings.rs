//! What the request layer needs from a role's configuration: client limits
//! and access, how request targets are read, this hop's own header fields,
//! and the timeouts of the exchanges with upstreams.

use std::sync::Arc;
use std::time::Duration;

use httpx::headers::Xff;
use ipnet::IpNet;

use crate::access::Access;
use crate::rules::Rules;

/// How an origin-form request (`GET /path` with `Host`) is made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginForm {
    /// Refused (400): a forward proxy takes absolute-form requests only.
    Refuse,
    /// `http://` + the site + the path (an accelerator, a cache). The site
    /// is the `Host` (Squid's `vhost`), `default_site` for requests without
    /// one (or with an empty one), else 400; without `vhost`, a
    /// `default_site` is the site of every request whatever its `Host`
    /// (Squid's `accel defaultsite=X` without `vhost`).
    Host {
        /// The site of requests that name none (or of all, without `vhost`).
        default_site: Option<String>,
        /// The `Host` names the site.
        vhost: bool,
    },
}

/// This hop's name in `Via`: what it adds to the requests and responses it
/// passes, and how it recognises a request that already went through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    name: String,
    entry: String,
}

impl Via {
    /// The `Via` of a hop called `name` (received-by: `name (carpool)`).
    pub fn new(name: impl Into<String>) -> Via {
        let name = name.into();
        Via {
            entry: format!("{name} (carpool)"),
            name,
        }
    }

    /// The received-by name (loop detection).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entry after the protocol version: `name (carpool)`.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

/// Timeouts of one exchange with an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Name lookup and TCP connect, together.
    pub connect: Duration,
    /// From the request sent to the first byte of the response head.
    pub first_byte: Duration,
}

/// The layer's settings for one role's server.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Request head limits and client timeouts.
    pub limits: httpx::Limits,
    /// Simultaneous client connections, all workers together (503 beyond).
    pub max_client_connections: usize,
    /// Clients allowed to use the server; others get 403.
    pub allow_clients: Vec<IpNet>,
    /// Where requests may go, and who may PURGE.
    pub access: Access,
    /// The administrator's access rules (`http_access`), after `access`.
    pub rules: Arc<Rules>,
    /// The listener's name, for `myportname` ACLs.
    pub listener_name: String,
    /// The server's name in its metrics (`component`): `frontend`, or the
    /// cache's name.
    pub component: String,
    /// Believe a client that says, with `Carpool-Client: remote`, that its
    /// own client is not on its host (a cache behind carpool frontends: its
    /// allowed clients are those frontends).
    pub trust_client_marks: bool,
    /// Ports CONNECT may reach (ranges); others get 403.
    pub connect_ports: Vec<std::ops::RangeInclusive<u16>>,
    /// How origin-form requests are read.
    pub origin_form: OriginForm,
    /// URL schemes forwarded (lower case); others get 501.
    pub schemes: &'static [&'static str],
    /// This hop's `Via`.
    pub via: Via,
    /// `X-Forwarded-For` handling.
    pub x_forwarded_for: Xff,
    /// Connect and first-byte timeouts towards upstreams.
    pub upstream: Timeouts,
    /// Longest a request spends on its attempts until a response head
    /// arrives: no attempt starts after it, and an attempt waits for its
    /// first byte no longer than what is left of it.
    pub forward_timeout: Duration,
    /// Longest pause inside a body, either direction.
    pub body_idle_timeout: Duration,
    /// Longest silence both ways in a tunnel before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish
    /// after the listeners close.
    pub shutdown_timeout: Duration,
    /// Run on every worker thread about once a second, between requests:
    /// the binary's housekeeping of that thread (carpool asks its allocator
    /// to return what the thread freed).
    pub worker_tick: Option<WorkerTick>,
}

/// Housekeeping run on every worker thread ([`Settings::worker_tick`]). Not
/// configuration: two are always equal, so a reload never restarts for it.
#[derive(Clone, Copy)]
pub struct WorkerTick(pub fn());

impl PartialEq for WorkerTick {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for WorkerTick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerTick")
    }
}
