//! The access log: one line per request in one of Squid's built-in formats
//! (native, `common`, `combined`: existing Squid and web log tools work) or
//! JSON, buffered per worker and written
//! in time order (each line's time is when its request finished) to a file
//! that can be reopened for logrotate (SIGUSR1 in the binary), or stdout.
//!
//! Native: `time elapsed client code/status bytes method URL user hierarchy/peer type`
//! e.g. `1764136800.123     12 127.0.0.1 TCP_MISS/200 1432 GET http://h/ - CARP/cache2 text/html`.
//!
//! Squid's two other built-in formats, as Squid 5.7 writes them
//! (`src/log/FormatHttpdCommon.cc`, `FormatHttpdCombined.cc`): Apache's
//! Common and Combined Log Formats with Squid's result code and hierarchy
//! appended:
//! - `common`: `%>a %[ui %[un [%tl] "%rm %ru HTTP/%rv" %>Hs %<st %Ss:%Sh`, e.g.
//!   `127.0.0.1 - - [03/Dec/2026:20:17:01 +0000] "GET http://h/ HTTP/1.1" 200 1432 TCP_MISS:CARP`
//! - `combined`: the same with `"%{Referer}>h" "%{User-Agent}>h"` before
//!   `%Ss:%Sh`.
//!
//! As Squid writes them: the time is when the request finished, in local
//! time; the ident and user names are `-` (carpool has neither);
//! the status is not zero-padded (`0` when nothing was sent); `Referer` and
//! `User-Agent` are the first such field of the request, `-` when absent or
//! empty, written between quotes as they came (a `"` in them is not
//! escaped, as in Squid; bytes that are not UTF-8 become U+FFFD, where
//! Squid writes them raw).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::head::Version;

/// Line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Squid's native `logformat squid`.
    #[default]
    Squid,
    /// Squid's built-in `logformat common`: Apache's Common Log Format
    /// with Squid's result code and hierarchy appended (see the module doc).
    Common,
    /// Squid's built-in `logformat combined`: `common` with the request's
    /// `Referer` and `User-Agent` (see the module doc).
    Combined,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// True when lines of this format show the request's `Referer` and
    /// `User-Agent` (the only formats whose records need them).
    pub fn shows_request_fields(self) -> bool {
        self == Format::Combined
    }
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
    /// The request's protocol version (`common` and `combined` only; a
    /// head that could not be read: HTTP/1.1, as Squid writes it).
    pub version: Version,
    /// The request's `Referer`, or empty (`combined` only).
    pub referer: &'a [u8],
    /// The request's `User-Agent`, or empty (`combined` only).
    pub user_agent: &'a [u8],
    /// Hierarchy code (CARP, HIER_NONE …).
    pub hierarchy: &'a str,
    /// The peer's name (a parent's name), or `-` (JSON only).
    pub peer: &'a str,
    /// The peer's host as configured (a parent's `cache_peer` host, an
    /// origin's host), or `-`: what Squid's native line writes after the
    /// hierarchy code.
    pub peer_host: &'a str,
    /// Response Content-Type, or `-`.
    pub content_type: &'a [u8],
    /// Why the request failed, if it did (JSON only; native has no column).
    pub reason: &'a str,
}

/// Where an access log goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Destination {
    /// Nowhere.
    #[default]
    Off,
    /// Standard output.
    Stdout,
    /// A file, appended to and reopened on demand (logrotate).
    File(PathBuf),
}

/// Lines are held this long after their time before they are written, so
/// that the lines of every worker (each flushing its buffer every
/// [`FLUSH_AGE`] at most, and on its own tick) go out in time order.
pub const HOLD: Duration = Duration::from_secs(1);

/// Where lines go: one file shared by all workers, written in time order,
/// reopened on demand.
#[derive(Debug)]
pub struct Sink {
    destination: Destination,
    format: Format,
    out: Mutex<Out>,
}

/// The open file and the lines waiting for their turn.
#[derive(Debug, Default)]
struct Out {
    file: Option<File>,
    /// Lines handed over by the workers, one run per flush.
    runs: Vec<Run>,
    /// Bytes about to be written (kept to reuse its allocation).
    scratch: Vec<u8>,
}

/// One worker's flushed lines: their text and, sorted by time, each line's
/// (time in ms since the epoch, start, end) in the text.
#[derive(Debug)]
struct Run {
    text: String,
    lines: Vec<(u64, usize, usize)>,
    /// The first line not written yet.
    next: usize,
}

impl Sink {
    /// A sink writing to `destination`.
    pub fn open(destination: Destination, format: Format) -> io::Result<Arc<Sink>> {
        let file = Sink::open_file(&destination)?;
        Ok(Arc::new(Sink {
            destination,
            format,
            out: Mutex::new(Out {
                file,
                ..Out::default()
            }),
        }))
    }

