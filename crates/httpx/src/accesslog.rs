//! The access log: one line per request in Squid's native format (so
//! existing Squid log tools work) or JSON, buffered per worker, written to a
//! file that can be reopened for logrotate (SIGUSR1 in the binary).
//!
//! Native: `time elapsed client code/status bytes method URL user hierarchy/peer type`
//! e.g. `1764136800.123     12 127.0.0.1 TCP_MISS/200 1432 GET http://h/ - CARP/cache2 text/html`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Squid's native `logformat squid`.
    #[default]
    Squid,
    /// One JSON object per line.
    Json,
}

/// One finished request.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// When the request started.
    pub start: SystemTime,
    /// How long it took.
    pub elapsed: Duration,
    /// Client address.
    pub client: IpAddr,
    /// Squid result code (TCP_MISS, TCP_DENIED, TCP_TUNNEL, NONE …).
    pub code: &'a str,
    /// Status sent to the client (0 if none).
    pub status: u16,
    /// Bytes sent to the client, heads included.
    pub bytes: u64,
    /// Request method.
    pub method: &'a [u8],
    /// Request URL (or authority for CONNECT).
    pub url: &'a [u8],
    /// Hierarchy code (CARP, HIER_NONE …).
    pub hierarchy: &'a str,
    /// Parent name, or `-`.
    pub peer: &'a str,
    /// Response Content-Type, or `-`.
    pub content_type: &'a [u8],
    /// Why the request failed, if it did (JSON only; native has no column).
    pub reason: &'a str,
}

/// Where lines go: a file shared by all workers, reopened on demand.
#[derive(Debug)]
pub struct Sink {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
    format: Format,
}

impl Sink {
    /// A sink writing to `path` (`None`: discard).
    pub fn open(path: Option<&Path>, format: Format) -> io::Result<Arc<Sink>> {
        let file = match path {
            Some(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        Ok(Arc::new(Sink {
            path: path.map(Path::to_path_buf),
            file: Mutex::new(file),
            format,
        }))
    }

    /// Reopens the file by path (after logrotate moved it).
    pub fn reopen(&self) -> io::Result<()> {
        if let Some(p) = &self.path {
            let f = OpenOptions::new().create(true).append(true).open(p)?;
            if let Ok(mut g) = self.file.lock() {
                *g = Some(f);
            }
        }
        Ok(())
    }

    fn write(&self, data: &[u8]) {
        if let Ok(mut g) = self.file.lock() {
            if let Some(f) = g.as_mut() {
                let _ = f.write_all(data);
            }
        }
    }
}

/// A worker's buffered writer to a [`Sink`].
#[derive(Debug)]
pub struct Writer {
    sink: Arc<Sink>,
    buf: String,
    last_flush: Instant,
}

/// Flush when this much is buffered.
const FLUSH_BYTES: usize = 32 * 1024;
/// …or when the oldest line is this old (checked on the next line or tick).
const FLUSH_AGE: Duration = Duration::from_secs(1);

impl Writer {
    /// A writer for one worker.
    pub fn new(sink: Arc<Sink>) -> Self {
        Writer {
            sink,
            buf: String::with_capacity(FLUSH_BYTES),
            last_flush: Instant::now(),
        }
    }

    /// Formats and buffers one entry.
    pub fn log(&mut self, e: &Entry<'_>) {
        if self.sink.path.is_none() {
            return;
        }
        let since = e.start.duration_since(UNIX_EPOCH).unwrap_or_default();
        match self.sink.format {
            Format::Squid => {
                let _ = writeln!(
                    self.buf,
                    "{}.{:03} {:6} {} {}/{:03} {} {} {} - {}/{} {}",
                    since.as_secs(),
                    since.subsec_millis(),
                    e.elapsed.as_millis(),
                    e.client,
                    e.code,
                    e.status,
                    e.bytes,
                    String::from_utf8_lossy(e.method),
                    LogUrl(e.url),
                    e.hierarchy,
                    e.peer,
                    if e.content_type.is_empty() {
                        "-".into()
                    } else {
                        String::from_utf8_lossy(e.content_type)
                    },
                );
            }
            Format::Json => {
                let _ = writeln!(
                    self.buf,
                    "{{\"time\":{}.{:03},\"elapsed_ms\":{},\"client\":\"{}\",\"code\":\"{}\",\"status\":{},\"bytes\":{},\"method\":{},\"url\":{},\"hierarchy\":\"{}\",\"peer\":{},\"type\":{},\"reason\":{}}}",
                    since.as_secs(),
                    since.subsec_millis(),
                    e.elapsed.as_millis(),
                    e.client,
                    e.code,
                    e.status,
                    e.bytes,
                    json_str(e.method),
                    json_str(e.url),
                    e.hierarchy,
                    json_str(e.peer.as_bytes()),
                    json_str(e.content_type),
                    json_str(e.reason.as_bytes()),
                );
            }
        }
        if self.buf.len() >= FLUSH_BYTES || self.last_flush.elapsed() >= FLUSH_AGE {
            self.flush();
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.sink.write(self.buf.as_bytes());
            self.buf.clear();
        }
        self.last_flush = Instant::now();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A URL for the native log: no spaces or control bytes (they would break columns).
struct LogUrl<'a>(&'a [u8]);

impl std::fmt::Display for LogUrl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &b in self.0 {
            if b <= 0x20 || b >= 0x7f {
                write!(f, "%{b:02X}")?;
            } else {
                f.write_char(b as char)?;
            }
        }
        Ok(())
    }
}

fn json_str(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for c in String::from_utf8_lossy(b).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_and_json_lines() {
        let dir = std::env::temp_dir().join(format!("httpx-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (format, want) in [
            (Format::Squid, "1700000000.250     12 127.0.0.1 TCP_MISS/200 1432 GET http://h/a%20b - CARP/cache2 text/html\n"),
            (
                Format::Json,
                "{\"time\":1700000000.250,\"elapsed_ms\":12,\"client\":\"127.0.0.1\",\"code\":\"TCP_MISS\",\"status\":200,\"bytes\":1432,\"method\":\"GET\",\"url\":\"http://h/a b\",\"hierarchy\":\"CARP\",\"peer\":\"cache2\",\"type\":\"text/html\",\"reason\":\"\"}\n",
            ),
        ] {
            let path = dir.join(format!("{format:?}.log"));
            let _ = std::fs::remove_file(&path);
            let sink = Sink::open(Some(&path), format).unwrap();
            let mut w = Writer::new(sink);
            w.log(&Entry {
                start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
                elapsed: Duration::from_millis(12),
                client: "127.0.0.1".parse().unwrap(),
                code: "TCP_MISS",
                status: 200,
                bytes: 1432,
                method: b"GET",
                url: b"http://h/a b",
                hierarchy: "CARP",
                peer: "cache2",
                content_type: b"text/html",
                reason: "",
            });
            w.flush();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        }
    }
}
