//! The request as the layer admits it: its body framing unambiguous (nothing
//! that could smuggle a request is forwarded), no forwarding loop, its
//! target made absolute and normalized the way Squid does, CONNECT only to
//! allowed ports, only schemes the role forwards, and only expectations the
//! layer can meet.

use std::net::IpAddr;

use carp::RequestUri;
use httpx::framing::{self, BodyLen};
use httpx::head::Known;
use httpx::{headers, HttpError, RequestHead, Version};

use crate::access::Asked;
use crate::log::{Code, Record};
use crate::rules::Facts;
use crate::settings::{OriginForm, Settings};

/// A request admitted by the layer, with what every phase asks of it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The head as the client sent it.
    pub head: RequestHead,
    /// The effective request URI (`host:port` for CONNECT).
    pub uri: RequestUri,
    /// How its body is delimited.
    pub body: BodyLen,
    /// The client's address.
    pub client: IpAddr,
    remote: bool,
    connect: bool,
    expect_continue: bool,
}

impl Request {
    /// Checks `head` from `client` (`local`: on this host) against
    /// `settings`. The log gets the effective URI as soon as it is known,
    /// and `TCP_DENIED` for a CONNECT to a port not allowed. The error is
    /// the answer the client gets.
    pub(crate) fn check(
        head: RequestHead,
        (client, local): (IpAddr, bool),
        settings: &Settings,
        log: &mut Record,
    ) -> Result<Request, HttpError> {
        let body = framing::request_body(&head)?;
        if head.fields.get_all(Known::Host).nth(1).is_some() {
            // RFC 9112 §3.2: which one would the next hop believe?
            return Err(HttpError::new(400, "more than one Host"));
        }
        if headers::via_has(&head.fields, settings.via.name()) {
            return Err(HttpError::new(
                508,
                "forwarding loop: our Via is already in the request",
            ));
        }
        let connect = head.method() == b"CONNECT";
        let uri = target_uri(&head, connect, &settings.origin_form)?;
        log.set_url(uri.effective());
        if connect {
            if !settings
                .connect_ports
                .iter()
                .any(|r| r.contains(&uri.port()))
            {
                log.code = Code::Denied;
                return Err(HttpError::new(
                    403,
                    "CONNECT to a port not in connect_ports",
                ));
            }
        } else if !settings
            .schemes
            .iter()
            .any(|s| s.as_bytes() == uri.scheme())
        {
            return Err(HttpError::new(501, "unsupported URL scheme"));
        }
        let expect_continue = expectation(&head, body)?;
        let marked_remote =
            settings.trust_client_marks && head.fields.has_token(Known::CarpoolClient, "remote");
        Ok(Request {
            head,
            uri,
            body,
            client,
            remote: !local || marked_remote,
            connect,
            expect_continue,
        })
    }

    /// The method as sent.
    pub fn method(&self) -> &[u8] {
        self.head.method()
    }

    /// True when the request's client is not on this host (or, behind a
    /// carpool frontend, the frontend's client was not on its host).
    pub fn remote(&self) -> bool {
        self.remote
    }

    /// True for CONNECT.
    pub fn is_connect(&self) -> bool {
        self.connect
    }

    /// What the access checks look at.
    pub(crate) fn asked(&self) -> Asked<'_> {
        Asked {
            method: self.method(),
            connect: self.is_connect(),
            host: self.uri.host(),
            port: self.uri.port(),
            client: self.client,
            remote: self.remote(),
        }
    }

    /// What the access rules look at (`local_port`, `port_name`: the
    /// listener the client connected to).
    pub(crate) fn facts<'a>(&'a self, local_port: u16, port_name: &'a str) -> Facts<'a> {
        Facts {
            client: self.client,
            local_port,
            port_name,
            method: self.method(),
            scheme: self.uri.scheme(),
            host: self.uri.host(),
            port: self.uri.port(),
            url: self.uri.effective(),
            path: self.uri.path_and_query(),
        }
    }

    /// True when the client waits for `100 Continue` before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.expect_continue
    }

    /// True when the request may reach a second peer after a first one
    /// received it and failed: an idempotent method, or CONNECT (no client
    /// byte flows before its tunnel is up).
    pub fn replayable(&self) -> bool {
        self.connect || self.head.is_idempotent()
    }
}

