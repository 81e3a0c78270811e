//! `carpool plan OLD NEW`: shares under NEW and the URLs that change parent.
//!
//! A run that takes longer than the progress interval (2 s, see
//! `progress_interval` in main.rs) says how far it got on stderr, never on
//! stdout where the report goes: a line per interval, rewritten in place
//! when stderr is a terminal and cleared before the report.

use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Seek, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cache_store::progress::{Bytes, Count, Eta, Progress, Report};
use carp::normalize::{parse_input, Outcome};
use carp::plan::{Flow, Planner};

use rand::{rngs::StdRng, SeedableRng};

use crate::config::Config;

/// Runs the plan over stdin or a generated sample and prints the report.
pub fn run(old: &Config, new: &Config, stdin: bool, samples: u64, seed: u64) -> Result<ExitCode> {
    let (old_t, new_t) = (old.table()?, new.table()?);
    let mut planner = Planner::new(&old_t, &new_t);
    let mut skipped = 0u64;
    let interval = crate::progress_interval();
    let mut shown = Shown::on_stderr();
    if stdin {
        // a file (`< urls.txt`) has a size to measure progress against
        let size = stdin_file_left();
        let mut meter = Progress::new(size, interval);
        let (mut lines, mut read) = (0u64, 0u64);
        let mut line = Vec::new();
        let mut input = io::stdin().lock();
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .context("reading stdin")?;
            if n == 0 {
                break;
            }
            (lines, read) = (lines + 1, read + n as u64);
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            match parse_input(&line) {
                Outcome::Route(r) => planner.add(&r),
                _ => skipped += 1,
            }
            if lines.is_multiple_of(CHECK_EVERY) {
                if let Some(r) = meter.due(read) {
                    shown.line(&stdin_line(lines, &r));
                }
            }
        }
    } else {
        let mut meter = Progress::new(Some(samples), interval);
        let mut rng = StdRng::seed_from_u64(seed);
        for i in 1..=samples {
            planner.add(&crate::sample::random_url(&mut rng));
            if i.is_multiple_of(CHECK_EVERY) {
                if let Some(r) = meter.due(i) {
                    shown.line(&generated_line(&r));
                }
            }
        }
    }
    shown.clear();
    let plan = planner.finish();
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "plan: {} ({}, {} parents) -> {} ({}, {} parents); {} URLs {}{}",
        old.source.display(),
        old.hash,
        old.parents.len(),
        new.source.display(),
        new.hash,
        new.parents.len(),
        plan.samples,
        if stdin { "from stdin" } else { "generated" },
        if skipped > 0 {
            format!(", {skipped} unroutable lines skipped")
        } else {
            String::new()
        }
    )?;
    let mut rows: Vec<[String; 7]> = vec![[
        "parent", "weight", "share", "ideal", "kept", "lost", "gained",
    ]
    .map(String::from)];
    let mut ideal_moved = 0.0;
    for (o, n) in &plan.members {
        let name = o
            .as_ref()
            .or(n.as_ref())
            .map_or("", |f: &Flow| f.name.as_str());
        let w = |f: &Option<Flow>| f.as_ref().map_or("-".to_string(), |f| f.weight.to_string());
        let s = |f: &Option<Flow>| {
            f.as_ref()
                .map_or("-".to_string(), |f| format!("{:.2}%", f.share * 100.0))
        };
        let ideal_old = o.as_ref().map_or(0.0, |f| f.ideal);
        let ideal_new = n.as_ref().map_or(0.0, |f| f.ideal);
        ideal_moved += (ideal_old - ideal_new).abs() / 2.0;
        rows.push([
            name.to_string(),
            format!("{} -> {}", w(o), w(n)),
            format!("{} -> {}", s(o), s(n)),
            n.as_ref()
                .map_or("-".to_string(), |f| format!("{:.2}%", f.ideal * 100.0)),
            o.as_ref().map_or(0, |f| f.kept).to_string(),
            o.as_ref().map_or(0, |f| f.lost).to_string(),
            n.as_ref().map_or(0, |f| f.gained).to_string(),
        ]);
    }
    write_table(&mut out, &rows)?;
    writeln!(
        out,
        "moved: {:.2}% of URLs change parent ({} of {}); the least any hash could move for this change: {:.2}%",
        plan.moved_fraction() * 100.0,
        plan.moved,
        plan.samples,
        ideal_moved * 100.0
    )?;
    Ok(ExitCode::SUCCESS)
}

