//! Answering from an object still being filled: the response head as soon as
//! the fill has it, then the body as the fill writes it (chunked, or until
//! close for an HTTP/1.0 client, when its length is not known yet).

use httpx::headers::Framing;
use httpx::{RequestHead, Version};
use proxy::{Next, Session};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::fill::{End, Progress};
use super::hit::not_modified;
use super::policy;
use super::respond::{self, Reply, Served};
use super::Worker;

/// Bytes read from a partly stored object per write to the client.
const FOLLOW_CHUNK: usize = 64 * 1024;

/// How following a fill ended.
pub(super) enum Followed {
    /// The client was answered.
    Done(Next),
    /// The stored object was refreshed: look it up again.
    Again,
    /// The fill is not shared (or failed before its head): fetch alone.
    Alone,
}

/// Answers the request `head` from the fill `rx` announces, logged and
/// labelled as `served`.
pub(super) async fn follow(
    w: &Worker,
    s: &mut Session,
    head: &RequestHead,
    mut rx: watch::Receiver<Progress>,
    served: Served,
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
    let m = &object.0;
    let mut keep = s.keep_alive(head);
    let framing = match (p.len, p.end) {
        (Some(n), _) => Framing::Length(n),
        (None, End::Complete) => Framing::Length(p.written),
        _ if head.version == Version::Http11 => Framing::Chunked,
        _ => {
            keep = false;
            Framing::Close
        }
    };
    let reply = Reply::start(s, head, m, served, w.cache.layer.via.entry(), keep);
    if m.status == 200 && policy::not_modified_for(m, &head.fields) {
        return Followed::Done(not_modified(s, &reply).await);
    }
    let mut out = s.head_buffer();
    respond::head_full(&mut out, &reply, framing);
    if !s.send(out).await {
        return Followed::Done(Next::Close);
    }
    if head.method() == b"HEAD" {
        return Followed::Done(Next::keep_if(keep));
    }
    let idle = w.cache.settings.server.body_idle_timeout;
    match stream_body(s, &mut rx, &object.1, framing == Framing::Chunked, idle).await {
        Ok(()) => Followed::Done(Next::keep_if(keep)),
        Err(reason) => {
            s.log.reason = reason;
            Followed::Done(Next::Close)
        }
    }
}

/// Writes the fill's body as it is stored, until its end; `Err` with the
/// reason when it cannot go on.
async fn stream_body(
    s: &mut Session,
    rx: &mut watch::Receiver<Progress>,
    partial: &cache_store::PartialBody,
    chunked: bool,
    idle: std::time::Duration,
) -> Result<(), &'static str> {
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
                Ok(0) | Err(_) => return Err("stored body unreadable while filling"),
                Ok(n) => n,
            };
            let sent = if chunked {
                let size = format!("{n:x}\r\n");
                write_parts(&mut s.client.stream, &[size.as_bytes(), &buf[..n], b"\r\n"]).await
            } else {
                tokio::time::timeout(idle, s.client.stream.write_all(&buf[..n]))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            };
            if sent.is_err() {
                return Err("client stopped reading the response");
            }
            off += n as u64;
            s.log.bytes += n as u64;
        }
        match end {
            End::Open => {}
            End::Complete if off >= written => break,
            End::Complete => continue,
            _ => return Err("origin broke during the response body"),
        }
        if rx.changed().await.is_err() && rx.borrow().end == End::Open {
            return Err("fill abandoned");
        }
    }
    if chunked && s.client.stream.write_all(b"0\r\n\r\n").await.is_err() {
        return Err("client stopped reading the response");
    }
    Ok(())
}

async fn write_parts(s: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    for p in parts {
        s.write_all(p).await?;
    }
    Ok(())
}
