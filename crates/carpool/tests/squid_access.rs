//! Squid's access rules carried over (issue 15): a real Squid 5.7 CARP
//! frontend with an access policy using every ACL type carpool has, and
//! carpool frontends on the same squid.conf (`--squid-conf`) and on its
//! import (`carpool import-squid`), asked the same requests from several
//! loopback source addresses: each request is allowed by all three or
//! denied (403) by all three. And Debian's shipped squid.conf, imported,
//! keeps its Safe_ports and localhost rules in force.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Sends `raw` to 127.0.0.1:`port` from the address `src`; the status (0:
/// no response).
fn status_from(src: &str, port: u16, raw: &str) -> u16 {
    exchange_from(src, port, raw).map_or(0, |r| r.status)
}

/// A `carpool frontend` started with `args`, listening on `port`.
struct Carpool {
    child: Child,
    log: std::path::PathBuf,
}

impl Carpool {
    fn start(args: &[&str], port: u16, log: std::path::PathBuf) -> Carpool {
        let child = Command::new(env!("CARGO_BIN_EXE_carpool"))
            .arg("frontend")
            .args(args)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--access-log",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start carpool");
        let c = Carpool { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "carpool did not start: {}",
                c.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Carpool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `carpool import-squid CONF -o OUT`, which must succeed.
fn import(conf: &Path, out: &Path) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["import-squid"])
        .arg(conf)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "import-squid failed: {stderr}");
    stderr
}

/// A request line and head for `method target` (a body of none for POST).
fn request(method: &str, target: &str) -> String {
    let host = target
        .split("://")
        .nth(1)
        .unwrap_or(target)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let body = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n{body}Connection: close\r\n\r\n")
}

#[test]
fn carpool_decides_as_squid_on_an_imported_access_policy() {
    if let Err(why) = squid_binary() {
        eprintln!("SKIP: carpool_decides_as_squid_on_an_imported_access_policy: {why}");
        return;
    }
    let parent = Parent::start("p1");
    let (squid_port, direct_port, imported_port) = (free_port(), free_port(), free_port());
    // every ACL type carpool has; `numeric` comes before the dst ACLs so
    // that Squid never looks a host name up for them; -n on dstdomain and
    // dstdom_regex for the same reason (Squid would look up the name of an
    // address, and this test has no DNS)
    let body = format!(
        "cache_peer 127.0.0.1 parent {parent} 0 carp no-query name=p1\n\
         never_direct allow all\n\
         acl office src 127.0.0.2 127.0.0.3/32\n\
         acl partner src 127.0.0.4\n\
         acl numeric dstdom_regex -n ^[0-9.]+$\n\
         acl lab dst 127.0.0.9\n\
         acl blocked dstdomain -n .blocked.example\n\
         acl ads dstdom_regex -n -i ^ads\\.\n\
         acl secret url_regex -i /secret/\n\
         acl debug urlpath_regex \\?debug=1\n\
         acl SSL_ports port 443\n\
         acl Safe_ports port 80 443\n\
         acl Safe_ports port 1025-65535\n\
         acl alt_port port 8000-8099\n\
         acl via_port localport {squid_port} {direct_port} {imported_port}\n\
         acl via_name myportname 127.0.0.1:{squid_port}\n\
         acl writes method POST PUT\n\
         acl web proto HTTP\n\
         http_access deny !Safe_ports\n\
         http_access deny CONNECT !SSL_ports\n\
         http_access deny manager\n\
         http_access deny blocked\n\
         http_access deny ads\n\
         http_access deny numeric lab\n\
         http_access deny numeric to_localhost partner\n\
         http_access deny secret !office\n\
         http_access deny debug\n\
         http_access deny writes partner\n\
         http_access allow office web via_port via_name\n\
         http_access allow partner alt_port\n\
         http_access allow localhost\n",
        parent = parent.port
    );
    let squid = Squid::start_on("acl", squid_port, &body);
    let conf = squid.work.join("squid.conf");
    let dir = temp_dir("squid-access");
    let imported = dir.join("imported.toml");
    import(&conf, &imported);
    let direct = Carpool::start(
        &["--squid-conf", conf.to_str().unwrap()],
        direct_port,
        dir.join("direct.log"),
    );
    let from_import = Carpool::start(
        &["-c", imported.to_str().unwrap()],
        imported_port,
        dir.join("imported.log"),
    );

    let (office, office2, partner, other, local) = (
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.1",
    );
    let cases: [(&str, &str, &str, bool); 30] = [
        (office, "GET", "http://www.example.com/", true),
        (office2, "GET", "http://www.example.com/a", true),
        (partner, "GET", "http://www.example.com/", false),
        (partner, "GET", "http://www.example.com:8080/", true),
        (other, "GET", "http://www.example.com/", false),
        (local, "GET", "http://www.example.com/", true),
        (office, "GET", "http://www.example.com:22/", false),
        (local, "GET", "http://www.example.com:22/", false),
        (office, "GET", "http://a.blocked.example/", false),
        (office, "GET", "http://BLOCKED.example/", false),
        (office, "GET", "http://notblocked.example/", true),
        (office, "GET", "http://ADS.example.com/", false),
        (office, "GET", "http://myads.example.com/", true),
        (office, "GET", "http://www.example.com/SECRET/x", true),
        (partner, "GET", "http://www.example.com:8080/secret/", false),
        (local, "GET", "http://www.example.com/Secret/", false),
        (office, "GET", "http://www.example.com/p?debug=1", false),
        (office, "GET", "http://www.example.com/p?debug=2", true),
        (partner, "POST", "http://www.example.com:8080/form", false),
        (office, "POST", "http://www.example.com/form", true),
        (office, "GET", "http://127.0.0.9:8080/", false),
        (office, "GET", "http://127.0.0.8:8080/", true),
        (partner, "GET", "http://127.0.0.8:8080/", false),
        (partner, "GET", "http://10.0.0.8:8080/", true),
        (
            office,
            "GET",
            "http://www.example.com/squid-internal-mgr/info",
            false,
        ),
        (local, "GET", "cache_object://www.example.com/info", false),
        (office, "CONNECT", "www.example.com:8443", false),
        (other, "CONNECT", "www.example.com:443", false),
        (office, "CONNECT", "www.example.com:443", false),
        (partner, "PUT", "http://www.example.com:8080/x", false),
    ];
    let mut report = Vec::new();
    for (src, method, target, allowed) in cases {
        let raw = request(method, target);
        let got = [
            ("squid", status_from(src, squid_port, &raw)),
            ("--squid-conf", status_from(src, direct_port, &raw)),
            ("imported", status_from(src, imported_port, &raw)),
        ];
        // allowed: the parent answered (200); refused: anything else, 403
        // from Squid (carpool answers 501 for cache_object://, a scheme it
        // never forwards, before its rules)
        let decisions: Vec<bool> = got.iter().map(|(_, s)| *s == 200).collect();
        let squid_refusal = allowed || got[0].1 == 403;
        if decisions.iter().any(|&d| d != allowed) || !squid_refusal {
            report.push(format!(
                "{src} {method} {target}: expected {} got {got:?}",
                if allowed { "allow" } else { "deny" }
            ));
        }
    }
    assert!(
        report.is_empty(),
        "decisions differ:\n{}\n--- squid\n{}\n--- carpool\n{}",
        report.join("\n"),
        squid.diagnostics(),
        direct.stderr()
    );
    // what the frontend does not honour is said (pid_filename & co. are Squid's)
    let o = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["check", "--squid-conf"])
        .arg(&conf)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("not honoured"), "{out}");
    assert!(out.contains("`pid_filename`"), "{out}");
    drop(from_import);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The finding: with Debian's squid.conf plus CARP parents,
