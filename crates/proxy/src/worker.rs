//! What one worker thread holds for the layer: the role's state on that
//! thread, the settings, the thread's access-log buffer and stop flag, and
//! the process-wide count of open client connections.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use httpx::accesslog::Writer;

use crate::settings::Settings;
use crate::stop::LocalStop;

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
}
