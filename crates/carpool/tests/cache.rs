//! `carpool cache` against a real origin on loopback: the real binary, real
//! sockets, a real disk tier in a temp directory.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::origin::{body_byte, Origin};
use common::{read_response, Cache};

fn expected(path: &str, v: u32, size: u64) -> Vec<u8> {
    (0..size).map(|i| body_byte(path, v, i)).collect()
}

#[test]
fn hit_after_miss_reaches_the_origin_once() {
    let o = Origin::start();
    let c = Cache::start("hit", &[]);
    let url = o.url("/a?size=5000&cc=max-age%3D60");
    let first = c.get(&url);
    assert_eq!(first.status, 200, "{}", first.head);
    assert_eq!(first.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(first.body, expected("/a", 1, 5000));
    let second = c.get(&url);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(second.body, first.body);
    assert!(second.header("age").is_some(), "{}", second.head);
    assert!(second.header("via").is_some_and(|v| v.contains("carpool")));
    assert_eq!(o.count("/a"), 1, "the hit must not reach the origin");
    let log = c.access_log();
    assert!(log.contains("TCP_MISS/200"), "{log}");
    assert!(log.contains("TCP_MEM_HIT/200"), "{log}");
    assert!(log.contains("HIER_DIRECT/127.0.0.1"), "{log}");
}

#[test]
fn origin_form_with_host_is_the_same_object() {
    let o = Origin::start();
    let c = Cache::start("accel", &[]);
    let r = c.get(&o.url("/acc?cc=max-age%3D60"));
    assert_eq!(r.status, 200);
    let raw = format!(
        "GET /acc?cc=max-age%3D60 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        o.port
    );
    let r2 = c.exchange(raw.as_bytes());
    assert_eq!(r2.header("x-cache").as_deref(), Some("HIT"), "{}", r2.head);
    assert_eq!(r2.body, r.body);
    assert_eq!(o.count("/acc"), 1);
}

#[test]
fn uncacheable_answers_always_go_to_the_origin() {
    let o = Origin::start();
    let c = Cache::start("nostore", &[]);
    for (path, cc) in [("/ns", "no-store"), ("/pv", "private"), ("/nc", "no-cache")] {
        let url = o.url(&format!("{path}?cc={cc}"));
        for _ in 0..3 {
            let r = c.get(&url);
            assert_eq!(r.status, 200);
        }
        assert_eq!(o.count(path), 3, "{cc} must not be served from the cache");
    }
    // a request with Authorization is not stored unless the answer says so
    let url = o.url("/auth?cc=max-age%3D60");
    for _ in 0..2 {
        c.request("GET", &url, &["Authorization: Basic eDp5"]);
    }
    assert_eq!(o.count("/auth"), 2);
}

/// A HEAD whose object cannot be stored is fetched with a GET (the fill asks
/// for the whole object) and relayed: its client gets the head only, and the
/// next request on the same connection its own answer (the GET's body was
/// sent after the HEAD's head before the request layer).
#[test]
fn head_answered_from_an_unstorable_get_sends_no_body() {
    let o = Origin::start();
    let c = Cache::start("head-pass", &[]);
    let s = c.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let nostore = o.url("/hp?size=300&cc=no-store");
    let fresh = o.url("/next?size=7&cc=max-age%3D60");
    w.write_all(
        format!(
            "HEAD {nostore} HTTP/1.1\r\nHost: x\r\n\r\nGET {fresh} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let head = read_response(&mut r, true).unwrap();
    assert_eq!(head.status, 200, "{}", head.head);
    assert_eq!(head.header("content-length").as_deref(), Some("300"));
    assert_eq!(head.header("x-cache").as_deref(), Some("MISS"));
    let next = read_response(&mut r, false).unwrap();
    assert_eq!(next.status, 200, "the second answer: {}", next.head);
    assert_eq!(next.body, expected("/next", 1, 7));
}

#[test]
fn stale_objects_are_revalidated_304_and_200() {
    let o = Origin::start();
    let c = Cache::start("reval", &[]);
    let url = o.url("/r?cc=max-age%3D0&etag=1");
    let first = c.get(&url);
    assert_eq!(first.text(), "/r v=1 vary=");
    // stale at once: revalidated with the stored ETag, 304 → served from the store
    let second = c.get(&url);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache").as_deref(), Some("REFRESH"));
    assert_eq!(second.text(), "/r v=1 vary=");
    let head = o.last_head("/r").unwrap();
    assert!(head.contains("If-None-Match: \"v1\""), "{head}");
    // the origin changed: 200 with the new body replaces the stored one
    o.bump();
    let third = c.get(&url);
    assert_eq!(third.text(), "/r v=2 vary=");
    assert_eq!(o.count("/r"), 3);
    let log = c.access_log();
    assert!(log.contains("TCP_REFRESH_UNMODIFIED/200"), "{log}");
    assert!(log.contains("TCP_REFRESH_MODIFIED/200"), "{log}");
}

#[test]
fn client_conditionals_head_and_ranges_come_from_the_store() {
    let o = Origin::start();
    let c = Cache::start("cond", &[]);
    let url = o.url("/c?size=1000&cc=max-age%3D60&etag=1&lm=1");
    let full = c.get(&url);
    assert_eq!(full.status, 200);
    let etag = full.header("etag").unwrap();
    let r = c.request("GET", &url, &[&format!("If-None-Match: {etag}")]);
    assert_eq!(r.status, 304, "{}", r.head);
    assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
    let r = c.request(
        "GET",
        &url,
        &["If-Modified-Since: Mon, 07 Nov 1994 08:49:37 GMT"],
    );
    assert_eq!(r.status, 304);
    let r = c.request("GET", &url, &["If-None-Match: \"other\""]);
    assert_eq!(r.status, 200);
    let h = c.request("HEAD", &url, &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length").as_deref(), Some("1000"));
    assert_eq!(h.header("x-cache").as_deref(), Some("HIT"));
    let r = c.request("GET", &url, &["Range: bytes=10-19"]);
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 10-19/1000")
    );
    assert_eq!(r.body, full.body[10..20]);
    let r = c.request("GET", &url, &["Range: bytes=-5"]);
    assert_eq!(r.body, full.body[995..]);
    let r = c.request("GET", &url, &["Range: bytes=0-1,100-101"]);
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.contains("Content-Range: bytes 0-1/1000"), "{text}");
    assert!(text.contains("Content-Range: bytes 100-101/1000"), "{text}");
    let r = c.request("GET", &url, &["Range: bytes=5000-"]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */1000"));
    // If-Range with another validator: the whole object
    let r = c.request("GET", &url, &["Range: bytes=0-9", "If-Range: \"old\""]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1000);
    assert_eq!(o.count("/c"), 1, "all of these are answered by the cache");
}

#[test]
fn vary_keeps_one_variant_per_request_field_value() {
    let o = Origin::start();
    let c = Cache::start("vary", &[]);
    let url = o.url("/v?cc=max-age%3D60&vary=Accept-Language");
    let en = c.request("GET", &url, &["Accept-Language: en"]);
    let fr = c.request("GET", &url, &["Accept-Language: fr"]);
    assert_eq!(en.text(), "/v v=1 vary=en");
    assert_eq!(fr.text(), "/v v=1 vary=fr");
    assert_eq!(o.count("/v"), 2);
    let en2 = c.request("GET", &url, &["Accept-Language: en"]);
    let fr2 = c.request("GET", &url, &["Accept-Language: fr"]);
    assert_eq!(en2.text(), "/v v=1 vary=en");
    assert_eq!(fr2.text(), "/v v=1 vary=fr");
    assert_eq!(en2.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(fr2.header("x-cache").as_deref(), Some("HIT"));
    let none = c.get(&url);
    assert_eq!(none.text(), "/v v=1 vary=");
    assert_eq!(o.count("/v"), 3);
}

#[test]
fn purge_removes_and_is_refused_to_others() {
    let o = Origin::start();
    let c = Cache::start("purge", &[]);
    let url = o.url("/p?cc=max-age%3D60");
    c.get(&url);
    assert_eq!(c.get(&url).header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(c.request("PURGE", &url, &[]).status, 200);
    assert_eq!(c.request("PURGE", &url, &[]).status, 404);
    assert_eq!(c.get(&url).header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(o.count("/p"), 2);
    // a cache whose purge_clients excludes loopback refuses it
    let dir = common::temp_dir("purge-conf");
    let conf = dir.join("carpool.toml");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!(
            "[cache]\npurge_clients = [\"10.0.0.0/8\"]\n\n[[parent]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        ),
    )
    .unwrap();
    let c2 = Cache::start("purge2", &["-c", conf.to_str().unwrap(), "--name", "c1"]);
    let r = c2.request("PURGE", &url, &[]);
    assert_eq!(r.status, 403, "{}", r.head);
    assert!(c2.access_log().contains("TCP_DENIED/403"));
}

#[test]
fn unsafe_methods_invalidate_and_pass_bodies() {
    let o = Origin::start();
    let c = Cache::start("unsafe", &[]);
    let url = o.url("/u?cc=max-age%3D60");
    c.get(&url);
    assert_eq!(c.get(&url).header("x-cache").as_deref(), Some("HIT"));
    let mut s = c.connect();
    write!(
        s,
        "POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    .unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(c.get(&url).header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(o.count("/u"), 3);
}

#[test]
fn collapsed_forwarding_makes_one_origin_request() {
    let o = Origin::start();
    let c = Cache::start("collapse", &[]);
    let url = o.url("/cf?size=200000&cc=max-age%3D60&delay=400&pause=300");
    let want = expected("/cf", 1, 200_000);
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let url = url.clone();
            let port = c.port;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                write!(
                    s,
                    "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                read_response(&mut BufReader::new(s), false).unwrap()
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(r.body == want, "a collapsed client got a wrong body");
    }
    assert_eq!(
        o.count("/cf"),
        1,
        "100 concurrent misses, one origin request"
    );
}

#[test]
fn first_bytes_arrive_before_the_origin_finishes() {
    let o = Origin::start();
    let c = Cache::start("stream", &[]);
    let url = o.url("/s?size=400000&cc=max-age%3D60&pause=1500");
    let mut s = c.connect();
    let t0 = Instant::now();
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 4096];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0);
    assert!(
        t0.elapsed() < Duration::from_millis(1200),
        "the head and first half must not wait for the whole body ({:?})",
        t0.elapsed()
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(1400));
}

#[test]
fn chunked_origin_objects_are_stored_and_served_with_length() {
    let o = Origin::start();
    let c = Cache::start("chunked", &[]);
    let url = o.url("/ch?size=70000&cc=max-age%3D60&chunked=1");
    let first = c.get(&url);
    assert_eq!(first.body, expected("/ch", 1, 70000));
    let second = c.get(&url);
    assert_eq!(second.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(second.header("content-length").as_deref(), Some("70000"));
    assert_eq!(second.body, first.body);
}

#[test]
fn objects_over_max_object_size_pass_through_uncached() {
    let o = Origin::start();
    let dir = common::temp_dir("maxobj-conf");
    let conf = dir.join("carpool.toml");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!(
            "[cache]\nmax_object_size = \"10K\"\n\n[[parent]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        ),
    )
    .unwrap();
    let c = Cache::start("maxobj", &["-c", conf.to_str().unwrap(), "--name", "c1"]);
    let url = o.url("/big?size=50000&cc=max-age%3D60");
    for _ in 0..2 {
        let r = c.get(&url);
        assert_eq!(r.body, expected("/big", 1, 50000));
    }
    assert_eq!(o.count("/big"), 2);
}

#[test]
fn restart_keeps_hits_on_disk() {
    let o = Origin::start();
    let mut c = Cache::start("restart", &["--mem", "0"]);
    let urls: Vec<String> = (0..20)
        .map(|i| o.url(&format!("/d{i}?size={}&cc=max-age%3D600", 1000 + i * 3000)))
        .collect();
    for u in &urls {
        assert_eq!(c.get(u).status, 200);
    }
    c.restart();
    for (i, u) in urls.iter().enumerate() {
        let r = c.get(u);
        assert_eq!(
            r.header("x-cache").as_deref(),
            Some("HIT"),
            "{u}: {}",
            r.head
        );
        assert_eq!(
            r.body,
            expected(&format!("/d{i}"), 1, 1000 + i as u64 * 3000)
        );
    }
    assert_eq!(o.hits.lock().unwrap().values().sum::<usize>(), 20);
    assert!(c.access_log().contains("TCP_HIT/200"));
}

#[test]
fn kill_9_during_writes_never_serves_a_torn_object() {
    let o = Origin::start();
    let mut c = Cache::start("kill9", &["--mem", "0"]);
    for round in 0..3u64 {
        let port = c.port;
        // even objects are cut mid-body by the kill (the origin pauses
        // between the halves); odd ones are complete before it
        let urls: Vec<(String, String, u64)> = (0..30u64)
            .map(|i| {
                let path = format!("/k{round}-{i}");
                let size = 20_000 + i * 7919;
                let pause = if i % 2 == 0 { "&pause=2000" } else { "" };
                let url = o.url(&format!("{path}?size={size}&cc=max-age%3D600{pause}"));
                (url, path, size)
            })
            .collect();
        let burst: Vec<_> = urls
            .iter()
            .map(|(u, _, _)| {
                let u = u.clone();
                std::thread::spawn(move || {
                    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                        let _ = write!(
                            s,
                            "GET {u} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        );
                        let _ = s.read_to_end(&mut Vec::new());
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + round * 50));
        c.kill9_and_restart();
        for b in burst {
            let _ = b.join();
        }
        // fetch everything again, concurrently (the cut objects take the
        // origin's pause once more)
        let checks: Vec<_> = urls
            .iter()
            .map(|(u, _, _)| {
                let raw = format!("GET {u} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    s.write_all(raw.as_bytes()).unwrap();
                    read_response(&mut BufReader::new(s), false).unwrap()
                })
            })
            .collect();
        for (i, ((u, path, size), t)) in urls.iter().zip(checks).enumerate() {
            let r = t.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.head);
            assert!(
                r.body == expected(path, 1, *size),
                "{u}: served bytes differ from the origin's"
            );
            if i % 2 == 0 {
                assert_eq!(o.count(path), 2, "{u}: a half-written object was served");
            } else {
                assert_eq!(o.count(path), 1, "{u}: a complete object was lost");
            }
        }
    }
}

#[test]
fn objects_larger_than_memory_stream_from_disk() {
    let o = Origin::start();
    let c = Cache::start("large", &["--mem", "1M"]);
    let url = o.url("/L?size=20000000&cc=max-age%3D600");
    let first = c.get(&url);
    assert_eq!(first.body.len(), 20_000_000);
    let second = c.get(&url);
    assert_eq!(second.header("x-cache").as_deref(), Some("HIT"));
    assert!(second.body == first.body);
    assert!(first.body == expected("/L", 1, 20_000_000));
    assert!(c.access_log().contains("TCP_HIT/200"));
}

#[test]
fn stale_if_error_serves_the_stored_object_when_the_origin_is_down() {
    let o = Origin::start();
    let c = Cache::start("sie", &[]);
    let url = o.url("/e?cc=max-age%3D1,%20stale-if-error%3D600");
    assert_eq!(c.get(&url).status, 200);
    o.kill();
    std::thread::sleep(Duration::from_millis(1100));
    let r = c.get(&url);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "/e v=1 vary=");
    assert!(c.access_log().contains("TCP_REFRESH_FAIL_OLD/200"));
    // without stale-if-error, a dead origin is a 502
    let r = c.get(&format!("http://127.0.0.1:{}/gone", o.port));
    assert_eq!(r.status, 502);
}

#[test]
fn clients_outside_allow_clients_are_refused() {
    let dir = common::temp_dir("acl-conf");
    let conf = dir.join("carpool.toml");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!(
            "[cache]\nallow_clients = [\"10.1.0.0/16\"]\n\n[[parent]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        ),
    )
    .unwrap();
    let c = Cache::start("acl", &["-c", conf.to_str().unwrap(), "--name", "c1"]);
    let r = c.get("http://127.0.0.1:1/x");
    assert_eq!(r.status, 403);
    assert!(r.header("x-carpool-error").is_some());
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let o = Origin::start();
    let c = Cache::start("swr", &[]);
    let url = o.url("/w?cc=max-age%3D1,%20stale-while-revalidate%3D600&etag=1");
    assert_eq!(c.get(&url).text(), "/w v=1 vary=");
    std::thread::sleep(Duration::from_millis(1100));
    o.bump();
    let stale = c.get(&url);
    assert_eq!(
        stale.text(),
        "/w v=1 vary=",
        "answered from the store, stale"
    );
    assert_eq!(stale.header("x-cache").as_deref(), Some("HIT"));
    // the background fetch brings the new version
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.get(&url);
        if r.text() == "/w v=2 vary=" {
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(o.count("/w"), 2);
    assert!(c.access_log().contains("TCP_STALE_HIT/200"));
}

#[test]
fn misses_go_through_the_upstream_proxy_when_configured() {
    let o = Origin::start();
    let upstream = Cache::start("upstream", &[]);
    let dir = common::temp_dir("upstream-conf");
    let conf = dir.join("carpool.toml");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!(
            "[cache]\nupstream_proxy = \"127.0.0.1:{}\"\n\n[[parent]]\nname = \"edge\"\nhost = \"127.0.0.1\"\nport = {port}\n",
            upstream.port
        ),
    )
    .unwrap();
    let edge = Cache::start("edge", &["-c", conf.to_str().unwrap(), "--name", "edge"]);
    let url = o.url("/up?cc=max-age%3D60");
    let r = edge.get(&url);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "/up v=1 vary=");
    let second = edge.get(&url);
    assert_eq!(
        second.header("x-cache").as_deref(),
        Some("HIT"),
        "{}\n{}\n{}",
        r.head,
        second.head,
        edge.access_log()
    );
    assert_eq!(o.count("/up"), 1);
    let edge_log = edge.access_log();
    assert!(edge_log.contains("FIRSTUP_PARENT/127.0.0.1"), "{edge_log}");
    let up_log = upstream.access_log();
    assert!(
        up_log.contains("TCP_MISS/200") && up_log.contains(&url),
        "{up_log}"
    );
    // the upstream saw our Via
    assert!(o.last_head("/up").unwrap().contains("edge (carpool)"));
}

#[test]
fn memory_only_cache_stores_small_objects_and_passes_big_ones() {
    let o = Origin::start();
    let c = Cache::start_with("memonly", false, &["--mem", "8M"]);
    let small = o.url("/small?size=2000&cc=max-age%3D60");
    c.get(&small);
    assert_eq!(c.get(&small).header("x-cache").as_deref(), Some("HIT"));
    // larger than the memory tier takes (4 MiB per object): passed through whole
    let big = o.url("/bigmem?size=6000000&cc=max-age%3D60");
    for _ in 0..2 {
        let r = c.get(&big);
        assert_eq!(r.status, 200);
        assert!(r.body == expected("/bigmem", 1, 6_000_000));
    }
    assert_eq!(o.count("/bigmem"), 2);
    assert_eq!(o.count("/small"), 1);
}

#[test]
fn a_late_joiner_streams_from_what_is_stored_so_far() {
    let o = Origin::start();
    let c = Cache::start("latejoin", &[]);
    // the origin sends half the body, then pauses 1.5 s before the rest
    let url = o.url("/lj?size=300000&cc=max-age%3D60&pause=1500");
    let mut first = c.connect();
    write!(
        first,
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = [0u8; 1024];
    assert!(first.read(&mut got).unwrap() > 0);
    // the first client has bytes: the fill is under way. A second client
    // for the same URL joins it and gets the first half at once.
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let mut late = c.connect();
    write!(
        late,
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(late.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body_start = vec![0u8; 100_000];
    reader.read_exact(&mut body_start).unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "the joiner must get what is stored before the origin resumes ({:?})",
        t0.elapsed()
    );
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let mut body = body_start;
    body.extend_from_slice(&rest);
    let want = expected("/lj", 1, 300_000);
    assert!(
        body == want,
        "the late joiner's body differs ({} bytes)\n{head}",
        body.len()
    );
    let mut _drain = Vec::new();
    first.read_to_end(&mut _drain).unwrap();
    assert_eq!(
        o.count("/lj"),
        1,
        "the joiner did not make its own origin request"
    );
}

/// SIGHUP to a standalone cache keeps it running, with its memory tier; it
/// used to kill it at once.
#[test]
fn sighup_to_a_standalone_cache_keeps_it_running_with_its_objects() {
    let o = Origin::start();
    let c = Cache::start("hup", &[]);
    let url = o.url("/hup?cc=max-age%3D60");
    assert_eq!(c.get(&url).status, 200);
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &c.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::thread::sleep(Duration::from_millis(500));
    let r = c.get(&url);
    assert_eq!(r.status, 200, "{}", c.stderr());
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(o.count("/hup"), 1);
    assert!(c.stderr().contains("SIGHUP"), "{}", c.stderr());
}

/// Behind a carpool frontend, a cache's client is the frontend, on the same
/// host in a one-host array; the frontend says when its own client was not
/// (`Carpool-Client: remote`), and then the cache does not connect to
/// loopback or link-local addresses, whether the URL names one or a host
/// name resolves to one. (Before, a remote client reached 127.0.0.1:22
/// through the array.)
#[test]
fn remote_clients_do_not_reach_local_addresses_through_the_cache() {
    let o = Origin::start();
    let c = Cache::start("local-dest", &[]);
    let remote = ["Carpool-Client: remote"];
    for url in [
        format!("http://localhost:{}/by-name", o.port),
        format!("http://127.0.0.1:{}/by-address", o.port),
    ] {
        let r = c.request("GET", &url, &remote);
        assert_eq!(r.status, 403, "{url}: {}", r.head);
    }
    assert_eq!(o.total.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(c.access_log().contains("TCP_DENIED/403"));
    // the cache's own local clients may
    let r = c.request("GET", &format!("http://localhost:{}/by-name", o.port), &[]);
    assert_eq!(r.status, 200, "{}", r.head);
}

/// How a cache is stopped before its disk is edited.
#[derive(Clone, Copy)]
enum Stop {
    /// SIGTERM: a clean close (checkpoint marked clean).
    Clean,
    /// SIGKILL: no close at all.
    Kill9,
}

/// Stops `c` (`how`), runs `edit` while it is down, and starts it again on
/// the same port, directory and arguments (those of [`Cache::start`] with
/// `extra`).
fn stop_edit_start(c: &mut Cache, how: Stop, extra: &[&str], edit: impl FnOnce(&Cache)) {
    let signal = match how {
        Stop::Clean => "-TERM",
        Stop::Kill9 => "-KILL",
    };
    let _ = std::process::Command::new("kill")
        .args([signal, &c.child.id().to_string()])
        .status();
    let _ = c.child.wait();
    edit(c);
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(c.dir.join("stderr.log"))
        .unwrap();
    c.child = std::process::Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["cache", "--listen", &format!("127.0.0.1:{}", c.port)])
        .arg("--access-log")
        .arg(c.dir.join("access.log"))
        .arg("--dir")
        .arg(&c.data)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", c.port)).is_err() {
        assert!(Instant::now() < deadline, "restart: {}", c.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The object files (no sidecars) under a cache's disk directory.
fn object_files(c: &Cache) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(c.data.join("objects")).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            if f.path().extension().is_none() {
                out.push(f.path());
            }
        }
    }
    out
}

/// Flips one bit of the byte at body offset `at` of the only object file
/// of `c` whose body starts with `body_start` (found by content, whatever
/// the header's length).
fn flip_body_byte(c: &Cache, body_start: &[u8], at: u64) {
    use std::os::unix::fs::FileExt;
    let path = object_files(c)
        .into_iter()
        .find(|p| {
            let b = std::fs::read(p).unwrap();
            b.windows(body_start.len()).any(|w| w == body_start)
        })
        .expect("the object's file");
    let bytes = std::fs::read(&path).unwrap();
    let start = bytes
        .windows(body_start.len())
        .position(|w| w == body_start)
        .unwrap() as u64;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, start + at).unwrap();
    b[0] ^= 0x08;
    f.write_all_at(&b, start + at).unwrap();
}

/// An origin, a cache (tagged `tag`) and one object of `size` bytes at
/// `path`, fresh for ten minutes, stored in it by a first GET; its URL and
/// body.
fn stored_object(tag: &str, path: &str, size: u64) -> (Origin, Cache, String, Vec<u8>) {
    let o = Origin::start();
    let c = Cache::start(tag, &[]);
    let url = o.url(&format!("{path}?size={size}&cc=max-age%3D600"));
    let want = expected(path, 1, size);
    assert!(c.get(&url).body == want);
    (o, c, url, want)
}

/// A 6 MB object (served with sendfile: larger than `mem_max_object`) with
/// one flipped byte on disk after a clean restart is not served: the
/// request is a miss, fetched again from the origin with the right body,
/// and the next one a hit of the new copy. The old code served the corrupt
/// body as a HIT.
#[test]
fn a_corrupt_large_object_is_refetched_after_a_restart() {
    let (o, mut c, url, want) = stored_object("corrupt-clean", "/c6", 6_000_000);
    stop_edit_start(&mut c, Stop::Clean, &[], |c| {
        flip_body_byte(c, &want[..64], 3_500_000)
    });
    let r = c.get(&url);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.body == want, "a corrupt body was served: {}", r.head);
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"), "{}", r.head);
    assert_eq!(o.count("/c6"), 2);
    let err = c.stderr();
    assert!(
        err.contains("checksum") && err.contains("/c6?size"),
        "a warning names the key and the reason: {err}"
    );
    let again = c.get(&url);
    assert_eq!(again.header("x-cache").as_deref(), Some("HIT"));
    assert!(again.body == want);
    assert_eq!(o.count("/c6"), 2);
}

/// The same after `kill -9`: the object was synced before the stop (an
/// earlier restart covered it with a checkpoint), so the start-up check of
/// recent objects does not look at its body; the first read does.
#[test]
fn a_corrupt_large_object_is_refetched_after_kill_9() {
    let (o, mut c, url, want) = stored_object("corrupt-kill9", "/k6", 6_000_000);
    // This start verifies the object (published after the last checkpoint)
    // and records a checkpoint that covers it.
    stop_edit_start(&mut c, Stop::Kill9, &[], |_| {});
    assert_eq!(c.get(&url).header("x-cache").as_deref(), Some("HIT"));
    stop_edit_start(&mut c, Stop::Kill9, &[], |c| {
        flip_body_byte(c, &want[..64], 5_999_000)
    });
    let r = c.get(&url);
    assert!(r.body == want, "a corrupt body was served: {}", r.head);
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"), "{}", r.head);
    assert_eq!(o.count("/k6"), 2);
}

/// A `Range` is checked over the blocks it covers only: a range away from
/// the damage is still a hit, one over it is not served from the store.
#[test]
fn a_range_over_a_corrupt_block_is_not_served_from_the_store() {
    let (o, mut c, url, want) = stored_object("corrupt-range", "/r6", 6_000_000);
    stop_edit_start(&mut c, Stop::Clean, &[], |c| {
        flip_body_byte(c, &want[..64], 4_000_000)
    });
    let r = c.request("GET", &url, &["Range: bytes=0-99999"]);
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"), "{}", r.head);
    assert!(r.body == want[..100_000]);
    let r = c.request("GET", &url, &["Range: bytes=3999990-4000009"]);
    assert_ne!(r.header("x-cache").as_deref(), Some("HIT"), "{}", r.head);
    match r.status {
        206 => assert!(r.body == want[3_999_990..4_000_010]),
        200 => assert!(r.body == want),
        s => panic!("status {s}: {}", r.head),
    }
    assert_eq!(o.count("/r6"), 2);
    let r = c.get(&url);
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"), "{}", r.head);
    assert!(r.body == want);
}

/// Damage found after the response head went out (far into a large body,
/// past what is checked before the head) aborts the connection: the client
/// gets fewer bytes than `Content-Length` says, all of them right, never a
/// whole corrupt 200. The next request fetches the object again.
#[test]
fn damage_found_while_sending_aborts_the_response() {
    let (o, mut c, url, want) = stored_object("corrupt-late", "/l24", 24_000_000);
    let size = want.len() as u64;
    stop_edit_start(&mut c, Stop::Clean, &[], |c| {
        flip_body_byte(c, &want[..64], 20_000_000)
    });
    let mut s = c.connect();
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let mut body = Vec::new();
    let _ = reader.read_to_end(&mut body);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("X-Cache: HIT"), "{head}");
    assert!(head.contains(&format!("Content-Length: {size}")), "{head}");
    assert!(
        (body.len() as u64) < size,
        "the whole corrupt body was sent: {head}"
    );
    assert!(body == want[..body.len()], "corrupt bytes were sent");
    let r = c.get(&url);
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"), "{}", r.head);
    assert!(r.body == want);
    assert_eq!(o.count("/l24"), 2);
}

/// A cache whose directory cannot be made stops with one line that says
/// what failed, where, and why, the system's reason once (it was printed
/// twice: in the store error's message and again as its source).
#[test]
fn a_store_that_cannot_open_says_why_once() {
    let dir = common::temp_dir("store-error");
    let file = dir.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["cache", "--listen", "127.0.0.1:0", "--access-log", "none"])
        .arg("--dir")
        .arg(file.join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("carpool: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains(&file.display().to_string()), "{line}");
    assert_eq!(line.matches("Not a directory").count(), 1, "{line}");
}

/// A number field of `/proc/PID/status` (`Threads:`, `VmRSS:` in KiB).
fn status_number(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a `/proc/PID/status` field every few ms until [`Peak::most`].
struct Peak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl Peak {
    fn watch(pid: u32, field: &'static str) -> Peak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(status_number(pid, field));
                std::thread::sleep(Duration::from_millis(5));
            }
            most
        });
        Peak { stop, sampler }
    }

    /// The highest value seen.
    fn most(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().unwrap()
    }
}

/// A burst of 200 concurrent misses, each stored to disk in two pieces,
/// adds no thread to the cache: its disk work runs on a fixed number of
/// disk threads (issue 14: every piece went to tokio's blocking pool, which
/// grew to hundreds of threads). Every client still gets its whole body.
#[test]
fn a_burst_of_misses_adds_no_threads() {
    let o = Origin::start();
    let c = Cache::start("burst-threads", &["--workers", "1"]);
    let pid = c.child.id();
    // warm: one miss stored, so that whatever a first fill starts is there
    assert_eq!(
        c.get(&o.url("/warm?size=70000&cc=max-age%3D600")).status,
        200
    );
    std::thread::sleep(Duration::from_millis(300));
    let baseline = status_number(pid, "Threads:");
    let peak = Peak::watch(pid, "Threads:");
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let url = o.url(&format!("/b{i}?size=70000&cc=max-age%3D600&pause=300"));
            let port = c.port;
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                write!(
                    s,
                    "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let r = read_response(&mut BufReader::new(s), false).unwrap();
                (i, r.status, r.body)
            })
        })
        .collect();
    for t in clients {
        let (i, status, body) = t.join().unwrap();
        assert_eq!(status, 200);
        assert!(
            body == expected(&format!("/b{i}"), 1, 70000),
            "body of /b{i}"
        );
    }
    let most = peak.most();
    assert!(
        most <= baseline + 1,
        "threads went from {baseline} to {most} during the burst"
    );
}

