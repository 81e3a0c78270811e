//! The carpool.toml a squid.conf becomes: tables of `key = value` lines,
//! each value remembering the squid.conf line it came from, written in
//! carpool.toml's order. The text is what `carpool import-squid` prints and
//! what `--squid-conf` reads; the line map sends an error about a line of
//! the text back to the squid.conf line it came from.

use std::fmt::Write;

use super::source::At;

/// A table of the document: its header (`frontend`, `[parent]` for an
/// array of tables, empty for the top level) and entries.
#[derive(Debug)]
struct Table {
    header: String,
    /// A comment line above the header.
    comment: Option<String>,
    entries: Vec<Entry>,
}

/// `key = value`, from a directive.
#[derive(Debug)]
struct Entry {
    key: String,
    /// The value as TOML.
    value: String,
    at: At,
    /// The directive as written, shown above the first entry it makes.
    source: String,
}

/// A carpool.toml being written.
#[derive(Debug, Default)]
pub struct Doc {
    tables: Vec<Table>,
}

/// What the text's lines came from: `None` for comments, blank lines and
/// headers without an origin.
pub type LineMap = Vec<Option<At>>;

impl Doc {
    /// Sets `key` of table `header` (created if new) from the directive
    /// `d`; false when the key is already set (the first value stays).
    pub fn set(&mut self, header: &str, key: &str, value: String, at: &At, source: &str) -> bool {
        let t = match self.tables.iter_mut().position(|t| t.header == header) {
            Some(i) => &mut self.tables[i],
            None => {
                self.tables.push(Table {
                    header: header.to_string(),
                    comment: None,
                    entries: Vec::new(),
                });
                self.tables.last_mut().expect("just pushed")
            }
        };
        if t.entries.iter().any(|e| e.key == key) {
            return false;
        }
        t.entries.push(Entry {
            key: key.to_string(),
            value,
            at: at.clone(),
            source: source.to_string(),
        });
        true
    }

    /// Whether `key` of table `header` is set.
    pub fn has(&self, header: &str, key: &str) -> bool {
        self.tables
            .iter()
            .any(|t| t.header == header && t.entries.iter().any(|e| e.key == key))
    }

    /// Starts a new element of the array of tables `name` (`[[name]]`),
    /// with a comment above it, and returns its handle.
    pub fn push(&mut self, name: &str, comment: Option<String>) -> usize {
        self.tables.push(Table {
            header: format!("[{name}]"),
            comment,
            entries: Vec::new(),
        });
        self.tables.len() - 1
    }

    /// Adds `key = value` to the element `handle` made by [`Doc::push`].
    pub fn add(&mut self, handle: usize, key: &str, value: String, at: &At, source: &str) {
        self.tables[handle].entries.push(Entry {
            key: key.to_string(),
            value,
            at: at.clone(),
            source: source.to_string(),
        });
    }

    /// The text, and the origin of each of its lines (index 0: line 1).
    /// With `comments`, each directive as written appears above the first
    /// value it gave.
    pub fn render(&self, head: &str, comments: bool) -> (String, LineMap) {
        let mut order: Vec<&Table> = self.tables.iter().collect();
        order.sort_by_key(|t| rank(&t.header));
        let mut text = String::new();
        let mut map: LineMap = Vec::new();
        let mut line = |text: &mut String, s: &str, at: Option<&At>| {
            text.push_str(s);
            text.push('\n');
            map.push(at.cloned());
        };
        for l in head.lines() {
            line(&mut text, &comment_text(l), None);
        }
        for t in order {
            if t.entries.is_empty() && t.header.starts_with('[') {
                continue;
            }
            if !t.header.is_empty() {
                line(&mut text, "", None);
                if let Some(c) = t.comment.as_ref().filter(|_| comments) {
                    line(&mut text, &format!("# {}", comment_text(c)), None);
                }
                let at = t.entries.first().map(|e| &e.at);
                line(&mut text, &format!("[{}]", t.header), at);
            }
            let mut shown: Option<&At> = None;
            for e in &t.entries {
                if comments && shown != Some(&e.at) && !e.source.is_empty() {
                    let c = format!("# {}: {}", e.at, e.source);
                    line(&mut text, &comment_text(&c), None);
                    shown = Some(&e.at);
                }
                line(&mut text, &format!("{} = {}", e.key, e.value), Some(&e.at));
            }
        }
        (text, map)
    }
}

/// Where a table goes in the file: TOML needs a table's sub-tables after
/// it, and carpool.toml reads best in this order.
fn rank(header: &str) -> usize {
    const ORDER: [&str; 12] = [
        "",
        "frontend",
        "[frontend.acl]",
        "[frontend.http_access]",
        "health",
        "cache",
        "cache.origin_servers",
        "[cache.refresh_pattern]",
        "[cache.acl]",
        "[cache.http_access]",
        "[parent]",
        "admin",
    ];
    ORDER
        .iter()
        .position(|h| *h == header)
        .unwrap_or(ORDER.len())
}

/// Text safe in a TOML comment: control characters written as `\u{..}`.
pub fn comment_text(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        if ch.is_control() && ch != '\t' {
            let _ = write!(s, "\\u{{{:x}}}", u32::from(ch));
        } else {
            s.push(ch);
        }
    }
    s
}

/// A TOML basic string.
pub fn string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for ch in v.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A TOML array of basic strings.
pub fn strings<S: AsRef<str>>(values: &[S]) -> String {
    let items: Vec<String> = values.iter().map(|v| string(v.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    fn at(line: usize) -> At {
        At {
            file: Arc::from(Path::new("squid.conf")),
            line,
        }
    }

    #[test]
    fn tables_in_order_with_a_line_map() {
        let mut d = Doc::default();
        let p = d.push("parent", Some("a parent".into()));
        d.add(p, "name", string("a\"b"), &at(7), "cache_peer x");
        assert!(d.set(
            "frontend",
            "listen",
            string("0.0.0.0:3128"),
            &at(3),
            "http_port 3128"
        ));
        assert!(!d.set(
            "frontend",
            "listen",
            string("0.0.0.0:1"),
            &at(4),
            "http_port 1"
        ));
        d.set("", "hash", string("squid"), &at(1), "");
        let (text, map) = d.render("# head", true);
        assert_eq!(
            text,
            "# head\nhash = \"squid\"\n\n[frontend]\n# squid.conf:3: http_port 3128\nlisten = \"0.0.0.0:3128\"\n\n# a parent\n[[parent]]\n# squid.conf:7: cache_peer x\nname = \"a\\\"b\"\n"
        );
        assert_eq!(map.len(), text.lines().count());
        assert_eq!(map[1].as_ref().map(|a| a.line), Some(1));
        assert_eq!(map[5].as_ref().map(|a| a.line), Some(3));
        assert_eq!(map[8].as_ref().map(|a| a.line), Some(7));
        assert_eq!(map[10].as_ref().map(|a| a.line), Some(7));
        assert!(toml::from_str::<toml::Table>(&text).is_ok());
        assert_eq!(strings(&["a", "\\"]), "[\"a\", \"\\\\\"]");
    }
}
