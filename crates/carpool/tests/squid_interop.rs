//! Interop with a real Squid 5.7: the wiki page's topology with carpool as the
//! CARP frontend and Squid caches as its parents.

mod common;

use std::sync::atomic::Ordering;

use common::*;

#[test]
fn carpool_frontend_over_squid_caches() {
    if let Err(why) = squid_binary() {
        eprintln!("SKIP: carpool_frontend_over_squid_caches: {why}");
        return;
    }
    let origin = Parent::start("origin");
    let cache = "cache_mem 32 MB\nmaximum_object_size_in_memory 1 MB\nhttp_access allow all\n";
    let (sq1, sq2) = (Squid::start("sq1", cache), Squid::start("sq2", cache));
    let conf = format!(
        "hash = \"hrw\"\n[[parent]]\nname = \"sq1\"\nhost = \"127.0.0.1\"\nport = {}\n[[parent]]\nname = \"sq2\"\nhost = \"127.0.0.1\"\nport = {}\n",
        sq1.port, sq2.port
    );
    let f = Frontend::start("squid-interop", &conf);
    let urls: Vec<String> = (0..40)
        .map(|i| format!("http://127.0.0.1:{}/obj/{i}", origin.port))
        .collect();
    let owners = route(&conf, &urls);
    for round in 0..2 {
        for (url, owner) in urls.iter().zip(&owners) {
            let r = get(&f, url);
            assert_eq!(
                r.status,
                200,
                "{url}: {}\n{}\n{}",
                r.head,
                sq1.diagnostics(),
                f.stderr()
            );
            assert!(r.text().starts_with("origin GET /obj/"), "{}", r.text());
            let x_cache = r.header("x-cache").unwrap_or_default();
            let want = if round == 0 { "MISS" } else { "HIT" };
            assert_eq!(
                x_cache,
                format!("{want} from {owner}.test"),
                "{url} round {round}: {}\n{}",
                r.head,
                sq1.diagnostics()
            );
        }
    }
    // every URL was fetched from the origin once: each lives in one cache
    assert_eq!(origin.requests.load(Ordering::SeqCst), urls.len());
}

/// Both kinds of frontend in front of carpool caches: a carpool frontend in
/// `squid` hash mode and a Squid 5.7 CARP frontend route every URL to the
/// same cache, so what one filled the other finds as a hit.
#[test]
fn carpool_and_squid_frontends_over_carpool_caches() {
    if let Err(why) = squid_binary() {
        eprintln!("SKIP: carpool_and_squid_frontends_over_carpool_caches: {why}");
        return;
    }
    let o = origin::Origin::start();
    let (c1, c2) = (
        Cache::start("interop-c1", &["--workers", "1"]),
        Cache::start("interop-c2", &["--workers", "1"]),
    );
    let conf = format!(
        "hash = \"squid\"\n[[parent]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = {}\n[[parent]]\nname = \"c2\"\nhost = \"127.0.0.1\"\nport = {}\n",
        c1.port, c2.port
    );
    let f = Frontend::start("interop-fe", &conf);
    let peers = format!(
        "cache_peer 127.0.0.1 parent {} 0 carp name=c1 no-query no-digest no-netdb-exchange connect-fail-limit=1000000\n\
         cache_peer 127.0.0.1 parent {} 0 carp name=c2 no-query no-digest no-netdb-exchange connect-fail-limit=1000000\n\
         never_direct allow all\ncache deny all\nhttp_access allow all\n",
        c1.port, c2.port
    );
    let sq = Squid::start("sqfe", &peers);
    let urls: Vec<String> = (0..30)
        .map(|i| o.url(&format!("/i{i}?cc=max-age%3D600")))
        .collect();
    let owners = route(&conf, &urls);
    // Squid's parents start dead until probed: wait for a first success
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", sq.port)).unwrap();
            std::io::Write::write_all(
                &mut s,
                format!(
                    "GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    o.url("/probe?cc=no-store")
                )
                .as_bytes(),
            )
            .unwrap();
            read_response(&mut std::io::BufReader::new(s), false)
        };
        if r.is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "squid frontend never reached a cache: {}",
            sq.diagnostics()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // through carpool: misses, each filling the cache `carpool route` names
    for url in &urls {
        let r = get(&f, url);
        assert_eq!(r.status, 200, "{url}: {}", r.head);
        assert_eq!(
            r.header("x-cache").as_deref(),
            Some("MISS"),
            "{url}: {}",
            r.head
        );
    }
    // through Squid: every one a hit on the same cache
    for url in &urls {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", sq.port)).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut std::io::BufReader::new(s), false).unwrap();
        assert_eq!(r.status, 200, "{url}: {}\n{}", r.head, sq.diagnostics());
        assert!(
            r.head.contains("X-Cache: HIT\r\n"),
            "{url}: Squid's CARP choice missed the cache carpool filled: {}",
            r.head
        );
    }
    let (log1, log2) = (c1.access_log(), c2.access_log());
    for (url, owner) in urls.iter().zip(&owners) {
        let log = if owner == "c1" { &log1 } else { &log2 };
        let hits = log
            .lines()
            .filter(|l| l.contains(url.as_str()) && l.contains("HIT/200"))
            .count();
        assert_eq!(hits, 1, "{url} should hit on {owner}");
    }
    let fetched: usize = (0..urls.len()).map(|i| o.count(&format!("/i{i}"))).sum();
    assert_eq!(fetched, urls.len(), "each URL came from the origin once");
}

