//! Configuration: the array described by a `carpool.toml`, or by the
//! `cache_peer` lines of a `squid.conf` (which implies `hash = "squid"`).
//!
//! Every error names the file, the line and the key it is about.

pub mod refresh;
pub mod settings;
pub mod squid;
mod toml_file;

use std::fmt;
use std::path::{Path, PathBuf};

use carp::{KeySpec, Member, Mode, Table};

pub use squid::parse_squid_conf;
pub use toml_file::parse_toml;

/// One parent cache of the array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    /// The name that is hashed (and shown in logs).
    pub name: String,
    /// Address the frontend connects to.
    pub host: String,
    /// HTTP port.
    pub port: u16,
    /// Relative weight (≥ 1; a squid.conf weight below 1 counts as 1).
    pub weight: u32,
    /// Which URL parts this parent hashes.
    pub carp_key: Option<KeySpec>,
    /// Most connections open to this parent at once, all workers together (0: no limit).
    pub max_conn: u32,
    /// The frontend forwards the client's `Proxy-Authorization` to this
    /// parent unchanged and passes its `Proxy-Authenticate` challenges back
    /// (Squid's `cache_peer ... login=PASS`): for a parent that
    /// authenticates the clients itself. Off, both stop at the frontend as
    /// hop-by-hop fields. `Authorization` (to the origin) is end-to-end and
    /// goes to every parent either way.
    pub pass_credentials: bool,
    /// Line of the file where the parent is defined.
    pub line: usize,
    /// This cache's own storage settings (over `[cache]`).
    pub own: CacheOverrides,
}

/// A cache's own `dir`, `mem`, `disk` and `access_log` in its `[[parent]]`
/// entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheOverrides {
    /// Disk tier directory.
    pub dir: Option<PathBuf>,
    /// Memory tier size.
    pub mem: Option<settings::Budget>,
    /// Disk tier size.
    pub disk: Option<settings::Budget>,
    /// Access log.
    pub access_log: Option<httpx::accesslog::Destination>,
}

/// An array configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where it was read from.
    pub source: PathBuf,
    /// Hash mode.
    pub hash: Mode,
    /// Parents in configuration order.
    pub parents: Vec<Parent>,
    /// Frontend settings.
    pub frontend: settings::FrontendSettings,
    /// Parent health checking.
    pub health: settings::HealthSettings,
    /// Cache settings shared by the array's caches (`[cache]`).
    pub cache: settings::CacheSettings,
    /// `carpool up`'s status listener (`[admin] listen`; loopback only).
    pub admin: Option<std::net::SocketAddr>,
    /// The frontends' gossip (`[cluster]`), when set.
    pub cluster: Option<settings::ClusterSettings>,
    /// Where `carpool up` writes the access logs the config does not place
    /// (`log_dir`; default: the data directory's `logs`).
    pub log_dir: Option<PathBuf>,
    /// Things that were read but ignored (squid.conf peers that are not CARP parents, …).
    pub warnings: Vec<String>,
}

impl Config {
    /// The routing table of this configuration.
    pub fn table(&self) -> Result<Table, ConfigError> {
        let members = self
            .parents
            .iter()
            .map(|p| Member {
                name: p.name.clone(),
                weight: p.weight,
                key: p.carp_key,
            })
            .collect();
        Table::new(self.hash, members).map_err(|e| ConfigError {
            file: self.source.clone(),
            line: self.parents.first().map_or(1, |p| p.line),
            key: "parent".into(),
            message: e.to_string(),
        })
    }
}

