//! What the access log says about one request: Squid's result code and
//! hierarchy as enums, rendered to Squid's strings only when the line is
//! written, and the record the phases fill in as the request goes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use httpx::accesslog::Entry;
use httpx::{RequestHead, Version};

/// How a request was answered (Squid's result codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Answered by the proxy itself before any upstream or store was
    /// involved: a malformed or refused request (`NONE`).
    None,
    /// Fetched from an upstream (`TCP_MISS`).
    Miss,
    /// From the memory tier (`TCP_MEM_HIT`).
    MemHit,
    /// From the disk tier (`TCP_HIT`).
    DiskHit,
    /// A conditional request answered with 304 from the store (`TCP_IMS_HIT`).
    ImsHit,
    /// A stale object the origin said is still valid (`TCP_REFRESH_UNMODIFIED`).
    RefreshUnmodified,
    /// A stale object the origin replaced (`TCP_REFRESH_MODIFIED`).
    RefreshModified,
    /// A stale object served because the origin failed (`TCP_REFRESH_FAIL_OLD`).
    RefreshFailOld,
    /// A stale object served at once while it is revalidated in the
    /// background (`TCP_STALE_HIT`).
    StaleHit,
    /// Refused by an access rule (`TCP_DENIED`).
    Denied,
    /// A CONNECT tunnel (`TCP_TUNNEL`).
    Tunnel,
}

impl Code {
    /// Squid's name for it.
    pub fn as_squid(self) -> &'static str {
        match self {
            Code::None => "NONE",
            Code::Miss => "TCP_MISS",
            Code::MemHit => "TCP_MEM_HIT",
            Code::DiskHit => "TCP_HIT",
            Code::ImsHit => "TCP_IMS_HIT",
            Code::RefreshUnmodified => "TCP_REFRESH_UNMODIFIED",
            Code::RefreshModified => "TCP_REFRESH_MODIFIED",
            Code::RefreshFailOld => "TCP_REFRESH_FAIL_OLD",
            Code::StaleHit => "TCP_STALE_HIT",
            Code::Denied => "TCP_DENIED",
            Code::Tunnel => "TCP_TUNNEL",
        }
    }
}

/// How the upstream of a request was chosen (Squid's hierarchy codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// No upstream (`HIER_NONE`).
    None,
    /// A parent chosen by CARP (`CARP`).
    Carp,
    /// The origin itself (`HIER_DIRECT`).
    Direct,
    /// The one configured upstream proxy (`FIRSTUP_PARENT`).
    FirstUpParent,
}

impl Hierarchy {
    /// Squid's name for it.
    pub fn as_squid(self) -> &'static str {
        match self {
            Hierarchy::None => "HIER_NONE",
            Hierarchy::Carp => "CARP",
            Hierarchy::Direct => "HIER_DIRECT",
            Hierarchy::FirstUpParent => "FIRSTUP_PARENT",
        }
    }
}

/// A record's field keeps its allocation from one request to the next up
/// to this size.
const KEPT_FIELD: usize = 1024;

/// What the access log will say about the request in progress. A
/// connection keeps one and starts it anew per request, so its buffers are
/// reused (no allocation per request once they are warm).
#[derive(Debug)]
pub struct Record {
    start: SystemTime,
    t0: Instant,
    /// How the request was answered.
    pub code: Code,
    /// The status sent to the client (0: none was sent).
    pub status: u16,
    /// Bytes sent to the client, heads included.
    pub bytes: u64,
    /// Why the request failed, if it did (JSON lines only).
    pub reason: &'static str,
    /// The access rule that denied the request (the JSON lines' reason).
    pub denied_by: Option<Arc<str>>,
    /// Time to connect to the peer that answered (a new connection).
    pub connect_time: Option<Duration>,
    /// Time from the start of the answering attempt to its response head.
    pub first_byte: Option<Duration>,
    /// Request body bytes sent upstream.
    pub body_in: u64,
    /// A request for the server's own pages (`/carpool-internal/`):
    /// logged, not counted in the metrics.
    pub internal: bool,
    /// Not written to the access log (`carpool up`'s own metrics poll).
    pub unlogged: bool,
    /// The role's name for what the request was, beyond its code (the
    /// cache: `pass`, `purge`); counted in the metrics with the code.
    pub class: &'static str,
    /// The request holds an in-flight count on its peer until it is
    /// counted (the layer's business).
    pub(crate) in_flight: bool,
    method: Vec<u8>,
    url: Vec<u8>,
    version: Version,
    /// Whether `referer` and `user_agent` are kept (only a log format that
    /// shows them asks: copying them costs the other formats nothing).
    request_fields: bool,
    referer: Vec<u8>,
    user_agent: Vec<u8>,
    hierarchy: Hierarchy,
    peer: String,
    peer_host: String,
    content_type: Vec<u8>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            start: SystemTime::UNIX_EPOCH,
            t0: Instant::now(),
            code: Code::None,
            status: 0,
            bytes: 0,
            reason: "",
            denied_by: None,
            connect_time: None,
            first_byte: None,
            body_in: 0,
            internal: false,
            unlogged: false,
            class: "",
            in_flight: false,
            method: Vec::new(),
            url: Vec::new(),
            version: Version::Http11,
            request_fields: false,
            referer: Vec::new(),
            user_agent: Vec::new(),
            hierarchy: Hierarchy::None,
            peer: String::new(),
            peer_host: String::new(),
            content_type: Vec::new(),
        }
    }
}

