//! The `carpool` binary: argument parsing and wiring only. The routing work is
//! in the `carp` crate; configuration reading in [`config`]; each command in [`cmd`].

mod array;
mod cache;
mod cli;
mod cluster;
mod cmd;
mod config;
mod control;
mod escape;
mod frontend;
mod lbrules;
mod memory;
mod process;
mod sample;
mod status;

/// mimalloc: every request allocates and frees a few small buffers (heads,
/// URL keys); its thread-local free lists make that markedly cheaper than
/// glibc malloc on the proxy's hot path (see bench/frontend). What the
/// process frees goes back to the system even when it idles: [`memory`].
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    memory::return_freed_memory();
    match cmd::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("carpool: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The least time between two progress reports of a long operation (the
/// disk index rebuild of a cache, `carpool plan` over a large sample): 2 s,
/// or `CARPOOL_PROGRESS_INTERVAL_MS` milliseconds when that is set to a
/// number (for the tests, which cannot wait for a slow run).
fn progress_interval() -> std::time::Duration {
    std::env::var("CARPOOL_PROGRESS_INTERVAL_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(cache_store::DEFAULT_PROGRESS_INTERVAL, |ms| {
            std::time::Duration::from_millis(ms)
        })
}
