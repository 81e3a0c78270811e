//! The squid.conf reader (`carpool::config::parse_squid_conf`): the
//! translation of every directive (`cache_peer`, `http_port`, `acl`,
//! `http_access`, …) into carpool.toml and its reading, `\` continuations.
//!
//! Input: the file's bytes.
//!
//! Properties: no panic; every error names a line of the file (or of a
//! file it includes); a
//! configuration it accepts has 1..=MAX_MEMBERS parents with distinct names
//! (case-insensitively, as Squid), weights ≥ 1, and builds its `squid`-mode
//! routing table; and the same parents written as a carpool.toml (`hash =
//! "squid"`, within carpool.toml's ranges) read back the same and route
//! every URL alike, so a squid.conf can always be carried over.
#![no_main]

use carp::Mode;
use carpool::config::parse_squid_conf;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

#[path = "common/carried.rs"]
mod carried;

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n').count();
    let config = match parse_squid_conf(Path::new("squid.conf"), data) {
        Err(errors) => {
            for e in errors.iter().filter(|e| e.file == Path::new("squid.conf")) {
                assert!(
                    (1..=lines).contains(&e.line),
                    "error on line {} of {lines}: {e}",
                    e.line
                );
            }
            assert!(!errors.to_string().is_empty());
            return;
        }
        Ok(config) => config,
    };
    assert_eq!(config.hash, Mode::Squid);
    let n = config.parents.len();
    assert!((1..=carp::MAX_MEMBERS).contains(&n));
    for (i, p) in config.parents.iter().enumerate() {
        assert!(!p.name.is_empty() && p.port > 0 && p.weight >= 1);
        assert!((1..=lines).contains(&p.line));
        assert!(config.parents[..i]
            .iter()
            .all(|q| !q.name.eq_ignore_ascii_case(&p.name)));
    }
    let table = config
        .table()
        .unwrap_or_else(|e| panic!("accepted, but no routing table: {e}"));
    assert_eq!(table.members().len(), n);

    // carried over to a carpool.toml
    carried::check(&config);
});
