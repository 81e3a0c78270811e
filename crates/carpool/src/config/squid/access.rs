//! `acl` and `http_access` lines into carpool's access rules
//! (`[[ROLE.acl]]`, `[[ROLE.http_access]]`), with Squid 5.7's meaning:
//!
//! - repeated `acl NAME TYPE ...` lines add values to one ACL (a regex's
//!   `-i` holds to the end of its own line only, as in Squid); a value
//!   `"FILE"` is the values in that file, one per line;
//! - every `http_access` rule is carried over in order, named after its
//!   squid.conf line; Squid's implicit last rule (the opposite of the last
//!   one) is written out, and no `http_access` at all denies everything
//!   (Squid's default);
//! - an ACL of a type carpool cannot evaluate (`proxy_auth`, `time`, …)
//!   is never dropped silently: a rule naming it is made stricter, never
//!   looser (an `allow` never matches; a `deny` matches as if the ACL did,
//!   whatever its negation), and each such rule is a warning.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use proxy::rules::{Builder, PREDEFINED, TYPES};

use super::emit::{self, Doc};
use super::source::{At, Directive};
use super::Note;
use crate::config::ConfigError;

/// The ACL types whose values are regular expressions (`-i` per line).
const REGEX_TYPES: [&str; 3] = ["dstdom_regex", "url_regex", "urlpath_regex"];

/// One ACL, from one or more lines.
#[derive(Debug)]
struct Acl {
    name: String,
    kind: String,
    values: Vec<String>,
    /// Its first line.
    at: At,
    text: String,
}

/// One `http_access` line.
#[derive(Debug)]
struct Rule {
    allow: bool,
    terms: Vec<String>,
    at: At,
    text: String,
}

/// The access lines read so far.
#[derive(Debug, Default)]
pub struct Access {
    acls: Vec<Acl>,
    /// ACLs of types carpool does not have: name → (type, first line).
    unsupported: HashMap<String, (String, At)>,
    /// ACLs whose definition was refused: rules naming them say no more.
    broken: HashSet<String>,
    rules: Vec<Rule>,
}

