//! The `cache_peer` lines of a squid.conf, read as Squid 5.7 reads them.
//!
//! Only parents with the `carp` option become members, in file order, with
//! `name=` (else the host as written), `weight=` (below 1 counts as 1) and
//! `carp-key=` (parts matched by prefix, as Squid does). Other peers and the
//! rest of squid.conf are ignored, with a warning for peers. Lines ending in
//! `\` continue on the next line; `#` starts a comment line.

use std::path::Path;

use super::settings::{FrontendSettings, ListenMode};
use super::{Config, ConfigError, Parent};
use carp::{KeySpec, Mode};

/// Parses squid.conf bytes into a `hash = "squid"` configuration.
pub fn parse_squid_conf(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    let mut parents: Vec<Parent> = Vec::new();
    let mut warnings = Vec::new();
    let err = |line: usize, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_string(),
        message,
    };
    let mut http_port: Option<FrontendSettings> = None;
    for (line_no, logical) in logical_lines(bytes) {
        let text = std::str::from_utf8(&logical)
            .map_err(|_| err(line_no, "-", "line is not valid UTF-8".into()))?;
        let mut tokens = text.split_ascii_whitespace();
        let Some(directive) = tokens.next() else {
            continue;
        };
        if directive.starts_with('#') {
            continue;
        }
        if directive == "include" {
            warnings.push(format!(
                "{}:{line_no}: include not followed: put the cache_peer lines in this file",
                path.display()
            ));
            continue;
        }
        if directive == "http_port" {
            if http_port.is_none() {
                http_port =
                    Some(parse_http_port(tokens).map_err(|m| err(line_no, "http_port", m))?);
            } else {
                warnings.push(format!(
                    "{}:{line_no}: only the first http_port is used (give carpool frontend --listen for another)",
                    path.display()
                ));
            }
            continue;
        }
        if directive != "cache_peer" {
            continue;
        }
        let host = tokens
            .next()
            .ok_or_else(|| err(line_no, "cache_peer", "missing hostname".into()))?;
        let kind = tokens.next().ok_or_else(|| {
            err(
                line_no,
                "cache_peer",
                "missing peer type (parent, sibling, multicast)".into(),
            )
        })?;
        if !matches!(kind, "parent" | "sibling" | "multicast") {
            return Err(err(
                line_no,
                "cache_peer",
                format!("unknown peer type {kind:?}"),
            ));
        }
        let port_text = tokens
            .next()
            .ok_or_else(|| err(line_no, "cache_peer", "missing http port".into()))?;
        let port = port_text
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                err(
                    line_no,
                    "cache_peer",
                    format!("http port {port_text:?} is not a TCP port"),
                )
            })?;
        if tokens.next().is_none() {
            return Err(err(
                line_no,
                "cache_peer",
                "missing icp port (use 0)".into(),
            ));
        }
        let mut name = host.to_string();
        let mut weight: i64 = 0;
        let mut carp = false;
        let mut key: Option<KeySpec> = None;
        let mut max_conn: u32 = 0;
        for opt in tokens {
            if opt.starts_with('#') {
                break;
            } else if let Some(w) = opt.strip_prefix("weight=") {
                weight = w
                    .parse::<i32>()
                    .map_err(|_| err(line_no, "weight", format!("{w:?} is not an integer")))?
                    .into();
            } else if opt == "carp" {
                if kind != "parent" {
                    return Err(err(
                        line_no,
                        "carp",
                        format!("carp on a non-parent peer {host}"),
                    ));
                }
                carp = true;
            } else if let Some(k) = opt.strip_prefix("carp-key=") {
                if !carp {
                    return Err(err(
                        line_no,
                        "carp-key",
                        "carp-key before (or without) the carp option".into(),
                    ));
                }
                key = Some(
                    KeySpec::parse_squid(k).map_err(|e| err(line_no, "carp-key", e.to_string()))?,
                );
            } else if let Some(m) = opt.strip_prefix("max-conn=") {
                max_conn = m.parse::<u32>().map_err(|_| {
                    err(
                        line_no,
                        "max-conn",
                        format!("{m:?} is not a connection count"),
                    )
                })?;
            } else if let Some(n) = opt.strip_prefix("name=") {
                if !n.is_empty() {
                    name = n.to_string();
                }
            }
        }
        if let Some(prev) = parents.iter().find(|p| p.name.eq_ignore_ascii_case(&name)) {
            return Err(err(
                line_no,
                "name",
                format!(
                    "cache_peer {name} specified twice (first on line {})",
                    prev.line
                ),
            ));
        }
        if !carp {
            warnings.push(format!(
                "{}:{line_no}: cache_peer {name} ignored: not a parent with the carp option",
                path.display()
            ));
            continue;
        }
        parents.push(Parent {
            name,
            host: host.to_ascii_lowercase(),
            port,
            weight: weight.clamp(1, i32::MAX as i64) as u32,
            carp_key: key,
            max_conn,
            line: line_no,
            store: Default::default(),
        });
    }
    if parents.is_empty() {
        return Err(err(
            1,
            "cache_peer",
            "no `cache_peer ... parent ... carp` lines".into(),
        ));
    }
    if parents.len() > carp::MAX_MEMBERS {
        return Err(err(
            parents[carp::MAX_MEMBERS].line,
            "cache_peer",
            format!("at most {} carp parents are supported", carp::MAX_MEMBERS),
        ));
    }
    Ok(Config {
        source: path.to_path_buf(),
        hash: Mode::Squid,
        parents,
        frontend: http_port.unwrap_or_default(),
        health: Default::default(),
        cache: Default::default(),
        admin: None,
        warnings,
    })
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
    let mut s = FrontendSettings {
        listen,
        ..FrontendSettings::default()
    };
    for opt in tokens {
        if opt == "accel" {
            s.mode = ListenMode::Accel;
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
    }

    #[test]
    fn http_port_sets_the_listener() {
        let c = parse("http_port 127.0.0.1:3130 accel defaultsite=www.example\nhttp_port 3131\ncache_peer a parent 1 0 carp\n").unwrap();
        assert_eq!(c.frontend.listen, "127.0.0.1:3130".parse().unwrap());
        assert_eq!(c.frontend.mode, ListenMode::Accel);
        assert_eq!(c.frontend.default_site.as_deref(), Some("www.example"));
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let c = parse("http_port 3128\ncache_peer a parent 1 0 carp\n").unwrap();
        assert_eq!(c.frontend.listen, "0.0.0.0:3128".parse().unwrap());
        assert_eq!(
            parse("http_port nope\ncache_peer a parent 1 0 carp\n")
                .unwrap_err()
                .key,
            "http_port"
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
}
