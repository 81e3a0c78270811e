//! Gossip overhead of carpool's `[cluster]` (issue 17): N frontends in one
//! process, each a chitchat instance configured as `cluster/mod.rs`
//! configures it, each publishing P `parent/NAME` keys, on chitchat's
//! in-memory transport (every message is serialized and deserialized as
//! it would be for UDP; the byte counts are the UDP payloads).
//!
//! Reproduced from carpool (the binary's `cluster` module is not in the
//! library target): cluster id and gossip interval from
//! `carpool::config::settings`; failure detector `initial_interval` = 2 ×
//! gossip interval, other detector settings chitchat's defaults;
//! `marked_for_deletion_grace_period` 1 h; node names `HOSTNAME:PORT`;
//! values `alive|dead EPOCH SINCE_MS [CAUSE]`; a frontend adopts a peer's
//! newer view (higher epoch, or same epoch found dead) and republishes it
//! under its own key on its next 20 ms publish tick, as carpool does.
//!
//! Per (N, P): all nodes start at once (join phase: until every node sees
//! N live nodes and all N × P keys); 2 s to settle; then a measured window
//! of `--secs` seconds in which one parent of one random node changes state
//! every `--churn-ms`. Reported per node: bytes/s and messages/s sent and
//! received; per change: time from the `set` on the origin node until the
//! last other node has adopted the new view.
//!
//! `cargo run --release --example gossip_overhead -- [--nodes 3,10,50]
//! [--parents 10,50] [--secs 20] [--churn-ms 2000]`

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carpool::config::settings::{DEFAULT_CLUSTER_ID, DEFAULT_GOSSIP_INTERVAL};
use chitchat::transport::{ChannelTransport, Socket, Transport};
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, ChitchatMessage,
    FailureDetectorConfig, Serializable,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// As in `frontend/gossip.rs`.
const PARENT_PREFIX: &str = "parent/";
/// As in `frontend/gossip.rs`: how often a frontend republishes its own view.
const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// Ethernet MTU 1500 minus IPv4 and UDP headers.
const ETHERNET_UDP_PAYLOAD: u64 = 1472;
/// Time after the join before the measured window starts.
const SETTLE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------- counting

/// Kinds of message: SYN, SYN-ACK, ACK, other.
const KINDS: [&str; 4] = ["syn", "synack", "ack", "other"];

#[derive(Default)]
struct Counters {
    sent_bytes: AtomicU64,
    sent_msgs: AtomicU64,
    recv_bytes: AtomicU64,
    recv_msgs: AtomicU64,
    kind_bytes: [AtomicU64; 4],
    kind_msgs: [AtomicU64; 4],
    max_msg: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct Snap {
    sent_bytes: u64,
    sent_msgs: u64,
    recv_bytes: u64,
    recv_msgs: u64,
    kind_bytes: [u64; 4],
    kind_msgs: [u64; 4],
}

impl Counters {
    fn snap(&self) -> Snap {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snap {
            sent_bytes: l(&self.sent_bytes),
            sent_msgs: l(&self.sent_msgs),
            recv_bytes: l(&self.recv_bytes),
            recv_msgs: l(&self.recv_msgs),
            kind_bytes: std::array::from_fn(|i| l(&self.kind_bytes[i])),
            kind_msgs: std::array::from_fn(|i| l(&self.kind_msgs[i])),
        }
    }
}

impl std::ops::Sub for Snap {
    type Output = Snap;
    fn sub(self, o: Snap) -> Snap {
        Snap {
            sent_bytes: self.sent_bytes - o.sent_bytes,
            sent_msgs: self.sent_msgs - o.sent_msgs,
            recv_bytes: self.recv_bytes - o.recv_bytes,
            recv_msgs: self.recv_msgs - o.recv_msgs,
            kind_bytes: std::array::from_fn(|i| self.kind_bytes[i] - o.kind_bytes[i]),
            kind_msgs: std::array::from_fn(|i| self.kind_msgs[i] - o.kind_msgs[i]),
        }
    }
}

fn kind(m: &ChitchatMessage) -> usize {
    match m {
        ChitchatMessage::Syn { .. } => 0,
        ChitchatMessage::SynAck { .. } => 1,
        ChitchatMessage::Ack { .. } => 2,
        ChitchatMessage::BadCluster => 3,
    }
}

/// chitchat's in-memory transport, counting one node's traffic: sent
/// messages by kind and size (the serialized payload a UDP datagram would
/// carry), received ones.
struct CountingTransport {
    inner: ChannelTransport,
    counters: Arc<Counters>,
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    counters: Arc<Counters>,
}

// `Transport` and `Socket` are `#[async_trait]` traits; written out by hand
// here rather than adding async-trait to carpool's dependencies.
impl Transport for CountingTransport {
    fn open<'life0, 'async_trait>(
        &'life0 self,
        listen_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<Box<dyn Socket>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let inner = self.inner.open(listen_addr).await?;
            let socket: Box<dyn Socket> = Box::new(CountingSocket {
                inner,
                counters: self.counters.clone(),
            });
            Ok(socket)
        })
    }
}

