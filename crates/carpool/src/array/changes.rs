//! What a component reads from the config, in a form a reload can compare:
//! equal settings mean the component keeps running, and different ones
//! name the keys that changed (for the log line that says why it restarts).

use std::collections::BTreeMap;
use std::fmt::Debug;

/// A component's settings as `key.path → value` (read from their pretty
/// `Debug` form, so every field counts without a list to keep up to date).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, String>);

impl Settings {
    /// The settings of `value`.
    pub fn of(value: &impl Debug) -> Settings {
        let text = format!("{value:#?}");
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        // (indentation, key) of the fields enclosing the current line
        let mut path: Vec<(usize, &str)> = Vec::new();
        for line in text.lines() {
            let depth = line.len() - line.trim_start().len();
            let line = line.trim();
            while path.last().is_some_and(|&(d, _)| d >= depth) {
                path.pop();
            }
            let value = match field(line) {
                Some((key, value)) => {
                    path.push((depth, key));
                    value
                }
                None => line,
            };
            let key = path.iter().map(|&(_, k)| k).collect::<Vec<_>>().join(".");
            let slot = map.entry(key).or_default();
            slot.push_str(value);
            slot.push('\n');
        }
        Settings(map)
    }

    /// The keys whose values differ, most specific only (`server.workers`,
    /// not also `server`), in order.
    pub fn changed(&self, new: &Settings) -> Vec<String> {
        let mut keys: Vec<&String> = self
            .0
            .keys()
            .chain(new.0.keys())
            .filter(|k| self.0.get(*k) != new.0.get(*k))
            .collect();
        keys.sort();
        keys.dedup();
        let inner = |k: &str| {
            keys.iter()
                .any(|o| o.len() > k.len() && o.starts_with(k) && o.as_bytes()[k.len()] == b'.')
        };
        keys.iter()
            .filter(|k| !k.is_empty() && !inner(k))
            .map(|k| k.to_string())
            .collect()
    }
}

/// `name: value` of a struct field line (`name` a Rust identifier).
fn field(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(": ")?;
    let ident = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.as_bytes()[0].is_ascii_digit();
    ident.then_some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug
    struct Inner {
        workers: usize,
        allow: Vec<&'static str>,
    }

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug
    struct Outer {
        server: Inner,
        dir: Option<&'static str>,
        mem: u64,
    }

    fn outer(workers: usize, allow: Vec<&'static str>, dir: Option<&'static str>) -> Settings {
        Settings::of(&Outer {
            server: Inner { workers, allow },
            dir,
            mem: 16,
        })
    }

    #[test]
    fn names_the_fields_that_changed() {
        let a = outer(1, vec!["127.0.0.0/8"], Some("/a"));
        assert_eq!(a, outer(1, vec!["127.0.0.0/8"], Some("/a")));
        assert!(a.changed(&a.clone()).is_empty());
        let b = outer(2, vec!["127.0.0.0/8", "::1/128"], None);
        assert_eq!(a.changed(&b), ["dir", "server.allow", "server.workers"]);
        assert_eq!(
            a.changed(&outer(1, vec!["127.0.0.0/8"], Some("/b"))),
            ["dir"]
        );
    }
}
