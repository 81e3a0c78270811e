//! The `cache_peer` lines of a squid.conf, read as Squid 5.7 reads them.
//!
//! Only parents with the `carp` option become members, in file order, with
//! `name=` (else the host as written), `weight=` (below 1 counts as 1),
//! `carp-key=` (parts matched by prefix, as Squid does), `max-conn=` and
//! `login=PASS` or `login=PASSTHRU` (`pass_credentials`). Other peers and the
//! rest of squid.conf are ignored, with a warning for peers. Lines ending in
//! `\` continue on the next line; `#` starts a comment line.

use std::path::Path;

use super::settings::{FrontendSettings, ListenMode};
use super::{Config, ConfigError, ConfigErrors, Parent};
use carp::table::escape_name;
use carp::{KeySpec, Mode};

/// A configuration error at a line, about a key.
type ErrFn<'a> = dyn Fn(usize, &str, String) -> ConfigError + 'a;

/// Parses squid.conf bytes into a `hash = "squid"` configuration.
/// Every bad line is reported, not only the first.
pub fn parse_squid_conf(path: &Path, bytes: &[u8]) -> Result<Config, ConfigErrors> {
    let mut parents: Vec<Parent> = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let err = |line: usize, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    let mut http_port: Option<FrontendSettings> = None;
    for (line_no, logical) in logical_lines(bytes) {
        // squid.conf is bytes: only the words carpool reads must be UTF-8,
        // except a peer's `name=`, which is hashed as the bytes it is.
        let words: Vec<&[u8]> = logical
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let Some(&directive) = words.first() else {
            continue;
        };
        let Ok(directive) = std::str::from_utf8(directive) else {
            continue; // no directive carpool reads
        };
        if !matches!(directive, "include" | "http_port" | "cache_peer") {
            continue; // comments, and what carpool does not read yet
        }
        let mut text_words = Vec::with_capacity(words.len());
        let mut name: Option<&[u8]> = None;
        let mut bad = None;
        for (i, w) in words.iter().enumerate().skip(1) {
            // (cache_peer HOST TYPE PORT ICP-PORT OPTIONS...)
            if directive == "cache_peer" && i >= 5 {
                if w.starts_with(b"#") {
                    break;
                }
                if let Some(n) = w.strip_prefix(b"name=").filter(|n| !n.is_empty()) {
                    name = Some(n);
                    continue;
                }
            }
            match std::str::from_utf8(w) {
                Ok(t) => text_words.push(t),
                Err(_) => {
                    bad = Some(String::from_utf8_lossy(w).into_owned());
                    break;
                }
            }
        }
        if let Some(w) = bad {
            let message = format!("{w:?} is not valid UTF-8 (only name= may hold other bytes)");
            errors.push(err(line_no, directive, message));
            continue;
        }
        let tokens = text_words.into_iter();
        let at = format!("{}:{line_no}", path.display());
        match directive {
            "include" => warnings.push(format!(
                "{at}: include not followed: put the cache_peer lines in this file"
            )),
            "http_port" if http_port.is_some() => warnings.push(format!(
                "{at}: only the first http_port is used (give carpool frontend --listen for another)"
            )),
            "http_port" => match parse_http_port(tokens) {
                Ok(s) => http_port = Some(s),
                Err(m) => errors.push(err(line_no, "http_port", m)),
            },
            "cache_peer" => {
                let (p, carp) = match cache_peer(tokens, name, line_no, &err) {
                    Ok(peer) => peer,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                if let Some(prev) = parents.iter().find(|q| q.name.eq_ignore_ascii_case(&p.name)) {
                    let message = format!(
                        "cache_peer {} specified twice (first on line {})",
                        p.name, prev.line
                    );
                    errors.push(err(line_no, "name", message));
                    continue;
                }
                if carp {
                    parents.push(p);
                } else {
                    warnings.push(format!(
                        "{at}: cache_peer {} ignored: not a parent with the carp option",
                        p.name
                    ));
                }
            }
            _ => unreachable!("directives are filtered above"),
        }
    }
    if parents.is_empty() && errors.is_empty() {
        errors.push(err(
            1,
            "cache_peer",
            "no `cache_peer ... parent ... carp` lines".into(),
        ));
    }
    if parents.len() > carp::MAX_MEMBERS {
        errors.push(err(
            parents[carp::MAX_MEMBERS].line,
            "cache_peer",
            format!("at most {} carp parents are supported", carp::MAX_MEMBERS),
        ));
    }
    if let Some(errors) = ConfigErrors::new(errors) {
        return Err(errors);
    }
    Ok(Config {
        source: path.to_path_buf(),
        hash: Mode::Squid,
        parents,
        frontend: http_port.unwrap_or_default(),
        health: Default::default(),
        cache: Default::default(),
        admin: None,
        log_dir: None,
        warnings,
    })
}

/// `cache_peer host type http-port icp-port [options]` on line `line`,
/// with its last non-empty `name=` taken out as bytes: the peer, and whether
/// it is a CARP parent (carpool uses no other). A name that is not UTF-8 is
/// kept escaped ([`carp::table::escape_name`]); the hash unescapes it.
fn cache_peer<'a>(
    mut tokens: impl Iterator<Item = &'a str>,
    name: Option<&[u8]>,
    line: usize,
    err: &ErrFn<'_>,
) -> Result<(Parent, bool), ConfigError> {
    let missing = |what: &str| err(line, "cache_peer", format!("missing {what}"));
    let host = tokens.next().ok_or_else(|| missing("hostname"))?;
    if host.contains(|c: char| c.is_control() || c.is_whitespace()) {
        let message = format!("hostname {host:?} holds a control character");
        return Err(err(line, "cache_peer", message));
    }
    let kind = tokens
        .next()
        .ok_or_else(|| missing("peer type (parent, sibling, multicast)"))?;
    if !matches!(kind, "parent" | "sibling" | "multicast") {
        return Err(err(
            line,
            "cache_peer",
            format!("unknown peer type {kind:?}"),
        ));
    }
    let port_text = tokens.next().ok_or_else(|| missing("http port"))?;
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| {
            err(
                line,
                "cache_peer",
                format!("http port {port_text:?} is not a TCP port"),
            )
        })?;
    if tokens.next().is_none() {
        return Err(missing("icp port (use 0)"));
    }
    let mut p = Parent {
        name: escape_name(name.unwrap_or(host.as_bytes())),
        host: host.to_ascii_lowercase(),
        port,
        weight: 1,
        carp_key: None,
        max_conn: 0,
        pass_credentials: false,
        line,
        own: Default::default(),
    };
    let carp = peer_options(&mut p, kind == "parent", tokens, err)?;
    Ok((p, carp))
}

