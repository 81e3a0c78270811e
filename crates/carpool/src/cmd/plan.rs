//! `carpool plan OLD NEW`: shares under NEW and the URLs that change parent.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use carp::normalize::{parse_input, Outcome};
use carp::plan::{Flow, Planner};
use carp::RequestUri;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::config::Config;

/// Runs the plan over stdin or a generated sample and prints the report.
pub fn run(old: &Config, new: &Config, stdin: bool, samples: u64, seed: u64) -> Result<ExitCode> {
    let (old_t, new_t) = (old.table()?, new.table()?);
    let mut planner = Planner::new(&old_t, &new_t);
    let mut skipped = 0u64;
    if stdin {
        let mut line = Vec::new();
        let mut input = io::stdin().lock();
        loop {
            line.clear();
            if input
                .read_until(b'\n', &mut line)
                .context("reading stdin")?
                == 0
            {
                break;
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            match parse_input(&line) {
                Outcome::Route(r) => planner.add(&r),
                _ => skipped += 1,
            }
        }
    } else {
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..samples {
            planner.add(&random_url(&mut rng));
        }
    }
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

/// A random URL shaped like real traffic: many hosts, paths, some queries.
fn random_url(rng: &mut impl Rng) -> RequestUri {
    let host = format!(
        "www{}.site{}.example",
        rng.gen_range(0..4),
        rng.gen_range(0..5000)
    );
    let mut path = format!(
        "/{}/{:x}",
        ["img", "css", "js", "video", "api"][rng.gen_range(0..5)],
        rng.gen::<u64>()
    );
    if rng.gen_bool(0.3) {
        path.push_str(&format!("?v={}", rng.gen::<u32>()));
    }
    RequestUri::from_parts("http", &host, 80, 80, &path)
}
