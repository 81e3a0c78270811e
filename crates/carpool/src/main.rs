//! The `carpool` binary: argument parsing and wiring only. The routing work is
//! in the `carp` crate; configuration reading in [`config`]; each command in [`cmd`].

mod array;
mod cache;
mod cli;
mod cmd;
mod config;
mod escape;
mod frontend;
mod lbrules;
mod server;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CARPOOL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("carpool: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
