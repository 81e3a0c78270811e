//! The admin listener of `carpool up` (loopback by default):
//!
//! - `GET /`: the dashboard ([`crate::status::DASHBOARD`]), which polls
//!   `/status`;
//! - `GET /status`: the array now, as JSON ([`crate::status::model`]):
//!   members with expected and actual shares, caches, processes, history;
//! - `GET /metrics`: the whole array's metrics in Prometheus' text format:
//!   each component's own (`/carpool-internal/metrics` on its listener,
//!   every sample labelled with its `component`), merged family by family,
//!   and the supervisor's (`carpool_component_up`, `_restarts_total`);
//!
//! anything else is 404. Plain HTTP/1.1, one request per connection: it is
//! for people, scripts and Prometheus, not for load. Every
//! [`POLL_INTERVAL`] it asks the components for their metrics and keeps a
//! few minutes of them ([`History`]) for rates and shares.

use std::cell::RefCell;
use std::fmt::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Component;
use crate::status::exposition;
use crate::status::history::History;
use crate::status::model::Process;
use crate::status::unix_now;

/// One component as the admin listener sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `frontend`, or the cache's name.
    pub name: String,
    /// Frontend or cache.
    pub kind: Component,
    /// Its listen address as configured.
    pub listen: SocketAddr,
    /// Where its listener is reached from this host.
    pub addr: SocketAddr,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// When it was (last) started, while it runs.
    pub started: Option<Instant>,
    /// Waiting to be restarted.
    pub restarting: bool,
    /// Times it was restarted.
    pub restarts: u32,
}

impl Target {
    /// Whether it runs now.
    pub fn running(&self) -> bool {
        self.pid.is_some()
    }

    fn process(&self) -> Process {
        Process {
            name: self.name.clone(),
            kind: match self.kind {
                Component::Frontend => "frontend",
                Component::Cache => "cache",
            }
            .to_string(),
            address: self.listen.to_string(),
            state: if self.running() {
                "running"
            } else if self.restarting {
                "restarting"
            } else {
                "stopped"
            }
            .to_string(),
            pid: self.pid,
            uptime_seconds: self.started.map(|s| s.elapsed().as_secs_f64()),
            restarts: self.restarts,
        }
    }
}

/// What the admin listener shows: the supervisor rewrites the targets as
/// its children change; the poller adds to the history.
#[derive(Debug)]
pub struct State {
    /// The components.
    pub targets: Vec<Target>,
    /// What the components' metrics said over the last minutes.
    pub history: History,
    /// The components the last poll heard from.
    pub polled: Vec<String>,
}

impl Default for State {
    fn default() -> Self {
        State {
            targets: Vec::new(),
            history: History::new(unix_now()),
            polled: Vec::new(),
        }
    }
}

impl State {
    /// Whether the last poll is recent and heard from every component
    /// running now (one started since was not asked).
    fn fresh(&self) -> bool {
        let recent = self
            .history
            .last_at()
            .is_some_and(|at| unix_now() - at < FRESH.as_secs_f64());
        recent
            && self
                .targets
                .iter()
                .filter(|t| t.running())
                .all(|t| self.polled.contains(&t.name))
    }
}

/// The admin listener's view, shared with the supervisor.
pub type Status = Rc<RefCell<State>>;

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a component has to answer a scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest metrics text read from one component.
const MAX_SCRAPE: usize = 16 << 20;
/// How often the components are asked for their metrics (the history's
/// resolution).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// A `/status` within this time of the last poll answers from it; later,
/// it polls first (so a script sees what it just sent).
const FRESH: Duration = Duration::from_millis(250);

