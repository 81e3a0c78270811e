//! The commands: each in its own module, all returning an exit code.

mod lb_rules;
mod plan;
mod route;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, Source};
use crate::config::{self, Config, FileKind};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Route { source, explain } => route::run(&load_source(&source)?, explain),
        Command::Plan {
            old,
            new,
            stdin,
            samples,
            seed,
        } => plan::run(
            &load_reporting(&old, None)?,
            &load_reporting(&new, None)?,
            stdin,
            samples,
            seed,
        ),
        Command::Frontend {
            source,
            listen,
            workers,
            access_log,
        } => {
            let config = load_source(&source)?;
            crate::frontend::run(
                config,
                crate::frontend::Overrides {
                    listen,
                    workers,
                    access_log,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache {
            config,
            name,
            listen,
            dir,
            mem,
            disk,
            workers,
            access_log,
        } => {
            let mut settings = match (&config, &name) {
                (Some(path), Some(name)) => {
                    let c = load_reporting(path, Some(FileKind::Toml))?;
                    c.cache_settings(name)?
                }
                _ => crate::config::settings::CacheSettings::default(),
            };
            if let Some(l) = listen {
                settings.server.listen = l;
            }
            if dir.is_some() {
                settings.dir = dir;
            }
            if let Some(m) = mem {
                settings.mem = m;
            }
            if let Some(d) = disk {
                settings.disk = d;
            }
            if let Some(n) = workers {
                settings.server.workers = n;
            }
            if access_log.is_some() {
                settings.server.access_log = access_log;
            }
            crate::cache::run(settings)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::LbRules {
            port,
            instances,
            weights,
            iptables: _,
            nftables,
            chain,
            apply,
            remove,
        } => {
            let spread = crate::lbrules::Spread::new(port, &instances, weights.as_deref(), &chain)?;
            lb_rules::run(&spread, nftables, apply, remove)
        }
        Command::Check { source } => {
            let config = load_source(&source)?;
            let table = config.table()?;
            println!(
                "{}: OK: hash = \"{}\", {} parents, frontend on {}",
                config.source.display(),
                table.mode(),
                table.len(),
                config.frontend.server.listen
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            config,
            listen,
            data,
        } => {
            crate::array::run(crate::array::UpOptions {
                config,
                listen,
                data,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            what: crate::cli::ConfigCommand::Default,
        } => {
            print!("{}", crate::array::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_source(source: &Source) -> Result<Config> {
    match (&source.config, &source.squid_conf) {
        (Some(p), _) => load_reporting(p, Some(FileKind::Toml)),
        (_, Some(p)) => load_reporting(p, Some(FileKind::Squid)),
        (None, None) => anyhow::bail!("give -c carpool.toml or --squid-conf squid.conf"),
    }
}

/// Loads a configuration and prints its warnings to stderr.
fn load_reporting(path: &std::path::Path, kind: Option<FileKind>) -> Result<Config> {
    let c = match kind {
        Some(k) => config::load(path, k)?,
        None => config::load_any(path)?,
    };
    for w in &c.warnings {
        eprintln!("carpool: warning: {w}");
    }
    Ok(c)
}
