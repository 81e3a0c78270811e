//! A lab of network namespaces for the root-only tests: one namespace per
//! host, each with an `eth0` (one end of a veth pair) on a bridge that lives
//! in a namespace of its own. Only the addresses given (inside the subnet
//! given) are used; dropping the lab kills what it spawned and deletes every
//! namespace (so also every rule set up inside one).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Why a root-only namespace test cannot run here (not root, or a tool is
/// missing), or `None`.
pub fn unavailable(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces)".into());
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status();
        if !found.is_ok_and(|s| s.success()) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Runs a command on the test's own side, panicking with its stderr on failure.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, removed (with everything running in them) on drop.
pub struct Lab {
    prefix: String,
    tag: String,
    names: Vec<String>,
    /// The processes spawned in the lab, in spawn order.
    pub children: Vec<Child>,
    hosts: Vec<(String, String)>,
}

fn parse_subnet(subnet: &str) -> (u32, u32) {
    let (net, len) = subnet.split_once('/').expect("subnet is ADDRESS/LEN");
    let net: Ipv4Addr = net.parse().expect("an IPv4 subnet");
    let len: u32 = len.parse().expect("a prefix length");
    assert!((8..=30).contains(&len), "prefix length {len}");
    let mask = u32::MAX << (32 - len);
    (u32::from(net) & mask, len)
}

impl Lab {
    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}{}{host}", self.prefix, self.tag)
    }

    /// Builds the lab: `hosts` are (name, IPv4 address) pairs, every address
    /// inside `subnet` (e.g. "10.77.0.0/24"); `prefix` (3 letters) starts the
    /// names of the namespaces and interfaces, so that two tests never meet.
    pub fn new(prefix: &str, subnet: &str, hosts: &[(&str, &str)]) -> Lab {
        assert!(prefix.len() <= 3, "interface names have 15 bytes at most");
        assert!(hosts.len() <= 100);
        let (net, len) = parse_subnet(subnet);
        let mask = u32::MAX << (32 - len);
        for (h, a) in hosts {
            let ip: Ipv4Addr = a.parse().expect("an IPv4 address");
            assert_eq!(u32::from(ip) & mask, net, "{h} at {a} is outside {subnet}");
        }
        let mut lab = Lab {
            prefix: prefix.to_string(),
            tag: (std::process::id() % 100_000).to_string(),
            names: Vec::new(),
            children: Vec::new(),
            hosts: hosts
                .iter()
                .map(|(h, a)| (h.to_string(), a.to_string()))
                .collect(),
        };
        let sw = lab.ns("sw");
        sh(&["ip", "netns", "add", &sw]);
        lab.names.push(sw.clone());
        sh(&[
            "ip", "netns", "exec", &sw, "ip", "link", "add", "br0", "type", "bridge",
        ]);
        sh(&["ip", "netns", "exec", &sw, "ip", "link", "set", "br0", "up"]);
        for (i, (host, addr)) in lab.hosts.clone().iter().enumerate() {
            let ns = lab.ns(host);
            sh(&["ip", "netns", "add", &ns]);
            lab.names.push(ns.clone());
            let (a, b) = (
                format!("{prefix}a{}{i}", lab.tag),
                format!("{prefix}b{}{i}", lab.tag),
            );
            // created inside the switch namespace, one end moved to the host
            sh(&[
                "ip", "netns", "exec", &sw, "ip", "link", "add", &a, "type", "veth", "peer",
                "name", &b,
            ]);
            sh(&[
                "ip", "netns", "exec", &sw, "ip", "link", "set", &a, "master", "br0", "up",
            ]);
            sh(&[
                "ip", "netns", "exec", &sw, "ip", "link", "set", &b, "netns", &ns,
            ]);
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", &b, "name", "eth0",
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{addr}/{len}"),
                "dev",
                "eth0",
            ]);
            sh(&[
                "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
            ]);
            sh(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The address of `host`.
    pub fn addr(&self, host: &str) -> &str {
        &self
            .hosts
            .iter()
            .find(|(h, _)| h == host)
            .unwrap_or_else(|| panic!("no host {host} in the lab"))
            .1
    }

    /// Starts `cmd` on `host`, stderr to `log` and stdout to `log` with the
    /// extension `out`; returns its index in [`Lab::children`].
    pub fn spawn(&mut self, host: &str, cmd: &[&str], log: &Path) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(cmd)
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Runs `cmd` on `host` to its end; its stdout (panics if it failed).
    pub fn run(&self, host: &str, cmd: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{host} {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Waits until `addr:port` accepts, from `from`.
    pub fn wait_port(&self, from: &str, addr: &str, port: u16) {
        let probe = format!(
            "import socket,time\nfor _ in range(300):\n  try:\n    socket.create_connection(('{addr}',{port}),1).close(); break\n  except OSError: time.sleep(0.05)\nelse: raise SystemExit('{addr}:{port} never listened')"
        );
        self.run(from, &["python3", "-c", &probe]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.names.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{n}"));
        }
    }
}
