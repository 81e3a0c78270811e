//! A squid.conf carried over to carpool: one translation, used two ways.
//! `carpool import-squid` prints it as a carpool.toml; `--squid-conf` reads
//! that same text, so a squid.conf and its import always mean the same.
//!
//! A frontend squid.conf (one with `cache_peer ... parent ... carp` lines)
//! becomes the array's parents and `[frontend]`; one without (a backend)
//! becomes a one-cache array: its `[cache]` and a `[[parent]]` for itself.
//! Every directive is translated, honoured by design (a frontend never
//! stores, never goes direct), or listed as a [`Note`] with its file, line
//! and why; access rules are never loosened (see [`access`]). Errors name
//! the squid.conf file, line and directive, also those the carpool.toml
//! reader finds in the translated values.

mod access;
mod directives;
mod emit;
mod peers;
mod source;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::{parse_toml, Config, ConfigError, ConfigErrors};
use emit::Doc;
use peers::{Kind, Peer};
use source::{At, Directive};

/// What a squid.conf is to the array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A CARP frontend: its carp parents are the array's.
    Frontend,
    /// A caching backend.
    Cache,
}

impl Role {
    /// The carpool.toml section of this role.
    fn section(self) -> &'static str {
        match self {
            Role::Frontend => "frontend",
            Role::Cache => "cache",
        }
    }
}

/// A directive (or a part of one) that carpool does not carry over, or
/// carries over differently, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Where it is.
    pub at: At,
    /// The directive.
    pub directive: String,
    /// Why.
    pub why: String,
}

impl Note {
    fn new(d: &Directive, why: String) -> Note {
        Note {
            at: d.at.clone(),
            directive: d.name().to_string(),
            why,
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.at, self.directive, self.why)
    }
}

/// A squid.conf translated.
#[derive(Debug)]
pub struct Import {
    /// What the file is.
    pub role: Role,
    /// The carpool.toml, with comments.
    pub toml: String,
    /// The configuration it describes.
    pub config: Config,
    /// What was not carried over, in file order.
    pub notes: Vec<Note>,
}

/// The state of one translation.
struct Tr {
    role: Role,
    doc: Doc,
    notes: Vec<Note>,
    /// What carpool does by design, for the imported file's header.
    remarks: Vec<String>,
    errors: Vec<ConfigError>,
    access: access::Access,
}

impl Tr {
    /// Sets `key` of the role's section from `d`; a second value for it is
    /// a note (the first stays).
    fn set(&mut self, d: &Directive, key: &str, value: String) {
        let section = self.role.section();
        self.set_in(section, d, key, value);
    }

    /// Sets `key` of table `header` from `d`; a second value is a note.
    fn set_in(&mut self, header: &str, d: &Directive, key: &str, value: String) {
        if !self.doc.set(header, key, value, &d.at, &d.text()) {
            let why = format!("carpool has one {key}: the first value is kept");
            self.note(d, why);
        }
    }

    fn note(&mut self, d: &Directive, why: impl Into<String>) {
        self.notes.push(Note::new(d, why.into()));
    }

    fn remark(&mut self, d: &Directive, what: &str) {
        self.remarks.push(format!("{}: {}: {what}", d.at, d.text()));
    }
}

/// Reads a frontend squid.conf (`--squid-conf`): its carp parents, its
/// `http_port` and its access rules, as `carpool import-squid` translates
/// them; what is not carried over is in the config's warnings. Every bad
/// line is reported, not only the first.
pub fn parse_squid_conf(path: &Path, bytes: &[u8]) -> Result<Config, ConfigErrors> {
    let import = translate(path, bytes, Some(Role::Frontend))?;
    let mut config = import.config;
    config.warnings = import.notes.iter().map(Note::to_string).collect();
    Ok(config)
}

/// Translates a squid.conf, a frontend's or a backend's (told from its
/// `cache_peer ... carp` lines).
pub fn import_squid(path: &Path, bytes: &[u8]) -> Result<Import, ConfigErrors> {
    translate(path, bytes, None)
}

