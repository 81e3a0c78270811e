//! A real origin server on loopback for the cache tests, whose answers are
//! set by the query string, and which counts what reaches it.
//!
//! `GET /any/path?size=N&cc=max-age%3D60&etag=1&lm=1&vary=Accept-Language&delay=MS&pause=MS&chunked=1&status=N`
//! - body: `size` bytes of [`super::pattern`] over (path, version) when
//!   `size` is given, else the text `path v=VERSION vary=VALUE`;
//! - `cc`: Cache-Control value (percent-decoded); `etag=1`: ETag `"vVERSION"`
//!   and 304 for a matching If-None-Match; `lm=1`: Last-Modified (fixed);
//! - `vary`: Vary on that request field (its value is echoed in the body);
//! - `delay`: ms before the head; `pause`: ms between the two halves of the body;
//! - `chunked=1`: chunked framing;
//! - `h=Name:%20value` (any number of times): that header line, as it is;
//! - `nodate=1`: no `Date` field;
//! - `interim=103,102`: these interim responses before the final one.
//!
//! [`Origin::bump`] changes the version (new content, new ETag).

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::read_head;

/// The body byte at `offset` of version `v` of `path`.
pub fn body_byte(path: &str, v: u32, offset: u64) -> u8 {
    let seed = path
        .bytes()
        .fold(v as u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64));
    super::pattern(offset.wrapping_add(seed % 1_000_003))
}

/// A running origin.
pub struct Origin {
    pub port: u16,
    pub version: Arc<AtomicU32>,
    /// Requests per path (without the query).
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    /// Every request head, in order.
    pub heads: Arc<Mutex<Vec<String>>>,
    pub total: Arc<AtomicUsize>,
    server: super::TestServer,
}

impl Origin {
    pub fn start() -> Origin {
        let version = Arc::new(AtomicU32::new(1));
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let total: Arc<AtomicUsize> = Arc::default();
        let (v, h, hd, t) = (version.clone(), hits.clone(), heads.clone(), total.clone());
        let server = super::TestServer::start(0, move |s| serve(s, &v, &h, &hd, &t));
        Origin {
            port: server.port,
            version,
            hits,
            heads,
            total,
            server,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }

    /// Requests that reached `path`.
    pub fn count(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// New content (and ETag) from now on.
    pub fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// The last request head that reached `path`.
    pub fn last_head(&self, path: &str) -> Option<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|h| {
                h.lines()
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .is_some_and(|t| t.split('?').next() == Some(path))
            })
            .cloned()
    }

    /// Stops listening and cuts open connections.
    pub fn kill(&self) {
        self.server.kill();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(
    s: TcpStream,
    version: &AtomicU32,
    hits: &Mutex<HashMap<String, usize>>,
    heads: &Mutex<Vec<String>>,
    total: &AtomicUsize,
) {
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut out = s;
    loop {
        let Some(head) = read_head(&mut reader) else {
            return;
        };
        let first = head.lines().next().unwrap_or_default().to_string();
        let mut parts = first.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let path = path.to_string();
        let q: HashMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect();
        let extra: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("h="))
            .map(decode)
            .collect();
        let lower = head.to_ascii_lowercase();
        let field = |n: &str| {
            lower.lines().find_map(|l| {
                l.strip_prefix(&format!("{}:", n.to_ascii_lowercase()))
                    .map(|v| v.trim().to_string())
            })
        };
        *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
        heads.lock().unwrap().push(head.clone());
        total.fetch_add(1, Ordering::SeqCst);
        if let Some(ms) = q.get("delay").and_then(|v| v.parse().ok()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let v = version.load(Ordering::SeqCst);
        let etag = format!("\"v{v}\"");
        let mut fields = String::new();
        if let Some(cc) = q.get("cc") {
            fields.push_str(&format!("Cache-Control: {cc}\r\n"));
        }
        if q.contains_key("etag") {
            fields.push_str(&format!("ETag: {etag}\r\n"));
        }
        if q.contains_key("lm") {
            fields.push_str("Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        }
        let mut vary_value = String::new();
        if let Some(name) = q.get("vary") {
            fields.push_str(&format!("Vary: {name}\r\n"));
            vary_value = field(name).unwrap_or_default();
        }
        fields.push_str("Content-Type: application/octet-stream\r\n");
        if !q.contains_key("nodate") {
            fields.push_str(&format!(
                "Date: {}\r\n",
                super::http_date(std::time::SystemTime::now())
            ));
        }
        for line in &extra {
            fields.push_str(line);
            fields.push_str("\r\n");
        }
        for code in q.get("interim").into_iter().flat_map(|v| v.split(',')) {
            let r = format!("HTTP/1.1 {code} Interim\r\nLink: </x.css>; rel=preload\r\n\r\n");
            if out.write_all(r.as_bytes()).is_err() {
                return;
            }
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(20));
        }
        if q.contains_key("etag") && field("if-none-match").is_some_and(|t| t.contains(&etag)) {
            let r = format!("HTTP/1.1 304 Not Modified\r\n{fields}\r\n");
            if out.write_all(r.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let body: Vec<u8> = match q.get("size").and_then(|s| s.parse::<u64>().ok()) {
            Some(n) => (0..n).map(|i| body_byte(&path, v, i)).collect(),
            None => format!("{path} v={v} vary={vary_value}").into_bytes(),
        };
        let status = q.get("status").cloned().unwrap_or_else(|| "200".into());
        let chunked = q.contains_key("chunked");
        let framing = if chunked {
            "Transfer-Encoding: chunked\r\n".to_string()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let r = format!("HTTP/1.1 {status} X\r\n{fields}{framing}\r\n");
        if out.write_all(r.as_bytes()).is_err() {
            return;
        }
        if method == "HEAD" {
            continue;
        }
        let half = body.len() / 2;
        let pause = q.get("pause").and_then(|v| v.parse().ok());
        for (i, piece) in [&body[..half], &body[half..]].into_iter().enumerate() {
            if i == 1 {
                if let Some(ms) = pause {
                    let _ = out.flush();
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
            let ok = if chunked {
                if piece.is_empty() {
                    Ok(())
                } else {
                    out.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                        .and_then(|_| out.write_all(piece))
                        .and_then(|_| out.write_all(b"\r\n"))
                }
            } else {
                out.write_all(piece)
            };
            if ok.is_err() {
                return;
            }
        }
        if chunked && out.write_all(b"0\r\n\r\n").is_err() {
            return;
        }
    }
}