impl Socket for CountingSocket {
    fn send<'life0, 'async_trait>(
        &'life0 mut self,
        to: SocketAddr,
        msg: ChitchatMessage,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let len = msg.serialized_len() as u64;
            let c = &self.counters;
            c.sent_bytes.fetch_add(len, Ordering::Relaxed);
            c.sent_msgs.fetch_add(1, Ordering::Relaxed);
            c.kind_bytes[kind(&msg)].fetch_add(len, Ordering::Relaxed);
            c.kind_msgs[kind(&msg)].fetch_add(1, Ordering::Relaxed);
            c.max_msg.fetch_max(len, Ordering::Relaxed);
            self.inner.send(to, msg).await
        })
    }

    fn recv<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> Pin<
        Box<
            dyn Future<Output = anyhow::Result<(SocketAddr, ChitchatMessage)>>
                + Send
                + 'async_trait,
        >,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            // cancellable: nothing after the one await
            let (from, msg) = self.inner.recv().await?;
            let c = &self.counters;
            c.recv_bytes
                .fetch_add(msg.serialized_len() as u64, Ordering::Relaxed);
            c.recv_msgs.fetch_add(1, Ordering::Relaxed);
            Ok((from, msg))
        })
    }
}

// ------------------------------------------------------- carpool's views

/// One frontend's view of one parent (carpool's `Observation`).
#[derive(Clone, PartialEq)]
struct View {
    alive: bool,
    epoch: u64,
    since_ms: u64,
    cause: &'static str,
}

impl View {
    /// `cluster::health::encode`.
    fn encode(&self) -> String {
        let state = if self.alive { "alive" } else { "dead" };
        let mut v = format!("{state} {} {}", self.epoch, self.since_ms);
        if !self.alive && !self.cause.is_empty() {
            v.push(' ');
            v.push_str(self.cause);
        }
        v
    }

    /// `cluster::health::decode`.
    fn decode(v: &str) -> Option<View> {
        let mut w = v.split(' ');
        let alive = match w.next()? {
            "alive" => true,
            "dead" => false,
            _ => return None,
        };
        Some(View {
            alive,
            epoch: w.next()?.parse().ok()?,
            since_ms: w.next()?.parse().ok()?,
            cause: if alive { "" } else { "peer" },
        })
    }

    /// `Observation::supersedes`.
    fn supersedes(&self, local: &View) -> bool {
        self.epoch > local.epoch || (self.epoch == local.epoch && !self.alive && local.alive)
    }
}

/// A frontend's parents: its current views and what it last published.
struct Frontend {
    views: Vec<View>,
    published: Vec<View>,
}

/// One state change, from the origin's `set` to every node's adoption.
struct Change {
    parent: usize,
    epoch: u64,
    origin: usize,
    t0: Instant,
    adopted: Vec<Option<Duration>>,
}

struct Node {
    handle: ChitchatHandle,
    counters: Arc<Counters>,
    frontend: Arc<Mutex<Frontend>>,
    _listener: chitchat::ListenerHandle,
    publisher: tokio::task::JoinHandle<()>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parent_name(j: usize) -> String {
    format!("cache{j:02}")
}

/// carpool's default node name is `HOSTNAME:PORT`.
fn node_name(i: usize) -> String {
    format!("frontend{i:02}.example.net:7946")
}

fn node_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 7946))
}

