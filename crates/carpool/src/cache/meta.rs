//! What the cache stores beside an object's body: a small binary record that
//! the hit path reads without parsing anything (status, when it was
//! received, its age then, how long it stays fresh, the response head ready
//! to send), and the cache directives that govern its reuse, read only on
//! the slower paths (a request with directives of its own, a stale object).
//!
//! A `Vary` marker is stored under the URL's own key: it names the request
//! fields the URL's responses vary on, and each variant lives under a key
//! that adds those fields' values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::directives::Directives;

/// First bytes of every record; bump the digit when the layout changes
/// (records of another layout read as nothing stored).
const MAGIC: &[u8; 4] = b"CPM2";

/// Kinds of record.
const KIND_OBJECT: u8 = 0;
const KIND_VARY: u8 = 1;

/// An object's record.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Response status.
    pub status: u16,
    /// When the response was received.
    pub response_time: SystemTime,
    /// The response's age when it was received (RFC 9111 §4.2.3: its `Age`
    /// corrected by the response delay, or what its `Date` says if more).
    pub initial_age: Duration,
    /// Freshness lifetime (zero: always revalidate): fresh while the age is
    /// less.
    pub lifetime: Duration,
    /// The response head to send: status line and end-to-end fields, each
    /// ending in CRLF, without `Age`, framing or connection fields.
    pub head: Bytes,
    /// The request fields the response varies on (lower case, sorted; empty
    /// when it does not vary).
    pub vary: Vec<String>,
    /// The cache directives that govern reuse: the values of the field
    /// they came from (`Cache-Control`, or the targeted field used, which
    /// is not in `head`), comma-joined.
    pub directives: Bytes,
}

/// A record as stored: an object, or a `Vary` marker.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A response.
    Object(Meta),
    /// The URL's responses vary on these request fields (lower case,
    /// sorted); its variants' keys include `nonce`, so a new marker (after
    /// a PURGE, or a change of `Vary`) never revives older variants.
    Vary {
        /// The fields.
        names: Vec<String>,
        /// This marker's own number.
        nonce: u64,
    },
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Meta {
    /// Seconds the object has been around at `now` (what `Age` says).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.response_time).unwrap_or_default()
    }

    /// Fresh at `now` without revalidation (for a request that adds no
    /// conditions of its own).
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.lifetime
    }

    /// The directives that govern reuse, parsed.
    pub fn directives(&self) -> Directives {
        Directives::cache_control([&self.directives[..]])
    }

    /// The stored head's first field value named `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        fields(&self.head).find_map(|(n, v)| n.eq_ignore_ascii_case(name.as_bytes()).then_some(v))
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.head.len() + self.directives.len());
        out.extend_from_slice(MAGIC);
        out.push(KIND_OBJECT);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&millis(self.response_time).to_le_bytes());
        out.extend_from_slice(&(self.initial_age.as_millis() as u64).to_le_bytes());
        out.extend_from_slice(&(self.lifetime.as_millis() as u64).to_le_bytes());
        put_bytes(&mut out, &self.head);
        put_bytes(&mut out, self.vary.join(",").as_bytes());
        put_bytes(&mut out, &self.directives);
        out
    }
}

/// Encodes a `Vary` marker.
pub fn encode_vary(fields: &[String], nonce: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + fields.len() * 16);
    out.extend_from_slice(MAGIC);
    out.push(KIND_VARY);
    out.extend_from_slice(&nonce.to_le_bytes());
    put_bytes(&mut out, fields.join(",").as_bytes());
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads a record back (without copying its head or directives); `None` when it
/// is not one of ours (another layout version, or damage the store's
/// checksums did not catch).
pub fn decode(b: &Bytes) -> Option<Stored> {
    let mut r = Reader(b);
    if r.take(4)? != MAGIC {
        return None;
    }
    match r.take(1)?[0] {
        KIND_OBJECT => {
            let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            let response_time = UNIX_EPOCH + Duration::from_millis(r.u64()?);
            let initial_age = Duration::from_millis(r.u64()?);
            let lifetime = Duration::from_millis(r.u64()?);
            let head = b.slice_ref(r.bytes()?);
            let vary = split_names(r.bytes()?);
            let directives = b.slice_ref(r.bytes()?);
            Some(Stored::Object(Meta {
                status,
                response_time,
                initial_age,
                lifetime,
                head,
                vary,
                directives,
            }))
        }
        KIND_VARY => {
            let nonce = r.u64()?;
            Some(Stored::Vary {
                names: split_names(r.bytes()?),
                nonce,
            })
        }
        _ => None,
    }
}

fn split_names(b: &[u8]) -> Vec<String> {
    std::str::from_utf8(b)
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

/// The `name: value` fields of a stored head (after its status line).
pub fn fields(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], line[colon + 1..].trim_ascii()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Meta {
            status: 200,
            response_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            initial_age: Duration::from_secs(3),
            lifetime: Duration::from_secs(63),
            head: Bytes::from_static(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"x\"\r\n",
            ),
            vary: vec!["accept-encoding".into()],
            directives: Bytes::from_static(b"max-age=63, must-revalidate"),
        };
        let Some(Stored::Object(back)) = decode(&m.encode().into()) else {
            panic!("not decoded")
        };
        assert_eq!(back.status, 200);
        assert_eq!(back.response_time, m.response_time);
        assert_eq!(back.lifetime, m.lifetime);
        assert!(back.directives().must_revalidate);
        assert_eq!(back.head, m.head);
        assert_eq!(back.vary, m.vary);
        assert_eq!(back.field("etag"), Some(&b"\"x\""[..]));
        assert!(back.is_fresh(m.response_time + Duration::from_secs(59)));
        assert!(!back.is_fresh(m.response_time + Duration::from_secs(60)));
        assert_eq!(
            back.age(m.response_time + Duration::from_secs(10)),
            Duration::from_secs(13)
        );
        let Some(Stored::Vary { names, nonce }) =
            decode(&encode_vary(&["accept".into(), "cookie".into()], 7).into())
        else {
            panic!("not a vary marker")
        };
        assert_eq!(names, ["accept", "cookie"]);
        assert_eq!(nonce, 7);
        assert!(decode(&Bytes::from_static(b"XXXX")).is_none());
        assert!(decode(&Bytes::copy_from_slice(&m.encode()[..20])).is_none());
    }
}
