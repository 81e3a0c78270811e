//! Frontends sharing parent health by gossip ([`crate::cluster`]): each
//! publishes its view of every parent under `parent/NAME` ([`encode`]):
//! alive or dead, the parent's epoch (changes seen so far), since when, and
//! why it died. When a peer's view is newer ([`Observation::supersedes`]),
//! this frontend adopts it at once: a parent found dead by one frontend is
//! skipped by all without a client waiting for a timeout, and one a peer's
//! probe saw answer is used again. Epochs, not clocks, order the views, so
//! hosts need not agree on the time. With `announced_parents`, the same
//! loop keeps the announced caches in the table
//! ([`crate::cluster::membership`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chitchat::{Chitchat, ChitchatId};
use tokio::sync::Mutex;

use super::health::{Health, Observation, Slot};
use super::members::Members;
use crate::cluster::membership::{Change, Tracker};
use crate::config::settings::ClusterSettings;

/// Joins the cluster of `settings` as a frontend: shares `health` with the
/// other frontends and, with `announced_parents`, keeps `members` up to
/// date with the caches that announce themselves. Returns once the gossip
/// socket is bound (an error names the address).
pub fn start(settings: &ClusterSettings, health: Arc<Health>, members: Arc<Members>) -> Result<()> {
    let initial = initial(&health);
    let s = settings.clone();
    let what = match settings.announced_parents {
        true => "parent health and announced caches",
        false => "parent health",
    };
    crate::cluster::run_node(settings, what, initial, move |chitchat, me| {
        run(s, health, members, chitchat, me)
    })
}

/// Prefix of the keys a frontend publishes its parents' health under.
const PARENT_PREFIX: &str = "parent/";
/// How often this frontend's own view is compared with what it published
/// (and the announced caches' grace periods are checked).
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// `alive|dead EPOCH SINCE_MS [CAUSE]`.
pub fn encode(o: &Observation) -> String {
    let state = if o.alive { "alive" } else { "dead" };
    let mut v = format!("{state} {} {}", o.epoch, o.since_ms);
    if !o.alive && !o.cause.is_empty() {
        v.push(' ');
        v.push_str(o.cause);
    }
    v
}

/// A peer's published view (`None`: not one carpool writes; ignored).
pub fn decode(v: &str) -> Option<Observation> {
    let mut w = v.split(' ');
    let alive = match w.next()? {
        "alive" => true,
        "dead" => false,
        _ => return None,
    };
    let epoch = w.next()?.parse().ok()?;
    let since_ms = w.next()?.parse().ok()?;
    Some(Observation {
        alive,
        epoch,
        since_ms,
        // the peer's reason is in its log; here it is the peer's finding
        cause: if alive { "" } else { "peer" },
    })
}

/// The key-values a frontend starts with: its view of every parent.
fn initial(health: &Health) -> Vec<(String, String)> {
    health
        .slots()
        .map(|s| (key(health.name(s)), encode(&health.observation(s))))
        .collect()
}

/// The frontend's gossip work, for as long as the gossip runs.
async fn run(
    settings: ClusterSettings,
    health: Arc<Health>,
    members: Arc<Members>,
    chitchat: Arc<Mutex<Chitchat>>,
    me: ChitchatId,
) {
    // peers' views, applied as they arrive (for as long as this task runs)
    let _listener = {
        let health = health.clone();
        let me = me.node_id.clone();
        chitchat
            .lock()
            .await
            .subscribe_event(PARENT_PREFIX, move |event| {
                if event.node.node_id == me {
                    return;
                }
                let (Some(s), Some(seen)) = (health.slot_of(event.key), decode(event.value)) else {
                    return;
                };
                health.adopt(s, seen, &event.node.node_id);
            })
    };
    let mut tracker = settings
        .announced_parents
        .then(|| Tracker::new(settings.announced_grace, members.configured_names()));
    // what this frontend last published of each slot (None: nothing yet)
    let mut published: Vec<(Slot, Option<Observation>)> = health
        .slots()
        .map(|s| (s, Some(health.observation(s))))
        .collect();
    let mut live = chitchat.lock().await.live_nodes_watcher();
    let mut peers = 0usize;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(announced) = tracker.as_mut().and_then(|t| t.decide(Instant::now())) {
                    members.set_announced(announced);
                }
                // parents that got a slot since (caches that joined)
                published.extend(health.slots().skip(published.len()).map(|s| (s, None)));
                // the gossip's lock only when this frontend's view changed
                let changed: Vec<(usize, Observation)> = published
                    .iter()
                    .enumerate()
                    .map(|(i, (s, last))| (i, *last, health.observation(*s)))
                    .filter(|(_, last, now)| *last != Some(*now))
                    .map(|(i, _, now)| (i, now))
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                let mut cc = chitchat.lock().await;
                for (i, now) in changed {
                    let s = published[i].0;
                    cc.self_node_state().set(key(health.name(s)), encode(&now));
                    published[i].1 = Some(now);
                }
            }
            moved = live.changed() => {
                if moved.is_err() {
                    tracing::error!("cluster: the gossip stopped; parent health is this frontend's own from now on");
                    return;
                }
                let nodes = live.borrow_and_update();
                let changes = match tracker.as_mut() {
                    Some(t) => t.update(&nodes, Instant::now()),
                    None => Vec::new(),
                };
                let now = nodes.keys().filter(|n| n.node_id != me.node_id).count();
                drop(nodes);
                for c in changes {
                    apply(&health, c);
                }
                if now != peers {
                    tracing::info!(peers = now, "cluster: other nodes now live");
                    peers = now;
                }
            }
        }
    }
}

/// What an announced cache's change means for its health (a cache not
/// yet in the table has no slot: it starts alive when it gets one).
fn apply(health: &Health, change: Change) {
    match change {
        Change::Here(name) => {
            if let Some(s) = health.slot_of(&name) {
                health.revive(s, "it announced itself");
            }
        }
        Change::Gone(name) => {
            if let Some(s) = health.slot_of(&name) {
                health.mark_dead(s, "gone from the cluster");
            }
        }
    }
}

fn key(parent: &str) -> String {
    format!("{PARENT_PREFIX}{parent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_round_trip_and_order_by_epoch() {
        let dead = Observation {
            alive: false,
            epoch: 3,
            since_ms: 1700,
            cause: "connect failed",
        };
        assert_eq!(encode(&dead), "dead 3 1700 connect failed");
        let back = decode(&encode(&dead)).unwrap();
        assert_eq!(
            (back.alive, back.epoch, back.since_ms, back.cause),
            (false, 3, 1700, "peer")
        );
        let alive = decode("alive 4 1800").unwrap();
        assert!(alive.alive && alive.supersedes(&dead));
        assert!(!dead.supersedes(&alive));
        // one change seen each way at once: dead wins until a probe
        let alive3 = Observation {
            alive: true,
            epoch: 3,
            since_ms: 1,
            cause: "",
        };
        assert!(dead.supersedes(&alive3) && !alive3.supersedes(&dead));
        assert_eq!(decode("maybe 1 2"), None);
        assert_eq!(decode("dead x 2"), None);
    }
}
