//! # httpx — carpool's HTTP/1.1 engine
//!
//! The lean HTTP/1.1 mechanics under carpool's request layer (the `proxy`
//! crate; see "Architecture" in the README): heads parsed with `httparse`
//! into one buffer plus index ranges, strict message framing that refuses
//! anything ambiguous, bodies streamed with bounded buffers, the heads a
//! proxy hop writes, per-upstream keep-alive pools, and the access log in
//! Squid's native format.
//!
//! It owns HTTP/1.1 mechanics only. It must not know about a request's
//! phases, routing, parents' health, caching or configuration files.

pub mod accesslog;
pub mod body;
pub mod bufpool;
pub mod chunked;
pub mod conn;
pub mod date;
pub mod error;
pub mod framing;
pub mod head;
pub mod headers;
pub mod pool;

pub use error::{HttpError, Status};
pub use head::{Fields, Known, Limits, RequestHead, ResponseHead, Version};
