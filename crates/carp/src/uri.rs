//! The normalized request target that routing hashes.
//!
//! A [`RequestUri`] holds Squid's *effective request URI* — `scheme://host[:port]path`
//! for URLs, `host:port` for CONNECT — in one buffer, with the scheme, host and
//! path as ranges into it, so that building a key from parts never allocates.

use std::ops::Range;

use crate::KeySpec;

/// A normalized request target (see [`crate::normalize`] for how it is built).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestUri {
    pub(crate) text: Vec<u8>,
    pub(crate) scheme: Range<usize>,
    pub(crate) host: Range<usize>,
    pub(crate) path: Range<usize>,
    pub(crate) port: u16,
    pub(crate) authority_form: bool,
}

impl RequestUri {
    /// The effective request URI as bytes (it may hold bytes ≥ 0x80).
    pub fn effective(&self) -> &[u8] {
        &self.text
    }

    /// The effective request URI, lossily decoded for display.
    pub fn effective_uri(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    /// The scheme as Squid prints it (lowercase for known schemes, as sent for
    /// unknown ones, empty for CONNECT).
    pub fn scheme(&self) -> &[u8] {
        &self.text[self.scheme.clone()]
    }

    /// Host name or IP literal (IPv6 in brackets).
    pub fn host(&self) -> &[u8] {
        &self.text[self.host.clone()]
    }

    /// The port: explicit, or the scheme's default.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path and query (empty for CONNECT).
    pub fn path_and_query(&self) -> &[u8] {
        &self.text[self.path.clone()]
    }

    /// True for a CONNECT target (`host:port`).
    pub fn is_authority_form(&self) -> bool {
        self.authority_form
    }

    /// Builds a target from already-normalized parts, as a URL
    /// `scheme://host[:port]path` (the port is written when it is not `default_port`).
    pub fn from_parts(scheme: &str, host: &str, port: u16, default_port: u16, path: &str) -> Self {
        let mut text = Vec::with_capacity(scheme.len() + host.len() + path.len() + 10);
        text.extend_from_slice(scheme.as_bytes());
        let scheme_r = 0..text.len();
        text.extend_from_slice(b"://");
        let h0 = text.len();
        text.extend_from_slice(host.as_bytes());
        let host_r = h0..text.len();
        if port != default_port {
            text.push(b':');
            text.extend_from_slice(PortText::new(port).as_bytes());
        }
        let p0 = text.len();
        text.extend_from_slice(path.as_bytes());
        let path_r = p0..text.len();
        RequestUri {
            text,
            scheme: scheme_r,
            host: host_r,
            path: path_r,
            port,
            authority_form: false,
        }
    }

    /// Builds a CONNECT target `host:port`.
    pub fn authority(host: &str, port: u16) -> Self {
        let mut text = host.as_bytes().to_vec();
        let host_r = 0..text.len();
        text.push(b':');
        text.extend_from_slice(PortText::new(port).as_bytes());
        let end = text.len();
        RequestUri {
            text,
            scheme: 0..0,
            host: host_r,
            path: end..end,
            port,
            authority_form: true,
        }
    }

    /// Feeds the key bytes that `spec` selects to `sink`, piece by piece, in
    /// Squid's order; with no spec (or an empty result) the effective URI.
    pub fn key_parts(&self, spec: Option<&KeySpec>, mut sink: impl FnMut(&[u8])) {
        let Some(spec) = spec.filter(|s| !s.is_empty()) else {
            sink(&self.text);
            return;
        };
        let path = self.path_and_query();
        let q = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
        let scheme = self.scheme();
        // Every selected part but these three always adds bytes (`:port`).
        let empty = !spec.port
            && (!spec.scheme || scheme.is_empty())
            && (!spec.host || self.host.is_empty())
            && (!spec.path || q == 0)
            && (!spec.params || q == path.len());
        if empty {
            sink(&self.text);
            return;
        }
        if spec.scheme && !scheme.is_empty() {
            sink(scheme);
            sink(b"://");
        }
        if spec.host {
            sink(self.host());
        }
        if spec.port {
            sink(b":");
            sink(PortText::new(self.port).as_bytes());
        }
        if spec.path {
            sink(&path[..q]);
        }
        if spec.params {
            sink(&path[q..]);
        }
    }

    /// The key that `spec` selects, as one buffer (for display).
    pub fn key(&self, spec: Option<&KeySpec>) -> Vec<u8> {
        let mut out = Vec::new();
        self.key_parts(spec, |b| out.extend_from_slice(b));
        out
    }
}

/// Decimal text of a port number without allocating.
pub(crate) struct PortText {
    buf: [u8; 5],
    start: usize,
}

impl PortText {
    pub(crate) fn new(mut port: u16) -> Self {
        let mut buf = [0u8; 5];
        let mut i = 5;
        loop {
            i -= 1;
            buf[i] = b'0' + (port % 10) as u8;
            port /= 10;
            if port == 0 {
                break;
            }
        }
        PortText { buf, start: i }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_follow_squid_order() {
        let u = RequestUri::from_parts("http", "example.com", 80, 80, "/a/b?x=1");
        assert_eq!(u.effective(), b"http://example.com/a/b?x=1");
        let all = KeySpec {
            scheme: true,
            host: true,
            port: true,
            path: true,
            params: true,
        };
        assert_eq!(u.key(Some(&all)), b"http://example.com:80/a/b?x=1");
        let params = KeySpec {
            params: true,
            ..KeySpec::default()
        };
        assert_eq!(u.key(Some(&params)), b"?x=1");
        let path = KeySpec {
            path: true,
            ..KeySpec::default()
        };
        assert_eq!(u.key(Some(&path)), b"/a/b");
        let noq = RequestUri::from_parts("http", "h", 80, 80, "/");
        // params selected but absent: the whole URI is the key
        assert_eq!(noq.key(Some(&params)), b"http://h/");
        let c = RequestUri::authority("h.example", 443);
        let scheme = KeySpec {
            scheme: true,
            ..KeySpec::default()
        };
        assert_eq!(c.key(Some(&scheme)), b"h.example:443");
        assert_eq!(c.key(Some(&all)), b"h.example:443");
    }

    #[test]
    fn port_text() {
        for p in [0u16, 7, 80, 443, 8080, 65535] {
            assert_eq!(PortText::new(p).as_bytes(), p.to_string().as_bytes());
        }
    }
}
