//! Header hygiene for a proxy hop: what is never forwarded (hop-by-hop fields
//! and those the `Connection` field names), `Via` (with loop detection) and
//! `X-Forwarded-For`; and writing the heads we send.

use std::io::Write as _;
use std::net::IpAddr;

use crate::framing::BodyLen;
use crate::head::{Fields, Known, RequestHead, ResponseHead, Version};

/// What to do with `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Xff {
    /// Append the client address (Squid's `forwarded_for on`).
    #[default]
    Append,
    /// Remove the field (`forwarded_for delete`).
    Delete,
    /// Pass it on untouched (`forwarded_for transparent`).
    Off,
}

/// The field names a message's `Connection` fields list (beyond the
/// standard options), collected once per message (no allocation when there
/// is no `Connection` field: absent kinds are not searched).
struct ConnectionTokens<'a>(Vec<&'a [u8]>);

impl ConnectionTokens<'_> {
    fn named(&self, name: &[u8]) -> bool {
        self.0.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

fn connection_tokens(fields: &Fields) -> ConnectionTokens<'_> {
    ConnectionTokens(
        fields
            .get_all(Known::Connection)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"close")
                    && !t.eq_ignore_ascii_case(b"keep-alive")
            })
            .collect(),
    )
}

/// True for the fields a proxy never forwards: hop-by-hop by their kind
/// ([`Known::is_hop_by_hop`]), or named by `Connection`.
fn dropped(kind: Known, name: &[u8], conn: &ConnectionTokens<'_>) -> bool {
    kind.is_hop_by_hop() || conn.named(name)
}

/// True when a `Via` field already names `received_by` (a forwarding loop).
pub fn via_has(fields: &Fields, received_by: &str) -> bool {
    fields
        .get_all(Known::Via)
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|entry| {
            // entry: [protocol-name "/"] protocol-version RWS received-by [RWS comment]
            let mut words = entry
                .trim_ascii()
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|w| !w.is_empty());
            words.next();
            words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(received_by.as_bytes()))
        })
}

/// The end-to-end fields of a message: all but the hop-by-hop ones and
/// those its `Connection` fields name.
pub fn end_to_end(fields: &Fields) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
    let conn = connection_tokens(fields);
    fields
        .iter_known()
        .filter(move |(k, n, _)| !dropped(*k, n, &conn))
        .map(|(_, n, v)| (n, v))
}

/// Does the client want the connection kept open after this exchange?
pub fn client_keep_alive(head: &RequestHead) -> bool {
    match head.version {
        Version::Http11 => !head.fields.has_token(Known::Connection, "close"),
        Version::Http10 => {
            head.fields.has_token(Known::Connection, "keep-alive")
                || head.fields.has_token(Known::ProxyConnection, "keep-alive")
        }
    }
}

/// Does the parent keep its connection open after this response?
pub fn server_keep_alive(head: &ResponseHead) -> bool {
    match head.version {
        Version::Http11 => !head.fields.has_token(Known::Connection, "close"),
        Version::Http10 => head.fields.has_token(Known::Connection, "keep-alive"),
    }
}

/// What the head of a request sent upstream is made of: one writer for
/// every hop (a frontend's request to a parent, a cache's to an origin or
/// to an upstream proxy).
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    /// The method sent (a cache fill asks for GET on a client's HEAD).
    pub method: &'a [u8],
    /// The request-target: absolute-form to a proxy, origin-form to an origin.
    pub target: &'a [u8],
    /// The `Host` sent, first after the request line, in place of any the
    /// client sent: the authority of the target (RFC 9112 §3.2.2: a proxy
    /// replaces `Host` with the host of an absolute-form target).
    pub host: &'a [u8],
    /// More request fields not forwarded, by lower-case name (a cache fill
    /// drops the client's conditions and ranges).
    pub drop: &'a [&'a str],
    /// Fields this hop adds, as whole lines (`Name: value\r\n`): a
    /// revalidation's validators.
    pub extra: &'a [u8],
    /// Our `Via` entry after the protocol version: `name (carpool)`.
    pub via: &'a str,
    /// What to do with `X-Forwarded-For`.
    pub xff: Xff,
    /// The client's address (for `X-Forwarded-For`).
    pub client: IpAddr,
    /// Tell the next hop that the client is not on this proxy's host
    /// (`Carpool-Client: remote`, read by a carpool cache behind a carpool
    /// frontend; hop-by-hop: never forwarded further).
    pub remote_client: bool,
    /// The framing of the body that follows the head.
    pub body: BodyLen,
    /// The protocols the client offered to switch to (its `Upgrade`,
    /// passed on with `Connection: upgrade`; see [`upgrade_offer`]).
    pub upgrade: Option<&'a [u8]>,
    /// Forward the client's `Proxy-Authorization` fields unchanged (they
    /// are hop-by-hop, dropped otherwise, even when `Connection` names
    /// them): to a parent proxy that authenticates the clients itself
    /// (Squid's `cache_peer ... login=PASS`).
    pub proxy_authorization: bool,
}

