//! Small synchronization helpers shared by the modules: locks that survive a
//! panicked holder (the data they guard stays consistent at every step), and
//! a stop signal for background threads.

use std::sync::{
    Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::Duration;

/// Locks a mutex, ignoring poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks, ignoring poisoning.
pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks, ignoring poisoning.
pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// A wake-up signal with a stop flag, for a background thread that sleeps
/// until it has work, a timeout passes, or it must stop.
#[derive(Default)]
pub(crate) struct Signal {
    state: Mutex<(bool, bool)>, // (work pending, stop)
    cv: Condvar,
}

impl Signal {
    /// Wakes the thread for work.
    pub fn notify(&self) {
        lock(&self.state).0 = true;
        self.cv.notify_all();
    }

    /// Asks the thread to stop.
    pub fn stop(&self) {
        lock(&self.state).1 = true;
        self.cv.notify_all();
    }

    /// Waits for work, a stop, or `timeout`. Returns false when the thread
    /// must stop; clears the pending work flag otherwise.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut g = lock(&self.state);
        if !g.0 && !g.1 {
            g = self
                .cv
                .wait_timeout(g, timeout)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        g.0 = false;
        !g.1
    }
}
