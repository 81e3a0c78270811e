//! The request layer's account of what a server did, for its metrics
//! (`GET /carpool-internal/metrics` from this host, in Prometheus' text
//! format): per upstream peer, the requests answered by status and result,
//! the failed attempts by kind, and the latency of connecting, of the
//! first response byte and of the whole request; per server, the client
//! connections accepted and open.
//!
//! Each worker thread counts in its own shard (a mutex only its worker and
//! a scrape ever take, so it is uncontended on the request path); a scrape
//! sums the shards into a [`Snapshot`], from which the role names its
//! families ([`crate::Role::metrics`]) and the layer adds the process's
//! own. [`Families`] builds them for the `prometheus-client` encoder.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::log::{Code, Record};
use crate::peer::{PeerKind, Problem};
use crate::upstream::Failure;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A latency histogram: counts per bucket of [`BUCKETS`] (and one above).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above the last bound.
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
    }

    /// The histogram whose cumulative buckets are `(upper bound, count)`,
    /// as Prometheus' text gives them (a bound that is not one of
    /// [`BUCKETS`] counts above the last; the sum is not known).
    pub fn from_cumulative(buckets: &[(f64, f64)]) -> Histogram {
        let mut sorted = buckets.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut h = Histogram::default();
        let mut below = 0.0;
        for (le, n) in sorted {
            let i = BUCKETS
                .iter()
                .position(|&b| b == le)
                .unwrap_or(BUCKETS.len());
            h.counts[i] += (n - below).max(0.0) as u64;
            below = below.max(n);
        }
        h
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// The `q` quantile (0..=1), as the upper bound of its bucket (the last
    /// bound for the overflow bucket); `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(BUCKETS[i.min(BUCKETS.len() - 1)]);
            }
        }
        Some(BUCKETS[BUCKETS.len() - 1])
    }
}

/// How an attempt on a peer failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No connection (refused, unreachable, name not resolved).
    Connect,
    /// A connect or first-byte timeout.
    Timeout,
    /// The connection closed before or inside the response head, or while
    /// the request body was sent.
    Reset,
    /// A response head that is not HTTP.
    BadResponse,
}

impl FailureKind {
    /// The kind of a failed attempt on a peer of `kind`; `None` for what
    /// is not the peer's failure (the client's, a limit, a refusal).
    pub(crate) fn of(f: &Failure, kind: PeerKind) -> Option<FailureKind> {
        match f {
            Failure::NotSent(e) if e.status == 504 => Some(FailureKind::Timeout),
            Failure::NotSent(_) => Some(FailureKind::Connect),
            Failure::Sent { error, .. } if error.status == 504 => Some(FailureKind::Timeout),
            Failure::Sent { error, .. } => {
                let closed = [
                    Problem::ClosedBeforeResponse,
                    Problem::ClosedInHead,
                    Problem::StoppedReadingBody,
                ];
                Some(if closed.iter().any(|p| kind.error(*p) == *error) {
                    FailureKind::Reset
                } else {
                    FailureKind::BadResponse
                })
            }
            Failure::Stale | Failure::AtLimit | Failure::Client(_) | Failure::Denied(_) => None,
        }
    }

    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::BadResponse => "bad_response",
        }
    }

    /// Every kind, in label order.
    pub const ALL: [FailureKind; 4] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Reset,
        FailureKind::BadResponse,
    ];
}

