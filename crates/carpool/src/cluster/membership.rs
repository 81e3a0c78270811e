//! A frontend's record of the caches that announced themselves
//! ([`super::announce`]), which are the ones in its table: a cache is in
//! from its first announcement; out at once when it says it is leaving;
//! out when it has been gone from the cluster (its gossip silent) for the
//! whole grace period. While gone within the grace period it stays in the
//! table, dead: its URLs fail over in their own rankings, and a short
//! absence moves nothing. A cache whose gossip lives on while its HTTP
//! port fails is like a configured parent: in the table, dead, probed.
//!
//! A name that a configured parent has is never taken from an
//! announcement (the configured parent is used, and its health is not
//! touched). The tracker only keeps the record; what a change means for a
//! parent's health ([`Change`]) is the frontend's to apply.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chitchat::{ChitchatId, NodeState};

use super::announce::{decode, Announced, Announcement, CACHE_KEY};

/// What this frontend knows of one announced cache.
struct Known {
    announced: Announced,
    /// When it went from the cluster's live nodes (None: live).
    gone_since: Option<Instant>,
}

/// What happened to an announced cache, for the frontend's health of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It announced itself, for the first time or again after it had gone:
    /// take it at its word (alive).
    Here(String),
    /// Its gossip fell silent: dead from now (out after the grace period).
    Gone(String),
}

/// The announced caches a frontend knows of.
pub struct Tracker {
    grace: Duration,
    /// The configured parents' names: never taken from an announcement.
    configured: BTreeSet<String>,
    known: BTreeMap<String, Known>,
    /// `known` changed since [`Tracker::decide`] last said so.
    changed: bool,
    /// Conflicts already warned of (each once, not at every gossip change).
    warned: BTreeSet<String>,
}

impl Tracker {
    /// No cache known yet; `grace` as `[cluster] announced_grace`;
    /// `configured`: the names of the config's parents.
    pub fn new(grace: Duration, configured: impl IntoIterator<Item = String>) -> Tracker {
        Tracker {
            grace,
            configured: configured.into_iter().collect(),
            known: BTreeMap::new(),
            changed: false,
            warned: BTreeSet::new(),
        }
    }

    /// Logs `message` about `name` the first time this `key` comes up.
    fn warn_once(&mut self, key: String, name: &str, message: &str) {
        if self.warned.insert(key) {
            tracing::warn!(parent = %name, "{message}");
        }
    }

    /// The cluster's live nodes changed (or one's keys did): records
    /// caches that announced themselves, changed, left, or went; returns
    /// the changes that concern their health.
    pub fn update(&mut self, live: &BTreeMap<ChitchatId, NodeState>, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut here: BTreeMap<String, Announced> = BTreeMap::new();
        let mut leaving = BTreeSet::new();
        for state in live.values() {
            match state.get(CACHE_KEY).map(decode) {
                Some(Some(Announcement::Here(a))) if self.configured.contains(&a.name) => {
                    let name = a.name.clone();
                    self.warn_once(format!("configured {name}"), &name, "a cache announced itself under the name of a configured parent: the configured one is used");
                }
                Some(Some(Announcement::Here(a))) => {
                    if let Some(other) = here.get(&a.name).filter(|o| o.addr != a.addr) {
                        let key = format!("twice {} {} {}", a.name, other.addr, a.addr);
                        let name = a.name.clone();
                        self.warn_once(
                            key,
                            &name,
                            "two caches announce one name: the later node is used",
                        );
                    }
                    here.insert(a.name.clone(), a);
                }
                Some(Some(Announcement::Leaving(name))) => {
                    leaving.insert(name);
                }
                Some(None) => {
                    tracing::debug!(node = %state.chitchat_id().node_id, "an unreadable cache announcement: ignored");
                }
                None => {}
            }
        }
        // a cache restarted under its name is here, whatever its former
        // self said
        for name in leaving.iter().filter(|n| !here.contains_key(*n)) {
            if self.known.remove(name).is_some() {
                self.changed = true;
                tracing::info!(parent = %name, "announced cache leaving: out of the routing table");
            }
        }
        for (name, k) in self.known.iter_mut() {
            if !here.contains_key(name) && k.gone_since.is_none() {
                k.gone_since = Some(now);
                changes.push(Change::Gone(name.clone()));
                tracing::warn!(parent = %name, grace_s = self.grace.as_secs_f64(), "announced cache gone from the cluster: dead, out of the routing table if not back within the grace period");
            }
        }
        for (name, a) in here {
            match self.known.get_mut(&name) {
                Some(k) => {
                    if k.gone_since.take().is_some() {
                        tracing::info!(parent = %name, "announced cache back in the cluster");
                        changes.push(Change::Here(name.clone()));
                    }
                    if k.announced != a {
                        tracing::info!(parent = %name, addr = %a.addr, weight = a.weight, "announced cache changed its address or weight");
                        k.announced = a;
                        self.changed = true;
                    }
                }
                None => {
                    tracing::info!(parent = %name, addr = %a.addr, weight = a.weight, "cache announced itself");
                    changes.push(Change::Here(name.clone()));
                    let k = Known {
                        announced: a,
                        gone_since: None,
                    };
                    self.known.insert(name, k);
                    self.changed = true;
                }
            }
        }
        changes
    }

