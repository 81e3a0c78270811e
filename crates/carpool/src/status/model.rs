//! What `GET /status` answers (JSON): the array's members as the frontends
//! see them, its caches, its processes, and a short history of request
//! rate and hit ratio. The admin listener writes it ([`super::history`]);
//! `carpool status` and the dashboard read it. Field names are part of
//! the interface.

use serde::{Deserialize, Serialize};

/// The whole array, now.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The routing table's hash mode (`squid`, `carp-v1`, `hrw`), when a
    /// frontend answered.
    pub hash: Option<String>,
    /// When the components were last asked, seconds since the epoch (0:
    /// not yet).
    pub sampled_at: f64,
    /// How far back "recent" goes, in seconds: actual shares, rates,
    /// latency quantiles and hit ratios cover this span (shorter just
    /// after the start).
    pub window_seconds: f64,
    /// Client requests per second the frontends answered over the window.
    pub requests_per_second: Option<f64>,
    /// The frontends' parents, in configuration order.
    pub members: Vec<Member>,
    /// The caches that answered.
    pub caches: Vec<Cache>,
    /// The processes `carpool up` runs.
    pub processes: Vec<Process>,
    /// Request rate and hit ratio, one point per poll, oldest first.
    pub history: Vec<Point>,
}

/// One parent of the frontends (summed over frontends when several).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// Its name (what is hashed).
    pub name: String,
    /// Where it is reached.
    pub address: String,
    /// It announced itself to the cluster (not in the config).
    #[serde(default)]
    pub announced: bool,
    /// Its weight in the table.
    pub weight: f64,
    /// The share of URLs it owns when every parent is alive.
    pub expected_share: Option<f64>,
    /// Its share of the requests answered by a parent over the window
    /// (`None` without any).
    pub actual_share: Option<f64>,
    /// Requests it answered over the window.
    pub requests: u64,
    /// Alive (every frontend agrees) or dead (one found it dead).
    pub alive: bool,
    /// When it last became alive or dead, seconds since the epoch.
    pub since: f64,
    /// Requests on it now.
    pub inflight: u64,
    /// Failed attempts on it over the window.
    pub failures: u64,
    /// Median time of its requests over the window (upper bound of the
    /// histogram bucket), seconds.
    pub p50_seconds: Option<f64>,
    /// 99th percentile, likewise.
    pub p99_seconds: Option<f64>,
}

/// One cache.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Cache {
    /// Its name.
    pub name: String,
    /// Hits over all requests it answered over the window (`None`
    /// without any).
    pub hit_ratio: Option<f64>,
    /// Requests it answered over the window.
    pub requests: u64,
    /// Objects stored (with a disk tier every object is on disk, and the
    /// memory tier holds copies of the hot ones: the larger count).
    pub objects: u64,
    /// Its tiers: `memory`, then `disk` when it has one.
    pub tiers: Vec<Tier>,
}

/// One tier of a cache.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Tier {
    /// `memory` or `disk`.
    pub name: String,
    /// Objects it holds.
    pub objects: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Its budget in bytes.
    pub capacity_bytes: u64,
    /// `bytes / capacity_bytes` (the disk: everything counted against its
    /// budget).
    pub fill: f64,
}

/// One process of the array.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Process {
    /// `frontend` or the cache's name.
    pub name: String,
    /// `frontend` or `cache`.
    pub kind: String,
    /// Its client listener.
    pub address: String,
    /// `running`, `restarting` or `stopped`.
    pub state: String,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// Seconds since it was started (last restart included), while it runs.
    pub uptime_seconds: Option<f64>,
    /// Times the supervisor restarted it.
    pub restarts: u32,
}

/// One poll of the history.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// When, seconds since the epoch.
    pub at: f64,
    /// Client requests per second the frontends answered since the poll
    /// before.
    pub requests_per_second: f64,
    /// Hits over requests of all caches since the poll before (`None`
    /// without requests).
    pub hit_ratio: Option<f64>,
}
