//! CONNECT: a tunnel through the role's peer (a proxy is asked for the same
//! tunnel with a CONNECT of ours; an origin is connected to directly), then
//! bytes flow both ways until either side is done or the tunnel idles out.
//! A proxy that refuses the tunnel has its answer passed on.

use httpx::conn::Conn;
use httpx::framing::BodyLen;
use httpx::headers::{self, Framing, Outgoing};
use httpx::ResponseHead;

use crate::log::Code;
use crate::peer::{Claim, PeerInfo};
use crate::request::Request;
use crate::role::{Retry, Role};
use crate::session::{Next, Session};
use crate::settings::Timeouts;
use crate::splice::splice_both;
use crate::upstream::{self, Failure, Reach, Tally};
use crate::worker::Worker;

/// The answer to a client whose tunnel is up.
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// What asking a peer for the tunnel came to.
enum Opened {
    /// A connection ready to carry the tunnel, and its slot.
    Ready(Conn, Claim),
    /// The proxy refused: its answer.
    Refused(ResponseHead),
}

/// Tunnels the CONNECT `req` through the role's peers in turn.
pub(crate) async fn tunnel<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    ctx: &mut R::Ctx,
) -> Next {
    s.log.code = Code::Tunnel;
    let mut tally = Tally::new(w.settings.forward_timeout);
    while let Some(peer) = w.role.upstream_peer(req, ctx) {
        let Some(t) = tally.timeouts(&w.settings.upstream) else {
            break;
        };
        let info = w.role.describe(&peer);
        s.log.went_to(info.kind.hierarchy(), info.name, info.host);
        w.metrics.shard(w.index).peer(info.name).in_flight += 1;
        let opened = open(w, s, req, &peer, t).await;
        if opened.is_err() {
            w.metrics.shard(w.index).peer(info.name).in_flight -= 1;
        } else {
            s.log.in_flight = true;
        }
        match opened {
            Ok(opened) => {
                w.role.upstream_ok(&peer);
                return carry(w, s, req, &info, opened).await;
            }
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
    crate::forward::exhausted(w, s, req, ctx, &tally).await
}

/// Connects to `peer` and, when it is a proxy, asks it for the tunnel,
/// within timeouts `t`.
async fn open<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    peer: &R::Peer,
    t: Timeouts,
) -> Result<Opened, Failure> {
    let info = w.role.describe(peer);
    let claim = w.role.claim(peer, false).ok_or(Failure::AtLimit)?;
    let started = std::time::Instant::now();
    let mut conn = upstream::connect(&info, t.connect, Reach::of(req, &w.settings)).await?;
    s.log.connect_time = Some(started.elapsed());
    if !info.kind.is_proxy() {
        return Ok(Opened::Ready(conn, claim));
    }
    let authority = req.uri.effective();
    let mut out = s.head_buffer();
    let connect = Outgoing {
        method: b"CONNECT",
        target: authority,
        host: authority,
        drop: &[],
        extra: b"",
        via: w.settings.via.entry(),
        xff: w.settings.x_forwarded_for,
        client: req.client,
        remote_client: info.kind == crate::peer::PeerKind::Parent && req.remote(),
        body: BodyLen::Empty,
        upgrade: None,
        proxy_authorization: info.pass_credentials,
    };
    headers::write_request_head(&mut out, &req.head, &connect);
    let sent = upstream::send_head(&mut conn, info.kind, &out, false).await;
    s.keep_buffer(out);
    sent?;
    let head = upstream::read_head(&mut conn, info.kind, t.first_byte, false, false).await?;
    Ok(if (200..300).contains(&head.status) {
        Opened::Ready(conn, claim)
    } else {
        Opened::Refused(head)
    })
}

/// Carries the tunnel (or passes a refusal of `peer` on: with its
/// challenges when it [passes credentials](PeerInfo::pass_credentials))
/// and closes.
async fn carry<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    peer: &PeerInfo<'_>,
    opened: Opened,
) -> Next {
    match opened {
        Opened::Refused(head) => {
            s.log.status = head.status;
            let mut out = s.head_buffer();
            let via = w.settings.via.entry();
            let challenges = crate::respond::challenges(&[], &head, peer);
            headers::write_response_head_with(
                &mut out,
                &head,
                Framing::Length(0),
                via,
                false,
                req.head.version,
                challenges.as_deref().unwrap_or_default(),
            );
            s.send(out).await;
        }
        Opened::Ready(mut conn, _claim) => {
            s.log.status = 200;
            let mut out = s.head_buffer();
            out.extend_from_slice(ESTABLISHED);
            if s.send(out).await {
                let idle = w.settings.tunnel_idle_timeout;
                let (_, down) = splice_both(&mut s.client, &mut conn, idle).await;
                s.log.bytes += down;
            }
        }
    }
    Next::Close
}
