//! The carpool.toml reader (`carpool::config::parse_toml`).
//!
//! Input: the file's text (inputs that are not UTF-8 are skipped: `load`
//! refuses them before this reader sees them).
//!
//! Properties: no panic; every error names a line of the file, in line
//! order; a configuration it accepts has 1..=MAX_MEMBERS parents with
//! distinct names, ports and weights in range, and builds its routing
//! table; its hash mode and parents written out as a carpool.toml read
//! back the same and route alike (there is no renderer in the crate: the
//! writer is `common/carried.rs`).
#![no_main]

use carpool::config::parse_toml;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

#[path = "common/carried.rs"]
mod carried;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    match parse_toml(Path::new("fuzz.toml"), text) {
        Err(errors) => {
            let mut last = 0;
            for e in errors.iter() {
                assert!(
                    (1..=lines).contains(&e.line),
                    "error on line {} of {lines}: {e}",
                    e.line
                );
                assert!(e.line >= last, "errors out of line order");
                last = e.line;
                assert!(!e.message.is_empty());
            }
            assert!(!errors.to_string().is_empty());
        }
        Ok(config) => {
            let n = config.parents.len();
            assert!((1..=carp::MAX_MEMBERS).contains(&n));
            for (i, p) in config.parents.iter().enumerate() {
                assert!(!p.name.trim().is_empty() && !p.host.is_empty());
                assert!(p.port > 0 && (1..=1_000_000).contains(&p.weight));
                assert!((1..=lines).contains(&p.line));
                assert!(config.parents[..i].iter().all(|q| q.name != p.name));
            }
            let table = config
                .table()
                .unwrap_or_else(|e| panic!("accepted, but no routing table: {e}"));
            assert_eq!(table.members().len(), n);
            // its routing, written out again, reads back the same
            assert!(carried::check(&config), "accepted, but out of range");
        }
    }
});
