//! The member table: members, their weights and keys, and the hash mode that
//! turns a request into a preference order over them.
//!
//! Each mode precomputes everything that depends only on the configuration
//! (member hashes, load multipliers, evaluation order) once, in [`Table::new`];
//! per request only the key is hashed and one score per member computed.

use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;
use std::str::FromStr;

use crate::hash::{self, CharSign};
use crate::{KeySpec, RequestUri};

/// The most members a table may hold (Squid has no limit; rankings live on the stack).
pub const MAX_MEMBERS: usize = 256;

/// How a table scores members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Bit-exact with Squid 5.x `carp.cc`, including its quirks: the URL hash
    /// accumulates across members (so routing depends on each member's position
    /// in the weight-sorted list), characters are signed, weights below 1 count
    /// as 1, members whose share is below 0.1% never win, ties go to the first
    /// member in weight-sorted order.
    Squid,
    /// The CARP v1 draft (draft-vinod-carp-v1-03) as written: the URL hash is
    /// computed once, bytes are unsigned. Minimal disruption, but the weak 32-bit
    /// hash skews shares by several percent.
    CarpV1,
    /// Weighted rendezvous hashing with a 64-bit hash and logarithmic weights:
    /// shares match weights, only a removed member's URLs move. The default.
    #[default]
    Hrw,
}

impl Mode {
    /// The name used in configuration files and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Squid => "squid",
            Mode::CarpV1 => "carp-v1",
            Mode::Hrw => "hrw",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown hash mode name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash mode {0:?} (expected \"hrw\", \"carp-v1\" or \"squid\")")]
pub struct ModeError(pub String);

impl FromStr for Mode {
    type Err = ModeError;
    fn from_str(s: &str) -> Result<Mode, ModeError> {
        match s {
            "squid" => Ok(Mode::Squid),
            "carp-v1" => Ok(Mode::CarpV1),
            "hrw" => Ok(Mode::Hrw),
            other => Err(ModeError(other.to_string())),
        }
    }
}

/// One member of the array, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's name as text (Squid: `name=`, else the host). What the
    /// modes hash are the bytes it stands for, [`Member::name_bytes`]: a
    /// name that is not UTF-8 (a squid.conf may hold `name=lat<0xE9>n1`) is
    /// written with `\xHH` escapes ([`escape_name`]), as logs print it.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
    /// Which URL parts this member hashes (`carp-key=`); `None`: the whole URI.
    pub key: Option<KeySpec>,
}

impl Member {
    /// A member with a name and weight that hashes the whole URI.
    pub fn new(name: impl Into<String>, weight: u32) -> Self {
        Member {
            name: name.into(),
            weight,
            key: None,
        }
    }

    /// Sets the key spec.
    pub fn with_key(mut self, key: KeySpec) -> Self {
        self.key = Some(key);
        self
    }

    /// The bytes the name stands for, which every mode hashes: the name with
    /// each `\xHH` read as the byte HH ([`unescape_name`]).
    pub fn name_bytes(&self) -> Cow<'_, [u8]> {
        unescape_name(&self.name)
    }
}

