//! PURGE: removes a URL's stored object (with a `Vary` marker, every
//! variant: they become unreachable). 200 when something was removed, 404
//! when nothing was stored. (Who may PURGE, `purge_clients`, the request
//! layer's access checks decided before.)

use cache_store::Key;
use proxy::log::Code;
use proxy::{Next, Request, Session};

use super::Worker;

/// Answers a PURGE.
pub(super) async fn purge(w: &Worker, s: &mut Session, req: &Request) -> Next {
    let cache = &w.cache;
    let base = req.uri.effective();
    let removed = cache.store.remove(Key::of(base), base);
    tracing::info!(url = %String::from_utf8_lossy(base), removed, "PURGE");
    s.log.code = Code::Miss;
    s.log.class = "purge";
    s.log.status = if removed { 200 } else { 404 };
    let keep = s.keep_alive(&req.head);
    let mut out = s.head_buffer();
    out.extend_from_slice(if removed {
        b"HTTP/1.1 200 OK\r\n".as_slice()
    } else {
        b"HTTP/1.1 404 Not Found\r\n".as_slice()
    });
    out.extend_from_slice(b"Content-Length: 0\r\n");
    if !keep {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let sent = s.send(out).await;
    Next::keep_if(sent && keep)
}
