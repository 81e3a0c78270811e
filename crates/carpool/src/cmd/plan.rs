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
    writeln!(
        out,
        "{:<24} {:>13} {:>17} {:>9} {:>10} {:>10} {:>10}",
        "parent", "weight", "share", "ideal", "kept", "lost", "gained"
    )?;
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
        writeln!(
            out,
            "{:<24} {:>13} {:>17} {:>9} {:>10} {:>10} {:>10}",
            name,
            format!("{} -> {}", w(o), w(n)),
            format!("{} -> {}", s(o), s(n)),
            n.as_ref()
                .map_or("-".to_string(), |f| format!("{:.2}%", f.ideal * 100.0)),
            o.as_ref().map_or(0, |f| f.kept),
            o.as_ref().map_or(0, |f| f.lost),
            n.as_ref().map_or(0, |f| f.gained),
        )?;
    }
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