/// What one peer (or, under the name `""`, no peer) did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerStats {
    /// Requests answered, by status sent to the client, result code and
    /// the role's class ([`Record::class`]). A list: a server sees a few
    /// kinds, and a short scan costs less than hashing on every request.
    pub answered: Vec<((u16, Code, &'static str), u64)>,
    /// Requests waiting on it or being relayed from it now.
    pub in_flight: i64,
    /// Failed attempts, by kind (in [`FailureKind::ALL`] order).
    pub failures: [u64; 4],
    /// Time to connect (new connections only).
    pub connect: Histogram,
    /// Time from the start of an attempt to the response head.
    pub first_byte: Histogram,
    /// Time from the request head to the last byte sent to the client.
    pub total: Histogram,
    /// Bytes sent to clients (heads included).
    pub bytes_out: u64,
    /// Request body bytes received from clients.
    pub bytes_in: u64,
}

impl PeerStats {
    fn add(&mut self, o: &PeerStats) {
        for (k, v) in &o.answered {
            *self.answered_mut(*k) += v;
        }
        self.in_flight += o.in_flight;
        for (a, b) in self.failures.iter_mut().zip(&o.failures) {
            *a += b;
        }
        self.connect.add(&o.connect);
        self.first_byte.add(&o.first_byte);
        self.total.add(&o.total);
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
    }

    /// Requests answered.
    pub fn requests(&self) -> u64 {
        self.answered.iter().map(|(_, n)| n).sum()
    }

    /// The count of requests of kind `k`.
    fn answered_mut(&mut self, k: (u16, Code, &'static str)) -> &mut u64 {
        let i = match self.answered.iter().position(|(key, _)| *key == k) {
            Some(i) => i,
            None => {
                self.answered.push((k, 0));
                self.answered.len() - 1
            }
        };
        &mut self.answered[i].1
    }
}

/// One worker's counts. Peers in a list: a server has a few, and
/// comparing a short name costs less than hashing it on every request.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    peers: Vec<(Box<str>, PeerStats)>,
    accepted: u64,
}

impl Shard {
    /// The stats of `peer` (`""`: none).
    pub(crate) fn peer(&mut self, peer: &str) -> &mut PeerStats {
        let i = match self.peers.iter().position(|(name, _)| &**name == peer) {
            Some(i) => i,
            None => {
                self.peers.push((peer.into(), PeerStats::default()));
                self.peers.len() - 1
            }
        };
        &mut self.peers[i].1
    }

    /// A client connection was accepted.
    pub(crate) fn accepted(&mut self) {
        self.accepted += 1;
    }

    /// Counts a finished request (not the server's own pages).
    pub(crate) fn record(&mut self, r: &Record) {
        if r.internal {
            return;
        }
        let total = r.elapsed();
        let p = self.peer(r.peer());
        *p.answered_mut((r.status, r.code, r.class)) += 1;
        if r.in_flight {
            p.in_flight -= 1;
        }
        p.bytes_out += r.bytes;
        p.bytes_in += r.body_in;
        p.total.observe(total);
        if let Some(d) = r.first_byte {
            p.first_byte.observe(d);
        }
        if let Some(d) = r.connect_time {
            p.connect.observe(d);
        }
    }
}

/// The counts of a server, a shard per worker.
#[derive(Debug)]
pub struct Metrics {
    shards: Vec<Mutex<Shard>>,
}

impl Metrics {
    /// Counts for `workers` worker threads.
    pub fn new(workers: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            shards: (0..workers.max(1)).map(|_| Mutex::default()).collect(),
        })
    }

    /// Worker `i`'s shard.
    pub(crate) fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        let s = &self.shards[i % self.shards.len()];
        s.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sum of every worker's counts.
    pub fn snapshot(&self, open: usize) -> Snapshot {
        let mut snap = Snapshot {
            peers: HashMap::new(),
            accepted: 0,
            open: open as u64,
        };
        for i in 0..self.shards.len() {
            let s = self.shard(i);
            snap.accepted += s.accepted;
            for (name, p) in &s.peers {
                snap.peers.entry(name.to_string()).or_default().add(p);
            }
        }
        snap
    }
}

/// A server's counts at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Per peer name (`""`: requests answered without a peer).
    pub peers: HashMap<String, PeerStats>,
    /// Client connections accepted.
    pub accepted: u64,
    /// Client connections open.
    pub open: u64,
}

/// Label pairs of one sample.
pub type Labels = Vec<(Cow<'static, str>, String)>;

/// Families built at scrape time, from counts kept elsewhere: each a list
/// of (labels, value) rows.
#[derive(Debug)]
enum Rows {
    Counter(Vec<(Labels, f64)>),
    Gauge(Vec<(Labels, f64)>),
    Histogram(Vec<(Labels, Histogram)>),
}

/// A family of [`Rows`], as the encoder takes it.
#[derive(Debug)]
struct Family(Rows);

impl EncodeMetric for Family {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Rows::Counter(rows) => {
                for (labels, v) in rows {
                    encoder
                        .encode_family(labels)?
                        .encode_counter::<NoLabelSet, _, f64>(v, None)?;
                }
            }
            Rows::Gauge(rows) => {
                for (labels, v) in rows {
                    encoder.encode_family(labels)?.encode_gauge(v)?;
                }
            }
            Rows::Histogram(rows) => {
                for (labels, h) in rows {
                    // per-bucket counts: the encoder writes their running sums
                    let buckets: Vec<(f64, u64)> = h
                        .counts
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), *c))
                        .collect();
                    encoder
                        .encode_family(labels)?
                        .encode_histogram::<NoLabelSet>(h.sum, h.count(), &buckets, None)?;
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        match self.0 {
            Rows::Counter(_) => MetricType::Counter,
            Rows::Gauge(_) => MetricType::Gauge,
            Rows::Histogram(_) => MetricType::Histogram,
        }
    }

    fn is_empty(&self) -> bool {
        match &self.0 {
            Rows::Counter(r) | Rows::Gauge(r) => r.is_empty(),
            Rows::Histogram(r) => r.is_empty(),
        }
    }
}

/// The families of one scrape, registered in a `prometheus-client`
/// [`Registry`] whose every sample carries the server's `component` label.
pub struct Families {
    registry: Registry,
}

impl Families {
    /// Families whose samples are labelled `component="NAME"`.
    pub fn new(component: &str) -> Families {
        let labels = [(
            Cow::Borrowed("component"),
            Cow::Owned(component.to_string()),
        )];
        Families {
            registry: Registry::with_labels(labels.into_iter()),
        }
    }

