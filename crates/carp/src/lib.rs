//! # carp — the routing core of carpool
//!
//! This crate decides which parent cache owns a request. It owns:
//!
//! - the three hash modes ([`Mode::Squid`], [`Mode::CarpV1`], [`Mode::Hrw`]) and
//!   the member [`Table`] that ranks members for a request ([`Table::rank`]) and
//!   picks the best alive one ([`Table::select`]);
//! - key selection like Squid's `carp-key=` ([`KeySpec`]);
//! - request-line parsing and URL normalization exactly as Squid 5.7 does it
//!   before hashing ([`normalize`]), including which request lines Squid refuses;
//! - remap planning between two member tables ([`plan`]).
//!
//! It must not touch I/O, async runtimes, configuration files or logging: it is
//! pure computation, so that every other part of carpool (the `route` command,
//! the frontend, the array) routes every URL the same way.
//!
//! ```
//! use carp::{Member, Mode, Table, normalize::{parse_input, Outcome}};
//!
//! let table = Table::new(Mode::Hrw, vec![
//!     Member::new("cache1", 1), Member::new("cache2", 1), Member::new("cache3", 2),
//! ]).unwrap();
//! let Outcome::Route(req) = parse_input(b"http://Example.COM:80/a?b") else { panic!() };
//! assert_eq!(req.effective_uri(), "http://example.com/a?b");
//! let first = table.rank(&req).next().unwrap();
//! assert_eq!(table.select(&req, |_| true), Some(first));
//! ```

pub mod hash;
pub mod ip;
pub mod keyspec;
pub mod normalize;
pub mod plan;
pub mod table;
pub mod uri;

pub use keyspec::KeySpec;
pub use table::{Member, MemberId, Mode, Ranking, Table, TableError, MAX_MEMBERS};
pub use uri::RequestUri;
