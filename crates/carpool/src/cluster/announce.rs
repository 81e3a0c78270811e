//! Caches announcing themselves: a `carpool cache` in a cluster publishes
//! one key, `cache` = `here WEIGHT ADDRESS NAME` ([`encode`]); frontends
//! with `announced_parents` add it to their tables. On SIGTERM the cache
//! says `leaving NAME` and waits a few gossip rounds before it stops
//! accepting, so that frontends take it out first and no request meets a
//! closed port.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::oneshot;

use crate::config::settings::ClusterSettings;

/// A cache as it announced itself to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Announced {
    /// Its name (unique in the array; hashed like a configured parent's).
    pub name: String,
    /// Its weight in the table.
    pub weight: u32,
    /// Where the frontends reach it.
    pub addr: SocketAddr,
}

/// The key a cache announces itself under.
pub const CACHE_KEY: &str = "cache";

/// What a node's `cache` key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// A cache that takes requests.
    Here(Announced),
    /// The named cache is shutting down.
    Leaving(String),
}

/// `here WEIGHT ADDRESS NAME` (the name last: it may hold spaces).
pub fn encode(a: &Announcement) -> String {
    match a {
        Announcement::Here(c) => format!("here {} {} {}", c.weight, c.addr, c.name),
        Announcement::Leaving(name) => format!("leaving {name}"),
    }
}

/// A node's `cache` value (`None`: not one carpool writes).
pub fn decode(v: &str) -> Option<Announcement> {
    if let Some(name) = v.strip_prefix("leaving ") {
        return Some(Announcement::Leaving(name.to_string()));
    }
    let mut w = v.strip_prefix("here ")?.splitn(3, ' ');
    let weight: u32 = w.next()?.parse().ok().filter(|w| *w > 0)?;
    let addr: SocketAddr = w.next()?.parse().ok()?;
    let name = w.next().filter(|n| !n.is_empty())?.to_string();
    Some(Announcement::Here(Announced { name, weight, addr }))
}

/// A cache's presence in the cluster.
pub struct Announcer {
    /// Tells the gossip task to say `leaving`.
    leave: oneshot::Sender<()>,
    /// How long the word takes to spread: a few gossip rounds.
    notice: Duration,
}

impl Announcer {
    /// Says this cache is leaving, and waits for the word to spread (call
    /// before it stops accepting).
    pub async fn leave(self) {
        if self.leave.send(()).is_ok() {
            tracing::info!(
                wait_ms = self.notice.as_millis() as u64,
                "cluster: announced leaving; waiting for the frontends to hear it"
            );
            tokio::time::sleep(self.notice).await;
        }
    }
}

/// Gossip rounds a leaving cache waits for the frontends to hear of it.
const LEAVE_ROUNDS: u32 = 5;
/// The least it waits.
const LEAVE_AT_LEAST: Duration = Duration::from_millis(300);

/// Joins the cluster of `settings` and announces `me` there; returns once
/// the gossip socket is bound.
pub fn announce(settings: &ClusterSettings, me: Announced) -> Result<Announcer> {
    let initial = vec![(
        CACHE_KEY.to_string(),
        encode(&Announcement::Here(me.clone())),
    )];
    let (tx, rx) = oneshot::channel::<()>();
    let name = me.name.clone();
    super::run_node(
        settings,
        "this cache's announcement",
        initial,
        move |chitchat, _me| async move {
            tracing::info!(name = %me.name, addr = %me.addr, weight = me.weight, "cluster: this cache announced itself");
            if rx.await.is_ok() {
                let leaving = encode(&Announcement::Leaving(name));
                chitchat
                    .lock()
                    .await
                    .self_node_state()
                    .set(CACHE_KEY, leaving);
            }
            // gossip on (the word spreads) until the process ends
            std::future::pending::<()>().await;
        },
    )?;
    Ok(Announcer {
        leave: tx,
        notice: (settings.gossip_interval * LEAVE_ROUNDS).max(LEAVE_AT_LEAST),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip() {
        let here = Announcement::Here(Announced {
            name: "cache 3".into(),
            weight: 2,
            addr: "127.0.0.1:4003".parse().unwrap(),
        });
        assert_eq!(encode(&here), "here 2 127.0.0.1:4003 cache 3");
        assert_eq!(decode(&encode(&here)), Some(here));
        let v6 = "here 1 [::1]:4003 c";
        assert!(matches!(decode(v6), Some(Announcement::Here(a)) if a.addr.is_ipv6()));
        let leaving = Announcement::Leaving("c".into());
        assert_eq!(decode(&encode(&leaving)), Some(leaving));
        for bad in [
            "here 0 127.0.0.1:1 c",
            "here x 127.0.0.1:1 c",
            "here 1 nowhere c",
            "here 1 127.0.0.1:1",
            "gone c",
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
