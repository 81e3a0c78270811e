//! The admin listener's memory of the array: each poll of the components'
//! metrics reduced to the counters that make rates, shares and latency
//! quantiles ([`Digest`]), a few minutes of them, and the latest samples
//! whole for the gauges (alive, in flight, objects…). [`History::status`]
//! turns them into what `GET /status` answers.

use std::collections::{BTreeMap, VecDeque};

use proxy::metrics::Histogram;

use super::exposition::Sample;
use super::model::{Cache, Member, Point, Process, Status, Tier};

/// How far back actual shares, rates, quantiles and hit ratios look.
pub const WINDOW_SECONDS: f64 = 60.0;
/// Polls kept for the history (at one poll every 2 s: ten minutes).
pub const HISTORY_POLLS: usize = 300;

/// A parent's counters in one poll, summed over the frontends.
#[derive(Clone, Debug, Default)]
struct ParentCounts {
    requests: f64,
    failures: f64,
    /// `(le, cumulative count)` of the request-time histogram.
    latency: Vec<(f64, f64)>,
}

/// A cache's counters in one poll.
#[derive(Clone, Copy, Debug, Default)]
struct CacheCounts {
    requests: f64,
    hits: f64,
}

/// One poll, reduced to counters.
#[derive(Clone, Debug, Default)]
struct Digest {
    at: f64,
    /// Every client request the frontends answered (`parent=""` too).
    requests: f64,
    parents: BTreeMap<String, ParentCounts>,
    caches: BTreeMap<String, CacheCounts>,
}

impl Digest {
    fn of(at: f64, samples: &[Sample]) -> Digest {
        let mut d = Digest {
            at,
            ..Digest::default()
        };
        for s in samples {
            match s.name.as_str() {
                "carpool_frontend_requests_total" => {
                    d.requests += s.value;
                    if !s.label("parent").is_empty() {
                        d.parent(s).requests += s.value;
                    }
                }
                "carpool_frontend_parent_failures_total" => d.parent(s).failures += s.value,
                "carpool_frontend_parent_request_seconds_bucket" => {
                    let le = match s.label("le") {
                        "+Inf" => f64::INFINITY,
                        v => v.parse().unwrap_or(f64::INFINITY),
                    };
                    let buckets = &mut d.parent(s).latency;
                    match buckets.iter_mut().find(|(b, _)| *b == le) {
                        Some((_, n)) => *n += s.value,
                        None => buckets.push((le, s.value)),
                    }
                }
                "carpool_cache_requests_total" => {
                    let c = d.caches.entry(s.label("cache").to_string()).or_default();
                    c.requests += s.value;
                    if s.label("result") == "hit" {
                        c.hits += s.value;
                    }
                }
                _ => {}
            }
        }
        d
    }

    fn parent(&mut self, s: &Sample) -> &mut ParentCounts {
        self.parents
            .entry(s.label("parent").to_string())
            .or_default()
    }
}

/// How much a counter rose from `base` to `now` (a component restarted in
/// between counts from zero again).
fn rise(now: f64, base: f64) -> f64 {
    if now >= base {
        now - base
    } else {
        now
    }
}

/// The array over the last minutes.
#[derive(Debug)]
pub struct History {
    /// When the admin started, seconds since the epoch: before the first
    /// poll every counter was zero.
    started_at: f64,
    polls: VecDeque<Digest>,
    latest: Vec<Sample>,
}

impl History {
    /// An empty history starting at `started_at` (seconds since the epoch).
    pub fn new(started_at: f64) -> History {
        History {
            started_at,
            polls: VecDeque::new(),
            latest: Vec::new(),
        }
    }

    /// When the last poll was taken (`None` before the first).
    pub fn last_at(&self) -> Option<f64> {
        self.polls.back().map(|d| d.at)
    }

    /// Records a poll taken at `at`: the samples of every component that
    /// answered.
    pub fn record(&mut self, at: f64, samples: Vec<Sample>) {
        self.polls.push_back(Digest::of(at, &samples));
        while self.polls.len() > HISTORY_POLLS {
            self.polls.pop_front();
        }
        self.latest = samples;
    }

