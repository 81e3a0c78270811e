//! What each squid.conf directive becomes: its carpool.toml keys, a remark
//! (carpool does it by design), or a [`Note`](super::Note) saying why it is
//! not carried over.

use std::collections::HashMap;

use super::emit::{self, Doc};
use super::peers::{Kind, Peer};
use super::source::{At, Directive};
use super::{Role, Tr};

/// Directives with nothing to carry over, and why.
const NOT_CARRIED: [(&str, &str); 22] = [
    ("https_port", "carpool has no TLS listener yet"),
    (
        "coredump_dir",
        "carpool does not change its working directory",
    ),
    ("pid_filename", "give `--pid-file` to carpool"),
    (
        "cache_effective_user",
        "start carpool as the user it should run as",
    ),
    (
        "cache_effective_group",
        "start carpool as the user it should run as",
    ),
    (
        "logfile_rotate",
        "carpool reopens its logs on `carpool rotate` (SIGUSR1); rotate with logrotate",
    ),
    (
        "cache_log",
        "carpool logs to stderr (CARPOOL_LOG sets the level)",
    ),
    (
        "debug_options",
        "carpool logs to stderr (CARPOOL_LOG sets the level)",
    ),
    ("cache_store_log", "carpool writes no store log"),
    ("icp_port", "carpool speaks no ICP"),
    ("htcp_port", "carpool speaks no HTCP"),
    ("icp_access", "carpool speaks no ICP"),
    ("htcp_access", "carpool speaks no HTCP"),
    ("snmp_port", "carpool has no SNMP agent"),
    ("snmp_access", "carpool has no SNMP agent"),
    (
        "cache_peer_access",
        "carpool routes every URL by CARP alone: a peer restricted to some requests is not",
    ),
    (
        "cache_peer_domain",
        "carpool routes every URL by CARP alone: a peer restricted to some domains is not",
    ),
    ("http_reply_access", "carpool has no reply access rules"),
    ("dns_nameservers", "carpool uses the system resolver"),
    ("hosts_file", "carpool uses the system resolver"),
    (
        "memory_pools",
        "carpool's allocator returns freed memory by itself",
    ),
    (
        "cache_swap_low",
        "carpool's disk tier evicts by its own budget",
    ),
];

/// The peers: a frontend's carp parents; a backend's origin server or
/// upstream proxy, and the `[[parent]]` entry the backend itself becomes.
pub fn peers(tr: &mut Tr, list: &[(&Directive, Peer)], top: &At, all: &[Directive]) {
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut carp = 0;
    for (d, p) in list {
        let key = carp::table::unescape_name(&p.name).to_ascii_lowercase();
        if let Some(line) = seen.get(&key) {
            let message = format!(
                "cache_peer {} specified twice (first on line {line})",
                p.name
            );
            tr.errors.push(d.at.error("name", message));
            continue;
        }
        seen.insert(key, d.at.line);
        for o in &p.unsupported {
            tr.note(d, format!("option {o} is not carried over"));
        }
        match (tr.role, p.kind) {
            (Role::Frontend, Kind::Carp) => {
                carp += 1;
                if carp > carp::MAX_MEMBERS {
                    let message =
                        format!("at most {} carp parents are supported", carp::MAX_MEMBERS);
                    tr.errors.push(d.at.error("cache_peer", message));
                    continue;
                }
                carp_parent(tr, d, p);
            }
            (Role::Frontend, _) => tr.note(
                d,
                format!(
                    "cache_peer {} is not a parent with the carp option: a carpool frontend sends every request to its carp parents",
                    p.name
                ),
            ),
            (Role::Cache, Kind::Origin) => {
                let v = emit::string(&format!("{}:{}", host_for_toml(&p.host), p.port));
                if tr.doc.has("cache", "origin_server") {
                    tr.note(d, "carpool sends a cache's misses to one origin server: the first one is kept");
                } else {
                    tr.set(d, "origin_server", v);
                }
            }
            (Role::Cache, Kind::Parent) => {
                let v = emit::string(&format!("{}:{}", host_for_toml(&p.host), p.port));
                if tr.doc.has("cache", "upstream_proxy") {
                    tr.note(d, "carpool sends a cache's misses through one upstream proxy: the first one is kept");
                } else {
                    tr.set(d, "upstream_proxy", v);
                }
            }
            (Role::Cache, Kind::Carp) => {
                unreachable!("a squid.conf with carp parents is a frontend")
            }
            (Role::Cache, Kind::Other) => tr.note(
                d,
                format!("cache_peer {}: carpool caches have no siblings", p.name),
            ),
        }
    }
    if tr.role == Role::Frontend && carp == 0 && tr.errors.is_empty() {
        let message = "no `cache_peer ... parent ... carp` lines".into();
        tr.errors.push(top.error("cache_peer", message));
    }
    if tr.role == Role::Cache {
        cache_itself(tr, top, all);
    }
}

