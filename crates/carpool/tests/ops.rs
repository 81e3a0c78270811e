//! Running the array as an administrator does: `carpool reload|rotate|stop`
//! on a running `carpool up`, the commands of the systemd unit in
//! contrib/systemd, and the logrotate snippet in contrib/logrotate, all
//! against real processes (the installed paths of the unit and the snippet
//! replaced by a test directory's).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::{free_port, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_carpool");
const UNIT: &str = include_str!("../../../contrib/systemd/carpool.service");
const LOGROTATE: &str = include_str!("../../../contrib/logrotate/carpool");

/// A test installation: the directories the unit and the snippet name
/// (/etc/carpool, /var/cache/carpool, /var/log/carpool, /run/carpool), made
/// under a test directory, and a config of three caches.
struct Site {
    dir: PathBuf,
    conf: PathBuf,
    fe: u16,
    admin: u16,
}

impl Site {
    fn new(tag: &str) -> Site {
        let dir = temp_dir(tag);
        for d in ["etc", "cache", "log", "run"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let (fe, admin) = (free_port(), free_port());
        let mut text = format!(
            "hash = \"hrw\"\n[frontend]\nlisten = \"127.0.0.1:{fe}\"\nworkers = 2\n[cache]\nworkers = 1\nmem = \"16M\"\ndisk = \"64M\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
        );
        for i in 0..3 {
            let port = free_port();
            text.push_str(&format!(
                "[[parent]]\nname = \"c{i}\"\nhost = \"127.0.0.1\"\nport = {port}\n"
            ));
        }
        let conf = dir.join("etc/carpool.toml");
        std::fs::write(&conf, text).unwrap();
        Site {
            dir,
            conf,
            fe,
            admin,
        }
    }

    /// `text` with the installed paths replaced by this site's.
    fn local(&self, text: &str) -> String {
        let d = self.dir.display();
        text.replace("/usr/local/bin/carpool", BIN)
            .replace(
                "/etc/carpool/carpool.toml",
                &self.conf.display().to_string(),
            )
            .replace("/var/cache/carpool", &format!("{d}/cache"))
            .replace("/var/log/carpool", &format!("{d}/log"))
            .replace("/run/carpool", &format!("{d}/run"))
    }

    /// The unit's `key=` command line, for this site.
    fn unit_command(&self, key: &str) -> Vec<String> {
        let line = UNIT
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"));
        self.local(line)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("run/carpool.pid")
    }

    fn get(&self, url: &str) -> common::Response {
        common::proxy_get(self.fe, url)
    }

    /// Pids of the running components, from the admin listener.
    fn pids(&self) -> Vec<u32> {
        common::admin_pids(self.admin)
            .into_iter()
            .map(|(_, pid)| pid)
            .collect()
    }

    /// Runs `argv` (the carpool binary and its arguments) to completion.
    fn run(&self, argv: &[String]) -> Output {
        Command::new(&argv[0]).args(&argv[1..]).output().unwrap()
    }

    /// Starts `argv` (a `carpool up` command line) and waits until the
    /// array serves.
    fn start(&self, argv: &[String]) -> Up {
        let err = std::fs::File::create(self.dir.join("up.err")).unwrap();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pids().len() < 4 {
            assert!(
                Instant::now() < deadline,
                "up did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Up(child)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("up.err")).unwrap_or_default()
    }
}

/// A running `carpool up`: stopped (SIGTERM) and reaped when dropped, if
/// the test did not do it.
struct Up(Child);

impl Up {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.pid_file()) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn wait_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|&p| alive(p)) {
        assert!(Instant::now() < deadline, "left running: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    std::iter::once(BIN)
        .chain(list.iter().copied())
        .map(str::to_string)
        .collect()
}

/// Whether `program` can run; if not, says why the test skips.
fn have(program: &str, test: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        println!("SKIP: {test}: {program} is not installed (scripts/test installs it)");
    }
    ok
}

/// `carpool reload`, `rotate` and `stop` find a running `carpool up` by
/// the pid file in its data directory, like `squid -k`; reload waits for
/// the outcome and fails when the new config is rejected.
#[test]
fn reload_rotate_and_stop_a_running_array() {
    let o = Origin::start();
    let site = Site::new("ops-control");
    let data = site.dir.join("cache").display().to_string();
    let conf = site.conf.display().to_string();
    let up = site.start(&args(&["up", "-c", &conf, "--data", &data]));
    let pid_file = site.dir.join("cache/carpool.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        up.id().to_string()
    );
    assert_eq!(site.get(&o.url("/a?cc=max-age%3D60")).status, 200);

    // a second array on the same data directory is refused by its pid file
    let second = site.run(&args(&["up", "-c", &conf, "--data", &data]));
    assert_eq!(second.status.code(), Some(1));
    assert!(
        text(&second.stderr).contains(&format!("already running as pid {}", up.id())),
        "{}",
        text(&second.stderr)
    );

    // reload: a good change, then a bad file
    let good = std::fs::read_to_string(&site.conf).unwrap().replace(
        "workers = 2\n",
        "workers = 2\nx_forwarded_for = \"delete\"\n",
    );
    std::fs::write(&site.conf, &good).unwrap();
    let out = site.run(&args(&["reload", "--data", &data]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("reload done: restarted=frontend (frontend.server.x_forwarded_for)"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(&site.conf, "hash = \"nope\"\n").unwrap();
    let out = site.run(&args(&["reload", "-c", &conf, "--data", &data]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("reload rejected"), "{err}");
    assert!(err.contains("carpool.toml:1: `hash`"), "{err}");
    assert_eq!(site.get(&o.url("/b?cc=max-age%3D60")).status, 200);

    // rotate
    let out = site.run(&args(&["rotate", "--data", &data]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !site.log().contains("SIGUSR1") {
        assert!(Instant::now() < deadline, "{}", site.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // stop: waits until every process has gone; then nothing to stop
    let pids = site.pids();
    let out = site.run(&args(&["stop", "--data", &data]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("stopped"));
    assert!(!alive(up.id()));
    wait_gone(&pids);
    assert!(!pid_file.exists(), "the pid file goes with it");
    let out = site.run(&args(&["stop", "--data", &data]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read the pid file"),
        "{}",
        text(&out.stderr)
    );
}

/// The systemd unit in contrib/ passes `systemd-analyze verify`, and its
/// commands (with the test's paths) run the array: ExecStartPre checks the
/// config, ExecStart serves, ExecReload applies a change and fails on a
/// bad file, and SIGTERM to the main process alone (KillMode=mixed) stops
/// every component.
#[test]
fn the_systemd_unit_verifies_and_its_commands_run_the_array() {
    let test = "the_systemd_unit_verifies_and_its_commands_run_the_array";
    if !have("systemd-analyze", test) {
        return;
    }
    let o = Origin::start();
    let site = Site::new("ops-systemd");
    let unit = site.dir.join("carpool.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/carpool", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let complaints: Vec<String> = text(&out.stderr)
        .lines()
        .filter(|l| l.contains("carpool.service"))
        .map(str::to_string)
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {}",
        text(&out.stderr)
    );

    let pre = site.run(&site.unit_command("ExecStartPre"));
    assert!(pre.status.success(), "{}", text(&pre.stderr));
    let mut up = site.start(&site.unit_command("ExecStart"));
    assert_eq!(site.get(&o.url("/unit?cc=max-age%3D60")).status, 200);
    assert!(
        site.dir.join("log/frontend.log").exists(),
        "access logs in the log directory"
    );

    let changed = std::fs::read_to_string(&site.conf)
        .unwrap()
        .replace("name = \"c1\"\n", "name = \"c1\"\nmem = \"24M\"\n");
    std::fs::write(&site.conf, changed).unwrap();
    let reload = site.run(&site.unit_command("ExecReload"));
    assert!(reload.status.success(), "{}", text(&reload.stderr));
    assert!(text(&reload.stdout).contains("restarted=c1 (mem)"));
    std::fs::write(&site.conf, "[[parent]]\n").unwrap();
    let reload = site.run(&site.unit_command("ExecReload"));
    assert_eq!(reload.status.code(), Some(1), "systemctl reload fails");

    let pids = site.pids();
    assert_eq!(pids.len(), 4);
    Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "{status}: {}", site.log());
    wait_gone(&pids);
}

/// The logrotate snippet in contrib/ rotates the logs of a running array:
/// the old lines stay in frontend.log.1, new ones go to a new frontend.log,
/// and no component restarts.
#[test]
fn the_logrotate_snippet_rotates_a_running_arrays_logs() {
    let test = "the_logrotate_snippet_rotates_a_running_arrays_logs";
    if !have("logrotate", test) {
        return;
    }
    let o = Origin::start();
    let site = Site::new("ops-logrotate");
    let _up = site.start(&site.unit_command("ExecStart"));
    let log = site.dir.join("log/frontend.log");
    let wait_for = |path: &Path, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(path).map_or(true, |t| !t.contains(what)) {
            assert!(
                Instant::now() < deadline,
                "{what} not in {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(site.get(&o.url("/before?cc=max-age%3D60")).status, 200);
    wait_for(&log, "/before");
    let pids = site.pids();

    let conf = site.dir.join("logrotate.conf");
    std::fs::write(&conf, site.local(LOGROTATE)).unwrap();
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(site.dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logrotate: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let rotated = site.dir.join("log/frontend.log.1");
    assert!(
        std::fs::read_to_string(&rotated)
            .unwrap()
            .contains("/before"),
        "delaycompress: the newest old file stays plain"
    );

    assert_eq!(site.get(&o.url("/after?cc=max-age%3D60")).status, 200);
    wait_for(&log, "/after");
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("/after"));
    assert_eq!(site.pids(), pids, "no component restarted");
}
