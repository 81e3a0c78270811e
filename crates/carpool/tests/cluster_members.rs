//! Caches that announce themselves (`carpool cache --cluster-listen`,
//! issue 17): a real `carpool frontend` with `[cluster] announced_parents`
//! adds a joining cache to its table and takes it out when it leaves or
//! stays gone past the grace period. Which cache served each URL is read
//! from the caches' own access logs and compared with `carpool route` on
//! a config listing the same parents.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{free_port, frontend_metrics, get, route, wait_for, Cache, Frontend};

/// Whether `f`'s table lists `parent` (its `carpool_frontend_parent_info`).
fn listed(f: &Frontend, parent: &str) -> bool {
    frontend_metrics(f).lines().any(|l| {
        l.starts_with("carpool_frontend_parent_info{")
            && l.contains(&format!("parent=\"{parent}\""))
    })
}

/// `carpool_frontend_parent_up` of `parent` on `f` (None: not listed).
fn up(f: &Frontend, parent: &str) -> Option<bool> {
    let key = format!("carpool_frontend_parent_up{{component=\"frontend\",parent=\"{parent}\"}} ");
    frontend_metrics(f)
        .lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .map(|v| v.trim().parse::<f64>() == Ok(1.0))
}

/// A memory-only `carpool cache` with `flags` that announces itself to the
/// cluster `id` through the frontend gossiping on 127.0.0.1:`seed`.
fn announcing(tag: &str, flags: &[&str], seed: u16, id: &str) -> Cache {
    let (listen, seed) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{seed}"),
    );
    let mut args = flags.to_vec();
    args.extend([
        "--cluster-listen",
        &listen,
        "--cluster-seed",
        &seed,
        "--cluster-id",
        id,
    ]);
    Cache::start_with(tag, false, &args)
}

/// The URLs each cache logged after its first `skip` lines, as
/// (url, cache name) pairs; and the caches' line counts now.
fn served_by(caches: &[(&str, &Cache)], skip: &[usize]) -> (Vec<(String, String)>, Vec<usize>) {
    std::thread::sleep(Duration::from_millis(1600)); // the log's hold time
    let mut out = Vec::new();
    let mut counts = Vec::new();
    for ((name, c), skip) in caches.iter().zip(skip) {
        let log = std::fs::read_to_string(c.dir.join("access.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        for l in &lines[*skip..] {
            let url = l.split_whitespace().nth(6).unwrap().to_string();
            out.push((url, name.to_string()));
        }
        counts.push(lines.len());
    }
    (out, counts)
}

/// Sends every URL through `f` and returns which cache served each (in
/// the order of `urls`), and the caches' log line counts after.
fn spread(
    f: &Frontend,
    urls: &[String],
    caches: &[(&str, &Cache)],
    skip: &[usize],
) -> (Vec<String>, Vec<usize>) {
    for u in urls {
        let r = get(f, u);
        assert_eq!(r.status, 200, "{u}: {}\n{}", r.head, f.stderr());
    }
    let (served, counts) = served_by(caches, skip);
    let owners = urls
        .iter()
        .map(|u| {
            let by: Vec<&String> = served
                .iter()
                .filter(|(s, _)| s == u)
                .map(|(_, c)| c)
                .collect();
            assert_eq!(by.len(), 1, "{u} served by {by:?}");
            by[0].clone()
        })
        .collect();
    (owners, counts)
}

/// A cache that joins takes only its share of URLs: every URL that moves
/// moves to it, and the frontend's choices are `carpool route`'s on a
/// config listing the configured parents and then it. When it stops
/// (SIGTERM) it says it is leaving, the frontend takes it out at once, and
/// every URL goes back to the cache it had before.
#[test]
fn a_joining_cache_takes_only_its_share_and_a_leaving_one_gives_back_only_its_share() {
    let o = Origin::start();
    let s0 = Cache::start_with("members-s0", false, &[]);
    let s1 = Cache::start_with("members-s1", false, &[]);
    let gf = free_port();
    let id = format!("members-{gf}");
    let statics = format!(
        "[[parent]]\nname = \"s0\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[parent]]\nname = \"s1\"\nhost = \"127.0.0.1\"\nport = {}\n",
        s0.port, s1.port
    );
    let conf = format!(
        "hash = \"hrw\"\n[cluster]\nlisten = \"127.0.0.1:{gf}\"\ncluster_id = \"{id}\"\n\
         announced_parents = true\n{statics}"
    );
    let f = Frontend::start("members-fe", &conf);
    let urls: Vec<String> = (0..90)
        .map(|i| o.url(&format!("/m{i}?cc=max-age%3D600")))
        .collect();

    // before: the two configured caches, as route says
    let (before, counts) = spread(&f, &urls, &[("s0", &s0), ("s1", &s1)], &[0, 0]);
    assert_eq!(before, route(&conf, &urls));

    // c2 announces itself with weight 2
    let c2 = announcing("members-c2", &["--name", "c2", "--weight", "2"], gf, &id);
    let joined = wait_for(
        Duration::from_secs(10),
        || listed(&f, "c2"),
        || format!("c2 never joined:\n{}\n{}", f.stderr(), c2.stderr()),
    );
    eprintln!("c2 in the frontend's table {joined:?} after its start");
    let with_c2 = format!(
        "{conf}[[parent]]\nname = \"c2\"\nhost = \"127.0.0.1\"\nport = {}\nweight = 2\n",
        c2.port
    );
    let caches = [("s0", &s0), ("s1", &s1), ("c2", &c2)];
    let (after, counts) = spread(&f, &urls, &caches, &[counts[0], counts[1], 0]);
    assert_eq!(
        after,
        route(&with_c2, &urls),
        "the frontend's table is route's"
    );
    let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    for (u, (b, a)) in urls.iter().zip(before.iter().zip(&after)) {
        assert!(a == b || a == "c2", "{u} moved from {b} to {a}, not to c2");
    }
    eprintln!("{moved} of {} URLs moved to c2 (weight 2 of 4)", urls.len());
    assert!(
        moved > urls.len() / 4 && moved < urls.len() * 3 / 4,
        "{moved}"
    );

    // c2 leaves: out of the table before it stops accepting
    let t0 = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &c2.child.id().to_string()])
        .status();
    wait_for(
        Duration::from_secs(5),
        || !listed(&f, "c2"),
        || format!("c2 still listed:\n{}", f.stderr()),
    );
    eprintln!("c2 out of the table {:?} after SIGTERM", t0.elapsed());
    assert!(
        f.stderr().contains("announced cache leaving"),
        "{}",
        f.stderr()
    );
    let (back, _) = spread(&f, &urls, &caches, &counts);
    assert_eq!(back, before, "every URL went back where it was");
}

