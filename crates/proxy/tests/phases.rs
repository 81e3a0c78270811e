//! The request layer drives a role's hooks in a fixed order, on real
//! sockets: a client, the layer's server, and upstreams that answer, refuse
//! or echo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use httpx::accesslog::{Format, Sink};
use httpx::conn::Conn;
use httpx::headers::Outgoing;
use httpx::HttpError;
use proxy::upstream::{Failure, Response};
use proxy::{
    Address, Claim, Filter, Next, OriginForm, PeerInfo, PeerKind, Proceed, Request, Retry, Role,
    Server, Session, Settings, Timeouts, Via,
};

/// The hooks called, in order, as `hook peer`.
type Calls = Arc<Mutex<Vec<String>>>;

/// A role that records every hook and answers by the request's path:
/// `/local` from the request filter, `/fallback` from `fail_to_proxy`.
struct Recorder {
    peers: Vec<(String, SocketAddr)>,
    kind: PeerKind,
    calls: Calls,
}

impl Recorder {
    fn note(&self, what: &str) {
        self.calls.lock().unwrap().push(what.to_string());
    }
    fn name(&self, p: &usize) -> &str {
        &self.peers[*p].0
    }
}

/// The role's own answer to `req`.
async fn answer(s: &mut Session, req: &Request, text: &str) -> Next {
    let keep = s.keep_alive(&req.head);
    let close = if keep { "" } else { "Connection: close\r\n" };
    let n = text.len();
    let mut out = s.head_buffer();
    out.extend_from_slice(
        format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n{close}\r\n{text}").as_bytes(),
    );
    s.log.status = 200;
    Next::keep_if(s.send(out).await && keep)
}

impl Role for Recorder {
    type Peer = usize;
    type Ctx = usize; // the next peer to offer

    fn describe<'a>(&'a self, p: &'a usize) -> PeerInfo<'a> {
        PeerInfo {
            name: &self.peers[*p].0,
            host: "127.0.0.1",
            kind: self.kind,
            address: Address::Socket(self.peers[*p].1),
            pass_credentials: false,
        }
    }

    async fn request_filter(&self, s: &mut Session, req: &Request, _: &mut usize) -> Filter {
        self.note("request_filter");
        if req.uri.path_and_query() == b"/local" {
            return Filter::Answered(answer(s, req, "local").await);
        }
        Filter::Forward
    }

    fn upstream_peer(&self, _: &Request, next: &mut usize) -> Option<usize> {
        let p = (*next < self.peers.len()).then_some(*next);
        *next += 1;
        self.note(&format!(
            "upstream_peer {}",
            p.map_or("-", |p| self.name(&p))
        ));
        p
    }

    fn claim(&self, p: &usize, pooled: bool) -> Option<Claim> {
        self.note(&format!("claim {} pooled={pooled}", self.name(p)));
        Some(Claim::unlimited())
    }

    fn take_idle(&self, p: &usize) -> Option<Conn> {
        self.note(&format!("take_idle {}", self.name(p)));
        None
    }

    fn keep_idle(&self, p: &usize, _: Conn) {
        self.note(&format!("keep_idle {}", self.name(p)));
    }

    fn upstream_request<'a>(&'a self, _: &'a Request, _: &'a usize, out: &mut Outgoing<'a>) {
        out.extra = b"X-Role: recorder\r\n";
        self.note("upstream_request");
    }

    fn upstream_ok(&self, p: &usize) {
        self.note(&format!("upstream_ok {}", self.name(p)));
    }

    fn upstream_failed(&self, req: &Request, _: &mut usize, p: &usize, f: &Failure) -> Retry {
        self.note(&format!("upstream_failed {}", self.name(p)));
        if f.retryable(req) {
            Retry::Next
        } else {
            Retry::Stop
        }
    }

    async fn upstream_response(
        &self,
        _: &mut Session,
        _: &Request,
        _: &mut usize,
        p: &usize,
        response: Response,
    ) -> Proceed {
        self.note(&format!(
            "upstream_response {} {}",
            self.name(p),
            response.head.status
        ));
        Proceed::Relay(response, &[("X-Role", b"recorder")])
    }

    async fn fail_to_proxy(
        &self,
        s: &mut Session,
        req: &Request,
        _: &mut usize,
        e: HttpError,
    ) -> Option<Next> {
        self.note(&format!("fail_to_proxy {}", e.status));
        if req.uri.path_and_query() != b"/fallback" {
            return None;
        }
        Some(answer(s, req, "fallback").await)
    }
}

fn settings(connect_ports: Vec<u16>) -> Settings {
    Settings {
        limits: httpx::Limits::default(),
        max_client_connections: 100,
        allow_clients: vec!["127.0.0.0/8".parse().unwrap()],
        access: proxy::access::Access {
            safe_ports: proxy::access::Access::squid_safe_ports(),
            own: vec![],
            local_destinations: Default::default(),
            purge_clients: vec![],
        },
        rules: Default::default(),
        listener_name: "phases".into(),
        component: "phases".into(),
        trust_client_marks: false,
        connect_ports: connect_ports.into_iter().map(|p| p..=p).collect(),
        origin_form: OriginForm::Refuse,
        schemes: &["http"],
        via: Via::new("phases-test"),
        x_forwarded_for: httpx::headers::Xff::Append,
        upstream: Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_secs(5),
        },
        forward_timeout: Duration::from_secs(10),
        body_idle_timeout: Duration::from_secs(5),
        tunnel_idle_timeout: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(1),
        worker_tick: None,
    }
}

