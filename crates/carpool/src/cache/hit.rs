//! Answering from a stored object: a 304 for a conditional request it
//! satisfies, 206 or 416 for a `Range`, else the object itself (HEAD: its
//! head), from memory or from disk. A body on disk not known sound yet (the
//! store found it at start) is checked against its block checksums: the
//! part the request needs first before the lookup counts as a hit
//! ([`check_ahead`]), the rest as it is sent; damage found after the head
//! went out aborts the connection.

use std::io;

use cache_store::Body;
use httpx::body;
use httpx::headers::Framing;
use httpx::RequestHead;
use proxy::log::Code;
use proxy::{Next, Session};

use super::meta::Meta;
use super::policy;
use super::respond::{self, Ranges, Reply, Served};
use super::Worker;

/// Bytes of a stored body checked before a lookup counts as a hit, when
/// the body still needs checking: damage there makes the request a miss;
/// damage further on is found while the body is sent, and aborts it.
const CHECK_BEFORE_HEAD: u64 = 8 << 20;

/// Checks, before anything is sent, the part of a stored `body` that the
/// request `head` gets first: the ranges it asks for, else the start of the
/// body, up to [`CHECK_BEFORE_HEAD`] bytes in all (nothing for a HEAD, or
/// a body known sound). False: it failed, the store dropped the object,
/// and the request is a miss.
pub(super) fn check_ahead(head: &RequestHead, body: &Body) -> bool {
    if body.is_checked() || head.method() == b"HEAD" {
        return true;
    }
    let total = body.len();
    let ranges = match head.fields.get("range") {
        Some(v) => match respond::parse_range(v, total) {
            respond::Ranges::Some(r) => r,
            _ => vec![(0, total.saturating_sub(1))],
        },
        None => vec![(0, total.saturating_sub(1))],
    };
    let mut budget = CHECK_BEFORE_HEAD;
    for (a, b) in ranges {
        let n = (b + 1).saturating_sub(a).min(budget);
        if n == 0 {
            break;
        }
        if let Err(e) = body.check(a, n) {
            // The store logged the damage (key, block, reason) when it was
            // a bad block; an I/O error is logged here.
            if e.kind() != io::ErrorKind::InvalidData {
                tracing::warn!(err = %e, "cannot read stored object");
            }
            return false;
        }
        budget -= n;
    }
    true
}

/// Why sending a stored body failed, for the access log.
fn send_failure(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::InvalidData => "stored object failed its checksum",
        io::ErrorKind::UnexpectedEof => "stored object damaged",
        _ => "client stopped reading the response",
    }
}

/// A stored object: its body and record.
#[derive(Clone, Copy)]
pub(super) struct Object<'a> {
    /// The body.
    pub(super) body: &'a Body,
    /// The record.
    pub(super) meta: &'a Meta,
}

/// Serves a stored object to the request `head`, logged and labelled as
/// `served`.
pub(super) async fn serve_hit(
    w: &Worker,
    s: &mut Session,
    head: &RequestHead,
    obj: Object<'_>,
    served: Served,
) -> Next {
    let m = obj.meta;
    let keep = s.keep_alive(head);
    let reply = Reply::start(s, head, m, served, w.cache.layer.via.entry(), keep);
    if m.status == 200 && policy::not_modified_for(m, &head.fields) {
        if served.code != Code::RefreshUnmodified {
            s.log.code = Code::ImsHit;
        }
        return not_modified(s, &reply).await;
    }
    if let Some(next) = ranged(w, s, head, obj, &reply).await {
        return next;
    }
    whole(w, s, head, obj, &reply).await
}

/// A 304 from the stored record.
pub(super) async fn not_modified(s: &mut Session, reply: &Reply<'_>) -> Next {
    let mut out = s.head_buffer();
    respond::head_304(&mut out, reply);
    s.log.status = 304;
    if s.send(out).await {
        Next::keep_if(reply.keep)
    } else {
        Next::Close
    }
}

/// The answer to a `Range` the object can take (206, or 416 when no range
/// overlaps it); `None` when the whole object goes instead (no `Range`, a
/// HEAD, not a 200, an `If-Range` that does not match, a `Range` that is
/// malformed or asks too much).
async fn ranged(
    w: &Worker,
    s: &mut Session,
    head: &RequestHead,
    obj: Object<'_>,
    reply: &Reply<'_>,
) -> Option<Next> {
    let range = head.fields.get("range")?;
    if head.method() == b"HEAD"
        || obj.meta.status != 200
        || !respond::if_range_allows(obj.meta, &head.fields)
    {
        return None;
    }
    let total = obj.body.len();
    let ranges = match respond::parse_range(range, total) {
        Ranges::Whole => return None,
        Ranges::Unsatisfiable => {
            let mut out = s.head_buffer();
            respond::head_416(&mut out, reply, total);
            s.log.status = 416;
            let sent = s.send(out).await;
            return Some(Next::keep_if(sent && reply.keep));
        }
        Ranges::Some(ranges) => ranges,
    };
    let len = match ranges.as_slice() {
        [(a, b)] => b - a + 1,
        _ => respond::multipart_len(obj.meta, &ranges, total),
    };
    let mut out = s.head_buffer();
    respond::head_206(&mut out, reply, &ranges, total, len);
    s.log.status = 206;
    if !s.send(out).await {
        return Some(Next::Close);
    }
    let idle = w.cache.settings.server.body_idle_timeout;
    let sent = respond::send_ranges(
        &mut s.client.stream,
        obj.meta,
        obj.body,
        &ranges,
        total,
        idle,
    )
    .await;
    if let Err(e) = sent {
        s.log.reason = send_failure(&e);
        return Some(Next::Close);
    }
    s.log.bytes += len;
    Some(Next::keep_if(reply.keep))
}

/// The whole object (HEAD: its head only).
async fn whole(
    w: &Worker,
    s: &mut Session,
    head: &RequestHead,
    obj: Object<'_>,
    reply: &Reply<'_>,
) -> Next {
    let total = obj.body.len();
    let is_head = head.method() == b"HEAD";
    let mut out = s.head_buffer();
    respond::head_full(&mut out, reply, Framing::Length(total));
    s.log.bytes += out.len() as u64 + if is_head { 0 } else { total };
    let stream = &mut s.client.stream;
    let result = match obj.body {
        _ if is_head => tokio::io::AsyncWriteExt::write_all(stream, &out).await,
        Body::Memory(b) => body::write_head_and_body(stream, &mut out, b).await,
        Body::Disk(_) => match tokio::io::AsyncWriteExt::write_all(stream, &out).await {
            Ok(()) => {
                let idle = w.cache.settings.server.body_idle_timeout;
                respond::send_body(stream, obj.body, 0, total, idle).await
            }
            Err(e) => Err(e),
        },
    };
    s.keep_buffer(out);
    match result {
        Ok(()) => Next::keep_if(reply.keep),
        Err(e) => {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                tracing::warn!(url = %String::from_utf8_lossy(s.log.url()), "stored body shorter than its record: dropped");
            }
            s.log.reason = send_failure(&e);
            Next::Close
        }
    }
}
