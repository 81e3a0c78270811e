//! Who may use the proxy for what: the checks of the request filter phase
//! that every role shares (access rules of the role's own come after them).
//! Not an open proxy by default, like Squid's shipped configuration: plain
//! requests only to safe ports, never to this proxy's own listeners or
//! admin listener, loopback and link-local destinations only for clients on
//! this host, PURGE only from the clients allowed to purge.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use httpx::HttpError;
use ipnet::IpNet;

/// IPv4-mapped IPv6 client addresses compare as IPv4 against allow lists.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Who may send requests to this host's own loopback and link-local
/// addresses through the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LocalDestinations {
    /// Clients on this host only (they could reach them anyway).
    #[default]
    LocalClients,
    /// Every client the proxy serves.
    AllClients,
    /// No client.
    None,
}

/// What the access checks look at in a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked<'a> {
    /// The method.
    pub method: &'a [u8],
    /// A CONNECT.
    pub connect: bool,
    /// The destination host.
    pub host: &'a [u8],
    /// The destination port.
    pub port: u16,
    /// The client's address.
    pub client: IpAddr,
    /// The client is not on this host.
    pub remote: bool,
}

/// The access checks every role shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    /// Ports a plain (not CONNECT) request may go to.
    pub safe_ports: Vec<RangeInclusive<u16>>,
    /// This proxy's own listeners and its admin listener: never a
    /// destination.
    pub own: Vec<SocketAddr>,
    /// Who may reach loopback and link-local destinations.
    pub local_destinations: LocalDestinations,
    /// Clients allowed to send PURGE (none: nobody).
    pub purge_clients: Vec<IpNet>,
}

impl Access {
    /// Squid's shipped `Safe_ports`: 80, 21, 443, 70, 210, 1025-65535, 280,
    /// 488, 591, 777.
    pub fn squid_safe_ports() -> Vec<RangeInclusive<u16>> {
        [80, 21, 443, 70, 210, 280, 488, 591, 777]
            .into_iter()
            .map(|p| p..=p)
            .chain([1025..=65535])
            .collect()
    }

    /// Refuses `req` (403) when it may not go where it asks: the checks
    /// that need no name lookup (a destination named by a host name is
    /// checked again once resolved, [`Access::reachable`]).
    pub(crate) fn check(&self, req: &Asked<'_>) -> Result<(), HttpError> {
        if req.method == b"PURGE" && !self.purge_clients.iter().any(|n| n.contains(&req.client)) {
            return Err(HttpError::new(
                403,
                "PURGE from a client not in purge_clients",
            ));
        }
        let port = req.port;
        if !req.connect && !self.safe_ports.iter().any(|r| r.contains(&port)) {
            return Err(HttpError::new(403, "destination port not in safe_ports"));
        }
        let (host, remote) = (req.host, req.remote);
        match literal_ip(host) {
            Some(ip) => self.reachable(SocketAddr::new(ip, port), remote),
            // what `localhost` names are bound to resolve to
            None if is_localhost_name(host) => [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ]
            .into_iter()
            .try_for_each(|ip| self.reachable(SocketAddr::new(ip, port), remote)),
            None => Ok(()),
        }
    }

    /// Refuses a destination address (403): one of this proxy's own
    /// listeners, or a loopback or link-local address for a client that may
    /// not reach them (`remote`: the client is not on this host).
    pub fn reachable(&self, addr: SocketAddr, remote: bool) -> Result<(), HttpError> {
        if self.own.iter().any(|own| is_own(*own, addr)) {
            return Err(HttpError::new(
                403,
                "destination is this proxy's own listener",
            ));
        }
        if is_local_address(addr.ip()) {
            return self.local_allowed(remote);
        }
        Ok(())
    }

    fn local_allowed(&self, remote: bool) -> Result<(), HttpError> {
        match (self.local_destinations, remote) {
            (LocalDestinations::AllClients, _) | (LocalDestinations::LocalClients, false) => Ok(()),
            _ => Err(HttpError::new(
                403,
                "destination is a loopback or link-local address",
            )),
        }
    }
}

/// An IP address literal as a URI host (`127.0.0.1`, `[::1]`).
fn literal_ip(host: &[u8]) -> Option<IpAddr> {
    let host = std::str::from_utf8(host).ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse().ok()
}

/// `localhost` and names under it (RFC 6761 §6.3: they resolve to loopback).
fn is_localhost_name(host: &[u8]) -> bool {
    host.eq_ignore_ascii_case(b"localhost")
        || (host.len() > 10 && host[host.len() - 10..].eq_ignore_ascii_case(b".localhost"))
}

/// Loopback, link-local and unspecified addresses (IPv4-mapped ones too):
/// this host's own, whatever its interfaces.
pub fn is_local_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local_address(IpAddr::V4(v4)),
            None => {
                v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
}

/// Whether a destination is a listener bound to `own`: the same port, and
/// the same address, or any address of this host when `own` is a wildcard
/// or loopback one.
fn is_own(own: SocketAddr, dest: SocketAddr) -> bool {
    own.port() == dest.port()
        && (own.ip() == dest.ip()
            || own.ip().is_unspecified()
            || (own.ip().is_loopback() && is_local_address(dest.ip())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(local: LocalDestinations) -> Access {
        Access {
            safe_ports: Access::squid_safe_ports(),
            own: vec![
                "127.0.0.1:3180".parse().unwrap(),
                "0.0.0.0:3128".parse().unwrap(),
            ],
            local_destinations: local,
            purge_clients: vec![],
        }
    }

    #[test]
    fn local_and_own_destinations() {
        let a = access(LocalDestinations::LocalClients);
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(a.reachable(at("10.1.2.3:8080"), true).is_ok());
        for local in [
            "127.0.0.1:22",
            "127.5.5.5:80",
            "169.254.169.254:80",
            "[::1]:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert_eq!(
                a.reachable(at(local), true).unwrap_err().status,
                403,
                "{local}"
            );
            assert!(
                a.reachable(at(local), false).is_ok(),
                "{local} for a local client"
            );
        }
        // our own listeners, for every client
        assert!(a.reachable(at("127.0.0.1:3180"), false).is_err());
        assert!(
            a.reachable(at("10.1.2.3:3128"), false).is_err(),
            "a wildcard listener"
        );
        assert!(a.reachable(at("10.1.2.3:3180"), false).is_ok());
        let all = access(LocalDestinations::AllClients);
        assert!(all.reachable(at("127.0.0.1:22"), true).is_ok());
        let none = access(LocalDestinations::None);
        assert!(none.reachable(at("127.0.0.1:22"), false).is_err());
    }

    #[test]
    fn names_and_ports() {
        assert!(is_localhost_name(b"LocalHost") && is_localhost_name(b"a.localhost"));
        assert!(!is_localhost_name(b"notlocalhost") && !is_localhost_name(b"localhost.example"));
        let safe = Access::squid_safe_ports();
        for (p, ok) in [
            (80, true),
            (22, false),
            (25, false),
            (443, true),
            (1024, false),
            (1025, true),
            (65535, true),
        ] {
            assert_eq!(safe.iter().any(|r| r.contains(&p)), ok, "{p}");
        }
    }
}