/// A member name that may not be UTF-8, as text: UTF-8 characters as they
/// are, each byte of an invalid sequence as `\xHH` (lowercase hex) and a
/// backslash as `\x5c`, so that [`unescape_name`] gives the bytes back
/// (`lat\xe9n1` for Latin-1 `latén1`; `café` in UTF-8 stays `café`).
pub fn escape_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\x5c");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes a member name stands for: `\xHH` (two hex digits, either case)
/// is the byte HH, everything else is the name's own UTF-8.
pub fn unescape_name(name: &str) -> Cow<'_, [u8]> {
    let b = name.as_bytes();
    if !b.contains(&b'\\') {
        return Cow::Borrowed(b);
    }
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let [b'\\', b'x', h, l, ..] = b[i..] {
            if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                out.push((h << 4 | l) as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// A member's position in the configuration (0-based), stable for a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub u16);

impl MemberId {
    /// The index into the configured member list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why a member table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// No members at all.
    #[error("no members: at least one parent is needed")]
    Empty,
    /// More members than [`MAX_MEMBERS`].
    #[error("{0} members: at most {MAX_MEMBERS} are supported")]
    TooMany(usize),
    /// Two members with one name (they would hash alike).
    #[error("member name {0:?} is used twice")]
    DuplicateName(String),
    /// A zero weight outside `squid` mode.
    #[error("member {0:?} has weight 0: weights must be at least 1")]
    ZeroWeight(String),
}

/// Per-member data precomputed from the configuration.
#[derive(Clone, Debug)]
struct Slot {
    id: MemberId,
    key: Option<KeySpec>,
    /// Index into `Table::keys` (distinct key specs).
    key_index: u8,
    carp_hash: u32,
    multiplier: f64,
    seed: u64,
    weight: f64,
}

/// Members and mode, ready to rank requests.
#[derive(Clone, Debug)]
pub struct Table {
    mode: Mode,
    members: Vec<Member>,
    /// Members in evaluation order (weight-sorted for the CARP modes).
    slots: Vec<Slot>,
    /// Distinct key specs in use (so a shared key is hashed once per request).
    keys: Vec<Option<KeySpec>>,
    equal_weights: bool,
}

/// One member's figures for one request (see [`Table::explain`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The member.
    pub id: MemberId,
    /// Position in the ranking, 1 = chosen when alive.
    pub rank: usize,
    /// Position in the mode's evaluation order (Squid: weight-sorted list), 0-based.
    pub position: usize,
    /// The key bytes this member hashes.
    pub key: Vec<u8>,
    /// The member's raw hash draw (32-bit for CARP modes, 64-bit for `hrw`).
    pub draw: u64,
    /// Load multiplier (CARP modes) or weight (`hrw`).
    pub factor: f64,
    /// The score compared across members.
    pub score: f64,
}

impl Table {
    /// Builds a table. Member order matters: it is the configuration order
    /// that [`MemberId`]s index and that breaks ties.
    pub fn new(mode: Mode, members: Vec<Member>) -> Result<Table, TableError> {
        if members.is_empty() {
            return Err(TableError::Empty);
        }
        if members.len() > MAX_MEMBERS {
            return Err(TableError::TooMany(members.len()));
        }
        for (i, m) in members.iter().enumerate() {
            if members[..i]
                .iter()
                .any(|o| o.name_bytes() == m.name_bytes())
            {
                return Err(TableError::DuplicateName(m.name.clone()));
            }
            if m.weight == 0 && mode != Mode::Squid {
                return Err(TableError::ZeroWeight(m.name.clone()));
            }
        }
        let mut keys: Vec<Option<KeySpec>> = Vec::new();
        let mut key_index = |k: Option<KeySpec>| -> u8 {
            let k = k.filter(|s| !s.is_empty());
            match keys.iter().position(|x| *x == k) {
                Some(i) => i as u8,
                None => {
                    keys.push(k);
                    (keys.len() - 1) as u8
                }
            }
        };
        // Squid's config parser forces weights below 1 to 1.
        let weight_of = |m: &Member| {
            if mode == Mode::Squid {
                m.weight.max(1)
            } else {
                m.weight
            }
        };
        let total: u64 = members.iter().map(|m| weight_of(m) as u64).sum();
        let mut slots: Vec<Slot> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let w = weight_of(m);
                let sign = if mode == Mode::Squid {
                    CharSign::Signed
                } else {
                    CharSign::Unsigned
                };
                Slot {
                    id: MemberId(i as u16),
                    key: m.key.filter(|s| !s.is_empty()),
                    key_index: key_index(m.key),
                    carp_hash: hash::carp_member_hash(&m.name_bytes(), sign),
                    multiplier: 0.0,
                    seed: hash::hrw_member_seed(&m.name_bytes()),
                    weight: w as f64,
                }
            })
            .collect();
        if mode != Mode::Hrw {
            // Stable sort: ties keep configuration order (as glibc's merge-sort
            // qsort does in Squid).
            slots.sort_by(|a, b| a.weight.total_cmp(&b.weight));
            let factors: Vec<f64> = slots
                .iter()
                .map(|s| {
                    // Squid computes the factor from integers: weight / total.
                    let f = s.weight / total as f64;
                    if mode == Mode::Squid && (f * 1000.0).floor() == 0.0 {
                        0.0
                    } else {
                        f
                    }
                })
                .collect();
            for (s, m) in slots.iter_mut().zip(hash::carp_multipliers(&factors)) {
                s.multiplier = m;
            }
        }
        let equal_weights = slots.iter().all(|s| s.weight == slots[0].weight);
        Ok(Table {
            mode,
            members,
            slots,
            keys,
            equal_weights,
        })
    }

    /// The hash mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The members, in configuration order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// A member by id.
    pub fn member(&self, id: MemberId) -> &Member {
        &self.members[id.index()]
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a table has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The load multipliers in configuration order (CARP modes; 0 for `hrw`).
    pub fn multipliers(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.members.len()];
        for s in &self.slots {
            out[s.id.index()] = s.multiplier;
        }
        out
    }

    /// Computes every member's score for `req`, in evaluation order, calling
    /// `each(position, slot, draw, score)`.
    #[inline]
    fn for_each_score(&self, req: &RequestUri, mut each: impl FnMut(usize, &Slot, u64, f64)) {
        match self.mode {
            Mode::Squid => {
                // Squid's user_hash is not reset per member: it keeps
                // accumulating each member's key, in weight-sorted order.
                let mut h = 0u32;
                for (i, s) in self.slots.iter().enumerate() {
                    req.key_parts(s.key.as_ref(), |b| {
                        h = hash::carp_accumulate(h, b, CharSign::Signed)
                    });
                    let c = hash::carp_combine(h, s.carp_hash);
                    each(i, s, c as u64, c as f64 * s.multiplier);
                }
            }
            Mode::CarpV1 => {
                let mut url = [0u32; 32];
                for (k, spec) in self.keys.iter().enumerate() {
                    let mut h = 0u32;
                    req.key_parts(spec.as_ref(), |b| {
                        h = hash::carp_accumulate(h, b, CharSign::Unsigned)
                    });
                    url[k] = h;
                }
                for (i, s) in self.slots.iter().enumerate() {
                    let c = hash::carp_combine(url[s.key_index as usize], s.carp_hash);
                    each(i, s, c as u64, c as f64 * s.multiplier);
                }
            }
            Mode::Hrw => {
                let mut keyh = [0u64; 32];
                for (k, spec) in self.keys.iter().enumerate() {
                    keyh[k] = match spec {
                        None => hash::hrw_key_hash(req.effective()),
                        Some(_) => {
                            let mut st = xxhash_rust::xxh3::Xxh3::new();
                            req.key_parts(spec.as_ref(), |b| st.update(b));
                            st.digest()
                        }
                    };
                }
                for (i, s) in self.slots.iter().enumerate() {
                    let d = hash::hrw_draw(keyh[s.key_index as usize], s.seed);
                    let score = if self.equal_weights {
                        // Same order as weight / -ln(u) when all weights are equal.
                        (d >> 11) as f64
                    } else {
                        hash::hrw_score(d, s.weight)
                    };
                    each(i, s, d, score);
                }
            }
        }
    }

    /// The members in preference order for `req`: the first is the owner, the
    /// rest the failover order for this request. Does not allocate.
    pub fn rank(&self, req: &RequestUri) -> Ranking {
        // Entries are left uninitialized until written: a ranking costs what
        // its members need, not a zeroed array of MAX_MEMBERS.
        let mut r = Ranking {
            entries: [const { MaybeUninit::uninit() }; MAX_MEMBERS],
            taken: [0; MAX_MEMBERS / 64],
            len: 0,
            yielded: 0,
        };
        self.for_each_score(req, |i, s, _, score| {
            let score = if score.is_nan() {
                f64::NEG_INFINITY
            } else {
                score
            };
            r.entries[i].write((s.id.0, score));
            r.len = i + 1;
        });
        debug_assert_eq!(r.len, self.slots.len());
        r
    }

    /// The best member for `req` among those `alive` accepts, or `None` when no
    /// alive member can take it. In `squid` mode a member whose score is not
    /// above 0 (share below 0.1%) is never chosen, as in Squid.
    pub fn select(
        &self,
        req: &RequestUri,
        mut alive: impl FnMut(MemberId) -> bool,
    ) -> Option<MemberId> {
        let mut best = None;
        let mut high = if self.mode == Mode::Squid {
            0.0
        } else {
            f64::NEG_INFINITY
        };
        self.for_each_score(req, |_, s, _, score| {
            if score > high && alive(s.id) {
                high = score;
                best = Some(s.id);
            }
        });
        best
    }

    /// Every member's key, draw, factor, score and rank for `req`, in
    /// configuration order (for `route --explain`).
    pub fn explain(&self, req: &RequestUri) -> Vec<Scored> {
        let mut out: Vec<Scored> = Vec::with_capacity(self.slots.len());
        self.for_each_score(req, |i, s, draw, score| {
            out.push(Scored {
                id: s.id,
                rank: 0,
                position: i,
                key: req.key(s.key.as_ref()),
                draw,
                factor: if self.mode == Mode::Hrw {
                    s.weight
                } else {
                    s.multiplier
                },
                score,
            });
        });
        for (rank, id) in self.rank(req).enumerate() {
            if let Some(e) = out.iter_mut().find(|e| e.id == id) {
                e.rank = rank + 1;
            }
        }
        out.sort_by_key(|e| e.id);
        out
    }
}

