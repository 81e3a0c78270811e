//! Test fixtures shared by the integration tests: real parents (small HTTP
//! proxies on loopback), the real `carpool` binary, and a raw HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod netns;
pub mod origin;
pub mod up;

/// A byte of the generated body pattern at `offset` (so any slice can be checked).
pub fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(offset >> 13) % 251) as u8
}

/// A parent cache stand-in: an HTTP/1.1 proxy on 127.0.0.1 that answers from
/// the request itself. Paths:
/// - `/big/N`: N bytes of [`pattern`], Content-Length, streamed.
/// - `/chunked/N`: N bytes of pattern, chunked.
/// - `/close/N`: N bytes, no length, then close.
/// - `/slow/MS`: waits MS milliseconds first.
/// - `/drop`: closes without answering.
/// - `/early-hints`: a 103 before the 200.
/// - `/trailers`: a chunked body with a trailer field.
/// - anything else: 200, body `NAME METHOD TARGET body=LEN`.
///
/// CONNECT: 200, then echoes bytes back.
pub struct Parent {
    pub name: String,
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    pub last_head: Arc<Mutex<String>>,
    server: TestServer,
}

/// A thread-per-connection server on 127.0.0.1 that can be killed like a
/// crashed process (listener gone, open connections cut).
pub struct TestServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl TestServer {
    /// Listens on `port` (0: any) and runs `handle` on a thread per connection.
    pub fn start(port: u16, handle: impl Fn(TcpStream) + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind test server");
        let server = TestServer {
            port: listener.local_addr().unwrap().port(),
            stop: Arc::default(),
            open: Arc::default(),
        };
        let (stop, open, handle) = (server.stop.clone(), server.open.clone(), Arc::new(handle));
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                if let Ok(c) = s.try_clone() {
                    open.lock().unwrap().push(c);
                }
                let handle = handle.clone();
                std::thread::spawn(move || handle(s));
            }
        });
        server
    }

    /// Stops listening and cuts every open connection; returns once the
    /// port refuses connections.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Parent {
    pub fn start(name: &str) -> Parent {
        Self::start_on(name, 0)
    }

    pub fn start_on(name: &str, port: u16) -> Parent {
        let connections: Arc<AtomicUsize> = Arc::default();
        let requests: Arc<AtomicUsize> = Arc::default();
        let last_head: Arc<Mutex<String>> = Arc::default();
        let (n, conns, reqs, last) = (
            name.to_string(),
            connections.clone(),
            requests.clone(),
            last_head.clone(),
        );
        let server = TestServer::start(port, move |s| {
            conns.fetch_add(1, Ordering::SeqCst);
            serve_parent(s, &n, &reqs, &last)
        });
        Parent {
            name: name.to_string(),
            port: server.port,
            connections,
            requests,
            last_head,
            server,
        }
    }

    /// Stops listening and cuts every open connection (a killed parent).
    pub fn kill(&self) {
        self.server.kill();
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve_parent(s: TcpStream, name: &str, reqs: &AtomicUsize, last: &Mutex<String>) {
    let keep = s.try_clone().unwrap();
    serve_parent_conn(s, name, reqs, last);
    // `kill` holds clones of open sockets: close explicitly, so a close is seen.
    let _ = keep.shutdown(Shutdown::Both);
}

/// A request head read line by line (without its blank line), or `None`
/// when the connection closed or broke first.
pub fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

fn serve_parent_conn(s: TcpStream, name: &str, reqs: &AtomicUsize, last: &Mutex<String>) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut out = s;
    loop {
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        reqs.fetch_add(1, Ordering::SeqCst);
        *last.lock().unwrap() = head.clone();
        let first = head.lines().next().unwrap_or_default().to_string();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let lower = head.to_ascii_lowercase();
        let header = |n: &str| {
            lower.lines().find_map(|l| {
                l.strip_prefix(&format!("{n}:"))
                    .map(|v| v.trim().to_string())
            })
        };
        // request body
        let mut body_len = 0u64;
        if let Some(cl) = header("content-length") {
            let n: u64 = cl.parse().unwrap_or(0);
            let mut buf = vec![0u8; n as usize];
            if reader.read_exact(&mut buf).is_err() {
                return;
            }
            body_len = n;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                if reader.read_line(&mut size).is_err() {
                    return;
                }
                let n = u64::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if n == 0 {
                    let mut end = String::new();
                    let _ = reader.read_line(&mut end);
                    break;
                }
                let mut buf = vec![0u8; n as usize + 2];
                if reader.read_exact(&mut buf).is_err() {
                    return;
                }
                body_len += n;
            }
        }
        if method == "CONNECT" {
            let _ = out.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let path = target.split_once("://").map_or(target.as_str(), |(_, r)| {
            r.find('/').map_or("/", |i| &r[i..])
        });
        let num = |p: &str| path.strip_prefix(p).and_then(|n| n.parse::<u64>().ok());
        if path == "/drop" {
            return;
        }
        if let Some(ms) = num("/slow/") {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let ok = if path == "/early-hints" {
            let body = "after hints\n";
            out.write_all(
                format!(
                    "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        } else if path == "/trailers" {
            out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\r\n")
        } else if let Some(n) = num("/big/") {
            out.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes())
                .and_then(|_| write_pattern(&mut out, n, false))
        } else if let Some(n) = num("/chunked/") {
            out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .and_then(|_| write_pattern(&mut out, n, true))
        } else if let Some(n) = num("/close/") {
            let _ = out
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .and_then(|_| write_pattern(&mut out, n, false));
            return;
        } else {
            let body = format!("{name} {method} {target} body={body_len}\n");
            let head = format!(
                "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nCache-Control: max-age=3600\r\n\r\n",
                http_date(std::time::SystemTime::now()),
                body.len()
            );
            let resp = if method == "HEAD" { head } else { head + &body };
            out.write_all(resp.as_bytes())
        };
        if ok.is_err() {
            return;
        }
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{weekday}, {d:02} {month} {y} {h:02}:{m:02}:{s:02} GMT")
}

fn write_pattern(out: &mut TcpStream, n: u64, chunked: bool) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    while off < n {
        let take = (n - off).min(buf.len() as u64) as usize;
        for (i, b) in buf[..take].iter_mut().enumerate() {
            *b = pattern(off + i as u64);
        }
        if chunked {
            out.write_all(format!("{take:x}\r\n").as_bytes())?;
            out.write_all(&buf[..take])?;
            out.write_all(b"\r\n")?;
        } else {
            out.write_all(&buf[..take])?;
        }
        off += take as u64;
    }
    if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("carpool-it-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `carpool frontend`.
pub struct Frontend {
    pub port: u16,
    pub child: Child,
    pub stderr_path: PathBuf,
    pub dir: PathBuf,
}

impl Frontend {
    /// Starts the frontend with `config` (a carpool.toml without `listen`).
    pub fn start(tag: &str, config: &str) -> Frontend {
        let dir = temp_dir(tag);
        let conf = dir.join("carpool.toml");
        std::fs::write(&conf, config).unwrap();
        let port = free_port();
        let stderr_path = dir.join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_carpool"))
            .args(["frontend", "-c"])
            .arg(&conf)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start carpool frontend");
        let f = Frontend {
            port,
            child,
            stderr_path,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "frontend did not start: {}",
                f.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        f
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Peak resident memory (VmHWM) in kB.
    pub fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test keeps its files (config, stderr log) to look at.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim().to_ascii_lowercase() == name).then(|| v.trim().to_string())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `r` (`head_only` for HEAD requests).
pub fn read_response(r: &mut BufReader<TcpStream>, head_only: bool) -> std::io::Result<Response> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            if head.starts_with("HTTP/1.1 100") {
                head.clear();
                continue;
            }
            break;
        }
        head.push_str(&line);
    }
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut resp = Response {
        status,
        head,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 {
        return Ok(resp);
    }
    if let Some(cl) = resp.header("content-length") {
        let mut body = vec![0u8; cl.parse().unwrap()];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else if resp.header("transfer-encoding").is_some() {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end)?;
                break;
            }
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            resp.body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// A frontend's own metrics text (`GET /carpool-internal/metrics`).
#[allow(dead_code)]
pub fn frontend_metrics(f: &Frontend) -> String {
    let r = exchange(
        f,
        b"GET /carpool-internal/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.head);
    r.text()
}

/// Waits until `what` holds, for at most `limit` (then fails with `why`);
/// returns how long it took.
#[allow(dead_code)]
pub fn wait_for(limit: Duration, what: impl Fn() -> bool, why: impl Fn() -> String) -> Duration {
    let t0 = Instant::now();
    while !what() {
        assert!(t0.elapsed() < limit, "{}", why());
        std::thread::sleep(Duration::from_millis(10));
    }
    t0.elapsed()
}

/// Sends raw bytes on a new connection and reads one response.
pub fn exchange(f: &Frontend, raw: &[u8]) -> Response {
    let mut s = f.connect();
    s.write_all(raw).unwrap();
    let head_only = raw.starts_with(b"HEAD ");
    read_response(&mut BufReader::new(s), head_only).expect("response")
}

/// GET through the proxy on a new connection.
pub fn get(f: &Frontend, url: &str) -> Response {
    exchange(
        f,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Parent entries for a config.
pub fn parents_toml(parents: &[&Parent]) -> String {
    parents
        .iter()
        .map(|p| {
            format!(
                "[[parent]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n\n",
                p.name, p.port
            )
        })
        .collect()
}

/// A real Squid 5.7 instance (`squid -N -n NAME -f FILE`) on loopback.
pub struct Squid {
    pub port: u16,
    pub name: String,
    child: Child,
    pub work: PathBuf,
    service: String,
}

/// The squid binary, or why tests that need it skip.
pub fn squid_binary() -> Result<PathBuf, String> {
    for p in ["/usr/sbin/squid", "/usr/bin/squid"] {
        if std::path::Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    Err("squid is not installed (scripts/test installs Debian's squid when it can)".into())
}

impl Squid {
    /// Starts Squid with `body` (directives after the common ones: ports,
    /// logs and paths are filled in; `{work}` in it stands for its work
    /// directory, see [`Squid::file`]). Waits until it accepts connections.
    pub fn start(name: &str, body: &str) -> Squid {
        Squid::start_on(name, free_port(), body)
    }

    /// [`Squid::start`] on a port chosen beforehand (for a body that names it).
    pub fn start_on(name: &str, port: u16, body: &str) -> Squid {
        let bin = squid_binary().expect("squid");
        let service = format!("cpit{}{}", std::process::id(), name);
        let work = std::env::temp_dir().join(format!("carpool-squid-{service}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        // Started as root, Squid becomes `proxy`: its work dir must be writable by it.
        let _ = Command::new("chown")
            .args(["proxy:proxy"])
            .arg(&work)
            .status();
        let _ = Command::new("chmod").args(["0777"]).arg(&work).status();
        let w = work.display();
        let body = body.replace("{work}", &w.to_string());
        let conf = format!(
            "http_port 127.0.0.1:{port}\nvisible_hostname {name}.test\nicp_port 0\nhtcp_port 0\n\
             dns_nameservers 127.0.0.1\ncache_log {w}/cache.log\naccess_log stdio:{w}/access.log\n\
             cache_store_log none\npid_filename {w}/squid.pid\ncoredump_dir {w}\n\
             shutdown_lifetime 0 seconds\n{body}\n"
        );
        let conf_path = work.join("squid.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .args(["-N", "-n", &service, "-f"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("squid.out")).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start squid");
        let sq = Squid {
            port,
            name: name.to_string(),
            child,
            work,
            service,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "squid {name} did not start: {}",
                sq.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sq
    }

    /// A file of its work directory (where `access_log stdio:WORK/NAME`
    /// lines of its config write), or empty.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.join(name)).unwrap_or_default()
    }

    pub fn diagnostics(&self) -> String {
        ["squid.out", "access.log", "cache.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.work.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", self.service))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Runs `carpool ARGS` with `input` on stdin; returns its output.
pub fn run_with_stdin(args: &[&str], input: &str) -> std::process::Output {
    run_with_stdin_env(args, &[], input)
}

/// [`run_with_stdin`] with environment variables set.
pub fn run_with_stdin_env(
    args: &[&str],
    env: &[(&str, &str)],
    input: &str,
) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // write from a thread so a large input cannot deadlock against the output
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// The parent each URL goes to, according to `carpool route` on `conf_text`.
pub fn route(conf_text: &str, urls: &[String]) -> Vec<String> {
    let dir = temp_dir("route");
    let conf = dir.join(format!("route-{}.toml", free_port()));
    std::fs::write(&conf, conf_text).unwrap();
    let out = run_with_stdin(
        &["route", "-c", conf.to_str().unwrap()],
        &(urls.join("\n") + "\n"),
    );
    let _ = std::fs::remove_file(&conf);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A running `carpool cache` (disk tier under its own temp dir, access log).
pub struct Cache {
    pub port: u16,
    pub child: Child,
    pub dir: PathBuf,
    pub data: PathBuf,
    stderr_path: PathBuf,
    args: Vec<String>,
}

impl Cache {
    /// Starts `carpool cache --listen 127.0.0.1:PORT --dir DIR/data
    /// --access-log DIR/access.log EXTRA...`.
    pub fn start(tag: &str, extra: &[&str]) -> Cache {
        Self::start_with(tag, true, extra)
    }

    /// As [`Cache::start`], without a disk tier when `disk` is false.
    pub fn start_with(tag: &str, disk: bool, extra: &[&str]) -> Cache {
        let dir = temp_dir(tag);
        let data = dir.join("data");
        let port = free_port();
        let mut args: Vec<String> = vec![
            "cache".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--access-log".into(),
            dir.join("access.log").display().to_string(),
        ];
        if disk {
            args.extend(["--dir".into(), data.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let stderr_path = dir.join("stderr.log");
        let child = Self::spawn(&args, &stderr_path);
        let c = Cache {
            port,
            child,
            dir,
            data,
            stderr_path,
            args,
        };
        c.wait_ready();
        c
    }

    fn spawn(args: &[String], stderr_path: &PathBuf) -> Child {
        Command::new(env!("CARGO_BIN_EXE_carpool"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(stderr_path)
                    .unwrap(),
            )
            .spawn()
            .expect("start carpool cache")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "cache did not start: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The access log so far: a line is written once it is
    /// `httpx::accesslog::HOLD` (1 s) old, on the next flush tick (250 ms).
    pub fn access_log(&self) -> String {
        std::thread::sleep(Duration::from_millis(1600));
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// SIGTERM, wait for the exit, start again with the same arguments.
    pub fn restart(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.args, &self.stderr_path);
        self.wait_ready();
    }

    /// SIGKILL (no clean shutdown), then start again.
    pub fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.respawn();
    }

    /// Starts it again with the same arguments (after it ended).
    pub fn respawn(&mut self) {
        self.child = Self::spawn(&self.args, &self.stderr_path);
        self.wait_ready();
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    /// Sends raw bytes on a new connection and reads one response.
    pub fn exchange(&self, raw: &[u8]) -> Response {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_response(&mut BufReader::new(s), raw.starts_with(b"HEAD ")).expect("response")
    }

    /// `METHOD url` through the cache (absolute-form) with extra header lines.
    pub fn request(&self, method: &str, url: &str, headers: &[&str]) -> Response {
        let mut raw = format!("{method} {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for h in headers {
            raw.push_str(h);
            raw.push_str("\r\n");
        }
        raw.push_str("\r\n");
        self.exchange(raw.as_bytes())
    }

    pub fn get(&self, url: &str) -> Response {
        self.request("GET", url, &[])
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `raw` to 127.0.0.1:`port` from the loopback address `src` (the
/// whole of 127/8 is this host's) and reads one response (head only for a
/// CONNECT: a tunnel's answer has no body).
pub fn exchange_from(src: &str, port: u16, raw: &str) -> std::io::Result<Response> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: std::net::SocketAddr = format!("{src}:0").parse().map_err(std::io::Error::other)?;
    socket.bind(&from.into())?;
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    socket.connect(&to.into())?;
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(raw.as_bytes())?;
    read_response(&mut BufReader::new(s), raw.starts_with("CONNECT"))
}

/// `GET /status` from a `carpool up`'s admin listener, as JSON (`None`
/// while it does not answer).
#[allow(dead_code)]
pub fn admin_status(admin: u16) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let r = read_response(&mut BufReader::new(s), false).ok()?;
    assert_eq!(r.status, 200, "{}", r.head);
    Some(serde_json::from_str(&r.text()).expect("/status is JSON"))
}

/// name → pid of the components `carpool up` says are running.
#[allow(dead_code)]
pub fn admin_pids(admin: u16) -> Vec<(String, u32)> {
    let Some(status) = admin_status(admin) else {
        return Vec::new();
    };
    status["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["state"] == "running")
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_string();
            (name, p["pid"].as_u64().expect("pid") as u32)
        })
        .collect()
}

/// `/status` once the frontends (and the caches, if any) have counted
/// `requests` client requests answered by a parent: the layer counts a request just after its last
/// byte is sent, so a client can read its answer a moment before that.
#[allow(dead_code)]
pub fn admin_status_after(admin: u16, requests: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = admin_status(admin).expect("/status answers");
        let counted: u64 = s["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["requests"].as_u64().unwrap_or(0))
            .sum();
        let cached: u64 = s["caches"]
            .as_array()
            .expect("caches")
            .iter()
            .map(|c| c["requests"].as_u64().unwrap_or(0))
            .sum();
        let caches_done =
            s["caches"].as_array().is_some_and(|c| c.is_empty()) || cached >= requests;
        if (counted >= requests && caches_done) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A frontend's metrics text once `sample` (a whole `name{labels}`) has
/// reached `value` (or after 5 s, for the caller's assertion to show).
#[allow(dead_code)]
pub fn metrics_when(scrape: impl Fn() -> String, sample: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape();
        let now = text
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if now.is_some_and(|v| v >= value) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGSTOPs process `pid` and SIGCONTs it when dropped, however the test
/// ends: a stopped process does not act on its parent's death (nor on a
/// SIGTERM) until continued, and would be left behind.
#[allow(dead_code)]
pub struct Stopped(u32);

#[allow(dead_code)]
impl Stopped {
    /// Stops `pid`, and returns once every thread of it is stopped: the
    /// kernel stops a process's threads one after another once one of them
    /// has run, and meanwhile another may still answer a request (seen:
    /// a "stopped" cache answered in 2 ms).
    pub fn stop(pid: u32) -> Stopped {
        let ok = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid}");
        let stopped = Stopped(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Self::all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "{pid} did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
        stopped
    }

    /// Every thread of `pid` in state `T` (stopped), per /proc.
    fn all_threads_stopped(pid: u32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                // the state follows the command name's closing parenthesis
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
        })
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// `GET URL` through the proxy on 127.0.0.1:`port`, one connection.
#[allow(dead_code)]
pub fn proxy_get(port: u16, url: &str) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_response(&mut BufReader::new(s), false).unwrap()
}
