//! A real `carpool up` for tests: three caches and a frontend on free
//! loopback ports, its admin listener, killed (with its children, which
//! die with it) when dropped.
#![allow(dead_code)]

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, read_response, temp_dir};

/// A running `carpool up`.
pub struct Up {
    pub child: Child,
    pub fe: u16,
    pub admin: u16,
    pub conf: std::path::PathBuf,
    pub dir: std::path::PathBuf,
    pub stderr: std::path::PathBuf,
}

pub fn config(fe: u16, admin: u16, caches: &[u16], extra_frontend: &str) -> String {
    let mut c = format!(
        "hash = \"hrw\"\n[frontend]\nlisten = \"127.0.0.1:{fe}\"\nworkers = 2\n{extra_frontend}\n[cache]\nworkers = 1\nmem = \"16M\"\ndisk = \"64M\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    for (i, p) in caches.iter().enumerate() {
        c.push_str(&format!(
            "[[parent]]\nname = \"c{i}\"\nhost = \"127.0.0.1\"\nport = {p}\n"
        ));
    }
    c
}

impl Up {
    pub fn start(tag: &str) -> Up {
        Up::start_with(tag, |_| String::new())
    }

    /// With `[frontend]` lines made from the test's directory.
    pub fn start_with(tag: &str, extra_frontend: impl Fn(&std::path::Path) -> String) -> Up {
        Up::start_edited(tag, extra_frontend, |text| text)
    }

    /// With `[frontend]` lines made from the test's directory, and the
    /// whole config text edited.
    pub fn start_edited(
        tag: &str,
        extra_frontend: impl Fn(&std::path::Path) -> String,
        edit: impl Fn(String) -> String,
    ) -> Up {
        let dir = temp_dir(tag);
        let (fe, admin) = (free_port(), free_port());
        let caches: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let conf = dir.join("carpool.toml");
        let text = edit(config(fe, admin, &caches, &extra_frontend(&dir)));
        std::fs::write(&conf, text).unwrap();
        let stderr = dir.join("up.err");
        let child = Command::new(env!("CARGO_BIN_EXE_carpool"))
            .args(["up", "-c"])
            .arg(&conf)
            .arg("--data")
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let up = Up {
            child,
            fe,
            admin,
            conf,
            dir,
            stderr,
        };
        // the supervisor holds the listeners from the start: wait until
        // every component runs
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", admin)).is_err() || up.pids().len() < 4 {
            assert!(Instant::now() < deadline, "up did not start: {}", up.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `/status` (JSON), pretty-printed for failure messages.
    pub fn status(&self) -> String {
        super::admin_status(self.admin).map_or("(no answer)".into(), |s| format!("{s:#}"))
    }

    /// name → pid of the running components.
    pub fn pids(&self) -> Vec<(String, u32)> {
        super::admin_pids(self.admin)
    }

    pub fn get(&self, url: &str) -> super::Response {
        super::proxy_get(self.fe, url)
    }

    /// Waits until `what` is in the log `n` times.
    pub fn wait_for_log(&self, what: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches(what).count() < n {
            assert!(
                Instant::now() < deadline,
                "{what:?} not {n} times in: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid_of(&self, name: &str) -> u32 {
        let pids = self.pids();
        match pids.iter().find(|(n, _)| n == name) {
            Some((_, pid)) => *pid,
            None => panic!("{name} is not running: {pids:?}"),
        }
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Up {
    /// `GET PATH` on the admin listener: the body.
    pub fn admin_get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let r = read_response(&mut BufReader::new(s), false).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        r.text()
    }
}
