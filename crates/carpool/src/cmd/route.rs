//! `carpool route`: one line in, one decision out, streaming.

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use carp::normalize::{parse_input, Outcome};
use carp::Table;

use crate::config::Config;
use crate::escape::escape_into;

/// Reads stdin line by line and prints the decision for each, in order.
/// Memory stays bounded by the longest line.
pub fn run(config: &Config, explain: bool) -> Result<ExitCode> {
    let table = config.table()?;
    let stdin = io::stdin();
    let mut input = io::BufReader::with_capacity(1 << 20, stdin.lock());
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = Vec::with_capacity(256);
    let mut text = Vec::with_capacity(256);
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        text.clear();
        decide(&table, &line, explain, &mut text);
        text.push(b'\n');
        if let Err(e) = out.write_all(&text) {
            return quiet_on_broken_pipe(e);
        }
    }
    if let Err(e) = out.flush() {
        return quiet_on_broken_pipe(e);
    }
    Ok(ExitCode::SUCCESS)
}

fn quiet_on_broken_pipe(e: io::Error) -> Result<ExitCode> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(e).context("writing stdout")
    }
}

/// Appends the decision for one input line to `out` (without newline).
pub fn decide(table: &Table, line: &[u8], explain: bool, out: &mut Vec<u8>) {
    let req = match parse_input(line) {
        Outcome::Route(r) => r,
        Outcome::Reject { status, reason } => {
            out.extend_from_slice(format!("REJECT {status}").as_bytes());
            if explain {
                out.extend_from_slice(format!("\treason={reason}").as_bytes());
            }
            return;
        }
        Outcome::Local { reason } => {
            out.extend_from_slice(b"LOCAL");
            if explain {
                out.extend_from_slice(format!("\treason={reason}").as_bytes());
            }
            return;
        }
    };
    match table.select(&req, |_| true) {
        Some(id) => out.extend_from_slice(table.member(id).name.as_bytes()),
        None => out.extend_from_slice(b"NONE"),
    }
    if explain {
        out.extend_from_slice(b"\tkey=");
        escape_into(req.effective(), out);
        for e in table.explain(&req) {
            let m = table.member(e.id);
            out.extend_from_slice(
                format!(
                    "\t{} rank={} pos={} hash={:#x} factor={:.6} score={:.6e}",
                    m.name,
                    e.rank,
                    e.position + 1,
                    e.draw,
                    e.factor,
                    e.score
                )
                .as_bytes(),
            );
            if e.key != req.effective() {
                out.extend_from_slice(b" key=");
                escape_into(&e.key, out);
            }
        }
    }
}
