//! `carpool frontend` against real parents on loopback: routing, keep-alive,
//! streaming, CONNECT, every error status, failover and recovery.

mod common;

use std::io::{BufReader, Read, Write};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

fn config(parents: &[&Parent], extra: &str) -> String {
    format!("hash = \"hrw\"\n{extra}\n{}", parents_toml(parents))
}

#[test]
fn routing_agrees_with_carpool_route() {
    let (a, b, c) = (
        Parent::start("alpha"),
        Parent::start("beta"),
        Parent::start("gamma"),
    );
    let conf = config(&[&a, &b, &c], "");
    let f = Frontend::start("routing", &conf);
    let urls: Vec<String> = (0..150)
        .map(|i| format!("http://Site{}.Example:80/obj/{i}?q={}", i % 7, i * 3))
        .collect();
    let expected = route(&conf, &urls);
    for (i, (url, want)) in urls.iter().zip(&expected).enumerate() {
        let r = get(&f, url);
        assert_eq!(r.status, 200, "{url}: {}", r.head);
        let text = r.text();
        assert!(
            text.starts_with(&format!("{want} ")),
            "{url}: routed to {text:?}, route says {want}"
        );
        // the parent receives the normalized absolute-form URL
        let normalized = format!("http://site{}.example/obj/{i}?q={}", i % 7, i * 3);
        assert!(text.contains(&format!(" GET {normalized} ")), "{text}");
    }
    for p in [&a, &b, &c] {
        assert!(
            p.requests.load(Ordering::SeqCst) > 20,
            "{} got too few",
            p.name
        );
    }
}

