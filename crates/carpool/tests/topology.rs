//! The wiki page's topology on real network stacks (root only: it builds
//! network namespaces of its own, joined by a bridge in a namespace of its
//! own; no address outside them is used): a client host; a frontend host
//! running four separate `carpool frontend` instances on 3128-3131 behind
//! the rules of `carpool lb-rules --iptables --apply`; three cache hosts,
//! each running `carpool cache -c array.toml --name cacheN`; an origin host.

use std::process::{Command, Stdio};
use std::time::Instant;

mod common;
use common::netns::{unavailable, Lab};

const NET: &str = "10.77.0";
const FRONTEND: &str = "10.77.0.2";
const ORIGIN: &str = "10.77.0.100";
const CLIENT: &str = "10.77.0.50";
const CACHES: [(&str, &str); 3] = [
    ("cache1", "10.77.0.11"),
    ("cache2", "10.77.0.12"),
    ("cache3", "10.77.0.13"),
];
const URLS: usize = 200;

/// An origin: `/obj/N` with max-age, `/__counts` says how often each path came.
const ORIGIN_PY: &str = r#"
import http.server, json, sys, threading
counts = {}; lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/__counts":
            body = json.dumps(counts).encode(); cc = "no-store"
        else:
            with lock: counts[self.path] = counts.get(self.path, 0) + 1
            body = ("origin " + self.path).encode(); cc = "max-age=3600"
        self.send_response(200)
        self.send_header("Cache-Control", cc); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[1], 80), H).serve_forever()
"#;

/// The client: N requests over new connections to the frontend's public
/// port, cycling over the URLs; prints one line per request:
/// `url via-port x-cache status`.
const CLIENT_PY: &str = r#"
import socket, sys, threading
fe, n, urls, origin, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
out = []; lock = threading.Lock()
def one(i):
    url = "http://%s/obj/%d" % (origin, i % urls)
    s = socket.create_connection((fe, port), 10)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (url, origin)).encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b: break
        data += b
    s.close()
    head = data.split(b"\r\n\r\n")[0].decode()
    status = head.split(" ")[1]
    via = [l for l in head.split("\r\n") if l.lower().startswith("via:")]
    xc = [l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("x-cache:")]
    vport = via[-1].split("(")[0].strip().rsplit(":", 1)[1] if via else "-"
    with lock: out.append("%s %s %s %s" % (url, vport, xc[0] if xc else "-", status))
def worker(k):
    for i in range(k, n, 8): one(i)
ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
for t in ts: t.start()
for t in ts: t.join()
print("\n".join(out))
"#;

struct Seen {
    url: String,
    instance: u16,
    x_cache: String,
    status: u16,
}

fn client(lab: &Lab, n: usize) -> Vec<Seen> {
    lab.run(
        "client",
        &[
            "python3",
            "-c",
            CLIENT_PY,
            FRONTEND,
            &n.to_string(),
            &URLS.to_string(),
            ORIGIN,
            "3128",
        ],
    )
    .lines()
    .map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        Seen {
            url: w[0].to_string(),
            instance: w[1].parse().unwrap_or(0),
            x_cache: w[2].to_string(),
            status: w[3].parse().unwrap_or(0),
        }
    })
    .collect()
}

fn origin_counts(lab: &Lab) -> std::collections::HashMap<String, u64> {
    let text = lab.run(
        "client",
        &["python3", "-c", &format!("import urllib.request;print(urllib.request.urlopen('http://{ORIGIN}/__counts').read().decode())")],
    );
    text.trim()
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once(':').unwrap();
            (
                k.trim().trim_matches('"').to_string(),
                v.trim().parse().unwrap(),
            )
        })
        .collect()
}

fn shares(seen: &[Seen]) -> Vec<(u16, f64)> {
    (3128..=3131)
        .map(|p| {
            let c = seen.iter().filter(|s| s.instance == p).count();
            (p, c as f64 / seen.len() as f64)
        })
        .collect()
}