    fn open_file(destination: &Destination) -> io::Result<Option<File>> {
        Ok(match destination {
            Destination::Off => None,
            Destination::Stdout => Some(File::from(io::stdout().as_fd().try_clone_to_owned()?)),
            Destination::File(p) => Some(OpenOptions::new().create(true).append(true).open(p)?),
        })
    }

    /// Reopens the file by path (after logrotate moved it).
    pub fn reopen(&self) -> io::Result<()> {
        if let Destination::File(_) = self.destination {
            let f = Sink::open_file(&self.destination)?;
            if let Ok(mut g) = self.out.lock() {
                g.file = f;
            }
        }
        Ok(())
    }

    /// Takes a worker's lines and writes every line whose time is [`HOLD`]
    /// old, from all workers, in time order.
    fn submit(&self, text: &str, lines: &mut [(u64, usize, usize)]) {
        let cutoff = millis(SystemTime::now()).saturating_sub(HOLD.as_millis() as u64);
        self.write_until(text, lines, cutoff);
    }

    /// Writes every line held, in time order (at shutdown).
    pub fn finish(&self) {
        self.write_until("", &mut [], u64::MAX);
    }

    fn write_until(&self, text: &str, lines: &mut [(u64, usize, usize)], cutoff: u64) {
        let Ok(mut g) = self.out.lock() else { return };
        let out = &mut *g;
        if !lines.is_empty() {
            // nearly sorted already: lines are logged as requests finish
            lines.sort_by_key(|l| l.0);
            out.runs.push(Run {
                text: text.to_string(),
                lines: lines.to_vec(),
                next: 0,
            });
        }
        let mut due: Vec<(u64, usize, usize)> = Vec::new();
        for (r, run) in out.runs.iter_mut().enumerate() {
            while run.next < run.lines.len() && run.lines[run.next].0 <= cutoff {
                due.push((run.lines[run.next].0, r, run.next));
                run.next += 1;
            }
        }
        if due.is_empty() {
            return;
        }
        due.sort_unstable();
        out.scratch.clear();
        for &(_, r, i) in &due {
            let run = &out.runs[r];
            let (_, a, b) = run.lines[i];
            out.scratch.extend_from_slice(&run.text.as_bytes()[a..b]);
        }
        out.runs.retain(|run| run.next < run.lines.len());
        if let Some(f) = out.file.as_mut() {
            let _ = f.write_all(&out.scratch);
        }
    }
}

/// Milliseconds since the epoch.
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A worker's buffered writer to a [`Sink`].
#[derive(Debug)]
pub struct Writer {
    sink: Arc<Sink>,
    buf: String,
    /// (time, start, end) of each line in `buf`.
    lines: Vec<(u64, usize, usize)>,
    last_flush: Instant,
    /// The second last written as a `common`/`combined` time, and its text
    /// (one conversion to local time per second, as Squid does).
    log_time: (i64, String),
}

/// Flush when this much is buffered.
const FLUSH_BYTES: usize = 32 * 1024;
/// …or when the oldest line is this old (checked on the next line or tick).
const FLUSH_AGE: Duration = Duration::from_millis(250);

impl Writer {
    /// A writer for one worker.
    pub fn new(sink: Arc<Sink>) -> Self {
        Writer {
            sink,
            buf: String::with_capacity(FLUSH_BYTES),
            lines: Vec::new(),
            last_flush: Instant::now(),
            log_time: (i64::MIN, String::new()),
        }
    }

    /// The format of the lines it writes (`None` when they go nowhere).
    pub fn format(&self) -> Option<Format> {
        (self.sink.destination != Destination::Off).then_some(self.sink.format)
    }

