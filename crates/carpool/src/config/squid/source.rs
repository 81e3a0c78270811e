//! Reading a squid.conf as Squid 5.7 does: bytes, not text; a line ending
//! in `\` continues on the next; `#` starts a comment (a whole line, or the
//! rest of a line from a word that starts with it); `include PATTERN`
//! reads the files the pattern names (a `*`/`?` glob in the last path
//! component, in name order), depth-first, at most [`MAX_INCLUDE_DEPTH`]
//! deep. Each directive keeps the file and line it came from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::ConfigError;

/// How deep `include` may nest (Squid's limit is 16 too).
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// Where a directive was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    /// The file.
    pub file: Arc<Path>,
    /// Its first line (1-based).
    pub line: usize,
}

impl At {
    /// An error about this line and `key`.
    pub fn error(&self, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.line,
            key: key.to_string(),
            message,
        }
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One directive: its words (split at ASCII white space, comments
/// removed; the first is the directive's name) and where it is.
#[derive(Clone, Debug)]
pub struct Directive {
    /// The words, as bytes.
    pub words: Vec<Vec<u8>>,
    /// Where it was written.
    pub at: At,
}

impl Directive {
    /// The directive's name (its first word) when it is text.
    pub fn name(&self) -> &str {
        self.words
            .first()
            .and_then(|w| std::str::from_utf8(w).ok())
            .unwrap_or("")
    }

    /// The line as written, for comments and messages (bytes that are not
    /// UTF-8 shown as `\xHH`).
    pub fn text(&self) -> String {
        let words: Vec<String> = self
            .words
            .iter()
            .map(|w| carp::table::escape_name(w))
            .collect();
        words.join(" ")
    }

    /// The words after the name as text; the first one that is not UTF-8
    /// is an error naming `key`.
    pub fn args(&self) -> Result<Vec<&str>, ConfigError> {
        self.words
            .iter()
            .skip(1)
            .map(|w| {
                std::str::from_utf8(w).map_err(|_| {
                    let w = String::from_utf8_lossy(w);
                    self.at
                        .error(self.name(), format!("{w:?} is not valid UTF-8"))
                })
            })
            .collect()
    }
}

/// Reads the directives of the file at `path` whose bytes are `bytes`,
/// following its `include`s. Errors (an include that names no file, or
/// nests too deep) are collected; the rest is read on.
pub fn directives(path: &Path, bytes: &[u8], errors: &mut Vec<ConfigError>) -> Vec<Directive> {
    let mut out = Vec::new();
    read_into(Arc::from(path), bytes, 0, &mut out, errors);
    out
}

fn read_into(
    file: Arc<Path>,
    bytes: &[u8],
    depth: usize,
    out: &mut Vec<Directive>,
    errors: &mut Vec<ConfigError>,
) {
    for (line, text) in logical_lines(bytes) {
        let words = words(&text);
        if words.is_empty() {
            continue;
        }
        let at = At {
            file: file.clone(),
            line,
        };
        if words[0] != b"include" {
            out.push(Directive { words, at });
            continue;
        }
        if words.len() < 2 {
            errors.push(at.error("include", "missing the file to include".into()));
            continue;
        }
        if depth + 1 >= MAX_INCLUDE_DEPTH {
            let message = format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files");
            errors.push(at.error("include", message));
            continue;
        }
        for pattern in &words[1..] {
            let pattern = String::from_utf8_lossy(pattern);
            let files = match glob(&file, &pattern) {
                Ok(files) => files,
                Err(message) => {
                    errors.push(at.error("include", message));
                    continue;
                }
            };
            for f in files {
                match read_small(&f) {
                    Ok(bytes) => read_into(Arc::from(f.as_path()), &bytes, depth + 1, out, errors),
                    Err(message) => errors.push(at.error("include", message)),
                }
            }
        }
    }
}

/// Largest file a squid.conf may include or take ACL values from.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads a regular file of at most [`MAX_FILE_BYTES`] (never a device or a
/// pipe, which could be endless).
pub fn read_small(p: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", p.display()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {} MiB",
            p.display(),
            MAX_FILE_BYTES >> 20
        ));
    }
    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// The files `pattern` names, relative to the directory of `from` when it is