/// carpool forwarded `http://127.0.0.1:22/`, which Squid's `deny
/// !Safe_ports` refuses, and clients Squid refuses. Imported, the rules
/// are in force: localhost is served, other clients and unsafe ports are
/// refused.
#[test]
fn debians_squid_conf_keeps_its_rules() {
    let debian = Path::new("/etc/squid/squid.conf");
    if !debian.exists() {
        eprintln!("SKIP: debians_squid_conf_keeps_its_rules: /etc/squid/squid.conf is missing (scripts/test installs Debian's squid)");
        return;
    }
    let parent = Parent::start("p1");
    let dir = temp_dir("debian-conf");
    let conf = dir.join("squid.conf");
    let mut text = std::fs::read(debian).unwrap();
    text.extend_from_slice(
        format!(
            "cache_peer 127.0.0.1 parent {} 0 carp no-query\nnever_direct allow all\n",
            parent.port
        )
        .as_bytes(),
    );
    std::fs::write(&conf, &text).unwrap();
    let imported = dir.join("imported.toml");
    let notes = import(&conf, &imported);
    assert!(
        notes.contains("translated as a CARP frontend with 1 parents"),
        "{notes}"
    );
    let (direct_port, imported_port) = (free_port(), free_port());
    let _direct = Carpool::start(
        &["--squid-conf", conf.to_str().unwrap()],
        direct_port,
        dir.join("direct.log"),
    );
    let _import = Carpool::start(
        &["-c", imported.to_str().unwrap()],
        imported_port,
        dir.join("imported.log"),
    );
    for port in [direct_port, imported_port] {
        let get = |src: &str, url: &str| status_from(src, port, &request("GET", url));
        assert_eq!(get("127.0.0.1", "http://www.example.com/"), 200);
        assert_eq!(
            get("127.0.0.1", "http://127.0.0.1:22/"),
            403,
            "deny !Safe_ports"
        );
        assert_eq!(get("127.0.0.1", "http://www.example.com:22/"), 403);
        assert_eq!(
            get("127.0.0.2", "http://www.example.com/"),
            403,
            "not localhost"
        );
        assert_eq!(
            get(
                "127.0.0.1",
                "http://www.example.com/squid-internal-mgr/info"
            ),
            200,
            "allow localhost manager"
        );
        assert_eq!(
            get(
                "127.0.0.2",
                "http://www.example.com/squid-internal-mgr/info"
            ),
            403
        );
        let connect = status_from(
            "127.0.0.1",
            port,
            "CONNECT www.example.com:8443 HTTP/1.1\r\nHost: www.example.com:8443\r\n\r\n",
        );
        assert_eq!(connect, 403, "deny CONNECT !SSL_ports");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
