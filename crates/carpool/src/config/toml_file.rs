//! `carpool.toml`: serde + toml with spans, so semantic errors point at a line.

use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use carp::{KeySpec, Mode};
use httpx::accesslog::Format;
use httpx::headers::Xff;
use proxy::access::LocalDestinations;
use proxy::rules::{Builder, Rules, TYPES};
use serde::Deserialize;
use toml::Spanned;

use super::refresh::{Limits, RefreshPattern, RefreshPatterns, MAX_MINUTES};
use super::settings::{
    parse_size, Budget, CacheSettings, ClusterSettings, FrontendSettings, HealthSettings, HostPort,
    ListenMode, Probe, ServerSettings, DEFAULT_TARGETED,
};
use super::{line_of_offset, CacheOverrides, Config, ConfigError, ConfigErrors, Parent};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    hash: Option<Spanned<String>>,
    #[serde(default)]
    parent: Vec<Spanned<ParentEntry>>,
    frontend: Option<FrontendEntry>,
    health: Option<HealthEntry>,
    cache: Option<CacheEntry>,
    admin: Option<AdminEntry>,
    cluster: Option<Spanned<ClusterEntry>>,
    log_dir: Option<Spanned<String>>,
    /// ACLs every role's rules may name.
    #[serde(default)]
    acl: Vec<Spanned<AclEntry>>,
    /// The rules of every role without rules of its own.
    http_access: Option<Vec<Spanned<RuleEntry>>>,
}

/// `[[acl]]`: Squid's `acl NAME TYPE VALUES...`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclEntry {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    values: Spanned<Vec<Spanned<AclValue>>>,
}

/// An ACL value: text, or a number (a port).
#[derive(Deserialize)]
#[serde(untagged)]
enum AclValue {
    Text(String),
    Number(i64),
}

/// `[[http_access]]`: Squid's `http_access allow|deny ACL...`, with an
/// optional name for the logs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    deny: Option<Spanned<Vec<Spanned<String>>>>,
    name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminEntry {
    listen: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterEntry {
    listen: Option<Spanned<String>>,
    seeds: Option<Vec<Spanned<String>>>,
    node: Option<Spanned<String>>,
    cluster_id: Option<Spanned<String>>,
    gossip_interval: Option<Spanned<Num>>,
    announced_parents: Option<bool>,
    announced_grace: Option<Spanned<Num>>,
}

/// A port (`80`) or a range of them (`"1025-65535"`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum PortSpec {
    Port(i64),
    Range(String),
}

/// A number of seconds, integer or not.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// A server's section (`[frontend]`, `[cache]`): the keys every server has
/// ([`ServerSettings`]), declared and read in one place, then the role's own.
macro_rules! server_section {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            workers: Option<Spanned<i64>>,
            allow_clients: Option<Vec<Spanned<String>>>,
            purge_clients: Option<Vec<Spanned<String>>>,
            connect_ports: Option<Vec<Spanned<PortSpec>>>,
            port_name: Option<Spanned<String>>,
            safe_ports: Option<Vec<Spanned<PortSpec>>>,
            local_destinations: Option<Spanned<String>>,
            x_forwarded_for: Option<Spanned<String>>,
            visible_hostname: Option<Spanned<String>>,
            access_log: Option<Spanned<String>>,
            access_log_format: Option<Spanned<String>>,
            max_client_connections: Option<Spanned<i64>>,
            max_header_bytes: Option<Spanned<i64>>,
            max_headers: Option<Spanned<i64>>,
            max_uri_bytes: Option<Spanned<i64>>,
            client_header_timeout: Option<Spanned<Num>>,
            client_idle_timeout: Option<Spanned<Num>>,
            forward_timeout: Option<Spanned<Num>>,
            body_idle_timeout: Option<Spanned<Num>>,
            tunnel_idle_timeout: Option<Spanned<Num>>,
            shutdown_timeout: Option<Spanned<Num>>,
            acl: Option<Vec<Spanned<AclEntry>>>,
            http_access: Option<Vec<Spanned<RuleEntry>>>,
            $($field: $ty,)*
        }

        impl $name {
            /// Sets the server keys this section has in `s` (the errors
            /// kept in `c`).
            fn server(&self, s: &mut ServerSettings, c: &Check<'_>) {
                let err = c.err;
                if let Some(v) = &self.workers {
                    c.set(&mut s.workers, int_in(v, "workers", 0, 256, err).map(|x| x as usize));
                }
                if let Some(list) = &self.allow_clients {
                    c.set(&mut s.allow_clients, cidrs(list, "allow_clients", err));
                }
                if let Some(list) = &self.purge_clients {
                    c.set(&mut s.purge_clients, cidrs(list, "purge_clients", err));
                }
                if let Some(list) = &self.connect_ports {
                    c.set(&mut s.connect_ports, port_ranges(list, "connect_ports", err));
                }
                if let Some(v) = &self.port_name {
                    let name = v.get_ref().trim();
                    if name.is_empty() || name.contains(char::is_whitespace) {
                        let m = format!("{name:?} is not a port name (one word)");
                        c.fail(err(v.span(), "port_name", m));
                    } else {
                        s.port_name = Some(name.to_string());
                    }
                }
                if let Some(list) = &self.safe_ports {
                    c.set(&mut s.safe_ports, port_ranges(list, "safe_ports", err));
                }
                if let Some(v) = &self.local_destinations {
                    let options = [
                        ("local-clients", LocalDestinations::LocalClients),
                        ("all-clients", LocalDestinations::AllClients),
                        ("none", LocalDestinations::None),
                    ];
                    c.set(&mut s.local_destinations, choice(v, "local_destinations", &options, err));
                }
                if let Some(v) = &self.x_forwarded_for {
                    c.set(&mut s.x_forwarded_for, xff(v, err));
                }
                if let Some(v) = &self.visible_hostname {
                    s.visible_hostname = Some(v.get_ref().clone());
                }
                if let Some(v) = &self.access_log {
                    c.set(&mut s.access_log, access_log(v, err).map(Some));
                }
                if let Some(v) = &self.access_log_format {
                    let formats = [
                        ("squid", Format::Squid),
                        ("common", Format::Common),
                        ("combined", Format::Combined),
                        ("json", Format::Json),
                    ];
                    c.set(&mut s.access_log_format, choice(v, "access_log_format", &formats, err));
                }
                let counts: [(&Option<Spanned<i64>>, &str, i64, i64, &mut usize); 4] = [
                    (&self.max_client_connections, "max_client_connections", 1, 10_000_000, &mut s.max_client_connections),
                    (&self.max_header_bytes, "max_header_bytes", 1024, 1 << 20, &mut s.limits.max_head_bytes),
                    (&self.max_headers, "max_headers", 8, 10_000, &mut s.limits.max_headers),
                    (&self.max_uri_bytes, "max_uri_bytes", 64, 65535, &mut s.limits.max_uri_bytes),
                ];
                for (value, key, lo, hi, slot) in counts {
                    if let Some(v) = value {
                        c.set(slot, int_in(v, key, lo, hi, err).map(|x| x as usize));
                    }
                }
                set_secs(
                    [
                        (&self.client_header_timeout, "client_header_timeout", &mut s.limits.header_timeout),
                        (&self.client_idle_timeout, "client_idle_timeout", &mut s.limits.idle_timeout),
                        (&self.forward_timeout, "forward_timeout", &mut s.forward_timeout),
                        (&self.body_idle_timeout, "body_idle_timeout", &mut s.body_idle_timeout),
                        (&self.tunnel_idle_timeout, "tunnel_idle_timeout", &mut s.tunnel_idle_timeout),
                        (&self.shutdown_timeout, "shutdown_timeout", &mut s.shutdown_timeout),
                    ],
                    c,
                )
            }
        }
    };
}