fn translate(path: &Path, bytes: &[u8], role: Option<Role>) -> Result<Import, ConfigErrors> {
    let mut errors = Vec::new();
    let list = source::directives(path, bytes, &mut errors);
    let top = At {
        file: Arc::from(path),
        line: 1,
    };
    let mut peer_list: Vec<(&Directive, Peer)> = Vec::new();
    for d in list.iter().filter(|d| d.name() == "cache_peer") {
        match peers::read(d) {
            Ok(p) => peer_list.push((d, p)),
            Err(e) => errors.push(e),
        }
    }
    let has_carp = peer_list.iter().any(|(_, p)| p.kind == Kind::Carp);
    let role = role.unwrap_or(if has_carp {
        Role::Frontend
    } else {
        Role::Cache
    });
    let mut tr = Tr {
        role,
        doc: Doc::default(),
        notes: Vec::new(),
        remarks: Vec::new(),
        errors,
        access: access::Access::default(),
    };
    tr.doc.set("", "hash", emit::string("squid"), &top, "");
    directives::peers(&mut tr, &peer_list, &top, &list);
    for d in &list {
        directives::one(&mut tr, d);
    }
    let Tr {
        mut doc,
        mut notes,
        remarks,
        errors,
        access,
        ..
    } = tr;
    access.emit(role.section(), &mut doc, &mut notes, &top);
    if access.has_rules() {
        directives::open_builtin_checks(role, &mut doc, &top);
    }
    if let Some(errors) = ConfigErrors::new(errors) {
        return Err(errors);
    }
    // in the order the directives were read (includes where they are)
    let order: std::collections::HashMap<(&Path, usize), usize> = list
        .iter()
        .enumerate()
        .map(|(i, d)| ((&*d.at.file, d.at.line), i))
        .collect();
    notes.sort_by_key(|n| order.get(&(&*n.at.file, n.at.line)).copied().unwrap_or(0));
    let head = header(path, role, &notes, &remarks);
    let (toml, map) = doc.render(&head, true);
    let mut config = parse_toml(path, &toml).map_err(|e| back_to_squid(path, e, &map))?;
    for p in &mut config.parents {
        if let Some(Some(at)) = p.line.checked_sub(1).and_then(|i| map.get(i)) {
            p.line = at.line;
        }
    }
    Ok(Import {
        role,
        toml,
        config,
        notes,
    })
}

/// Errors found in the translated text, told at the squid.conf lines the
/// values came from.
fn back_to_squid(path: &Path, errors: ConfigErrors, map: &emit::LineMap) -> ConfigErrors {
    let mapped = errors
        .iter()
        .map(|e| {
            let at = e
                .line
                .checked_sub(1)
                .and_then(|i| map.get(i))
                .cloned()
                .flatten();
            match at {
                Some(at) => ConfigError {
                    file: at.file.to_path_buf(),
                    line: at.line,
                    key: e.key.clone(),
                    message: e.message.clone(),
                },
                None => ConfigError {
                    file: path.to_path_buf(),
                    line: 1,
                    key: e.key.clone(),
                    message: e.message.clone(),
                },
            }
        })
        .collect();
    ConfigErrors::new(mapped).unwrap_or(errors)
}

/// The comment at the top of an imported carpool.toml.
fn header(path: &Path, role: Role, notes: &[Note], remarks: &[String]) -> String {
    let mut h = format!(
        "# carpool.toml translated from {} by `carpool import-squid`.\n",
        path.display()
    );
    h.push_str(match role {
        Role::Frontend => "# A CARP frontend: run it with `carpool frontend -c THIS` (or the whole\n# array with `carpool up -c THIS`). hash = \"squid\" routes every URL as\n# the squid.conf's cache_peer lines did.\n",
        Role::Cache => "# A caching backend: run it with `carpool cache -c THIS --name NAME`\n# (NAME: the [[parent]] below).\n",
    });
    if !remarks.is_empty() {
        h.push_str("#\n# Carried over by design:\n");
        for r in remarks {
            h.push_str(&format!("#   {r}\n"));
        }
    }
    if !notes.is_empty() {
        h.push_str("#\n# NOT carried over (or carried over differently):\n");
        for n in notes {
            h.push_str(&format!("#   {n}\n"));
        }
    }
    h
}

#[cfg(test)]
mod tests;
