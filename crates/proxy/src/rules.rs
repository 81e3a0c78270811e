//! The administrator's own access rules: named ACLs and an ordered list of
//! `allow` / `deny` rules, with the meaning Squid gives `acl` and
//! `http_access` (first match wins; the ACLs of one rule must all match;
//! one ACL matches when any of its values does; `!name` negates; when no
//! rule matches, the answer is the opposite of the last rule's; no rules at
//! all: allowed). They run after the built-in checks of [`crate::access`].
//!
//! Everything is compiled when the configuration is read ([`Builder`]):
//! evaluating a request ([`Rules::check`]) allocates nothing.
//!
//! ACL types: `src`, `dst` (literal addresses only: a host name never
//! matches, no name is looked up), `dstdomain`, `dstdom_regex`,
//! `url_regex`, `urlpath_regex`, `port`, `localport`, `myportname`,
//! `method`, `proto`; predefined: `all`, `localhost`, `to_localhost`,
//! `manager`, `CONNECT` (as Squid 5.7 defines them). Regular expressions
//! are the `regex` crate's, matched on bytes with Unicode off (ASCII case
//! folding, `.` any byte), where Squid uses POSIX extended ones: see
//! [`Builder::acl`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::Arc;

use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder};

/// What the rules look at in a request.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The client's address (an IPv4-mapped one as IPv4).
    pub client: IpAddr,
    /// The port of the listener the client connected to.
    pub local_port: u16,
    /// The name of that listener (`myportname`).
    pub port_name: &'a str,
    /// The method as sent.
    pub method: &'a [u8],
    /// The URL scheme, lower case; empty for CONNECT (Squid's `NONE`).
    pub scheme: &'a [u8],
    /// The destination host (an IPv6 literal in brackets), lower case.
    pub host: &'a [u8],
    /// The destination port.
    pub port: u16,
    /// The effective request URI (`host:port` for CONNECT).
    pub url: &'a [u8],
    /// Path and query (empty for CONNECT).
    pub path: &'a [u8],
}

/// What an ACL matches.
#[derive(Clone, Debug)]
enum Test {
    /// The client's address.
    Src(Vec<IpNet>),
    /// The destination, when it is an address literal.
    Dst(Vec<IpNet>),
    /// The destination host by name.
    DstDomain(Domains),
    /// A regular expression on a part of the request.
    Regex(Part, Regex),
    /// The destination port.
    Port(Vec<RangeInclusive<u16>>),
    /// The listener's port.
    LocalPort(Vec<RangeInclusive<u16>>),
    /// The listener's name.
    PortName(Vec<String>),
    /// The method.
    Method(Vec<Box<[u8]>>),
    /// The URL scheme (`none` for CONNECT).
    Proto(Vec<Box<[u8]>>),
}

/// What a regex ACL looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Host,
    Url,
    Path,
}

/// `dstdomain` values: exact names, and names whose subdomains match too
/// (written with a leading dot), both lower case.
#[derive(Clone, Debug, Default)]
struct Domains {
    exact: HashSet<Box<[u8]>>,
    /// Without their leading dot.
    dotted: HashSet<Box<[u8]>>,
}

impl Domains {
    fn matches(&self, host: &[u8]) -> bool {
        let mut buf = [0u8; 256];
        let lower;
        let host = if !host.iter().any(u8::is_ascii_uppercase) {
            host
        } else if host.len() <= buf.len() {
            let b = &mut buf[..host.len()];
            b.copy_from_slice(host);
            b.make_ascii_lowercase();
            &*b
        } else {
            lower = host.to_ascii_lowercase();
            &lower
        };
        if self.exact.contains(host) || self.dotted.contains(host) {
            return true;
        }
        if self.dotted.is_empty() {
            return false;
        }
        host.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'.')
            .any(|(i, _)| self.dotted.contains(&host[i + 1..]))
    }
}

/// A named ACL.
#[derive(Clone, Debug)]
struct Acl {
    name: String,
    test: Test,
}