server_section! {
    /// `[frontend]`.
    FrontendEntry {
        listen: Option<Spanned<String>>,
        mode: Option<Spanned<String>>,
        default_site: Option<Spanned<String>>,
        vhost: Option<Spanned<bool>>,
        parent_connect_timeout: Option<Spanned<Num>>,
        parent_first_byte_timeout: Option<Spanned<Num>>,
        parent_idle_connections: Option<Spanned<i64>>,
        parent_idle_timeout: Option<Spanned<Num>>,
        bounded_load: Option<Spanned<Num>>,
        hosts: Option<Vec<Spanned<String>>>,
    }
}

server_section! {
    /// `[cache]`: the array's caches (each listens on its `[[parent]]` address).
    CacheEntry {
        dir: Option<Spanned<String>>,
        mem: Option<Spanned<String>>,
        disk: Option<Spanned<String>>,
        mem_max_object: Option<Spanned<String>>,
        max_object_size: Option<Spanned<String>>,
        upstream_proxy: Option<Spanned<String>>,
        origin_server: Option<Spanned<String>>,
        origin_servers: Option<std::collections::BTreeMap<String, Spanned<String>>>,
        origin_connect_timeout: Option<Spanned<Num>>,
        origin_first_byte_timeout: Option<Spanned<Num>>,
        origin_idle_connections: Option<Spanned<i64>>,
        origin_idle_timeout: Option<Spanned<Num>>,
        disk_threads: Option<Spanned<i64>>,
        disk_small_object: Option<Spanned<String>>,
        targeted_cache_control: Option<Vec<Spanned<String>>>,
        stale_while_revalidate: Option<Spanned<Num>>,
        stale_if_error: Option<Spanned<Num>>,
        refresh_pattern: Option<Vec<Spanned<RefreshPatternEntry>>>,
    }
}

/// `[[cache.refresh_pattern]]`: Squid's `refresh_pattern [-i] REGEX MIN
/// PERCENT% MAX`, without the options after the numbers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshPatternEntry {
    regex: Option<Spanned<String>>,
    case_insensitive: Option<Spanned<bool>>,
    min: Option<Spanned<Num>>,
    percent: Option<Spanned<Num>>,
    max: Option<Spanned<Num>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthEntry {
    fail_limit: Option<Spanned<i64>>,
    probe_interval: Option<Spanned<Num>>,
    probe: Option<Spanned<String>>,
    probe_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParentEntry {
    name: Option<Spanned<String>>,
    host: Spanned<String>,
    port: Spanned<i64>,
    weight: Option<Spanned<i64>>,
    carp_key: Option<Spanned<String>>,
    max_conn: Option<Spanned<i64>>,
    pass_credentials: Option<Spanned<bool>>,
    dir: Option<Spanned<String>>,
    mem: Option<Spanned<String>>,
    disk: Option<Spanned<String>>,
    access_log: Option<Spanned<String>>,
}

/// Reads values and keeps every error it meets, so that one run (`carpool
/// check`) reports them all rather than the first.
struct Check<'a> {
    /// Makes an error for a span of the text.
    err: &'a ErrFn<'a>,
    errors: std::cell::RefCell<Vec<ConfigError>>,
}

impl Check<'_> {
    /// The value when it is good; its error kept when not.
    fn ok<T>(&self, value: Result<T, ConfigError>) -> Option<T> {
        value.map_err(|e| self.errors.borrow_mut().push(e)).ok()
    }

    /// Sets `slot` to a good value; keeps the error of a bad one.
    fn set<T>(&self, slot: &mut T, value: Result<T, ConfigError>) {
        if let Some(v) = self.ok(value) {
            *slot = v;
        }
    }

    /// Keeps an error.
    fn fail(&self, e: ConfigError) {
        self.errors.borrow_mut().push(e);
    }
}

/// Parses the text of a carpool.toml; every error of the file at once.
pub fn parse_toml(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let err = |span: Range<usize>, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line: line_of_offset(text, span.start),
        key: key.to_string(),
        message,
    };
    // the structure first: a syntax error or an unknown key stops the read
    let file: File = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let bad = text.get(span.clone()).unwrap_or_default();
        // a value of the wrong type: the key it is the value of; else the
        // text in error (an unknown key, a broken header)
        let key = key_of_value(text, span.start)
            .or(Some(bad))
            .filter(|s| !s.is_empty() && s.len() < 64 && !s.contains(char::is_control))
            .unwrap_or("-");
        ConfigErrors::from(err(span, key.trim_matches('"'), syntax_message(&e, bad)))
    })?;
    let c = Check {
        err: &err,
        errors: Default::default(),
    };
    let mut hash = Mode::default();
    if let Some(h) = &file.hash {
        let mode = h.get_ref().parse::<Mode>();
        c.set(
            &mut hash,
            mode.map_err(|e| err(h.span(), "hash", e.to_string())),
        );
    }
    // caches may announce themselves instead of being listed
    let announced = file
        .cluster
        .as_ref()
        .is_some_and(|e| e.get_ref().announced_parents == Some(true));
    let parents = parents(&file.parent, text, announced, &c);
    let mut frontend = file
        .frontend
        .as_ref()
        .map_or_else(FrontendSettings::default, |f| frontend_settings(f, &c));
    let health = file
        .health
        .as_ref()
        .map_or_else(HealthSettings::default, |h| health_settings(h, &c));
    let mut cache = file
        .cache
        .as_ref()
        .map_or_else(CacheSettings::default, |e| cache_settings(e, &c));
    let shared = (&file.acl[..], file.http_access.as_deref());
    if let Some(f) = &file.frontend {
        let own = (
            f.acl.as_deref().unwrap_or_default(),
            f.http_access.as_deref(),
        );
        frontend.server.access_rules = access_rules(path, text, shared, own, &c);
    } else {
        frontend.server.access_rules = access_rules(path, text, shared, (&[], None), &c);
    }
    if let Some(e) = &file.cache {
        let own = (
            e.acl.as_deref().unwrap_or_default(),
            e.http_access.as_deref(),
        );
        cache.server.access_rules = access_rules(path, text, shared, own, &c);
    } else {
        cache.server.access_rules = access_rules(path, text, shared, (&[], None), &c);
    }
    let admin = file
        .admin
        .as_ref()
        .and_then(|a| a.listen.as_ref())
        .and_then(|v| c.ok(address(v, "listen", "127.0.0.1:3180", &err)));
    let mut cluster = file.cluster.as_ref().and_then(|e| c.ok(cluster(e, &err)));
    // the frontend hosts are the natural seeds
    if let Some(cl) = cluster.as_mut() {
        if cl.seeds.is_empty() {
            cl.seeds = frontend
                .hosts
                .iter()
                .map(|h| match h.contains(':') && !h.starts_with('[') {
                    true => format!("[{h}]:{}", cl.listen.port()),
                    false => format!("{h}:{}", cl.listen.port()),
                })
                .collect();
        }
    }
    if let Some(errors) = ConfigErrors::new(c.errors.into_inner()) {
        return Err(errors);
    }
    // an accelerator's caches obey the targeted fields of RFC 9213 unless
    // told otherwise
    let targeted_given = file
        .cache
        .as_ref()
        .is_some_and(|e| e.targeted_cache_control.is_some());
    if !targeted_given && frontend.mode == ListenMode::Accel {
        cache.targeted_cache_control = DEFAULT_TARGETED.iter().map(|s| s.to_string()).collect();
    }
    // the admin listener is never a destination of the array's requests
    frontend.server.array_listeners.extend(admin);
    cache.server.array_listeners.extend(admin);
    Ok(Config {
        source: path.to_path_buf(),
        hash,
        parents,
        frontend,
        health,
        cache,
        admin,
        cluster,
        log_dir: file.log_dir.as_ref().map(|d| d.get_ref().into()),
        warnings: Vec::new(),
    })
}

