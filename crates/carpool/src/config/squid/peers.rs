//! `cache_peer` lines, read as Squid 5.7 reads them: `cache_peer HOST TYPE
//! HTTP-PORT ICP-PORT [OPTIONS]`. A CARP parent keeps `name=` (else the
//! host as written; any bytes, hashed as they are), `weight=` (below 1
//! counts as 1) and `carp-key=` (parts matched by prefix, as Squid does).

use carp::table::escape_name;
use carp::KeySpec;

use super::source::Directive;
use crate::config::ConfigError;

/// What a peer is to Squid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `parent` with the `carp` option: a member of the array.
    Carp,
    /// `parent` with `originserver`: the origin of an accelerator.
    Origin,
    /// Another `parent` (a cache's upstream proxy).
    Parent,
    /// `sibling` or `multicast`.
    Other,
}

/// One `cache_peer` line.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its name (escaped where not UTF-8: [`carp::table::escape_name`]).
    pub name: String,
    /// Host, lower case.
    pub host: String,
    /// HTTP port.
    pub port: u16,
    /// What it is.
    pub kind: Kind,
    /// `weight=`, at least 1.
    pub weight: u32,
    /// `carp-key=`.
    pub carp_key: Option<KeySpec>,
    /// `max-conn=` (0: none).
    pub max_conn: u32,
    /// `connect-fail-limit=`.
    pub fail_limit: Option<u32>,
    /// `connect-timeout=`, in seconds.
    pub connect_timeout: Option<u32>,
    /// `login=PASS` or `login=PASSTHRU` (the same for a frontend without
    /// external ACLs).
    pub pass_credentials: bool,
    /// Options with no meaning to carpool (no ICP, digests or netdb).
    pub needless: Vec<String>,
    /// Options carpool does not honour.
    pub unsupported: Vec<String>,
}

/// Options that need nothing in carpool: it speaks no ICP or HTCP, keeps
/// no digests or netdb, and a frontend stores nothing of its own.
const NEEDLESS: [&str; 6] = [
    "no-query",
    "no-digest",
    "no-netdb-exchange",
    "proxy-only",
    "no-delay",
    "no-tproxy",
];

/// Reads a `cache_peer` line. A name that is not UTF-8 is kept escaped;
/// every other word carpool reads must be text.
pub fn read(d: &Directive) -> Result<Peer, ConfigError> {
    let err = |key: &str, message: String| d.at.error(key, message);
    let missing = |what: &str| err("cache_peer", format!("missing {what}"));
    let mut name: Option<&[u8]> = None;
    let mut text: Vec<&str> = Vec::with_capacity(d.words.len());
    for (i, w) in d.words.iter().enumerate().skip(1) {
        if i >= 5 {
            if let Some(n) = w.strip_prefix(b"name=").filter(|n| !n.is_empty()) {
                name = Some(n);
                continue;
            }
        }
        match std::str::from_utf8(w) {
            Ok(t) => text.push(t),
            Err(_) => {
                let w = String::from_utf8_lossy(w);
                let message = format!("{w:?} is not valid UTF-8 (only name= may hold other bytes)");
                return Err(err("cache_peer", message));
            }
        }
    }
    let mut tokens = text.into_iter();
    let host = tokens.next().ok_or_else(|| missing("hostname"))?;
    if host.contains(|c: char| c.is_control() || c.is_whitespace()) {
        let message = format!("hostname {host:?} holds a control character");
        return Err(err("cache_peer", message));
    }
    let kind = tokens
        .next()
        .ok_or_else(|| missing("peer type (parent, sibling, multicast)"))?;
    if !matches!(kind, "parent" | "sibling" | "multicast") {
        return Err(err("cache_peer", format!("unknown peer type {kind:?}")));
    }
    let port_text = tokens.next().ok_or_else(|| missing("http port"))?;
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            let message = format!("http port {port_text:?} is not a TCP port");
            err("cache_peer", message)
        })?;
    if tokens.next().is_none() {
        return Err(missing("icp port (use 0)"));
    }
    let mut p = Peer {
        name: escape_name(name.unwrap_or(host.as_bytes())),
        host: host.to_ascii_lowercase(),
        port,
        kind: Kind::Other,
        weight: 1,
        carp_key: None,
        max_conn: 0,
        fail_limit: None,
        connect_timeout: None,
        pass_credentials: false,
        needless: Vec::new(),
        unsupported: Vec::new(),
    };
    let (mut carp, mut origin) = (false, false);
    for opt in tokens {
        let number = |key: &str, v: &str| {
            v.parse::<u32>()
                .map_err(|_| err(key, format!("{v:?} is not a whole number")))
        };
        if let Some(w) = opt.strip_prefix("weight=") {
            let w = w
                .parse::<i32>()
                .map_err(|_| err("weight", format!("{w:?} is not an integer")))?;
            p.weight = w.max(1) as u32;
        } else if opt == "carp" {
            if kind != "parent" {
                return Err(err("carp", format!("carp on a non-parent peer {}", p.host)));
            }
            carp = true;
        } else if let Some(k) = opt.strip_prefix("carp-key=") {
            if !carp {
                let message = "carp-key before (or without) the carp option".into();
                return Err(err("carp-key", message));
            }
            let key = KeySpec::parse_squid(k).map_err(|e| err("carp-key", e.to_string()))?;
            p.carp_key = Some(key);
        } else if let Some(m) = opt.strip_prefix("max-conn=") {
            p.max_conn = m
                .parse::<u32>()
                .map_err(|_| err("max-conn", format!("{m:?} is not a connection count")))?;
        } else if let Some(v) = opt.strip_prefix("connect-fail-limit=") {
            p.fail_limit = Some(number("connect-fail-limit", v)?.max(1));
        } else if let Some(v) = opt.strip_prefix("connect-timeout=") {
            p.connect_timeout = Some(number("connect-timeout", v)?);
        } else if opt == "login=PASS" || opt == "login=PASSTHRU" {
            p.pass_credentials = true;
        } else if opt.starts_with("login=") {
            // never repeat a password in a warning
            p.unsupported
                .push("login=… (only PASS and PASSTHRU)".into());
        } else if opt == "originserver" {
            origin = true;
        } else if NEEDLESS.contains(&opt) {
            p.needless.push(opt.to_string());
        } else if !opt.starts_with("name=") {
            p.unsupported.push(opt.to_string());
        }
    }
    p.kind = match (kind, carp, origin) {
        ("parent", true, _) => Kind::Carp,
        ("parent", false, true) => Kind::Origin,
        ("parent", false, false) => Kind::Parent,
        _ => Kind::Other,
    };
    if carp && origin {
        p.unsupported.push("originserver".into());
    }
    Ok(p)
}