/// Sends `raw` to a proxy on `port` and reads the response.
fn send_raw(port: u16, raw: &[u8]) -> Response {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    std::io::Write::write_all(&mut s, raw).unwrap();
    read_response(&mut std::io::BufReader::new(s), raw.starts_with(b"HEAD ")).expect("response")
}

/// The lines of `log` about this test's requests (`/clf/` in their URL),
/// once there are `n` of them (Squid and carpool both write a little
/// later than they answer).
fn clf_lines(n: usize, read: impl Fn() -> String) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines: Vec<String> = read()
            .lines()
            .filter(|l| l.contains("/clf/"))
            .map(str::to_string)
            .collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A `common`/`combined` line cut into the fields that must agree and the
/// two that may not (the time, within a few seconds, and the bytes, which
/// depend on each proxy's own response head): (client ident user, time,
/// "request line", status, bytes, the rest: referer, agent, code:hierarchy).
fn clf_fields(line: &str) -> (String, String, String, String, String, String) {
    let (who, rest) = line.split_once(" [").expect("time");
    let (time, rest) = rest.split_once("] \"").expect("request");
    let (request, rest) = rest.split_once("\" ").expect("status");
    let mut words = rest.splitn(3, ' ');
    let (status, bytes, rest) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    (
        who.into(),
        time.into(),
        request.into(),
        status.into(),
        bytes.into(),
        rest.into(),
    )
}

/// Seconds since the epoch of a `%tl` time (`03/Dec/2026:20:17:01 +0000`).
fn clf_seconds(t: &str) -> i64 {
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (date, zone) = t.split_once(' ').expect("zone");
    let p: Vec<&str> = date.split(['/', ':']).collect();
    assert_eq!(p.len(), 6, "{t}");
    let num = |s: &str| s.parse::<i64>().unwrap_or_else(|_| panic!("{t}"));
    let (d, y) = (num(p[0]), num(p[2]));
    let m = months.iter().position(|x| *x == p[1]).expect("month") as i64 + 1;
    // days from civil (Howard Hinnant)
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let off = num(&zone[1..3]) * 3600 + num(&zone[3..5]) * 60;
    days * 86_400 + num(p[3]) * 3600 + num(p[4]) * 60 + num(p[5]) - sign * off
}

