//! The commands: each in its own module, all returning an exit code.

mod control;
mod import;
mod lb_rules;
mod plan;
mod route;
mod status;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::cli::{CacheArgs, Cli, Command, Source};
use crate::config::settings::CacheSettings;
use crate::config::{self, Config, FileKind};
use crate::control::PidFile;

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
            pid_file,
            cluster_listen,
            cluster_seed,
        } => {
            crate::process::ignore_reload_signals();
            let mut config = load_source(&source)?;
            if let Some(l) = cluster_listen {
                config
                    .cluster
                    .get_or_insert_with(|| crate::config::settings::ClusterSettings::new(l))
                    .listen = l;
            }
            if !cluster_seed.is_empty() {
                match config.cluster.as_mut() {
                    Some(c) => c.seeds = cluster_seed,
                    None => anyhow::bail!("--cluster-seed: this frontend has no cluster (give --cluster-listen or [cluster] listen)"),
                }
            }
            let _pid_file = pid_file.as_deref().map(PidFile::create).transpose()?;
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
        Command::Cache(mut args) => {
            crate::process::ignore_reload_signals();
            let pid_file = args.pid_file.take();
            let settings = cache_settings(args)?;
            let _pid_file = pid_file.as_deref().map(PidFile::create).transpose()?;
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
            let config = match (&source.config, &source.squid_conf) {
                (_, Some(p)) => config::load(p, FileKind::Squid)?,
                _ => load_source(&source)?,
            };
            let parents = match config.parents.is_empty() {
                // only with [cluster] announced_parents (the config checks)
                true => "no configured parents (caches announce themselves)".to_string(),
                false => format!("{} parents", config.table()?.len()),
            };
            println!(
                "{}: OK: hash = \"{}\", {parents}, frontend on {}",
                config.source.display(),
                config.hash,
                config.frontend.server.listen
            );
            if !config.warnings.is_empty() {
                println!("not honoured ({}):", config.warnings.len());
                for w in &config.warnings {
                    println!("  {w}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportSquid { squid_conf, output } => import::run(&squid_conf, output.as_deref()),
        Command::Up {
            config,
            listen,
            data,
            pid_file,
            log_dir,
            cluster_listen,
            cluster_seed,
        } => {
            crate::process::ignore_reload_signals();
            crate::array::run(crate::array::UpOptions {
                config,
                listen,
                data,
                pid_file,
                log_dir,
                cluster_listen,
                cluster_seeds: cluster_seed,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload {
            target,
            no_wait,
            timeout,
        } => control::reload(&target, !no_wait, Duration::from_secs(timeout)),
        Command::Rotate { target } => control::rotate(&target),
        Command::Status {
            admin,
            config,
            watch,
            interval,
            json,
        } => {
            let admin = match (admin, config) {
                (Some(a), _) => a,
                (None, Some(path)) => {
                    config::load(&path, FileKind::Toml)?.admin.ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: no [admin] listen: `carpool up` serves no status for it",
                            path.display()
                        )
                    })?
                }
                (None, None) => status::DEFAULT_ADMIN,
            };
            status::run(admin, watch.then(|| Duration::from_secs(interval)), json)
        }
        Command::Stop { target, timeout } => control::stop(&target, Duration::from_secs(timeout)),
        Command::Config {
            what: crate::cli::ConfigCommand::Default,
        } => {
            print!("{}", crate::array::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A cache's settings: its entry of the array config (or the defaults), then
/// the command line's.
fn cache_settings(args: CacheArgs) -> Result<CacheSettings> {
    let file = match (&args.config, &args.name) {
        (Some(path), Some(_)) => Some(load_reporting(path, Some(FileKind::Toml))?),
        _ => None,
    };
    let mut settings = match (&file, &args.name) {
        (Some(config), Some(name)) => config.cache_settings(name)?,
        _ => CacheSettings::default(),
    };
    if let Some(l) = args.listen {
        settings.server.listen = l;
    }
    let announce = match args.cluster_listen {
        Some(listen) => Some(announce(&args, file.as_ref(), listen, &settings)),
        None if args.config.is_none() && args.name.is_some() => anyhow::bail!(
            "--name without -c names the cache only to a cluster: give --cluster-listen (or -c FILE for a [[parent]] of FILE)"
        ),
        None => None,
    };
    if args.dir.is_some() {
        settings.dir = args.dir;
    }
    if let Some(m) = args.mem {
        settings.mem = m;
    }
    if let Some(d) = args.disk {
        settings.disk = d;
    }
    if let Some(n) = args.workers {
        settings.server.workers = n;
    }
    if args.access_log.is_some() {
        settings.server.access_log = args.access_log;
    }
    settings.announce = announce;
    Ok(settings)
}

/// How a cache given `--cluster-listen LISTEN` announces itself: the
/// config's `[cluster]` (its id, seeds and interval; the node is this
/// cache's own), `--cluster-seed`/`--cluster-id` over them; its
/// `[[parent]]` name and weight, `--name`/`--weight` over them.
fn announce(
    args: &CacheArgs,
    file: Option<&Config>,
    listen: std::net::SocketAddr,
    settings: &CacheSettings,
) -> crate::config::settings::Announce {
    use crate::config::settings::{Announce, ClusterSettings};
    let mut cluster = ClusterSettings::new(listen);
    if let Some(c) = file.and_then(|f| f.cluster.as_ref()) {
        cluster.seeds = c.seeds.clone();
        cluster.cluster_id = c.cluster_id.clone();
        cluster.gossip_interval = c.gossip_interval;
    }
    if !args.cluster_seed.is_empty() {
        cluster.seeds = args.cluster_seed.clone();
    }
    if let Some(id) = &args.cluster_id {
        cluster.cluster_id = id.clone();
    }
    let entry = file
        .zip(args.name.as_ref())
        .and_then(|(f, n)| f.parents.iter().find(|p| p.name == *n));
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "{}:{}",
            crate::config::settings::hostname(),
            settings.server.listen.port()
        )
    });
    Announce {
        cluster,
        name,
        weight: args.weight.or(entry.map(|p| p.weight)).unwrap_or(1),
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cache_args(args: &[&str]) -> CacheArgs {
        let mut all = vec!["carpool", "cache"];
        all.extend(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Cache(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// The announcement `carpool cache ARGS` makes, if any.
    fn announce_of(args: &[&str]) -> Option<crate::config::settings::Announce> {
        cache_settings(cache_args(args)).unwrap().announce
    }

    /// A cache announcing itself takes the cluster's id, seeds and interval
    /// from its config's `[cluster]` (never its listen address nor node
    /// name: those are the frontend's) and its name and weight from its
    /// `[[parent]]`; flags override them.
    #[test]
    fn a_cache_announces_itself_from_its_config_and_flags() {
        let dir = std::env::temp_dir().join(format!("carpool-announce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("array.toml");
        std::fs::write(
            &file,
            "[cluster]\nlisten = \"127.0.0.1:7946\"\nseeds = [\"10.0.1.10:7946\"]\n\
             node = \"fe1\"\ncluster_id = \"shop\"\ngossip_interval = 0.2\n\
             [[parent]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = 4001\nweight = 3\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let a = announce_of(&[
            "-c",
            path,
            "--name",
            "c1",
            "--cluster-listen",
            "127.0.0.1:7999",
        ])
        .unwrap();
        assert_eq!((a.name.as_str(), a.weight), ("c1", 3));
        assert_eq!(a.cluster.listen.port(), 7999);
        assert_eq!(a.cluster.seeds, ["10.0.1.10:7946"]);
        assert_eq!(a.cluster.cluster_id, "shop");
        assert_eq!(a.cluster.gossip_interval, Duration::from_millis(200));
        assert_ne!(a.cluster.node, "fe1");
        assert!(a.cluster.node.ends_with(":7999"), "{}", a.cluster.node);
        let a = announce_of(&[
            "-c",
            path,
            "--name",
            "c1",
            "--cluster-listen",
            "127.0.0.1:7999",
            "--weight",
            "5",
            "--cluster-seed",
            "127.0.0.1:7000",
            "--cluster-id",
            "other",
        ])
        .unwrap();
        assert_eq!(a.weight, 5);
        assert_eq!(a.cluster.seeds, ["127.0.0.1:7000"]);
        assert_eq!(a.cluster.cluster_id, "other");
        // without a config: defaults, named after the listener
        let a = announce_of(&[
            "--listen",
            "127.0.0.1:4100",
            "--cluster-listen",
            "127.0.0.1:7998",
        ])
        .unwrap();
        assert!(a.name.ends_with(":4100"), "{}", a.name);
        assert_eq!((a.weight, a.cluster.cluster_id.as_str()), (1, "carpool"));
        // and without --cluster-listen, no announcement
        assert!(announce_of(&["-c", path, "--name", "c1"]).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
