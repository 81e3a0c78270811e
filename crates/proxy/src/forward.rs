//! The forward phases of a request that is not a CONNECT: the role's peers
//! tried in its order (connect, send the head and the body, read the
//! response head), failing over as the role decides; interim responses
//! relayed; the final one through the role's response filter, then relayed
//! ([`crate::respond`]).

use httpx::body::{self, Out, RelayError};
use httpx::framing::BodyLen;
use httpx::headers::{self, Framing};
use httpx::{HttpError, Version};
use tokio::io::AsyncWriteExt;

use crate::log::Code;
use crate::peer::{Claim, PeerInfo, PeerKind, Problem};
use crate::request::Request;
use crate::role::{Proceed, Retry, Role};
use crate::session::{Next, Session};
use crate::settings::Timeouts;
use crate::splice::splice_both;
use crate::upstream::{self, Failure, Reach, Response, Tally};
use crate::worker::Worker;

/// The interim answer to a client that expects `100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Forwards `req` to the role's peers in turn and answers the client: the
/// interim responses relayed, the final one through the role's response
/// filter, then relayed.
pub(crate) async fn forward<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    ctx: &mut R::Ctx,
) -> Next {
    s.log.code = Code::Miss;
    let mut tally = Tally::new(w.settings.forward_timeout);
    while let Some(peer) = w.role.upstream_peer(req, ctx) {
        let Some(t) = tally.timeouts(&w.settings.upstream) else {
            break;
        };
        let info = w.role.describe(&peer);
        s.log.went_to(info.kind.hierarchy(), info.name, info.host);
        let mut out = s.head_buffer();
        let asked_head = write_head(w, req, ctx, &peer, &mut out);
        let started = std::time::Instant::now();
        w.metrics.shard(w.index).peer(info.name).in_flight += 1;
        let attempt = attempt(w, s, req, &peer, &out, t).await;
        s.keep_buffer(out);
        if attempt.is_err() {
            w.metrics.shard(w.index).peer(info.name).in_flight -= 1;
        } else {
            s.log.in_flight = true;
        }
        match attempt {
            Ok(mut response) => {
                s.log.first_byte = Some(started.elapsed());
                s.log.connect_time = (response.connect_us > 0)
                    .then(|| std::time::Duration::from_micros(response.connect_us.into()));
                w.role.upstream_ok(&peer);
                if response.head.status < 200 {
                    if let Err(next) = interim(w, s, req, info_kind(w, &peer), &mut response).await
                    {
                        return next;
                    }
                }
                return match w.role.upstream_response(s, req, ctx, &peer, response).await {
                    Proceed::Answered(next) => next,
                    Proceed::Relay(response, fields) => {
                        crate::respond::relay(w, s, req, &peer, response, fields, asked_head).await
                    }
                };
            }
            Err(Failure::Client(e)) => return client_failed(s, e).await,
            Err(Failure::Denied(e)) => {
                s.log.code = Code::Denied;
                return s.reject(e).await;
            }
            Err(f) => {
                tally.failed(&f);
                w.failed(info.name, info.kind, &f);
                if w.role.upstream_failed(req, ctx, &peer, &f) == Retry::Stop {
                    break;
                }
            }
        }
    }
    exhausted(w, s, req, ctx, &tally).await
}

/// No peer served the request: the role's fallback, or the error.
pub(crate) async fn exhausted<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    ctx: &mut R::Ctx,
    tally: &Tally,
) -> Next {
    let e = tally.error(w.role.no_peer());
    match w.role.fail_to_proxy(s, req, ctx, e).await {
        Some(next) => next,
        None => s.reject(e).await,
    }
}

/// Writes the head sent to `peer` into `out`, as the role adjusts it;
/// true when it asks for HEAD (the response then has no body).
fn write_head<R: Role>(
    w: &Worker<R>,
    req: &Request,
    ctx: &R::Ctx,
    peer: &R::Peer,
    out: &mut Vec<u8>,
) -> bool {
    let info = w.role.describe(peer);
    let mut authority = Vec::new();
    let mut o = upstream::outgoing(req, &info, &w.settings, &mut authority);
    w.role.upstream_request(req, ctx, &mut o);
    headers::write_request_head(out, &req.head, &o);
    o.method == b"HEAD"
}