/// The effective request URI: absolute-form as sent, origin-form made
/// absolute per `origin_form`, or the authority of a CONNECT.
fn target_uri(
    head: &RequestHead,
    connect: bool,
    origin_form: &OriginForm,
) -> Result<RequestUri, HttpError> {
    let target = head.target();
    if connect && !is_authority(target) {
        return Err(HttpError::new(400, "CONNECT target is not host:port"));
    }
    let built;
    let target = match origin_form {
        OriginForm::Host {
            default_site,
            vhost,
        } if !connect && target.first() == Some(&b'/') => {
            let site = default_site.as_deref().map(str::as_bytes);
            let host = match site {
                Some(site) if !vhost => Some(site),
                _ => head
                    .fields
                    .get(Known::Host)
                    .filter(|h| !h.is_empty())
                    .or(site),
            }
            .ok_or(HttpError::new(400, "origin-form request without Host"))?;
            built = [b"http://".as_slice(), host, target].concat();
            &built[..]
        }
        _ => target,
    };
    carp::normalize::normalize_target(head.method(), target)
        .map_err(|(status, reason)| HttpError::new(status, reason))
}

/// True for an authority-form target (RFC 9112 §3.2.3): `host[:port]`,
/// `[v6]:port`, nothing that starts a path, query, fragment or userinfo.
fn is_authority(target: &[u8]) -> bool {
    !target.is_empty()
        && !matches!(target[0], b':' | b'/')
        && !target
            .iter()
            .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@'))
}

