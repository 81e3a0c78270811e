//! Frontends sharing parent health by gossip (`[cluster]`, issue 17): real
//! `carpool frontend` processes on loopback gossiping over UDP, real
//! `carpool cache` parents, one of them hung with SIGSTOP.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{free_port, frontend_metrics, get, route, wait_for, Cache, Frontend};

/// `carpool_frontend_parent_up` of `parent` on `f`.
fn up(f: &Frontend, parent: &str) -> bool {
    let key = format!("carpool_frontend_parent_up{{component=\"frontend\",parent=\"{parent}\"}} ");
    let text = frontend_metrics(f);
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .map(|v| v.trim().parse::<f64>() == Ok(1.0))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// Issue 17: a hung parent found dead by one frontend is avoided by the
/// other at once (no client of it waits for a timeout), within a second of
/// the first finding; after SIGCONT a probe brings it back for both.
#[test]
fn a_parent_found_dead_by_one_frontend_is_avoided_by_the_other_then_used_again_by_both() {
    let o = Origin::start();
    let caches = [
        Cache::start("cluster-c0", &[]),
        Cache::start("cluster-c1", &[]),
    ];
    let (ga, gb) = (free_port(), free_port());
    let conf = |me: u16, other: u16| {
        let mut c = format!(
            "hash = \"hrw\"\n[frontend]\nparent_first_byte_timeout = 1\n\
             [health]\nfail_limit = 1\nprobe_interval = 0.5\nprobe = \"http\"\nprobe_url = \"{}\"\n\
             [cluster]\nlisten = \"127.0.0.1:{me}\"\nseeds = [\"127.0.0.1:{other}\"]\nnode = \"fe-{me}\"\ncluster_id = \"test-{ga}\"\n",
            o.url("/probe")
        );
        for (i, cache) in caches.iter().enumerate() {
            c += &format!(
                "[[parent]]\nname = \"c{i}\"\nhost = \"127.0.0.1\"\nport = {}\n",
                cache.port
            );
        }
        c
    };
    let a = Frontend::start("cluster-a", &conf(ga, gb));
    let b = Frontend::start("cluster-b", &conf(gb, ga));
    for (f, peer) in [(&a, gb), (&b, ga)] {
        wait_for(
            Duration::from_secs(10),
            || f.stderr().contains("peers=1"),
            || format!("fe-{peer} never became live:\n{}", f.stderr()),
        );
    }
    let urls: Vec<String> = (0..40).map(|i| o.url(&format!("/k{i}"))).collect();
    let owners = route(&conf(ga, gb), &urls);
    let hung: Vec<&String> = urls
        .iter()
        .zip(&owners)
        .filter(|(_, o)| *o == "c0")
        .map(|(u, _)| u)
        .collect();
    assert!(hung.len() >= 4, "the test needs URLs of c0: {owners:?}");
    assert!(
        up(&a, "c0") && up(&b, "c0"),
        "{}\n{}",
        a.stderr(),
        b.stderr()
    );

    let pid = caches[0].child.id();
    let resume = common::Stopped::stop(pid);
    // A's client waits the first-byte timeout once, then c1 answers
    let t0 = Instant::now();
    let r = get(&a, hung[0]);
    assert_eq!(r.status, 200, "{}\n{}", r.head, a.stderr());
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert!(!up(&a, "c0"), "{}", a.stderr());
    // B learns it by gossip, not by a timeout of its own
    let converged = wait_for(
        Duration::from_secs(5),
        || !up(&b, "c0"),
        || format!("B still uses c0:\n{}", b.stderr()),
    );
    eprintln!("B knew c0 dead {converged:?} after A's client got its answer");
    assert!(converged < Duration::from_secs(1), "{converged:?}");
    assert!(
        b.stderr().contains("a peer frontend found it dead"),
        "{}",
        b.stderr()
    );
    for u in &hung[1..] {
        let t = Instant::now();
        let r = get(&b, u);
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "a client of B waited {:?}",
            t.elapsed()
        );
    }

    // back: a probe (A's or B's) sees it answer, both use it again
    drop(resume);
    for f in [&a, &b] {
        wait_for(
            Duration::from_secs(10),
            || up(f, "c0"),
            || format!("c0 not alive again:\n{}", f.stderr()),
        );
    }
    let key =
        "carpool_frontend_requests_total{component=\"frontend\",parent=\"c0\",status=\"200\"}";
    let count = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    for f in [&a, &b] {
        let before = count(&frontend_metrics(f));
        for u in &hung {
            assert_eq!(get(f, u).status, 200);
        }
        // (the layer counts a request just after its last byte is sent)
        let want = before + hung.len() as f64;
        let after = count(&common::metrics_when(|| frontend_metrics(f), key, want));
        assert_eq!(after, want, "{}", f.stderr());
    }
}

