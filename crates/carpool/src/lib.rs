//! The `carpool` library target: what must be reachable from outside the
//! binary, and nothing else. Today that is [`config`], the carpool.toml and
//! squid.conf readers, for the fuzz targets in `fuzz/` (see "Fuzzing" in
//! the README).
//!
//! The binary (`main.rs`) keeps its own `mod config;`: the module is
//! compiled into both targets, so it must stay self-contained (no
//! `crate::` paths to the binary's other modules). This target's tests are
//! not run (`test = false` in Cargo.toml): the binary's run them already.

pub mod config;