impl Acl {
    fn matches(&self, f: &Facts<'_>) -> bool {
        match &self.test {
            Test::Src(nets) => nets.iter().any(|n| n.contains(&f.client)),
            Test::Dst(nets) => {
                literal_ip(f.host).is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
            }
            Test::DstDomain(d) => d.matches(f.host),
            Test::Regex(part, re) => re.is_match(match part {
                Part::Host => f.host,
                Part::Url => f.url,
                Part::Path => f.path,
            }),
            Test::Port(r) => r.iter().any(|r| r.contains(&f.port)),
            Test::LocalPort(r) => r.iter().any(|r| r.contains(&f.local_port)),
            Test::PortName(names) => names.iter().any(|n| n == f.port_name),
            Test::Method(m) => m.iter().any(|m| **m == *f.method),
            Test::Proto(p) => {
                let scheme = if f.scheme.is_empty() {
                    b"none".as_slice()
                } else {
                    f.scheme
                };
                p.iter().any(|p| p.eq_ignore_ascii_case(scheme))
            }
        }
    }
}

/// An address literal as a URI host (`10.1.2.3`, `[::1]`), IPv4-mapped
/// IPv6 as IPv4.
fn literal_ip(host: &[u8]) -> Option<IpAddr> {
    let host = std::str::from_utf8(host).ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    Some(crate::access::canonical_ip(ip))
}

/// One `http_access` rule.
#[derive(Clone, Debug)]
struct Rule {
    allow: bool,
    /// ACL indexes, each with `true` when negated (`!name`).
    terms: Vec<(usize, bool)>,
    label: Arc<str>,
}

/// The decision of the rules about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Go on.
    Allow,
    /// Refuse (403), naming the rule that decided (the implicit last rule
    /// too).
    Deny(&'a Arc<str>),
}

/// A compiled list of access rules. Two lists are equal when they were
/// built from the same definitions (a reload restarts a server only when
/// its rules changed).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    acls: Vec<Acl>,
    rules: Vec<Rule>,
    implicit: Option<(bool, Arc<str>)>,
    /// What they were built from, for equality.
    source: Vec<String>,
}

impl PartialEq for Rules {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Rules {
    /// True when there are no rules (every request the built-in checks let
    /// through is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The decision for a request: the first rule whose ACLs all match
    /// decides; else the opposite of the last rule; no rules: allow.
    pub fn check(&self, f: &Facts<'_>) -> Verdict<'_> {
        for rule in &self.rules {
            let hit = rule
                .terms
                .iter()
                .all(|&(acl, negated)| self.acls[acl].matches(f) != negated);
            if hit {
                return if rule.allow {
                    Verdict::Allow
                } else {
                    Verdict::Deny(&rule.label)
                };
            }
        }
        match &self.implicit {
            Some((false, label)) => Verdict::Deny(label),
            _ => Verdict::Allow,
        }
    }
}

/// A definition error: which value of the definition (index into the
/// values, or into a rule's ACL names) it is about, if one, and what is
/// wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefError {
    /// The bad value's index.
    pub value: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl DefError {
    fn at(value: usize, message: String) -> DefError {
        DefError {
            value: Some(value),
            message,
        }
    }

    fn whole(message: String) -> DefError {
        DefError {
            value: None,
            message,
        }
    }
}

/// The ACL types, as written in a definition.
pub const TYPES: [&str; 11] = [
    "src",
    "dst",
    "dstdomain",
    "dstdom_regex",
    "url_regex",
    "urlpath_regex",
    "port",
    "localport",
    "myportname",
    "method",
    "proto",
];

/// The ACLs every list has without defining them (Squid 5.7's).
pub const PREDEFINED: [&str; 5] = ["all", "localhost", "to_localhost", "manager", "CONNECT"];

/// The URL schemes `proto` knows (Squid's names; `none` is CONNECT's).
const PROTOCOLS: [&str; 13] = [
    "http",
    "https",
    "ftp",
    "gopher",
    "wais",
    "cache_object",
    "icp",
    "htcp",
    "urn",
    "whois",
    "coap",
    "coaps",
    "none",
];

/// Builds [`Rules`]: ACL definitions, then rules naming them.
#[derive(Debug)]
pub struct Builder {
    rules: Rules,
    names: HashMap<String, usize>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// A builder with the predefined ACLs.
    pub fn new() -> Builder {
        let mut b = Builder {
            rules: Rules::default(),
            names: HashMap::new(),
        };
        let predefined: [(&str, &str, &[&str]); 5] = [
            ("all", "src", &["all"]),
            ("localhost", "src", &["127.0.0.1/32", "::1"]),
            (
                "to_localhost",
                "dst",
                &["127.0.0.0/8", "0.0.0.0/32", "::1/128", "::/128"],
            ),
            (
                "manager",
                "url_regex",
                &[
                    "-i",
                    "^cache_object://",
                    "+i",
                    "^[^:]+://[^/]+/squid-internal-mgr/",
                ],
            ),
            ("CONNECT", "method", &["CONNECT"]),
        ];
        for (name, kind, values) in predefined {
            b.define(name, kind, values)
                .expect("predefined ACLs are valid");
        }
        b.rules.source.clear();
        b
    }