/// A role's ACLs and rules (`[[frontend.acl]]`, `[[frontend.http_access]]`…).
type RoleAccess<'a> = (&'a [Spanned<AclEntry>], Option<&'a [Spanned<RuleEntry>]>);

/// Compiles a role's access rules: the top-level ACLs, then the role's
/// own; the role's rules if it has any, else the top-level ones. Every
/// error is kept (a top-level one is found once per role: the list of
/// errors drops the repeats).
fn access_rules(
    path: &Path,
    text: &str,
    (shared_acls, shared_rules): RoleAccess<'_>,
    (own_acls, own_rules): RoleAccess<'_>,
    c: &Check<'_>,
) -> Arc<Rules> {
    let err = c.err;
    let mut b = Builder::new();
    let mut lines: std::collections::HashMap<String, usize> = Default::default();
    // ACLs whose definition failed: rules naming them say nothing more
    let mut broken = std::collections::HashSet::new();
    for entry in shared_acls.iter().chain(own_acls) {
        let a = entry.get_ref();
        let name = a.name.get_ref();
        let line = line_of_offset(text, entry.span().start);
        if let Some(prev) = lines.get(name) {
            let m = format!("ACL {name:?} is already defined on line {prev} (give all its values in one `values` list)");
            c.fail(err(a.name.span(), "name", m));
            continue;
        }
        if !TYPES.contains(&a.kind.get_ref().as_str()) {
            let m = format!(
                "unknown ACL type {:?} (one of {})",
                a.kind.get_ref(),
                TYPES.join(", ")
            );
            c.fail(err(a.kind.span(), "type", m));
            continue;
        }
        let values: Vec<String> = a
            .values
            .get_ref()
            .iter()
            .map(|v| match v.get_ref() {
                AclValue::Text(t) => t.clone(),
                AclValue::Number(n) => n.to_string(),
            })
            .collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        match b.acl(name, a.kind.get_ref(), &values) {
            Ok(()) => {
                lines.insert(name.clone(), line);
            }
            Err(e) => {
                broken.insert(name.clone());
                let (span, key) = match e.value {
                    Some(i) => (a.values.get_ref()[i].span(), "values"),
                    None if b.has(name) || e.message.contains("ACL name") => {
                        (a.name.span(), "name")
                    }
                    None => (a.values.span(), "values"),
                };
                c.fail(err(span, key, format!("ACL {name:?}: {}", e.message)));
            }
        }
    }
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let mut last = None;
    for entry in own_rules.or(shared_rules).unwrap_or_default() {
        let r = entry.get_ref();
        let line = line_of_offset(text, entry.span().start);
        let (allow, key, acls) = match (&r.allow, &r.deny) {
            (Some(a), None) => (true, "allow", a),
            (None, Some(d)) => (false, "deny", d),
            _ => {
                let m = "give either `allow = [ACL, ...]` or `deny = [ACL, ...]`".to_string();
                let span = r.allow.as_ref().map_or(entry.span(), Spanned::span);
                c.fail(err(span, "http_access", m));
                continue;
            }
        };
        let names: Vec<&str> = acls.get_ref().iter().map(|n| n.get_ref().trim()).collect();
        let label = match &r.name {
            Some(n) => n.get_ref().clone(),
            None => format!("{file}:{line} {key} {}", names.join(" ")),
        };
        if let Err(e) = b.rule(allow, &names, &label) {
            let named = e.value.map(|i| names[i].trim_start_matches('!').trim());
            if named.is_some_and(|n| broken.contains(n)) {
                continue;
            }
            let span = e.value.map_or(acls.span(), |i| acls.get_ref()[i].span());
            c.fail(err(span, key, e.message));
        }
        last = Some((allow, line));
    }
    let implicit = match last {
        Some((allow, line)) => format!(
            "implicit {} after the last http_access rule ({file}:{line})",
            if allow { "deny" } else { "allow" }
        ),
        None => String::new(),
    };
    Arc::new(b.build(&implicit))
}

/// The key of the value at `offset` when it stands on a `key = value`
/// line after the `=` (`vhost = 1` → `vhost`).
fn key_of_value(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    (!key.is_empty() && key.chars().all(bare)).then_some(key)
}

/// toml's message for a syntax error, as one line (it may have several, or
/// none: for a control character in a comment it says nothing). `bad` is
/// the text the error points at.
fn syntax_message(e: &toml::de::Error, bad: &str) -> String {
    let lines: Vec<&str> = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if !lines.is_empty() {
        return lines.join("; ");
    }
    match bad.chars().next() {
        Some(c) if c.is_control() => {
            format!("character U+{:04X} is not allowed here", u32::from(c))
        }
        _ => "TOML syntax error".into(),
    }
}

/// The `[[parent]]` entries: at least one, at most [`carp::MAX_MEMBERS`],
/// each name once.
fn parents(
    entries: &[Spanned<ParentEntry>],
    text: &str,
    announced: bool,
    c: &Check<'_>,
) -> Vec<Parent> {
    let err = c.err;
    let mut parents: Vec<Parent> = Vec::new();
    for entry in entries {
        let Some(p) = parent(entry.get_ref(), line_of_offset(text, entry.span().start), c) else {
            continue;
        };
        if let Some(prev) = parents.iter().find(|q| q.name == p.name) {
            let span = entry
                .get_ref()
                .name
                .as_ref()
                .map_or(entry.get_ref().host.span(), Spanned::span);
            c.fail(err(
                span,
                "name",
                format!("parent name {:?} is already used on line {} (names are hashed: give each parent its own `name`)", p.name, prev.line),
            ));
            continue;
        }
        parents.push(p);
    }
    if entries.is_empty() && !announced {
        let message = "no [[parent]] entries: at least one parent cache is needed (or [cluster] announced_parents = true)".into();
        c.fail(err(0..0, "parent", message));
    }
    if entries.len() > carp::MAX_MEMBERS {
        let message = format!("at most {} parents are supported", carp::MAX_MEMBERS);
        c.fail(err(entries[carp::MAX_MEMBERS].span(), "parent", message));
    }
    parents
}