/// A host as carpool.toml writes it with a port (`[::1]` for IPv6).
fn host_for_toml(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// A carp parent: a `[[parent]]`; its health options into `[health]` and
/// `[frontend]` (one value for every parent in carpool).
fn carp_parent(tr: &mut Tr, d: &Directive, p: &Peer) {
    let src = d.text();
    let h = tr.doc.push("parent", None);
    tr.doc.add(h, "name", emit::string(&p.name), &d.at, &src);
    tr.doc.add(h, "host", emit::string(&p.host), &d.at, &src);
    tr.doc.add(h, "port", p.port.to_string(), &d.at, &src);
    if p.weight != 1 {
        tr.doc.add(h, "weight", p.weight.to_string(), &d.at, &src);
    }
    if let Some(k) = p.carp_key {
        tr.doc
            .add(h, "carp_key", emit::string(&k.to_string()), &d.at, &src);
    }
    if p.max_conn > 0 {
        tr.doc
            .add(h, "max_conn", p.max_conn.to_string(), &d.at, &src);
    }
    if p.pass_credentials {
        tr.doc
            .add(h, "pass_credentials", "true".into(), &d.at, &src);
    }
    let shared = [
        ("health", "fail_limit", p.fail_limit),
        ("frontend", "parent_connect_timeout", p.connect_timeout),
    ];
    for (table, key, value) in shared {
        let Some(v) = value else { continue };
        if !tr.doc.set(table, key, v.to_string(), &d.at, &src) {
            tr.note(
                d,
                format!(
                    "carpool has one [{table}] {key} for every parent: the first one given is kept"
                ),
            );
        }
    }
}

/// A backend's own `[[parent]]`: named after `visible_hostname` (else
/// `cache`), on the address of its first `http_port`.
fn cache_itself(tr: &mut Tr, top: &At, all: &[Directive]) {
    let word = |name: &str| {
        all.iter()
            .find(|d| d.name() == name)
            .and_then(|d| d.args().ok().and_then(|a| a.first().map(|s| s.to_string())))
    };
    let name = word("visible_hostname").unwrap_or_else(|| "cache".into());
    let port_line = all.iter().find(|d| d.name() == "http_port");
    let (host, port, at, src) = match port_line.and_then(|d| d.args().ok().map(|a| (d, a))) {
        Some((d, a)) => match a.first().map(|s| split_listen(s)) {
            Some(Ok((h, p))) => (h, p, d.at.clone(), d.text()),
            _ => return, // http_port's own error is reported
        },
        None => ("0.0.0.0".to_string(), 3128, top.clone(), String::new()),
    };
    let h = tr.doc.push(
        "parent",
        Some("this cache (run it with `carpool cache -c THIS --name NAME`)".into()),
    );
    tr.doc.add(h, "name", emit::string(&name), &at, &src);
    tr.doc.add(h, "host", emit::string(&host), &at, &src);
    tr.doc.add(h, "port", port.to_string(), &at, &src);
}

/// `http_port`'s address: `PORT`, `ADDR:PORT` or `[V6]:PORT`.
fn split_listen(spec: &str) -> Result<(String, u16), String> {
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(("0.0.0.0".into(), port));
    }
    let addr: std::net::SocketAddr = spec
        .parse()
        .map_err(|_| format!("{spec:?} is not PORT or ADDRESS:PORT"))?;
    Ok((addr.ip().to_string(), addr.port()))
}

