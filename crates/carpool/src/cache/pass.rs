//! What is not served from the store: other methods and uncacheable
//! answers relayed between client and origin, PURGE, and CONNECT tunnels.

use std::net::IpAddr;
use std::rc::Rc;

use cache_store::Key;
use carp::RequestUri;
use httpx::body::{self, Out, RelayError};
use httpx::conn::Conn;
use httpx::error::HttpError;
use httpx::framing::{self, BodyLen};
use httpx::head::Known;
use httpx::headers::{self, Framing as RespFraming};
use httpx::{RequestHead, Version};
use tokio::io::AsyncWriteExt;

use super::origin::{self, Hop, Outgoing};
use super::serve::{reject, timeouts, Next, Record};
use super::Worker;

/// Other methods (and anything not stored): to the origin and back,
/// streaming both ways. Unsafe methods that succeed invalidate the stored
/// object of their URL (RFC 9111 §4.4).
pub(super) async fn pass(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    body: BodyLen,
    uri: &RequestUri,
    client_ip: IpAddr,
    rec: &mut Record,
) -> Next {
    let cache = &w.cache;
    let hop = Hop::for_uri(uri, cache.upstream.as_ref());
    rec.went_to(&hop);
    rec.code = "TCP_MISS";
    let mut out = rec.head_buffer();
    origin::write_head(
        &mut out,
        &hop,
        &Outgoing {
            method: head.method(),
            uri,
            client: head,
            body,
            fill: false,
            extra: &[],
            via: &cache.via,
            client_ip,
        },
    );
    let resp = if body == BodyLen::Empty {
        origin::exchange(&w.pools, &hop, &out, timeouts(cache))
            .await
            .map_err(|f| f.error)
    } else {
        send_with_body(w, client, head, &hop, &out, body).await
    };
    rec.keep_buffer(out);
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return reject(client, rec, e).await,
    };
    let unsafe_method = !matches!(head.method(), b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE");
    if unsafe_method && resp.head.status < 400 {
        let base = uri.effective();
        if cache.store.remove(Key::of(base), base) {
            tracing::debug!(url = %String::from_utf8_lossy(base), "invalidated by an unsafe method");
        }
    }
    let len = match framing::response_body(head.method(), &resp.head) {
        Ok(l) => l,
        Err(e) => return reject(client, rec, e).await,
    };
    relay_response(w, client, head, resp, len, &hop, "MISS", rec).await
}

/// Sends a request with a body on a fresh connection (a body cannot be
/// replayed on another connection if a pooled one turns out closed).
pub(super) async fn send_with_body(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    hop: &Hop,
    head_bytes: &[u8],
    body: BodyLen,
) -> Result<origin::Response, HttpError> {
    let settings = &w.cache.settings;
    let mut conn = origin::connect(hop, settings.origin_connect_timeout)
        .await
        .map_err(|f| f.error)?;
    conn.stream
        .write_all(head_bytes)
        .await
        .map_err(|_| HttpError::new(502, "origin closed the connection"))?;
    if head.fields.has_token(Known::Expect, "100-continue") {
        client
            .stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| HttpError::new(400, "client closed"))?;
    }
    match body::relay(
        client,
        &mut conn.stream,
        body,
        Out::Same,
        settings.body_idle_timeout,
    )
    .await
    {
        Ok(_) => {}
        Err(RelayError::Sink(_)) | Err(RelayError::SinkIdle) => {
            return Err(HttpError::new(
                502,
                "origin stopped reading the request body",
            ))
        }
        Err(RelayError::Chunk(_)) => return Err(HttpError::new(400, "bad chunked request body")),
        Err(_) => return Err(HttpError::new(400, "client request body incomplete")),
    }
    match conn
        .read_response_head(
            settings.origin_first_byte_timeout,
            origin::MAX_RESPONSE_HEAD,
        )
        .await
    {
        Ok(Some(h)) => Ok(origin::Response { conn, head: h }),
        Ok(None) => Err(HttpError::new(
            502,
            "origin closed the connection before responding",
        )),
        Err(httpx::conn::ResponseReadError::Timeout { .. }) => {
            Err(HttpError::new(504, "origin response timeout"))
        }
        Err(httpx::conn::ResponseReadError::Bad(e)) => Err(e),
        Err(_) => Err(HttpError::new(
            502,
            "origin closed the connection before responding",
        )),
    }
}