    /// Defines ACL `name` of type `kind` (one of [`TYPES`]) with `values`
    /// (any of which matching makes it match):
    ///
    /// - `src`, `dst`: addresses, CIDRs (`10.0.0.0/8`, `fc00::/7`,
    ///   Squid's `10.0.0.0/255.0.0.0` too), or `all`; `dst` takes no host
    ///   names, and a request naming its destination by a host name never
    ///   matches it. `-n` (Squid's "no lookups") is accepted and changes
    ///   nothing.
    /// - `dstdomain`: `.example.com` is example.com and every name under
    ///   it, `example.com` only itself, in any case (`-n` accepted).
    /// - `dstdom_regex` (the host), `url_regex` (the effective URI:
    ///   `host:port` for CONNECT), `urlpath_regex` (path and query): `-i`
    ///   makes the patterns after it case-insensitive, `+i` sensitive
    ///   again, as in Squid.
    /// - `port`, `localport`: ports and ranges (`1025-65535`).
    /// - `myportname`: listener names. `method`: methods, exact case.
    ///   `proto`: URL schemes in any case (`none`: CONNECT, as in Squid 5).
    pub fn acl(&mut self, name: &str, kind: &str, values: &[&str]) -> Result<(), DefError> {
        if PREDEFINED.contains(&name) {
            return Err(DefError::whole(format!(
                "{name:?} is predefined (like Squid's; {})",
                PREDEFINED.join(", ")
            )));
        }
        if name.is_empty() || name.starts_with('!') || name.contains(char::is_whitespace) {
            return Err(DefError::whole(format!(
                "{name:?} is not an ACL name (no spaces, no leading `!`)"
            )));
        }
        if self.names.contains_key(name) {
            return Err(DefError::whole(format!(
                "ACL {name:?} is already defined (give all its values in one `values` list)"
            )));
        }
        self.define(name, kind, values)
    }

    fn define(&mut self, name: &str, kind: &str, values: &[&str]) -> Result<(), DefError> {
        let test = test(kind, values)?;
        self.rules
            .source
            .push(format!("acl {name} {kind} {}", values.join(" ")));
        self.names.insert(name.to_string(), self.rules.acls.len());
        self.rules.acls.push(Acl {
            name: name.to_string(),
            test,
        });
        Ok(())
    }

