//! The `carpool` binary: argument parsing and wiring only. The routing work is
//! in the `carp` crate; configuration reading in [`config`]; each command in [`cmd`].

mod cli;
mod cmd;
mod config;
mod escape;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("carpool: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