/// One `[[parent]]` entry, which starts on `line`; `None` when any of its
/// values is bad (each error kept).
fn parent(p: &ParentEntry, line: usize, c: &Check<'_>) -> Option<Parent> {
    let err = c.err;
    let before = c.errors.borrow().len();
    let host = p.host.get_ref().trim().to_string();
    if host.is_empty() {
        c.fail(err(p.host.span(), "host", "must not be empty".into()));
    }
    let port = c.ok(u16::try_from(*p.port.get_ref())
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| {
            let message = format!("{} is not a TCP port (1-65535)", p.port.get_ref());
            err(p.port.span(), "port", message)
        }));
    let weight = match &p.weight {
        None => Some(1),
        Some(w) => c
            .ok(int_in(w, "weight", 1, i64::from(i32::MAX), err))
            .map(|x| x as u32),
    };
    let carp_key = p.carp_key.as_ref().and_then(|k| {
        c.ok(KeySpec::parse(k.get_ref()).map_err(|e| err(k.span(), "carp_key", e.to_string())))
    });
    let name = match &p.name {
        Some(n) if n.get_ref().trim().is_empty() => {
            c.fail(err(n.span(), "name", "must not be empty".into()));
            String::new()
        }
        Some(n) => n.get_ref().clone(),
        None => host.clone(),
    };
    let max_conn = match &p.max_conn {
        None => Some(0),
        Some(v) => c
            .ok(int_in(v, "max_conn", 0, 1_000_000, err))
            .map(|x| x as u32),
    };
    let own = CacheOverrides {
        dir: p.dir.as_ref().map(|d| d.get_ref().into()),
        mem: p.mem.as_ref().and_then(|v| c.ok(budget(v, "mem", err))),
        disk: p.disk.as_ref().and_then(|v| c.ok(budget(v, "disk", err))),
        access_log: p.access_log.as_ref().and_then(|v| c.ok(access_log(v, err))),
    };
    if c.errors.borrow().len() > before {
        return None;
    }
    Some(Parent {
        name,
        host,
        port: port?,
        weight: weight?,
        carp_key,
        max_conn: max_conn?,
        pass_credentials: p.pass_credentials.as_ref().is_some_and(|v| *v.get_ref()),
        line,
        own,
    })
}

/// An `ADDRESS:PORT` value (`example`: what to suggest).
fn address(
    v: &Spanned<String>,
    key: &str,
    example: &str,
    err: &ErrFn<'_>,
) -> Result<std::net::SocketAddr, ConfigError> {
    v.get_ref().parse().map_err(|_| {
        err(
            v.span(),
            key,
            format!("{:?} is not ADDRESS:PORT (e.g. \"{example}\")", v.get_ref()),
        )
    })
}

/// `[cluster]`: `listen` is required; the rest has defaults.
fn cluster(e: &Spanned<ClusterEntry>, err: &ErrFn<'_>) -> Result<ClusterSettings, ConfigError> {
    let c = e.get_ref();
    let Some(listen) = &c.listen else {
        return Err(err(
            e.span(),
            "listen",
            "[cluster] needs listen = \"ADDRESS:PORT\" (where this node gossips, UDP)".into(),
        ));
    };
    let listen = address(listen, "listen", "0.0.0.0:7946", err)?;
    let mut seeds = Vec::new();
    for s in c.seeds.iter().flatten() {
        let v = s.get_ref();
        let port_ok = v.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(err(
                s.span(),
                "seeds",
                format!("{v:?} is not HOST:PORT (e.g. \"10.0.0.2:7946\")"),
            ));
        }
        seeds.push(v.clone());
    }
    let text = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<String>, ConfigError> {
        match v {
            None => Ok(None),
            Some(s) if s.get_ref().trim().is_empty() || s.get_ref().len() > 255 => {
                Err(err(s.span(), key, "must be 1 to 255 characters".into()))
            }
            Some(s) => Ok(Some(s.get_ref().clone())),
        }
    };
    let mut out = ClusterSettings::new(listen);
    out.seeds = seeds;
    if let Some(n) = text(&c.node, "node")? {
        out.node = n;
    }
    if let Some(id) = text(&c.cluster_id, "cluster_id")? {
        out.cluster_id = id;
    }
    if let Some(v) = &c.gossip_interval {
        out.gossip_interval = secs(v, "gossip_interval", err)?;
    }
    out.announced_parents = c.announced_parents.unwrap_or(false);
    if let Some(v) = &c.announced_grace {
        out.announced_grace = secs(v, "announced_grace", err)?;
    }
    Ok(out)
}

/// Sets each slot whose key has a good value, in seconds.
fn set_secs<const N: usize>(
    keys: [(&Option<Spanned<Num>>, &str, &mut Duration); N],
    c: &Check<'_>,
) {
    for (value, key, slot) in keys {
        if let Some(v) = value {
            c.set(slot, secs(v, key, c.err));
        }
    }
}

fn access_log(
    v: &Spanned<String>,
    err: &ErrFn<'_>,
) -> Result<httpx::accesslog::Destination, ConfigError> {
    crate::config::settings::parse_access_log(v.get_ref())
        .map_err(|m| err(v.span(), "access_log", m))
}

fn size(v: &Spanned<String>, key: &str, err: &ErrFn<'_>) -> Result<u64, ConfigError> {
    parse_size(v.get_ref()).map_err(|e| err(v.span(), key, e))
}

fn budget(v: &Spanned<String>, key: &str, err: &ErrFn<'_>) -> Result<Budget, ConfigError> {
    Budget::parse(v.get_ref()).map_err(|e| err(v.span(), key, e))
}

fn cidrs(
    list: &[Spanned<String>],
    key: &str,
    err: &ErrFn<'_>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.iter()
        .map(|c| {
            let t = c.get_ref();
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    err(
                        c.span(),
                        key,
                        format!("{t:?} is not an address or CIDR range"),
                    )
                })
        })
        .collect()
}

fn port_ranges(
    list: &[Spanned<PortSpec>],
    key: &str,
    err: &ErrFn<'_>,
) -> Result<Vec<RangeInclusive<u16>>, ConfigError> {
    list.iter()
        .map(|v| {
            let bad = |what: String| err(v.span(), key, what);
            match v.get_ref() {
                PortSpec::Port(p) => u16::try_from(*p)
                    .ok()
                    .filter(|&p| p > 0)
                    .map(|p| p..=p)
                    .ok_or_else(|| bad(format!("{p} is not a TCP port (1-65535)"))),
                PortSpec::Range(r) => {
                    let parse = |x: &str| x.trim().parse::<u16>().ok().filter(|&p| p > 0);
                    match r.split_once('-').map(|(a, b)| (parse(a), parse(b))) {
                        Some((Some(a), Some(b))) if a <= b => Ok(a..=b),
                        _ => Err(bad(format!(
                            "{r:?} is not a port range like \"1025-65535\""
                        ))),
                    }
                }
            }
        })
        .collect()
}

