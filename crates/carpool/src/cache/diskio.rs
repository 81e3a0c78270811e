//! The cache's disk threads: a fixed number of threads run the disk tier's
//! blocking work (appending a fill's body, publishing it), fed through one
//! bounded queue. Nothing else in the cache blocks on the disk for long, and
//! the number of threads and the bytes waiting for the disk stay bounded
//! whatever the load: a fill waits for room in the queue (its origin is
//! read no faster than the disk takes it), and a new fill is not stored at
//! all while the queue is more than half full ([`DiskIo::admits`]): it is
//! passed through to its client, counted and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

/// One piece of blocking work.
type Job = Box<dyn FnOnce() + Send>;

/// Jobs the queue holds per thread: with pieces of at most 64 KiB, 32 per
/// thread bound the bytes waiting for the disk at 2 MiB per thread.
pub const QUEUE_PER_THREAD: usize = 32;

/// The disk threads and their queue.
#[derive(Debug)]
pub struct DiskIo {
    tx: mpsc::Sender<Job>,
    threads: usize,
    /// Fills passed through unstored because the disk was behind.
    refused: AtomicU64,
}

impl DiskIo {
    /// Starts `threads` disk threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Arc<DiskIo>> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>(threads * QUEUE_PER_THREAD);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("carpool-disk-{i}"))
                .spawn(move || {
                    let mut collected = std::time::Instant::now();
                    loop {
                        // one thread waits on the queue, the others on the lock
                        let job = match rx.lock() {
                            Ok(mut rx) => rx.blocking_recv(),
                            Err(_) => None,
                        };
                        match job {
                            Some(job) => job(),
                            None => return,
                        }
                        if collected.elapsed() >= crate::memory::COLLECT_INTERVAL {
                            collected = std::time::Instant::now();
                            crate::memory::collect_this_thread();
                        }
                    }
                })?;
        }
        Ok(Arc::new(DiskIo {
            tx,
            threads,
            refused: AtomicU64::new(0),
        }))
    }

    /// Number of disk threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether a new fill may be stored: the queue is at most half full.
    /// When not, the refusal is counted, and logged (the first, then every
    /// thousandth).
    pub fn admits(&self) -> bool {
        if self.tx.capacity() * 2 >= self.tx.max_capacity() {
            return true;
        }
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(
                refused = n,
                threads = self.threads,
                "the disk is behind: new misses are served without being stored"
            );
        }
        false
    }

    /// Fills passed through unstored because the disk was behind.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Runs `f` on a disk thread, waiting for room in the queue first;
    /// `None` if the threads are gone (or `f` panicked).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.tx.reserve().await.ok()?;
        let (done, result) = oneshot::channel();
        permit.send(Box::new(move || {
            let _ = done.send(f());
        }));
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn jobs_run_on_the_fixed_threads_and_a_full_queue_refuses_new_fills() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let io = DiskIo::start(2).unwrap();
        assert_eq!(io.threads(), 2);
        let name = rt.block_on(io.run(|| std::thread::current().name().map(str::to_string)));
        assert!(name.flatten().unwrap().starts_with("carpool-disk-"));
        // block both threads, then fill the queue past half
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for _ in 0..(2 + QUEUE_PER_THREAD + 1) {
            let (gate, ran) = (gate.clone(), ran.clone());
            let io = io.clone();
            waiting.push(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                rt.block_on(io.run(move || {
                    drop(gate.lock());
                    ran.fetch_add(1, Ordering::SeqCst);
                }))
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while io.admits() {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue never filled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(io.refused() >= 1);
        drop(held);
        for t in waiting {
            assert_eq!(t.join().unwrap(), Some(()));
        }
        assert_eq!(ran.load(Ordering::SeqCst), 2 + QUEUE_PER_THREAD + 1);
        assert!(io.admits());
    }
}