/// One directive (the peers are done by [`peers`]).
pub fn one(tr: &mut Tr, d: &Directive) {
    let role = tr.role;
    match d.name() {
        "cache_peer" => {}
        "acl" => tr.access.acl(d, &mut tr.errors, &mut tr.notes),
        "http_access" => tr.access.http_access(d, &mut tr.errors),
        "http_port" => http_port(tr, d),
        "visible_hostname" => {
            if let Some(v) = first(tr, d) {
                tr.set(d, "visible_hostname", emit::string(&v));
            }
        }
        "workers" => {
            if let Some(v) = first(tr, d) {
                tr.set(d, "workers", v);
            }
        }
        "access_log" => access_log(tr, d),
        "logformat" => tr.note(
            d,
            "custom log formats are not carried over: carpool writes squid, common, combined or json",
        ),
        "forward_timeout" => seconds(tr, d, "forward_timeout"),
        "shutdown_lifetime" => seconds(tr, d, "shutdown_timeout"),
        "peer_connect_timeout" if role == Role::Frontend => {
            seconds(tr, d, "parent_connect_timeout")
        }
        "connect_timeout" if role == Role::Cache => seconds(tr, d, "origin_connect_timeout"),
        "connect_timeout" => tr.note(
            d,
            "a carpool frontend connects to its parents only (peer_connect_timeout)",
        ),
        "request_header_max_size" => {
            if let Some(b) = bytes(tr, d, "bytes") {
                tr.set(d, "max_header_bytes", b.to_string());
            }
        }
        "never_direct" if role == Role::Frontend => {
            tr.remark(d, "a carpool frontend always sends requests to a parent")
        }
        "always_direct" if role == Role::Frontend => tr.note(
            d,
            "a carpool frontend always sends requests to a parent, never direct",
        ),
        "cache" if role == Role::Frontend => {
            tr.remark(d, "a carpool frontend stores nothing; the caches store")
        }
        "cache_mem" | "cache_dir" | "maximum_object_size" | "maximum_object_size_in_memory"
        | "refresh_pattern"
            if role == Role::Frontend =>
        {
            tr.note(
                d,
                "a carpool frontend stores nothing: give the caches' storage in [cache] (carpool up) or import their own squid.conf",
            )
        }
        "cache_mem" => {
            if let Some(b) = bytes(tr, d, "bytes") {
                tr.set(d, "mem", emit::string(&size_text(b)));
            }
        }
        "maximum_object_size" => {
            if let Some(b) = bytes(tr, d, "bytes") {
                tr.set(d, "max_object_size", emit::string(&size_text(b)));
            }
        }
        "maximum_object_size_in_memory" => {
            if let Some(b) = bytes(tr, d, "bytes") {
                tr.set(d, "mem_max_object", emit::string(&size_text(b)));
            }
        }
        "cache_dir" => cache_dir(tr, d),
        "refresh_pattern" => refresh_pattern(tr, d),
        "never_direct" | "always_direct" | "cache" => tr.note(
            d,
            "carpool caches have no rules for this: they store what RFC 9111 allows, and go to the origin (or the upstream proxy) for misses",
        ),
        name => {
            let why = NOT_CARRIED
                .iter()
                .find(|(n, _)| *n == name)
                .map_or("carpool has no equivalent", |(_, why)| why);
            tr.note(d, why);
        }
    }
}

/// The first argument of `d`, or an error.
fn first(tr: &mut Tr, d: &Directive) -> Option<String> {
    match d.args() {
        Ok(a) if !a.is_empty() => Some(a[0].to_string()),
        Ok(_) => {
            tr.errors
                .push(d.at.error(d.name(), "missing its value".into()));
            None
        }
        Err(e) => {
            tr.errors.push(e);
            None
        }
    }
}

/// `http_port [ADDR:]PORT [accel] [defaultsite=H] [vhost] [name=N] ...`.
fn http_port(tr: &mut Tr, d: &Directive) {
    let args = match d.args() {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            return tr
                .errors
                .push(d.at.error("http_port", "missing port".into()))
        }
        Err(e) => return tr.errors.push(e),
    };
    let (host, port) = match split_listen(args[0]) {
        Ok(x) => x,
        Err(m) => return tr.errors.push(d.at.error("http_port", m)),
    };
    if tr.doc.has(tr.role.section(), "port_name") {
        return tr.note(
            d,
            "carpool listens on one address: only the first http_port is carried over (give `carpool frontend --listen` for another)",
        );
    }
    // Squid's port name (myportname): name=, else the port as written
    let mut name = args[0].to_string();
    let (mut accel, mut vhost, mut site) = (false, false, None);
    for opt in &args[1..] {
        if *opt == "accel" {
            accel = true;
        } else if *opt == "vhost" {
            vhost = true;
        } else if let Some(s) = opt.strip_prefix("defaultsite=") {
            site = Some(s.to_string());
        } else if let Some(n) = opt.strip_prefix("name=") {
            name = n.to_string();
        } else {
            tr.note(d, format!("http_port option {opt} is not carried over"));
        }
    }
    tr.set(d, "port_name", emit::string(&name));
    if tr.role == Role::Cache {
        if accel {
            tr.note(
                d,
                "a carpool cache takes the frontends' requests: accelerator settings belong to the frontend ([frontend] mode = \"accel\")",
            );
        }
        return;
    }
    let listen = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    tr.set(d, "listen", emit::string(&listen));
    if accel {
        tr.set(d, "mode", emit::string("accel"));
        // Squid's default: a defaultsite is the site of every request
        tr.set(d, "vhost", vhost.to_string());
    }
    if let Some(s) = site {
        tr.set(d, "default_site", emit::string(&s));
    }
}