/// Most VmRSS growth under sustained misses beyond what the disk index
/// needs per object: the disk threads, their queue (32 pieces of at most
/// 64 KiB per thread), the connections in flight.
const MISS_LOAD_FIXED_KIB: u64 = 20 * 1024;
/// Most VmRSS growth per object stored on disk: its index entry and its
/// place in its log segment's key list (110-145 bytes measured with
/// `crates/cache-store/examples/small_objects.rs`, README "Disk tier").
const MISS_LOAD_BYTES_PER_OBJECT: u64 = 256;

/// Sustained misses of small objects (32 clients, 6 s, every request a new
/// object stored on disk) keep the cache's memory within the memory tier,
/// a fixed overhead and the index's share per object (issue 14: every piece
/// of every fill went to tokio's blocking pool, whose hundreds of threads
/// and their allocator heaps took ten times the memory tier).
#[test]
fn sustained_misses_keep_memory_bounded() {
    let o = Origin::start();
    let c = Cache::start(
        "miss-rss",
        &["--workers", "1", "--mem", "1M", "--disk", "256M"],
    );
    let pid = c.child.id();
    assert_eq!(c.get(&o.url("/warm?size=200&cc=max-age%3D600")).status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let before = status_number(pid, "VmRSS:");
    let until = Instant::now() + Duration::from_secs(6);
    let peak = Peak::watch(pid, "VmRSS:");
    let clients: Vec<_> = (0..32)
        .map(|t| {
            let base = o.url("");
            let port = c.port;
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < until {
                    let url = format!("{base}/m{t}-{n}?size=200&cc=max-age%3D600");
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                    write!(
                        s,
                        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap();
                    let r = read_response(&mut BufReader::new(s), false).unwrap();
                    assert_eq!(r.status, 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let requests: u64 = clients.into_iter().map(|t| t.join().unwrap()).sum();
    let most = peak.most();
    let allowed = 1024 + MISS_LOAD_FIXED_KIB + MISS_LOAD_BYTES_PER_OBJECT * requests / 1024;
    eprintln!(
        "{requests} misses: VmRSS {before} KiB before, at most {most} KiB during (allowed growth {allowed} KiB)"
    );
    assert!(requests > 500, "too few requests to tell: {requests}");
    assert!(
        most.saturating_sub(before) <= allowed,
        "VmRSS grew by {} KiB over {requests} misses (allowed {allowed} KiB)",
        most.saturating_sub(before)
    );
}

/// Squid's `cache_peer ... originserver`: misses of a site go to its
/// configured server (whatever the host name resolves to, here nothing),
/// with the site's `Host`; other sites go to the default server.
#[test]
fn misses_go_to_the_configured_origin_servers() {
    let (a, b) = (Origin::start(), Origin::start());
    let dir = common::temp_dir("origin-servers-conf");
    let conf = dir.join("carpool.toml");
    std::fs::write(
        &conf,
        format!(
            r#"
[[parent]]
name = "c1"
host = "127.0.0.1"
port = 1

[cache]
origin_server = "127.0.0.1:{a}"
origin_servers = {{ "Img.Site.Invalid" = "127.0.0.1:{b}" }}
"#,
            a = a.port,
            b = b.port
        ),
    )
    .unwrap();
    let c = Cache::start(
        "origin-servers",
        &["-c", &conf.display().to_string(), "--name", "c1"],
    );
    // `.invalid` never resolves (RFC 6761): only the configuration can
    // send these anywhere
    let www = "http://www.site.invalid/p?size=300&cc=max-age%3D600";
    let img = "http://img.site.invalid/i?size=500&cc=max-age%3D600";
    for _ in 0..2 {
        let r = c.get(www);
        assert_eq!((r.status, r.body.len()), (200, 300), "{}", r.head);
        let r = c.get(img);
        assert_eq!((r.status, r.body.len()), (200, 500), "{}", r.head);
    }
    // each went to its own server, once (the second time was a hit), with
    // the site's Host and in origin form
    assert_eq!(
        (a.count("/p"), a.count("/i"), b.count("/i"), b.count("/p")),
        (1, 0, 1, 0)
    );
    let head = a.last_head("/p").unwrap();
    assert!(head.starts_with("GET /p?"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("host: www.site.invalid\r\n"),
        "{head}"
    );
    let head = b.last_head("/i").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("host: img.site.invalid\r\n"),
        "{head}"
    );
    let log = c.access_log();
    assert!(log.contains("FIRSTUP_PARENT/127.0.0.1"), "{log}");
}