/// With only announced caches: 503 until one joins; a cache killed
/// without a word is dead at once (503 again, it is the only one) but
/// stays in the table for the grace period, then goes; started again
/// under its name, it is back.
#[test]
fn a_vanished_cache_stays_dead_for_the_grace_period_then_goes() {
    let o = Origin::start();
    let gf = free_port();
    let id = format!("grace-{gf}");
    let conf = format!(
        "[cluster]\nlisten = \"127.0.0.1:{gf}\"\ncluster_id = \"{id}\"\n\
         announced_parents = true\nannounced_grace = 2\n"
    );
    // no [[parent]] is fine with announced_parents, and check says so
    let dir = common::temp_dir("grace-check");
    let file = dir.join("fe.toml");
    std::fs::write(&file, &conf).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("no configured parents (caches announce themselves)"),
        "{said}"
    );

    let f = Frontend::start("grace-fe", &conf);
    let url = o.url("/g?cc=max-age%3D600");
    let r = get(&f, &url);
    assert_eq!(r.status, 503, "{}", r.head);

    let mut c = announcing("grace-c", &["--name", "only"], gf, &id);
    wait_for(
        Duration::from_secs(10),
        || listed(&f, "only"),
        || format!("the cache never joined:\n{}\n{}", f.stderr(), c.stderr()),
    );
    assert_eq!(get(&f, &url).status, 200);

    // gone without a word: dead once the gossip misses it, listed for the
    // grace period, then out
    let _ = c.child.kill();
    let _ = c.child.wait();
    let gone = Instant::now();
    let dead = wait_for(
        Duration::from_secs(10),
        || up(&f, "only") == Some(false),
        || format!("never marked dead:\n{}", f.stderr()),
    );
    eprintln!("dead {dead:?} after SIGKILL");
    assert!(
        f.stderr().contains("announced cache gone from the cluster"),
        "{}",
        f.stderr()
    );
    assert_eq!(get(&f, &url).status, 503);
    assert!(listed(&f, "only"), "out before the grace period");
    wait_for(
        Duration::from_secs(10),
        || !listed(&f, "only"),
        || format!("never taken out:\n{}", f.stderr()),
    );
    // (seen within a poll of it happening; the grace runs from the
    // gossip's missing it, after the kill)
    let out = gone.elapsed();
    eprintln!("out of the table {out:?} after SIGKILL (grace 2 s)");
    assert!(out >= Duration::from_secs(2), "{out:?}");

    // the same name again: back in the table, alive
    c.respawn();
    wait_for(
        Duration::from_secs(10),
        || up(&f, "only") == Some(true),
        || format!("not back:\n{}\n{}", f.stderr(), c.stderr()),
    );
    assert_eq!(get(&f, &url).status, 200);
}

/// A cache's cluster flags are checked: --weight and --cluster-seed need
/// --cluster-listen; --name without -c needs it too.
#[test]
fn cache_cluster_flags_are_checked() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
            .arg("cache")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&["--weight", "2"]);
    assert!(e.contains("--cluster-listen"), "{e}");
    let e = run(&["--cluster-seed", "127.0.0.1:7946"]);
    assert!(e.contains("--cluster-listen"), "{e}");
    let e = run(&["--name", "c9"]);
    assert!(e.contains("give --cluster-listen"), "{e}");
}
