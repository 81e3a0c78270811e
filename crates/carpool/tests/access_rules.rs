//! The administrator's access rules (`[[acl]]`, `[[http_access]]`) in real
//! processes: a `carpool frontend` and a `carpool cache`, with clients
//! connecting from several loopback addresses (127.0.0.2, 127.0.0.3, …:
//! the whole of 127/8 is this host's), checking allow and deny, the 403,
//! and the access log's `TCP_DENIED/403` line naming the rule.

mod common;

use std::time::Duration;

use common::*;

/// Sends `raw` to `port` on 127.0.0.1 from the address `src` and reads
/// one response.
fn exchange_from(src: &str, port: u16, raw: &str) -> Response {
    common::exchange_from(src, port, raw).expect("a response")
}

fn get_from(src: &str, port: u16, url: &str) -> Response {
    exchange_from(
        src,
        port,
        &format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

/// Waits for the access log's lines to be written (they are held about a
/// second to be merged in time order) and reads it.
fn read_log(path: &std::path::Path) -> String {
    std::thread::sleep(Duration::from_millis(1800));
    std::fs::read_to_string(path).unwrap_or_default()
}

const DENIED_BODY: &str = "403 Forbidden: access denied by the proxy's http_access rules";

#[test]
fn a_frontend_allows_and_denies_by_its_rules_and_logs_the_rule() {
    let parent = Parent::start("p");
    let dir = temp_dir("acl-frontend-log");
    let log = dir.join("access.log");
    let config = format!(
        r#"
[[acl]]
name = "trusted"
type = "src"
values = ["127.0.0.2"]

[[acl]]
name = "partners"
type = "src"
values = ["127.0.0.3/32", "::1"]

[[acl]]
name = "blocked"
type = "dstdomain"
values = [".blocked.example"]

[[acl]]
name = "images"
type = "urlpath_regex"
values = ["-i", "\\.jpg$"]

[[acl]]
name = "here"
type = "myportname"
values = ["frontend"]

[[http_access]]
deny = ["blocked"]

[[http_access]]
deny = ["CONNECT", "!trusted"]
name = "tunnels for trusted clients only"

[[http_access]]
allow = ["trusted", "here"]

[[http_access]]
allow = ["partners", "images"]

[frontend]
access_log = "{}"

{}"#,
        log.display(),
        parents_toml(&[&parent])
    );
    // the rule of a denial is a debug event of the request layer
    std::env::set_var("CARPOOL_LOG", "info,proxy=debug");
    let f = Frontend::start("acl-frontend", &config);
    let port = f.port;
    let cases = [
        ("127.0.0.2", "GET", "http://h.example/a", 200),
        ("127.0.0.2", "GET", "http://www.blocked.example/", 403),
        ("127.0.0.2", "GET", "http://blocked.example/", 403),
        ("127.0.0.2", "CONNECT", "h.example:443", 200),
        ("127.0.0.3", "CONNECT", "h.example:443", 403),
        ("127.0.0.3", "GET", "http://h.example/pic.JPG", 200),
        ("127.0.0.3", "GET", "http://h.example/page.html", 403),
        ("127.0.0.4", "GET", "http://h.example/pic.jpg", 403),
    ];
    for (src, method, target, status) in cases {
        let r = if method == "CONNECT" {
            let raw = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
            exchange_from(src, port, &raw)
        } else {
            get_from(src, port, target)
        };
        assert_eq!(r.status, status, "{src} {method} {target}: {}", r.head);
        if status == 403 && method != "CONNECT" {
            assert_eq!(r.text().trim_end(), DENIED_BODY);
        }
    }
    let lines = read_log(&log);
    let line = |client: &str, what: &str| {
        lines
            .lines()
            .find(|l| l.contains(&format!(" {client} ")) && l.contains(what))
            .unwrap_or_else(|| panic!("no line for {client} {what} in:\n{lines}"))
            .to_string()
    };
    assert!(line("127.0.0.2", "http://h.example/a").contains(" TCP_MISS/200 "));
    for (client, what) in [
        ("127.0.0.2", "http://www.blocked.example/"),
        ("127.0.0.3", "CONNECT h.example:443"),
        ("127.0.0.3", "http://h.example/page.html"),
        ("127.0.0.4", "http://h.example/pic.jpg"),
    ] {
        let l = line(client, what);
        assert!(
            l.contains(" TCP_DENIED/403 ") && l.contains(" HIER_NONE/- "),
            "{l}"
        );
    }
    // the rule that decided, in the debug log
    let stderr = f.stderr();
    let denial = |url: &str| {
        stderr
            .lines()
            .find(|l| l.contains("denied by http_access") && l.contains(url))
            .unwrap_or_else(|| panic!("no denial of {url} in:\n{stderr}"))
            .to_string()
    };
    assert!(denial("www.blocked.example").contains("carpool.toml:27 deny blocked"));
    assert!(denial("h.example:443").contains("tunnels for trusted clients only"));
    assert!(denial("page.html")
        .contains("implicit deny after the last http_access rule (carpool.toml:37)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cache_enforces_its_own_rules_and_allow_clients_still_comes_first() {
    let origin = Parent::start("origin");
    let dir = temp_dir("acl-cache-conf");
    let conf = dir.join("carpool.toml");
    std::fs::write(
        &conf,
        r#"
[[parent]]
name = "c1"
host = "127.0.0.1"
port = 1

[[acl]]
name = "frontends"
type = "src"
values = ["127.0.0.2", "127.0.0.3"]

[cache]
allow_clients = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.5"]
access_log_format = "json"

[[cache.acl]]
name = "no_posts"
type = "method"
values = ["POST"]

[[cache.acl]]
name = "me"
type = "myportname"
values = ["c1"]

[[cache.http_access]]
deny = ["no_posts"]

[[cache.http_access]]
allow = ["frontends", "me"]
"#,
    )
    .unwrap();
    let conf = conf.display().to_string();
    let c = Cache::start_with("acl-cache", false, &["-c", &conf, "--name", "c1"]);
    let url = format!("http://127.0.0.1:{}/obj", origin.port);
    assert_eq!(get_from("127.0.0.2", c.port, &url).status, 200);
    assert_eq!(get_from("127.0.0.3", c.port, &url).status, 200);
    let post = format!("POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(exchange_from("127.0.0.2", c.port, &post).status, 403);
    // allowed by allow_clients, not by the rules (implicit deny)
    let r = get_from("127.0.0.5", c.port, &url);
    assert_eq!((r.status, r.text().trim_end()), (403, DENIED_BODY));
    // not in allow_clients: refused before the rules are looked at
    let r = get_from("127.0.0.4", c.port, &url);
    assert_eq!(r.status, 403);
    assert!(r.text().contains("not in allow_clients"), "{}", r.text());
    let log = c.access_log();
    let line = |client: &str| -> Vec<&str> {
        log.lines()
            .filter(|l| l.contains(&format!("\"client\":\"{client}\"")))
            .collect()
    };
    let denied = line("127.0.0.5");
    assert_eq!(denied.len(), 1, "{log}");
    assert!(
        denied[0].contains("\"code\":\"TCP_DENIED\",\"status\":403"),
        "{}",
        denied[0]
    );
    assert!(
        denied[0].contains("implicit deny after the last http_access rule (carpool.toml:29)"),
        "{}",
        denied[0]
    );
    let post = line("127.0.0.2");
    assert!(
        post.iter().any(|l| l.contains("\"method\":\"POST\"")
            && l.contains("TCP_DENIED")
            && l.contains("carpool.toml:26 deny no_posts")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