/// Whether the client waits for `100 Continue` (RFC 9110 §10.1.1): only an
/// HTTP/1.1 request with a body does; HTTP/1.0 ones are ignored, as the
/// RFC says. Any expectation but `100-continue` gets 417.
fn expectation(head: &RequestHead, body: BodyLen) -> Result<bool, HttpError> {
    let mut continues = false;
    for v in head.fields.get_all(Known::Expect) {
        for token in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"100-continue") {
                continues = true;
            } else if !token.is_empty() {
                return Err(HttpError::new(417, "unsupported expectation"));
            }
        }
    }
    Ok(continues && head.version == Version::Http11 && body != BodyLen::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Timeouts, Via};
    use bytes::BytesMut;
    use std::time::Duration;

    fn settings(origin_form: OriginForm) -> Settings {
        Settings {
            limits: httpx::Limits::default(),
            max_client_connections: 10,
            allow_clients: vec![],
            access: crate::access::Access {
                safe_ports: crate::access::Access::squid_safe_ports(),
                own: vec![],
                local_destinations: Default::default(),
                purge_clients: vec![],
            },
            rules: Default::default(),
            listener_name: "test".into(),
            component: "test".into(),
            trust_client_marks: false,
            connect_ports: vec![443..=443],
            origin_form,
            schemes: &["http"],
            via: Via::new("me:3128"),
            x_forwarded_for: httpx::headers::Xff::Append,
            upstream: Timeouts {
                connect: Duration::from_secs(1),
                first_byte: Duration::from_secs(1),
            },
            forward_timeout: Duration::from_secs(2),
            body_idle_timeout: Duration::from_secs(1),
            tunnel_idle_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(1),
            worker_tick: None,
        }
    }

    fn check(text: &str, origin_form: OriginForm) -> (Result<Request, HttpError>, Record) {
        let mut b = BytesMut::from(text.as_bytes());
        let head = httpx::head::parse_request(&mut b, &httpx::Limits::default())
            .unwrap()
            .unwrap();
        let mut log = Record::default();
        log.begin(&head);
        let r = Request::check(
            head,
            ("127.0.0.1".parse().unwrap(), true),
            &settings(origin_form),
            &mut log,
        );
        (r, log)
    }

    fn status(text: &str) -> u16 {
        check(text, OriginForm::Refuse).0.unwrap_err().status
    }

    #[test]
    fn targets_become_effective_uris_per_the_origin_form_rule() {
        let (r, log) = check(
            "GET HTTP://H.example:80/a HTTP/1.1\r\n\r\n",
            OriginForm::Refuse,
        );
        assert_eq!(r.unwrap().uri.effective(), b"http://h.example/a");
        assert_eq!(log.url(), b"http://h.example/a");
        assert_eq!(status("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        let host = OriginForm::Host {
            default_site: None,
            vhost: false,
        };
        let (r, _) = check("GET /a HTTP/1.1\r\nHost: h:8080\r\n\r\n", host.clone());
        assert_eq!(r.unwrap().uri.effective(), b"http://h:8080/a");
        let (r, _) = check("GET /a HTTP/1.1\r\nHost: \r\n\r\n", host);
        assert_eq!(r.unwrap_err().status, 400, "an empty Host is no Host");
        let site = |vhost| OriginForm::Host {
            default_site: Some("www.example".into()),
            vhost,
        };
        for vhost in [true, false] {
            let (r, _) = check("GET /a HTTP/1.1\r\n\r\n", site(vhost));
            assert_eq!(r.unwrap().uri.effective(), b"http://www.example/a");
        }
        // Squid's vhost: the Host names the site; without it, defaultsite
        // is the site of every request
        let (r, _) = check("GET /a HTTP/1.1\r\nHost: proxy:80\r\n\r\n", site(true));
        assert_eq!(r.unwrap().uri.effective(), b"http://proxy/a");
        let (r, _) = check("GET /a HTTP/1.1\r\nHost: proxy:80\r\n\r\n", site(false));
        assert_eq!(r.unwrap().uri.effective(), b"http://www.example/a");
    }

    #[test]
    fn refusals_have_precise_statuses() {
        assert_eq!(
            status("POST http://h/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET http://h/ HTTP/1.1\r\nVia: 1.1 me:3128 (carpool)\r\n\r\n"),
            508
        );
        assert_eq!(status("GET ftp://h/ HTTP/1.1\r\n\r\n"), 501);
        let (r, log) = check("CONNECT h:25 HTTP/1.1\r\n\r\n", OriginForm::Refuse);
        assert_eq!(r.unwrap_err().status, 403);
        assert_eq!(log.code, Code::Denied);
        assert_eq!(log.url(), b"h:25");
        let (r, _) = check("CONNECT h:443 HTTP/1.1\r\n\r\n", OriginForm::Refuse);
        let r = r.unwrap();
        assert!(r.is_connect() && r.replayable());
        for bad in ["/x", "h/x", "u@h:443", ":443"] {
            assert_eq!(
                status(&format!("CONNECT {bad} HTTP/1.1\r\n\r\n")),
                400,
                "{bad}"
            );
        }
        let (r, _) = check("CONNECT [::1]:8443 HTTP/1.1\r\n\r\n", OriginForm::Refuse);
        assert_eq!(
            r.unwrap_err().status,
            403,
            "a valid authority, port not allowed"
        );
        assert_eq!(
            status("GET http://h/ HTTP/1.1\r\nHost: h\r\nhost: h\r\n\r\n"),
            400
        );
    }

    #[test]
    fn expectations() {
        let expect = |t: &str| check(t, OriginForm::Refuse).0.map(|r| r.expects_continue());
        let body = "Content-Length: 2\r\n";
        assert_eq!(
            expect(&format!(
                "PUT http://h/ HTTP/1.1\r\n{body}Expect: 100-Continue\r\n\r\n"
            )),
            Ok(true)
        );
        // nothing to continue: no body
        assert_eq!(
            expect("GET http://h/ HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"),
            Ok(false)
        );
        // RFC 9110 §10.1.1: an HTTP/1.0 request's 100-continue is ignored
        assert_eq!(
            expect(&format!(
                "PUT http://h/ HTTP/1.0\r\n{body}Expect: 100-continue\r\n\r\n"
            )),
            Ok(false)
        );
        assert_eq!(
            expect("GET http://h/ HTTP/1.1\r\nExpect: something-else\r\n\r\n")
                .unwrap_err()
                .status,
            417
        );
        let r = check(
            "POST http://h/ HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            OriginForm::Refuse,
        )
        .0
        .unwrap();
        assert!(!r.replayable());
    }
}