#[test]
fn keep_alive_reuses_connections_on_both_sides() {
    let a = Parent::start("only");
    let f = Frontend::start("keepalive", &config(&[&a], "[frontend]\nworkers = 1\n"));
    let s = f.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    for i in 0..200 {
        w.write_all(
            format!("GET http://h.example/{i} HTTP/1.1\r\nHost: h.example\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let resp = read_response(&mut r, false).unwrap();
        assert_eq!(resp.status, 200);
        assert!(resp.text().contains(&format!("/{i} ")));
    }
    assert_eq!(a.requests.load(Ordering::SeqCst), 200);
    assert_eq!(
        a.connections.load(Ordering::SeqCst),
        1,
        "200 requests on one client connection used one parent connection"
    );
    // HTTP/1.0 client without keep-alive: the frontend closes after the response
    let resp = exchange(&f, b"GET http://h.example/x HTTP/1.0\r\n\r\n");
    assert_eq!(resp.header("connection").as_deref(), Some("close"));
    // pipelined requests are answered in order
    let mut s = f.connect();
    s.write_all(b"GET http://h.example/p1 HTTP/1.1\r\nHost: h\r\n\r\nGET http://h.example/p2 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    assert!(read_response(&mut r, false)
        .unwrap()
        .text()
        .contains("/p1 "));
    assert!(read_response(&mut r, false)
        .unwrap()
        .text()
        .contains("/p2 "));
}

#[test]
fn a_burst_of_concurrent_requests_keeps_its_parent_connections() {
    // 150 clients with a request each in flight at once, three times over:
    // the first burst opens a parent connection per request, and the next
    // ones find them all idle in the pool (the default keeps up to 1024 per
    // parent and worker; a lower cap would close the surplus after every
    // exchange and connect again for the next).
    const CLIENTS: usize = 150;
    let a = Parent::start("burst");
    let f = Frontend::start("burst", &config(&[&a], "[frontend]\nworkers = 1\n"));
    let start = std::sync::Barrier::new(CLIENTS);
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (f, start) = (&f, &start);
                scope.spawn(move || {
                    // A failing client keeps meeting the others at the
                    // barrier (a panic here would leave them waiting forever).
                    let mut conn = None;
                    let mut failed = None;
                    for _ in 0..3 {
                        start.wait();
                        if failed.is_some() {
                            continue;
                        }
                        let (w, r) = conn.get_or_insert_with(|| {
                            let s = f.connect();
                            (s.try_clone().unwrap(), BufReader::new(s))
                        });
                        let req = b"GET http://h.example/slow/500 HTTP/1.1\r\nHost: h\r\n\r\n";
                        let outcome = w
                            .write_all(req)
                            .and_then(|()| read_response(r, false))
                            .map_err(|e| e.to_string());
                        match outcome {
                            Ok(r) if r.status == 200 => {}
                            Ok(r) => failed = Some(format!("status {}", r.status)),
                            Err(e) => failed = Some(e),
                        }
                    }
                    failed.map_or(Ok(()), Err)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "clients failed: {failed:?}");
    assert_eq!(a.requests.load(Ordering::SeqCst), 3 * CLIENTS);
    let opened = a.connections.load(Ordering::SeqCst);
    assert!(
        opened >= 100,
        "only {opened} parent connections: the requests of a burst did not overlap, nothing was tested"
    );
    assert!(
        opened <= CLIENTS + 5,
        "{opened} parent connections for 3 bursts of {CLIENTS} concurrent requests: idle ones were closed"
    );
}

#[test]
fn request_and_response_bodies_stream_both_ways() {
    let a = Parent::start("bodies");
    let f = Frontend::start("bodies", &config(&[&a], ""));
    // Content-Length request body
    let r = exchange(&f, b"POST http://h.example/up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world");
    assert!(r.text().ends_with("body=11\n"), "{}", r.text());
    // chunked request body, with Expect: 100-continue
    let mut s = f.connect();
    s.write_all(b"POST http://h.example/up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert!(r.text().ends_with("body=11\n"), "{}", r.text());
    // chunked and close-delimited responses reach an HTTP/1.1 client chunked, intact
    for path in ["/chunked/300000", "/close/300000"] {
        let r = get(&f, &format!("http://h.example{path}"));
        assert_eq!(
            r.header("transfer-encoding").as_deref(),
            Some("chunked"),
            "{path}"
        );
        assert_eq!(r.body.len(), 300000);
        assert!(
            r.body
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i as u64)),
            "{path} corrupted"
        );
    }
    // …and an HTTP/1.0 client gets the chunked one de-chunked, delimited by close
    let r = exchange(&f, b"GET http://h.example/chunked/5000 HTTP/1.0\r\n\r\n");
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body.len(), 5000);
    // HEAD keeps the length and sends no body
    let r = exchange(
        &f,
        b"HEAD http://h.example/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some());
}

/// A 5 GiB response passes through with flat memory.
#[test]
fn large_response_streams_with_flat_memory() {
    let a = Parent::start("big");
    let f = Frontend::start("big", &config(&[&a], "[frontend]\nworkers = 1\n"));
    let size: u64 = 5 << 30;
    let mut s = f.connect();
    s.write_all(
        format!("GET http://h.example/big/{size} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    let started = Instant::now();
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        // spot-check the content
        if got % (256 << 20) < n as u64 {
            assert_eq!(buf[0], pattern(got), "corrupted at {got}");
        }
        got += n as u64;
    }
    assert_eq!(got, size);
    let rss = f.peak_rss_kb();
    eprintln!(
        "5 GiB through the frontend in {:?}, peak RSS {rss} kB",
        started.elapsed()
    );
    assert!(rss < 64 * 1024, "peak RSS {rss} kB");
}

#[test]
fn connect_tunnels_end_to_end() {
    let a = Parent::start("tunnel");
    let f = Frontend::start("connect", &config(&[&a], ""));
    let mut s = f.connect();
    s.write_all(b"CONNECT secure.example:443 HTTP/1.1\r\nHost: secure.example:443\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 Connection established\r\n\r\n");
    s.write_all(b"ping through the tunnel").unwrap();
    let mut echo = [0u8; 23];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping through the tunnel");
    assert!(a
        .last_head
        .lock()
        .unwrap()
        .starts_with("CONNECT secure.example:443 HTTP/1.1"));
    // CONNECT to a port not in connect_ports
    let r = exchange(&f, b"CONNECT secure.example:25 HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 403);
}

#[test]
fn every_error_status() {
    let a = Parent::start("errs");
    let extra = "[frontend]\nmax_uri_bytes = 200\nmax_header_bytes = 4096\nparent_first_byte_timeout = 0.5\n";
    let f = Frontend::start("errors", &config(&[&a], extra));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed request line", b"GET\x01 / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("CL + TE", b"POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc".to_vec(), 400),
        ("duplicate CL", b"POST http://h/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc".to_vec(), 400),
        ("origin-form on a forward proxy", b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), 400),
        ("URI too long", format!("GET http://h/{} HTTP/1.1\r\n\r\n", "a".repeat(300)).into_bytes(), 414),
        ("head too large", format!("GET http://h/ HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(5000)).into_bytes(), 431),
        ("unknown transfer coding", b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
        ("parent drops", b"GET http://h/drop HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), 502),
        ("parent too slow", b"GET http://h/slow/3000 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), 504),
    ];
    for (what, raw, want) in cases {
        let r = exchange(&f, &raw);
        assert_eq!(r.status, want, "{what}: {}", r.head);
        assert!(
            r.text().starts_with(&want.to_string()),
            "{what}: body {:?}",
            r.text()
        );
    }
    // bad chunk syntax in a request body is never forwarded as is
    let r = exchange(
        &f,
        b"POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.head);
    // our own Via in a request is a loop
    let first = get(&f, "http://h.example/via");
    let via = first.header("via").unwrap();
    let name = via.split_whitespace().nth(1).unwrap();
    let r = exchange(
        &f,
        format!("GET http://h/ HTTP/1.1\r\nVia: 1.1 {name} (carpool)\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 508);
}

#[test]
fn clients_outside_allow_clients_get_403() {
    let a = Parent::start("acl");
    let f = Frontend::start(
        "acl",
        &config(&[&a], "[frontend]\nallow_clients = [\"10.0.0.0/8\"]\n"),
    );
    let r = get(&f, "http://h.example/");
    assert_eq!(r.status, 403);
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn no_alive_parent_is_503_and_dead_parents_are_skipped() {
    let dead_port = free_port();
    let conf = format!(
        "hash = \"hrw\"\n[health]\nfail_limit = 1\nprobe_interval = 30\n[[parent]]\nname = \"gone\"\nhost = \"127.0.0.1\"\nport = {dead_port}\n"
    );
    let f = Frontend::start("dead", &conf);
    assert_eq!(
        get(&f, "http://h.example/1").status,
        502,
        "first failure: cannot connect"
    );
    assert_eq!(
        get(&f, "http://h.example/2").status,
        503,
        "then: marked dead"
    );
    assert!(f.stderr().contains("DEAD"), "{}", f.stderr());
}

/// A parent killed under load: only its URLs move (to their next member),
/// requests in flight on it are the only failures, and it comes back when
/// restarted.
#[test]
fn killed_parent_fails_over_and_recovers() {
    let (a, b, c) = (
        Parent::start("k-a"),
        Parent::start("k-b"),
        Parent::start("k-c"),
    );
    let conf = config(
        &[&a, &b, &c],
        "[health]\nfail_limit = 2\nprobe_interval = 0.2\n",
    );
    let f = Frontend::start("kill", &conf);
    let urls: Vec<String> = (0..120)
        .map(|i| format!("http://k{i}.example/obj"))
        .collect();
    let owners = route(&conf, &urls);
    let victim_port = b.port;
    b.kill();
    // every request still succeeds: connect failures move on in the ranking
    for (url, owner) in urls.iter().zip(&owners) {
        let r = get(&f, url);
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let served_by = r.text().split(' ').next().unwrap().to_string();
        if owner != "k-b" {
            assert_eq!(&served_by, owner, "{url} moved though its owner is alive");
        } else {
            assert_ne!(served_by, "k-b");
        }
    }
    assert!(f.stderr().contains("DEAD"), "{}", f.stderr());
    // restart the victim on its port: the prober brings it back
    let b2 = Parent::start_on("k-b", victim_port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let back = urls
            .iter()
            .zip(&owners)
            .filter(|(_, o)| *o == "k-b")
            .all(|(u, _)| get(&f, u).text().starts_with("k-b "));
        if back {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "k-b did not come back: {}",
            f.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(b2.requests.load(Ordering::SeqCst) > 0);
    assert!(f.stderr().contains("ALIVE"), "{}", f.stderr());
}

#[test]
fn access_log_in_squid_format_reopens_on_sigusr1() {
    let a = Parent::start("logged");
    let dir = temp_dir("accesslog");
    let log = dir.join("access.log");
    let f = Frontend::start(
        "accesslog",
        &config(
            &[&a],
            &format!("[frontend]\naccess_log = \"{}\"\n", log.display()),
        ),
    );
    get(&f, "http://logged.example/a");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let fields: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(fields.len(), 10, "{text}");
    assert_eq!(fields[3], "TCP_MISS/200");
    assert_eq!(fields[5], "GET");
    assert_eq!(fields[6], "http://logged.example/a");
    // Squid writes the peer's host there; the name is in JSON lines
    assert_eq!(fields[8], "CARP/127.0.0.1");
    // logrotate: move the file, SIGUSR1, new lines go to a new file
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    unsafe_kill(f.pid(), "USR1");
    std::thread::sleep(Duration::from_millis(200));
    get(&f, "http://logged.example/b");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&log).map_or(true, |t| !t.contains("/b ")) {
        assert!(Instant::now() < deadline, "no new log after SIGUSR1");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// `max_conn`: when a worker holds its share of a parent's connections, the
/// next request goes to the next member of its ranking (as Squid's CARP skips
/// a parent at max-conn).
#[test]
fn max_conn_overflows_to_the_next_member() {
    let (a, b) = (Parent::start("mc-a"), Parent::start("mc-b"));
    let conf = format!(
        "hash = \"hrw\"\n[frontend]\nworkers = 1\n[[parent]]\nname = \"mc-a\"\nhost = \"127.0.0.1\"\nport = {}\nmax_conn = 1\n{}",
        a.port,
        parents_toml(&[&b])
    );
    let f = Frontend::start("maxconn", &conf);
    let urls: Vec<String> = (0..200)
        .map(|i| format!("http://mc{i}.example/slow/600"))
        .collect();
    let owners = route(&conf, &urls);
    let mine: Vec<&String> = urls
        .iter()
        .zip(&owners)
        .filter(|(_, o)| *o == "mc-a")
        .map(|(u, _)| u)
        .take(2)
        .collect();
    assert_eq!(mine.len(), 2);
    let port = f.port;
    let handles: Vec<_> = mine
        .iter()
        .map(|u| {
            let u = (*u).clone();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(
                    format!("GET {u} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
                )
                .unwrap();
                read_response(&mut BufReader::new(s), false).unwrap().text()
            })
        })
        .collect();
    let mut served: Vec<String> = handles
        .into_iter()
        .map(|h| h.join().unwrap().split(' ').next().unwrap().to_string())
        .collect();
    served.sort();
    assert_eq!(served, vec!["mc-a".to_string(), "mc-b".to_string()]);
}

/// A parent killed while requests are in flight: only those requests may
/// fail, everything else succeeds, its URLs move to their next member, and
/// the failures are logged.
#[test]
fn parent_killed_under_load() {
    let (a, b, c) = (
        Parent::start("l-a"),
        Parent::start("l-b"),
        Parent::start("l-c"),
    );
    let conf = config(
        &[&a, &b, &c],
        "[health]\nfail_limit = 1\nprobe_interval = 30\n",
    );
    let f = Frontend::start("killload", &conf);
    let clients = 6;
    let port = f.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                let mut i = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let url = format!("http://load{t}x{}.example/slow/5", i % 50);
                    s.write_all(
                        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .unwrap();
                    match read_response(&mut BufReader::new(s), false) {
                        Ok(r) if r.status == 200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    b.kill();
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for h in handles {
        let (o, fl) = h.join().unwrap();
        ok += o;
        failed += fl;
    }
    eprintln!("{ok} requests succeeded, {failed} failed while l-b was killed");
    assert!(ok > 100, "load ran: {ok}");
    assert!(
        failed <= clients,
        "only requests in flight may fail: {failed} failed with {clients} clients"
    );
    assert!(f.stderr().contains("DEAD"), "{}", f.stderr());
}

#[test]
fn interim_responses_and_trailers_pass_through() {
    let a = Parent::start("hints");
    let f = Frontend::start("hints", &config(&[&a], ""));
    let mut s = f.connect();
    s.write_all(
        b"GET http://h.example/early-hints HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{raw}");
    assert!(raw.contains("Link: </style.css>; rel=preload"), "{raw}");
    assert!(
        raw.contains("HTTP/1.1 200 OK") && raw.ends_with("after hints\n"),
        "{raw}"
    );
    let mut s = f.connect();
    s.write_all(b"GET http://h.example/trailers HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.ends_with("5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\r\n"),
        "trailers pass as sent: {raw}"
    );
}

#[test]
fn x_forwarded_for_modes() {
    let a = Parent::start("xff");
    for (mode, want) in [
        ("append", Some("X-Forwarded-For: 10.9.9.9, 127.0.0.1")),
        ("delete", None),
        ("off", Some("X-Forwarded-For: 10.9.9.9")),
    ] {
        let f = Frontend::start(
            &format!("xff-{mode}"),
            &config(
                &[&a],
                &format!("[frontend]\nx_forwarded_for = \"{mode}\"\n"),
            ),
        );
        let r = exchange(&f, b"GET http://h.example/ HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.9.9.9\r\nConnection: close\r\n\r\n");
        assert_eq!(r.status, 200);
        let head = a.last_head.lock().unwrap().clone();
        let xff = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for"));
        assert_eq!(xff, want, "{mode}: {head}");
        assert!(head.contains("\nVia: 1.1 "), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "hop-by-hop removed: {head}"
        );
    }
}

#[test]
fn accelerator_mode_keys_by_host() {
    let (a, b) = (Parent::start("acc-a"), Parent::start("acc-b"));
    let conf = config(
        &[&a, &b],
        "[frontend]\nmode = \"accel\"\ndefault_site = \"default.example\"\n",
    );
    let f = Frontend::start("accel", &conf);
    let paths: Vec<String> = (0..40).map(|i| format!("/page/{i}")).collect();
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("http://www.site.example{p}"))
        .collect();
    let owners = route(&conf, &urls);
    for ((p, url), owner) in paths.iter().zip(&urls).zip(&owners) {
        let r = exchange(
            &f,
            format!("GET {p} HTTP/1.1\r\nHost: WWW.Site.Example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("{owner} GET {url} body=0\n"));
    }
    // no Host: the default site
    let r = exchange(&f, b"GET /x HTTP/1.0\r\n\r\n");
    assert!(
        r.text().contains(" GET http://default.example/x "),
        "{}",
        r.text()
    );
}

/// Squid's `accel defaultsite=X` without `vhost`: every request is keyed
/// to X whatever its `Host`, so a request whose `Host` names the proxy
/// itself does not loop back to it.
#[test]
fn accelerator_without_vhost_keys_every_request_to_the_default_site() {
    let (a, b) = (Parent::start("nv-a"), Parent::start("nv-b"));
    let conf = config(
        &[&a, &b],
        "[frontend]\nmode = \"accel\"\ndefault_site = \"default.example\"\nvhost = false\n",
    );
    let f = Frontend::start("accel-novhost", &conf);
    let paths: Vec<String> = (0..20).map(|i| format!("/page/{i}")).collect();
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("http://default.example{p}"))
        .collect();
    let owners = route(&conf, &urls);
    for ((p, url), owner) in paths.iter().zip(&urls).zip(&owners) {
        for host in [format!("127.0.0.1:{}", f.port), "www.other.example".into()] {
            let r = exchange(
                &f,
                format!("GET {p} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            assert_eq!(r.status, 200, "{host}: {}", r.head);
            assert_eq!(r.text(), format!("{owner} GET {url} body=0\n"));
        }
    }
}

#[test]
fn http_probe_revives_a_parent() {
    let a = Parent::start("probed");
    let port = a.port;
    let conf = format!(
        "hash = \"hrw\"\n[health]\nfail_limit = 1\nprobe_interval = 0.2\nprobe = \"http\"\nprobe_url = \"http://probe.example/health\"\n{}",
        parents_toml(&[&a])
    );
    let f = Frontend::start("probe", &conf);
    a.kill();
    assert_eq!(get(&f, "http://h.example/1").status, 502);
    assert_eq!(get(&f, "http://h.example/2").status, 503);
    let b = Parent::start_on("probed", port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&f, "http://h.example/3").status != 200 {
        assert!(Instant::now() < deadline, "not revived: {}", f.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(f.stderr().contains("probe succeeded"), "{}", f.stderr());
    assert!(
        b.requests.load(Ordering::SeqCst) >= 2,
        "probe and request reached the parent"
    );
}

/// A hung parent (a stopped process: the kernel still completes its
/// connects) stays dead with the default probe, which waits for an HTTP
/// answer to `OPTIONS *`; a TCP probe calls it alive again at every round,
/// and at every round a client waits for a timeout again. An answering
/// parent passes the default probe whatever its status (a carpool cache
/// answers `OPTIONS *` with an error).
#[test]
fn the_default_probe_keeps_a_hung_parent_dead() {
    let c = common::Cache::start_with("probe-hung", false, &[]);
    for (probe, revived) in [("", false), ("probe = \"tcp\"\n", true)] {
        let conf = format!(
            "[frontend]\nparent_first_byte_timeout = 1\nparent_connect_timeout = 0.5\n\
             [health]\nfail_limit = 1\nprobe_interval = 0.2\n{probe}\
             [[parent]]\nname = \"hung\"\nhost = \"127.0.0.1\"\nport = {}\n",
            c.port
        );
        let f = Frontend::start("probe-hung", &conf);
        let stopped = common::Stopped::stop(c.child.id());
        let r = get(&f, "http://h.example/x");
        assert_eq!(r.status, 504, "{}", r.head);
        std::thread::sleep(Duration::from_millis(1500)); // several rounds
        let log = f.stderr();
        assert!(log.contains("parent marked DEAD"), "{log}");
        assert_eq!(log.contains("probe succeeded"), revived, "{probe}: {log}");
        drop(stopped);
        if !revived {
            // answering again: the default probe brings it back
            let deadline = Instant::now() + Duration::from_secs(10);
            while !f.stderr().contains("probe succeeded") {
                assert!(Instant::now() < deadline, "not revived: {}", f.stderr());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn max_client_connections_is_enforced() {
    let a = Parent::start("mcc");
    let f = Frontend::start(
        "mcc",
        &config(
            &[&a],
            "[frontend]\nworkers = 1\nmax_client_connections = 2\n",
        ),
    );
    let _c1 = f.connect();
    let _c2 = f.connect();
    std::thread::sleep(Duration::from_millis(200));
    let r = get(&f, "http://h.example/");
    assert_eq!(r.status, 503, "{}", r.head);
    drop(_c1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(&f, "http://h.example/").status, 200);
}

/// SIGTERM: the listener closes, a request in flight finishes, then the
/// process exits.
#[test]
fn sigterm_drains_in_flight_requests() {
    let a = Parent::start("drain");
    let mut f = Frontend::start(
        "drain",
        &config(&[&a], "[frontend]\nshutdown_timeout = 5\n"),
    );
    let port = f.port;
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET http://h.example/slow/1500 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        read_response(&mut BufReader::new(s), false).map(|r| r.status)
    });
    std::thread::sleep(Duration::from_millis(300));
    unsafe_kill(f.pid(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "listener closed on SIGTERM"
    );
    assert_eq!(
        slow.join().unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = f.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not exit: {}", f.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        f.stderr().contains("all connections finished"),
        "{}",
        f.stderr()
    );
}

#[test]
fn idle_tunnels_are_closed() {
    let a = Parent::start("idle-tunnel");
    let f = Frontend::start(
        "idletunnel",
        &config(&[&a], "[frontend]\ntunnel_idle_timeout = 0.5\n"),
    );
    let mut s = f.connect();
    s.write_all(b"CONNECT secure.example:443 HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).unwrap();
    s.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let waited = started.elapsed();
    assert!(rest.is_empty());
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

/// Bodies whose tail is smaller than what the previous read waited for (the
/// SO_RCVLOWAT mark must follow the remainder down), back to back on one
/// keep-alive connection.
#[test]
fn body_tails_of_every_size_arrive_promptly() {
    let a = Parent::start("tails");
    let f = Frontend::start(
        "tails",
        &config(&[&a], "[frontend]\nworkers = 1\nbody_idle_timeout = 30\n"),
    );
    let s = f.connect();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    for size in [
        76_000u64, 70_000, 1_000, 131_000, 20_000, 65_536, 200_001, 3,
    ] {
        let started = Instant::now();
        w.write_all(
            format!("GET http://h.example/big/{size} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let resp = read_response(&mut r, false).expect("response within the read timeout");
        assert_eq!(resp.body.len() as u64, size);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{size} bytes took {:?}",
            started.elapsed()
        );
    }
}

/// SIGHUP to a standalone frontend (the wiki page's layout runs several)
/// keeps it running and says what it did; it used to kill it at once.
#[test]
fn sighup_to_a_standalone_frontend_keeps_it_running() {
    let a = Parent::start("hup");
    let f = Frontend::start("hup", &config(&[&a], ""));
    assert_eq!(get(&f, "http://hup.example/1").status, 200);
    unsafe_kill(f.pid(), "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(&f, "http://hup.example/2").status,
        200,
        "{}",
        f.stderr()
    );
    assert!(f.stderr().contains("SIGHUP"), "{}", f.stderr());
}

/// A second frontend on a port another process listens on is refused with
/// a clear error: with SO_REUSEPORT it used to share the port silently and
/// take part of the clients.
#[test]
fn a_port_held_by_another_process_is_refused() {
    let a = Parent::start("held");
    let first = Frontend::start("held-1", &config(&[&a], ""));
    let conf = first.dir.join("carpool.toml");
    let mut second = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["frontend", "-c"])
        .arg(&conf)
        .args(["--listen", &format!("127.0.0.1:{}", first.port)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second frontend started on a port the first one holds");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("already in use"), "{err}");
    // the first one was not disturbed
    assert_eq!(get(&first, "http://held.example/").status, 200);
}

/// RFC 9112 §3.2: more than one `Host` is 400, and a proxy rewrites `Host`
/// from an absolute-form target (it used to forward both as sent); §3.2.3:
/// a CONNECT target is `host:port` (`CONNECT /x` was forwarded as
/// `CONNECT /x:443`); RFC 9110 §10.1.1: an HTTP/1.0 request's
/// `100-continue` is ignored (it got 417); the only limit on a target is
/// `max_uri_bytes`, with 414 (9,000 bytes got 400 from a limit of 8,191).
#[test]
fn hosts_targets_and_expectations_as_the_rfcs_say() {
    let a = Parent::start("rfc");
    let f = Frontend::start("rfc", &config(&[&a], "[frontend]\nmax_uri_bytes = 20000\n"));
    let r = exchange(
        &f,
        b"GET http://h.example/ HTTP/1.1\r\nHost: h.example\r\nHost: evil.example\r\n\r\n",
    );
    assert_eq!(r.status, 400, "two Host fields: {}", r.head);
    let r = exchange(
        &f,
        b"GET http://h.example:8080/p HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let head = a.last_head.lock().unwrap().clone();
    assert!(
        head.contains("\r\nHost: h.example:8080\r\n") && !head.contains("evil"),
        "{head}"
    );
    let r = exchange(&f, b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400, "{}", r.head);
    let r = exchange(
        &f,
        b"PUT http://h.example/up HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let long = format!("http://h.example/{}", "a".repeat(9000));
    let r = exchange(
        &f,
        format!("GET {long} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        r.status, 200,
        "a 9 KB target within max_uri_bytes: {}",
        r.head
    );
    let longer = format!("http://h.example/{}", "a".repeat(21000));
    let r = exchange(&f, format!("GET {longer} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(r.status, 414, "{}", r.head);
}

/// Not an open proxy by default (issue 12's SSRF findings): plain requests
/// only to Squid's safe ports, never to the proxy's own listener or the
/// array's admin listener, no PURGE unless the client is in purge_clients
/// (by default none is), and a `Carpool-Client` field from a client is
/// never passed on. Each of these went to the parent before.
#[test]
fn not_an_open_proxy_by_default() {
    let a = Parent::start("ssrf");
    let admin = free_port();
    let f = Frontend::start(
        "ssrf",
        &config(&[&a], &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n")),
    );
    let before = a.requests.load(Ordering::SeqCst);
    for (what, raw) in [
        (
            "port 22",
            "GET http://h.example:22/ HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "PURGE",
            "PURGE http://h.example/x HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "the admin listener",
            format!("GET http://127.0.0.1:{admin}/status HTTP/1.1\r\n\r\n"),
        ),
        (
            "the frontend itself",
            format!("GET http://127.0.0.1:{}/ HTTP/1.1\r\n\r\n", f.port),
        ),
        (
            "the admin listener by name",
            format!("GET http://localhost:{admin}/status HTTP/1.1\r\n\r\n"),
        ),
    ] {
        let r = exchange(&f, raw.as_bytes());
        assert_eq!(r.status, 403, "{what}: {}", r.head);
    }
    assert_eq!(
        a.requests.load(Ordering::SeqCst),
        before,
        "nothing reached the parent"
    );
    let r = exchange(&f, b"GET http://h.example:8080/ok HTTP/1.1\r\nCarpool-Client: local\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    let head = a.last_head.lock().unwrap().to_ascii_lowercase();
    assert!(!head.contains("carpool-client"), "{head}");
}

/// `safe_ports`, `local_destinations` and `purge_clients` are the
/// administrator's to set.
#[test]
fn access_settings_are_configurable() {
    let a = Parent::start("acs");
    let f = Frontend::start(
        "acs",
        &config(
            &[&a],
            "[frontend]\nsafe_ports = [80, \"8000-8100\"]\nlocal_destinations = \"none\"\npurge_clients = [\"127.0.0.1\"]\n",
        ),
    );
    let status = |raw: &str| exchange(&f, raw.as_bytes()).status;
    assert_eq!(
        status("GET http://h.example:8080/ HTTP/1.1\r\nConnection: close\r\n\r\n"),
        200
    );
    assert_eq!(status("GET http://h.example:9000/ HTTP/1.1\r\n\r\n"), 403);
    assert_eq!(status("GET http://h.example:443/ HTTP/1.1\r\n\r\n"), 403);
    assert_eq!(
        status("GET http://127.0.0.1/ HTTP/1.1\r\n\r\n"),
        403,
        "no client reaches loopback"
    );
    assert_eq!(
        status("PURGE http://h.example/x HTTP/1.1\r\nConnection: close\r\n\r\n"),
        200
    );
}

/// The DEAD warning counts the requests that failed on the parent (it said
/// 0 after as many 502s as the fail limit, counting only those that failed
/// after they were sent).
#[test]
fn the_dead_warning_counts_the_failed_requests() {
    let dead_port = free_port();
    let conf = format!(
        "hash = \"hrw\"\n[health]\nfail_limit = 3\nprobe_interval = 30\n[[parent]]\nname = \"gone\"\nhost = \"127.0.0.1\"\nport = {dead_port}\n"
    );
    let f = Frontend::start("dead-count", &conf);
    for i in 0..3 {
        assert_eq!(get(&f, &format!("http://h.example/{i}")).status, 502);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f.stderr().contains("DEAD") {
        assert!(Instant::now() < deadline, "{}", f.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        f.stderr().contains("3 requests have failed on it"),
        "{}",
        f.stderr()
    );
}

/// Squid answers its internal objects itself, and `carpool route` says
/// LOCAL for them; the frontend forwarded them to a parent.
#[test]
fn squid_internal_objects_are_not_forwarded() {
    let a = Parent::start("internal");
    let f = Frontend::start("internal", &config(&[&a], ""));
    let r = get(
        &f,
        "http://h.example/squid-internal-static/icons/anthony-unknown.gif",
    );
    assert_eq!(r.status, 404, "{}", r.head);
    assert_eq!(a.requests.load(Ordering::SeqCst), 0);
    let routed = route(
        &config(&[&a], ""),
        &["http://h.example/squid-internal-static/icons/x".into()],
    );
    assert_eq!(routed, ["LOCAL"]);
}

/// A parent that hangs (accepts, never answers) costs a request one
/// first-byte timeout and at most one retry, all within `forward_timeout`:
/// an idempotent request used to be sent to every parent in turn, waiting
/// the whole timeout on each (three hung parents: three timeouts).
#[test]
fn hung_parents_cost_one_retry_within_forward_timeout() {
    let (a, b, c) = (
        Parent::start("hang-a"),
        Parent::start("hang-b"),
        Parent::start("hang-c"),
    );
    let timed = |extra: &str| {
        let conf = format!(
            "[frontend]\nparent_first_byte_timeout = 1\n{extra}[health]\nfail_limit = 100\n"
        );
        let f = Frontend::start("hang", &config(&[&a, &b, &c], &conf));
        let before: usize = [&a, &b, &c]
            .iter()
            .map(|p| p.requests.load(Ordering::SeqCst))
            .sum();
        let t0 = Instant::now();
        let r = get(&f, "http://h.example/slow/10000");
        let took = t0.elapsed();
        assert_eq!(r.status, 504, "{}", r.head);
        let after: usize = [&a, &b, &c]
            .iter()
            .map(|p| p.requests.load(Ordering::SeqCst))
            .sum();
        (took, after - before)
    };
    let (took, tried) = timed("");
    assert_eq!(tried, 2, "the owner and one retry, not every parent");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(2600),
        "{took:?}"
    );
    // with a total budget below two timeouts, the retry gets what is left
    let (took, tried) = timed("forward_timeout = 1.5\n");
    assert_eq!(tried, 2);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_millis(1900),
        "{took:?}"
    );
}

/// A parent that authenticates the clients itself, as a Squid parent with
/// `proxy_auth` does behind a frontend with `login=PASS`: a request or
/// CONNECT without `Proxy-Authorization` gets 407 with two challenges;
/// with one, 200 (`NAME ok`; a CONNECT: a tunnel that echoes). Every
/// request head it receives is recorded.
struct AuthParent {
    name: String,
    port: u16,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    server: TestServer,
}

impl AuthParent {
    fn start(name: &str) -> AuthParent {
        Self::start_on(name, 0)
    }

    fn start_on(name: &str, port: u16) -> AuthParent {
        let heads: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let (n, h) = (name.to_string(), heads.clone());
        let server = TestServer::start(port, move |s| serve_auth(s, &n, &h));
        AuthParent {
            name: name.to_string(),
            port: server.port,
            heads,
            server,
        }
    }

    /// The last request head it received.
    fn last(&self) -> String {
        self.heads
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn count(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

impl Drop for AuthParent {
    fn drop(&mut self) {
        self.server.kill();
    }
}

fn serve_auth(s: std::net::TcpStream, name: &str, heads: &std::sync::Mutex<Vec<String>>) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut out = s;
    while let Some(head) = read_head(&mut reader) {
        heads.lock().unwrap().push(head.clone());
        let authorized = head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("proxy-authorization:"));
        let answer = if !authorized {
            format!(
                "HTTP/1.1 407 Proxy Authentication Required\r\n\
                 Proxy-Authenticate: Basic realm=\"{name}\"\r\nProxy-Authenticate: Negotiate\r\n\
                 Content-Length: 0\r\n\r\n"
            )
        } else if head.starts_with("CONNECT ") {
            let _ = out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let _ = std::io::copy(&mut reader, &mut out);
            return;
        } else {
            let body = format!("{name} ok\n");
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn auth_parents_toml(parents: &[(&AuthParent, bool)]) -> String {
    parents
        .iter()
        .map(|(p, pass)| {
            format!(
                "[[parent]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\npass_credentials = {pass}\n",
                p.name, p.port
            )
        })
        .collect()
}

/// Field `name` of a recorded head, if present.
fn field(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// `pass_credentials` (Squid's `cache_peer ... login=PASS`): the client's
/// `Proxy-Authorization` reaches a parent that has it, unchanged, and the
/// parent's `Proxy-Authenticate` challenges reach the client; a parent
/// without it sees neither, also when it gets the request as a failover
/// from one that has it (and the other way round).
#[test]
fn pass_credentials_forwards_proxy_authorization_to_that_parent_only() {
    let (a, b) = (AuthParent::start("pass-a"), AuthParent::start("keep-b"));
    let conf = format!(
        "hash = \"hrw\"\n{}",
        auth_parents_toml(&[(&a, true), (&b, false)])
    );
    let f = Frontend::start("pass-credentials", &conf);
    let urls: Vec<String> = (0..40)
        .map(|i| format!("http://site{i}.example/private"))
        .collect();
    let owners = route(&conf, &urls);
    let owned_by = |name: &str| {
        urls.iter()
            .zip(&owners)
            .find(|(_, o)| *o == name)
            .map(|(u, _)| u.clone())
            .unwrap_or_else(|| panic!("no URL owned by {name}: {owners:?}"))
    };
    let (url_a, url_b) = (owned_by("pass-a"), owned_by("keep-b"));
    let with_credentials = |url: &str| {
        exchange(
            &f,
            format!(
                "GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\
                 Authorization: Bearer origin-token\r\nProxy-Connection: keep-alive\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    // the parent with the option gets the credentials, as they came
    let r = with_credentials(&url_a);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "pass-a ok\n"),
        "{}",
        r.head
    );
    let head = a.last();
    assert_eq!(
        field(&head, "Proxy-Authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz"),
        "{head}"
    );
    assert_eq!(
        field(&head, "Authorization").as_deref(),
        Some("Bearer origin-token"),
        "{head}"
    );
    assert_eq!(
        field(&head, "Proxy-Connection"),
        None,
        "other hop-by-hop fields stay: {head}"
    );
    // the one without it does not (but gets the end-to-end Authorization)
    let r = with_credentials(&url_b);
    assert_eq!(r.status, 407, "{}", r.head);
    let head = b.last();
    assert_eq!(field(&head, "Proxy-Authorization"), None, "{head}");
    assert_eq!(
        field(&head, "Authorization").as_deref(),
        Some("Bearer origin-token"),
        "{head}"
    );
    // challenges: passed on from the parent with the option only
    let r = get(&f, &url_a);
    assert_eq!(r.status, 407, "{}", r.head);
    let challenges: Vec<&str> = r
        .head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("proxy-authenticate:"))
        .collect();
    assert_eq!(
        challenges,
        [
            "Proxy-Authenticate: Basic realm=\"pass-a\"",
            "Proxy-Authenticate: Negotiate"
        ],
        "{}",
        r.head
    );
    let r = get(&f, &url_b);
    assert_eq!(r.status, 407, "{}", r.head);
    assert_eq!(r.header("proxy-authenticate"), None, "{}", r.head);
    // failover from the parent with the option: the next one sees no credentials
    let port_a = a.port;
    a.server.kill();
    let seen_by_b = b.count();
    let r = with_credentials(&url_a);
    assert_eq!(r.status, 407, "pass-a is down: keep-b answers: {}", r.head);
    assert_eq!(b.count(), seen_by_b + 1);
    let head = b.last();
    assert_eq!(field(&head, "Proxy-Authorization"), None, "{head}");
    assert!(head.starts_with(&format!("GET {url_a} ")), "{head}");
    // and to it: a failover to the parent with the option carries them
    let a2 = AuthParent::start_on("pass-a", port_a);
    b.server.kill();
    let r = with_credentials(&url_b);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "pass-a ok\n"),
        "{}",
        r.head
    );
    let head = a2.last();
    assert!(head.starts_with(&format!("GET {url_b} ")), "{head}");
    assert_eq!(
        field(&head, "Proxy-Authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz"),
        "{head}"
    );
}

/// A CONNECT asks a parent with `pass_credentials` for its tunnel with the
/// client's `Proxy-Authorization` (Squid does the same with `login=PASS`),
/// and its refusal reaches the client with its challenges; a parent
/// without the option gets neither. In accelerator mode `Authorization` is
/// end-to-end and reaches the parent whatever the option.
#[test]
fn connect_and_accel_with_and_without_pass_credentials() {
    let (a, b) = (AuthParent::start("tun-a"), AuthParent::start("tun-b"));
    let fa = Frontend::start("pass-connect-a", &auth_parents_toml(&[(&a, true)]));
    let fb = Frontend::start("pass-connect-b", &auth_parents_toml(&[(&b, false)]));
    let connect = "CONNECT secure.example:443 HTTP/1.1\r\nHost: secure.example:443\r\n";
    // with the option: the tunnel is asked for with the credentials
    let mut s = fa.connect();
    s.write_all(format!("{connect}Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n").as_bytes())
        .unwrap();
    let mut established = [0u8; 39];
    s.read_exact(&mut established).unwrap();
    assert_eq!(&established, b"HTTP/1.1 200 Connection established\r\n\r\n");
    s.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    let head = a.last();
    assert!(
        head.starts_with("CONNECT secure.example:443 HTTP/1.1"),
        "{head}"
    );
    assert_eq!(
        field(&head, "Proxy-Authorization").as_deref(),
        Some("Basic dXNlcjpwYXNz"),
        "{head}"
    );
    drop(s);
    // its refusal comes back with the challenges
    let r = exchange(&fa, format!("{connect}\r\n").as_bytes());
    assert_eq!(r.status, 407, "{}", r.head);
    assert_eq!(
        r.header("proxy-authenticate").as_deref(),
        Some("Basic realm=\"tun-a\""),
        "{}",
        r.head
    );
    // without the option: no credentials up, no challenges down
    let r = exchange(
        &fb,
        format!("{connect}Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 407, "{}", r.head);
    assert_eq!(r.header("proxy-authenticate"), None, "{}", r.head);
    assert_eq!(
        field(&b.last(), "Proxy-Authorization"),
        None,
        "{}",
        b.last()
    );
    // accelerator: the origin's Authorization is end-to-end, forwarded to any parent
    let accel = format!(
        "[frontend]\nmode = \"accel\"\ndefault_site = \"www.example\"\n{}",
        auth_parents_toml(&[(&b, false)])
    );
    let fc = Frontend::start("pass-accel", &accel);
    let r = exchange(
        &fc,
        b"GET /account HTTP/1.1\r\nHost: www.example\r\nAuthorization: Basic b3JpZ2luOnB3\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 407, "{}", r.head);
    let head = b.last();
    assert!(
        head.starts_with("GET http://www.example/account HTTP/1.1"),
        "{head}"
    );
    assert_eq!(
        field(&head, "Authorization").as_deref(),
        Some("Basic b3JpZ2luOnB3"),
        "{head}"
    );
}

/// Issue 16: a request that failed over from a dead parent is counted once,
/// under the parent that answered; the dead one's connect failures and
/// state are in the frontend's own metrics.
#[test]
fn metrics_count_a_failover_once_and_the_dead_parents_failures() {
    let live = Parent::start("live");
    let dead_port = free_port();
    let conf = format!(
        "hash = \"hrw\"\n[health]\nfail_limit = 2\nprobe_interval = 30\n\
         [[parent]]\nname = \"gone\"\nhost = \"127.0.0.1\"\nport = {dead_port}\n\n{}",
        parents_toml(&[&live])
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let f = Frontend::start("metrics-failover", &conf);
    let urls: Vec<String> = (0..20).map(|i| format!("http://h.example/{i}")).collect();
    let owners = route(&conf, &urls);
    let to_gone = owners.iter().filter(|o| *o == "gone").count();
    assert!(
        to_gone >= 2,
        "the test needs URLs of the dead parent: {owners:?}"
    );
    for u in &urls {
        assert_eq!(get(&f, u).status, 200, "{u}: {}", f.stderr());
    }
    // the layer counts a request just after its last byte: wait for it
    let text = common::metrics_when(
        || frontend_metrics(&f),
        "carpool_frontend_requests_total{component=\"frontend\",parent=\"live\",status=\"200\"}",
        urls.len() as f64,
    );
    let value = |s: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(s)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {s} in:\n{text}"))
    };
    let c = "component=\"frontend\"";
    assert_eq!(
        value(&format!(
            "carpool_frontend_requests_total{{{c},parent=\"live\",status=\"200\"}}"
        )),
        urls.len() as f64
    );
    assert!(!text.contains("parent=\"gone\",status="), "{text}");
    // two connect failures mark it dead (fail_limit = 2); its other URLs
    // skip it without trying
    assert_eq!(
        value(&format!(
            "carpool_frontend_parent_failures_total{{{c},parent=\"gone\",kind=\"connect\"}}"
        )),
        2.0
    );
    assert_eq!(
        value(&format!(
            "carpool_frontend_parent_up{{{c},parent=\"gone\"}}"
        )),
        0.0
    );
    assert_eq!(
        value(&format!(
            "carpool_frontend_parent_up{{{c},parent=\"live\"}}"
        )),
        1.0
    );
    // the live one has been alive since the start; the other died after it
    let since = |p: &str| {
        value(&format!(
            "carpool_frontend_parent_state_since_seconds{{{c},parent=\"{p}\"}}"
        ))
    };
    assert!(
        since("live") >= started - 1.0 && since("live") <= since("gone"),
        "{text}"
    );
    // two parents of equal weight in hrw: half the URLs each
    let share = |p: &str| {
        value(&format!(
            "carpool_frontend_parent_expected_share{{{c},parent=\"{p}\"}}"
        ))
    };
    assert!((share("gone") + share("live") - 1.0).abs() < 1e-6, "{text}");
    assert!((share("gone") - 0.5).abs() < 0.02, "{text}");
    assert_eq!(
        value(&format!(
            "carpool_frontend_parent_inflight{{{c},parent=\"live\"}}"
        )),
        0.0
    );
    // the scrape itself is not counted
    let again = frontend_metrics(&f);
    assert!(
        again.contains(&format!(
            "carpool_frontend_requests_total{{{c},parent=\"live\",status=\"200\"}} {}",
            urls.len()
        )),
        "{again}"
    );
}

/// Issue 16: a scrape of `/carpool-internal/metrics` is written to the
/// access log like any request (as Squid logs its cache manager's), but
/// `carpool up`'s own poll every 2 s (`?poll`) is not: it would bury the
/// clients' lines.
#[test]
fn a_scrape_is_logged_and_the_admins_poll_is_not() {
    let a = Parent::start("polled");
    let dir = temp_dir("poll-log");
    let log = dir.join("access.log");
    let f = Frontend::start(
        "poll-log",
        &config(
            &[&a],
            &format!("[frontend]\naccess_log = \"{}\"\n", log.display()),
        ),
    );
    for _ in 0..3 {
        let r = exchange(
            &f,
            b"GET /carpool-internal/metrics?poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(
            r.text().contains("carpool_frontend_parent_up"),
            "{}",
            r.text()
        );
    }
    frontend_metrics(&f);
    get(&f, "http://polled.example/after");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while !text.contains("/after") {
        assert!(Instant::now() < deadline, "not logged: {text}");
        std::thread::sleep(Duration::from_millis(50));
        text = std::fs::read_to_string(&log).unwrap_or_default();
    }
    // two lines, in either order (each worker writes its own lines; the
    // scrape and the GET may be served by different workers)
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let scrapes = lines
        .iter()
        .filter(|l| l.contains(" /carpool-internal/metrics "))
        .count();
    assert_eq!(scrapes, 1, "{text}");
    assert!(text.contains("http://polled.example/after"), "{text}");
}