/// Squid's built-in `common` and `combined` logs, field by field: the same
/// requests through a Squid 5.7 and through carpool frontends, both over
/// the same parent, give the same lines but for the time (within seconds)
/// and the byte counts (each proxy's own response head).
#[test]
fn common_and_combined_logs_match_squids() {
    if let Err(why) = squid_binary() {
        eprintln!("SKIP: common_and_combined_logs_match_squids: {why}");
        return;
    }
    let parent = Parent::start("p");
    let p = parent.port;
    let sq = Squid::start(
        "clf",
        &format!(
            "access_log stdio:{{work}}/common.log common\naccess_log stdio:{{work}}/combined.log combined\n\
             cache_peer 127.0.0.1 parent {p} 0 carp name=p no-query no-digest no-netdb-exchange connect-fail-limit=1000000\n\
             never_direct allow all\ncache deny all\n\
             acl blocked dstdomain blocked.example\nhttp_access deny blocked\nhttp_access allow all\n"
        ),
    );
    let frontend = |format: &str| {
        let tag = format!("clf-{format}");
        let log = temp_dir(&tag).join("access.log");
        let conf = format!(
            "[[parent]]\nname = \"p\"\nhost = \"127.0.0.1\"\nport = {p}\n\
             [[acl]]\nname = \"blocked\"\ntype = \"dstdomain\"\nvalues = [\"blocked.example\"]\n\
             [[http_access]]\ndeny = [\"blocked\"]\n[[http_access]]\nallow = [\"all\"]\n\
             [frontend]\naccess_log = \"{}\"\naccess_log_format = \"{format}\"\n",
            log.display()
        );
        (Frontend::start(&tag, &conf), log)
    };
    let (common, combined) = (frontend("common"), frontend("combined"));
    // Squid's parents start dead until probed: wait for a first success
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let probe =
        format!("GET http://127.0.0.1:{p}/probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    while send_raw(sq.port, probe.as_bytes()).status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "squid never reached the parent: {}",
            sq.diagnostics()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let requests = [
        format!("GET http://127.0.0.1:{p}/clf/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        format!(
            "GET http://127.0.0.1:{p}/clf/2 HTTP/1.0\r\nReferer: http://ref.example/x?y=\"z\" w\r\n\
             User-Agent: Mozilla/5.0 (X11; \"quoted\") \\back\r\n\r\n"
        ),
        format!(
            "GET http://127.0.0.1:{p}/clf/3 HTTP/1.1\r\nHost: x\r\nReferer:\r\nUser-Agent: first\r\n\
             User-Agent: second\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET http://127.0.0.1:{p}/clf/4%20x HTTP/1.1\r\nHost: x\r\nreferer: lower\tTab\r\n\
             USER-AGENT: curl/7.88.1\r\nConnection: close\r\n\r\n"
        ),
        format!("HEAD http://127.0.0.1:{p}/clf/5 HTTP/1.1\r\nHost: x\r\nUser-Agent: h\r\nConnection: close\r\n\r\n"),
        "GET http://blocked.example/clf/6 HTTP/1.1\r\nHost: blocked.example\r\nReferer: http://r/\r\nConnection: close\r\n\r\n".to_string(),
        format!(
            "POST http://127.0.0.1:{p}/clf/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
             User-Agent: poster\r\nConnection: close\r\n\r\nhello"
        ),
    ];
    let want_status = [200, 200, 200, 200, 200, 403, 200];
    for (raw, want) in requests.iter().zip(want_status) {
        for (who, port) in [
            ("squid", sq.port),
            ("common", common.0.port),
            ("combined", combined.0.port),
        ] {
            let r = send_raw(port, raw.as_bytes());
            assert_eq!(r.status, want, "{who}: {raw:?}: {}", r.head);
        }
    }
    let n = requests.len();
    for (format, (fe, log)) in [("common", &common), ("combined", &combined)] {
        let theirs = clf_lines(n, || sq.file(&format!("{format}.log")));
        let ours = clf_lines(n, || std::fs::read_to_string(log).unwrap_or_default());
        assert_eq!(
            theirs.len(),
            n,
            "squid's {format} log:\n{}\n{}",
            theirs.join("\n"),
            sq.diagnostics()
        );
        assert_eq!(
            ours.len(),
            n,
            "carpool's {format} log:\n{}\n{}",
            ours.join("\n"),
            fe.stderr()
        );
        for (t, o) in theirs.iter().zip(&ours) {
            let (tf, of) = (clf_fields(t), clf_fields(o));
            let context = format!("{format}:\n squid:   {t}\n carpool: {o}");
            assert_eq!(tf.0, of.0, "client, ident, user: {context}");
            assert_eq!(tf.1.len(), of.1.len(), "time: {context}");
            assert_eq!(tf.1[20..], of.1[20..], "zone: {context}");
            assert!(
                (clf_seconds(&tf.1) - clf_seconds(&of.1)).abs() <= 5,
                "time: {context}"
            );
            assert_eq!(tf.2, of.2, "request line: {context}");
            assert_eq!(tf.3, of.3, "status: {context}");
            assert!(
                tf.4.parse::<u64>().is_ok() && of.4.parse::<u64>().is_ok(),
                "bytes: {context}"
            );
            assert_eq!(tf.5, of.5, "the rest: {context}");
        }
        eprintln!(
            "{format}, squid then carpool:\n{}\n{}",
            theirs.join("\n"),
            ours.join("\n")
        );
    }
}