#[test]
fn the_wiki_topology_in_network_namespaces() {
    if let Some(why) = unavailable(&["ip", "iptables", "python3"]) {
        eprintln!("SKIP: the_wiki_topology_in_network_namespaces: {why}");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_carpool");
    let dir = std::env::temp_dir().join(format!("carpool-topology-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut conf = format!(
        "hash = \"hrw\"\n[frontend]\nworkers = 1\nallow_clients = [\"{NET}.0/24\"]\n\n[cache]\nworkers = 1\nmem = \"32M\"\ndisk = \"64M\"\ndir = \"{}\"\nallow_clients = [\"{FRONTEND}/32\"]\n\n",
        dir.join("data").display()
    );
    for (name, addr) in CACHES {
        conf.push_str(&format!(
            "[[parent]]\nname = \"{name}\"\nhost = \"{addr}\"\nport = 3128\n"
        ));
    }
    let conf_path = dir.join("array.toml");
    std::fs::write(&conf_path, &conf).unwrap();
    let conf_s = conf_path.to_str().unwrap();
    let hosts: Vec<(&str, &str)> = [("client", CLIENT), ("fe", FRONTEND), ("origin", ORIGIN)]
        .into_iter()
        .chain(CACHES)
        .collect();
    let mut lab = Lab::new("cpt", &format!("{NET}.0/24"), &hosts);
    lab.spawn(
        "origin",
        &["python3", "-c", ORIGIN_PY, ORIGIN],
        &dir.join("origin.log"),
    );
    // on the cache hosts, a name that resolves to loopback (`ip netns exec`
    // mounts /etc/netns/NS/hosts over /etc/hosts)
    for (name, _) in CACHES {
        let etc = std::path::PathBuf::from(format!("/etc/netns/{}", lab.ns(name)));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n127.0.0.1 sneaky.test\n",
        )
        .unwrap();
    }
    let mut cache_child = Vec::new();
    for (name, _) in CACHES {
        let i = lab.spawn(
            name,
            &[bin, "cache", "-c", conf_s, "--name", name],
            &dir.join(format!("{name}.log")),
        );
        cache_child.push(i);
    }
    for port in 3128..=3131u16 {
        let listen = format!("{FRONTEND}:{port}");
        lab.spawn(
            "fe",
            &[bin, "frontend", "-c", conf_s, "--listen", &listen],
            &dir.join(format!("fe{port}.log")),
        );
    }
    lab.wait_port("client", ORIGIN, 80);
    for (_, addr) in CACHES {
        lab.wait_port("client", addr, 3128);
    }
    for port in 3128..=3131u16 {
        lab.wait_port("client", FRONTEND, port);
    }
    let rules = [
        bin,
        "lb-rules",
        "--port",
        "3128",
        "--instances",
        "3128,3129,3130,3131",
        "--iptables",
        "--chain",
        "PREROUTING",
    ];
    lab.run("fe", &[&rules[..], &["--apply"]].concat());

    // 4,000 client connections spread evenly over the four instances
    let t0 = Instant::now();
    let seen = client(&lab, 4000);
    assert_eq!(seen.len(), 4000);
    assert!(
        seen.iter().all(|s| s.status == 200),
        "every request answered 200"
    );
    for (p, s) in shares(&seen) {
        assert!(
            (s - 0.25).abs() < 0.03,
            "instance {p} got {:.1}% of the connections",
            s * 100.0
        );
    }
    // every URL came from the origin once: it lives on exactly one cache host
    let counts = origin_counts(&lab);
    assert_eq!(counts.len(), URLS);
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
    eprintln!("topology: 4000 requests in {:?}", t0.elapsed());

    // the cache hosts refuse a direct client connection
    let direct = lab.run(
        "client",
        &["python3", "-c", &format!("import socket;s=socket.create_connection(('{}',3128),5);s.sendall(b'GET http://{ORIGIN}/obj/1 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n');print(s.recv(100).decode().split(' ')[1])", CACHES[0].1)],
    );
    assert_eq!(
        direct.trim(),
        "403",
        "a client must not reach a cache directly"
    );

    // a remote client reaches no loopback address through the array: named
    // by address (the frontend refuses it), or by a name that resolves to
    // loopback on the cache hosts (the cache refuses it: the frontend said
    // that the client is remote)
    for target in [
        "http://127.0.0.1:3128/",
        "http://sneaky.test/",
        "http://sneaky.test:22/",
    ] {
        let status = lab.run(
            "client",
            &["python3", "-c", &format!("import socket;s=socket.create_connection(('{FRONTEND}',3128),5);s.sendall(b'GET {target} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n');print(s.recv(100).decode().split(' ')[1])")],
        );
        assert_eq!(status.trim(), "403", "{target} from a remote client");
    }

    // which cache owns each URL: `carpool route` on the same config
    let urls: Vec<String> = (0..URLS)
        .map(|i| format!("http://{ORIGIN}/obj/{i}"))
        .collect();
    let mut route = Command::new(bin)
        .args(["route", "-c", conf_s])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        route.stdin.as_mut().unwrap(),
        (urls.join("\n") + "\n").as_bytes(),
    )
    .unwrap();
    let owners: Vec<String> = String::from_utf8(route.wait_with_output().unwrap().stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(owners.len(), URLS);

    // kill cache2's process: only its URLs move
    let victim = &mut lab.children[cache_child[1]];
    victim.kill().unwrap();
    victim.wait().unwrap();
    let again = client(&lab, 2 * URLS);
    assert!(again.iter().all(|s| s.status == 200));
    let counts = origin_counts(&lab);
    for (url, owner) in urls.iter().zip(&owners) {
        let path = url.trim_start_matches(&format!("http://{ORIGIN}"));
        let c = counts.get(path).copied().unwrap_or(0);
        if owner == "cache2" {
            assert_eq!(c, 2, "{url} (on the dead cache2) is fetched again, once");
        } else {
            assert_eq!(c, 1, "{url} on {owner} must not move");
            for s in again.iter().filter(|s| &s.url == url) {
                assert_eq!(s.x_cache, "HIT", "{url} stays a hit on {owner}");
            }
        }
    }

    // the wiki page's own rules (0.25 at every step) are skewed, and the
    // same measurement shows it
    lab.run("fe", &[&rules[..], &["--remove"]].concat());
    for to in [3129, 3130, 3131] {
        lab.run(
            "fe",
            &[
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--dport",
                "3128",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.25",
                "-j",
                "REDIRECT",
                "--to-ports",
                &to.to_string(),
            ],
        );
    }
    let wiki = shares(&client(&lab, 4000));
    let first = wiki[0].1;
    assert!(
        (first - 0.4219).abs() < 0.03,
        "with the wiki's rules 3128 gets ~42% ({wiki:?})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
