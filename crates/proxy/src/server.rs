//! A server process of one role: a worker thread per listener, each with its
//! own single-threaded runtime (the kernel spreads connections over their
//! SO_REUSEPORT listeners, and nothing on the request path takes a lock),
//! and the signal loop that stops them: SIGUSR1 reopens the access log;
//! SIGTERM or SIGINT close the listeners and let the requests in flight
//! finish within `shutdown_timeout`.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use httpx::accesslog::{Sink, Writer};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::role::Role;
use crate::settings::Settings;
use crate::stop::LocalStop;
use crate::worker::Worker;

/// How often workers flush their access log buffers.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// [`crate::Settings::worker_tick`] runs every this many log flushes (1 s).
const WORKER_TICK_EVERY: u32 = 5;
/// Pause after a failed accept (EMFILE and friends) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// After this many accepted connections the accept loop yields once, so
/// the worker's other tasks run between batches (HAProxy's
/// `tune.maxaccept`; when connections trickle in, the extra yield every 16
/// costs nothing that matters). Without it a storm of new connections is
/// accepted 128 at a time (tokio's cooperative budget) while the worker runs
/// 61 other tasks per turn, so requests already in flight queue behind
/// hundreds of new connections: with 1,000 clients connecting at the start
/// of a paced 64 KiB run (`bench/frontend/run --connections 1000
/// --rate-connections 1000`) the p99.9 was ~30 ms, ~10 ms with this.
const ACCEPT_BATCH: usize = 16;
/// Shards of the counts: workers beyond this many share them.
const METRIC_SHARDS: usize = 64;
/// Time given to the workers to flush their logs once the connections are done.
const FINAL_FLUSH: Duration = Duration::from_millis(300);

/// The worker threads of one role and what they share.
pub struct Server {
    settings: Arc<Settings>,
    sink: Arc<Sink>,
    open: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

impl Server {
    /// A server with `settings`, logging to `sink`.
    pub fn new(settings: Settings, sink: Arc<Sink>) -> Server {
        Server {
            settings: Arc::new(settings),
            sink,
            open: Arc::new(AtomicUsize::new(0)),
            stop: watch::channel(false).0,
            metrics: Metrics::new(METRIC_SHARDS),
        }
    }

    /// Its counts (what `/carpool-internal/metrics` shows).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Its settings (shared with its workers).
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// Starts a worker thread (named `name-N`) per listener; `make` builds
    /// each worker's role state on its own thread.
    pub fn start<R, F>(
        &self,
        name: &str,
        listeners: Vec<std::net::TcpListener>,
        make: F,
    ) -> io::Result<()>
    where
        R: Role,
        F: Fn() -> R + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        for (i, listener) in listeners.into_iter().enumerate() {
            let make = make.clone();
            let (settings, sink, open) =
                (self.settings.clone(), self.sink.clone(), self.open.clone());
            let metrics = self.metrics.clone();
            let stop = self.stop.subscribe();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let worker = |stop| Worker {
                        role: make(),
                        settings,
                        log: RefCell::new(Writer::new(sink)),
                        stop,
                        open,
                        metrics,
                        index: i,
                    };
                    if let Err(e) = run_worker(listener, stop, worker) {
                        tracing::error!(worker = i, error = %e, "worker stopped");
                    }
                })?;
        }
        Ok(())
    }

    /// Handles signals until SIGTERM or SIGINT, then closes the listeners
    /// and waits up to `shutdown_timeout` for the connections in flight.
    /// SIGUSR1 reopens the access log (logrotate); SIGHUP does the same and
    /// says that the rest of the configuration is not reloaded in place: the
    /// server keeps running on what it started with.
    pub fn wait_for_signals(&self) -> io::Result<()> {
        self.wait_for_signals_then(async {})
    }

    /// [`Server::wait_for_signals`], running `before_drain` between the
    /// stop signal and closing the listeners (a cache tells its cluster it
    /// is leaving, while it still answers).
    pub fn wait_for_signals_then(
        &self,
        before_drain: impl std::future::Future<Output = ()>,
    ) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut usr1 = signal(SignalKind::user_defined1())?;
            let mut hup = signal(SignalKind::hangup())?;
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            loop {
                tokio::select! {
                    _ = usr1.recv() => self.reopen_log("SIGUSR1"),
                    _ = hup.recv() => {
                        self.reopen_log("SIGHUP");
                        tracing::warn!(
                            "SIGHUP: this server does not reload its configuration in place; \
                             it keeps running on the one it started with (restart it to apply a new one)"
                        );
                    }
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            before_drain.await;
            self.drain().await;
            Ok(())
        })
    }

    /// Reopens the access log by its path (after logrotate moved it).
    fn reopen_log(&self, signal: &str) {
        match self.sink.reopen() {
            Ok(()) => tracing::info!("access log reopened ({signal})"),
            Err(e) => tracing::error!(error = %e, "{signal}: cannot reopen the access log"),
        }
    }

    /// Stops accepting and waits for the open connections to finish.
    async fn drain(&self) {
        self.stop.send_replace(true);
        let open = self.open.load(Ordering::Relaxed);
        tracing::info!(
            open,
            "stopping: listeners closed, letting in-flight requests finish"
        );
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_timeout;
        while self.open.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.open.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                left,
                "shutdown_timeout reached: closing {left} connections still busy"
            );
        } else {
            tracing::info!("all connections finished");
        }
        // the workers' ticks hand over what they buffered; then every line
        // held for ordering goes out
        tokio::time::sleep(FINAL_FLUSH).await;
        self.sink.finish();
    }
}

/// The body of one worker thread: a single-threaded runtime whose tasks
/// accept on `listener` until `stop`, serve each connection through the
/// request lifecycle, and flush the worker's log buffer every
/// [`LOG_FLUSH_INTERVAL`] (and run the settings' `worker_tick` every
/// second). After `stop` the listener is closed and the
/// connections in flight go on until the process exits.
fn run_worker<R: Role>(
    listener: std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
    make: impl FnOnce(Rc<LocalStop>) -> Worker<R>,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let local_stop = Rc::new(LocalStop::default());
    let worker = Rc::new(make(local_stop.clone()));
    local.block_on(&rt, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let flusher = worker.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
            let mut ticks = 0u32;
            loop {
                tick.tick().await;
                flusher.log.borrow_mut().flush();
                ticks += 1;
                if ticks == WORKER_TICK_EVERY {
                    ticks = 0;
                    if let Some(f) = flusher.settings.worker_tick {
                        (f.0)();
                    }
                }
            }
        });
        let mut accepted_since_yield = 0usize;
        loop {
            if accepted_since_yield == ACCEPT_BATCH {
                accepted_since_yield = 0;
                tokio::task::yield_now().await;
            }
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    accepted_since_yield += 1;
                    worker.metrics.shard(worker.index).accepted();
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(crate::lifecycle::serve(worker.clone(), stream, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
        drop(listener);
        local_stop.stop();
        std::future::pending::<()>().await;
        Ok(())
    })
}