/// Two arrays with different cluster ids on one network never mix.
#[test]
fn frontends_of_another_cluster_id_are_not_peers() {
    let c = Cache::start("cluster-id-c", &[]);
    let (ga, gb) = (free_port(), free_port());
    let conf = |me: u16, other: u16, id: &str| {
        format!(
            "[cluster]\nlisten = \"127.0.0.1:{me}\"\nseeds = [\"127.0.0.1:{other}\"]\ncluster_id = \"{id}\"\n\
             [[parent]]\nname = \"c\"\nhost = \"127.0.0.1\"\nport = {}\n",
            c.port
        )
    };
    let a = Frontend::start("cluster-id-a", &conf(ga, gb, "one"));
    let b = Frontend::start("cluster-id-b", &conf(gb, ga, "two"));
    std::thread::sleep(Duration::from_secs(2));
    for f in [&a, &b] {
        assert!(
            f.stderr().contains("cluster: gossiping parent health"),
            "{}",
            f.stderr()
        );
        assert!(!f.stderr().contains("peers=1"), "{}", f.stderr());
    }
}

/// A `[cluster]` without `listen`, a bad seed: errors with file, line, key;
/// a gossip port in use: the frontend does not start, and says why.
#[test]
fn cluster_config_errors_are_named() {
    let dir = common::temp_dir("cluster-errors");
    let check = |text: &str| {
        let f = dir.join("c.toml");
        std::fs::write(&f, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
            .args(["check", "-c"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let parent = "[[parent]]\nname = \"p\"\nhost = \"127.0.0.1\"\nport = 3128\n";
    let e = check(&format!(
        "{parent}[cluster]\nseeds = [\"127.0.0.1:7946\"]\n"
    ));
    assert!(
        e.contains("c.toml:5: `listen`: [cluster] needs listen"),
        "{e}"
    );
    let e = check(&format!(
        "{parent}[cluster]\nlisten = \"127.0.0.1:7946\"\nseeds = [\"nohost\"]\n"
    ));
    assert!(
        e.contains("c.toml:7: `seeds`: \"nohost\" is not HOST:PORT"),
        "{e}"
    );
    let e = check(&format!(
        "{parent}[cluster]\nlisten = \"127.0.0.1:7946\"\ngossip = 1\n"
    ));
    assert!(e.contains("gossip"), "{e}");

    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let f = dir.join("busy.toml");
    std::fs::write(
        &f,
        format!("{parent}[cluster]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["frontend", "-c"])
        .arg(&f)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "[cluster] listen = 127.0.0.1:{port}: cannot gossip there"
        )),
        "{err}"
    );
}

/// `carpool up` runs its frontend in the cluster of `[cluster]`; a
/// `--cluster-seed` without a cluster to join is refused before anything
/// starts.
#[test]
fn carpool_up_runs_its_frontend_in_the_cluster() {
    let (in_file, on_line) = (free_port(), free_port());
    let up = common::up::Up::start_edited(
        "cluster-up",
        |_| String::new(),
        |text| {
            text + &format!(
                "[cluster]\nlisten = \"127.0.0.1:{in_file}\"\ncluster_id = \"up-{in_file}\"\n"
            )
        },
    );
    up.wait_for_log(&format!("listen=127.0.0.1:{in_file}"), 1);
    assert!(
        up.log().contains("cluster: gossiping parent health"),
        "{}",
        up.log()
    );
    drop(up);
    // a seed without a cluster to join is refused before anything starts
    let dir = common::temp_dir("cluster-up-seed");
    let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["up", "--cluster-seed", "127.0.0.1:7946", "--data"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{on_line}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--cluster-seed: the frontend has no cluster"),
        "{err}"
    );
}
