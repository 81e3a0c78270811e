//! What one worker thread holds for the layer: the role's state on that
//! thread, the settings, the thread's access-log buffer and stop flag, the
//! process-wide count of open client connections, and its shard of the
//! server's metrics.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use httpx::accesslog::Writer;

use crate::metrics::{FailureKind, Metrics};
use crate::peer::PeerKind;
use crate::settings::Settings;
use crate::stop::LocalStop;
use crate::upstream::Failure;

/// One worker thread's share of the layer.
pub(crate) struct Worker<R> {
    /// The role's state on this thread.
    pub(crate) role: R,
    /// The layer's settings.
    pub(crate) settings: Arc<Settings>,
    /// This thread's access-log buffer.
    pub(crate) log: RefCell<Writer>,
    /// Whether the server is stopping.
    pub(crate) stop: Rc<LocalStop>,
    /// Client connections open, all workers together.
    pub(crate) open: Arc<AtomicUsize>,
    /// The server's counts.
    pub(crate) metrics: Arc<Metrics>,
    /// This worker's number (its shard of the counts).
    pub(crate) index: usize,
}

impl<R> Worker<R> {
    /// Counts a failed attempt on the peer named `peer`.
    pub(crate) fn failed(&self, peer: &str, kind: PeerKind, f: &Failure) {
        if let Some(k) = FailureKind::of(f, kind) {
            self.metrics.shard(self.index).peer(peer).failures[k as usize] += 1;
        }
    }
}