/// The options of a `cache_peer` line into `p` (`weight=`, below 1 counting
/// as 1; `carp`, on a `parent` only; `carp-key=`, after `carp`;
/// `max-conn=`; `login=PASS` and `login=PASSTHRU`, the same for a frontend
/// without external ACLs: `pass_credentials`; `name=` is read by the
/// caller); true when it has `carp`.
fn peer_options<'a>(
    p: &mut Parent,
    parent: bool,
    tokens: impl Iterator<Item = &'a str>,
    err: &ErrFn<'_>,
) -> Result<bool, ConfigError> {
    let line = p.line;
    let mut carp = false;
    for opt in tokens {
        if opt.starts_with('#') {
            break;
        } else if let Some(w) = opt.strip_prefix("weight=") {
            let w = w
                .parse::<i32>()
                .map_err(|_| err(line, "weight", format!("{w:?} is not an integer")))?;
            p.weight = w.max(1) as u32;
        } else if opt == "carp" {
            if !parent {
                return Err(err(
                    line,
                    "carp",
                    format!("carp on a non-parent peer {}", p.host),
                ));
            }
            carp = true;
        } else if let Some(k) = opt.strip_prefix("carp-key=") {
            if !carp {
                let message = "carp-key before (or without) the carp option".into();
                return Err(err(line, "carp-key", message));
            }
            let key = KeySpec::parse_squid(k).map_err(|e| err(line, "carp-key", e.to_string()))?;
            p.carp_key = Some(key);
        } else if opt == "login=PASS" || opt == "login=PASSTHRU" {
            p.pass_credentials = true;
        } else if let Some(m) = opt.strip_prefix("max-conn=") {
            p.max_conn = m
                .parse::<u32>()
                .map_err(|_| err(line, "max-conn", format!("{m:?} is not a connection count")))?;
        }
    }
    Ok(carp)
}