    /// Whether an ACL of that name is defined (or predefined).
    pub fn has(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// Adds a rule: `allow` or deny when every ACL in `acls` matches
    /// (`!name`: when it does not). `label` names it in logs.
    pub fn rule(&mut self, allow: bool, acls: &[&str], label: &str) -> Result<(), DefError> {
        if acls.is_empty() {
            return Err(DefError::whole(
                "names no ACL (write [\"all\"] for every request)".into(),
            ));
        }
        let mut terms = Vec::with_capacity(acls.len());
        for (i, a) in acls.iter().enumerate() {
            let (negated, name) = match a.strip_prefix('!') {
                Some(n) => (true, n.trim_start()),
                None => (false, *a),
            };
            let Some(&acl) = self.names.get(name) else {
                return Err(DefError::at(i, format!("no ACL named {name:?}")));
            };
            terms.push((acl, negated));
        }
        let verb = if allow { "allow" } else { "deny" };
        self.rules
            .source
            .push(format!("http_access {verb} {} ({label})", acls.join(" ")));
        self.rules.rules.push(Rule {
            allow,
            terms,
            label: label.into(),
        });
        Ok(())
    }

    /// The rules; the implicit last one, if any, is labelled
    /// `implicit_label`.
    pub fn build(mut self, implicit_label: &str) -> Rules {
        self.rules.implicit = self
            .rules
            .rules
            .last()
            .map(|last| (!last.allow, Arc::from(implicit_label)));
        self.rules
    }
}

impl Rules {
    /// The names of the ACLs, predefined ones first.
    pub fn acl_names(&self) -> impl Iterator<Item = &str> {
        self.acls.iter().map(|a| a.name.as_str())
    }
}

/// Compiles the values of an ACL of type `kind`.
fn test(kind: &str, values: &[&str]) -> Result<Test, DefError> {
    if !TYPES.contains(&kind) {
        return Err(DefError::whole(format!(
            "unknown ACL type {kind:?} (carpool has: {})",
            TYPES.join(", ")
        )));
    }
    // Squid's flags before the values: `-n` (no lookups: carpool never
    // looks names up), `--` (end of flags)
    let mut start = 0;
    while let Some(v) = values.get(start) {
        match *v {
            "-n" if matches!(kind, "src" | "dst" | "dstdomain" | "dstdom_regex") => start += 1,
            "--" => {
                start += 1;
                break;
            }
            _ => break,
        }
    }
    let given = &values[start..];
    let items = || {
        given
            .iter()
            .enumerate()
            .map(move |(i, v)| (i + start, v.trim()))
    };
    if given.is_empty() {
        return Err(DefError::whole("has no values".into()));
    }
    let test = match kind {
        "src" | "dst" => {
            let nets: Result<Vec<Vec<IpNet>>, _> = items()
                .map(|(i, v)| addresses(v).map_err(|m| DefError::at(i, m)))
                .collect();
            let nets = nets?.concat();
            if kind == "src" {
                Test::Src(nets)
            } else {
                Test::Dst(nets)
            }
        }
        "dstdomain" => {
            let mut d = Domains::default();
            for (i, v) in items() {
                let name = v.to_ascii_lowercase();
                let (set, bare) = match name.strip_prefix('.') {
                    Some(bare) => (&mut d.dotted, bare),
                    None => (&mut d.exact, name.as_str()),
                };
                let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b);
                if bare.is_empty() || !bare.bytes().all(ok) {
                    return Err(DefError::at(i, format!("{v:?} is not a domain name")));
                }
                set.insert(bare.as_bytes().into());
            }
            Test::DstDomain(d)
        }
        "dstdom_regex" | "url_regex" | "urlpath_regex" => {
            let part = match kind {
                "dstdom_regex" => Part::Host,
                "url_regex" => Part::Url,
                _ => Part::Path,
            };
            Test::Regex(part, regexes(values, start)?)
        }
        "port" | "localport" => {
            let r: Result<Vec<_>, _> = items()
                .map(|(i, v)| port_range(v).map_err(|m| DefError::at(i, m)))
                .collect();
            if kind == "port" {
                Test::Port(r?)
            } else {
                Test::LocalPort(r?)
            }
        }
        "myportname" => Test::PortName(items().map(|(_, v)| v.to_string()).collect()),
        "method" => {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            let mut m = Vec::new();
            for (i, v) in items() {
                if v.is_empty() || !v.bytes().all(token) {
                    return Err(DefError::at(i, format!("{v:?} is not a method")));
                }
                m.push(v.as_bytes().into());
            }
            Test::Method(m)
        }
        _ => {
            let mut p = Vec::new();
            for (i, v) in items() {
                let lower = v.to_ascii_lowercase();
                if !PROTOCOLS.contains(&lower.as_str()) {
                    return Err(DefError::at(
                        i,
                        format!("{v:?} is not a protocol (one of {})", PROTOCOLS.join(", ")),
                    ));
                }
                p.push(lower.into_bytes().into());
            }
            Test::Proto(p)
        }
    };
    Ok(test)
}

/// Addresses of a `src` or `dst` value: an address, a CIDR, an address
/// with a dotted mask, a range (`first-last`), or `all`.
fn addresses(v: &str) -> Result<Vec<IpNet>, String> {
    let bad = || format!("{v:?} is not an address or CIDR range");
    if v == "all" {
        return Ok(vec![
            IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).expect("valid"),
            IpNet::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0).expect("valid"),
        ]);
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(vec![IpNet::from(crate::access::canonical_ip(ip))]);
    }
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(vec![net.trunc()]);
    }
    // Squid's range of addresses, 10.0.0.1-10.0.0.99: the networks that
    // cover it exactly
    if let Some((a, b)) = v.split_once('-') {
        return match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
            (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) if a <= b => {
                Ok(ipnet::Ipv4Subnets::new(a, b, 0).map(IpNet::V4).collect())
            }
            (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(b))) if a <= b => {
                Ok(ipnet::Ipv6Subnets::new(a, b, 0).map(IpNet::V6).collect())
            }
            _ => Err(format!(
                "{v:?} is not a range of addresses (first-last, of one family, in order)"
            )),
        };
    }
    // Squid's 10.0.0.0/255.0.0.0
    let (a, m) = v.split_once('/').ok_or_else(bad)?;
    let (a, m) = (
        a.parse::<Ipv4Addr>().map_err(|_| bad())?,
        m.parse::<Ipv4Addr>().map_err(|_| bad())?,
    );
    let mask = u32::from(m);
    if mask.leading_ones() + mask.trailing_zeros() != 32 {
        return Err(format!("{v:?}: the mask is not contiguous"));
    }
    let net = IpNet::new(a.into(), mask.leading_ones() as u8).map_err(|_| bad())?;
    Ok(vec![net.trunc()])
}