/// The `Upgrade` value of an HTTP/1.1 request that offers to switch
/// protocols (`Connection: upgrade` and an `Upgrade` field, RFC 9110 §7.8),
/// e.g. a WebSocket handshake. A proxy passes the offer on; `Upgrade` is
/// otherwise hop-by-hop and dropped.
pub fn upgrade_offer(head: &RequestHead) -> Option<&[u8]> {
    if head.version != Version::Http11 || !head.fields.has_token(Known::Connection, "upgrade") {
        return None;
    }
    head.fields
        .get_all(Known::Upgrade)
        .map(<[u8]>::trim_ascii)
        .find(|v| !v.is_empty())
}

/// Writes the head of a request sent upstream: `method target HTTP/1.1`,
/// the client's end-to-end fields (not the hop-by-hop ones, those its
/// `Connection` names, its framing, `Expect`, nor `o.drop`; its
/// `Proxy-Authorization` only with `o.proxy_authorization`), `Host`, the
/// extra fields, our `Via`, `X-Forwarded-For` per `o.xff`, and the body
/// framing. Runs of kept fields are copied as they came.
pub fn write_request_head(out: &mut Vec<u8>, head: &RequestHead, o: &Outgoing<'_>) {
    out.extend_from_slice(o.method);
    out.push(b' ');
    out.extend_from_slice(o.target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(out, b"Host", o.host);
    let mut prior_xff: Option<&[u8]> = None;
    let conn = connection_tokens(&head.fields);
    head.fields.write_kept(out, |kind, name, value| {
        if dropped(kind, name, &conn) {
            return kind == Known::ProxyAuthorization && o.proxy_authorization;
        }
        if matches!(kind, Known::ContentLength | Known::Expect | Known::Host) {
            return false;
        }
        match kind {
            Known::XForwardedFor => match o.xff {
                Xff::Off => {}
                Xff::Delete => return false,
                Xff::Append => {
                    prior_xff = Some(value);
                    return false;
                }
            },
            Known::Other
                if !o.drop.is_empty()
                    && o.drop
                        .iter()
                        .any(|d| name.eq_ignore_ascii_case(d.as_bytes())) =>
            {
                return false;
            }
            _ => {}
        }
        true
    });
    out.extend_from_slice(o.extra);
    if let Some(protocols) = o.upgrade {
        push_field(out, b"Upgrade", protocols);
        push_field(out, b"Connection", b"upgrade");
    }
    push_via(out, head.version, o.via);
    if o.remote_client {
        push_field(out, b"Carpool-Client", b"remote");
    }
    if o.xff == Xff::Append {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if let Some(p) = prior_xff {
            out.extend_from_slice(p);
            out.extend_from_slice(b", ");
        }
        push_ip(out, o.client);
        out.extend_from_slice(b"\r\n");
    }
    push_framing(out, o.body);
    out.extend_from_slice(b"\r\n");
}

/// Writes the head of a response to a client: the parent's status, its
/// end-to-end fields, our `Via`, and the framing and connection fields for
/// this client.
pub fn write_response_head(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    framing: Framing,
    via: &str,
    keep_alive: bool,
    client: Version,
) {
    write_response_head_with(out, head, framing, via, keep_alive, client, &[]);
}

/// As [`write_response_head`], with fields this hop sets itself: `own`
/// (name, value) pairs replace any the upstream sent under those names
/// (a cache's `X-Cache` over its upstream's).
pub fn write_response_head_with(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    framing: Framing,
    via: &str,
    keep_alive: bool,
    client: Version,
    own: &[(&str, &[u8])],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, head.status as u64);
    out.push(b' ');
    let reason = head.reason();
    if reason.is_empty() {
        out.extend_from_slice(crate::error::reason_phrase(head.status).as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
    let conn = connection_tokens(&head.fields);
    head.fields.write_kept(out, |kind, name, _| {
        !(dropped(kind, name, &conn)
            || kind == Known::ContentLength
            || own
                .iter()
                .any(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes())))
    });
    for (n, v) in own {
        push_field(out, n.as_bytes(), v);
    }
    push_via(out, head.version, via);
    push_framing_fields(out, framing);
    push_connection(out, keep_alive, client);
    out.extend_from_slice(b"\r\n");
}

/// Appends the `Connection` field a client of version `client` needs:
/// `close` when the connection ends after this response, `keep-alive` for
/// an HTTP/1.0 client whose connection stays open, nothing otherwise.
pub fn push_connection(out: &mut Vec<u8>, keep_alive: bool, client: Version) {
    if !keep_alive {
        push_field(out, b"Connection", b"close");
    } else if client == Version::Http10 {
        push_field(out, b"Connection", b"keep-alive");
    }
}

/// The framing a response is sent to the client with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body and no length field (1xx, 204, 304, HEAD without length).
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by closing the connection.
    Close,
}

