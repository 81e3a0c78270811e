//! Relaying a peer's final response to the client: the head rewritten for
//! this hop and this client (framing, connection fields, `Via`, the role's
//! own fields), a small body sent with its head in one write, the rest
//! streamed; the peer's connection kept when the exchange ended cleanly.

use std::time::Duration;

use httpx::body::{self, RelayError};
use httpx::conn::Conn;
use httpx::framing::{self, BodyLen};
use httpx::head::Known;
use httpx::headers::{self, Framing};
use httpx::ResponseHead;

use crate::peer::{PeerInfo, PeerKind, Problem};
use crate::request::Request;
use crate::role::Role;
use crate::session::{Next, Session};
use crate::upstream::Response;
use crate::worker::Worker;

/// Relays `response` from `peer` to the client, with the role's `fields`.
/// `asked_head`: the request sent upstream was a HEAD (so the response
/// has no body); a client's HEAD answered from a GET gets the head only.
pub(crate) async fn relay<R: Role>(
    w: &Worker<R>,
    s: &mut Session,
    req: &Request,
    peer: &R::Peer,
    response: Response,
    fields: &[(&str, &[u8])],
    asked_head: bool,
) -> Next {
    let Response {
        conn: mut up,
        head,
        claim: _claim,
        ..
    } = response;
    let info = w.role.describe(peer);
    let kind = info.kind;
    let challenges = challenges(fields, &head, &info);
    let fields = challenges.as_deref().unwrap_or(fields);
    s.log.status = head.status;
    s.log
        .set_content_type(head.fields.get(Known::ContentType).unwrap_or_default());
    let asked: &[u8] = if asked_head { b"HEAD" } else { b"GET" };
    let len = match framing::response_body(asked, &head) {
        Ok(l) => l,
        Err(e) => return s.reject(e).await,
    };
    let to_client = if req.method() == b"HEAD" {
        BodyLen::Empty
    } else {
        len
    };
    let (framing, out_mode) = body::client_framing(&req.head, &head, to_client);
    let keep = s.keep_alive(&req.head) && framing != Framing::Close;
    let mut out = s.head_buffer();
    let via = w.settings.via.entry();
    headers::write_response_head_with(
        &mut out,
        &head,
        framing,
        via,
        keep,
        req.head.version,
        fields,
    );
    let idle = w.settings.body_idle_timeout;
    let rest = match send_head(s, &mut up, out, to_client, kind, idle).await {
        Ok(rest) => rest,
        Err(next) => return next,
    };
    // (a small body went whole with its head: nothing is left to relay)
    let relayed = match rest {
        BodyLen::Empty => Ok(0),
        rest => body::relay(&mut up, &mut s.client.stream, rest, out_mode, idle).await,
    };
    match relayed {
        Ok(n) => s.log.bytes += n,
        Err(e) => {
            // The head is out: the only honest signal left is closing.
            if matches!(e, RelayError::Sink(_) | RelayError::SinkIdle) {
                s.log.reason = "client stopped reading the response";
            } else {
                s.log.reason = kind.error(Problem::BrokeInBody).reason;
                w.role.response_body_failed(peer, &e);
            }
            return Next::Close;
        }
    }
    // reusable once its whole body was read (a HEAD answered from a GET
    // leaves the body unread)
    if to_client == len && len != BodyLen::UntilClose && headers::server_keep_alive(&head) {
        w.role.keep_idle(peer, up);
    }
    Next::keep_if(keep)
}

/// The fields this hop adds to a response of `peer`, when they are more
/// than the role's `fields`: from a peer that
/// [passes credentials](crate::PeerInfo::pass_credentials), its
/// `Proxy-Authenticate` challenges (hop-by-hop, dropped otherwise), so that
/// the client learns how to authenticate to it. `None` (nothing is
/// allocated) for any other peer or response.
pub(crate) fn challenges<'a>(
    fields: &[(&'a str, &'a [u8])],
    head: &'a ResponseHead,
    peer: &PeerInfo<'_>,
) -> Option<Vec<(&'a str, &'a [u8])>> {
    if !peer.pass_credentials || !head.fields.has(Known::ProxyAuthenticate) {
        return None;
    }
    let theirs = head.fields.get_all(Known::ProxyAuthenticate);
    Some(
        fields
            .iter()
            .copied()
            .chain(theirs.map(|v| ("Proxy-Authenticate", v)))
            .collect(),
    )
}

/// Sends the response head `out` together with the body bytes that came
/// with it (a small body whole: waited for, so that head and body leave in
/// one write); returns the framing of what is left to relay. `Err`: the
/// client was answered otherwise or is gone.
async fn send_head(
    s: &mut Session,
    up: &mut Conn,
    mut out: Vec<u8>,
    len: BodyLen,
    kind: PeerKind,
    idle: Duration,
) -> Result<BodyLen, Next> {
    let BodyLen::Length(n) = len else {
        return if s.send(out).await {
            Ok(len)
        } else {
            Err(Next::Close)
        };
    };
    if n < body::LOWAT_WORTHWHILE && (up.rbuf.len() as u64) < n {
        if let Err(e) = body::fill_to(up, n as usize, idle).await {
            tracing::warn!(error = %e, "response body cut short");
            s.keep_buffer(out);
            return Err(s.reject(kind.error(Problem::BrokeInBody)).await);
        }
    }
    let take = (up.rbuf.len() as u64).min(n) as usize;
    s.log.bytes += (out.len() + take) as u64;
    let written = body::write_head_and_body(&s.client.stream, &mut out, &up.rbuf[..take]).await;
    s.keep_buffer(out);
    if written.is_err() {
        return Err(Next::Close);
    }
    bytes::Buf::advance(&mut up.rbuf, take);
    Ok(if n == take as u64 {
        BodyLen::Empty
    } else {
        BodyLen::Length(n - take as u64)
    })
}
