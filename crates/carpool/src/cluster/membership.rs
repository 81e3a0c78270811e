//! A frontend's record of the caches that announced themselves
//! ([`super::announce`]), which are the ones in its table: a cache is in
//! from its first announcement; out at once when it says it is leaving;
//! out when it has been gone from the cluster (its gossip silent) for the
//! whole grace period. While gone within the grace period it stays in the
//! table, dead: its URLs fail over in their own rankings, and a short
//! absence moves nothing. A cache whose gossip lives on while its HTTP
//! port fails is like a configured parent: in the table, dead, probed.
//!
//! The tracker only keeps the record; what a change means for a parent's
//! health ([`Change`]) is the frontend's to apply.

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
    known: BTreeMap<String, Known>,
}

impl Tracker {
    /// No cache known yet; `grace` as `[cluster] announced_grace`.
    pub fn new(grace: Duration) -> Tracker {
        Tracker {
            grace,
            known: BTreeMap::new(),
        }
    }

    /// The cluster's live nodes changed (or one's keys did): records
    /// caches that announced themselves, changed, left, or went; returns
    /// the changes that concern their health.
    pub fn update(&mut self, live: &BTreeMap<ChitchatId, NodeState>, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut here: BTreeMap<String, Announced> = BTreeMap::new();
        let mut leaving = BTreeSet::new();
        for (node, state) in live {
            match state.get(CACHE_KEY).map(decode) {
                Some(Some(Announcement::Here(a))) => {
                    if let Some(other) = here.get(&a.name).filter(|o| o.addr != a.addr) {
                        tracing::warn!(parent = %a.name, addr = %a.addr, other = %other.addr, node = %node.node_id, "two caches announce one name: the later node is used");
                    }
                    here.insert(a.name.clone(), a);
                }
                Some(Some(Announcement::Leaving(name))) => {
                    leaving.insert(name);
                }
                Some(None) => {
                    tracing::debug!(node = %node.node_id, "an unreadable cache announcement: ignored");
                }
                None => {}
            }
        }
        // a cache restarted under its name is here, whatever its former
        // self said
        for name in leaving.iter().filter(|n| !here.contains_key(*n)) {
            if self.known.remove(name).is_some() {
                tracing::info!(parent = %name, "announced cache leaving: out of the routing table");
            }
        }
        let present: BTreeSet<String> = here.keys().cloned().collect();
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
                    }
                }
                None => {
                    tracing::info!(parent = %name, addr = %a.addr, weight = a.weight, "cache announced itself");
                    changes.push(Change::Here(name.clone()));
                    self.known.insert(
                        name,
                        Known {
                            announced: a,
                            gone_since: None,
                        },
                    );
                }
            }
        }
        for (name, k) in self.known.iter_mut() {
            if !present.contains(name) && k.gone_since.is_none() {
                k.gone_since = Some(now);
                changes.push(Change::Gone(name.clone()));
                tracing::warn!(parent = %name, grace_s = self.grace.as_secs_f64(), "announced cache gone from the cluster: dead, out of the routing table if not back within the grace period");
            }
        }
        changes
    }

    /// The caches in the table now; forgets those gone past the grace
    /// period.
    pub fn decide(&mut self, now: Instant) -> Vec<Announced> {
        let grace = self.grace;
        self.known.retain(|name, k| {
            let forget = k.gone_since.is_some_and(|t| now.duration_since(t) >= grace);
            if forget {
                tracing::warn!(parent = %name, "announced cache gone for the whole grace period: out of the routing table");
            }
            !forget
        });
        self.known.values().map(|k| k.announced.clone()).collect()
    }
}