fn frontend_settings(f: &FrontendEntry, c: &Check<'_>) -> FrontendSettings {
    let err = c.err;
    let mut s = FrontendSettings::default();
    f.server(&mut s.server, c);
    if let Some(v) = &f.listen {
        c.set(
            &mut s.server.listen,
            address(v, "listen", "0.0.0.0:3128", err),
        );
    }
    if let Some(v) = &f.mode {
        let modes = [
            ("forward", ListenMode::Forward),
            ("accel", ListenMode::Accel),
        ];
        c.set(&mut s.mode, choice(v, "mode", &modes, err));
    }
    s.default_site = f.default_site.as_ref().map(|v| v.get_ref().clone());
    if let Some(v) = &f.vhost {
        s.vhost = *v.get_ref();
    }
    if let Some(v) = &f.parent_idle_connections {
        let n = int_in(v, "parent_idle_connections", 0, 100_000, err).map(|x| x as usize);
        c.set(&mut s.parent_idle_connections, n);
    }
    if let Some(v) = &f.bounded_load {
        c.set(&mut s.bounded_load, bounded_load(v, err));
    }
    for h in f.hosts.iter().flatten() {
        let name = h.get_ref().trim();
        if name.is_empty() || name.contains([' ', '/', ',']) {
            c.errors.borrow_mut().push(err(
                h.span(),
                "hosts",
                format!("{:?} is not a host name or address", h.get_ref()),
            ));
        } else {
            s.hosts.push(name.to_string());
        }
    }
    set_secs(
        [
            (
                &f.parent_connect_timeout,
                "parent_connect_timeout",
                &mut s.parent_connect_timeout,
            ),
            (
                &f.parent_first_byte_timeout,
                "parent_first_byte_timeout",
                &mut s.parent_first_byte_timeout,
            ),
            (
                &f.parent_idle_timeout,
                "parent_idle_timeout",
                &mut s.parent_idle_timeout,
            ),
        ],
        c,
    );
    s
}

/// Largest `disk_small_object`: the log holds records up to a quarter of a
/// segment (at most 16 MiB), and a small object is held whole in memory
/// while it is fetched.
const MAX_SMALL_OBJECT: u64 = 1 << 20;

fn cache_settings(e: &CacheEntry, c: &Check<'_>) -> CacheSettings {
    let err = c.err;
    let mut s = CacheSettings::default();
    e.server(&mut s.server, c);
    s.dir = e.dir.as_ref().map(|v| v.get_ref().into());
    if let Some(v) = &e.mem {
        c.set(&mut s.mem, budget(v, "mem", err));
    }
    if let Some(v) = &e.disk {
        c.set(&mut s.disk, budget(v, "disk", err));
    }
    if let Some(v) = &e.mem_max_object {
        c.set(&mut s.mem_max_object, size(v, "mem_max_object", err));
    }
    if let Some(v) = &e.max_object_size {
        c.set(&mut s.max_object_size, size(v, "max_object_size", err));
    }
    let host_port = |v: &Spanned<String>, key: &str| {
        v.get_ref()
            .parse::<HostPort>()
            .map_err(|m| err(v.span(), key, m))
    };
    if let Some(v) = &e.upstream_proxy {
        s.upstream_proxy = c.ok(host_port(v, "upstream_proxy"));
    }
    if let Some(v) = &e.origin_server {
        let hp = host_port(v, "origin_server").and_then(|hp| match &s.upstream_proxy {
            Some(_) => Err(err(
                v.span(),
                "origin_server",
                "a miss goes to the origin server or to upstream_proxy, not both: set one".into(),
            )),
            None => Ok(hp),
        });
        s.origin_servers.default = c.ok(hp);
    }
    for (site, v) in e.origin_servers.iter().flatten() {
        let hp = host_port(v, "origin_servers").and_then(|hp| {
            let valid = !site.is_empty()
                && site
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
            if valid {
                Ok(hp)
            } else {
                Err(err(
                    v.span(),
                    "origin_servers",
                    format!("{site:?} is not a host name or address"),
                ))
            }
        });
        if let Some(hp) = c.ok(hp) {
            s.origin_servers.sites.push((site.to_ascii_lowercase(), hp));
        }
    }
    if let Some(v) = &e.disk_threads {
        let n = int_in(v, "disk_threads", 1, 64, err).map(|x| x as usize);
        c.set(&mut s.disk_threads, n);
    }
    if let Some(v) = &e.disk_small_object {
        let n = size(v, "disk_small_object", err).and_then(|n| {
            if n <= MAX_SMALL_OBJECT {
                Ok(n)
            } else {
                Err(err(
                    v.span(),
                    "disk_small_object",
                    format!("{n} bytes is over the limit of 1M (larger objects are better off in a file each)"),
                ))
            }
        });
        c.set(&mut s.disk_small_object, n);
    }
    if let Some(v) = &e.origin_idle_connections {
        let n = int_in(v, "origin_idle_connections", 0, 100_000, err).map(|x| x as usize);
        c.set(&mut s.origin_idle_connections, n);
    }
    set_secs(
        [
            (
                &e.origin_connect_timeout,
                "origin_connect_timeout",
                &mut s.origin_connect_timeout,
            ),
            (
                &e.origin_first_byte_timeout,
                "origin_first_byte_timeout",
                &mut s.origin_first_byte_timeout,
            ),
            (
                &e.origin_idle_timeout,
                "origin_idle_timeout",
                &mut s.origin_idle_timeout,
            ),
        ],
        c,
    );
    for (value, key, slot) in [
        (
            &e.stale_while_revalidate,
            "stale_while_revalidate",
            &mut s.stale_while_revalidate,
        ),
        (&e.stale_if_error, "stale_if_error", &mut s.stale_if_error),
    ] {
        if let Some(v) = value {
            c.set(slot, stale_window(v, key, err));
        }
    }
    if let Some(list) = &e.targeted_cache_control {
        for v in list {
            if let Some(name) = c.ok(field_name(v, "targeted_cache_control", err)) {
                s.targeted_cache_control.push(name);
            }
        }
    }
    if let Some(entries) = &e.refresh_pattern {
        s.refresh_patterns = refresh_patterns(entries, c);
    }
    s
}