impl Config {
    /// The settings of the cache named `name` (a `[[parent]]` of this
    /// array): `[cache]`, then the entry's own `dir`/`mem`/`disk`/
    /// `access_log` (`{name}` in an access log path is the cache's name); it
    /// listens on the entry's host and port. A `[cache] dir` is shared by
    /// the array's caches, each in a subdirectory named after it.
    pub fn cache_settings(&self, name: &str) -> Result<settings::CacheSettings, ConfigError> {
        let Some(p) = self.parents.iter().find(|p| p.name == name) else {
            let names: Vec<&str> = self.parents.iter().map(|p| p.name.as_str()).collect();
            return Err(ConfigError {
                file: self.source.clone(),
                line: 1,
                key: "parent".into(),
                message: format!(
                    "no [[parent]] named {name:?} (the parents are: {})",
                    names.join(", ")
                ),
            });
        };
        let mut s = self.cache.clone();
        let host = p.host.trim_start_matches('[').trim_end_matches(']');
        s.server.listen = std::net::ToSocketAddrs::to_socket_addrs(&(host, p.port))
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ConfigError {
                file: self.source.clone(),
                line: p.line,
                key: "host".into(),
                message: format!("cannot resolve {:?} to listen on", p.host),
            })?;
        s.dir = match (&p.own.dir, &s.dir) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(shared)) => Some(shared.join(&p.name)),
            (None, None) => None,
        };
        if let Some(m) = p.own.mem {
            s.mem = m;
        }
        if let Some(d) = p.own.disk {
            s.disk = d;
        }
        if let Some(l) = &p.own.access_log {
            s.server.access_log = Some(l.clone());
        }
        // one file per cache: `{name}` in a shared `[cache] access_log`
        if let Some(httpx::accesslog::Destination::File(f)) = &mut s.server.access_log {
            let named = f.to_string_lossy().replace("{name}", &p.name);
            *f = PathBuf::from(named);
        }
        s.server.listener_name = p.name.clone();
        if s.server.visible_hostname.is_none() {
            s.server.visible_hostname = Some(p.name.clone());
        }
        Ok(s)
    }
}

/// A configuration error: file, line, key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The key or directive concerned.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about the whole file (it cannot be read), not one line.
    fn whole_file(path: &Path, message: String) -> ConfigError {
        ConfigError {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // about the whole file: the message names it
            return f.write_str(&self.message);
        }
        write!(
            f,
            "{}:{}: `{}`: {}",
            self.file.display(),
            self.line,
            self.key,
            self.message
        )
    }
}

/// Every error found in one configuration file, in line order, so one run
/// of `carpool check` shows them all. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    first: ConfigError,
    rest: Vec<ConfigError>,
}

impl ConfigErrors {
    /// The errors, sorted by line; `None` when there are none.
    pub fn new(mut errors: Vec<ConfigError>) -> Option<ConfigErrors> {
        errors.sort_by_key(|e| e.line);
        errors.dedup();
        let mut it = errors.into_iter();
        let first = it.next()?;
        Some(ConfigErrors {
            first,
            rest: it.collect(),
        })
    }

    /// All errors, in line order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> ConfigErrors {
        ConfigErrors {
            first: e,
            rest: Vec::new(),
        }
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line; a single error reads as [`ConfigError`] does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Which kind of file a path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// carpool.toml
    Toml,
    /// squid.conf
    Squid,
}

/// Reads a file of the given kind.
pub fn load(path: &Path, kind: FileKind) -> Result<Config, ConfigErrors> {
    let text = std::fs::read(path).map_err(|e| {
        ConfigError::whole_file(path, format!("cannot read {}: {e}", path.display()))
    })?;
    match kind {
        FileKind::Toml => {
            let text = String::from_utf8(text).map_err(|e| ConfigError {
                file: path.to_path_buf(),
                line: line_of_offset(
                    &String::from_utf8_lossy(e.as_bytes()),
                    e.utf8_error().valid_up_to(),
                ),
                key: "-".into(),
                message: "not valid UTF-8".into(),
            })?;
            parse_toml(path, &text).map_err(|e| {
                if looks_like_squid_conf(text.as_bytes()) {
                    let message = format!(
                        "{} looks like a squid.conf (it has cache_peer lines): \
                         give it with --squid-conf",
                        path.display()
                    );
                    let hint = ConfigError::whole_file(path, message);
                    ConfigErrors::from(hint)
                } else {
                    e
                }
            })
        }
        FileKind::Squid => parse_squid_conf(path, &text),
    }
}

/// Whether a file reads as a squid.conf: it has a `cache_peer` line.
fn looks_like_squid_conf(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n')
        .any(|l| l.trim_ascii_start().starts_with(b"cache_peer"))
}

/// Reads a file, telling the kind from its name (`.toml`) or its content
/// (a `cache_peer` line means squid.conf).
pub fn load_any(path: &Path) -> Result<Config, ConfigErrors> {
    let kind = if path.extension().is_some_and(|e| e == "toml") {
        FileKind::Toml
    } else if path.extension().is_some_and(|e| e == "conf") {
        FileKind::Squid
    } else {
        match std::fs::read(path) {
            Ok(text) if looks_like_squid_conf(&text) => FileKind::Squid,
            _ => FileKind::Toml,
        }
    };
    load(path, kind)
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