// ------------------------------------------------------------------ a run

struct Outcome {
    n: usize,
    p: usize,
    join: Duration,
    join_snap: Vec<Snap>,
    window: Duration,
    snap: Vec<Snap>,
    max_msg: u64,
    changes: usize,
    converged: Vec<Duration>,
    min_live: usize,
    cpu: f64,
    transport_bytes: u64,
}

async fn run(n: usize, p: usize, secs: u64, churn: Duration) -> anyhow::Result<Outcome> {
    let transport = ChannelTransport::default();
    let names: Arc<HashMap<String, usize>> = Arc::new((0..n).map(|i| (node_name(i), i)).collect());
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let generation = now_ms();
    let seeds: Vec<String> = (0..n.min(2)).map(|i| node_addr(i).to_string()).collect();
    let start = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let me = ChitchatId::new(node_name(i), generation, node_addr(i));
        let config = ChitchatConfig {
            chitchat_id: me,
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            listen_addr: node_addr(i),
            seed_nodes: seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: DEFAULT_GOSSIP_INTERVAL * 2,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let views: Vec<View> = (0..p)
            .map(|_| View {
                alive: true,
                epoch: 0,
                since_ms: generation,
                cause: "",
            })
            .collect();
        let initial = views
            .iter()
            .enumerate()
            .map(|(j, v)| (format!("{PARENT_PREFIX}{}", parent_name(j)), v.encode()))
            .collect();
        let frontend = Arc::new(Mutex::new(Frontend {
            published: views.clone(),
            views,
        }));
        let counters = Arc::new(Counters::default());
        let counting = CountingTransport {
            inner: transport.clone(),
            counters: counters.clone(),
        };
        let handle = spawn_chitchat(config, initial, &counting).await?;
        let chitchat = handle.chitchat();
        // peers' views: adopted when newer (carpool's `Health::adopt`)
        let listener = {
            let frontend = frontend.clone();
            let names = names.clone();
            let changes = changes.clone();
            chitchat
                .lock()
                .await
                .subscribe_event(PARENT_PREFIX, move |event| {
                    let t = Instant::now();
                    let Some(&from) = names.get(&event.node.node_id) else {
                        return;
                    };
                    if from == i {
                        return;
                    }
                    let (Some(j), Some(seen)) = (
                        event
                            .key
                            .strip_prefix("cache")
                            .and_then(|s| s.parse::<usize>().ok()),
                        View::decode(event.value),
                    ) else {
                        return;
                    };
                    let mut f = frontend.lock().unwrap();
                    if j >= f.views.len() || !seen.supersedes(&f.views[j]) {
                        return;
                    }
                    let epoch = seen.epoch;
                    f.views[j] = seen;
                    drop(f);
                    let mut cs = changes.lock().unwrap();
                    if let Some(c) = cs
                        .iter_mut()
                        .rev()
                        .find(|c| c.parent == j && c.epoch == epoch)
                    {
                        if c.adopted[i].is_none() {
                            c.adopted[i] = Some(t - c.t0);
                        }
                    }
                })
        };
        // republishing (carpool's 20 ms publish loop)
        let publisher = {
            let frontend = frontend.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PUBLISH_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let mut cc = chitchat.lock().await;
                    let mut f = frontend.lock().unwrap();
                    let f = &mut *f;
                    for j in 0..f.views.len() {
                        if f.views[j] != f.published[j] {
                            cc.self_node_state().set(
                                format!("{PARENT_PREFIX}{}", parent_name(j)),
                                f.views[j].encode(),
                            );
                            f.published[j] = f.views[j].clone();
                        }
                    }
                }
            })
        };
        nodes.push(Node {
            handle,
            counters,
            frontend,
            _listener: listener,
            publisher,
        });
    }

    // join: every node sees all N nodes live and all N × P keys
    let deadline = start + Duration::from_secs(60);
    loop {
        let mut done = true;
        for node in &nodes {
            let cc = node.handle.chitchat();
            let cc = cc.lock().await;
            let live = cc.live_nodes().count();
            let keys: usize = cc
                .node_states()
                .values()
                .map(|s| s.iter_prefix(PARENT_PREFIX).count())
                .sum();
            if live < n || keys < n * p {
                done = false;
                break;
            }
        }
        if done {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("N={n} P={p}: not joined after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let join = start.elapsed();
    let join_snap: Vec<Snap> = nodes.iter().map(|n| n.counters.snap()).collect();

    tokio::time::sleep(SETTLE).await;

    // measured window: churn, and the lowest live count any node reports
    let before: Vec<Snap> = nodes.iter().map(|n| n.counters.snap()).collect();
    let cpu0 = cpu_seconds();
    let w0 = Instant::now();
    let mut rng = StdRng::seed_from_u64((n * 1000 + p) as u64);
    let mut next_change = w0 + churn / 2;
    let mut min_live = n;
    let end = w0 + Duration::from_secs(secs);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_change {
            next_change += churn;
            let origin = rng.gen_range(0..n);
            let j = rng.gen_range(0..p);
            let node = &nodes[origin];
            let cc = node.handle.chitchat();
            let mut cc = cc.lock().await;
            let mut f = node.frontend.lock().unwrap();
            let old = &f.views[j];
            let new = View {
                alive: !old.alive,
                epoch: old.epoch + 1,
                since_ms: now_ms(),
                cause: if old.alive { "timeout" } else { "" },
            };
            cc.self_node_state()
                .set(format!("{PARENT_PREFIX}{}", parent_name(j)), new.encode());
            changes.lock().unwrap().push(Change {
                parent: j,
                epoch: new.epoch,
                origin,
                t0: Instant::now(),
                adopted: vec![None; n],
            });
            f.views[j] = new.clone();
            f.published[j] = new;
        }
        for node in &nodes {
            let cc = node.handle.chitchat();
            let live = cc.lock().await.live_nodes().count();
            min_live = min_live.min(live);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = w0.elapsed();
    let cpu = (cpu_seconds() - cpu0) / window.as_secs_f64();
    let after: Vec<Snap> = nodes.iter().map(|n| n.counters.snap()).collect();
    let max_msg = nodes
        .iter()
        .map(|n| n.counters.max_msg.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    // let the last change arrive (not counted in the window's bytes)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let transport_bytes = transport.statistics().num_bytes_total;
    for node in nodes {
        node.publisher.abort();
        node.handle.shutdown().await?;
    }
    let cs = changes.lock().unwrap();
    let converged: Vec<Duration> = cs
        .iter()
        .filter_map(|c| {
            (0..n)
                .filter(|&k| k != c.origin)
                .map(|k| c.adopted[k])
                .collect::<Option<Vec<_>>>()
                .map(|v| v.into_iter().max().unwrap_or_default())
        })
        .collect();
    Ok(Outcome {
        n,
        p,
        join,
        join_snap,
        window,
        snap: after.iter().zip(&before).map(|(a, b)| *a - *b).collect(),
        max_msg,
        changes: cs.len(),
        converged,
        min_live,
        cpu,
        transport_bytes,
    })
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ------------------------------------------------------------ reporting

fn fmt_bytes(b: f64) -> String {
    if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The table row of `o`, and a line of details.
fn report(o: &Outcome) -> (String, String) {
    let secs = o.window.as_secs_f64();
    let nf = o.n as f64;
    let per_node = |f: &dyn Fn(&Snap) -> u64| o.snap.iter().map(f).sum::<u64>() as f64 / nf / secs;
    let sent = per_node(&|s| s.sent_bytes);
    let recv = per_node(&|s| s.recv_bytes);
    let msgs = per_node(&|s| s.sent_msgs + s.recv_msgs);
    let busiest = o
        .snap
        .iter()
        .map(|s| s.sent_bytes + s.recv_bytes)
        .max()
        .unwrap_or(0) as f64
        / secs;
    let mut conv = o.converged.clone();
    conv.sort();
    let (med, max) = if conv.is_empty() {
        ("-".to_string(), "-".to_string())
    } else {
        (ms(conv[conv.len() / 2]), ms(conv[conv.len() - 1]))
    };
    let join_bytes = o
        .join_snap
        .iter()
        .map(|s| s.sent_bytes + s.recv_bytes)
        .sum::<u64>() as f64
        / nf;
    let total: Snap = o.snap.iter().fold(Snap::default(), |a, s| a + *s);
    let sizes: Vec<String> = (0..3)
        .map(|k| {
            let m = total.kind_msgs[k].max(1);
            format!("{} {} B", KINDS[k], total.kind_bytes[k] / m)
        })
        .collect();
    let row = format!(
        "| {} | {} | {}/s | {}/s | {}/s | {}/s | {:.0} | {} / {} | {}/{} | {} ({}) | {} ({}) | {:.0}% |",
        o.n,
        o.p,
        fmt_bytes(sent + recv),
        fmt_bytes(sent),
        fmt_bytes(recv),
        fmt_bytes(busiest),
        msgs,
        med,
        max,
        o.converged.len(),
        o.changes,
        ms(o.join),
        fmt_bytes(join_bytes),
        fmt_bytes(o.max_msg as f64),
        if o.max_msg > ETHERNET_UDP_PAYLOAD {
            "fragments"
        } else {
            "fits"
        },
        o.cpu * 100.0,
    );
    let details = format!(
        "N={} P={}: mean message sizes {}; lowest live count seen {} of {}; \
         chitchat's own transport count {} B in all",
        o.n,
        o.p,
        sizes.join(", "),
        o.min_live,
        o.n,
        o.transport_bytes,
    );
    (row, details)
}

impl std::ops::Add for Snap {
    type Output = Snap;
    fn add(self, o: Snap) -> Snap {
        Snap {
            sent_bytes: self.sent_bytes + o.sent_bytes,
            sent_msgs: self.sent_msgs + o.sent_msgs,
            recv_bytes: self.recv_bytes + o.recv_bytes,
            recv_msgs: self.recv_msgs + o.recv_msgs,
            kind_bytes: std::array::from_fn(|i| self.kind_bytes[i] + o.kind_bytes[i]),
            kind_msgs: std::array::from_fn(|i| self.kind_msgs[i] + o.kind_msgs[i]),
        }
    }
}

fn list(v: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| x.trim().parse().expect("a comma-separated list of numbers"))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let mut nodes = vec![3, 10, 50];
    let mut parents = vec![10, 50];
    let mut secs = 20;
    let mut churn_ms = 2000;
    let mut threads = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--nodes" => nodes = list(&v()),
            "--parents" => parents = list(&v()),
            "--secs" => secs = v().parse()?,
            "--churn-ms" => churn_ms = v().parse()?,
            "--threads" => threads = v().parse()?,
            _ => anyhow::bail!(
                "usage: gossip_overhead [--nodes 3,10,50] [--parents 10,50] [--secs 20] \
                 [--churn-ms 2000] [--threads 1]"
            ),
        }
    }
    // all nodes on one thread by default, as each carpool frontend runs its
    // one node on a current-thread runtime of its own
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    println!(
        "gossip interval {:?}, cluster id {DEFAULT_CLUSTER_ID:?}, seeds: the first two nodes; \
         window {secs} s per run, one parent changes state every {churn_ms} ms, \
         runtime threads {threads}",
        DEFAULT_GOSSIP_INTERVAL
    );
    let mut rows = Vec::new();
    let mut details = Vec::new();
    for &n in &nodes {
        for &p in &parents {
            eprintln!("N={n} P={p}: {secs} s after the join ...");
            let o = rt.block_on(run(n, p, secs, Duration::from_millis(churn_ms)))?;
            let (row, detail) = report(&o);
            eprintln!("{row}");
            rows.push(row);
            details.push(detail);
        }
    }
    println!();
    println!(
        "| N | P | per node, sent+recv | sent | recv | busiest node | msgs/s per node | convergence median / max | changes converged | join time (bytes per node) | largest message (vs 1472 B) | CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!();
    for d in details {
        println!("- {d}");
    }
    Ok(())
}