    /// Formats and buffers one entry. Its time is when the request
    /// finished (start + elapsed), as in Squid's logs.
    pub fn log(&mut self, e: &Entry<'_>) {
        if self.sink.destination == Destination::Off {
            return;
        }
        let end = millis(e.start + e.elapsed);
        let (secs, ms) = (end / 1000, end % 1000);
        let start = self.buf.len();
        match self.sink.format {
            Format::Squid => {
                let _ = writeln!(
                    self.buf,
                    "{secs}.{ms:03} {:6} {} {}/{:03} {} {} {} - {}/{} {}",
                    e.elapsed.as_millis(),
                    e.client,
                    e.code,
                    e.status,
                    e.bytes,
                    String::from_utf8_lossy(e.method),
                    LogUrl(e.url),
                    e.hierarchy,
                    e.peer_host,
                    if e.content_type.is_empty() {
                        "-".into()
                    } else {
                        String::from_utf8_lossy(e.content_type)
                    },
                );
            }
            Format::Common | Format::Combined => {
                let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                if self.log_time.0 != secs {
                    self.log_time.1.clear();
                    crate::date::write_log_time(&mut self.log_time.1, secs);
                    self.log_time.0 = secs;
                }
                let _ = write!(
                    self.buf,
                    "{} - - [{}] \"{} {} {}\" {} {} ",
                    e.client,
                    self.log_time.1,
                    String::from_utf8_lossy(e.method),
                    LogUrl(e.url),
                    e.version.as_str(),
                    e.status,
                    e.bytes,
                );
                if self.sink.format == Format::Combined {
                    let _ = write!(
                        self.buf,
                        "\"{}\" \"{}\" ",
                        OrDash(e.referer),
                        OrDash(e.user_agent),
                    );
                }
                let _ = writeln!(self.buf, "{}:{}", e.code, e.hierarchy);
            }
            Format::Json => {
                let _ = writeln!(
                    self.buf,
                    "{{\"time\":{secs}.{ms:03},\"elapsed_ms\":{},\"client\":\"{}\",\"code\":\"{}\",\"status\":{},\"bytes\":{},\"method\":{},\"url\":{},\"hierarchy\":\"{}\",\"peer\":{},\"peer_host\":{},\"type\":{},\"reason\":{}}}",
                    e.elapsed.as_millis(),
                    e.client,
                    e.code,
                    e.status,
                    e.bytes,
                    json_str(e.method),
                    json_str(e.url),
                    e.hierarchy,
                    json_str(e.peer.as_bytes()),
                    json_str(e.peer_host.as_bytes()),
                    json_str(e.content_type),
                    json_str(e.reason.as_bytes()),
                );
            }
        }
        self.lines.push((end, start, self.buf.len()));
        if self.buf.len() >= FLUSH_BYTES || self.last_flush.elapsed() >= FLUSH_AGE {
            self.flush();
        }
    }

