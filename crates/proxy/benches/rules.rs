//! What the access rules cost a request: a Squid-like list (deny
//! !Safe_ports, deny CONNECT !SSL_ports, deny a dstdomain blocklist and a
//! url_regex, allow localnet) checked against requests that go through
//! every rule, and against an empty list (what a server without rules pays).
//!
//! `cargo bench -p proxy --bench rules`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use proxy::rules::{Builder, Facts, Rules, Verdict};

fn squid_like() -> Rules {
    let mut b = Builder::new();
    b.acl(
        "localnet",
        "src",
        &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
    )
    .unwrap();
    b.acl("SSL_ports", "port", &["443"]).unwrap();
    b.acl(
        "Safe_ports",
        "port",
        &[
            "80",
            "21",
            "443",
            "70",
            "210",
            "1025-65535",
            "280",
            "488",
            "591",
            "777",
        ],
    )
    .unwrap();
    let domains: Vec<String> = (0..1000).map(|i| format!(".ads{i}.example")).collect();
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    b.acl("blocked", "dstdomain", &domains).unwrap();
    b.acl(
        "bad_urls",
        "url_regex",
        &["-i", "\\.exe$", "/wp-admin/", "[?&]token="],
    )
    .unwrap();
    b.rule(false, &["!Safe_ports"], "1").unwrap();
    b.rule(false, &["CONNECT", "!SSL_ports"], "2").unwrap();
    b.rule(true, &["localhost", "manager"], "3").unwrap();
    b.rule(false, &["manager"], "4").unwrap();
    b.rule(false, &["blocked"], "5").unwrap();
    b.rule(false, &["bad_urls"], "6").unwrap();
    b.rule(true, &["localnet"], "7").unwrap();
    b.build("implicit deny")
}

fn facts<'a>(url: &'a [u8], host: &'a [u8], path: &'a [u8]) -> Facts<'a> {
    Facts {
        client: "10.1.2.3".parse().unwrap(),
        local_port: 3128,
        port_name: "frontend",
        method: b"GET",
        scheme: b"http",
        host,
        port: 80,
        url,
        path,
    }
}

fn bench(c: &mut Criterion) {
    let rules = squid_like();
    let url = b"http://www.site.example.com/some/path/to/an/object.js?v=12345";
    let f = facts(
        url,
        b"www.site.example.com",
        b"/some/path/to/an/object.js?v=12345",
    );
    assert_eq!(rules.check(&f), Verdict::Allow);
    c.bench_function("squid-like list, allowed by the last rule", |b| {
        b.iter(|| black_box(rules.check(black_box(&f))) == Verdict::Allow)
    });
    let empty = Builder::new().build("");
    c.bench_function("no rules", |b| b.iter(|| black_box(&empty).is_empty()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