/// The `[[cache.refresh_pattern]]` entries, compiled, in file order (each
/// bad one reported, and left out).
fn refresh_patterns(entries: &[Spanned<RefreshPatternEntry>], c: &Check<'_>) -> RefreshPatterns {
    let err = c.err;
    let mut list = Vec::new();
    for entry in entries {
        let e = entry.get_ref();
        let missing = |key: &str| {
            let m = "missing: a refresh_pattern needs regex, min, percent and max".to_string();
            err(entry.span(), key, m)
        };
        // whole numbers from 0 to `hi`, as Squid reads them
        let number = |value: &Option<Spanned<Num>>, key: &str, hi: u64, what: &str| {
            let v = value.as_ref().ok_or_else(|| missing(key))?;
            match *v.get_ref() {
                Num::Int(n) => u64::try_from(n).ok().filter(|&n| n <= hi),
                Num::Float(_) => None,
            }
            .ok_or_else(|| {
                let m = format!("{} is not {what}", v.get_ref().as_f64());
                err(v.span(), key, m)
            })
        };
        let minutes = format!("a whole number of minutes from 0 to {MAX_MINUTES} (a year)");
        let min = c.ok(number(&e.min, "min", MAX_MINUTES, &minutes));
        let percent = c.ok(number(
            &e.percent,
            "percent",
            i32::MAX as u64,
            "a whole percentage (0 or more)",
        ));
        let max = c.ok(number(&e.max, "max", MAX_MINUTES, &minutes));
        let insensitive = e.case_insensitive.as_ref().is_some_and(|v| *v.get_ref());
        // percent is at most i32::MAX: it fits
        let limits = Limits::from_minutes(
            min.unwrap_or_default(),
            percent.unwrap_or_default() as u32,
            max.unwrap_or_default(),
        );
        // the regex is checked whatever the numbers are
        let pattern = e
            .regex
            .as_ref()
            .ok_or_else(|| missing("regex"))
            .and_then(|r| {
                RefreshPattern::new(r.get_ref(), insensitive, limits)
                    .map_err(|m| err(r.span(), "regex", m))
            });
        if let (Some(pattern), Some(_), Some(_), Some(_)) = (c.ok(pattern), min, percent, max) {
            list.push(pattern);
        }
    }
    RefreshPatterns::new(list)
}

/// Longest stale window: 31 days.
const MAX_STALE_WINDOW: f64 = 31.0 * 86_400.0;

/// A stale-serving window: seconds, 0 (off) up to 31 days.
fn stale_window(v: &Spanned<Num>, key: &str, err: &ErrFn<'_>) -> Result<Duration, ConfigError> {
    let x = v.get_ref().as_f64();
    if !(0.0..=MAX_STALE_WINDOW).contains(&x) {
        return Err(err(
            v.span(),
            key,
            format!("{x} is not a number of seconds in [0, {MAX_STALE_WINDOW}] (31 days)"),
        ));
    }
    Ok(Duration::from_secs_f64(x))
}