    /// Hands what is buffered to the sink, which writes what is due (call
    /// it on a tick even when idle: held lines go out then).
    pub fn flush(&mut self) {
        if self.sink.destination != Destination::Off {
            self.sink.submit(&self.buf, &mut self.lines);
        }
        self.buf.clear();
        self.lines.clear();
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

/// A request field's value as `combined` writes it: as it came, `-` when
/// empty.
struct OrDash<'a>(&'a [u8]);

impl std::fmt::Display for OrDash<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_char('-')
        } else {
            f.write_str(&String::from_utf8_lossy(self.0))
        }
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
            (Format::Squid, "1700000000.250     12 127.0.0.1 TCP_MISS/200 1432 GET http://h/a%20b - CARP/10.0.0.12 text/html\n"),
            (
                Format::Json,
                "{\"time\":1700000000.250,\"elapsed_ms\":12,\"client\":\"127.0.0.1\",\"code\":\"TCP_MISS\",\"status\":200,\"bytes\":1432,\"method\":\"GET\",\"url\":\"http://h/a b\",\"hierarchy\":\"CARP\",\"peer\":\"cache2\",\"peer_host\":\"10.0.0.12\",\"type\":\"text/html\",\"reason\":\"\"}\n",
            ),
        ] {
            let path = dir.join(format!("{format:?}.log"));
            let _ = std::fs::remove_file(&path);
            let sink = Sink::open(Destination::File(path.clone()), format).unwrap();
            let mut w = Writer::new(sink.clone());
            w.log(&Entry {
                start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_238),
                elapsed: Duration::from_millis(12),
                client: "127.0.0.1".parse().unwrap(),
                code: "TCP_MISS",
                status: 200,
                bytes: 1432,
                method: b"GET",
                url: b"http://h/a b",
                version: Version::Http11,
                referer: b"",
                user_agent: b"",
                hierarchy: "CARP",
                peer: "cache2",
                peer_host: "10.0.0.12",
                content_type: b"text/html",
                reason: "",
            });
            w.flush();
            sink.finish();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        }
    }

    /// The lines of Squid's `common` and `combined` formats, field by field
    /// as Squid 5.7 writes them (its FormatHttpdCommon.cc and
    /// FormatHttpdCombined.cc, and lines of a running Squid 5.7:
    /// `crates/carpool/tests/squid_interop.rs` compares the two live).
    #[test]
    fn common_and_combined_lines() {
        let dir = std::env::temp_dir().join(format!("httpx-clf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // finished at 1700000000.250: the time is that second, local
        let mut time = String::new();
        crate::date::write_log_time(&mut time, 1_700_000_000);
        let base = Entry {
            start: UNIX_EPOCH + Duration::from_millis(1_700_000_000_238),
            elapsed: Duration::from_millis(12),
            client: "127.0.0.1".parse().unwrap(),
            code: "TCP_MISS",
            status: 200,
            bytes: 1432,
            method: b"GET",
            url: b"http://h/a b",
            version: Version::Http10,
            referer: b"http://r.example/?q=\"x\" y",
            user_agent: b"Mozilla/5.0 (X11; \"q\")\tz",
            hierarchy: "CARP",
            peer: "cache2",
            peer_host: "10.0.0.12",
            content_type: b"text/html",
            reason: "",
        };
        let refused = Entry {
            client: "::1".parse().unwrap(),
            code: "TCP_DENIED",
            status: 403,
            bytes: 310,
            method: b"CONNECT",
            url: b"h.example:25",
            version: Version::Http11,
            referer: b"",
            user_agent: b"",
            hierarchy: "HIER_NONE",
            ..base.clone()
        };
        let nothing_sent = Entry {
            status: 0,
            bytes: 0,
            code: "TCP_MISS",
            ..refused.clone()
        };
        for (format, want) in [
            (
                Format::Common,
                [
                    format!("127.0.0.1 - - [{time}] \"GET http://h/a%20b HTTP/1.0\" 200 1432 TCP_MISS:CARP"),
                    format!("::1 - - [{time}] \"CONNECT h.example:25 HTTP/1.1\" 403 310 TCP_DENIED:HIER_NONE"),
                    format!("::1 - - [{time}] \"CONNECT h.example:25 HTTP/1.1\" 0 0 TCP_MISS:HIER_NONE"),
                ],
            ),
            (
                Format::Combined,
                [
                    format!("127.0.0.1 - - [{time}] \"GET http://h/a%20b HTTP/1.0\" 200 1432 \"http://r.example/?q=\"x\" y\" \"Mozilla/5.0 (X11; \"q\")\tz\" TCP_MISS:CARP"),
                    format!("::1 - - [{time}] \"CONNECT h.example:25 HTTP/1.1\" 403 310 \"-\" \"-\" TCP_DENIED:HIER_NONE"),
                    format!("::1 - - [{time}] \"CONNECT h.example:25 HTTP/1.1\" 0 0 \"-\" \"-\" TCP_MISS:HIER_NONE"),
                ],
            ),
        ] {
            let path = dir.join(format!("{format:?}.log"));
            let _ = std::fs::remove_file(&path);
            let sink = Sink::open(Destination::File(path.clone()), format).unwrap();
            let mut w = Writer::new(sink.clone());
            for e in [&base, &refused, &nothing_sent] {
                w.log(e);
            }
            w.flush();
            sink.finish();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().collect::<Vec<_>>(), want, "{format:?}");
        }
        assert!(Format::Combined.shows_request_fields());
        assert!(!Format::Common.shows_request_fields());
    }

    fn entry(end_ms: u64, url: &'static [u8]) -> Entry<'static> {
        Entry {
            start: UNIX_EPOCH + Duration::from_millis(end_ms - 5),
            elapsed: Duration::from_millis(5),
            client: "127.0.0.1".parse().unwrap(),
            code: "TCP_HIT",
            status: 200,
            bytes: 10,
            method: b"GET",
            url,
            version: Version::Http11,
            referer: b"",
            user_agent: b"",
            hierarchy: "HIER_NONE",
            peer: "-",
            peer_host: "-",
            content_type: b"",
            reason: "",
        }
    }

    /// Two workers' buffers flushed out of order still give a file in time
    /// order; a line is held until it is [`HOLD`] old, and `finish` writes
    /// the rest.
    #[test]
    fn lines_of_all_workers_come_out_in_time_order() {
        let dir = std::env::temp_dir().join(format!("httpx-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("order.log");
        let _ = std::fs::remove_file(&path);
        let sink = Sink::open(Destination::File(path.clone()), Format::Squid).unwrap();
        let (mut a, mut b) = (Writer::new(sink.clone()), Writer::new(sink.clone()));
        let old = millis(SystemTime::now()) - 10_000;
        a.log(&entry(old + 3, b"/a3"));
        a.log(&entry(old + 4, b"/a4"));
        b.log(&entry(old + 1, b"/b1"));
        b.log(&entry(old + 5, b"/b5"));
        a.flush();
        b.flush();
        let now = millis(SystemTime::now());
        a.log(&entry(now, b"/recent"));
        a.flush();
        let urls = |t: String| -> Vec<String> {
            t.lines()
                .map(|l| {
                    l.split(' ')
                        .filter(|f| !f.is_empty())
                        .nth(6)
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        // b1 came in after a3 and a4 were written: what was written stays
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(urls(text), ["/a3", "/a4", "/b1", "/b5"]);
        let _ = std::fs::remove_file(&path);
        sink.reopen().unwrap();
        // one flush round: every worker's lines, merged
        a.log(&entry(old + 20, b"/a20"));
        b.log(&entry(old + 10, b"/b10"));
        a.log(&entry(old + 30, b"/a30"));
        b.flush();
        a.flush();
        sink.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(urls(text), ["/b10", "/a20", "/a30", "/recent"]);
    }
}
