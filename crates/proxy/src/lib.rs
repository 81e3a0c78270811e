//! # proxy — carpool's request layer
//!
//! One request lifecycle for every proxy role carpool runs (the CARP
//! frontend, the cache), as explicit phases that this layer drives in a fixed
//! order, the way Cloudflare's pingora drives its `ProxyHttp` trait. For each
//! client connection ([`Server`] runs one task per connection on each worker
//! thread):
//!
//! 1. **admit** the connection: `max_client_connections`, then per request
//!    the `allow_clients` list ([`Session`]);
//! 2. **read the head** under the client limits and timeouts;
//! 3. **check the request** ([`Request`]): framing (nothing ambiguous is
//!    forwarded), forwarding loops (`Via`), the target (absolute-form,
//!    origin-form with `Host`, a CONNECT authority), CONNECT ports, URL
//!    schemes, `Expect`;
//! 4. the **access checks** every role shares ([`access`]: safe ports, own
//!    listeners, local destinations, PURGE), then the role's **request
//!    filter** ([`Role::request_filter`]): it may answer the request itself
//!    (a store hit, PURGE);
//! 5. **choose an upstream**: [`Role::upstream_peer`], asked again for the
//!    next peer after a failure the role chose to retry elsewhere
//!    ([`Role::upstream_failed`]);
//! 6. **connect** (a pooled connection when the request has no body; a
//!    pooled one found closed is replaced by a fresh one once) and **send**
//!    the head ([`Role::upstream_request`] adjusts it) and the body
//!    ([`upstream`]);
//! 7. **relay** the interim responses, pass the final one through the
//!    role's **response filter** ([`Role::upstream_response`]), and relay
//!    it, streaming; or, for CONNECT, tunnel;
//! 8. **log** the request in the access log ([`log::Record`]) and count it
//!    in the server's [`metrics`] (served to this host at
//!    `/carpool-internal/metrics`, with the role's own families).
//!
//! A role supplies only what makes it different: the frontend its CARP
//! ranking, failover and parent health; the cache its lookup, fill, RFC 9111
//! policy and PURGE. Its per-request state is its [`Role::Ctx`].
//!
//! It must not know about CARP tables, caching or configuration files.

pub mod access;
mod forward;
pub mod internal;
mod lifecycle;
pub mod log;
pub mod metrics;
mod peer;
mod request;
mod respond;
mod role;
pub mod rules;
mod server;
mod session;
mod settings;
mod splice;
mod stop;
mod tunnel;
pub mod upstream;
mod worker;

pub use access::canonical_ip;
pub use peer::{Address, Claim, PeerInfo, PeerKind, Problem};
pub use request::Request;
pub use role::{Filter, Proceed, Retry, Role};
pub use server::Server;
pub use session::{Next, Session, STOP_GRACE};
pub use settings::{OriginForm, Settings, Timeouts, Via, WorkerTick};
