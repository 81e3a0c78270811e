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