/// not absolute; `*` and `?` are wildcards in the last component only.
/// No file: an error, as in Squid.
fn glob(from: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let p = Path::new(pattern);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new(".")).join(p)
    };
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name.filter(|n| n.contains(['*', '?'])) else {
        return if p.is_file() {
            Ok(vec![p])
        } else {
            Err(format!("no file {}", p.display()))
        };
    };
    let dir = p.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "{pattern:?}: wildcards are read in the file name only"
        ));
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            !n.starts_with('.') && wildcard(name.as_bytes(), n.as_bytes())
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no file matches {}", p.display()));
    }
    Ok(files)
}

/// Whether `name` matches `pattern` (`*`: any run of bytes, `?`: one byte).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some((&c, rest)) => match name.split_first() {
            Some((&n, tail)) if c == b'?' || c == n => wildcard(rest, tail),
            _ => false,
        },
    }
}

/// The words of a logical line: split at ASCII white space, up to a word
/// that starts with `#`.
fn words(line: &[u8]) -> Vec<Vec<u8>> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .take_while(|w| !w.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect()
}

/// Splits into logical lines (joining `\`-continued ones), numbered by their
/// first line.
pub fn logical_lines(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
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

    #[test]
    fn comments_continuations_and_words() {
        let mut errors = Vec::new();
        let d = directives(
            Path::new("squid.conf"),
            b"# a comment\n\nacl a src 10.0.0.0/8\t# RFC 1918\nhttp_access \\\n  allow a\n",
            &mut errors,
        );
        assert!(errors.is_empty());
        let got: Vec<(usize, String)> = d.iter().map(|d| (d.at.line, d.text())).collect();
        assert_eq!(
            got,
            [
                (3, "acl a src 10.0.0.0/8".to_string()),
                (4, "http_access allow a".to_string())
            ]
        );
    }

    #[test]
    fn includes_are_followed_with_globs_in_name_order() {
        let dir = std::env::temp_dir().join(format!("carpool-include-{}", std::process::id()));
        let conf_d = dir.join("conf.d");
        std::fs::create_dir_all(&conf_d).unwrap();
        std::fs::write(conf_d.join("b.conf"), "acl b src 10.0.0.2\n").unwrap();
        std::fs::write(conf_d.join("a.conf"), "\nacl a src 10.0.0.1\n").unwrap();
        std::fs::write(conf_d.join("c.txt"), "acl c src 10.0.0.3\n").unwrap();
        let main = dir.join("squid.conf");
        let text = "acl z src 10.0.0.9\ninclude conf.d/*.conf\ninclude nothing/*.conf\nhttp_access deny z\n";
        std::fs::write(&main, text).unwrap();
        let mut errors = Vec::new();
        let d = directives(&main, text.as_bytes(), &mut errors);
        let got: Vec<(String, usize, String)> = d
            .iter()
            .map(|d| {
                let f =
                    d.at.file
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                (f, d.at.line, d.text())
            })
            .collect();
        assert_eq!(got[1], ("a.conf".into(), 2, "acl a src 10.0.0.1".into()));
        assert_eq!(got[2], ("b.conf".into(), 1, "acl b src 10.0.0.2".into()));
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].line, errors[0].key.as_str()), (3, "include"));
        // a file that includes itself stops at the depth limit, with an error
        std::fs::write(&main, "include squid.conf\n").unwrap();
        let mut errors = Vec::new();
        directives(&main, b"include squid.conf\n", &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("nest"), "{}", errors[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.conf", b"a.conf"));
        assert!(wildcard(b"*.conf", b".conf"));
        assert!(!wildcard(b"*.conf", b"a.confx"));
        assert!(wildcard(b"a?c*", b"abcdef"));
        assert!(!wildcard(b"a?c", b"ac"));
    }
}