/// A port or a range of them (`1025-65535`).
fn port_range(v: &str) -> Result<RangeInclusive<u16>, String> {
    let port = |x: &str| x.trim().parse::<u16>().ok().filter(|&p| p > 0);
    match v.split_once('-') {
        None => port(v)
            .map(|p| p..=p)
            .ok_or_else(|| format!("{v:?} is not a TCP port (1-65535)")),
        Some((a, b)) => match (port(a), port(b)) {
            (Some(a), Some(b)) if a <= b => Ok(a..=b),
            _ => Err(format!("{v:?} is not a port range like \"1025-65535\"")),
        },
    }
}

/// Compiles the patterns of a regex ACL (`values[start..]`, with `-i` and
/// `+i` switching case sensitivity for the patterns after them) into one
/// regex: each pattern is checked on its own first, so an error names it.
fn regexes(values: &[&str], start: usize) -> Result<Regex, DefError> {
    let mut insensitive = false;
    let mut joined = String::new();
    for (i, &v) in values.iter().enumerate().skip(start) {
        match v {
            "-i" => insensitive = true,
            "+i" => insensitive = false,
            _ => {
                compile(v, insensitive).map_err(|m| DefError::at(i, m))?;
                if !joined.is_empty() {
                    joined.push('|');
                }
                joined.push_str(if insensitive { "(?i:" } else { "(?:" });
                joined.push_str(v);
                joined.push(')');
            }
        }
    }
    if joined.is_empty() {
        return Err(DefError::whole("has no patterns".into()));
    }
    compile(&joined, false).map_err(DefError::whole)
}

