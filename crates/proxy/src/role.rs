//! The [`Role`] trait: what a proxy role (the CARP frontend, the cache)
//! plugs into the request layer. One required choice, the upstream for a
//! request ([`Role::upstream_peer`], with [`Role::describe`] to reach it);
//! every other hook has a default that does nothing special, and the layer
//! calls them in a fixed order (see the crate's documentation).

use httpx::body::RelayError;
use httpx::conn::Conn;
use httpx::headers::Outgoing;
use httpx::HttpError;

use crate::metrics::{Families, Snapshot};
use crate::peer::{Claim, PeerInfo};
use crate::request::Request;
use crate::session::{Next, Session};
use crate::upstream::{Failure, Response};

/// What the request filter decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Filter {
    /// Go on: forward the request (or tunnel a CONNECT).
    Forward,
    /// The role answered the request itself.
    Answered(Next),
}

/// After a failed attempt: try the next peer, or give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Ask [`Role::upstream_peer`] for the next peer.
    Next,
    /// Answer the client with the failure's error.
    Stop,
}

/// What the response filter decided about an upstream's final response.
pub enum Proceed {
    /// Relay it to the client, with these fields of ours replacing any the
    /// upstream sent under their names.
    Relay(Response, &'static [(&'static str, &'static [u8])]),
    /// The role took the response over and answered the client itself.
    Answered(Next),
}

/// A proxy role: what makes the frontend or the cache different from the
/// request layer they share. Hooks run on the worker thread's runtime, so
/// their futures need not be `Send`.
#[allow(async_fn_in_trait)] // single-threaded runtimes: no Send bound wanted
pub trait Role: 'static {
    /// Where requests go (a parent, an origin, an upstream proxy).
    type Peer;
    /// The role's own state of one request, made fresh for each.
    type Ctx: Default;

    /// What the layer needs to reach and name `peer`.
    fn describe<'a>(&'a self, peer: &'a Self::Peer) -> PeerInfo<'a>;

    /// Runs once the layer admitted the request: answers it (a store hit,
    /// PURGE), or lets it go upstream (the default).
    async fn request_filter(&self, s: &mut Session, req: &Request, ctx: &mut Self::Ctx) -> Filter {
        let _ = (s, req, ctx);
        Filter::Forward
    }

    /// The next peer to try for `req`, in preference order: the first call
    /// picks the upstream, later ones (after [`Retry::Next`]) the failover;
    /// `None` when none is left.
    fn upstream_peer(&self, req: &Request, ctx: &mut Self::Ctx) -> Option<Self::Peer>;

    /// The error when [`Role::upstream_peer`] offered no peer at all.
    fn no_peer(&self) -> HttpError {
        HttpError::new(503, "no upstream to forward to")
    }

    /// Reserves a connection slot on `peer` for a connection taken from the
    /// pool (`pooled`) or a new one; `None` when the role's limit is
    /// reached, and the next peer is tried. Default: no limit.
    fn claim(&self, peer: &Self::Peer, pooled: bool) -> Option<Claim> {
        let _ = (peer, pooled);
        Some(Claim::unlimited())
    }

    /// An idle kept-alive connection to `peer`, if the role pools them.
    fn take_idle(&self, peer: &Self::Peer) -> Option<Conn> {
        let _ = peer;
        None
    }

    /// Keeps a connection to `peer` after a complete exchange.
    fn keep_idle(&self, peer: &Self::Peer, conn: Conn) {
        let _ = (peer, conn);
    }

    /// Adjusts the head sent upstream (the layer filled in the method,
    /// target, `Host`, `Via`, `X-Forwarded-For` and framing for the peer).
    fn upstream_request<'a>(
        &'a self,
        req: &'a Request,
        ctx: &'a Self::Ctx,
        out: &mut Outgoing<'a>,
    ) {
        let _ = (req, ctx, out);
    }

    /// `peer` answered with a response head.
    fn upstream_ok(&self, peer: &Self::Peer) {
        let _ = peer;
    }

    /// An attempt on `peer` failed. Default: try the next peer when that is
    /// safe ([`Failure::retryable`]).
    fn upstream_failed(
        &self,
        req: &Request,
        ctx: &mut Self::Ctx,
        peer: &Self::Peer,
        failure: &Failure,
    ) -> Retry {
        let _ = (ctx, peer);
        if failure.retryable(req) {
            Retry::Next
        } else {
            Retry::Stop
        }
    }

    /// The response filter: sees the final response head (interim ones
    /// were relayed already) and relays it (the default) or takes it over.
    async fn upstream_response(
        &self,
        s: &mut Session,
        req: &Request,
        ctx: &mut Self::Ctx,
        peer: &Self::Peer,
        response: Response,
    ) -> Proceed {
        let _ = (s, req, ctx, peer);
        Proceed::Relay(response, &[])
    }

    /// No peer could serve the request: answer it some other way (a stale
    /// stored object), or `None` (the default) to answer `error`.
    async fn fail_to_proxy(
        &self,
        s: &mut Session,
        req: &Request,
        ctx: &mut Self::Ctx,
        error: HttpError,
    ) -> Option<Next> {
        let _ = (s, req, ctx, error);
        None
    }

    /// The response body from `peer` broke off after its head was sent
    /// (the client connection is closed).
    fn response_body_failed(&self, peer: &Self::Peer, error: &RelayError) {
        let _ = (peer, error);
    }

    /// Adds the role's metric families for a scrape, named from the layer's
    /// counts (`snapshot`) and the role's own state. Default: none.
    fn metrics(&self, snapshot: &Snapshot, families: &mut Families) {
        let _ = (snapshot, families);
    }
}
