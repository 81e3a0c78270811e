//! The log lines of the disk index rebuild at open: a slow rebuild says what
//! it reads, how far it got (with a rate and the time left) and what it
//! found; a quick one says nothing at info level.

mod common;

use cache_store::progress::Count;
use cache_store::{Store, StoreConfig};
use common::{disk_cfg, files, open, put};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Level;

/// Small objects (log records) and larger ones (object files) written.
const SMALL: usize = 9000;
const LARGE: usize = 600;

/// A log writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens `cfg`, returning the lines logged on this thread at `level` and
/// above while it opened.
fn open_logged(cfg: StoreConfig, level: Level) -> (Arc<Store>, Vec<String>) {
    let out = Captured::default();
    let w = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    let store = tracing::subscriber::with_default(subscriber, || open(cfg));
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    (store, text.lines().map(str::to_string).collect())
}

/// A closed store in `dir` with [`SMALL`] objects in 512 KiB segments and
/// [`LARGE`] object files.
fn fill(dir: &Path) -> StoreConfig {
    let mut cfg = disk_cfg(dir, 16 << 20, 0);
    if let Some(d) = cfg.disk.as_mut() {
        d.small_object = 4 << 10;
    }
    let s = open(cfg.clone());
    let small = vec![b's'; 500];
    let large = vec![b'l'; 5000];
    for i in 0..SMALL {
        put(
            &s,
            format!("http://small.example/{i}").as_bytes(),
            b"200",
            &small,
            500,
        );
    }
    for i in 0..LARGE {
        put(
            &s,
            format!("http://large.example/{i}").as_bytes(),
            b"200",
            &large,
            5000,
        );
    }
    s.close().unwrap();
    cfg
}

/// The number after `before` in `line`, up to the next space, `%` or `)`
/// (digits grouped by commas).
fn number_after(line: &str, before: &str) -> Option<f64> {
    let rest = &line[line.find(before)? + before.len()..];
    let end = rest.find([' ', '%', ')']).unwrap_or(rest.len());
    rest[..end].replace(',', "").parse().ok()
}

#[test]
fn a_slow_rebuild_says_what_it_reads_how_far_it_got_and_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fill(dir.path());
    let segments = files(&dir.path().join("log")).len();
    assert!(segments >= 4, "{segments} segments: the test wants several");
    // every check of the clock is "slow" enough for a line
    if let Some(d) = cfg.disk.as_mut() {
        d.progress_interval = Duration::ZERO;
    }
    let (store, lines) = open_logged(cfg, Level::INFO);
    let all = lines.join("\n");
    assert_eq!(store.stats().disk.objects, (SMALL + LARGE) as u64);

    // what is read, once, before any progress line
    let intro: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("rebuilding the disk index of "))
        .collect();
    assert_eq!(intro.len(), 1, "{all}");
    let intro_line = &lines[intro[0]];
    assert!(
        intro_line.contains(&format!(
            "{}: {segments} log segments (",
            dir.path().display()
        )),
        "{all}"
    );
    assert!(intro_line.contains("then the object files in "), "{all}");

    // the log: a line per segment (the interval is zero), in order, ending
    // at 100% with nothing left
    let log: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("rebuilding the disk index: log "))
        .collect();
    assert_eq!(log.len(), segments, "{all}");
    assert!(lines
        .iter()
        .position(|l| l == log[0])
        .is_some_and(|i| i > intro[0]));
    let mut last_pct = -1.0;
    for (i, l) in log.iter().enumerate() {
        let pct = number_after(l, "read (").expect("a percent");
        assert!(pct >= last_pct && pct <= 100.0, "{all}");
        last_pct = pct;
        assert!(
            l.contains(&format!("{} of {segments} segments", i + 1)),
            "{all}"
        );
        // the time left is plausible: this rebuild takes well under a minute
        let eta = number_after(l, "ETA ").expect("an ETA");
        assert!(l.ends_with(" s"), "{l}: ETA in seconds");
        assert!(eta < 60.0, "{l}");
        assert!(l.contains("/s, ETA"), "{l}: a rate");
    }
    assert_eq!(last_pct, 100.0, "{all}");
    assert!(log[segments - 1].ends_with("ETA 0 s"), "{all}");

    // the object files: every directory, ending with every file
    let objs: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("rebuilding the disk index: object files: "))
        .collect();
    assert!(!objs.is_empty(), "{all}");
    let last = objs[objs.len() - 1];
    let dirs = number_after(last, "object files: ").unwrap();
    assert!(
        dirs > 100.0,
        "{last}: {LARGE} keys spread over the directories"
    );
    assert!(
        last.contains(&format!(
            ": {dirs} of {dirs} directories (100%), {LARGE} files checked"
        )),
        "{all}"
    );
    assert!(last.ends_with("ETA 0 s"), "{last}");

    // the objects of the log indexed, a line per 4096
    let indexed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" objects of the log indexed ("))
        .collect();
    assert_eq!(indexed.len(), SMALL / 4096, "{all}");
    for (i, l) in indexed.iter().enumerate() {
        let done = (i + 1) * 4096;
        assert!(
            l.contains(&format!(
                "rebuilding the disk index: {} of {} objects of the log indexed ({}%), ",
                Count(done as u64),
                Count(SMALL as u64),
                done * 100 / SMALL
            )),
            "{all}"
        );
        assert!(number_after(l, "ETA ").is_some_and(|s| s < 60.0), "{l}");
    }

    // what was found, last
    let summary = lines
        .iter()
        .rposition(|l| l.contains("disk index rebuilt in "))
        .expect("a summary");
    assert!(
        lines[summary].contains(&format!("s: {} objects, ", Count((SMALL + LARGE) as u64))),
        "{all}"
    );
    assert!(
        lines[summary].contains("(0 dropped as damaged, 0 bodies verified)"),
        "{all}"
    );
    assert!(
        lines
            .iter()
            .position(|l| l == last)
            .is_some_and(|i| i < summary),
        "{all}"
    );
}

#[test]
fn a_quick_rebuild_logs_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    // the default interval (2 s): far longer than this rebuild
    let cfg = fill(dir.path());
    let (store, lines) = open_logged(cfg.clone(), Level::INFO);
    assert!(
        !lines.iter().any(|l| l.contains("disk index")),
        "{}",
        lines.join("\n")
    );
    store.close().unwrap();
    drop(store);
    // its summary is there for who asks
    let (_store, lines) = open_logged(cfg, Level::DEBUG);
    assert!(
        lines.iter().any(|l| l.contains("disk index rebuilt in ")
            && l.contains(&format!(": {} objects", Count((SMALL + LARGE) as u64)))),
        "{}",
        lines.join("\n")
    );
    assert!(!lines
        .iter()
        .any(|l| l.contains("rebuilding the disk index")));
}
