//! Collapsed forwarding: at most one origin request per key at a time. The
//! first request for a missing (or stale) key leads: it fetches, and while
//! the body arrives it is written to the store and announced here. Requests
//! for the same key that come meanwhile join: they wait for the response
//! head, then stream the body from what is stored so far, following the
//! writer, whichever worker thread they run on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cache_store::PartialBody;
use tokio::sync::watch;

use super::meta::Meta;

/// How a fill ended (or that it has not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Still running.
    Open,
    /// The whole body is stored.
    Complete,
    /// A revalidation found the stored object still valid (its record was
    /// refreshed): look it up again.
    Refreshed,
    /// The response is not shared (not cacheable, too large): fetch alone.
    Pass,
    /// The fetch failed: the joiners fetch alone (or report the error).
    Failed,
}

/// What joiners see of a fill.
#[derive(Clone)]
pub struct Progress {
    /// The response's record and the body stored so far, once the head came.
    pub object: Option<Arc<(Meta, PartialBody)>>,
    /// Body bytes stored so far.
    pub written: u64,
    /// The body's length when the origin said it.
    pub len: Option<u64>,
    /// Whether (and how) the fill ended.
    pub end: End,
}

/// Fills in progress, by key.
#[derive(Default)]
pub struct InFlight {
    fills: Mutex<HashMap<Vec<u8>, watch::Receiver<Progress>>>,
}

/// The role of a request for a key.
pub enum Role {
    /// Fetch, and announce through this.
    Lead(Leader),
    /// Follow the fill in progress.
    Join(watch::Receiver<Progress>),
}

impl InFlight {
    /// Leads the fill of `key`, or joins the one in progress.
    pub fn claim(self: &Arc<Self>, key: &[u8]) -> Role {
        let mut fills = match self.fills.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(rx) = fills.get(key) {
            if rx.borrow().end == End::Open {
                return Role::Join(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(Progress {
            object: None,
            written: 0,
            len: None,
            end: End::Open,
        });
        fills.insert(key.to_vec(), rx);
        Role::Lead(Leader {
            tx,
            key: key.to_vec(),
            inflight: self.clone(),
            ended: false,
        })
    }

    fn forget(&self, key: &[u8], tx: &watch::Sender<Progress>) {
        let mut fills = match self.fills.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Only our own entry (a newer fill may have taken the key).
        if fills
            .get(key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            fills.remove(key);
        }
    }
}

/// The leader's side of a fill. Dropped without [`Leader::end`], the fill
/// counts as failed, so joiners never wait for a fetch nobody runs.
pub struct Leader {
    tx: watch::Sender<Progress>,
    key: Vec<u8>,
    inflight: Arc<InFlight>,
    ended: bool,
}

impl Leader {
    /// Announces the response head: joiners start streaming.
    pub fn head(&self, meta: Meta, body: PartialBody, len: Option<u64>) {
        self.tx.send_modify(|p| {
            p.object = Some(Arc::new((meta, body)));
            p.len = len;
        });
    }

    /// Announces that `written` body bytes are stored.
    pub fn progress(&self, written: u64) {
        self.tx.send_modify(|p| p.written = written);
    }

    /// A receiver, for the leader to follow its own fill.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.tx.subscribe()
    }

    /// Ends the fill.
    pub fn end(mut self, end: End) {
        self.finish(end);
    }

    fn finish(&mut self, end: End) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.inflight.forget(&self.key, &self.tx);
        self.tx.send_modify(|p| p.end = end);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.finish(End::Failed);
    }
}
