//! `carpool up`: the real binary supervising real frontend and cache
//! processes, in front of a real origin on loopback.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::up::{config, Up};
use common::{free_port, read_response, route, temp_dir};

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn wait_gone(pids: &[(String, u32)]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|(_, p)| alive(*p)) {
        assert!(Instant::now() < deadline, "children left behind: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_serves_through_its_caches_and_ctrl_c_stops_every_child() {
    let o = Origin::start();
    let mut up = Up::start("up-basic");
    let pids = up.pids();
    assert_eq!(pids.len(), 4, "{}", up.status());
    for i in 0..10 {
        let url = o.url(&format!("/u{i}?cc=max-age%3D60"));
        let r = up.get(&url);
        assert_eq!(r.status, 200, "{}\n{}", r.head, up.log());
        assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));
        assert_eq!(up.get(&url).header("x-cache").as_deref(), Some("HIT"));
    }
    up.signal("-INT");
    let status = up.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", up.log());
    wait_gone(&pids);
}

#[test]
fn killing_the_supervisor_leaves_no_orphans() {
    let mut up = Up::start("up-orphans");
    let pids = up.pids();
    assert_eq!(pids.len(), 4);
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    wait_gone(&pids);
}

#[test]
fn a_crashed_cache_is_restarted_and_its_urls_fail_over_meanwhile() {
    let o = Origin::start();
    let up = Up::start("up-crash");
    let before = up.pids();
    let (name, pid) = before.iter().find(|(n, _)| n == "c1").cloned().unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    // requests keep being answered while it is down
    for i in 0..30 {
        let r = up.get(&o.url(&format!("/x{i}?cc=max-age%3D60")));
        assert_eq!(r.status, 200, "{}\n{}", r.head, up.log());
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = up.pids();
        if let Some((_, p)) = now.iter().find(|(n, _)| *n == name) {
            if *p != pid {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} not restarted: {}",
            up.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = common::admin_status(up.admin).unwrap();
    let process = status["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in {status:#}"));
    assert_eq!(process["restarts"], 1, "{status:#}");
    assert_eq!(process["state"], "running", "{status:#}");
    let log = up.log();
    assert!(log.contains("component exited; restarting"), "{log}");
    assert!(log.contains("component restarted"), "{log}");
}

#[test]
fn reload_under_load_drops_nothing_and_a_bad_config_is_rejected() {
    let o = Origin::start();
    let up = Up::start("up-reload");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load: Vec<_> = (0..4)
        .map(|t| {
            let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
            let url = o.url(&format!("/load{t}?cc=max-age%3D60"));
            let port = up.fe;
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && n < 200_000 {
                    n += 1;
                    // a new connection per request: refused connects would show
                    let r = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(20)))?;
                        write!(
                            s,
                            "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                        )?;
                        read_response(&mut BufReader::new(s), false)
                    });
                    match r {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => failures.lock().unwrap().push(r.head),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let old_fe = up
        .pids()
        .into_iter()
        .find(|(n, _)| n == "frontend")
        .unwrap()
        .1;
    // a good new config: the frontend changes (x_forwarded_for)
    let text = std::fs::read_to_string(&up.conf).unwrap();
    let new_text = text.replace(
        "workers = 2\n",
        "workers = 2\nx_forwarded_for = \"delete\"\n",
    );
    assert_ne!(text, new_text);
    std::fs::write(&up.conf, &new_text).unwrap();
    up.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !up.log().contains("reload done") {
        assert!(Instant::now() < deadline, "{}", up.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let new_fe = up
        .pids()
        .into_iter()
        .find(|(n, _)| n == "frontend")
        .unwrap()
        .1;
    assert_ne!(old_fe, new_fe, "the frontend was replaced");
    // a bad one: rejected, the array keeps serving
    std::fs::write(&up.conf, "hash = \"nope\"\n").unwrap();
    up.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !up.log().contains("reload rejected") {
        assert!(Instant::now() < deadline, "{}", up.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the reloads: {:?}",
        failures.len(),
        ok.load(Ordering::SeqCst) + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::SeqCst) > 100);
    let log = up.log();
    assert!(
        log.contains("carpool.toml:1"),
        "the error names the file and line: {log}"
    );
    assert_eq!(up.pids().len(), 4);
    // the X-Forwarded-For change is in force
    let r = up.get(&o.url("/xff?cc=no-store"));
    assert_eq!(r.status, 200);
    let head = o.last_head("/xff").unwrap();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("x-forwarded-for: 127.0.0.1, "),
        "{head}"
    );
}

#[test]
fn config_default_prints_a_config_that_check_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[[parent]]") && text.contains("# "), "{text}");
    let dir = temp_dir("config-default");
    let f = dir.join("default.toml");
    std::fs::write(&f, &text).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["check", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("4 parents"));
    // a broken copy names the file, line and key
    std::fs::write(&f, text.replace("port = 4002", "port = 99999")).unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["check", "-c"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("default.toml:") && err.contains("port"),
        "{err}"
    );
}

/// The issue's own check: wrk (keep-alive connections) running across two
/// reloads sees zero socket errors and zero non-2xx answers.
#[test]
fn wrk_across_reloads_sees_no_errors() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("SKIP: wrk_across_reloads_sees_no_errors: wrk is not installed (scripts/test installs it)");
        return;
    }
    let o = Origin::start();
    let up = Up::start("up-wrk");
    let url = o.url("/wrk?cc=max-age%3D600");
    assert_eq!(up.get(&url).status, 200);
    let script = up.dir.join("proxy.lua");
    std::fs::write(
        &script,
        format!("wrk.method = \"GET\"\nwrk.path = \"{url}\"\nwrk.headers[\"Host\"] = \"x\"\n"),
    )
    .unwrap();
    let wrk = Command::new("wrk")
        .args(["-t2", "-c20", "-d5s", "--timeout", "5s", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}/", up.fe))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read_to_string(&up.conf).unwrap();
    for (i, pause) in [1200u64, 1600].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(pause));
        let marker = "reload done";
        let before = up.log().matches(marker).count();
        std::fs::write(
            &up.conf,
            text.replace(
                "workers = 2\n",
                &format!("workers = 2\nvisible_hostname = \"fe{i}\"\n"),
            ),
        )
        .unwrap();
        up.signal("-HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while up.log().matches(marker).count() == before {
            assert!(Instant::now() < deadline, "{}", up.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 1000, "{report}");
    assert!(
        !report.contains("Socket errors"),
        "socket errors across reloads:\n{report}"
    );
    assert!(
        !report.contains("Non-2xx"),
        "non-2xx answers across reloads:\n{report}"
    );
}

/// SIGUSR1 to `carpool up` (what `squid -k rotate` and a logrotate
/// postrotate send) reopens every component's logs and stops nothing; it
/// used to kill the whole array without a word.
#[test]
fn sigusr1_to_up_reopens_the_logs_and_stops_nothing() {
    let o = Origin::start();
    let up = Up::start_with("up-usr1", |dir| {
        format!("access_log = \"{}\"\n", dir.join("fe.log").display())
    });
    let log = up.dir.join("fe.log");
    let wait_for = |path: &std::path::Path, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(path).map_or(true, |t| !t.contains(what)) {
            assert!(
                Instant::now() < deadline,
                "{what} not in {}: {}",
                path.display(),
                up.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(up.get(&o.url("/before?cc=max-age%3D60")).status, 200);
    wait_for(&log, "/before");
    let pids = up.pids();
    std::fs::rename(&log, up.dir.join("fe.log.1")).unwrap();
    up.signal("-USR1");
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(up.child.id()), "the supervisor died: {}", up.log());
    assert_eq!(
        up.pids(),
        pids,
        "every component still runs, none restarted"
    );
    assert_eq!(up.get(&o.url("/after?cc=max-age%3D60")).status, 200);
    wait_for(&log, "/after");
    let old = std::fs::read_to_string(up.dir.join("fe.log.1")).unwrap();
    assert!(!old.contains("/after"), "{old}");
    assert!(up.log().contains("SIGUSR1"), "{}", up.log());
}

/// A second array on the frontend port of a running one does not start
/// (it used to share the port through SO_REUSEPORT and split the clients).
#[test]
fn a_second_array_on_the_same_port_is_refused() {
    let up = Up::start("up-held");
    let dir = temp_dir("up-held-2");
    let caches: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let conf = dir.join("carpool.toml");
    std::fs::write(&conf, config(up.fe, free_port(), &caches, "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["up", "-c"])
        .arg(&conf)
        .arg("--data")
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = out;
    let status = loop {
        if let Some(s) = out.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = out.kill();
            let _ = out.wait();
            panic!("a second array started on {}", up.fe);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut out.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(up.pids().len(), 4, "the running array is untouched");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload restarts only the components whose settings changed, and says
/// which keys changed. `auto` sizes are resolved once: every SIGHUP used to
/// restart every cache (emptying their memory) because the free memory had
/// moved, and replaced the frontend even when nothing had changed.
#[test]
fn a_reload_restarts_only_what_changed_and_says_why() {
    let o = Origin::start();
    let up = Up::start_edited(
        "up-changed",
        |_| String::new(),
        |t| {
            t.replace("mem = \"16M\"", "mem = \"auto\"")
                .replace("disk = \"64M\"", "disk = \"auto\"")
        },
    );
    assert_eq!(up.get(&o.url("/a?cc=max-age%3D60")).status, 200);
    let before = up.pids();
    let text = std::fs::read_to_string(&up.conf).unwrap();
    std::fs::write(&up.conf, format!("{text}# edited, nothing changed\n")).unwrap();
    up.signal("-HUP");
    up.wait_for_log("reload done", 1);
    assert_eq!(up.pids(), before, "nothing restarted: {}", up.log());
    assert!(up.log().contains("restarted=-"), "{}", up.log());

    // one cache's own memory size: that cache restarts, and only it
    let text = std::fs::read_to_string(&up.conf).unwrap();
    let edited = text.replace("name = \"c1\"\n", "name = \"c1\"\nmem = \"32M\"\n");
    assert_ne!(text, edited);
    std::fs::write(&up.conf, edited).unwrap();
    up.signal("-HUP");
    up.wait_for_log("reload done", 2);
    let after = up.pids();
    for (name, pid) in &before {
        let now = after.iter().find(|(n, _)| n == name).map(|p| p.1);
        if name == "c1" {
            assert!(now.is_some_and(|p| p != *pid), "c1 restarted: {after:?}");
        } else {
            assert_eq!(now, Some(*pid), "{name} kept running: {}", up.log());
        }
    }
    let log = up.log();
    assert!(
        log.lines()
            .any(|l| l.contains("restarting for the new config")
                && l.contains("component=c1")
                && l.contains("changed=mem")),
        "{log}"
    );
    assert!(log.contains("restarted=c1 (mem)"), "{log}");
    assert_eq!(up.get(&o.url("/b?cc=max-age%3D60")).status, 200);
}

/// A reload applies all or nothing. A new cache whose port is held by
/// another server used to be logged and skipped, followed by "reload done",
/// and the new frontend then sent that cache's share of the URLs to the
/// other server. Now the reload is rejected and nothing changes; and when
/// the new frontend cannot start after the caches were restarted, the
/// caches go back to the old config.
#[test]
fn a_reload_that_cannot_start_everything_changes_nothing() {
    let o = Origin::start();
    let up = Up::start("up-atomic");
    let original = std::fs::read_to_string(&up.conf).unwrap();
    let snapshot = up.dir.join("data").join("carpool.running.toml");
    let before = up.pids();

    // 1. a new cache on a port someone else holds
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    squatter.set_nonblocking(true).unwrap();
    let held = squatter.local_addr().unwrap().port();
    let added = format!(
        "{}[[parent]]\nname = \"c3\"\nhost = \"127.0.0.1\"\nport = {held}\n",
        original.replace(
            "workers = 2\n",
            "workers = 2\nx_forwarded_for = \"delete\"\n"
        )
    );
    std::fs::write(&up.conf, added).unwrap();
    up.signal("-HUP");
    up.wait_for_log("reload rejected", 1);
    assert!(up.log().contains("already in use"), "{}", up.log());
    assert!(!up.log().contains("reload done"), "{}", up.log());
    assert_eq!(up.pids(), before, "nothing restarted");
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), original);
    for i in 0..40 {
        let r = up.get(&o.url(&format!("/spread{i}?cc=max-age%3D60")));
        assert_eq!(r.status, 200);
    }
    assert!(
        squatter.accept().is_err(),
        "the old frontend still routes to the old caches only"
    );

    // 2. every cache restarts (a [cache] key), then the frontend fails
    // (its access log is a directory)
    let broken = original.replace("mem = \"16M\"", "mem = \"24M\"").replace(
        "workers = 2\n",
        &format!("workers = 2\naccess_log = \"{}\"\n", up.dir.display()),
    );
    std::fs::write(&up.conf, broken).unwrap();
    up.signal("-HUP");
    up.wait_for_log("reload rejected", 2);
    let log = up.log();
    assert!(
        log.contains("frontend exited before accepting connections (exit status: 1"),
        "{log}"
    );
    assert!(log.contains("cannot open the access log"), "{log}");
    let after = up.pids();
    assert_eq!(after.len(), 4, "{after:?}");
    assert_eq!(
        up.pid_of("frontend"),
        before[3].1,
        "the frontend never stopped"
    );
    assert_eq!(std::fs::read_to_string(&snapshot).unwrap(), original);
    assert_eq!(up.get(&o.url("/after?cc=max-age%3D60")).status, 200);

    // 3. a good reload after both still works
    std::fs::write(&up.conf, original.replace("mem = \"16M\"", "mem = \"24M\"")).unwrap();
    up.signal("-HUP");
    up.wait_for_log("reload done", 1);
    assert_eq!(up.pids().len(), 4);
    assert_eq!(up.get(&o.url("/good?cc=max-age%3D60")).status, 200);
}

/// Access logs are on by default, one file per component in DATA/logs
/// (each cache's lines in its own file), Squid's native format, and each
/// file in time order although two frontend workers and requests of very
/// different lengths finish in another order than they started.
#[test]
fn access_logs_are_on_by_default_one_per_component_in_time_order() {
    let o = Origin::start();
    let up = Up::start("up-logs");
    let logs = up.dir.join("data").join("logs");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (port, origin) = (up.fe, o.port);
            std::thread::spawn(move || {
                for i in 0..15 {
                    // some slow (250 ms), most fast: they finish out of start order
                    let delay = if (i + t) % 5 == 0 { "&delay=250" } else { "" };
                    let url = format!("http://127.0.0.1:{origin}/t{t}-{i}?cc=max-age%3D60{delay}");
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    write!(
                        s,
                        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap();
                    let r = read_response(&mut BufReader::new(s), false).unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while read("frontend.log").lines().count() < 60 {
        assert!(
            Instant::now() < deadline,
            "frontend.log: {}",
            read("frontend.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut cache_lines = 0;
    for name in ["frontend.log", "c0.log", "c1.log", "c2.log"] {
        let text = read(name);
        let times: Vec<f64> = text
            .lines()
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{name} is not in time order:\n{text}"
        );
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 10, "Squid's native format: {line}");
            if name == "frontend.log" {
                assert_eq!(fields[8], "CARP/127.0.0.1", "{line}");
            } else {
                assert!(fields[3] == "TCP_MISS/200", "{line}");
                assert!(fields[8].starts_with("HIER_DIRECT/"), "{line}");
                cache_lines += 1;
            }
        }
    }
    assert_eq!(read("frontend.log").lines().count(), 60);
    assert_eq!(cache_lines, 60, "each request in one cache's log");
}

/// A WebSocket handshake (`Upgrade: websocket`, `Connection: Upgrade`)
/// passes through the frontend and a cache to the origin, whose `101`
/// turns both hops into a tunnel: bytes go both ways. The request layer
/// used to drop `Upgrade` as hop-by-hop, so no WebSocket could pass.
#[test]
fn a_websocket_handshake_passes_and_becomes_a_tunnel() {
    use std::io::{BufRead, Read};
    let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = origin.local_addr().unwrap().port();
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in origin.incoming().take(8) {
            let Ok(conn) = conn else { continue };
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let lower = head.to_ascii_lowercase();
                seen.lock().unwrap().push(head);
                let mut w = conn;
                if lower.contains("upgrade: websocket") && lower.contains("connection: upgrade") {
                    w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                        .unwrap();
                    // echo until the client goes
                    let mut buf = [0u8; 1024];
                    loop {
                        match r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if w.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                } else {
                    let _ = w.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            });
        }
    });
    let up = Up::start("up-websocket");
    for path in ["/chat", "/other-room"] {
        let mut s = TcpStream::connect(("127.0.0.1", up.fe)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(
            status.starts_with("HTTP/1.1 101"),
            "{status} (origin saw: {:?})",
            heads.lock().unwrap()
        );
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        for msg in ["hello through two proxies", "and back again"] {
            s.write_all(msg.as_bytes()).unwrap();
            let mut got = vec![0u8; msg.len()];
            r.read_exact(&mut got).unwrap();
            assert_eq!(got, msg.as_bytes());
        }
    }
    let heads = heads.lock().unwrap();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for h in heads.iter() {
        assert!(
            h.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
            "{h}"
        );
    }
}

/// The value of the sample `name{labels}` (labels as printed, in order).
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{text}"))
}

/// Issue 16: known traffic through a real `carpool up`, then its admin
/// `/metrics`: each request counted once under the parent `carpool route`
/// says owns it, hits and misses per cache exactly what was sent, a dead
/// parent's failures and state, the scrapes themselves not counted; and
/// the text passes `promtool check metrics` (Debian's `prometheus`).
#[test]
fn metrics_count_exactly_what_was_sent_per_parent_and_cache() {
    let o = Origin::start();
    let up = Up::start("up-metrics");
    let urls: Vec<String> = (0..30)
        .map(|i| o.url(&format!("/m{i}?cc=max-age%3D600")))
        .collect();
    let conf = std::fs::read_to_string(&up.conf).unwrap();
    let owners = route(&conf, &urls);
    for round in 0..2 {
        for u in &urls {
            let r = up.get(u);
            assert_eq!(r.status, 200, "round {round} {u}: {}", r.head);
        }
    }
    // a scrape in between must not count
    let _ = up.admin_get("/metrics");
    common::admin_status_after(up.admin, 2 * urls.len() as u64);
    let text = up.admin_get("/metrics");
    for c in ["c0", "c1", "c2"] {
        let owned = owners.iter().filter(|o| *o == c).count() as f64;
        let fe = format!("carpool_frontend_requests_total{{component=\"frontend\",parent=\"{c}\",status=\"200\"}}");
        if owned > 0.0 {
            assert_eq!(sample(&text, &fe), 2.0 * owned, "{c}\n{text}");
        }
        let misses = format!("carpool_cache_requests_total{{component=\"{c}\",cache=\"{c}\",result=\"miss\",tier=\"\"}}");
        let hits = format!("carpool_cache_requests_total{{component=\"{c}\",cache=\"{c}\",result=\"hit\",tier=\"memory\"}}");
        assert_eq!(sample(&text, &misses), owned, "{c}\n{text}");
        if owned > 0.0 {
            assert_eq!(sample(&text, &hits), owned, "{c}\n{text}");
        }
        assert_eq!(
            sample(&text, &format!("carpool_component_up{{component=\"{c}\"}}")),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                &format!("carpool_frontend_parent_up{{component=\"frontend\",parent=\"{c}\"}}")
            ),
            1.0
        );
        let first_byte = format!("carpool_frontend_parent_first_byte_seconds_count{{component=\"frontend\",parent=\"{c}\"}}");
        assert_eq!(sample(&text, &first_byte), 2.0 * owned, "{text}");
    }
    assert_eq!(
        sample(
            &text,
            "carpool_cache_objects{component=\"c0\",cache=\"c0\",tier=\"memory\"}"
        ) + sample(
            &text,
            "carpool_cache_objects{component=\"c1\",cache=\"c1\",tier=\"memory\"}"
        ) + sample(
            &text,
            "carpool_cache_objects{component=\"c2\",cache=\"c2\",tier=\"memory\"}"
        ),
        urls.len() as f64
    );
    // one # TYPE per family, whatever the number of components
    assert_eq!(
        text.matches("# TYPE process_cpu_seconds_total counter")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("process_cpu_seconds_total{").count(),
        4,
        "{text}"
    );
    promtool_check(&text);
}

/// `promtool check metrics` on `text` (Debian's `prometheus` package,
/// installed by scripts/test); says why when it cannot run.
fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIP: promtool check metrics: promtool is not installed (scripts/test installs Debian's prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 16: `/status` of a real `carpool up` after known traffic: every
/// member with its address, weight, expected share (about a third each),
/// requests and actual share exactly as `carpool route` assigns the URLs,
/// latency quantiles; every cache with its requests, hit ratio (the second
/// round hits) and objects; every process with its pid. `carpool status`
/// prints the same numbers, found through `--admin` or the config, and
/// `--watch` redraws.
#[test]
fn status_shows_each_members_expected_and_actual_share_and_carpool_status_prints_it() {
    let o = Origin::start();
    let up = Up::start("up-status");
    let urls: Vec<String> = (0..30)
        .map(|i| o.url(&format!("/s{i}?cc=max-age%3D600")))
        .collect();
    let conf = std::fs::read_to_string(&up.conf).unwrap();
    let owners = route(&conf, &urls);
    for _ in 0..2 {
        for u in &urls {
            assert_eq!(up.get(u).status, 200);
        }
    }
    let s = common::admin_status_after(up.admin, 60);
    let text = format!("{s:#}");
    assert_eq!(s["hash"], "hrw", "{text}");
    let members = s["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2"], "{text}");
    let conf_ports: Vec<String> = conf
        .lines()
        .filter_map(|l| l.strip_prefix("port = "))
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    for (i, m) in members.iter().enumerate() {
        let name = names[i];
        let owned = owners.iter().filter(|o| *o == name).count() as u64;
        assert_eq!(m["address"], conf_ports[i].as_str(), "{text}");
        assert_eq!(m["weight"], 1.0, "{text}");
        assert_eq!(m["alive"], true, "{text}");
        assert_eq!(m["requests"], 2 * owned, "{name}: {text}");
        let actual = m["actual_share"].as_f64().unwrap();
        assert!(
            (actual - owned as f64 / 30.0).abs() < 1e-9,
            "{name}: {text}"
        );
        let expected = m["expected_share"].as_f64().unwrap();
        assert!((expected - 1.0 / 3.0).abs() < 0.02, "{name}: {text}");
        if owned > 0 {
            assert!(m["p50_seconds"].as_f64().unwrap() > 0.0, "{text}");
            assert!(m["p99_seconds"].as_f64().unwrap() >= m["p50_seconds"].as_f64().unwrap());
        }
        let cache = s["caches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cache {name}: {text}"));
        assert_eq!(cache["requests"], 2 * owned, "{text}");
        assert_eq!(cache["objects"], owned, "{text}");
        if owned > 0 {
            assert_eq!(cache["hit_ratio"], 0.5, "{text}");
        }
        let tiers: Vec<(&str, u64)> = cache["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap(),
                    t["capacity_bytes"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(tiers, [("memory", 16 << 20), ("disk", 64 << 20)], "{text}");
    }
    let pids = up.pids();
    assert_eq!(pids.len(), 4, "{text}");
    for p in s["processes"].as_array().unwrap() {
        assert!(p["uptime_seconds"].as_f64().unwrap() > 0.0, "{text}");
        assert_eq!(p["restarts"], 0, "{text}");
    }
    assert!(s["requests_per_second"].as_f64().unwrap() > 0.0, "{text}");

    // carpool status: the same numbers as a table, by --admin or -c
    let admin = format!("127.0.0.1:{}", up.admin);
    for args in [
        vec!["status", "--admin", &admin],
        vec!["status", "-c", up.conf.to_str().unwrap()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
            .args(&args)
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{table}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            table.starts_with("carpool array: hash hrw, 3 members, 3 caches, 1 frontend;"),
            "{table}"
        );
        for (name, port) in names.iter().zip(&conf_ports) {
            let owned = owners.iter().filter(|o| o == name).count() as f64;
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")) && l.contains(port.as_str()))
                .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
            let actual = format!("{:.1}%", owned / 30.0 * 100.0);
            assert!(
                row.contains(&actual) && row.contains(" alive "),
                "{row}\n{table}"
            );
        }
        for (name, pid) in &pids {
            assert!(
                table
                    .lines()
                    .any(|l| l.starts_with(&format!("{name} ")) && l.contains(&format!(" {pid} "))),
                "{name} {pid}:\n{table}"
            );
        }
    }
    let json = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["status", "--json", "--admin", &admin])
        .output()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["members"].as_array().unwrap().len(), 3);

    // --watch redraws until stopped
    let mut watch = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["status", "--watch", "--interval", "1", "--admin", &admin])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(BufReader::new(watch.stdout.take().unwrap()));
    let mut frames = 0;
    while frames < 2 {
        let line = lines.next().expect("watch ended").unwrap();
        if line.starts_with("carpool array: ") {
            frames += 1;
        }
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
}

/// `carpool status` with no array to ask: exit status 1 and why.
#[test]
fn carpool_status_says_when_no_array_answers() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["status", "--admin", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the admin listener at 127.0.0.1:{port}"
        )) && err.contains("is `carpool up` running?"),
        "{err}"
    );
}

/// Issue 16: a hung cache (SIGSTOP) is shown dead in `/status` from the
/// moment the frontend gave up on it, with the failure counted; alive
/// again, with a later `since`, once it answers a probe after SIGCONT.
#[test]
fn status_shows_a_hung_member_dead_since_then_alive_again() {
    let o = Origin::start();
    let up = Up::start_edited(
        "up-status-dead",
        |_| "parent_first_byte_timeout = 1\n".to_string(),
        // an HTTP probe: a stopped process still completes TCP connects
        // (the kernel's backlog), so only a request shows it hung
        |text| {
            text + &format!(
                "[health]\nfail_limit = 1\nprobe_interval = 1\nprobe = \"http\"\nprobe_url = \"{}\"\n",
                o.url("/probe")
            )
        },
    );
    let conf = std::fs::read_to_string(&up.conf).unwrap();
    let urls: Vec<String> = (0..20).map(|i| o.url(&format!("/d{i}"))).collect();
    let owners = route(&conf, &urls);
    let url = &urls[owners.iter().position(|o| o == "c1").expect("a URL of c1")];
    let pid = up.pid_of("c1");
    let member = |s: &serde_json::Value| {
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "c1")
            .cloned()
            .unwrap_or_else(|| panic!("no c1 in {s:#}"))
    };
    let before = member(&common::admin_status(up.admin).unwrap());
    assert_eq!(before["alive"], true, "{before:#}");
    let stopped = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let resume = common::Stopped::stop(pid);
    // its URL waits the first-byte timeout, then goes to the next cache
    let r = up.get(url);
    assert_eq!(r.status, 200, "{}", r.head);
    // dead from then on: its probes time out while it is stopped
    let dead = member(&common::admin_status(up.admin).unwrap());
    drop(resume);
    assert_eq!(dead["alive"], false, "{dead:#}");
    assert!(dead["since"].as_f64().unwrap() >= stopped - 0.5, "{dead:#}");
    assert_eq!(dead["failures"], 1, "{dead:#}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = member(&common::admin_status(up.admin).unwrap());
        if m["alive"] == true && m["since"].as_f64().unwrap() > stopped {
            break;
        }
        assert!(Instant::now() < deadline, "not alive again: {m:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
