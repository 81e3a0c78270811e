//! Where a cache's misses go: the origin the URL names, or the configured
//! upstream proxy; the idle connections kept to them; and what a fill leaves
//! out of the client's request.

use carp::RequestUri;
use proxy::{Address, PeerInfo, PeerKind};

use crate::config::settings::HostPort;

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

/// Where a request goes: the origin itself, or the upstream proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    /// Host name or address (an IPv6 one without brackets).
    host: String,
    port: u16,
    /// True for the upstream proxy (absolute-form requests).
    proxy: bool,
}

impl Hop {
    /// The hop for `uri`: the upstream proxy when configured, else the origin.
    pub fn for_uri(uri: &RequestUri, upstream: Option<&HostPort>) -> Hop {
        match upstream {
            Some(hp) => Hop {
                host: hp.host.clone(),
                port: hp.port,
                proxy: true,
            },
            None => Hop {
                host: String::from_utf8_lossy(uri.host())
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port: uri.port(),
                proxy: false,
            },
        }
    }

    /// The hop as the request layer reaches it; its name in logs is the host.
    pub fn info(&self) -> PeerInfo<'_> {
        PeerInfo {
            name: &self.host,
            kind: if self.proxy {
                PeerKind::Proxy
            } else {
                PeerKind::Origin
            },
            address: Address::Name(&self.host, self.port),
        }
    }
}

/// Idle origin connections of one worker, by hop.
pub type Pools = httpx::pool::KeyedPool<Hop>;
