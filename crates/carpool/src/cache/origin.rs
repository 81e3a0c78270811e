//! Where a cache's misses go: a configured origin server (for the URL's
//! site, or for every site), the configured upstream proxy, or the origin
//! the URL names; the idle connections kept to them; and what a fill leaves
//! out of the client's request.

use carp::RequestUri;
use proxy::{Address, PeerInfo, PeerKind};

use crate::config::settings::{HostPort, OriginServers};

/// Most distinct origins one worker keeps idle connections for.
pub const MAX_POOLED_ORIGINS: usize = 4096;

/// Request fields a cache fill never forwards: the client's own conditions
/// and ranges (the cache wants the whole, current object to store; it
/// answers the client's conditions itself).
pub const CLIENT_CONDITIONS: &[&str] = &[
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// Where a request goes: a configured origin server, the upstream proxy, or
/// the origin the URL names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// Host name or address (an IPv6 one without brackets).
    host: String,
    port: u16,
    kind: PeerKind,
}

impl Hop {
    /// The hop for `uri` (`connect`: a CONNECT, which always goes where it
    /// names or through the upstream proxy): its site's origin server when
    /// one is configured, else the upstream proxy when configured, else the
    /// origin the URL names.
    pub fn for_uri(
        uri: &RequestUri,
        connect: bool,
        servers: &OriginServers,
        upstream: Option<&HostPort>,
    ) -> Hop {
        let server = (!connect).then(|| servers.for_host(uri.host())).flatten();
        let configured = |hp: &HostPort, kind| Hop {
            host: hp.host.clone(),
            port: hp.port,
            kind,
        };
        match (server, upstream) {
            (Some(hp), _) => configured(hp, PeerKind::Server),
            (None, Some(hp)) => configured(hp, PeerKind::Proxy),
            (None, None) => Hop {
                host: String::from_utf8_lossy(uri.host())
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: uri.port(),
                kind: PeerKind::Origin,
            },
        }
    }

    /// The hop as the request layer reaches it; its name in logs is the host.
    pub fn info(&self) -> PeerInfo<'_> {
        PeerInfo {
            name: &self.host,
            host: &self.host,
            kind: self.kind,
            address: Address::Name(&self.host, self.port),
            pass_credentials: false,
        }
    }
}

/// Idle origin connections of one worker, by hop.
pub type Pools = httpx::pool::KeyedPool<Hop>;
