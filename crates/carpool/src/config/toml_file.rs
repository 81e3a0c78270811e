//! `carpool.toml`: serde + toml with spans, so semantic errors point at a line.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{line_of_offset, Config, ConfigError, Parent};
use carp::{KeySpec, Mode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    hash: Option<Spanned<String>>,
    #[serde(default)]
    parent: Vec<Spanned<ParentEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParentEntry {
    name: Option<Spanned<String>>,
    host: Spanned<String>,
    port: Spanned<i64>,
    weight: Option<Spanned<i64>>,
    carp_key: Option<Spanned<String>>,
}

/// Parses the text of a carpool.toml.
pub fn parse_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let err = |span: Range<usize>, key: &str, message: String| ConfigError {
        file: path.to_path_buf(),
        line: line_of_offset(text, span.start),
        key: key.to_string(),
        message,
    };
    let file: File = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let key = text
            .get(span.clone())
            .filter(|s| !s.is_empty() && s.len() < 64)
            .unwrap_or("-");
        err(span, key.trim_matches('"'), e.message().to_string())
    })?;
    let hash = match &file.hash {
        None => Mode::default(),
        Some(h) => h
            .get_ref()
            .parse::<Mode>()
            .map_err(|e| err(h.span(), "hash", e.to_string()))?,
    };
    let mut parents: Vec<Parent> = Vec::new();
    for entry in &file.parent {
        let line = line_of_offset(text, entry.span().start);
        let p = entry.get_ref();
        let host = p.host.get_ref().trim().to_string();
        if host.is_empty() {
            return Err(err(p.host.span(), "host", "must not be empty".into()));
        }
        let port = u16::try_from(*p.port.get_ref())
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| {
                err(
                    p.port.span(),
                    "port",
                    format!("{} is not a TCP port (1-65535)", p.port.get_ref()),
                )
            })?;
        let weight = match &p.weight {
            None => 1,
            Some(w) => u32::try_from(*w.get_ref())
                .ok()
                .filter(|&v| (1..=1_000_000).contains(&v))
                .ok_or_else(|| {
                    err(
                        w.span(),
                        "weight",
                        format!("{} is not a weight from 1 to 1000000", w.get_ref()),
                    )
                })?,
        };
        let carp_key = match &p.carp_key {
            None => None,
            Some(k) => Some(
                KeySpec::parse(k.get_ref())
                    .map_err(|e| err(k.span(), "carp_key", e.to_string()))?,
            ),
        };
        let (name, name_span) = match &p.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                return Err(err(n.span(), "name", "must not be empty".into()));
            }
            Some(n) => (n.get_ref().clone(), n.span()),
            None => (host.clone(), p.host.span()),
        };
        if let Some(prev) = parents.iter().find(|q| q.name == name) {
            return Err(err(
                name_span,
                "name",
                format!("parent name {name:?} is already used on line {} (names are hashed: give each parent its own `name`)", prev.line),
            ));
        }
        parents.push(Parent {
            name,
            host,
            port,
            weight,
            carp_key,
            line,
        });
    }
    if parents.is_empty() {
        return Err(ConfigError {
            file: path.to_path_buf(),
            line: 1,
            key: "parent".into(),
            message: "no [[parent]] entries: at least one parent cache is needed".into(),
        });
    }
    if parents.len() > carp::MAX_MEMBERS {
        return Err(err(
            file.parent[carp::MAX_MEMBERS].span(),
            "parent",
            format!("at most {} parents are supported", carp::MAX_MEMBERS),
        ));
    }
    Ok(Config {
        source: path.to_path_buf(),
        hash,
        parents,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_toml(Path::new("t.toml"), text)
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