/// URLs (or lines) planned between two looks at the clock for progress.
const CHECK_EVERY: u64 = 4096;

/// Progress shown on stderr.
struct Shown {
    /// A terminal: one line, rewritten in place.
    terminal: bool,
    /// Whether a line was written (and, on a terminal, is still there).
    any: bool,
}

impl Shown {
    /// Progress on stderr, in place if it is a terminal.
    fn on_stderr() -> Shown {
        Shown {
            terminal: io::stderr().is_terminal(),
            any: false,
        }
    }

    /// Shows `line` (a failure to write it does not stop the plan).
    fn line(&mut self, line: &str) {
        let mut err = io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r{line}\x1b[K").and_then(|()| err.flush())
        } else {
            writeln!(err, "{line}")
        };
        self.any = true;
    }

    /// Clears the line on a terminal, before the report.
    fn clear(&mut self) {
        if self.terminal && self.any {
            let _ = write!(io::stderr().lock(), "\r\x1b[K");
            self.any = false;
        }
    }
}

impl Drop for Shown {
    /// An error message after a failed read starts on a clean line.
    fn drop(&mut self) {
        self.clear();
    }
}

/// `carpool: plan: 3,400,000 of 10,000,000 URLs (34%), 680,000 URLs/s, ETA 9 s`.
fn generated_line(r: &Report) -> String {
    format!(
        "carpool: plan: {} of {} URLs ({}%), {} URLs/s{}",
        Count(r.done),
        Count(r.total.unwrap_or(r.done)),
        r.percent().unwrap_or(0),
        Count(r.rate().unwrap_or(0.0) as u64),
        eta(r),
    )
}

/// `carpool: plan: 1,200,000 lines read, 600,000 lines/s` from a pipe;
/// from a file, also `45.0 MiB of 120.0 MiB (37%)` and the time left.
/// `r` counts bytes.
fn stdin_line(lines: u64, r: &Report) -> String {
    let secs = r.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { lines as f64 / secs } else { 0.0 };
    match r.total {
        Some(total) => format!(
            "carpool: plan: {} lines, {} of {} read ({}%), {} lines/s{}",
            Count(lines),
            Bytes(r.done),
            Bytes(total),
            r.percent().unwrap_or(0),
            Count(rate as u64),
            eta(r),
        ),
        None => format!(
            "carpool: plan: {} lines read, {} lines/s",
            Count(lines),
            Count(rate as u64),
        ),
    }
}

/// `, ETA 5 s`, or nothing before there is a rate to go by.
fn eta(r: &Report) -> String {
    r.eta()
        .map_or_else(String::new, |d| format!(", ETA {}", Eta(d)))
}

/// The bytes left to read on stdin when it is a regular file.
fn stdin_file_left() -> Option<u64> {
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    let mut f = File::from(fd);
    let meta = f.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let at = f.stream_position().ok()?;
    Some(meta.len().saturating_sub(at))
}

/// Writes `rows` (the header first) in columns as wide as their widest cell:
/// the first left-aligned, the others right-aligned.
fn write_table(out: &mut impl Write, rows: &[[String; 7]]) -> io::Result<()> {
    let mut width = [0usize; 7];
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = format!("{:<w$}", row[0], w = width[0]);
        for (cell, w) in row.iter().zip(width).skip(1) {
            line.push_str(&format!("  {cell:>w$}"));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}
