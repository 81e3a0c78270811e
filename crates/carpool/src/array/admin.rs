//! The admin listener of `carpool up` (loopback by default):
//!
//! - `GET /status`: the array's components, one per line (`name address
//!   state restarts=N`);
//! - `GET /metrics`: the whole array's metrics in Prometheus' text format:
//!   each component's own (`/carpool-internal/metrics` on its listener,
//!   every sample labelled with its `component`), merged family by family,
//!   and the supervisor's (`carpool_component_up`, `_restarts_total`);
//!
//! anything else is 404. Plain HTTP/1.1, one request per connection: it is
//! for people, scripts and Prometheus, not for load.

use std::cell::RefCell;
use std::fmt::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One component as the admin listener sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `frontend`, or the cache's name.
    pub name: String,
    /// Where its listener is reached from this host.
    pub addr: SocketAddr,
    /// Whether it runs now.
    pub running: bool,
    /// Times it was restarted.
    pub restarts: u32,
}

/// What the admin listener shows: the supervisor rewrites it as its
/// children change.
#[derive(Debug, Default)]
pub struct State {
    /// `/status`, one line per component.
    pub lines: String,
    /// The components.
    pub targets: Vec<Target>,
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

/// Serves the admin listener forever.
pub async fn serve(listener: TcpListener, status: Status) {
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
            let (code, content_type, body) = if buf.starts_with(b"GET /status ") {
                ("200 OK", "text/plain", status.borrow().lines.clone())
            } else if buf.starts_with(b"GET /metrics ") {
                let targets = status.borrow().targets.clone();
                (
                    "200 OK",
                    proxy::metrics::CONTENT_TYPE,
                    metrics(&targets).await,
                )
            } else {
                let text = "not found: try GET /status or GET /metrics\n".to_string();
                ("404 Not Found", "text/plain", text)
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// The array's metrics: every component scraped at once, merged.
async fn metrics(targets: &[Target]) -> String {
    // each scrape a task of its own: a slow component costs its own
    // timeout, not the sum
    let tasks: Vec<_> = targets
        .iter()
        .map(|t| {
            let t = t.clone();
            tokio::task::spawn_local(async move {
                if !t.running {
                    return None;
                }
                match tokio::time::timeout(SCRAPE_TIMEOUT, scrape(t.addr)).await {
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

/// `GET /carpool-internal/metrics` from a component's listener.
async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        b"GET /carpool-internal/metrics HTTP/1.1\r\nHost: carpool\r\nConnection: close\r\n\r\n",
    )
    .await?;
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
