//! Frontends sharing parent health by gossip (`[cluster]`), over chitchat
//! (scuttlebutt anti-entropy with a phi-accrual failure detector, Quickwit's;
//! chosen over foca's SWIM because it carries each node's key-value state,
//! which is what shared health is, and detects failed nodes by itself).
//!
//! Each frontend publishes its view of every parent under `parent/NAME`
//! ([`encode`]): alive or dead, the parent's epoch (changes seen so far),
//! since when, and why it died. When a peer's view is newer
//! ([`Observation::supersedes`]), this frontend adopts it at once: a parent
//! found dead by one frontend is skipped by all without a client waiting
//! for a timeout, and one a peer's probe saw answer is used again. Epochs,
//! not clocks, order the views, so hosts need not agree on the time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};

use crate::config::settings::ClusterSettings;
use crate::frontend::health::{Health, Observation};

/// Prefix of the keys a frontend publishes its parents' health under.
const PARENT_PREFIX: &str = "parent/";
/// How often this frontend's own view is compared with what it published.
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

/// Joins the cluster of `settings` and shares `health` with it, on a
/// thread of its own; returns once the gossip socket is bound (an error
/// names the address).
pub fn start(settings: &ClusterSettings, health: Arc<Health>) -> Result<()> {
    let settings = settings.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e).context("starting the cluster's runtime"));
                    return;
                }
            };
            rt.block_on(run(settings, health, ready_tx));
        })
        .context("spawning the cluster thread")?;
    ready_rx
        .recv()
        .context("the cluster thread ended before it started")?
}

async fn run(
    settings: ClusterSettings,
    health: Arc<Health>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) {
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let advertise = advertise(settings.listen, &settings.seeds);
    let me = ChitchatId::new(settings.node.clone(), generation, advertise);
    let config = ChitchatConfig {
        chitchat_id: me.clone(),
        cluster_id: settings.cluster_id.clone(),
        gossip_interval: settings.gossip_interval,
        listen_addr: settings.listen,
        seed_nodes: settings.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            // a frontend silent for a few gossip rounds is gone; its views
            // no longer count
            initial_interval: settings.gossip_interval * 2,
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let names = health.names().to_vec();
    let initial: Vec<(String, String)> = (0..names.len())
        .map(|i| (key(&names[i]), encode(&health.observation(i))))
        .collect();
    let handle = match spawn_chitchat(config, initial, &UdpTransport).await {
        Ok(h) => h,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "[cluster] listen = {}: cannot gossip there: {e:#}",
                settings.listen
            )));
            return;
        }
    };
    tracing::info!(
        node = %settings.node,
        listen = %settings.listen,
        advertise = %advertise,
        cluster = %settings.cluster_id,
        seeds = ?settings.seeds,
        "cluster: gossiping parent health"
    );
    let _ = ready.send(Ok(()));
    let chitchat = handle.chitchat();
    // peers' views, applied as they arrive (for as long as this task runs)
    let _listener = {
        let health = health.clone();
        let names = names.clone();
        let me = me.node_id.clone();
        chitchat
            .lock()
            .await
            .subscribe_event(PARENT_PREFIX, move |event| {
                if event.node.node_id == me {
                    return;
                }
                let (Some(i), Some(seen)) = (
                    names.iter().position(|n| n == event.key),
                    decode(event.value),
                ) else {
                    return;
                };
                health.adopt(i, seen, &event.node.node_id);
            })
    };
    let mut published: Vec<Observation> = (0..names.len()).map(|i| health.observation(i)).collect();
    let mut live = chitchat.lock().await.live_nodes_watcher();
    let mut peers = 0usize;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // the gossip's lock only when this frontend's view changed
                let changed: Vec<(usize, Observation)> = published
                    .iter()
                    .enumerate()
                    .map(|(i, last)| (i, *last, health.observation(i)))
                    .filter(|(_, last, now)| last != now)
                    .map(|(i, _, now)| (i, now))
                    .collect();
                if changed.is_empty() {
                    continue;
                }
                let mut cc = chitchat.lock().await;
                for (i, now) in changed {
                    cc.self_node_state().set(key(&names[i]), encode(&now));
                    published[i] = now;
                }
            }
            moved = live.changed() => {
                if moved.is_err() {
                    tracing::error!("cluster: the gossip stopped; parent health is this frontend's own from now on");
                    return;
                }
                let now = live.borrow_and_update().keys().filter(|n| n.node_id != me.node_id).count();
                if now != peers {
                    tracing::info!(peers = now, "cluster: peer frontends now live");
                    peers = now;
                }
            }
        }
    }
}

fn key(parent: &str) -> String {
    format!("{PARENT_PREFIX}{parent}")
}

/// Where a node at `listen` is told to be reached: the listen address, or
/// for a wildcard one, this host's address towards the first seed.
pub fn advertise(listen: SocketAddr, seeds: &[String]) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let towards = seeds
        .iter()
        .find_map(|s| std::net::ToSocketAddrs::to_socket_addrs(s).ok()?.next());
    let ip = towards
        .and_then(|t| {
            let probe = std::net::UdpSocket::bind((listen.ip(), 0)).ok()?;
            probe.connect(t).ok()?;
            Some(probe.local_addr().ok()?.ip())
        })
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    SocketAddr::new(ip, listen.port())
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
