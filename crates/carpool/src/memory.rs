//! Memory the process frees goes back to the system while it idles.
//!
//! mimalloc (the global allocator, see `main.rs`) hands freed pages back to
//! the system only once they have been free for its `purge_delay` (1 s),
//! and only when some thread calls into it after that. After a burst of
//! client connections that all closed, quiet workers make no such call, and
//! the process kept the burst's memory: 2,000 connections that sent half a
//! head took +124 MB that stayed after they closed (issue 12). A thread of
//! our own asks mimalloc every [`COLLECT_INTERVAL`] to return what has been
//! free long enough; when nothing was, the call returns at once.
//!
//! A collect only purges the calling thread's heap, and busy threads did
//! not purge enough on their own: under a load of misses (objects allocated
//! on a worker, freed on a disk thread) the cache's RSS grew with the
//! objects it stored (92 MB PSS for 108k objects, against 41 MB with glibc
//! malloc; issue 14). So every worker (through
//! `proxy::Settings::worker_tick`) and every disk thread also calls
//! [`collect_this_thread`] about once a second.

use std::time::Duration;

/// How often the thread asks mimalloc to return expired free memory.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// Asks mimalloc to return what this thread's heap has had free for long
/// enough (busy threads that allocate on one thread and free on another
/// call it now and then: see `cache/diskio.rs`).
pub fn collect_this_thread() {
    // SAFETY: mi_collect takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Starts the thread (from `main`, for every command: a short one is done
/// before the thread first wakes).
pub fn return_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("carpool-memory".into())
        .spawn(|| {
            // mimalloc ignores a collect from a thread that never allocated
            // through it: this one allocates first.
            drop(std::hint::black_box(Box::new(0u64)));
            loop {
                std::thread::sleep(COLLECT_INTERVAL);
                // SAFETY: mi_collect takes no pointers; `false` asks for the
                // non-forced collect (what has been free for purge_delay).
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the thread that returns freed memory");
    }
}
