//! Key selection, like Squid's `carp-key=` option: which parts of the
//! normalized URL a member hashes. No spec means the whole effective URI.

use std::fmt;

/// The URL parts a member hashes (Squid `carp-key=scheme,host,port,path,params`).
///
/// Parts are always concatenated in the fixed order scheme, host, port, path,
/// params, whatever order the option lists them in — as Squid does:
/// `scheme://` (only when the scheme is not empty), host, `:port`, the path up
/// to the first `?`, and the query from the `?` on. If the result is empty the
/// whole effective URI is hashed instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeySpec {
    /// `scheme://`
    pub scheme: bool,
    /// host name or IP literal
    pub host: bool,
    /// `:port` (always present, the default port included)
    pub port: bool,
    /// path up to the first `?`
    pub path: bool,
    /// `?` and what follows
    pub params: bool,
}

/// A `carp-key` list named a part that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown carp-key part {0:?} (expected scheme, host, port, path or params)")]
pub struct KeySpecError(pub String);

impl KeySpec {
    /// Parses a comma-separated list (`"scheme,host,path"`), strictly: every
    /// item must be one of the five part names.
    pub fn parse(list: &str) -> Result<KeySpec, KeySpecError> {
        let mut spec = KeySpec::default();
        for item in list.split(',') {
            match item.trim() {
                "scheme" => spec.scheme = true,
                "host" => spec.host = true,
                "port" => spec.port = true,
                "path" => spec.path = true,
                "params" => spec.params = true,
                other => return Err(KeySpecError(other.to_string())),
            }
        }
        Ok(spec)
    }

    /// Parses a list the way Squid 5.7's config parser does: each item is
    /// matched by prefix (`hostname` counts as `host`), so configs that Squid
    /// accepts are read with the same meaning.
    pub fn parse_squid(list: &str) -> Result<KeySpec, KeySpecError> {
        let mut spec = KeySpec::default();
        for item in list.split(',') {
            if item.starts_with("scheme") {
                spec.scheme = true;
            } else if item.starts_with("host") {
                spec.host = true;
            } else if item.starts_with("port") {
                spec.port = true;
            } else if item.starts_with("path") {
                spec.path = true;
            } else if item.starts_with("params") {
                spec.params = true;
            } else {
                return Err(KeySpecError(item.to_string()));
            }
        }
        Ok(spec)
    }

    /// True when no part is selected (the whole effective URI is hashed).
    pub fn is_empty(&self) -> bool {
        !(self.scheme || self.host || self.port || self.path || self.params)
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.scheme, "scheme"),
            (self.host, "host"),
            (self.port, "port"),
            (self.path, "path"),
            (self.params, "params"),
        ];
        let mut first = true;
        for (on, name) in parts {
            if on {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_and_squid_parsing() {
        let s = KeySpec::parse("host, path").unwrap();
        assert!(s.host && s.path && !s.scheme);
        assert_eq!(s.to_string(), "host,path");
        assert!(KeySpec::parse("hostname").is_err());
        assert!(KeySpec::parse_squid("hostname").unwrap().host);
        assert!(KeySpec::parse_squid("bogus").is_err());
    }
}