impl Access {
    /// Reads an `acl NAME TYPE [FLAGS] VALUES...` line.
    pub fn acl(&mut self, d: &Directive, errors: &mut Vec<ConfigError>, notes: &mut Vec<Note>) {
        let args = match d.args() {
            Ok(a) => a,
            Err(e) => return errors.push(e),
        };
        let (Some(&name), Some(&kind)) = (args.first(), args.get(1)) else {
            return errors.push(d.at.error("acl", "give `acl NAME TYPE VALUE...`".into()));
        };
        if PREDEFINED.contains(&name) {
            let why = format!(
                "{name:?} is predefined in Squid 5 and carpool; this definition is ignored"
            );
            return notes.push(Note::new(d, why));
        }
        let known = self
            .acls
            .iter()
            .find(|a| a.name == name)
            .map(|a| (a.kind.as_str(), &a.at))
            .or_else(|| self.unsupported.get(name).map(|(k, at)| (k.as_str(), at)));
        if let Some((k, at)) = known.filter(|(k, _)| *k != kind) {
            let message = format!("ACL {name:?} is already defined with type {k} on {at}");
            return errors.push(d.at.error("acl", message));
        }
        if !TYPES.contains(&kind) {
            if !self.unsupported.contains_key(name) {
                let why = format!(
                    "ACL type {kind:?} is not supported (carpool has {}): rules naming {name:?} are made stricter",
                    TYPES.join(", ")
                );
                notes.push(Note::new(d, why));
                self.unsupported
                    .insert(name.to_string(), (kind.to_string(), d.at.clone()));
            }
            return;
        }
        let mut values: Vec<String> = Vec::new();
        for v in &args[2..] {
            match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(file) => match values_file(&d.at.file, file) {
                    Ok(vs) => values.extend(vs),
                    Err(m) => {
                        self.broken.insert(name.to_string());
                        return errors.push(d.at.error("acl", m));
                    }
                },
                None => values.push((*v).to_string()),
            }
        }
        // each line on its own first, so an error names its line
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        if let Err(e) = Builder::new().acl(name, kind, &refs) {
            self.broken.insert(name.to_string());
            let message = format!("ACL {name:?}: {}", e.message);
            return errors.push(d.at.error("acl", message));
        }
        match self.acls.iter_mut().find(|a| a.name == name) {
            Some(a) => {
                if REGEX_TYPES.contains(&kind) {
                    a.values.push("+i".into()); // -i lasts one line
                }
                a.values.extend(values);
            }
            None => self.acls.push(Acl {
                name: name.to_string(),
                kind: kind.to_string(),
                values,
                at: d.at.clone(),
                text: d.text(),
            }),
        }
    }

    /// Reads an `http_access allow|deny [!]ACL...` line.
    pub fn http_access(&mut self, d: &Directive, errors: &mut Vec<ConfigError>) {
        let args = match d.args() {
            Ok(a) => a,
            Err(e) => return errors.push(e),
        };
        let allow = match args.first().copied() {
            Some("allow") => true,
            Some("deny") => false,
            _ => {
                let message = "give `http_access allow|deny ACL...`".into();
                return errors.push(d.at.error("http_access", message));
            }
        };
        if args.len() < 2 {
            let message = "names no ACL (write `all` for every request)".into();
            return errors.push(d.at.error("http_access", message));
        }
        for t in &args[1..] {
            let name = t.trim_start_matches('!');
            if self.broken.contains(name) {
                return; // its definition's error says it
            }
            let defined = PREDEFINED.contains(&name)
                || self.unsupported.contains_key(name)
                || self.acls.iter().any(|a| a.name == name);
            if !defined {
                let message = format!("no ACL named {name:?} (define it before this line)");
                return errors.push(d.at.error("http_access", message));
            }
        }
        self.rules.push(Rule {
            allow,
            terms: args[1..].iter().map(|t| t.to_string()).collect(),
            at: d.at.clone(),
            text: d.text(),
        });
    }

    /// Whether any `http_access` line was read.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Writes the ACLs and rules as `[[ROLE.acl]]` and `[[ROLE.http_access]]`
    /// of `doc`; a rule made stricter is a note. `top` is the first line
    /// of the main file (for the rule written when there is none).
    pub fn emit(&self, role: &str, doc: &mut Doc, notes: &mut Vec<Note>, top: &At) {
        for a in &self.acls {
            let h = doc.push(&format!("{role}.acl"), None);
            doc.add(h, "name", emit::string(&a.name), &a.at, &a.text);
            doc.add(h, "type", emit::string(&a.kind), &a.at, &a.text);
            doc.add(h, "values", emit::strings(&a.values), &a.at, &a.text);
        }
        let rules = format!("{role}.http_access");
        for r in &self.rules {
            let h = doc.push(&rules, None);
            let verb = if r.allow { "allow" } else { "deny" };
            let unsupported: Vec<&str> = r
                .terms
                .iter()
                .map(|t| t.trim_start_matches('!'))
                .filter(|n| self.unsupported.contains_key(*n))
                .collect();
            let label = format!("{} {}", label_at(&r.at), r.text);
            let terms: Vec<String> = if unsupported.is_empty() {
                r.terms.clone()
            } else if r.allow {
                let why = format!(
                    "never matches here: {} cannot be evaluated by carpool (stricter: it allows nothing)",
                    unsupported.join(", ")
                );
                notes.push(Note {
                    at: r.at.clone(),
                    directive: "http_access".into(),
                    why,
                });
                vec!["!all".into()]
            } else {
                let why = format!(
                    "{} cannot be evaluated by carpool: taken as matching every request (stricter: it denies more)",
                    unsupported.join(", ")
                );
                notes.push(Note {
                    at: r.at.clone(),
                    directive: "http_access".into(),
                    why,
                });
                let kept: Vec<String> = r
                    .terms
                    .iter()
                    .filter(|t| !self.unsupported.contains_key(t.trim_start_matches('!')))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    vec!["all".into()]
                } else {
                    kept
                }
            };
            doc.add(h, verb, emit::strings(&terms), &r.at, &r.text);
            doc.add(h, "name", emit::string(&label), &r.at, &r.text);
        }
        // Squid's last rule, written out: the opposite of the last one;
        // with no rules at all, Squid denies every request
        let (allow, label, at) = match self.rules.last() {
            Some(last) => (
                !last.allow,
                format!(
                    "implicit {} after the last http_access rule ({})",
                    if last.allow { "deny" } else { "allow" },
                    label_at(&last.at)
                ),
                last.at.clone(),
            ),
            None => {
                notes.push(Note {
                    at: top.clone(),
                    directive: "http_access".into(),
                    why: "no http_access lines: Squid denies every request, and so does carpool (add `http_access allow ...`)".into(),
                });
                (
                    false,
                    "no http_access lines: Squid denies every request".to_string(),
                    top.clone(),
                )
            }
        };
        let h = doc.push(
            &rules,
            Some("Squid's implicit last rule, written out".into()),
        );
        let verb = if allow { "allow" } else { "deny" };
        doc.add(h, verb, emit::strings(&["all"]), &at, "");
        doc.add(h, "name", emit::string(&label), &at, "");
    }
}

/// `file.conf:12`: a rule's name in logs.
fn label_at(at: &At) -> String {
    let file = at.file.file_name().map_or_else(
        || at.file.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    format!("{file}:{}", at.line)
}

/// The values in a file named by an ACL (`"/etc/squid/blocked"`): one per
/// line, `#` comments and blank lines skipped; relative to the directory of
/// the file that names it.
fn values_file(from: &Path, name: &str) -> Result<Vec<String>, String> {
    let p = Path::new(name);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new(".")).join(p)
    };
    let text = String::from_utf8(super::source::read_small(&p)?)
        .map_err(|_| format!("{} is not UTF-8 text", p.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}