/// `access_log none | [MODULE:]PATH [FORMAT | logformat=FORMAT] [ACL...]`.
fn access_log(tr: &mut Tr, d: &Directive) {
    let args = match d.args() {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            return tr
                .errors
                .push(d.at.error("access_log", "missing its file".into()))
        }
        Err(e) => return tr.errors.push(e),
    };
    if tr.doc.has(tr.role.section(), "access_log") {
        return tr.note(
            d,
            "carpool writes one access log per server: the first access_log is kept",
        );
    }
    let dest = args[0];
    let path = match dest.split_once(':') {
        _ if dest == "none" => "none".to_string(),
        Some(("stdio" | "daemon", p)) => p.to_string(),
        Some((module, _)) if !dest.starts_with('/') => {
            return tr.note(d, format!("log module {module}: carpool writes files only"));
        }
        _ => dest.to_string(),
    };
    let path = if path == "/dev/stdout" {
        "-".into()
    } else {
        path
    };
    tr.set(d, "access_log", emit::string(&path));
    let mut rest = args[1..].iter();
    let format = match rest.clone().next() {
        Some(f) => f.strip_prefix("logformat=").unwrap_or(f),
        None => "squid",
    };
    if args.len() > 1 {
        rest.next();
    }
    match format {
        "squid" | "common" | "combined" => {
            tr.set(d, "access_log_format", emit::string(format));
        }
        other => tr.note(
            d,
            format!("log format {other} is not carried over: the log is written in squid format"),
        ),
    }
    if rest.next().is_some() {
        tr.note(
            d,
            "access_log ACLs are not carried over: every request is logged",
        );
    }
}

/// A time directive (`30 seconds`, `2 minutes`; seconds without a unit)
/// into the role's `key`, in seconds.
fn seconds(tr: &mut Tr, d: &Directive, key: &str) {
    let args = match d.args() {
        Ok(a) => a,
        Err(e) => return tr.errors.push(e),
    };
    let Some(n) = args.first().and_then(|n| n.parse::<f64>().ok()) else {
        let message = "give a time, like `30 seconds` or `2 minutes`".into();
        return tr.errors.push(d.at.error(d.name(), message));
    };
    let unit = args.get(1).copied().unwrap_or("seconds");
    let scale = match unit.trim_end_matches('s') {
        "millisecond" | "m" => 0.001,
        "second" | "" => 1.0,
        "minute" => 60.0,
        "hour" => 3600.0,
        "day" => 86400.0,
        "week" => 7.0 * 86400.0,
        _ => {
            let message = format!("unknown time unit {unit:?}");
            return tr.errors.push(d.at.error(d.name(), message));
        }
    };
    let table = match key {
        "parent_connect_timeout" => "frontend",
        "origin_connect_timeout" => "cache",
        _ => tr.role.section(),
    };
    tr.set_in(table, d, key, format_number(n * scale));
}

/// A number as TOML: an integer when it is one.
fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A size directive (`256 MB`; `default_unit` without a unit), in bytes.
fn bytes(tr: &mut Tr, d: &Directive, default_unit: &str) -> Option<u64> {
    let args = match d.args() {
        Ok(a) => a,
        Err(e) => {
            tr.errors.push(e);
            return None;
        }
    };
    let unit = args.get(1).copied().unwrap_or(default_unit);
    match (args.first().map(|n| n.parse::<f64>()), unit_bytes(unit)) {
        (Some(Ok(n)), Some(scale)) if n >= 0.0 && (n * scale as f64) < 9.0e18 => {
            Some((n * scale as f64) as u64)
        }
        _ => {
            let message = "give a size, like `256 MB`".to_string();
            tr.errors.push(d.at.error(d.name(), message));
            None
        }
    }
}

/// Squid's size units.
fn unit_bytes(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "byte" | "bytes" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    })
}

/// A size as carpool.toml writes it (`256M`).
fn size_text(b: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", b >> shift);
        }
    }
    b.to_string()
}