/// Compiles one regex as the regex ACLs do (bytes, Unicode off; Squid's
/// `-i` is `insensitive`); the error is one line naming the pattern.
pub fn compile(pattern: &str, insensitive: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .case_insensitive(insensitive)
        .build()
        .map_err(|e| {
            let e = e.to_string();
            // the regex crate's message spans lines (the pattern, a caret)
            let last = e.lines().last().unwrap_or("invalid").trim();
            format!("{pattern:?} is not a regular expression: {last}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        client: &'static str,
        local_port: u16,
        port_name: &'static str,
        method: &'static str,
        url: &'static str,
    }

    fn req(client: &'static str, method: &'static str, url: &'static str) -> Req {
        Req {
            client,
            local_port: 3128,
            port_name: "frontend",
            method,
            url,
        }
    }

    impl Req {
        fn check<R>(&self, rules: impl FnOnce(&Facts<'_>) -> R) -> R {
            let uri =
                carp::normalize::normalize_target(self.method.as_bytes(), self.url.as_bytes())
                    .expect("a valid target");
            let f = Facts {
                client: self.client.parse().unwrap(),
                local_port: self.local_port,
                port_name: self.port_name,
                method: self.method.as_bytes(),
                scheme: uri.scheme(),
                host: uri.host(),
                port: uri.port(),
                url: uri.effective(),
                path: uri.path_and_query(),
            };
            rules(&f)
        }
    }

    /// Whether one ACL (`kind values`) matches `r`.
    fn acl_matches(kind: &str, values: &[&str], r: &Req) -> bool {
        let mut b = Builder::new();
        b.acl("x", kind, values).unwrap();
        b.rule(true, &["x"], "allow x").unwrap();
        let rules = b.build("implicit");
        r.check(|f| rules.check(f) == Verdict::Allow)
    }

    fn get(url: &'static str) -> Req {
        req("10.1.2.3", "GET", url)
    }

    #[test]
    fn src_and_dst() {
        let src = ["10.0.0.0/8", "192.168.1.7", "fc00::/7"];
        assert!(acl_matches(
            "src",
            &src,
            &req("10.9.9.9", "GET", "http://h/")
        ));
        assert!(acl_matches(
            "src",
            &src,
            &req("192.168.1.7", "GET", "http://h/")
        ));
        assert!(!acl_matches(
            "src",
            &src,
            &req("192.168.1.8", "GET", "http://h/")
        ));
        assert!(acl_matches(
            "src",
            &src,
            &req("fd00::1", "GET", "http://h/")
        ));
        assert!(!acl_matches(
            "src",
            &src,
            &req("2001:db8::1", "GET", "http://h/")
        ));
        assert!(acl_matches(
            "src",
            &["10.0.0.0/255.0.0.0"],
            &get("http://h/")
        ));
        assert!(acl_matches(
            "src",
            &["all"],
            &req("2001:db8::1", "GET", "http://h/")
        ));
        // Squid's ranges (Debian's squid.conf: 0.0.0.1-0.255.255.255)
        let range = ["10.0.0.3-10.0.0.9", "fc00::1-fc00::2"];
        for (client, inside) in [
            ("10.0.0.2", false),
            ("10.0.0.3", true),
            ("10.0.0.9", true),
            ("10.0.0.10", false),
            ("fc00::2", true),
            ("fc00::3", false),
        ] {
            let r = req(client, "GET", "http://h/");
            assert_eq!(acl_matches("src", &range, &r), inside, "{client}");
        }
        for bad in ["10.0.0.9-10.0.0.3", "10.0.0.1-fc00::1", "10.0.0.1-x"] {
            assert!(test("src", &[bad]).is_err(), "{bad}");
        }
        // dst: literal destinations only, never a name
        let dst = ["192.0.2.0/24", "2001:db8::/32"];
        assert!(acl_matches("dst", &dst, &get("http://192.0.2.55:8080/")));
        assert!(acl_matches("dst", &dst, &get("http://[2001:db8::5]/")));
        assert!(!acl_matches("dst", &dst, &get("http://198.51.100.1/")));
        assert!(!acl_matches("dst", &["all"], &get("http://example.com/")));
        assert!(acl_matches(
            "dst",
            &dst,
            &req("10.1.2.3", "CONNECT", "192.0.2.1:443")
        ));
    }

    #[test]
    fn dstdomain_has_squids_dot_semantics() {
        let dotted = [".example.com"];
        for (url, hit) in [
            ("http://example.com/", true),
            ("http://www.example.com/", true),
            ("http://a.b.example.com/", true),
            ("http://WWW.Example.COM/", true),
            ("http://notexample.com/", false),
            ("http://example.com.evil.net/", false),
            ("http://com/", false),
        ] {
            assert_eq!(acl_matches("dstdomain", &dotted, &get(url)), hit, "{url}");
        }
        let exact = ["Example.com"];
        assert!(acl_matches(
            "dstdomain",
            &exact,
            &get("http://example.com/")
        ));
        assert!(!acl_matches(
            "dstdomain",
            &exact,
            &get("http://www.example.com/")
        ));
        assert!(acl_matches(
            "dstdomain",
            &["-n", "example.com"],
            &req("10.0.0.1", "CONNECT", "example.com:443")
        ));
    }

    #[test]
    fn regexes_and_their_case_flags() {
        assert!(acl_matches(
            "url_regex",
            &["^http://h/a"],
            &get("http://h/abc")
        ));
        assert!(!acl_matches(
            "url_regex",
            &["^http://h/A"],
            &get("http://h/abc")
        ));
        assert!(acl_matches(
            "url_regex",
            &["-i", "^http://h/A"],
            &get("http://h/abc")
        ));
        assert!(!acl_matches(
            "url_regex",
            &["-i", "+i", "/A"],
            &get("http://h/abc")
        ));
        assert!(acl_matches(
            "url_regex",
            &["-i", "nothing", "+i", "/a"],
            &get("http://h/abc")
        ));
        // urlpath_regex sees the path with the query, as Squid's does
        assert!(acl_matches(
            "urlpath_regex",
            &["\\?q=1$"],
            &get("http://h/p?q=1")
        ));
        assert!(acl_matches(
            "urlpath_regex",
            &["-i", "\\.JPG$"],
            &get("http://h/x.jpg")
        ));
        assert!(!acl_matches(
            "urlpath_regex",
            &["^http"],
            &get("http://h/x")
        ));
        assert!(acl_matches(
            "dstdom_regex",
            &["(^|\\.)ads\\."],
            &get("http://ads.example/")
        ));
        assert!(!acl_matches(
            "dstdom_regex",
            &["(^|\\.)ads\\."],
            &get("http://h/ads.x")
        ));
        // CONNECT: the URL is host:port
        let connect = req("10.0.0.1", "CONNECT", "h.example:443");
        assert!(acl_matches("url_regex", &["^h\\.example:443$"], &connect));
    }

    #[test]
    fn ports_methods_protocols_listeners() {
        let safe = ["80", "443", "1025-65535"];
        assert!(acl_matches("port", &safe, &get("http://h/")));
        assert!(acl_matches("port", &safe, &get("http://h:8080/")));
        assert!(!acl_matches("port", &safe, &get("http://h:25/")));
        let r = get("http://h/");
        assert!(acl_matches("localport", &["3128"], &r));
        assert!(!acl_matches("localport", &["3000-3127"], &r));
        assert!(acl_matches("myportname", &["frontend"], &r));
        assert!(!acl_matches("myportname", &["cache1"], &r));
        assert!(acl_matches("method", &["POST", "GET"], &r));
        assert!(
            !acl_matches("method", &["get"], &r),
            "methods are case-sensitive"
        );
        assert!(acl_matches("proto", &["HTTP"], &r));
        let connect = req("10.0.0.1", "CONNECT", "h:443");
        assert!(!acl_matches("proto", &["https", "http"], &connect));
        assert!(
            acl_matches("proto", &["NONE"], &connect),
            "Squid 5: CONNECT is NONE"
        );
    }

    fn rules(defs: &[(&str, &str, &[&str])], list: &[(bool, &[&str])]) -> Rules {
        let mut b = Builder::new();
        for (name, kind, values) in defs {
            b.acl(name, kind, values).unwrap();
        }
        for (i, (allow, acls)) in list.iter().enumerate() {
            b.rule(*allow, acls, &format!("rule {i}")).unwrap();
        }
        b.build("implicit")
    }

    fn verdict(rules: &Rules, r: &Req) -> Option<String> {
        r.check(|f| match rules.check(f) {
            Verdict::Allow => None,
            Verdict::Deny(label) => Some(label.to_string()),
        })
    }

    #[test]
    fn first_match_and_or_negation_implicit_last_rule() {
        let defs: &[(&str, &str, &[&str])] = &[
            ("localnet", "src", &["10.0.0.0/8"]),
            ("blocked", "dstdomain", &[".bad.example", "worse.example"]),
            ("posts", "method", &["POST"]),
        ];
        let list: &[(bool, &[&str])] = &[
            (false, &["blocked"]),
            (false, &["localnet", "posts", "!localhost"]),
            (true, &["localnet"]),
            (true, &["localhost"]),
        ];
        let r = rules(defs, list);
        assert_eq!(
            verdict(&r, &get("http://a.bad.example/")).as_deref(),
            Some("rule 0")
        );
        assert_eq!(
            verdict(&r, &get("http://worse.example/")).as_deref(),
            Some("rule 0")
        );
        assert_eq!(verdict(&r, &get("http://good.example/")), None);
        // AND within a rule: a POST from localnet, not from localhost
        assert_eq!(
            verdict(&r, &req("10.1.1.1", "POST", "http://good.example/")).as_deref(),
            Some("rule 1")
        );
        assert_eq!(
            verdict(&r, &req("127.0.0.1", "POST", "http://good.example/")),
            None
        );
        // nothing matched, last rule allow: implicit deny
        assert_eq!(
            verdict(&r, &req("192.168.1.1", "GET", "http://good.example/")).as_deref(),
            Some("implicit")
        );
        // last rule deny: implicit allow
        let r = rules(defs, &[(false, &["blocked"])]);
        assert_eq!(
            verdict(&r, &req("192.168.1.1", "GET", "http://good.example/")),
            None
        );
        // no rules: allow
        assert_eq!(
            verdict(&rules(defs, &[]), &get("http://a.bad.example/")),
            None
        );
        assert!(rules(defs, &[]).is_empty());
    }

    #[test]
    fn predefined_acls_are_squids() {
        let list: &[(bool, &[&str])] = &[
            (true, &["localhost", "manager"]),
            (false, &["manager"]),
            (false, &["to_localhost"]),
            (false, &["CONNECT", "!all"]),
            (true, &["all"]),
        ];
        let r = rules(&[], list);
        let mgr = "http://h/squid-internal-mgr/info";
        assert_eq!(verdict(&r, &req("127.0.0.1", "GET", mgr)), None);
        assert_eq!(verdict(&r, &get(mgr)).as_deref(), Some("rule 1"));
        assert_eq!(
            verdict(&r, &get("http://127.0.0.5/")).as_deref(),
            Some("rule 2")
        );
        assert_eq!(
            verdict(&r, &get("http://[::1]/")).as_deref(),
            Some("rule 2")
        );
        assert_eq!(
            verdict(&r, &get("http://0.0.0.0/")).as_deref(),
            Some("rule 2")
        );
        assert_eq!(verdict(&r, &get("http://localhost/")), None, "no lookups");
        assert_eq!(verdict(&r, &req("10.0.0.1", "CONNECT", "h:443")), None);
    }

    #[test]
    fn definition_errors() {
        let mut b = Builder::new();
        let e = |r: Result<(), DefError>| r.unwrap_err();
        assert_eq!(
            e(b.acl("a", "src", &["10.0.0.0/8", "10.0.0.0/33"])).value,
            Some(1)
        );
        assert_eq!(e(b.acl("a", "dst", &["example.com"])).value, Some(0));
        assert!(e(b.acl("a", "srcdomain", &["x"]))
            .message
            .contains("unknown ACL type"));
        assert_eq!(
            e(b.acl("a", "url_regex", &["-i", "a(", "b"])).value,
            Some(1)
        );
        assert_eq!(e(b.acl("a", "port", &["80", "90-80"])).value, Some(1));
        assert_eq!(e(b.acl("a", "proto", &["gopherz"])).value, Some(0));
        assert_eq!(e(b.acl("a", "src", &[])).value, None);
        assert_eq!(
            e(b.acl("a", "src", &["255.0.0.0/0.255.0.0"])).value,
            Some(0)
        );
        assert!(e(b.acl("all", "src", &["10.0.0.1"]))
            .message
            .contains("predefined"));
        b.acl("a", "src", &["10.0.0.1"]).unwrap();
        assert!(e(b.acl("a", "src", &["10.0.0.2"]))
            .message
            .contains("already defined"));
        assert_eq!(e(b.rule(true, &["a", "!nope"], "r")).value, Some(1));
        assert_eq!(e(b.rule(true, &[], "r")).value, None);
    }

    #[test]
    fn equal_when_built_from_the_same_definitions() {
        let defs: &[(&str, &str, &[&str])] = &[("n", "src", &["10.0.0.0/8"])];
        let a = rules(defs, &[(true, &["n"])]);
        assert_eq!(a, rules(defs, &[(true, &["n"])]));
        assert_ne!(a, rules(defs, &[(false, &["n"])]));
        assert_ne!(
            a,
            rules(&[("n", "src", &["10.0.0.0/9"])], &[(true, &["n"])])
        );
    }
}
