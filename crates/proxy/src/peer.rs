//! Where a request can go, as the layer sees it: a peer's name, what kind of
//! hop it is (which decides the request form and the words of its errors),
//! its address, and the connection slot a role may reserve on it.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use httpx::HttpError;

use crate::log::Hierarchy;

/// What kind of hop a peer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKind {
    /// A parent cache chosen by CARP: a proxy (absolute-form requests,
    /// CONNECT asked of it).
    Parent,
    /// The origin server itself (origin-form requests with its `Host`;
    /// CONNECT connects straight to it).
    Origin,
    /// A configured upstream proxy (absolute-form, CONNECT asked of it).
    Proxy,
    /// A configured origin server (Squid's `cache_peer ... originserver`):
    /// origin-form requests with the URL's `Host`, like [`PeerKind::Origin`],
    /// but the administrator named it, so its addresses are not checked
    /// against the destination rules.
    Server,
}

impl PeerKind {
    /// True when requests to it are in absolute-form and a tunnel through
    /// it starts with a CONNECT of our own.
    pub fn is_proxy(self) -> bool {
        !matches!(self, PeerKind::Origin | PeerKind::Server)
    }

    /// How the access log says the peer was chosen.
    pub fn hierarchy(self) -> Hierarchy {
        match self {
            PeerKind::Parent => Hierarchy::Carp,
            PeerKind::Origin => Hierarchy::Direct,
            PeerKind::Proxy | PeerKind::Server => Hierarchy::FirstUpParent,
        }
    }

    /// The error for `problem` with a peer of this kind, in words that name
    /// the kind ("parent refused the connection").
    pub fn error(self, problem: Problem) -> HttpError {
        HttpError::new(problem.status(), reason(self, problem))
    }
}

/// How a peer is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address<'a> {
    /// A resolved socket address.
    Socket(SocketAddr),
    /// A host name (or address literal) and port, resolved at connect.
    Name(&'a str, u16),
}

/// What the layer needs to know of one peer.
#[derive(Clone, Copy, Debug)]
pub struct PeerInfo<'a> {
    /// Its name (a parent's name, an origin's host): the JSON log's `peer`.
    pub name: &'a str,
    /// Its host as configured (a parent's `cache_peer` host, an origin's
    /// host): what Squid's native log line writes after the hierarchy code.
    pub host: &'a str,
    /// What kind of hop it is.
    pub kind: PeerKind,
    /// How to reach it.
    pub address: Address<'a>,
    /// It authenticates the clients itself (Squid's `cache_peer ...
    /// login=PASS`): a proxy kind only. The client's `Proxy-Authorization`
    /// goes to it (on requests and CONNECTs), and its `Proxy-Authenticate`
    /// challenges come back to the client; for any other peer both are
    /// hop-by-hop and stop here.
    pub pass_credentials: bool,
}

/// What went wrong with a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The connection was refused (502).
    Refused,
    /// It could not be reached otherwise (502).
    Unreachable,
    /// The connection took longer than the connect timeout (504).
    ConnectTimeout,
    /// Its host name does not resolve (502).
    NameUnresolved,
    /// Its host name took longer than the connect timeout to resolve (504).
    NameLookupTimeout,
    /// Its host name resolved to no address (502).
    NoAddress,
    /// It closed the connection before a response byte (502).
    ClosedBeforeResponse,
    /// It closed the connection inside the response head (502).
    ClosedInHead,
    /// No response head within the first-byte timeout (504).
    ResponseTimeout,
    /// It stopped reading the request body (502).
    StoppedReadingBody,
    /// It broke after an interim (1xx) response (502).
    BrokeAfterInterim,
    /// It broke during the response body (502; logged only: the head was sent).
    BrokeInBody,
}

impl Problem {
    /// The status the client gets.
    pub fn status(self) -> u16 {
        match self {
            Problem::ConnectTimeout | Problem::NameLookupTimeout | Problem::ResponseTimeout => 504,
            _ => 502,
        }
    }
}

/// `reason(kind, problem)`: one `&'static str` per pair, the kind's noun
/// before the problem's words.
macro_rules! reasons {
    ($kind:expr, $problem:expr, { $($p:ident => $words:literal,)* }) => {
        match ($kind, $problem) {
            $(
                (PeerKind::Parent, Problem::$p) => concat!("parent ", $words),
                (PeerKind::Origin, Problem::$p) => concat!("origin ", $words),
                (PeerKind::Proxy, Problem::$p) => concat!("upstream proxy ", $words),
                (PeerKind::Server, Problem::$p) => concat!("origin server ", $words),
            )*
        }
    };
}

fn reason(kind: PeerKind, problem: Problem) -> &'static str {
    reasons!(kind, problem, {
        Refused => "refused the connection",
        Unreachable => "cannot be reached",
        ConnectTimeout => "connect timeout",
        NameUnresolved => "host name does not resolve",
        NameLookupTimeout => "name lookup timeout",
        NoAddress => "host name has no address",
        ClosedBeforeResponse => "closed the connection before responding",
        ClosedInHead => "closed the connection inside the response head",
        ResponseTimeout => "response timeout",
        StoppedReadingBody => "stopped reading the request body",
        BrokeAfterInterim => "broke after an interim response",
        BrokeInBody => "broke during the response body",
    })
}

/// A connection slot a role holds on a peer while a request uses a
/// connection to it (a share of the peer's `max_conn`); released when
/// dropped.
#[derive(Debug, Default)]
pub struct Claim(Option<Rc<Cell<usize>>>);

impl Claim {
    /// No limit to count against.
    pub fn unlimited() -> Claim {
        Claim(None)
    }

    /// Counts one more connection in use in `in_use` until dropped.
    pub fn counted(in_use: &Rc<Cell<usize>>) -> Claim {
        in_use.set(in_use.get() + 1);
        Claim(Some(in_use.clone()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.set(c.get().saturating_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_kind_of_peer() {
        assert_eq!(
            PeerKind::Parent.error(Problem::Refused).to_string(),
            "502 parent refused the connection"
        );
        assert_eq!(
            PeerKind::Origin.error(Problem::ResponseTimeout).to_string(),
            "504 origin response timeout"
        );
        assert_eq!(
            PeerKind::Proxy
                .error(Problem::NameLookupTimeout)
                .to_string(),
            "504 upstream proxy name lookup timeout"
        );
    }

    #[test]
    fn a_claim_counts_while_it_lives() {
        let in_use = Rc::new(Cell::new(0));
        let a = Claim::counted(&in_use);
        let b = Claim::counted(&in_use);
        assert_eq!(in_use.get(), 2);
        drop(a);
        assert_eq!(in_use.get(), 1);
        drop(b);
        drop(Claim::unlimited());
        assert_eq!(in_use.get(), 0);
    }
}