impl Record {
    /// A record that keeps the request's `Referer` and `User-Agent` when
    /// `request_fields` (the log's format shows them:
    /// [`httpx::accesslog::Format::shows_request_fields`]).
    pub(crate) fn new(request_fields: bool) -> Record {
        Record {
            request_fields,
            ..Record::default()
        }
    }

    /// Starts the record of the request `head`.
    pub(crate) fn begin(&mut self, head: &RequestHead) {
        self.start = SystemTime::now();
        self.t0 = Instant::now();
        self.code = Code::None;
        self.status = 0;
        self.bytes = 0;
        self.reason = "";
        self.denied_by = None;
        self.connect_time = None;
        self.first_byte = None;
        self.body_in = 0;
        self.internal = false;
        self.unlogged = false;
        self.class = "";
        self.in_flight = false;
        self.method.clear();
        self.method.extend_from_slice(head.method());
        self.url.clear();
        self.url.extend_from_slice(head.target());
        self.version = head.version;
        if self.request_fields {
            // the first of each, as Squid's log takes it
            self.referer.clear();
            self.referer
                .extend_from_slice(head.fields.get("referer").unwrap_or_default());
            self.user_agent.clear();
            self.user_agent
                .extend_from_slice(head.fields.get("user-agent").unwrap_or_default());
        }
        self.hierarchy = Hierarchy::None;
        self.peer.clear();
        self.peer_host.clear();
        self.content_type.clear();
    }

    /// Frees the fields that grew past [`KEPT_FIELD`] (a long URL): an
    /// idle connection keeps only small ones for its next request.
    pub(crate) fn shed(&mut self) {
        for v in [
            &mut self.method,
            &mut self.url,
            &mut self.referer,
            &mut self.user_agent,
            &mut self.content_type,
        ] {
            if v.capacity() > KEPT_FIELD {
                *v = Vec::new();
            }
        }
        for v in [&mut self.peer, &mut self.peer_host] {
            if v.capacity() > KEPT_FIELD {
                *v = String::new();
            }
        }
    }

    /// The name of the peer the request went to last (empty: none).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Time since the request head arrived.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// The method as sent.
    pub fn method(&self) -> &[u8] {
        &self.method
    }

    /// The URL logged: the target as sent, then the effective URI.
    pub fn url(&self) -> &[u8] {
        &self.url
    }

    /// Logs `url` as the request's URL (the effective URI once known).
    pub fn set_url(&mut self, url: &[u8]) {
        self.url.clear();
        self.url.extend_from_slice(url);
    }

    /// Notes the upstream the request went to (the last one tried): its
    /// name and its host.
    pub fn went_to(&mut self, hierarchy: Hierarchy, peer: &str, host: &str) {
        self.hierarchy = hierarchy;
        self.peer.clear();
        self.peer.push_str(peer);
        self.peer_host.clear();
        self.peer_host.push_str(host);
    }

    /// Notes the response's `Content-Type`.
    pub fn set_content_type(&mut self, value: &[u8]) {
        self.content_type.clear();
        self.content_type.extend_from_slice(value);
    }

    /// The line for `client`'s request.
    pub(crate) fn entry(&self, client: IpAddr) -> Entry<'_> {
        Entry {
            start: self.start,
            elapsed: self.t0.elapsed(),
            client,
            code: self.code.as_squid(),
            status: self.status,
            bytes: self.bytes,
            method: &self.method,
            url: &self.url,
            version: self.version,
            referer: &self.referer,
            user_agent: &self.user_agent,
            hierarchy: self.hierarchy.as_squid(),
            peer: if self.peer.is_empty() {
                "-"
            } else {
                &self.peer
            },
            peer_host: if self.peer_host.is_empty() {
                "-"
            } else {
                &self.peer_host
            },
            content_type: &self.content_type,
            reason: self.denied_by.as_deref().unwrap_or(self.reason),
        }
    }
}