    /// A counter family `NAME_total` (give the name without `_total`).
    pub fn counter(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
        self.registry
            .register(name, sentence(help), Family(Rows::Counter(rows)));
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
        self.registry
            .register(name, sentence(help), Family(Rows::Gauge(rows)));
    }

    /// A histogram family (in seconds).
    pub fn histogram(&mut self, name: &str, help: &str, rows: Vec<(Labels, Histogram)>) {
        self.registry
            .register(name, sentence(help), Family(Rows::Histogram(rows)));
    }

    /// The text (Prometheus' format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// `help` without its final period: the encoder writes one.
fn sentence(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

/// The `Content-Type` of the text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The families every server has: its client connections and its process
/// (CPU seconds, resident memory, open files, start time).
pub fn server_families(f: &mut Families, snap: &Snapshot, listener: &str) {
    let l = || vec![(Cow::Borrowed("listener"), listener.to_string())];
    f.counter(
        "carpool_connections_accepted",
        "Client connections accepted.",
        vec![(l(), snap.accepted as f64)],
    );
    f.gauge(
        "carpool_connections_open",
        "Client connections open.",
        vec![(l(), snap.open as f64)],
    );
    if let Some(p) = process() {
        f.counter(
            "process_cpu_seconds",
            "User and system CPU time.",
            vec![(vec![], p.cpu_seconds)],
        );
        f.gauge(
            "process_resident_memory_bytes",
            "Resident memory.",
            vec![(vec![], p.rss_bytes)],
        );
        f.gauge(
            "process_open_fds",
            "Open file descriptors.",
            vec![(vec![], p.open_fds)],
        );
        f.gauge(
            "process_start_time_seconds",
            "Start time, seconds since the epoch.",
            vec![(vec![], p.start_time)],
        );
    }
}

/// What /proc says of this process.
struct Process {
    cpu_seconds: f64,
    rss_bytes: f64,
    open_fds: f64,
    start_time: f64,
}

fn process() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the command (which may hold spaces), from field 3 on
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (ticks, page) = (ticks.max(1) as f64, page.max(1) as f64);
    let cpu = (num(11)? + num(12)?) / ticks; // utime, stime
    let start_ticks = num(19)?; // starttime, since boot
    let rss = num(21)? * page;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())?;
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    Some(Process {
        cpu_seconds: cpu,
        rss_bytes: rss,
        open_fds: fds,
        start_time: boot + start_ticks / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = Histogram::default();
        for ms in [1, 2, 3, 40, 2000] {
            h.observe(Duration::from_millis(ms));
        }
        h.observe(Duration::from_secs(100));
        assert_eq!(h.count(), 6);
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert_eq!(h.quantile(0.99), Some(60.0));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn families_encode_as_prometheus_text() {
        let mut f = Families::new("fe");
        let row = |p: &str, s: &str| {
            vec![
                (Cow::Borrowed("parent"), p.to_string()),
                (Cow::Borrowed("status"), s.to_string()),
            ]
        };
        f.counter(
            "carpool_frontend_requests",
            "Requests.",
            vec![(row("c1", "200"), 3.0), (row("", "403"), 1.0)],
        );
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(3));
        f.histogram("carpool_lat_seconds", "Latency.", vec![(vec![], h)]);
        let text = f.encode();
        assert!(
            text.contains("# TYPE carpool_frontend_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "carpool_frontend_requests_total{component=\"fe\",parent=\"c1\",status=\"200\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("carpool_lat_seconds_bucket{component=\"fe\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("carpool_lat_seconds_count{component=\"fe\"} 1"),
            "{text}"
        );
    }

    /// Each bucket counts the observations at or below its bound, once:
    /// the encoder sums the per-bucket counts itself.
    #[test]
    fn histogram_buckets_are_cumulative_once() {
        let mut h = Histogram::default();
        for ms in [3, 3, 40] {
            h.observe(Duration::from_millis(ms));
        }
        let mut f = Families::new("fe");
        f.histogram("lat_seconds", "Latency.", vec![(vec![], h)]);
        let text = f.encode();
        let bucket = |le: &str| -> f64 {
            let key = format!("lat_seconds_bucket{{component=\"fe\",le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(key.as_str()))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {text}"))
        };
        assert_eq!(bucket("0.0025"), 0.0, "{text}");
        assert_eq!(bucket("0.005"), 2.0, "{text}");
        assert_eq!(bucket("0.01"), 2.0, "{text}");
        assert_eq!(bucket("0.05"), 3.0, "{text}");
        assert_eq!(bucket("60"), 3.0, "{text}");
        assert_eq!(bucket("+Inf"), 3.0, "{text}");
        assert!(
            text.contains("lat_seconds_count{component=\"fe\"} 3\n"),
            "{text}"
        );
        assert!(text.starts_with("# HELP lat_seconds Latency.\n"), "{text}");
    }
}