    /// Gauges of the latest poll named `name`.
    fn gauges<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.latest.iter().filter(move |s| s.name == name)
    }

    /// What `GET /status` answers, with `processes` from the supervisor.
    pub fn status(&self, processes: Vec<Process>) -> Status {
        let zero = Digest {
            at: self.started_at,
            ..Digest::default()
        };
        let now = self.polls.back().unwrap_or(&zero);
        // the newest poll at least a window old; before that, the start
        // (when every counter was zero)
        let base = self
            .polls
            .iter()
            .rev()
            .find(|d| d.at <= now.at - WINDOW_SECONDS)
            .unwrap_or(&zero);
        let window = (now.at - base.at).max(0.0);
        let hash = self
            .gauges("carpool_frontend_info")
            .map(|s| s.label("hash").to_string())
            .next();
        Status {
            hash,
            sampled_at: self.last_at().unwrap_or(0.0),
            window_seconds: window,
            requests_per_second: (window > 0.0).then(|| rise(now.requests, base.requests) / window),
            members: self.members(now, base),
            caches: self.caches(now, base),
            processes,
            history: self.points(),
        }
    }

    fn members(&self, now: &Digest, base: &Digest) -> Vec<Member> {
        let none = ParentCounts::default();
        let mut members: Vec<Member> = Vec::new();
        for s in self.gauges("carpool_frontend_parent_up") {
            let name = s.label("parent");
            match members.iter_mut().find(|m| m.name == name) {
                // dead as soon as one frontend found it dead
                Some(m) => m.alive &= s.value >= 1.0,
                None => members.push(Member {
                    name: name.to_string(),
                    alive: s.value >= 1.0,
                    ..Member::default()
                }),
            }
        }
        for m in &mut members {
            let name = m.name.as_str();
            let mine = |family: &'static str| {
                self.latest
                    .iter()
                    .filter(move |s| s.name == family && s.label("parent") == name)
            };
            if let Some(info) = mine("carpool_frontend_parent_info").next() {
                m.address = info.label("address").to_string();
                m.announced = info.label("origin") == "announced";
            }
            m.weight = mine("carpool_frontend_parent_weight")
                .map(|s| s.value)
                .next()
                .unwrap_or(0.0);
            m.expected_share = mine("carpool_frontend_parent_expected_share")
                .map(|s| s.value)
                .next();
            m.since = mine("carpool_frontend_parent_state_since_seconds")
                .map(|s| s.value)
                .fold(0.0, f64::max);
            m.inflight = mine("carpool_frontend_parent_inflight")
                .map(|s| s.value)
                .sum::<f64>() as u64;
            let (n, b) = (
                now.parents.get(&m.name).unwrap_or(&none),
                base.parents.get(&m.name).unwrap_or(&none),
            );
            m.requests = rise(n.requests, b.requests) as u64;
            m.failures = rise(n.failures, b.failures) as u64;
            let recent: Vec<(f64, f64)> = n
                .latency
                .iter()
                .map(|(le, c)| {
                    let before = b.latency.iter().find(|x| x.0 == *le).map_or(0.0, |x| x.1);
                    (*le, rise(*c, before))
                })
                .collect();
            let recent = Histogram::from_cumulative(&recent);
            m.p50_seconds = recent.quantile(0.5);
            m.p99_seconds = recent.quantile(0.99);
        }
        let answered: u64 = members.iter().map(|m| m.requests).sum();
        for m in &mut members {
            m.actual_share = (answered > 0).then(|| m.requests as f64 / answered as f64);
        }
        members
    }

    fn caches(&self, now: &Digest, base: &Digest) -> Vec<Cache> {
        let mut caches: Vec<Cache> = Vec::new();
        for s in self.gauges("carpool_cache_objects") {
            let name = s.label("cache");
            if !caches.iter().any(|c| c.name == name) {
                caches.push(Cache {
                    name: name.to_string(),
                    ..Cache::default()
                });
            }
        }
        for c in &mut caches {
            let of = |family: &'static str, tier: &str| {
                self.gauges(family)
                    .find(|s| s.label("cache") == c.name && s.label("tier") == tier)
                    .map_or(0.0, |s| s.value)
            };
            let disk_used = self
                .gauges("carpool_cache_disk_used_bytes")
                .find(|s| s.label("cache") == c.name)
                .map_or(0.0, |s| s.value);
            let mut tiers = Vec::new();
            for tier in ["memory", "disk"] {
                let capacity = of("carpool_cache_capacity_bytes", tier);
                if capacity <= 0.0 {
                    continue;
                }
                let bytes = of("carpool_cache_bytes", tier);
                let used = if tier == "disk" { disk_used } else { bytes };
                tiers.push(Tier {
                    name: tier.to_string(),
                    objects: of("carpool_cache_objects", tier) as u64,
                    bytes: bytes as u64,
                    capacity_bytes: capacity as u64,
                    fill: used / capacity,
                });
            }
            let counts = CacheCounts::default();
            let n = now.caches.get(&c.name).unwrap_or(&counts);
            let b = base.caches.get(&c.name).unwrap_or(&counts);
            let requests = rise(n.requests, b.requests);
            c.requests = requests as u64;
            c.hit_ratio = (requests > 0.0).then(|| rise(n.hits, b.hits) / requests);
            // with a disk tier every object is on disk, the memory tier holding
            // copies of the hot ones
            c.objects = tiers.iter().map(|t| t.objects).max().unwrap_or(0);
            c.tiers = tiers;
        }
        caches
    }

    fn points(&self) -> Vec<Point> {
        self.polls
            .iter()
            .zip(self.polls.iter().skip(1))
            .filter(|(a, b)| b.at > a.at)
            .map(|(a, b)| {
                let dt = b.at - a.at;
                let (mut req, mut hits) = (0.0, 0.0);
                for (name, n) in &b.caches {
                    let p = a.caches.get(name).copied().unwrap_or_default();
                    req += rise(n.requests, p.requests);
                    hits += rise(n.hits, p.hits);
                }
                Point {
                    at: b.at,
                    requests_per_second: rise(b.requests, a.requests) / dt,
                    hit_ratio: (req > 0.0).then(|| hits / req),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::exposition::parse;

    fn frontend(requests: [(&str, f64); 2], fast: f64, slow: f64) -> String {
        let mut t = String::from("carpool_frontend_info{component=\"frontend\",hash=\"hrw\"} 1\n");
        for (i, (p, n)) in requests.iter().enumerate() {
            t += &format!(
                "carpool_frontend_requests_total{{component=\"frontend\",parent=\"{p}\",status=\"200\"}} {n}\n\
                 carpool_frontend_parent_up{{component=\"frontend\",parent=\"{p}\"}} {}\n\
                 carpool_frontend_parent_info{{component=\"frontend\",parent=\"{p}\",address=\"127.0.0.1:{}\",origin=\"{}\"}} 1\n\
                 carpool_frontend_parent_weight{{component=\"frontend\",parent=\"{p}\"}} 1\n\
                 carpool_frontend_parent_expected_share{{component=\"frontend\",parent=\"{p}\"}} 0.5\n\
                 carpool_frontend_parent_request_seconds_bucket{{component=\"frontend\",parent=\"{p}\",le=\"0.001\"}} {fast}\n\
                 carpool_frontend_parent_request_seconds_bucket{{component=\"frontend\",parent=\"{p}\",le=\"1\"}} {}\n\
                 carpool_frontend_parent_request_seconds_bucket{{component=\"frontend\",parent=\"{p}\",le=\"+Inf\"}} {}\n",
                u8::from(i == 0),
                3000 + i,
                if i == 0 { "config" } else { "announced" },
                fast + slow,
                fast + slow
            );
        }
        t
    }

    #[test]
    fn shares_rates_and_quantiles_cover_the_window() {
        let mut h = History::new(1000.0);
        h.record(
            1010.0,
            parse(&frontend([("a", 10.0), ("b", 30.0)], 40.0, 0.0)),
        );
        // a window later: a got 30 more, b 10 more, all slow
        h.record(
            1080.0,
            parse(&frontend([("a", 40.0), ("b", 40.0)], 40.0, 40.0)),
        );
        let s = h.status(vec![]);
        assert_eq!(s.hash.as_deref(), Some("hrw"));
        assert_eq!(s.window_seconds, 70.0);
        assert_eq!(s.requests_per_second, Some(40.0 / 70.0));
        let a = &s.members[0];
        assert_eq!(
            (a.name.as_str(), a.address.as_str()),
            ("a", "127.0.0.1:3000")
        );
        assert!(!a.announced && s.members[1].announced);
        assert_eq!(a.requests, 30);
        assert_eq!(a.actual_share, Some(0.75));
        assert!(a.alive && !s.members[1].alive);
        // the window's 40 requests were all in the 1 s bucket
        assert_eq!(a.p50_seconds, Some(1.0));
        assert_eq!(s.history.len(), 1);
        assert_eq!(s.history[0].requests_per_second, 40.0 / 70.0);
    }

    #[test]
    fn a_restarted_component_counts_from_zero() {
        assert_eq!(rise(5.0, 2.0), 3.0);
        assert_eq!(rise(1.0, 9.0), 1.0);
    }

    #[test]
    fn before_a_window_has_passed_counts_run_from_the_start() {
        let mut h = History::new(1000.0);
        h.record(1002.0, parse(&frontend([("a", 1.0), ("b", 3.0)], 4.0, 0.0)));
        let s = h.status(vec![]);
        assert_eq!(s.window_seconds, 2.0);
        assert_eq!(s.members[1].actual_share, Some(0.75));
        assert_eq!(s.members[1].p99_seconds, Some(0.001));
    }

    #[test]
    fn exposition_buckets_read_back_as_the_layers_histogram() {
        let h = Histogram::from_cumulative(&[(f64::INFINITY, 10.0), (0.1, 0.0), (1.0, 1.0)]);
        assert_eq!(h.count(), 10);
        assert_eq!(h.quantile(0.05), Some(1.0));
        // the overflow bucket's quantile is the last bound, as the layer says
        assert_eq!(h.quantile(0.5), Some(60.0));
        assert_eq!(
            Histogram::from_cumulative(&[(1.0, 0.0)]).quantile(0.5),
            None
        );
    }
}