/// Members in preference order for one request (see [`Table::rank`]).
///
/// Scores are computed up front; each step picks the best remaining member
/// (ties: earlier in evaluation order), so taking only the first one or two
/// costs little.
#[derive(Clone)]
pub struct Ranking {
    /// (member id, score) in evaluation order; `entries[..len]` are written.
    entries: [MaybeUninit<(u16, f64)>; MAX_MEMBERS],
    taken: [u64; MAX_MEMBERS / 64],
    len: usize,
    yielded: usize,
}

impl Ranking {
    fn entry(&self, i: usize) -> (u16, f64) {
        assert!(i < self.len);
        // SAFETY: `Table::rank` writes entries 0..len, in order, before
        // setting `len` past them, and nothing else changes them.
        unsafe { self.entries[i].assume_init() }
    }
}

impl Iterator for Ranking {
    type Item = MemberId;

    fn next(&mut self) -> Option<MemberId> {
        if self.yielded == self.len {
            return None;
        }
        let mut best: Option<(usize, f64)> = None;
        for i in 0..self.len {
            if self.taken[i / 64] & (1 << (i % 64)) != 0 {
                continue;
            }
            let score = self.entry(i).1;
            match best {
                Some((_, b)) if score <= b => {}
                _ => best = Some((i, score)),
            }
        }
        let (b, _) = best?;
        self.taken[b / 64] |= 1 << (b % 64);
        self.yielded += 1;
        Some(MemberId(self.entry(b).0))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.yielded;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Ranking {}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RequestUri {
        match crate::normalize::parse_input(s.as_bytes()) {
            crate::normalize::Outcome::Route(r) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn rank_starts_with_select_and_covers_everyone() {
        for mode in [Mode::Squid, Mode::CarpV1, Mode::Hrw] {
            let t = Table::new(
                mode,
                vec![
                    Member::new("a", 1),
                    Member::new("b", 3),
                    Member::new("c", 2),
                    Member::new("d", 1),
                ],
            )
            .unwrap();
            for i in 0..200 {
                let r = url(&format!("http://h{i}.example/x"));
                let ranked: Vec<_> = t.rank(&r).collect();
                assert_eq!(ranked.len(), 4);
                assert_eq!(Some(ranked[0]), t.select(&r, |_| true), "{mode}");
                // the second choice is the best when the first is dead
                assert_eq!(Some(ranked[1]), t.select(&r, |m| m != ranked[0]), "{mode}");
            }
        }
    }

    /// A member name is text; bytes that are not UTF-8 (a squid.conf
    /// `name=lat<0xE9>n1`) are written `\xHH`, and the hash takes the bytes.
    #[test]
    fn names_that_are_not_utf8_are_escaped_and_hashed_as_bytes() {
        for bytes in [
            &b"lat\xe9n1"[..],
            "café".as_bytes(),
            b"a\\x41",
            b"\xff\xfe\\",
            b"",
        ] {
            let name = escape_name(bytes);
            assert_eq!(unescape_name(&name).as_ref(), bytes, "{name}");
        }
        assert_eq!(escape_name(b"lat\xe9n1"), "lat\\xe9n1");
        assert_eq!(escape_name("café".as_bytes()), "café");
        assert_eq!(unescape_name("lat\\xE9n1").as_ref(), b"lat\xe9n1");
        assert_eq!(unescape_name("a\\xg1\\x4").as_ref(), b"a\\xg1\\x4");
        // Squid 5.7's cache manager page: cf9486ea for Latin-1 `latén1`
        let t = Table::new(Mode::Squid, vec![Member::new("lat\\xe9n1", 1)]).unwrap();
        assert_eq!(t.slots[0].carp_hash, 0xcf9486ea);
        // one name, two spellings
        let dup = vec![Member::new("a\\xe9", 1), Member::new("a\\xE9", 1)];
        assert!(matches!(
            Table::new(Mode::Squid, dup),
            Err(TableError::DuplicateName(_))
        ));
    }

    #[test]
    fn table_errors() {
        assert_eq!(
            Table::new(Mode::Hrw, vec![]).unwrap_err(),
            TableError::Empty
        );
        let dup = vec![Member::new("a", 1), Member::new("a", 2)];
        assert!(matches!(
            Table::new(Mode::Hrw, dup),
            Err(TableError::DuplicateName(_))
        ));
        assert!(matches!(
            Table::new(Mode::Hrw, vec![Member::new("a", 0)]),
            Err(TableError::ZeroWeight(_))
        ));
        assert!(Table::new(Mode::Squid, vec![Member::new("a", 0)]).is_ok());
    }
}