/// `cache_dir TYPE DIR MBYTES [L1 L2] [OPTIONS]`: the disk tier, in a
/// `carpool` directory inside DIR (never Squid's own files).
fn cache_dir(tr: &mut Tr, d: &Directive) {
    let args = match d.args() {
        Ok(a) => a,
        Err(e) => return tr.errors.push(e),
    };
    if args.first() == Some(&"null") {
        return tr.remark(d, "no disk tier: memory only");
    }
    let (Some(dir), Some(mb)) = (args.get(1), args.get(2).and_then(|m| m.parse::<u64>().ok()))
    else {
        let message = "give `cache_dir TYPE DIRECTORY MBYTES ...`".into();
        return tr.errors.push(d.at.error("cache_dir", message));
    };
    if tr.doc.has("cache", "dir") {
        return tr.note(
            d,
            "a carpool cache has one disk tier: the first cache_dir is kept",
        );
    }
    let path = std::path::Path::new(dir).join("carpool");
    tr.set(d, "dir", emit::string(&path.to_string_lossy()));
    tr.set(d, "disk", emit::string(&size_text(mb << 20)));
    tr.remark(
        d,
        "carpool keeps its own layout in DIR/carpool/NAME (Squid's objects are not read)",
    );
    let options: Vec<&str> = args
        .iter()
        .skip(3)
        .filter(|o| o.parse::<u64>().is_err())
        .copied()
        .collect();
    for o in options {
        tr.note(d, format!("cache_dir option {o} is not carried over"));
    }
}

/// A year in minutes: Squid's largest `refresh_pattern` time.
const MAX_REFRESH_MINUTES: i64 = 525_600;

/// An integer as C's `strtol` with base 0 reads it: `010` is 8, `0x10` 16.
fn c_integer(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    Some(if neg { -v } else { v })
}

/// `refresh_pattern [-i] REGEX MIN PERCENT MAX [OPTIONS]`: the first match
/// of the URL sets an object's heuristic lifetime.
fn refresh_pattern(tr: &mut Tr, d: &Directive) {
    let args = match d.args() {
        Ok(a) => a,
        Err(e) => return tr.errors.push(e),
    };
    let (insensitive, rest) = match args.first() {
        Some(&"-i") => (true, &args[1..]),
        _ => (false, &args[..]),
    };
    let (Some(regex), Some(min), Some(pct), Some(max)) = (
        rest.first(),
        rest.get(1).and_then(|s| c_integer(s)),
        rest.get(2)
            .and_then(|s| s.trim_end_matches('%').parse::<i64>().ok()),
        rest.get(3).and_then(|s| c_integer(s)),
    ) else {
        let message = "give `refresh_pattern [-i] REGEX MIN PERCENT MAX`".into();
        return tr.errors.push(d.at.error("refresh_pattern", message));
    };
    // Squid crops the minutes to 0..=a year, saying so
    let crop = |m: i64| m.clamp(0, MAX_REFRESH_MINUTES);
    if crop(min) != min || crop(max) != max {
        tr.note(
            d,
            format!("minutes cropped to 0..={MAX_REFRESH_MINUTES}, as Squid does"),
        );
    }
    let (min, max) = (crop(min), crop(max));
    let src = d.text();
    let h = tr.doc.push("cache.refresh_pattern", None);
    tr.doc.add(h, "regex", emit::string(regex), &d.at, &src);
    if insensitive {
        tr.doc
            .add(h, "case_insensitive", "true".into(), &d.at, &src);
    }
    tr.doc.add(h, "min", min.to_string(), &d.at, &src);
    tr.doc.add(h, "percent", pct.to_string(), &d.at, &src);
    tr.doc.add(h, "max", max.to_string(), &d.at, &src);
    for o in &rest[4..] {
        tr.note(d, format!("refresh_pattern option {o} is not carried over"));
    }
}

/// With `http_access` rules, they are the whole policy, as in Squid:
/// carpool's own client and port checks are opened so as not to second-
/// guess them (`local_destinations` stays: Squid's `to_localhost` rule is
/// commented out in its default squid.conf, carpool keeps that check on).
pub fn open_builtin_checks(role: Role, doc: &mut Doc, top: &At) {
    let s = role.section();
    let why = "the http_access rules are the whole policy";
    doc.set(
        s,
        "allow_clients",
        emit::strings(&["0.0.0.0/0", "::/0"]),
        top,
        why,
    );
    doc.set(s, "safe_ports", emit::strings(&["1-65535"]), top, why);
    doc.set(s, "connect_ports", emit::strings(&["1-65535"]), top, why);
}