/// `http_port [address:]port [accel] [defaultsite=host] ...`: the frontend's
/// listener (all addresses when none is given, like Squid).
fn parse_http_port<'a>(
    mut tokens: impl Iterator<Item = &'a str>,
) -> Result<FrontendSettings, String> {
    let spec = tokens.next().ok_or("missing port")?;
    let listen = if let Ok(port) = spec.parse::<u16>() {
        std::net::SocketAddr::from(([0, 0, 0, 0], port))
    } else {
        spec.parse()
            .map_err(|_| format!("{spec:?} is not PORT or ADDRESS:PORT"))?
    };
    let mut s = FrontendSettings::default();
    s.server.listen = listen;
    // Squid's default: a defaultsite is the site of every request
    s.vhost = false;
    for opt in tokens {
        if opt == "accel" {
            s.mode = ListenMode::Accel;
        } else if opt == "vhost" {
            s.vhost = true;
        } else if let Some(site) = opt.strip_prefix("defaultsite=") {
            s.default_site = Some(site.to_string());
        }
    }
    Ok(s)
}

/// Splits into logical lines (joining `\`-continued ones), numbered by their first line.
fn logical_lines(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut start = 0;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if cur.is_empty() {
            start = i + 1;
        }
        match line.strip_suffix(b"\\") {
            Some(head) => {
                cur.extend_from_slice(head);
                cur.push(b' ');
            }
            None => {
                cur.extend_from_slice(line);
                out.push((start, std::mem::take(&mut cur)));
            }
        }
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_squid_conf(Path::new("squid.conf"), text.as_bytes())
            .map_err(|e| e.iter().next().cloned().expect("never empty"))
    }

    #[test]
    fn reads_carp_parents() {
        let c = parse(
            "# comment\nhttp_port 3128\ncache_peer 10.0.0.1 parent 3128 0 carp name=A weight=0 no-query\n\
             cache_peer Sib sibling 3128 0 proxy-only\n\
             cache_peer b.example parent 3128 0 carp \\\n  carp-key=hostname,path weight=3\n",
        )
        .unwrap();
        assert_eq!(c.hash, Mode::Squid);
        assert_eq!(c.parents.len(), 2);
        assert_eq!((c.parents[0].name.as_str(), c.parents[0].weight), ("A", 1));
        assert_eq!(
            (
                c.parents[1].name.as_str(),
                c.parents[1].weight,
                c.parents[1].line
            ),
            ("b.example", 3, 5)
        );
        let k = c.parents[1].carp_key.unwrap();
        assert!(k.host && k.path && !k.port);
        assert_eq!(c.warnings.len(), 1);
        assert!(!c.parents[0].pass_credentials);
    }

    /// `login=PASS` (and `PASSTHRU`, the same without external ACLs) is
    /// `pass_credentials`; Squid compares the word case-sensitively, and so
    /// does this.
    #[test]
    fn login_pass_passes_credentials() {
        let c = parse(
            "cache_peer a parent 1 0 carp login=PASS
cache_peer b parent 1 0 carp login=PASSTHRU
             cache_peer c parent 1 0 carp login=pass
cache_peer d parent 1 0 carp login=u:p
",
        )
        .unwrap();
        let pass: Vec<bool> = c.parents.iter().map(|p| p.pass_credentials).collect();
        assert_eq!(pass, [true, true, false, false]);
    }

    #[test]
    fn http_port_sets_the_listener() {
        let c = parse("http_port 127.0.0.1:3130 accel defaultsite=www.example\nhttp_port 3131\ncache_peer a parent 1 0 carp\n").unwrap();
        assert_eq!(c.frontend.server.listen, "127.0.0.1:3130".parse().unwrap());
        assert_eq!(c.frontend.mode, ListenMode::Accel);
        assert_eq!(c.frontend.default_site.as_deref(), Some("www.example"));
        assert!(
            !c.frontend.vhost,
            "without vhost, defaultsite keys every request"
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let c = parse("http_port 3130 accel vhost defaultsite=w\ncache_peer a parent 1 0 carp\n")
            .unwrap();
        assert!(c.frontend.vhost);
        let c = parse("http_port 3128\ncache_peer a parent 1 0 carp\n").unwrap();
        assert_eq!(c.frontend.server.listen, "0.0.0.0:3128".parse().unwrap());
        assert_eq!(
            parse("http_port nope\ncache_peer a parent 1 0 carp\n")
                .unwrap_err()
                .key,
            "http_port"
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/config_squid.rs): a host with a
    /// control character (`\v127.0.0.1`: words are split at ASCII
    /// whitespace, which VT is not) was taken as written, where
    /// carpool.toml trims it; no such host can be reached.
    #[test]
    fn a_peer_host_with_a_control_character_is_refused() {
        for text in [
            "cache_peer \u{b}127.0.0.1 parent 3128 0 carp\n",
            "cache_peer a\u{1}b parent 3128 0 carp name=x\n",
            "cache_peer a\u{85} parent 3128 0 carp\n",
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (1, "cache_peer"), "{text:?}");
            assert!(e.message.contains("hostname"), "{e}");
        }
    }

    /// Issue 15: squid.conf is bytes. Squid 5.7 takes `name=lat<0xE9>n1`
    /// (Latin-1) and hashes those bytes as signed chars: its cache manager
    /// `carp` page shows the hash cf9486ea (and 27ccf6ae for `\xc9T\xc9`).
    /// The name is kept escaped; the hash unescapes it. Other lines may hold
    /// any bytes too (a Latin-1 comment); words carpool reads may not.
    #[test]
    fn a_name_that_is_not_utf8_is_hashed_as_its_bytes() {
        let conf = b"# caf\xe9 (a Latin-1 comment)\nacl x dstdomain lat\xe9n\n\
                     cache_peer 127.0.0.1 parent 3128 0 carp name=lat\xe9n1 no-query\n\
                     cache_peer 127.0.0.1 parent 3129 0 carp name=p2\n\
                     cache_peer 127.0.0.1 parent 3130 0 carp weight=2 name=\xc9T\xc9\n\
                     cache_peer 127.0.0.1 parent 3131 0 carp name=a\\x41 # name=\xff\n";
        let c = parse_squid_conf(Path::new("squid.conf"), conf).unwrap();
        let names: Vec<&str> = c.parents.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["lat\\xe9n1", "p2", "\\xc9T\\xc9", "a\\x5cx41"]);
        let hash = |name: &str| {
            let bytes = carp::table::unescape_name(name);
            carp::hash::carp_member_hash(&bytes, carp::hash::CharSign::Signed)
        };
        assert_eq!(hash(&c.parents[0].name), 0xcf9486ea);
        assert_eq!(hash(&c.parents[1].name), 0x5183b2c2);
        assert_eq!(hash(&c.parents[2].name), 0x27ccf6ae);
        assert_eq!(
            carp::table::unescape_name(&c.parents[3].name).as_ref(),
            b"a\\x41"
        );
        c.table().unwrap();
        // a word carpool reads must still be text
        let e = parse_squid_conf(
            Path::new("squid.conf"),
            b"cache_peer 127.0.0.1 parent 3128 0 carp weight=\xe9\n",
        )
        .unwrap_err();
        let e = e.iter().next().unwrap();
        assert_eq!((e.line, e.key.as_str()), (1, "cache_peer"));
        // names are compared as bytes, ASCII case folded, as Squid does
        let twice =
            b"cache_peer a parent 1 0 carp name=X\xe9\ncache_peer b parent 1 0 carp name=x\xe9\n";
        assert!(parse_squid_conf(Path::new("squid.conf"), twice).is_err());
        let two =
            b"cache_peer a parent 1 0 carp name=x\xe9\ncache_peer b parent 1 0 carp name=x\xc9\n";
        assert_eq!(
            parse_squid_conf(Path::new("squid.conf"), two)
                .unwrap()
                .parents
                .len(),
            2
        );
    }

    #[test]
    fn errors() {
        let e = parse("cache_peer a parent 3128 0 carp-key=host carp\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (1, "carp-key"));
        let e = parse("cache_peer a parent 3128 0 carp\ncache_peer b parent 1 0 carp name=A\n")
            .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "name"));
        let e = parse("cache_peer a parent x 0 carp\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("http_port 3128\n").unwrap_err();
        assert_eq!(e.key, "cache_peer");
        let e = parse("\ncache_peer a parent 1 0 carp weight=abc\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "weight"));
    }

    #[test]
    fn every_bad_line_is_reported() {
        let text = "cache_peer a parent x 0 carp\nhttp_port nope\ncache_peer b parent 1 0 carp\n\
                    cache_peer c parent 1 0 carp weight=abc\n";
        let e = parse_squid_conf(Path::new("squid.conf"), text.as_bytes()).unwrap_err();
        let at: Vec<_> = e.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(at, [(1, "cache_peer"), (2, "http_port"), (4, "weight")]);
        assert_eq!(e.to_string().lines().count(), 3, "{e}");
    }
}