/// One attempt on `peer` within timeouts `t`: a connection slot, a
/// connection (pooled when the request has no body), the head and the body
/// sent, the response head.
async fn attempt<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    peer: &R::Peer,
    head: &[u8],
    t: Timeouts,
) -> Result<Response, Failure> {
    let info = w.role.describe(peer);
    // A body cannot be sent twice, so a request with one never rides a
    // pooled connection that may turn out closed (Squid does the same).
    let with_body = req.body != BodyLen::Empty;
    let idle = if with_body {
        None
    } else {
        w.role.take_idle(peer)
    };
    let claim = w.role.claim(peer, idle.is_some()).ok_or(Failure::AtLimit)?;
    let mut response = if with_body {
        send_with_body(w, s, req, &info, head, t).await?
    } else {
        let reach = Reach::of(req, &w.settings);
        upstream::exchange(idle, &info, head, &t, reach).await?
    };
    response.claim = claim;
    Ok(response)
}

/// Sends a request with a body on a new connection: the head, `100
/// Continue` to a client waiting for it, the body as it comes, then reads
/// the response head.
async fn send_with_body<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    info: &PeerInfo<'_>,
    head: &[u8],
    t: Timeouts,
) -> Result<Response, Failure> {
    let started = std::time::Instant::now();
    let mut conn = upstream::connect(info, t.connect, Reach::of(req, &w.settings)).await?;
    let connect_us = upstream::micros(started);
    upstream::send_head(&mut conn, info.kind, head, false).await?;
    if req.expects_continue() && s.client.stream.write_all(CONTINUE).await.is_err() {
        return Err(Failure::Client(HttpError::new(499, "client closed")));
    }
    let idle = w.settings.body_idle_timeout;
    match body::relay(&mut s.client, &mut conn.stream, req.body, Out::Same, idle).await {
        Ok(n) => s.log.body_in = n,
        Err(RelayError::Sink(_) | RelayError::SinkIdle) => {
            return Err(Failure::Sent {
                error: info.kind.error(Problem::StoppedReadingBody),
                body_sent: true,
            })
        }
        Err(RelayError::Chunk(_)) => {
            // the peer only ever saw the valid prefix; its connection is dropped
            return Err(Failure::Client(HttpError::new(
                400,
                "bad chunked request body",
            )));
        }
        Err(_) => {
            return Err(Failure::Client(HttpError::new(
                400,
                "client request body incomplete",
            )))
        }
    }
    let head = upstream::read_head(&mut conn, info.kind, t.first_byte, false, true).await?;
    Ok(Response {
        conn,
        head,
        claim: Claim::unlimited(),
        connect_us,
    })
}

/// The client broke the exchange: gone (499: nobody to answer), or it sent
/// a malformed body (answered).
async fn client_failed(s: &mut Session, e: HttpError) -> Next {
    if e.status == 499 {
        s.log.status = e.status;
        s.log.reason = e.reason;
        return Next::Close;
    }
    s.reject(e).await
}

/// What kind of hop `peer` is.
fn info_kind<R: Role>(w: &Worker<R>, peer: &R::Peer) -> PeerKind {
    w.role.describe(peer).kind
}

/// Relays interim (1xx) responses to an HTTP/1.1 client until the final
/// one comes; a `101` turns the connection into a tunnel.
async fn interim<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    kind: PeerKind,
    response: &mut Response,
) -> Result<(), Next> {
    while response.head.status < 200 {
        if response.head.status == 101 {
            s.log.status = 101;
            let mut out = s.head_buffer();
            out.extend_from_slice(response.head.raw());
            if s.send(out).await {
                let idle = w.settings.tunnel_idle_timeout;
                let (_, down) = splice_both(&mut s.client, &mut response.conn, idle).await;
                s.log.bytes += down;
            }
            return Err(Next::Close);
        }
        if req.head.version == Version::Http11 {
            let mut out = s.head_buffer();
            let via = w.settings.via.entry();
            headers::write_response_head(
                &mut out,
                &response.head,
                Framing::None,
                via,
                true,
                Version::Http11,
            );
            if !s.send(out).await {
                return Err(Next::Close);
            }
        }
        let first_byte = w.settings.upstream.first_byte;
        response.head =
            match upstream::read_head(&mut response.conn, kind, first_byte, false, false).await {
                Ok(h) => h,
                Err(_) => return Err(s.reject(kind.error(Problem::BrokeAfterInterim)).await),
            };
    }
    Ok(())
}
