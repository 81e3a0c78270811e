//! RFC 9111 conformance of `carpool cache` against an origin that sends
//! exactly the fields in question (`common::origin`: `h=` adds a header
//! line as it is): the Age a response arrives with, directive names in any
//! case, HTTP dates, interim responses, targeted cache control (RFC 9213),
//! stale serving by configuration (RFC 5861), and `If-Modified-Since`
//! against a response without `Last-Modified`. Each failed on the cache as
//! it was (issue 13). Squid's `refresh_pattern` for the heuristic lifetime
//! (issue 15).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

use common::origin::Origin;
use common::{http_date, Cache};

/// `text` as a query value.
fn q(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A cache whose config holds `cache_keys` in its `[cache]` table (and
/// `frontend_keys` in `[frontend]`).
fn configured(tag: &str, cache_keys: &str, frontend_keys: &str) -> Cache {
    let dir = common::temp_dir(&format!("{tag}-conf"));
    let conf = dir.join("carpool.toml");
    let port = common::free_port();
    std::fs::write(
        &conf,
        format!(
            "[frontend]\n{frontend_keys}\n[cache]\n{cache_keys}\n\n[[parent]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        ),
    )
    .unwrap();
    Cache::start(tag, &["-c", conf.to_str().unwrap(), "--name", "c1"])
}

fn x_cache(r: &common::Response) -> String {
    r.header("x-cache").unwrap_or_default()
}

/// RFC 9111 §4.2.3: a response that arrives older than its max-age (or
/// past its Expires by the Age it carries) is stale at once; one that
/// arrives with `Age: 30` is later served with an Age of at least 30.
#[test]
fn the_age_a_response_arrives_with_counts() {
    let o = Origin::start();
    let c = Cache::start("rfc-age", &[]);
    let old = o.url(&format!("/old?cc=max-age%3D3600&h={}", q("Age: 7200")));
    assert_eq!(c.get(&old).status, 200);
    let again = c.get(&old);
    assert_ne!(x_cache(&again), "HIT", "{}", again.head);
    assert_eq!(
        o.count("/old"),
        2,
        "an already stale response was served as fresh"
    );

    let expires = http_date(SystemTime::now() + Duration::from_secs(3600));
    let url = o.url(&format!(
        "/exp?h={}&h={}",
        q(&format!("Expires: {expires}")),
        q("Age: 7200")
    ));
    c.get(&url);
    c.get(&url);
    assert_eq!(o.count("/exp"), 2, "Expires without the received Age");

    let url = o.url(&format!("/aged?cc=max-age%3D600&h={}", q("Age: 30")));
    c.get(&url);
    let hit = c.get(&url);
    assert_eq!(x_cache(&hit), "HIT", "{}", hit.head);
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((30..40).contains(&age), "Age {age}: {}", hit.head);
    assert_eq!(o.count("/aged"), 1);
}

/// RFC 9111 §5.2: directive names are case-insensitive.
#[test]
fn directive_names_are_matched_in_any_case() {
    let o = Origin::start();
    let c = Cache::start("rfc-case", &[]);
    let far = http_date(SystemTime::now() + Duration::from_secs(3600));
    let url = o.url(&format!(
        "/nc?cc={}&h={}",
        q("No-CaChE, max-age=600"),
        q(&format!("Expires: {far}"))
    ));
    c.get(&url);
    c.get(&url);
    assert_eq!(o.count("/nc"), 2, "No-CaChE was not obeyed");
    let url = o.url(&format!("/ma?cc={}", q("MaX-AgE=600")));
    c.get(&url);
    let r = c.get(&url);
    assert_eq!(
        x_cache(&r),
        "HIT",
        "MaX-AgE did not give freshness: {}",
        r.head
    );
    assert_eq!(o.count("/ma"), 1);
}

/// RFC 9110 §5.6.7: an `Expires` off the date grammar is invalid, hence in
/// the past; the obsolete RFC 850 and asctime forms are read.
#[test]
fn http_dates_as_the_grammar_has_them() {
    let o = Origin::start();
    let c = Cache::start("rfc-dates", &[]);
    let cases = [
        ("/double", "Thu, 18  Aug  2050 02:01:18 GMT", 2),
        ("/rfc850", "Thursday, 18-Aug-50 02:01:18 GMT", 1),
        ("/asctime", "Thu Aug 18 02:01:18 2050", 1),
        ("/fixdate", "Thu, 18 Aug 2050 02:01:18 GMT", 1),
    ];
    for (path, expires, origin_requests) in cases {
        let url = o.url(&format!("{path}?h={}", q(&format!("Expires: {expires}"))));
        c.get(&url);
        c.get(&url);
        assert_eq!(o.count(path), origin_requests, "Expires: {expires}");
    }
}

/// RFC 9110 §15.2: 102 and 103 from the origin reach the client before the
/// final response, and are never stored: the hit that follows has none.
#[test]
fn interim_responses_reach_the_client_and_are_not_stored() {
    let o = Origin::start();
    let c = Cache::start("rfc-1xx", &[]);
    let url = o.url("/early?cc=max-age%3D600&interim=102,103");
    let raw = |c: &Cache| {
        let mut s = c.connect();
        write!(
            s,
            "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = Vec::new();
        s.read_to_end(&mut text).unwrap();
        String::from_utf8_lossy(&text).into_owned()
    };
    let first = raw(&c);
    let p102 = first.find("HTTP/1.1 102 ");
    let p103 = first.find("HTTP/1.1 103 ");
    let p200 = first.find("HTTP/1.1 200 ");
    assert!(
        p102.is_some() && p102 < p103 && p103 < p200,
        "interim responses first: {first}"
    );
    assert!(first.contains("Link: </x.css>; rel=preload"), "{first}");
    let second = raw(&c);
    assert!(second.starts_with("HTTP/1.1 200 "), "{second}");
    assert!(second.contains("X-Cache: HIT"), "{second}");
    assert!(
        !second.contains("HTTP/1.1 10"),
        "an interim response was stored: {second}"
    );
    assert_eq!(o.count("/early"), 1);
}

/// RFC 9213: an accelerator's caches obey `CDN-Cache-Control` (and
/// `Carpool-Cache-Control`, first) over `Cache-Control`, including
/// `no-store` and `private` in it, and do not pass on the field they used.
#[test]
fn targeted_cache_control_in_an_accelerator() {
    let o = Origin::start();
    let c = configured("rfc-targeted", "", "mode = \"accel\"");
    let url = o.url(&format!(
        "/t?cc={}&h={}",
        q("no-store"),
        q("CDN-Cache-Control: max-age=600")
    ));
    let first = c.get(&url);
    assert!(!first.head.contains("CDN-Cache-Control"), "{}", first.head);
    let hit = c.get(&url);
    assert_eq!(x_cache(&hit), "HIT", "{}", hit.head);
    assert!(!hit.head.contains("CDN-Cache-Control"), "{}", hit.head);
    assert!(hit.head.contains("Cache-Control: no-store"), "{}", hit.head);
    assert_eq!(o.count("/t"), 1);
    for (path, targeted) in [("/ns", "no-store"), ("/pr", "private"), ("/nc", "no-cache")] {
        let url = o.url(&format!(
            "{path}?cc={}&h={}",
            q("max-age=600"),
            q(&format!("CDN-Cache-Control: {targeted}"))
        ));
        c.get(&url);
        c.get(&url);
        assert_eq!(o.count(path), 2, "CDN-Cache-Control: {targeted}");
    }
    // the carpool field first
    let url = o.url(&format!(
        "/first?h={}&h={}",
        q("CDN-Cache-Control: max-age=600"),
        q("Carpool-Cache-Control: no-store")
    ));
    c.get(&url);
    c.get(&url);
    assert_eq!(o.count("/first"), 2);

    // a forward proxy's cache ignores it by default
    let fwd = Cache::start("rfc-untargeted", &[]);
    let url = o.url(&format!(
        "/fwd?cc={}&h={}",
        q("no-store"),
        q("CDN-Cache-Control: max-age=600")
    ));
    fwd.get(&url);
    let r = fwd.get(&url);
    assert!(
        r.head.contains("CDN-Cache-Control: max-age=600"),
        "{}",
        r.head
    );
    assert_eq!(o.count("/fwd"), 2);
}

/// RFC 5861 from the configuration: `stale_if_error` serves a stale object
/// when the origin is down, though the response said nothing of it; a
/// response with `must-revalidate` never is.
#[test]
fn stale_if_error_from_the_configuration() {
    let o = Origin::start();
    let c = configured("rfc-sie", "stale_if_error = 600", "");
    let plain = o.url("/plain?cc=max-age%3D1");
    let strict = o.url(&format!("/strict?cc={}", q("max-age=1, must-revalidate")));
    assert_eq!(c.get(&plain).status, 200);
    assert_eq!(c.get(&strict).status, 200);
    o.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let r = c.get(&plain);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.text(), "/plain v=1 vary=");
    let r = c.get(&strict);
    assert_eq!(
        r.status, 502,
        "must-revalidate was served stale: {}",
        r.head
    );
}

/// RFC 5861 from the configuration: `stale_while_revalidate` answers a
/// stale object at once and refreshes it behind.
#[test]
fn stale_while_revalidate_from_the_configuration() {
    let o = Origin::start();
    let c = configured("rfc-swr", "stale_while_revalidate = 600", "");
    let url = o.url("/swr?cc=max-age%3D1&delay=300");
    c.get(&url);
    std::thread::sleep(Duration::from_millis(1200));
    o.bump();
    let t = std::time::Instant::now();
    let r = c.get(&url);
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "it waited for the origin"
    );
    assert_eq!(r.text(), "/swr v=1 vary=", "{}", r.head);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while o.count("/swr") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no background refresh"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.get(&url).text(), "/swr v=2 vary=");
}

/// RFC 9111 §4.3.2: `If-Modified-Since` against a fresh stored response
/// without `Last-Modified` is answered 304, its `Date` standing in.
#[test]
fn if_modified_since_uses_the_date_without_last_modified() {
    let o = Origin::start();
    let c = Cache::start("rfc-ims", &[]);
    let url = o.url("/ims?cc=max-age%3D600");
    c.get(&url);
    let later = http_date(SystemTime::now() + Duration::from_secs(60));
    let r = c.request("GET", &url, &[&format!("If-Modified-Since: {later}")]);
    assert_eq!(r.status, 304, "{}", r.head);
    let earlier = http_date(SystemTime::now() - Duration::from_secs(3600));
    let r = c.request("GET", &url, &[&format!("If-Modified-Since: {earlier}")]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(o.count("/ims"), 1);
}

/// Squid's `refresh_pattern` (issue 15): a response without explicit
/// freshness is fresh for what the first pattern matching its URL gives.
/// The same responses through a cache without patterns show the
/// difference: `/never/` with an old `Last-Modified` would be a hit there,
/// `/min/` without one would not.
#[test]
fn refresh_patterns_set_the_heuristic_lifetime() {
    let patterns = "\
        [[cache.refresh_pattern]]\nregex = \"/never/\"\ncase_insensitive = true\nmin = 0\npercent = 0\nmax = 0\n\
        [[cache.refresh_pattern]]\nregex = \"/half/\"\nmin = 60\npercent = 50\nmax = 1\n\
        [[cache.refresh_pattern]]\nregex = \"/min/\"\nmin = 1\npercent = 0\nmax = 1\n";
    let o = Origin::start();
    let c = configured("rfc-refresh", patterns, "");
    let plain = Cache::start("rfc-refresh-none", &[]);
    let twice = |c: &Cache, path: &str| {
        c.get(&o.url(path));
        x_cache(&c.get(&o.url(path)))
    };

    // Last-Modified in 1994: a day fresh by carpool's own heuristic, never
    // by the pattern (-i: /NEVER/ matches too); max-age still counts
    assert_eq!(twice(&plain, "/never/a?lm=1"), "HIT");
    assert_ne!(twice(&c, "/never/b?lm=1"), "HIT");
    assert_ne!(twice(&c, "/NEVER/c?lm=1"), "HIT");
    assert_eq!((o.count("/never/b"), o.count("/NEVER/c")), (2, 2));
    assert_eq!(twice(&c, "/never/d?lm=1&cc=max-age%3D600"), "HIT");

    // no Last-Modified: fresh for min (a minute) by the pattern, stale at
    // once without
    assert_eq!(twice(&c, "/min/a"), "HIT");
    assert_eq!(o.count("/min/a"), 1);
    assert_ne!(twice(&plain, "/min/b"), "HIT");

    // Last-Modified 8 s before Date: 50% is 4 s of freshness, and min (an
    // hour) does not hold it fresh longer
    let lm = http_date(SystemTime::now() - Duration::from_secs(8));
    let url = o.url(&format!("/half/a?h={}", q(&format!("Last-Modified: {lm}"))));
    let first = std::time::Instant::now();
    c.get(&url);
    let r = c.get(&url);
    assert_eq!(x_cache(&r), "HIT", "within 4 s: {}", r.head);
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(first.elapsed()));
    let r = c.get(&url);
    assert_ne!(x_cache(&r), "HIT", "after 5.5 s: {}", r.head);
    assert_eq!(o.count("/half/a"), 2);
}