/// An upstream that answers every request on a connection with `ok`, and
/// keeps the heads it received.
fn upstream(heads: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let heads = heads.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    heads.lock().unwrap().push(head);
                    if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An echo server: what comes in goes back out.
fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

/// A port nothing listens on.
fn refused() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running layer with a `Recorder`, and its access log.
struct Layer {
    addr: SocketAddr,
    calls: Calls,
    log: PathBuf,
}

fn start(
    tag: &str,
    peers: Vec<(String, SocketAddr)>,
    kind: PeerKind,
    connect_ports: Vec<u16>,
) -> Layer {
    let log = std::env::temp_dir().join(format!("proxy-phases-{}-{tag}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let sink = Sink::open(
        httpx::accesslog::Destination::File(log.clone()),
        Format::Squid,
    )
    .unwrap();
    let server = Server::new(settings(connect_ports), sink);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    let calls: Calls = Arc::default();
    let c = calls.clone();
    server
        .start("phases", vec![l], move || Recorder {
            peers: peers.clone(),
            kind,
            calls: c.clone(),
        })
        .unwrap();
    std::mem::forget(server); // its workers serve until the test process ends
    Layer { addr, calls, log }
}

impl Layer {
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// One request on a new connection; the whole answer.
    fn send(&self, raw: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The access log, once it has `lines` lines (workers flush it every 200 ms).
    fn log_lines(&self, lines: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let got: Vec<String> = text.lines().map(str::to_string).collect();
            if got.len() >= lines || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_forwarded_request_goes_through_every_phase_in_order() {
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let peers = vec![
        ("down".to_string(), refused()),
        ("up".to_string(), upstream(heads.clone())),
    ];
    let layer = start("forward", peers, PeerKind::Parent, vec![443]);
    let answer = layer
        .send("GET http://h.example/x HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("X-Role: recorder\r\n") && answer.ends_with("\r\n\r\nok"),
        "{answer}"
    );
    assert_eq!(
        layer.calls(),
        [
            "request_filter",
            "upstream_peer down",
            "upstream_request",
            "take_idle down",
            "claim down pooled=false",
            "upstream_failed down",
            "upstream_peer up",
            "upstream_request",
            "take_idle up",
            "claim up pooled=false",
            "upstream_ok up",
            "upstream_response up 200",
            "keep_idle up",
        ]
    );
    let head = heads.lock().unwrap().concat();
    assert!(
        head.starts_with("GET http://h.example/x HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains("X-Role: recorder\r\nVia: 1.1 phases-test (carpool)\r\n"),
        "{head}"
    );
    let log = layer.log_lines(1);
    assert!(
        log[0].contains(" TCP_MISS/200 ") && log[0].ends_with(" CARP/127.0.0.1 -"),
        "{log:?}"
    );
}

#[test]
fn the_request_filter_may_answer_and_nothing_goes_upstream() {
    let layer = start(
        "local",
        vec![("p".to_string(), refused())],
        PeerKind::Parent,
        vec![443],
    );
    let answer = layer.send("GET http://h.example/local HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(answer.ends_with("\r\n\r\nlocal"), "{answer}");
    assert_eq!(layer.calls(), ["request_filter"]);
    // the layer's own checks come first: a loop never reaches the role
    let looped =
        layer.send("GET http://h.example/x HTTP/1.1\r\nVia: 1.1 phases-test (carpool)\r\n\r\n");
    assert!(looped.starts_with("HTTP/1.1 508 "), "{looped}");
    assert!(layer.calls().is_empty());
    let log = layer.log_lines(2);
    assert!(
        log[1].contains(" NONE/508 ") && log[1].ends_with(" HIER_NONE/- -"),
        "{log:?}"
    );
}

#[test]
fn when_every_peer_fails_the_role_may_answer_otherwise() {
    let peers = vec![("a".to_string(), refused()), ("b".to_string(), refused())];
    let layer = start("fallback", peers, PeerKind::Parent, vec![443]);
    let answer = layer.send("GET http://h.example/fallback HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(answer.ends_with("\r\n\r\nfallback"), "{answer}");
    let calls = layer.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("upstream_"))
            .collect::<Vec<_>>(),
        [
            "upstream_peer a",
            "upstream_request",
            "upstream_failed a",
            "upstream_peer b",
            "upstream_request",
            "upstream_failed b",
            "upstream_peer -",
        ]
    );
    assert_eq!(calls.last().map(String::as_str), Some("fail_to_proxy 502"));
    // without a fallback the client gets the last failure's error
    let answer = layer.send("GET http://h.example/none HTTP/1.1\r\n\r\n");
    assert!(
        answer.starts_with("HTTP/1.1 502 ") && answer.contains("parent refused the connection"),
        "{answer}"
    );
}

#[test]
fn connect_is_tunnelled_to_an_origin_peer() {
    let target = echo();
    let peers = vec![("origin".to_string(), target)];
    let layer = start("tunnel", peers, PeerKind::Origin, vec![target.port()]);
    let mut s = TcpStream::connect(layer.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", target.port()).as_bytes())
        .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 Connection established\r\n\r\n");
    s.write_all(b"through").unwrap();
    let mut echoed = [0u8; 7];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"through");
    assert_eq!(
        layer.calls(),
        [
            "request_filter",
            "upstream_peer origin",
            "claim origin pooled=false",
            "upstream_ok origin"
        ]
    );
    drop(s);
    let log = layer.log_lines(1);
    assert!(
        log[0].contains(" TCP_TUNNEL/200 ") && log[0].contains(" HIER_DIRECT/127.0.0.1 "),
        "{log:?}"
    );
}
