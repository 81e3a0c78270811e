//! The array's gossip (`[cluster]`), over chitchat (scuttlebutt
//! anti-entropy with a phi-accrual failure detector, Quickwit's; chosen
//! over foca's SWIM because it carries each node's key-value state, which
//! is what shared health and announcements are, and detects failed nodes
//! by itself).
//!
//! Two things travel on it: frontends share what they observe of each
//! parent (`frontend/gossip.rs`), and caches announce themselves so that
//! frontends with `announced_parents` add them to their tables
//! ([`announce`], [`membership`]). This module runs a node ([`run_node`]:
//! its own thread and runtime, the gossip socket bound before it returns)
//! and knows nothing of frontends or caches.

pub mod announce;
pub mod membership;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use tokio::sync::Mutex;

use crate::config::settings::ClusterSettings;

pub use announce::{announce, Announcer};

/// Runs a gossip node of `settings` with the key-values `initial` on a
/// thread of its own, and `work` on its runtime once the socket is bound;
/// returns then, or with the error that stopped it. `what` it gossips is
/// logged.
pub fn run_node<F, Fut>(
    settings: &ClusterSettings,
    what: &'static str,
    initial: Vec<(String, String)>,
    work: F,
) -> Result<()>
where
    F: FnOnce(Arc<Mutex<Chitchat>>, ChitchatId) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
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
            rt.block_on(async move {
                let me = node_id(&settings);
                let handle =
                    match spawn_chitchat(config(&settings, &me), initial, &UdpTransport).await {
                        Ok(h) => h,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::anyhow!(
                                "[cluster] listen = {}: cannot gossip there: {e:#}",
                                settings.listen
                            )));
                            return;
                        }
                    };
                tracing::info!(
                    node = %settings.node,
                    listen = %settings.listen,
                    advertise = %me.gossip_advertise_addr,
                    cluster = %settings.cluster_id,
                    seeds = ?settings.seeds,
                    "cluster: gossiping {what}"
                );
                let _ = ready_tx.send(Ok(()));
                work(handle.chitchat(), me).await;
                // the work ended (the gossip stopped): the handle goes too
                drop(handle);
            });
        })
        .context("spawning the cluster thread")?;
    ready_rx
        .recv()
        .context("the cluster thread ended before it started")?
}

/// This node: its name, a generation (its start, so that a restarted node
/// is told from its former self) and where it is reached.
fn node_id(settings: &ClusterSettings) -> ChitchatId {
    let generation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let advertise = advertise(settings.listen, &settings.seeds);
    ChitchatId::new(settings.node.clone(), generation, advertise)
}

fn config(settings: &ClusterSettings, me: &ChitchatId) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: me.clone(),
        cluster_id: settings.cluster_id.clone(),
        gossip_interval: settings.gossip_interval,
        listen_addr: settings.listen,
        seed_nodes: settings.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            // a node silent for a few gossip rounds is gone; its views and
            // announcements no longer count
            initial_interval: settings.gossip_interval * 2,
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: std::time::Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    }
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