/// An HTTP field name (an RFC 9110 token), lower-cased.
fn field_name(v: &Spanned<String>, key: &str, err: &ErrFn<'_>) -> Result<String, ConfigError> {
    let name = v.get_ref();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(err(
            v.span(),
            key,
            format!("{name:?} is not a header field name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

type ErrFn<'a> = dyn Fn(Range<usize>, &str, String) -> ConfigError + 'a;

fn int_in(
    v: &Spanned<i64>,
    key: &str,
    lo: i64,
    hi: i64,
    err: &ErrFn<'_>,
) -> Result<i64, ConfigError> {
    let x = *v.get_ref();
    if x < lo || x > hi {
        return Err(err(
            v.span(),
            key,
            format!("{x} is out of range ({lo}..={hi})"),
        ));
    }
    Ok(x)
}

/// `bounded_load`: 0 (off), or a factor above 1 (1.25: a parent takes up
/// to 25% more than its even share of the requests in flight).
fn bounded_load(v: &Spanned<Num>, err: &ErrFn<'_>) -> Result<Option<f64>, ConfigError> {
    let x = v.get_ref().as_f64();
    if x == 0.0 {
        return Ok(None);
    }
    if !(x > 1.0 && x.is_finite()) {
        return Err(err(
            v.span(),
            "bounded_load",
            format!("{x} is not a factor above 1 (e.g. 1.25), or 0 for off"),
        ));
    }
    Ok(Some(x))
}

/// A number of seconds in (0, 86400]; `shutdown_timeout` may be 0 (stop
/// at once, Squid's `shutdown_lifetime 0`).
fn secs(v: &Spanned<Num>, key: &str, err: &ErrFn<'_>) -> Result<Duration, ConfigError> {
    let x = v.get_ref().as_f64();
    if x == 0.0 && key == "shutdown_timeout" {
        return Ok(Duration::ZERO);
    }
    if !(x > 0.0 && x <= 86_400.0) {
        return Err(err(
            v.span(),
            key,
            format!("{x} is not a number of seconds in (0, 86400]"),
        ));
    }
    Ok(Duration::from_secs_f64(x))
}

fn choice<T: Copy>(
    v: &Spanned<String>,
    key: &str,
    options: &[(&str, T)],
    err: &ErrFn<'_>,
) -> Result<T, ConfigError> {
    options
        .iter()
        .find(|(name, _)| name == v.get_ref())
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
            err(
                v.span(),
                key,
                format!("{:?}: expected one of {}", v.get_ref(), names.join(", ")),
            )
        })
}

fn xff(v: &Spanned<String>, err: &ErrFn<'_>) -> Result<Xff, ConfigError> {
    choice(
        v,
        "x_forwarded_for",
        &[
            ("append", Xff::Append),
            ("delete", Xff::Delete),
            ("off", Xff::Off),
        ],
        err,
    )
}

fn health_settings(h: &HealthEntry, c: &Check<'_>) -> HealthSettings {
    let err = c.err;
    let mut s = HealthSettings::default();
    if let Some(v) = &h.fail_limit {
        c.set(
            &mut s.fail_limit,
            int_in(v, "fail_limit", 1, 1_000_000, err).map(|x| x as u32),
        );
    }
    if let Some(v) = &h.probe_interval {
        c.set(&mut s.probe_interval, secs(v, "probe_interval", err));
    }
    if let Some(p) = &h.probe {
        match c.ok(choice(
            p,
            "probe",
            &[("answer", 'a'), ("tcp", 't'), ("http", 'h')],
            err,
        )) {
            Some('a') => s.probe = Probe::Answer,
            Some('t') => s.probe = Probe::Tcp,
            Some(_) => match &h.probe_url {
                Some(url) => {
                    s.probe = Probe::Http {
                        url: url.get_ref().clone(),
                    }
                }
                None => c.fail(err(
                    p.span(),
                    "probe",
                    "probe = \"http\" needs probe_url".into(),
                )),
            },
            None => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_toml(Path::new("t.toml"), text)
            .map_err(|e| e.iter().next().cloned().expect("never empty"))
    }

    /// Found by fuzzing (fuzz/fuzz_targets/config_toml.rs): a control
    /// character in a comment gave an error with no message and the raw
    /// character as its key; some syntax errors had a message of two lines
    /// (`carpool check` prints one line per error).
    #[test]
    fn syntax_errors_are_one_line_with_a_message() {
        for (text, line, key, message) in [
            (
                "[[parent]\nhost = \"a\"\n",
                1,
                "]",
                "invalid table header; expected `.`, `]]`",
            ),
            (
                "[[parent]]\n# a\u{b}b\nhost = \"a\"\n",
                2,
                "-",
                "character U+000B is not allowed here",
            ),
            (
                "[[parent]]\nhost = \"a\"\nport = 1\npass_credentials = \"yes\"\n",
                4,
                "pass_credentials",
                "invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[[parent]]\nhost = \"a\"\nport = 1\n[frontend]\nvhost = 1\n",
                5,
                "vhost",
                "invalid type: integer `1`, expected a boolean",
            ),
            (
                "[[parent]]\nhost = \"a\"\nport = 1\n[frontend]\nallow_clients = [\"::1\", 1]\n",
                5,
                "allow_clients",
                "invalid type: integer `1`, expected a string",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(
                (e.line, &e.key[..], &e.message[..]),
                (line, key, message),
                "{text:?}"
            );
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn good_file() {
        let c = parse(
            "hash = \"squid\"\n[[parent]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = 3129\nweight = 2\ncarp_key = \"host,path\"\n\n[[parent]]\nhost = \"b.example\"\nport = 3130\n",
        )
        .unwrap();
        assert_eq!(c.hash, Mode::Squid);
        assert_eq!(c.parents.len(), 2);
        assert_eq!(c.parents[1].name, "b.example");
        assert_eq!(c.parents[1].line, 9);
        assert_eq!(c.parents[0].weight, 2);
        assert!(!c.parents[0].pass_credentials, "off by default");
        let c = parse(&format!("{PARENT}pass_credentials = true\n")).unwrap();
        assert!(c.parents[0].pass_credentials);
    }

    #[test]
    fn server_keys_mean_the_same_in_frontend_and_cache() {
        let keys = "workers = 2\nx_forwarded_for = \"delete\"\nmax_header_bytes = 2048\nclient_idle_timeout = 7\ntunnel_idle_timeout = 9\nconnect_ports = [443, 8443]\n";
        let c = parse(&format!(
            "[[parent]]\nhost = \"a\"\nport = 1\n[frontend]\n{keys}[cache]\n{keys}"
        ))
        .unwrap();
        for s in [&c.frontend.server, &c.cache.server] {
            assert_eq!(s.workers, 2);
            assert_eq!(s.x_forwarded_for, Xff::Delete);
            assert_eq!(s.limits.max_head_bytes, 2048);
            assert_eq!(s.limits.idle_timeout, Duration::from_secs(7));
            assert_eq!(s.tunnel_idle_timeout, Duration::from_secs(9));
            assert_eq!(s.connect_ports, [443..=443, 8443..=8443]);
        }
        // the roles' own defaults stay their own
        assert_eq!(c.frontend.server.listen.port(), 3128);
        assert_eq!(c.cache.server.listen.port(), 3129);
        assert!(c.cache.server.allow_clients.len() < c.frontend.server.allow_clients.len());
        let e =
            parse("[[parent]]\nhost = \"a\"\nport = 1\n[cache]\nmax_headers = 3\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "max_headers"));
        let e = parse("[[parent]]\nhost = \"a\"\nport = 1\n[cache]\nlisten = \"127.0.0.1:1\"\n")
            .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (5, "listen"),
            "a cache listens on its [[parent]] address"
        );
    }

    #[test]
    fn disk_small_object_is_a_size_up_to_1m() {
        let with = |v: &str| {
            parse(&format!(
                "[[parent]]\nhost=\"a\"\nport=1\n[cache]\ndisk_small_object = \"{v}\"\n"
            ))
        };
        assert_eq!(with("8K").unwrap().cache.disk_small_object, 8 << 10);
        assert_eq!(with("0").unwrap().cache.disk_small_object, 0);
        assert_eq!(
            parse("[[parent]]\nhost=\"a\"\nport=1\n")
                .unwrap()
                .cache
                .disk_small_object,
            cache_store::DEFAULT_SMALL_OBJECT
        );
        let e = with("2M").unwrap_err();
        assert!(e.message.contains("over the limit of 1M"), "{e}");
    }

    const PARENT: &str = "[[parent]]\nhost = \"a\"\nport = 1\n";

    #[test]
    fn access_log_formats_are_squids_built_in_ones_and_json() {
        for (name, format) in [
            ("squid", Format::Squid),
            ("common", Format::Common),
            ("combined", Format::Combined),
            ("json", Format::Json),
        ] {
            let c = parse(&format!(
                "{PARENT}[frontend]\naccess_log_format = \"{name}\"\n[cache]\naccess_log_format = \"{name}\"\n"
            ))
            .unwrap();
            assert_eq!(c.frontend.server.access_log_format, format);
            assert_eq!(c.cache.server.access_log_format, format);
        }
        let e = parse(&format!(
            "{PARENT}[cache]\naccess_log_format = \"apache\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:5: `access_log_format`: \"apache\": expected one of \"squid\", \"common\", \"combined\", \"json\""
        );
    }

    #[test]
    fn access_rules_top_level_and_per_role() {
        let c = parse(&format!(
            "{PARENT}[[acl]]\nname = \"localnet\"\ntype = \"src\"\nvalues = [\"10.0.0.0/8\"]\n\
             [[acl]]\nname = \"Safe_ports\"\ntype = \"port\"\nvalues = [80, \"443\", \"1025-65535\"]\n\
             [[http_access]]\ndeny = [\"!Safe_ports\"]\n[[http_access]]\nallow = [\"localnet\"]\n\
             [cache]\n[[cache.acl]]\nname = \"fe\"\ntype = \"src\"\nvalues = [\"10.0.0.1\"]\n\
             [[cache.http_access]]\nallow = [\"fe\", \"Safe_ports\"]\nname = \"frontends\"\n"
        ))
        .unwrap();
        use proxy::rules::Builder;
        let mut b = Builder::new();
        b.acl("localnet", "src", &["10.0.0.0/8"]).unwrap();
        b.acl("Safe_ports", "port", &["80", "443", "1025-65535"])
            .unwrap();
        b.rule(false, &["!Safe_ports"], "t.toml:12 deny !Safe_ports")
            .unwrap();
        b.rule(true, &["localnet"], "t.toml:14 allow localnet")
            .unwrap();
        assert_eq!(*c.frontend.server.access_rules, b.build("x"));
        let mut b = Builder::new();
        b.acl("localnet", "src", &["10.0.0.0/8"]).unwrap();
        b.acl("Safe_ports", "port", &["80", "443", "1025-65535"])
            .unwrap();
        b.acl("fe", "src", &["10.0.0.1"]).unwrap();
        b.rule(true, &["fe", "Safe_ports"], "frontends").unwrap();
        assert_eq!(
            *c.cache.server.access_rules,
            b.build("x"),
            "the cache's own list replaces the shared one"
        );
        assert!(parse(PARENT)
            .unwrap()
            .frontend
            .server
            .access_rules
            .is_empty());
    }

    #[test]
    fn access_rule_errors_name_line_and_key_all_at_once() {
        let text = format!(
            "{PARENT}[[acl]]\nname = \"a\"\ntype = \"src\"\nvalues = [\"10.0.0.0/33\"]\n\
             [[acl]]\nname = \"b\"\ntype = \"srcdomain\"\nvalues = [\"x\"]\n\
             [[acl]]\nname = \"c\"\ntype = \"url_regex\"\nvalues = [\"-i\", \"(\"]\n\
             [[acl]]\nname = \"d\"\ntype = \"dst\"\nvalues = [\"10.0.0.1\"]\n\
             [[acl]]\nname = \"d\"\ntype = \"dst\"\nvalues = [\"10.0.0.2\"]\n\
             [[acl]]\nname = \"all\"\ntype = \"src\"\nvalues = [\"10.0.0.2\"]\n\
             [[http_access]]\nallow = [\"d\", \"!nope\"]\n\
             [[http_access]]\nallow = [\"a\"]\ndeny = [\"d\"]\n\
             [[http_access]]\ndeny = [\"a\"]\n"
        );
        let errors = parse_toml(Path::new("t.toml"), &text).unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (7, "values"),  // bad CIDR
                (10, "type"),   // unknown type
                (15, "values"), // bad regex
                (21, "name"),   // duplicate
                (25, "name"),   // predefined
                (29, "allow"),  // unknown ACL in a rule
                (31, "http_access"), // allow and deny
                                // `deny = ["a"]`: a is broken, said once
            ],
            "{errors}"
        );
        let text = errors.to_string();
        assert!(
            text.contains("t.toml:29: `allow`: no ACL named \"nope\""),
            "{text}"
        );
        assert!(
            text.contains("\"10.0.0.0/33\" is not an address or CIDR range"),
            "{text}"
        );
        assert!(text.contains("already defined on line 16"), "{text}");
    }

    #[test]
    fn refresh_patterns_in_file_order() {
        use crate::config::refresh::{Limits, RefreshPattern, RefreshPatterns};
        let c = parse(
            "[[parent]]\nname = \"c1\"\nhost = \"127.0.0.1\"\nport = 1\n[cache]\nstale_if_error = 5\n\
             [[cache.refresh_pattern]]\nregex = \"^ftp:\"\nmin = 1440\npercent = 20\nmax = 10080\n\
             [[cache.refresh_pattern]]\nregex = '(/cgi-bin/|\\?)'\ncase_insensitive = true\nmin = 0\npercent = 0\nmax = 0\n\
             [[cache.refresh_pattern]]\nregex = \".\"\nmin = 10\npercent = 250\nmax = 5\n",
        )
        .unwrap();
        let p = |re: &str, i: bool, min: u64, pct: u32, max: u64| {
            RefreshPattern::new(re, i, Limits::from_minutes(min, pct, max)).unwrap()
        };
        assert_eq!(
            c.cache.refresh_patterns,
            RefreshPatterns::new(vec![
                p("^ftp:", false, 1440, 20, 10080),
                p(r"(/cgi-bin/|\?)", true, 0, 0, 0),
                // max below min and more than 100%: allowed, as in Squid
                p(".", false, 10, 250, 5),
            ])
        );
        assert_eq!(c.cache.stale_if_error, Duration::from_secs(5));
        assert!(c
            .cache
            .refresh_patterns
            .limits(b"http://h/CGI-BIN/a")
            .max
            .is_zero());
        // the cache_settings of a named cache carry them
        assert_eq!(
            c.cache_settings("c1").unwrap().refresh_patterns,
            c.cache.refresh_patterns
        );
        // none: carpool's own heuristic
        assert!(parse(PARENT).unwrap().cache.refresh_patterns.is_empty());
    }

    #[test]
    fn refresh_pattern_errors_name_line_and_key() {
        let text = format!(
            "{PARENT}[[cache.refresh_pattern]]\nregex = \"(\"\nmin = 0\npercent = 20\nmax = 60\n\
             [[cache.refresh_pattern]]\nregex = \"[\"\nmin = -1\npercent = -20\nmax = 525601\n\
             [[cache.refresh_pattern]]\nregex = \".\"\npercent = 20\nmax = 60\n\
             [[cache.refresh_pattern]]\nmin = 0\npercent = 20\nmax = 60\n"
        );
        let errors = parse_toml(Path::new("t.toml"), &text).unwrap_err();
        let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            got,
            [
                (5, "regex"),
                (10, "regex"), // checked whatever the numbers
                (11, "min"),
                (12, "percent"),
                (13, "max"),
                (14, "min"),   // missing: the entry's line
                (18, "regex"), // missing
            ],
            "{errors}"
        );
        let text = errors.to_string();
        assert!(
            text.contains("t.toml:5: `regex`: \"(\" is not a regular expression"),
            "{text}"
        );
        assert!(
            text.contains("t.toml:11: `min`: -1 is not a whole number of minutes from 0 to 525600"),
            "{text}"
        );
        assert!(text.contains("t.toml:14: `min`: missing"), "{text}");
        // Squid's options are not keys
        let e = parse(&format!(
            "{PARENT}[[cache.refresh_pattern]]\nregex = \".\"\nmin = 0\npercent = 20\nmax = 60\noverride_expire = true\n"
        ))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (9, "override_expire"), "{e}");
        // whole numbers only, as Squid reads them
        let e = parse(&format!(
            "{PARENT}[[cache.refresh_pattern]]\nregex = \".\"\nmin = 0\npercent = 20.5\nmax = 60\n"
        ))
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (7, "percent"), "{e}");
    }

    #[test]
    fn errors_name_line_and_key() {
        let cases = [
            (
                "hash = \"md5\"\n[[parent]]\nhost=\"a\"\nport=1\n",
                1,
                "hash",
            ),
            ("[[parent]]\nhost=\"a\"\nport=70000\n", 3, "port"),
            ("[[parent]]\nhost=\"a\"\nport=1\nweight=0\n", 4, "weight"),
            (
                "[[parent]]\nhost=\"a\"\nport=1\ncarp_key=\"host,url\"\n",
                4,
                "carp_key",
            ),
            ("[[parent]]\nhost=\"a\"\nport=1\nwieght=2\n", 4, "wieght"),
            (
                "[[parent]]\nhost=\"a\"\nport=1\n[[parent]]\nhost=\"a\"\nport=2\n",
                5,
                "name",
            ),
            ("", 1, "parent"),
            (
                "[[parent]]\nhost=\"a\"\nport=1\n[cache]\ndisk_small_object = \"2M\"\n",
                5,
                "disk_small_object",
            ),
            (
                "[[parent]]\nhost=\"a\"\nport=1\n[cache]\nupstream_proxy = \"p:3128\"\norigin_server = \"o:80\"\n",
                6,
                "origin_server",
            ),
            (
                "[[parent]]\nhost=\"a\"\nport=1\n[cache]\norigin_servers = { \"a b\" = \"o:80\" }\n",
                5,
                "origin_servers",
            ),
            (
                "[[parent]]\nhost=\"a\"\nport=1\n[cache.origin_servers]\n\"www.a\" = \"o:http\"\n",
                5,
                "origin_servers",
            ),
        ];
        for (text, line, key) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (line, key), "{text:?} → {e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("t.toml:{line}: `{key}`")),
                "{e}"
            );
        }
    }
}