/// Appends `Via: <version of the received message> <via>`.
pub fn push_via(out: &mut Vec<u8>, v: Version, via: &str) {
    out.extend_from_slice(match v {
        Version::Http10 => b"Via: 1.0 ",
        Version::Http11 => b"Via: 1.1 ",
    });
    out.extend_from_slice(via.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An address as text (IPv4 without going through `fmt`).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, octet as u64);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends the decimal digits of `n` without allocating.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_framing(out: &mut Vec<u8>, body: BodyLen) {
    push_framing_fields(
        out,
        match body {
            BodyLen::Empty | BodyLen::UntilClose => Framing::None,
            BodyLen::Length(n) => Framing::Length(n),
            BodyLen::Chunked => Framing::Chunked,
        },
    );
}

/// Appends the field that delimits a body sent with `framing`:
/// `Content-Length`, `Transfer-Encoding: chunked`, or none.
pub fn push_framing_fields(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::None | Framing::Close => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => push_field(out, b"Transfer-Encoding", b"chunked"),
    }
}

/// Appends `name: value\r\n`.
pub fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{parse_request, Limits};
    use bytes::BytesMut;

    #[test]
    fn forwarded_head_drops_hop_by_hop_and_adds_via_xff() {
        let mut b = BytesMut::from(
            &b"GET http://h.example/x HTTP/1.1\r\nHost: h.example\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nX-Forwarded-For: 10.1.1.1\r\nAccept: */*\r\n\r\n"[..],
        );
        let h = parse_request(&mut b, &Limits::default()).unwrap().unwrap();
        let mut out = Vec::new();
        let o = Outgoing {
            method: b"GET",
            target: b"http://h.example/x",
            host: b"h.example",
            drop: &[],
            extra: b"",
            via: "fe:3128 (carpool)",
            xff: Xff::Append,
            client: "127.0.0.1".parse().unwrap(),
            remote_client: false,
            body: BodyLen::Empty,
            upgrade: upgrade_offer(&h),
            proxy_authorization: false,
        };
        // no `Connection: upgrade`: nothing to pass on
        assert_eq!(o.upgrade, None);
        write_request_head(&mut out, &h, &o);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "GET http://h.example/x HTTP/1.1\r\nHost: h.example\r\nAccept: */*\r\nVia: 1.1 fe:3128 (carpool)\r\nX-Forwarded-For: 10.1.1.1, 127.0.0.1\r\n\r\n"
        );
    }

    /// `Proxy-Authorization` goes on only when asked (a parent with
    /// `pass_credentials`), as it came, even when `Connection` names it;
    /// the other hop-by-hop fields stay behind either way.
    #[test]
    fn proxy_authorization_is_forwarded_only_when_asked() {
        let mut b = BytesMut::from(
            &b"GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\nProxy-Authorization: Other x\r\nConnection: Proxy-Authorization, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nAuthorization: Bearer t\r\n\r\n"[..],
        );
        let h = parse_request(&mut b, &Limits::default()).unwrap().unwrap();
        let head = |pass: bool| {
            let mut out = Vec::new();
            let o = Outgoing {
                method: b"GET",
                target: b"http://h/",
                host: b"h",
                drop: &[],
                extra: b"",
                via: "fe (carpool)",
                xff: Xff::Off,
                client: "127.0.0.1".parse().unwrap(),
                remote_client: false,
                body: BodyLen::Empty,
                upgrade: None,
                proxy_authorization: pass,
            };
            write_request_head(&mut out, &h, &o);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            head(true),
            "GET http://h/ HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic dTpw\r\nProxy-Authorization: Other x\r\nAuthorization: Bearer t\r\nVia: 1.1 fe (carpool)\r\n\r\n"
        );
        assert_eq!(
            head(false),
            "GET http://h/ HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nVia: 1.1 fe (carpool)\r\n\r\n"
        );
    }

    #[test]
    fn a_protocol_switch_is_offered_on() {
        let head = |text: &str| {
            let mut b = BytesMut::from(text.as_bytes());
            parse_request(&mut b, &Limits::default()).unwrap().unwrap()
        };
        let ws = head("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n");
        assert_eq!(upgrade_offer(&ws), Some(&b"websocket"[..]));
        let mut out = Vec::new();
        let o = Outgoing {
            method: b"GET",
            target: b"/chat",
            host: b"h",
            drop: &[],
            extra: b"",
            via: "c1 (carpool)",
            xff: Xff::Off,
            client: "127.0.0.1".parse().unwrap(),
            remote_client: false,
            body: BodyLen::Empty,
            upgrade: upgrade_offer(&ws),
            proxy_authorization: false,
        };
        write_request_head(&mut out, &ws, &o);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\nUpgrade: websocket\r\nConnection: upgrade\r\nVia: 1.1 c1 (carpool)\r\n\r\n"
        );
        // HTTP/1.0 cannot switch; without the Connection token no offer
        let old = head("GET /chat HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(upgrade_offer(&old), None);
        let bare = head("GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(upgrade_offer(&bare), None);
    }

    #[test]
    fn to_an_origin_host_is_replaced_and_dropped_fields_and_extras_apply() {
        let mut b = BytesMut::from(
            &b"GET http://h.example:8080/x?q HTTP/1.0\r\nAccept: */*\r\nHost: other\r\nIf-None-Match: \"a\"\r\nrange: bytes=0-1\r\nCarpool-Client: local\r\nX-Keep: 1\r\n\r\n"[..],
        );
        let h = parse_request(&mut b, &Limits::default()).unwrap().unwrap();
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &h,
            &Outgoing {
                method: b"GET",
                target: b"/x?q",
                host: b"h.example:8080",
                drop: &["if-none-match", "range"],
                extra: b"If-None-Match: \"stored\"\r\n",
                via: "c1 (carpool)",
                xff: Xff::Append,
                client: "::1".parse().unwrap(),
                remote_client: true,
                body: BodyLen::Length(3),
                upgrade: None,
                proxy_authorization: false,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /x?q HTTP/1.1\r\nHost: h.example:8080\r\nAccept: */*\r\nX-Keep: 1\r\nIf-None-Match: \"stored\"\r\nVia: 1.0 c1 (carpool)\r\nCarpool-Client: remote\r\nX-Forwarded-For: ::1\r\nContent-Length: 3\r\n\r\n"
        );
    }

    #[test]
    fn own_fields_replace_the_upstream_ones() {
        let mut b = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nX-Cache: MISS from up\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let h = crate::head::parse_response(&mut b, 64 * 1024)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_response_head_with(
            &mut out,
            &h,
            Framing::Length(0),
            "c1 (carpool)",
            true,
            Version::Http11,
            &[("X-Cache", b"HIT")],
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("X-Cache").count(), 1, "{text}");
        assert!(
            text.contains("X-Cache: HIT\r\n") && text.contains("ETag: \"e\""),
            "{text}"
        );
    }

    #[test]
    fn via_loop_detection() {
        let mut b =
            BytesMut::from(&b"GET / HTTP/1.1\r\nVia: 1.0 a, 1.1 fe:3128 (carpool)\r\n\r\n"[..]);
        let h = parse_request(&mut b, &Limits::default()).unwrap().unwrap();
        assert!(via_has(&h.fields, "fe:3128"));
        assert!(!via_has(&h.fields, "fe:3129"));
    }
}
