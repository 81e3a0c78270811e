//! The frontend's parents: the static ones of the config and, with
//! `[cluster] announced_parents`, the caches that announced themselves
//! ([`crate::cluster`]). Together they make one [`Routing`]: a table and
//! its parents, replaced whole when a cache joins or leaves, that each
//! worker picks up at its next request (one atomic load per request tells
//! it whether to). A request keeps the routing it started with to its end.
//!
//! The table lists the static parents in configuration order, then the
//! announced ones by name: a config listing the same parents in that
//! order gives the same table, which is how `carpool route` shows where
//! URLs go once a cache has joined.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use carp::{Member, Mode, RequestUri, Table};

use super::health::{Health, Slot};
use crate::cluster::announce::Announced;

/// A parent as the frontend reaches it.
#[derive(Clone, Debug, PartialEq)]
pub struct Parent {
    /// Its slot in health, bounded-load counts and pools.
    pub slot: Slot,
    /// Name (hashed, logged in JSON lines).
    pub name: String,
    /// Host as configured (logged in Squid's native lines, as Squid does).
    pub host: String,
    /// Resolved address.
    pub addr: SocketAddr,
    /// Most connections one worker may hold open to it (`max_conn` shared
    /// out; unlimited for an announced cache).
    pub max_conn_per_worker: usize,
    /// Its clients' credentials go to it (`pass_credentials`).
    pub pass_credentials: bool,
    /// Its weight in the table (its share of the bounded load too).
    pub weight: u32,
    /// Announced by the cache itself (not in the config).
    pub announced: bool,
}

/// One routing table and its parents (`parents[i]` is the table's member
/// `i`); no table while no parent is known (every request: 503).
#[derive(Clone, Debug)]
pub struct Routing {
    /// Which membership this is (grows with each change).
    pub generation: u64,
    table: Option<Table>,
    parents: Vec<Parent>,
}

impl Routing {
    /// The index of the first parent of `uri`'s ranking that `alive` admits.
    pub fn select(&self, uri: &RequestUri, alive: impl Fn(Slot) -> bool) -> Option<usize> {
        let t = self.table.as_ref()?;
        let m = t.select(uri, |m| alive(self.parents[m.index()].slot))?;
        Some(m.index())
    }

    /// Every parent's index, in `uri`'s ranking.
    pub fn rank(&self, uri: &RequestUri) -> Vec<usize> {
        self.table
            .as_ref()
            .map(|t| t.rank(uri).map(|m| m.index()).collect())
            .unwrap_or_default()
    }

    /// Parent `i` of the table.
    pub fn parent(&self, i: usize) -> &Parent {
        &self.parents[i]
    }

    /// The parents, in table order.
    pub fn parents(&self) -> &[Parent] {
        &self.parents
    }

    /// The table, when there is a parent.
    pub fn table(&self) -> Option<&Table> {
        self.table.as_ref()
    }
}

/// The membership every worker shares.
pub struct Members {
    mode: Mode,
    /// The config's parents with their table members, in config order.
    statics: Vec<(Parent, Member)>,
    /// The announced caches of the current routing, as last set.
    announced: Mutex<Vec<Announced>>,
    current: RwLock<Arc<Routing>>,
    generation: AtomicU64,
    health: Arc<Health>,
}

impl Members {
    /// The static parents (`statics`, each with its member of the
    /// config's table; may be empty when caches announce themselves).
    pub fn new(mode: Mode, statics: Vec<(Parent, Member)>, health: Arc<Health>) -> Members {
        let m = Members {
            mode,
            statics,
            announced: Mutex::new(Vec::new()),
            current: RwLock::new(Arc::new(Routing {
                generation: 0,
                table: None,
                parents: Vec::new(),
            })),
            generation: AtomicU64::new(0),
            health,
        };
        m.rebuild(&[]);
        m
    }

    /// The current routing.
    pub fn current(&self) -> Arc<Routing> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current routing's generation (a worker compares it with its own
    /// copy's at each request).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The hash mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The configured parents' names (announcements never take them).
    pub fn configured_names(&self) -> Vec<String> {
        self.statics.iter().map(|(p, _)| p.name.clone()).collect()
    }

    /// Sets the announced caches in the table (any order); the routing
    /// changes only when they do. Returns whether it changed.
    pub fn set_announced(&self, mut included: Vec<Announced>) -> bool {
        included.sort();
        let mut a = self
            .announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *a == included {
            return false;
        }
        for gone in a
            .iter()
            .filter(|o| !included.iter().any(|n| n.name == o.name))
        {
            tracing::info!(parent = %gone.name, addr = %gone.addr, "announced cache removed from the routing table");
        }
        for new in included.iter().filter(|n| !a.contains(n)) {
            tracing::info!(parent = %new.name, addr = %new.addr, weight = new.weight, "announced cache in the routing table");
        }
        *a = included;
        self.rebuild(&a);
        true
    }