    /// Forgets the caches gone for the whole grace period; returns the
    /// caches that belong in the table when that set changed since the
    /// last call (`None`: as it was).
    pub fn decide(&mut self, now: Instant) -> Option<Vec<Announced>> {
        let grace = self.grace;
        let known = self.known.len();
        self.known.retain(|name, k| {
            let forget = k.gone_since.is_some_and(|t| now.duration_since(t) >= grace);
            if forget {
                tracing::warn!(parent = %name, "announced cache gone for the whole grace period: out of the routing table");
            }
            !forget
        });
        let forgot = self.known.len() != known;
        if !std::mem::take(&mut self.changed) && !forgot {
            return None;
        }
        Some(self.known.values().map(|k| k.announced.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::cluster::announce::encode;

    /// Live nodes, each with its `cache` value.
    fn live(values: &[(&str, String)]) -> BTreeMap<ChitchatId, NodeState> {
        values
            .iter()
            .enumerate()
            .map(|(i, (node, v))| {
                let id = ChitchatId::new(
                    node.to_string(),
                    0,
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                );
                let mut state = NodeState::for_test();
                state.set(CACHE_KEY, v);
                (id, state)
            })
            .collect()
    }

    fn here(name: &str, port: u16) -> String {
        encode(&Announcement::Here(Announced {
            name: name.into(),
            weight: 1,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }))
    }

    fn names(v: Option<Vec<Announced>>) -> Option<Vec<String>> {
        v.map(|v| v.into_iter().map(|a| a.name).collect())
    }

    /// In at the first announcement; dead but in when its gossip falls
    /// silent; forgotten after the grace period; back when it announces
    /// itself again; out at once when it says it is leaving. The table's
    /// set is given only when it changed.
    #[test]
    fn joins_goes_comes_back_and_leaves() {
        let grace = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut t = Tracker::new(grace, []);
        assert_eq!(
            t.update(&live(&[("n1", here("c1", 4001))]), t0),
            [Change::Here("c1".into())]
        );
        assert_eq!(names(t.decide(t0)), Some(vec!["c1".into()]));
        assert_eq!(t.decide(t0), None, "nothing changed");
        // silent: dead, still in the table within the grace period
        assert_eq!(t.update(&live(&[]), t0), [Change::Gone("c1".into())]);
        assert_eq!(t.decide(t0 + grace / 2), None);
        // back within it: alive, the table as it was
        assert_eq!(
            t.update(&live(&[("n1", here("c1", 4001))]), t0),
            [Change::Here("c1".into())]
        );
        assert_eq!(t.decide(t0 + grace), None);
        // silent for the whole grace period: out
        assert_eq!(t.update(&live(&[]), t0), [Change::Gone("c1".into())]);
        assert_eq!(names(t.decide(t0 + grace)), Some(vec![]));
        // again, then leaving: out at once, no health change
        t.update(&live(&[("n1", here("c1", 4001))]), t0);
        assert_eq!(names(t.decide(t0)), Some(vec!["c1".into()]));
        let leaving = encode(&Announcement::Leaving("c1".into()));
        assert_eq!(t.update(&live(&[("n1", leaving.clone())]), t0), []);
        assert_eq!(names(t.decide(t0)), Some(vec![]));
        // a restart under its name beats its former self's word
        t.update(&live(&[("n1", leaving), ("n2", here("c1", 4002))]), t0);
        let a = t.decide(t0).unwrap();
        assert_eq!((a.len(), a[0].addr.port()), (1, 4002));
    }

    /// A configured parent's name is never taken from an announcement,
    /// nor is its health touched when the impostor goes.
    #[test]
    fn a_configured_name_is_not_taken() {
        let t0 = Instant::now();
        let mut t = Tracker::new(Duration::from_secs(30), ["c1".to_string()]);
        let nodes = live(&[("n1", here("c1", 4001)), ("n2", here("c2", 4002))]);
        assert_eq!(t.update(&nodes, t0), [Change::Here("c2".into())]);
        assert_eq!(names(t.decide(t0)), Some(vec!["c2".into()]));
        assert_eq!(t.update(&live(&[]), t0), [Change::Gone("c2".into())]);
    }
}
