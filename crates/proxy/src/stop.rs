//! One worker thread's "the server is stopping": set by the worker's accept
//! loop when the process stops, read by every connection of the worker after
//! each request, and awaited by those waiting for their next one.
//! Single-threaded: a flag and the wakers of the waiting connections, with no
//! lock or atomic on the per-request path.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// The stop flag of one worker thread.
#[derive(Default)]
pub(crate) struct LocalStop {
    stopping: Cell<bool>,
    waiters: RefCell<Waiters>,
}

/// Wakers of the connections waiting for a stop, by slot.
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl LocalStop {
    /// True once the server is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Marks the server as stopping and wakes every waiter.
    pub(crate) fn stop(&self) {
        self.stopping.set(true);
        let wakers: Vec<_> = self
            .waiters
            .borrow_mut()
            .slots
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }

    /// A waiter for one connection (its slot is kept across requests).
    pub(crate) fn waiter(self: &Rc<Self>) -> StopWaiter {
        StopWaiter {
            stop: self.clone(),
            slot: Cell::new(None),
        }
    }
}

/// One connection's wait for [`LocalStop`].
pub(crate) struct StopWaiter {
    stop: Rc<LocalStop>,
    slot: Cell<Option<usize>>,
}

impl StopWaiter {
    /// True once the server is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.is_stopping()
    }

    /// Resolves when the server starts stopping.
    pub(crate) async fn stopping(&self) {
        std::future::poll_fn(|cx| {
            if self.stop.is_stopping() {
                return Poll::Ready(());
            }
            let mut w = self.stop.waiters.borrow_mut();
            let slot = match self.slot.get() {
                Some(i) => i,
                None => {
                    let i = match w.free.pop() {
                        Some(i) => i,
                        None => {
                            w.slots.push(None);
                            w.slots.len() - 1
                        }
                    };
                    self.slot.set(Some(i));
                    i
                }
            };
            match &mut w.slots[slot] {
                Some(old) if old.will_wake(cx.waker()) => {}
                s => *s = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for StopWaiter {
    fn drop(&mut self) {
        if let Some(i) = self.slot.get() {
            let mut w = self.stop.waiters.borrow_mut();
            w.slots[i] = None;
            w.free.push(i);
        }
    }
}