/// Serves the admin listener forever (and polls the components).
pub async fn serve(listener: TcpListener, status: Status) {
    tokio::task::spawn_local(poll_forever(status.clone()));
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let status = status.clone();
        tokio::task::spawn_local(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(READ_TIMEOUT, async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
            let mut words = line.split(|&b| b == b' ');
            let (method, target) = (
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
            );
            let path = target.split(|&b| b == b'?').next().unwrap_or_default();
            let (code, content_type, body) = match (method, path) {
                (b"GET", b"/" | b"/index.html") => (
                    "200 OK",
                    "text/html; charset=utf-8",
                    crate::status::DASHBOARD.to_string(),
                ),
                (b"GET", b"/status") => {
                    if !status.borrow().fresh() {
                        poll(&status).await;
                    }
                    let st = status.borrow();
                    let processes = st.targets.iter().map(Target::process).collect();
                    let view = st.history.status(processes);
                    let json = serde_json::to_string_pretty(&view)
                        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
                    ("200 OK", "application/json", json + "\n")
                }
                (b"GET", b"/metrics") => {
                    let targets = status.borrow().targets.clone();
                    (
                        "200 OK",
                        proxy::metrics::CONTENT_TYPE,
                        metrics(&targets).await,
                    )
                }
                (b"GET", _) => {
                    let text = "not found: try GET / (the dashboard), /status (JSON) or /metrics (Prometheus)\n".to_string();
                    ("404 Not Found", "text/plain", text)
                }
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "only GET is answered here\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// Polls the components every [`POLL_INTERVAL`] (less often when
/// `/status` requests poll in between).
async fn poll_forever(status: Status) {
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let due = status
            .borrow()
            .history
            .last_at()
            .is_none_or(|at| unix_now() - at >= POLL_INTERVAL.as_secs_f64() * 0.9);
        if due {
            poll(&status).await;
        }
    }
}

/// Asks every running component for its metrics and records the answers.
async fn poll(status: &Status) {
    let targets = status.borrow().targets.clone();
    let texts = scrape_all(&targets, true).await;
    let samples = texts
        .iter()
        .flatten()
        .flat_map(|t| exposition::parse(t))
        .collect();
    let mut st = status.borrow_mut();
    st.history.record(unix_now(), samples);
    st.polled = targets
        .iter()
        .zip(&texts)
        .filter(|(_, text)| text.is_some())
        .map(|(t, _)| t.name.clone())
        .collect();
}

/// Every running component's metrics text, scraped at once (`None` for
/// one that is not running or did not answer in time); `quiet`: unlogged.
async fn scrape_all(targets: &[Target], quiet: bool) -> Vec<Option<String>> {
    // each scrape a task of its own: a slow component costs its own
    // timeout, not the sum
    let tasks: Vec<_> = targets
        .iter()
        .map(|t| {
            let t = t.clone();
            tokio::task::spawn_local(async move {
                if !t.running() {
                    return None;
                }
                match tokio::time::timeout(SCRAPE_TIMEOUT, scrape(t.addr, quiet)).await {
                    Ok(Ok(text)) => Some(text),
                    Ok(Err(e)) => {
                        tracing::warn!(component = %t.name, error = %e, "metrics: scrape failed");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(component = %t.name, "metrics: scrape timed out");
                        None
                    }
                }
            })
        })
        .collect();
    let mut texts = Vec::with_capacity(tasks.len());
    for t in tasks {
        texts.push(t.await.ok().flatten());
    }
    texts
}

/// The array's metrics: every component scraped at once, merged.
async fn metrics(targets: &[Target]) -> String {
    let texts = scrape_all(targets, false).await;
    let mut own = String::new();
    own.push_str("# HELP carpool_component_up 1 when the component runs and answered this scrape.\n# TYPE carpool_component_up gauge\n");
    for (t, text) in targets.iter().zip(&texts) {
        let _ = writeln!(
            own,
            "carpool_component_up{{component=\"{}\"}} {}",
            label_value(&t.name),
            u8::from(text.is_some())
        );
    }
    own.push_str("# HELP carpool_component_restarts_total Times the supervisor restarted the component.\n# TYPE carpool_component_restarts_total counter\n");
    for t in targets {
        let _ = writeln!(
            own,
            "carpool_component_restarts_total{{component=\"{}\"}} {}",
            label_value(&t.name),
            t.restarts
        );
    }
    let mut parts = vec![own];
    parts.extend(texts.into_iter().flatten());
    merge(&parts)
}

/// `GET /carpool-internal/metrics` from a component's listener; `quiet`:
/// the poll's, kept out of the component's access log.
async fn scrape(addr: SocketAddr, quiet: bool) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let path = if quiet {
        proxy::internal::POLL_PATH
    } else {
        proxy::internal::METRICS_PATH
    };
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(path);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: carpool\r\nConnection: close\r\n\r\n");
    s.write_all(&req).await?;
    let mut buf = Vec::new();
    (&mut s)
        .take(MAX_SCRAPE as u64)
        .read_to_end(&mut buf)
        .await?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(std::io::Error::other("no response head"));
    };
    if !head.starts_with("HTTP/1.1 200") {
        let line = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("answered {line:?}")));
    }
    Ok(body.to_string())
}

/// A label value with `\`, `"` and newlines escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Merges expositions family by family: each family's `# HELP` and `#
/// TYPE` once, then its samples from every part, in the order the
/// families first appear.
pub fn merge(parts: &[String]) -> String {
    // family name → (help/type lines, sample lines)
    let mut order: Vec<String> = Vec::new();
    let mut families: std::collections::HashMap<String, (Vec<String>, Vec<String>)> =
        Default::default();
    for part in parts {
        let mut current = String::new();
        for line in part.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let entry = families.entry(name.clone()).or_insert_with(|| {
                    order.push(name.clone());
                    Default::default()
                });
                if !entry.0.iter().any(|l| l == line) {
                    entry.0.push(line.to_string());
                }
                current = name;
            } else if line.starts_with('#') || line.trim().is_empty() {
                continue;
            } else {
                let sample = line.split(['{', ' ']).next().unwrap_or_default();
                let name = if current.is_empty() || !sample.starts_with(current.as_str()) {
                    sample.to_string()
                } else {
                    current.clone()
                };
                let entry = families.entry(name.clone()).or_insert_with(|| {
                    order.push(name.clone());
                    Default::default()
                });
                entry.1.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for name in order {
        if let Some((meta, samples)) = families.get(&name) {
            for l in meta.iter().chain(samples) {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn families_merge_with_one_header_each() {
        let a = "# HELP x_total X.\n# TYPE x_total counter\nx_total{component=\"a\"} 1\n# HELP g G.\n# TYPE g gauge\ng{component=\"a\"} 2\n";
        let b = "# HELP x_total X.\n# TYPE x_total counter\nx_total{component=\"b\"} 3\n# HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.1\nh_seconds_count 1\n";
        let m = merge(&[a.to_string(), b.to_string()]);
        assert_eq!(
            m,
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{component=\"a\"} 1\nx_total{component=\"b\"} 3\n\
             # HELP g G.\n# TYPE g gauge\ng{component=\"a\"} 2\n\
             # HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.1\nh_seconds_count 1\n"
        );
    }
}