    /// Where the prober looks: every parent of the current routing.
    pub fn probe_targets(&self) -> Vec<(Slot, SocketAddr)> {
        self.current()
            .parents
            .iter()
            .map(|p| (p.slot, p.addr))
            .collect()
    }

    /// Builds the routing of the static parents and `announced` (sorted by
    /// name, none named like a static parent: the tracker sees to that);
    /// an announced cache without a slot is left out (with a log line).
    fn rebuild(&self, announced: &[Announced]) {
        let mut parents: Vec<Parent> = Vec::with_capacity(self.statics.len() + announced.len());
        let mut members: Vec<Member> = Vec::with_capacity(parents.capacity());
        for (p, m) in &self.statics {
            parents.push(p.clone());
            members.push(m.clone());
        }
        for a in announced {
            let Some(slot) = self.health.slot_for(&a.name) else {
                tracing::error!(parent = %a.name, "announced cache left out: {} parent names have been seen since this frontend started, the most it can track", carp::MAX_MEMBERS);
                continue;
            };
            parents.push(Parent {
                slot,
                name: a.name.clone(),
                host: a.addr.ip().to_string(),
                addr: a.addr,
                max_conn_per_worker: usize::MAX,
                pass_credentials: false,
                weight: a.weight,
                announced: true,
            });
            members.push(Member::new(a.name.clone(), a.weight));
        }
        let table = if members.is_empty() {
            None
        } else {
            match Table::new(self.mode, members) {
                Ok(t) => Some(t),
                Err(e) => {
                    // names and weights were checked on the way in
                    tracing::error!(error = %e, "the new routing table cannot be built: keeping the old one");
                    return;
                }
            }
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = current.generation + 1;
        *current = Arc::new(Routing {
            generation,
            table,
            parents,
        });
        self.generation.store(generation, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(slot: Slot, name: &str, port: u16) -> Parent {
        Parent {
            slot,
            name: name.into(),
            host: "127.0.0.1".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            max_conn_per_worker: usize::MAX,
            pass_credentials: false,
            weight: 1,
            announced: false,
        }
    }

    fn announced(name: &str, port: u16) -> Announced {
        Announced {
            name: name.into(),
            weight: 1,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// The table is the static parents then the announced ones by name,
    /// the same as a config listing them so; an unchanged set keeps the
    /// generation.
    #[test]
    fn announced_caches_follow_the_static_ones_by_name() {
        let health = Arc::new(Health::new(vec!["a".into(), "b".into()], 10));
        let statics = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    parent(health.slot_of(n).unwrap(), n, 4000 + i as u16),
                    Member::new(*n, 1),
                )
            })
            .collect();
        let m = Members::new(Mode::Hrw, statics, health.clone());
        let g0 = m.generation();
        assert_eq!(m.current().parents().len(), 2);
        assert!(m.set_announced(vec![announced("z", 4009), announced("c", 4003)]));
        let r = m.current();
        let names: Vec<&str> = r.parents().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "z"]);
        assert!(r.generation > g0 && m.generation() == r.generation);
        let same = Table::new(
            Mode::Hrw,
            ["a", "b", "c", "z"]
                .iter()
                .map(|n| Member::new(*n, 1))
                .collect(),
        )
        .unwrap();
        for i in 0..200 {
            let u = format!("/{i}");
            let uri = RequestUri::from_parts("http", "example.com", 80, 80, &u);
            let want = same.select(&uri, |_| true).unwrap().index();
            assert_eq!(r.select(&uri, |_| true), Some(want), "{u}");
        }
        assert!(!m.set_announced(vec![announced("c", 4003), announced("z", 4009)]));
        assert_eq!(m.generation(), r.generation);
        // slots stay with names: c leaves and comes back in its old slot
        let c = health.slot_of("c").unwrap();
        assert!(m.set_announced(vec![announced("z", 4009)]));
        assert!(m.set_announced(vec![announced("z", 4009), announced("c", 4003)]));
        assert_eq!(m.current().parent(2).slot, c);
    }

    /// Without any parent there is no table: nothing is selected.
    #[test]
    fn no_parent_no_table() {
        let health = Arc::new(Health::new(vec![], 10));
        let m = Members::new(Mode::Squid, vec![], health);
        let uri = RequestUri::from_parts("http", "example.com", 80, 80, "/");
        assert_eq!(m.current().select(&uri, |_| true), None);
        assert!(m.current().rank(&uri).is_empty());
        assert!(m.set_announced(vec![announced("c", 4003)]));
        assert_eq!(m.current().select(&uri, |_| true), Some(0));
    }
}
