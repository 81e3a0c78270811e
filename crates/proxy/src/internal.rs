//! The server's own pages, for clients on this host only (like Squid's
//! cache manager on its `http_port`): `GET /carpool-internal/metrics`, the
//! server's metrics in Prometheus' text format (the layer's families and
//! the role's), logged; `?poll`, the same unlogged (`carpool up`'s own
//! poll). A request for them from elsewhere goes the normal way.

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use httpx::RequestHead;

use crate::metrics::{self, Families};
use crate::role::Role;
use crate::session::{Next, Session};
use crate::worker::Worker;

/// Where the metrics are.
pub const METRICS_PATH: &[u8] = b"/carpool-internal/metrics";
/// The metrics for `carpool up`'s admin listener, which asks every few
/// seconds: answered like [`METRICS_PATH`] but not written to the access
/// log (a line per poll per component would bury the clients' lines).
pub const POLL_PATH: &[u8] = b"/carpool-internal/metrics?poll";

/// Whether `head` asks for one of the server's own pages, from this host.
pub(crate) fn is_internal(head: &RequestHead, client: IpAddr) -> bool {
    client.is_loopback() && head.target().starts_with(b"/carpool-internal/")
}

/// Answers a request for the server's own pages.
pub(crate) async fn answer<R: Role>(w: &Worker<R>, s: &mut Session, head: &RequestHead) -> Next {
    s.log.internal = true;
    let (status, content_type, body) = if head.method() != b"GET" && head.method() != b"HEAD" {
        (405, "text/plain", "only GET\n".to_string())
    } else if head.target() == METRICS_PATH || head.target() == POLL_PATH {
        s.log.unlogged = head.target() == POLL_PATH;
        (200, metrics::CONTENT_TYPE, metrics_text(w))
    } else {
        (
            404,
            "text/plain",
            "not found: try /carpool-internal/metrics\n".to_string(),
        )
    };
    // one answer per connection: a scrape is rare, and a body it might
    // carry is never read
    let mut out = s.head_buffer();
    let mut h = String::new();
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let _ = write!(
        h,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len(),
    );
    out.extend_from_slice(h.as_bytes());
    if head.method() != b"HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    s.log.status = status;
    s.send(out).await;
    Next::Close
}

/// The server's metrics now.
fn metrics_text<R: Role>(w: &Worker<R>) -> String {
    let snap = w.metrics.snapshot(w.open.load(Ordering::Relaxed));
    let mut f = Families::new(&w.settings.component);
    metrics::server_families(&mut f, &snap, &w.settings.listener_name);
    w.role.metrics(&snap, &mut f);
    f.encode()
}
