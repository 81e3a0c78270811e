//! A configuration's routing (hash mode and parents) written as a
//! carpool.toml, for the config targets: what they accept must read back
//! the same from it.

use carpool::config::{parse_toml, Config};
use std::fmt::Write;
use std::path::Path;

/// Writes `c`'s hash mode and parents as a carpool.toml, reads it back and
/// checks that the parents and their routing are the same. Returns false
/// (and checks nothing) when a parent is outside carpool.toml's ranges.
pub fn check(c: &Config) -> bool {
    let fits = c
        .parents
        .iter()
        .all(|p| p.weight <= 1_000_000 && p.max_conn <= 1_000_000 && !p.name.trim().is_empty());
    if !fits {
        return false;
    }
    let toml = as_toml(c);
    let again = parse_toml(Path::new("carried.toml"), &toml)
        .unwrap_or_else(|e| panic!("carried-over config refused: {e}\n{toml}"));
    assert_eq!(again.hash, c.hash);
    assert_eq!(again.parents.len(), c.parents.len());
    for (a, b) in c.parents.iter().zip(&again.parents) {
        assert_eq!(
            (&a.name, &a.host, a.port, a.weight, a.carp_key, a.max_conn),
            (&b.name, &b.host, b.port, b.weight, b.carp_key, b.max_conn),
            "{toml}"
        );
    }
    let (t1, t2) = (
        c.table().expect("table"),
        again.table().expect("carried-over table"),
    );
    for url in [
        &b"http://example.com/"[..],
        b"http://Example.COM:8080/a/b?c=d",
        b"example.net:443",
        b"ftp://u@ftp.example/x",
    ] {
        if let carp::normalize::Outcome::Route(req) = carp::normalize::parse_input(url) {
            assert_eq!(
                t1.rank(&req).collect::<Vec<_>>(),
                t2.rank(&req).collect::<Vec<_>>()
            );
        }
    }
    true
}

fn as_toml(c: &Config) -> String {
    let mut s = format!("hash = {}\n", quoted(c.hash.as_str()));
    for p in &c.parents {
        let _ = write!(
            s,
            "\n[[parent]]\nname = {}\nhost = {}\nport = {}\nweight = {}\nmax_conn = {}\n",
            quoted(&p.name),
            quoted(&p.host),
            p.port,
            p.weight,
            p.max_conn
        );
        if let Some(k) = p.carp_key.filter(|k| !k.is_empty()) {
            let _ = writeln!(s, "carp_key = {}", quoted(&k.to_string()));
        }
    }
    s
}

/// A TOML basic string.
fn quoted(v: &str) -> String {
    let mut s = String::from("\"");
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
