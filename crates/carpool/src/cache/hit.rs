//! Answering from a stored object (fresh hits, 304s, ranges) and from an
//! object still being filled (following a fill as it is written).

use std::rc::Rc;
use std::time::SystemTime;

use cache_store::Body;
use httpx::body;
use httpx::conn::Conn;
use httpx::{RequestHead, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::fill::{End, Progress};
use super::meta::Meta;
use super::policy;
use super::respond::{self, Framing, Ranges, Reply};
use super::serve::{Next, Record};
use super::Worker;

/// Bytes read from a partly stored object per write to the client.
const FOLLOW_CHUNK: usize = 64 * 1024;

/// Serves a stored object: 304 for a satisfied conditional request, 206 or
/// 416 for a `Range`, else the object (HEAD: its head).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_hit(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    body: &Body,
    m: &Meta,
    now: SystemTime,
    code: &'static str,
    x_cache: &'static str,
    rec: &mut Record,
) -> Next {
    let settings = &w.cache.settings;
    rec.code = code;
    rec.status = m.status;
    rec.stored_type(m);
    let total = match body {
        Body::Memory(b) => b.len() as u64,
        Body::Disk(d) => d.len(),
    };
    let keep = crate::server::keep_client(&w.stop, head);
    let reply = Reply {
        meta: m,
        age: m.age(now).as_secs(),
        x_cache,
        via: &w.cache.via,
        keep,
        version: head.version,
    };
    let mut out = rec.head_buffer();
    let is_head = head.method() == b"HEAD";
    let next = if keep { Next::KeepAlive } else { Next::Close };
    if m.status == 200 && policy::not_modified_for(m, &head.fields) {
        respond::head_304(&mut out, &reply);
        rec.status = 304;
        if code != "TCP_REFRESH_UNMODIFIED" {
            rec.code = "TCP_IMS_HIT";
        }
        let ok = client.stream.write_all(&out).await.is_ok();
        rec.bytes += out.len() as u64;
        rec.keep_buffer(out);
        return if ok { next } else { Next::Close };
    }
    if let (Some(range), false, 200) = (head.fields.get("range"), is_head, m.status) {
        if respond::if_range_allows(m, &head.fields) {
            match respond::parse_range(range, total) {
                Ranges::Whole => {}
                Ranges::Unsatisfiable => {
                    respond::head_416(&mut out, &reply, total);
                    rec.status = 416;
                    let ok = client.stream.write_all(&out).await.is_ok();
                    rec.bytes += out.len() as u64;
                    rec.keep_buffer(out);
                    return if ok { next } else { Next::Close };
                }
                Ranges::Some(ranges) => {
                    let len = match ranges.as_slice() {
                        [(s, e)] => e - s + 1,
                        _ => respond::multipart_len(m, &ranges, total),
                    };
                    respond::head_206(&mut out, &reply, &ranges, total, len);
                    rec.status = 206;
                    let mut ok = client.stream.write_all(&out).await.is_ok();
                    rec.bytes += out.len() as u64;
                    rec.keep_buffer(out);
                    if ok {
                        let r = respond::send_ranges(
                            &mut client.stream,
                            m,
                            body,
                            &ranges,
                            total,
                            settings.body_idle_timeout,
                        )
                        .await;
                        ok = r.is_ok();
                        if ok {
                            rec.bytes += len;
                        } else {
                            rec.reason = "client stopped reading the response";
                        }
                    }
                    return if ok { next } else { Next::Close };
                }
            }
        }
    }
    respond::head_full(&mut out, &reply, Framing::Length(total));
    rec.bytes += out.len() as u64 + if is_head { 0 } else { total };
    let result = match body {
        _ if is_head => client.stream.write_all(&out).await,
        Body::Memory(b) => body::write_head_and_body(&client.stream, &mut out, b).await,
        Body::Disk(_) => match client.stream.write_all(&out).await {
            Ok(()) => {
                respond::send_body(
                    &mut client.stream,
                    body,
                    0,
                    total,
                    settings.body_idle_timeout,
                )
                .await
            }
            Err(e) => Err(e),
        },
    };
    rec.keep_buffer(out);
    match result {
        Ok(()) => next,
        Err(e) => {
            rec.reason = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                tracing::warn!(url = %String::from_utf8_lossy(&rec.url), "stored body shorter than its record: dropped");
                "stored object damaged"
            } else {
                "client stopped reading the response"
            };
            Next::Close
        }
    }
}

