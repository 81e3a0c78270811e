//! CONNECT tunnels (and upgraded connections): the chosen parent is asked
//! for the same tunnel, then bytes flow both ways until either side closes.

use std::net::IpAddr;
use std::rc::Rc;

use carp::RequestUri;
use httpx::conn::{Conn, ResponseReadError};
use httpx::error::HttpError;
use httpx::headers;
use httpx::RequestHead;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::proxy::{connect, TunnelLog, Worker};

/// Tunnels a CONNECT through the best alive parent for `uri` (`host:port`).
pub(super) async fn connect_tunnel(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    uri: &RequestUri,
    client_ip: IpAddr,
    log: TunnelLog<'_>,
) -> Result<(), HttpError> {
    let shared = &w.shared;
    let settings = &shared.settings;
    let mut req = Vec::with_capacity(256);
    req.extend_from_slice(b"CONNECT ");
    req.extend_from_slice(uri.effective());
    req.extend_from_slice(b" HTTP/1.1\r\n");
    headers::push_field(&mut req, b"Host", uri.effective());
    for (name, value) in head.fields.iter() {
        if name.eq_ignore_ascii_case(b"user-agent") {
            headers::push_field(&mut req, name, value);
        }
    }
    headers::push_field(&mut req, b"Via", format!("1.1 {}", shared.via).as_bytes());
    if settings.x_forwarded_for == headers::Xff::Append {
        headers::push_field(
            &mut req,
            b"X-Forwarded-For",
            client_ip.to_string().as_bytes(),
        );
    }
    req.extend_from_slice(b"\r\n");
    let mut last = HttpError::new(503, "no parent is alive");
    let mut tried = false;
    let mut candidates = super::proxy::Candidates::new(shared, uri);
    while let Some(p) = candidates.next() {
        tried = true;
        let Some(_slot) = w.claim(p, false) else {
            last = HttpError::new(503, "every alive parent is at its max_conn");
            continue;
        };
        let mut parent =
            match connect(shared.parents[p].addr, settings.parent_connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    shared.health.failure(p, e.reason);
                    last = e;
                    continue;
                }
            };
        if parent.stream.write_all(&req).await.is_err() {
            shared.health.failure(p, "write failed");
            last = HttpError::new(502, "cannot send CONNECT to parent");
            continue;
        }
        let resp = match parent
            .read_response_head(settings.parent_first_byte_timeout, 64 * 1024)
            .await
        {
            Ok(Some(r)) => r,
            Ok(None)
            | Err(ResponseReadError::NothingRead(_))
            | Err(ResponseReadError::Truncated) => {
                shared
                    .health
                    .failure(p, "closed before responding to CONNECT");
                last = HttpError::new(502, "parent closed the connection before responding");
                continue;
            }
            Err(ResponseReadError::Timeout { .. }) => {
                shared.health.failure(p, "CONNECT response timeout");
                last = HttpError::new(504, "parent response timeout");
                continue;
            }
            Err(ResponseReadError::Bad(e)) => {
                last = e;
                continue;
            }
        };
        shared.health.served(p);
        *log.peer = Some(p);
        *log.status = resp.status;
        if !(200..300).contains(&resp.status) {
            // The parent refused the tunnel: pass its answer on (head only) and close.
            let mut out = Vec::new();
            headers::write_response_head(
                &mut out,
                &resp,
                headers::Framing::Length(0),
                &shared.via,
                false,
                head.version,
            );
            let _ = client.stream.write_all(&out).await;
            *log.bytes += out.len() as u64;
            return Ok(());
        }
        let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
        if client.stream.write_all(ok).await.is_err() {
            return Ok(());
        }
        *log.bytes += ok.len() as u64;
        let (_, down) = splice_both(client, &mut parent, settings.tunnel_idle_timeout).await;
        *log.bytes += down;
        return Ok(());
    }
    if !tried {
        last = HttpError::new(503, "no parent is alive");
    }
    Err(last)
}

/// Copies both ways until both directions are done or nothing moved for
/// `idle` (bytes already buffered on either side go first). Half-closes are
/// passed on. Returns (client→parent, parent→client) bytes.
pub(crate) async fn splice_both(
    client: &mut Conn,
    parent: &mut Conn,
    idle: Duration,
) -> (u64, u64) {
    let mut up = 0u64;
    let mut down = 0u64;
    if !client.rbuf.is_empty() {
        if parent.stream.write_all(&client.rbuf).await.is_err() {
            return (0, 0);
        }
        up += client.rbuf.len() as u64;
        client.rbuf.clear();
    }
    if !parent.rbuf.is_empty() {
        if client.stream.write_all(&parent.rbuf).await.is_err() {
            return (up, 0);
        }
        down += parent.rbuf.len() as u64;
        parent.rbuf.clear();
    }
    let (mut cr, mut cw) = client.stream.split();
    let (mut pr, mut pw) = parent.stream.split();
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    let (mut up_open, mut down_open) = (true, true);
    while up_open || down_open {
        tokio::select! {
            r = cr.read(&mut a), if up_open => match r {
                Ok(0) | Err(_) => {
                    up_open = false;
                    let _ = pw.shutdown().await;
                }
                Ok(n) => {
                    if pw.write_all(&a[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                }
            },
            r = pr.read(&mut b), if down_open => match r {
                Ok(0) | Err(_) => {
                    down_open = false;
                    let _ = cw.shutdown().await;
                }
                Ok(n) => {
                    if cw.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                    down += n as u64;
                }
            },
            _ = tokio::time::sleep(idle) => {
                tracing::info!("tunnel closed after {idle:?} without traffic");
                break;
            }
        }
    }
    (up, down)
}