/// Streams an origin's response to the client unchanged but for the hop
/// (framing, connection fields, `Via`, `X-Cache`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay_response(
    w: &Rc<Worker>,
    client: &mut Conn,
    req: &RequestHead,
    resp: origin::Response,
    len: BodyLen,
    hop: &Hop,
    x_cache: &str,
    rec: &mut Record,
) -> Next {
    let origin::Response {
        conn: mut up,
        head: mut resp,
        ..
    } = resp;
    let settings = &w.cache.settings;
    let via = &w.cache.via;
    let mut len = len;
    while resp.status < 200 {
        if resp.status == 101 {
            return reject(
                client,
                rec,
                HttpError::new(502, "origin switched protocols"),
            )
            .await;
        }
        if req.version == Version::Http11 {
            let mut out = Vec::new();
            headers::write_response_head(
                &mut out,
                &resp,
                RespFraming::None,
                via,
                true,
                Version::Http11,
            );
            if client.stream.write_all(&out).await.is_err() {
                return Next::Close;
            }
        }
        resp = match up
            .read_response_head(
                settings.origin_first_byte_timeout,
                origin::MAX_RESPONSE_HEAD,
            )
            .await
        {
            Ok(Some(h)) => h,
            _ => {
                return reject(
                    client,
                    rec,
                    HttpError::new(502, "origin broke after an interim response"),
                )
                .await
            }
        };
        len = match framing::response_body(req.method(), &resp) {
            Ok(l) => l,
            Err(e) => return reject(client, rec, e).await,
        };
    }
    rec.status = resp.status;
    rec.content_type.clear();
    rec.content_type
        .extend_from_slice(resp.fields.get("content-type").unwrap_or_default());
    let (framing, out_mode) = body::client_framing(req, &resp, len);
    let keep = crate::server::keep_client(&w.stop, req) && framing != RespFraming::Close;
    let mut out = rec.head_buffer();
    // an upstream cache's X-Cache is replaced by ours
    headers::write_response_head_with(
        &mut out,
        &resp,
        framing,
        via,
        keep,
        req.version,
        &[("X-Cache", x_cache.as_bytes())],
    );
    let written = client.stream.write_all(&out).await;
    rec.bytes += out.len() as u64;
    rec.keep_buffer(out);
    if written.is_err() {
        return Next::Close;
    }
    match body::relay(
        &mut up,
        &mut client.stream,
        len,
        out_mode,
        settings.body_idle_timeout,
    )
    .await
    {
        Ok(n) => rec.bytes += n,
        Err(e) => {
            rec.reason = match e {
                RelayError::Sink(_) | RelayError::SinkIdle => "client stopped reading the response",
                _ => "origin broke during the response body",
            };
            return Next::Close;
        }
    }
    if headers::server_keep_alive(&resp) && len != BodyLen::UntilClose {
        w.pools.borrow_mut().put(hop, up);
    }
    if keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// PURGE: removes the URL's stored object (and with a `Vary` marker, every
/// variant: they become unreachable). 200 when something was removed, 404
/// when nothing was stored; only `purge_clients` may.
pub(super) async fn purge(
    w: &Rc<Worker>,
    client: &mut Conn,
    head: &RequestHead,
    uri: &RequestUri,
    client_ip: IpAddr,
    rec: &mut Record,
) -> Next {
    let cache = &w.cache;
    if !cache
        .settings
        .purge_clients
        .iter()
        .any(|n| n.contains(&client_ip))
    {
        rec.code = "TCP_DENIED";
        return reject(
            client,
            rec,
            HttpError::new(403, "PURGE from a client not in purge_clients"),
        )
        .await;
    }
    let base = uri.effective();
    let removed = cache.store.remove(Key::of(base), base);
    rec.code = "TCP_MISS";
    rec.status = if removed { 200 } else { 404 };
    let keep = crate::server::keep_client(&w.stop, head);
    let mut out = rec.head_buffer();
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
    let ok = client.stream.write_all(&out).await.is_ok();
    rec.bytes += out.len() as u64;
    rec.keep_buffer(out);
    tracing::info!(url = %String::from_utf8_lossy(base), removed, "PURGE");
    if ok && keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// CONNECT: a tunnel to the origin (or through the upstream proxy).
pub(super) async fn connect_tunnel(
    w: &Rc<Worker>,
    client: &mut Conn,
    uri: &RequestUri,
    rec: &mut Record,
) -> Next {
    let cache = &w.cache;
    rec.code = "TCP_TUNNEL";
    let hop = Hop::for_uri(uri, cache.upstream.as_ref());
    rec.went_to(&hop);
    let mut up = match origin::connect(&hop, cache.settings.origin_connect_timeout).await {
        Ok(c) => c,
        Err(f) => return reject(client, rec, f.error).await,
    };
    if hop.proxy {
        let mut req = Vec::new();
        req.extend_from_slice(b"CONNECT ");
        req.extend_from_slice(uri.effective());
        req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        req.extend_from_slice(uri.effective());
        req.extend_from_slice(b"\r\n\r\n");
        if up.stream.write_all(&req).await.is_err() {
            return reject(client, rec, HttpError::new(502, "upstream proxy closed")).await;
        }
        match up
            .read_response_head(
                cache.settings.origin_first_byte_timeout,
                origin::MAX_RESPONSE_HEAD,
            )
            .await
        {
            Ok(Some(h)) if (200..300).contains(&h.status) => {}
            Ok(Some(h)) => {
                rec.status = h.status;
                return reject(
                    client,
                    rec,
                    HttpError::new(502, "upstream proxy refused the tunnel"),
                )
                .await;
            }
            _ => return reject(client, rec, HttpError::new(502, "upstream proxy broke")).await,
        }
    }
    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
    if client.stream.write_all(ok).await.is_err() {
        return Next::Close;
    }
    rec.status = 200;
    rec.bytes += ok.len() as u64;
    let (_, down) =
        crate::frontend::tunnel::splice_both(client, &mut up, cache.settings.body_idle_timeout * 5)
            .await;
    rec.bytes += down;
    Next::Close
}