/// How following a fill ended.
pub(super) enum Followed {
    /// The client was answered.
    Done(Next),
    /// The stored object was refreshed: look it up again.
    Again,
    /// The fill is not shared (or failed before its head): fetch alone.
    Alone,
}

/// Streams an object from a fill in progress (or just finished).
pub(super) async fn follow(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    mut rx: watch::Receiver<Progress>,
    code: &'static str,
    x_cache: &'static str,
    rec: &mut Record,
) -> Followed {
    let waited = rx
        .wait_for(|p| p.object.is_some() || p.end != End::Open)
        .await
        .map(|p| p.clone());
    let p = match waited {
        Ok(p) => p,
        Err(_) => rx.borrow().clone(),
    };
    let Some(object) = p.object.clone() else {
        return match p.end {
            End::Refreshed | End::Complete => Followed::Again,
            _ => Followed::Alone,
        };
    };
    let (m, partial) = &*object;
    rec.code = code;
    rec.status = m.status;
    rec.stored_type(m);
    let settings = &w.cache.settings;
    let mut keep = crate::server::keep_client(&w.stop, head);
    let framing = match (p.len, p.end) {
        (Some(n), _) => Framing::Length(n),
        (None, End::Complete) => Framing::Length(p.written),
        _ if head.version == Version::Http11 => Framing::Chunked,
        _ => {
            keep = false;
            Framing::Close
        }
    };
    let reply = Reply {
        meta: m,
        age: m.age(SystemTime::now()).as_secs(),
        x_cache,
        via: &w.cache.via,
        keep,
        version: head.version,
    };
    let mut out = rec.head_buffer();
    let next = if keep { Next::KeepAlive } else { Next::Close };
    if m.status == 200 && policy::not_modified_for(m, &head.fields) {
        respond::head_304(&mut out, &reply);
        rec.status = 304;
        let ok = client.stream.write_all(&out).await.is_ok();
        rec.bytes += out.len() as u64;
        rec.keep_buffer(out);
        return Followed::Done(if ok { next } else { Next::Close });
    }
    respond::head_full(&mut out, &reply, framing);
    let ok = client.stream.write_all(&out).await.is_ok();
    rec.bytes += out.len() as u64;
    rec.keep_buffer(out);
    if !ok {
        return Followed::Done(Next::Close);
    }
    if head.method() == b"HEAD" {
        return Followed::Done(next);
    }
    let chunked = framing == Framing::Chunked;
    let mut buf = vec![0u8; FOLLOW_CHUNK];
    let mut off = 0u64;
    loop {
        let (written, end) = {
            let p = rx.borrow_and_update();
            (p.written, p.end)
        };
        while off < written {
            let want = ((written - off) as usize).min(buf.len());
            let n = match partial.read_at(off, &mut buf[..want]) {
                Ok(0) | Err(_) => {
                    rec.reason = "stored body unreadable while filling";
                    return Followed::Done(Next::Close);
                }
                Ok(n) => n,
            };
            let r = if chunked {
                let size = format!("{n:x}\r\n");
                write_parts(&mut client.stream, &[size.as_bytes(), &buf[..n], b"\r\n"]).await
            } else {
                tokio::time::timeout(
                    settings.body_idle_timeout,
                    client.stream.write_all(&buf[..n]),
                )
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            };
            if r.is_err() {
                rec.reason = "client stopped reading the response";
                return Followed::Done(Next::Close);
            }
            off += n as u64;
            rec.bytes += n as u64;
        }
        match end {
            End::Open => {}
            End::Complete if off >= written => break,
            End::Complete => continue,
            _ => {
                rec.reason = "origin broke during the response body";
                return Followed::Done(Next::Close);
            }
        }
        if rx.changed().await.is_err() && rx.borrow().end == End::Open {
            rec.reason = "fill abandoned";
            return Followed::Done(Next::Close);
        }
    }
    if chunked && client.stream.write_all(b"0\r\n\r\n").await.is_err() {
        return Followed::Done(Next::Close);
    }
    Followed::Done(next)
}

pub(super) async fn write_parts(s: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    for p in parts {
        s.write_all(p).await?;
    }
    Ok(())
}
