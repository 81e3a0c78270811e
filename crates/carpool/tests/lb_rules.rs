//! `carpool lb-rules`: the printed rules, and (as root, in a network namespace
//! of the test's own) the rules applied for real: connections to the public
//! port spread over the instances as computed, and removed again.

use std::process::{Command, Stdio};

fn carpool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn prints_correct_probabilities_and_explains_the_wiki_skew() {
    let out = carpool(&[
        "lb-rules",
        "--port",
        "3128",
        "--instances",
        "3128,3129,3130,3131",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rules: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("iptables "))
        .collect();
    assert_eq!(rules.len(), 3, "{text}");
    for (rule, p) in rules
        .iter()
        .zip(["0.2500000000", "0.3333333333", "0.5000000000"])
    {
        assert!(rule.contains(&format!("--probability {p}")), "{rule}");
    }
    assert!(text.contains("42.19% stay on 3128"), "{text}");
    let out = carpool(&[
        "lb-rules",
        "--port",
        "80",
        "--instances",
        "81,82",
        "--weights",
        "1,3",
        "--nftables",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("numgen random mod 4 map { 0 : 81, 1-3 : 82 }"),
        "{text}"
    );
    let out = carpool(&["lb-rules", "--port", "80", "--instances", "81,81"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Why the namespace test cannot run here, if it cannot.
fn netns_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables", "nft", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status();
        if !found.is_ok_and(|s| s.success()) {
            return Some(format!(
                "{tool} is not installed (scripts/test installs iptables and nftables)"
            ));
        }
    }
    None
}

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("cplb{}{tag}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        Netns(name)
    }

    fn run(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(cmd)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Listens on the instance ports, makes N connections to the public port
/// from inside the namespace, and prints how many landed on each instance.
const SPREAD_PROBE: &str = r#"
import socket, sys, threading
port = int(sys.argv[1]); instances = [int(p) for p in sys.argv[2].split(",")]; n = int(sys.argv[3])
def serve(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", p)); s.listen(512)
    while True:
        c, _ = s.accept(); c.sendall(str(p).encode()); c.close()
for p in instances:
    threading.Thread(target=serve, args=(p,), daemon=True).start()
import time; time.sleep(0.3)
counts = {p: 0 for p in instances}
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port)); counts[int(c.recv(16))] += 1; c.close()
print(" ".join("%d:%d" % (p, counts[p]) for p in instances))
"#;

fn spread_shares(ns: &Netns, port: u16, instances: &str, n: u32) -> Vec<(u16, f64)> {
    let out = ns.run(&[
        "python3",
        "-c",
        SPREAD_PROBE,
        &port.to_string(),
        instances,
        &n.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|kv| {
            let (p, c) = kv.split_once(':').unwrap();
            (p.parse().unwrap(), c.parse::<f64>().unwrap() / n as f64)
        })
        .collect()
}

#[test]
fn applied_rules_spread_connections_evenly_and_remove_cleanly() {
    if let Some(why) = netns_unavailable() {
        eprintln!("SKIP: applied_rules_spread_connections_evenly_and_remove_cleanly: {why}");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_carpool");
    for backend in ["--iptables", "--nftables"] {
        let ns = Netns::new(&backend[2..4]);
        let args = [
            "lb-rules",
            "--port",
            "3128",
            "--instances",
            "3128,3129,3130,3131",
            "--chain",
            "OUTPUT",
            backend,
        ];
        let apply = ns.run(&[&[bin][..], &args[..], &["--apply"]].concat());
        assert!(
            apply.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&apply.stderr)
        );
        let shares = spread_shares(&ns, 3128, "3128,3129,3130,3131", 4000);
        for (p, s) in &shares {
            assert!(
                (s - 0.25).abs() < 0.03,
                "{backend}: instance {p} got {:.1}% ({shares:?})",
                s * 100.0
            );
        }
        let remove = ns.run(&[&[bin][..], &args[..], &["--remove"]].concat());
        assert!(
            remove.status.success(),
            "{}",
            String::from_utf8_lossy(&remove.stderr)
        );
        let after = spread_shares(&ns, 3128, "3128,3129,3130,3131", 200);
        assert_eq!(
            after[0],
            (3128, 1.0),
            "{backend}: rules removed, everything stays on 3128"
        );
    }
    // The wiki page's rules (0.25 on each) are skewed, and the test can tell.
    let ns = Netns::new("wk");
    for to in [3129, 3130, 3131] {
        let rule = format!(
            "iptables -t nat -A OUTPUT -p tcp --dport 3128 -o lo -m statistic --mode random --probability 0.25 -j REDIRECT --to-ports {to}"
        );
        assert!(ns.run(&["sh", "-c", &rule]).status.success());
    }
    let shares = spread_shares(&ns, 3128, "3128,3129,3130,3131", 4000);
    let own = shares.iter().find(|(p, _)| *p == 3128).unwrap().1;
    assert!(
        (own - 0.4219).abs() < 0.03,
        "the wiki's rules leave 42% on 3128: {shares:?}"
    );
}
