//! The format of the small-object log: segment files that hold many small
//! objects packed one after the other, and the records they hold. Pure:
//! encodes and checks bytes, does no I/O (the log itself is `log.rs`).
//!
//! Segment file (`log/<16 hex id>`): a 32-byte header, then records, each
//! starting at a multiple of 8, up to the segment's size:
//!
//! ```text
//! segment header
//!  0  magic "carpSEG1"             8
//!  8  format version (u32 LE)      4   1
//! 12  zero                         4
//! 16  segment id (u64)             8
//! 24  xxh3-64 of bytes 0..24       8
//!
//! record
//!  0  magic "REC1"                 4
//!  4  kind (u8): 1 object, 2 tombstone; then 3 zero bytes
//!  8  key string length (u32)      4
//! 12  meta length (u32)            4
//! 16  body length (u32)            8   (u64 LE)
//! 24  key (u128 LE)               16
//! 40  publish sequence (u64)       8
//! 48  xxh3-64 of the record        8   bytes 0..48 and the payload, seeded
//!                                      with the segment id and the offset
//! 56  key string, meta, body; zeros up to a multiple of 8
//! ```
//!
//! The checksum's seed ties a record to where it was written: a record read
//! at another offset or in another segment (stale bytes, a body that holds
//! record-like bytes) never checks. A tombstone says "no version of this
//! key up to this publish sequence exists any more": it is how a removal,
//! or the replacement of a logged object by a file, survives a restart.

use super::format::{u32_at, u64_at};
use crate::key::Key;
use std::ops::Range;
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Version of the segment format.
pub(crate) const SEGMENT_VERSION: u32 = 1;
const SEGMENT_MAGIC: [u8; 8] = *b"carpSEG1";
const RECORD_MAGIC: [u8; 4] = *b"REC1";
/// Length of a segment file's header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a record's fixed header.
pub(crate) const RECORD_HEADER_LEN: usize = 56;
/// Records start at multiples of this.
const ALIGN: usize = 8;

/// Why bytes are not a valid segment header or record.
pub(crate) type Invalid = &'static str;

/// A record that runs past the end of its segment file: a write cut short
/// (by a crash), not damage.
pub(crate) const CUT_SHORT: Invalid = "segment ends inside a record";

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A stored object: key string, meta and body.
    Object,
    /// Versions of the key up to `seq` are gone.
    Tombstone,
}

/// A record's fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub kind: Kind,
    pub key: Key,
    pub key_len: u32,
    pub meta_len: u32,
    pub body_len: u64,
    pub seq: u64,
}

impl RecordHeader {
    /// Bytes after the fixed header (key string, meta, body), unpadded.
    pub fn payload_len(&self) -> u64 {
        u64::from(self.key_len) + u64::from(self.meta_len) + self.body_len
    }

    /// Bytes the whole record takes in a segment, padding included.
    pub fn record_len(&self) -> u64 {
        record_len(self.payload_len())
    }

    /// Where the key string, meta and body are, relative to the record's
    /// start.
    pub fn parts(&self) -> (Range<usize>, Range<usize>, Range<usize>) {
        let k = RECORD_HEADER_LEN;
        let m = k + self.key_len as usize;
        let b = m + self.meta_len as usize;
        (k..m, m..b, b..b + self.body_len as usize)
    }
}

/// Bytes a record with a payload of `payload` bytes takes, padding included.
pub(crate) fn record_len(payload: u64) -> u64 {
    (RECORD_HEADER_LEN as u64 + payload).next_multiple_of(ALIGN as u64)
}

/// The checksum seed of a record at `offset` in segment `segment`.
fn seed(segment: u64, offset: u64) -> u64 {
    segment.rotate_left(32) ^ offset ^ 0x9e37_79b9_7f4a_7c15
}

/// A segment file's header.
pub(crate) fn encode_segment_header(id: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&id.to_le_bytes());
    let sum = xxh3_64(&b[..24]);
    b[24..32].copy_from_slice(&sum.to_le_bytes());
    b
}

/// Checks a segment file's header; returns the segment id it names.
pub(crate) fn decode_segment_header(b: &[u8]) -> Result<u64, Invalid> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err("shorter than a segment header");
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err("bad segment magic");
    }
    if u32_at(b, 8) != SEGMENT_VERSION {
        return Err("unknown segment format version");
    }
    if xxh3_64(&b[..24]) != u64_at(b, 24) || u32_at(b, 12) != 0 {
        return Err("segment header checksum mismatch");
    }
    Ok(u64_at(b, 16))
}

/// Appends a record to `out`, which holds a segment's bytes from its
/// offset `base`: the record lands at `base + out.len()` (a multiple of 8).
/// A tombstone has an empty key string, meta and body.
pub(crate) fn append_record(
    out: &mut Vec<u8>,
    segment: u64,
    base: u64,
    h: &RecordHeader,
    key_str: &[u8],
    meta: &[u8],
    body: &[u8],
) {
    let at = out.len();
    let offset = base + at as u64;
    let mut fixed = [0u8; RECORD_HEADER_LEN];
    fixed[0..4].copy_from_slice(&RECORD_MAGIC);
    fixed[4] = match h.kind {
        Kind::Object => 1,
        Kind::Tombstone => 2,
    };
    fixed[8..12].copy_from_slice(&(key_str.len() as u32).to_le_bytes());
    fixed[12..16].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    fixed[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    fixed[24..40].copy_from_slice(&h.key.as_u128().to_le_bytes());
    fixed[40..48].copy_from_slice(&h.seq.to_le_bytes());
    let mut sum = Xxh3::with_seed(seed(segment, offset));
    for part in [&fixed[..48], key_str, meta, body] {
        sum.update(part);
    }
    fixed[48..56].copy_from_slice(&sum.digest().to_le_bytes());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(key_str);
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    let padded = at + record_len((key_str.len() + meta.len() + body.len()) as u64) as usize;
    out.resize(padded, 0);
}

/// Parses the record that starts `b` (read at `offset` of segment
/// `segment`; `b` may run on past the record) and checks it whole.
/// `Ok(None)`: zeros, the end of what was written. [`CUT_SHORT`]: `b` ends
/// before the record does, padding included.
pub(crate) fn decode_record(
    b: &[u8],
    segment: u64,
    offset: u64,
) -> Result<Option<RecordHeader>, Invalid> {
    if b.len() < RECORD_HEADER_LEN {
        return if b.iter().all(|&x| x == 0) {
            Ok(None)
        } else {
            Err(CUT_SHORT)
        };
    }
    if b[0..4] != RECORD_MAGIC {
        return if b[..RECORD_HEADER_LEN].iter().all(|&x| x == 0) {
            Ok(None)
        } else {
            Err("bad record magic")
        };
    }
    let kind = match (b[4], &b[5..8]) {
        (1, [0, 0, 0]) => Kind::Object,
        (2, [0, 0, 0]) => Kind::Tombstone,
        _ => return Err("unknown record kind"),
    };
    let h = RecordHeader {
        kind,
        key_len: u32_at(b, 8),
        meta_len: u32_at(b, 12),
        body_len: u64_at(b, 16),
        key: Key::from_u128(u128::from_le_bytes(
            b[24..40].try_into().map_err(|_| "short record")?,
        )),
        seq: u64_at(b, 40),
    };
    if kind == Kind::Tombstone && (h.key_len, h.meta_len, h.body_len) != (0, 0, 0) {
        return Err("tombstone with a payload");
    }
    let end = u64::from(h.key_len) + u64::from(h.meta_len);
    let Some(payload) = end.checked_add(h.body_len) else {
        return Err("record length out of range");
    };
    // The record with its padding (what the index will say it takes); the
    // payload alone first, so that adding the header cannot overflow.
    if payload > b.len() as u64 || record_len(payload) > b.len() as u64 {
        return Err(CUT_SHORT);
    }
    let payload_end = RECORD_HEADER_LEN + payload as usize;
    let mut sum = Xxh3::with_seed(seed(segment, offset));
    sum.update(&b[..48]);
    sum.update(&b[RECORD_HEADER_LEN..payload_end]);
    if sum.digest() != u64_at(b, 48) {
        return Err("record checksum mismatch");
    }
    Ok(Some(h))
}

/// How a [`walk`] over a segment's records ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The end of the bytes, or zeros there: the end of what was written.
    Written,
    /// The record at `offset` runs past the end of the bytes: a write cut
    /// short (by a stop), not damage.
    CutShort { offset: usize },
    /// The record at `offset` is bad: damage. Nothing after it is read.
    Damage { offset: usize, why: Invalid },
}

/// The records of a segment file's `bytes` (all of them, header included;
/// `id` is the segment's id), checked one after the other from the end of
/// the header, in order: each with its offset. The walk stops at the end
/// of what was written, at a record cut short or at the first bad record,
/// as [`Walk::end`] then says. Pure and allocation-free: this is what the
/// open does with every segment (and what the `disk_segment` fuzz target
/// runs).
pub(crate) fn walk(bytes: &[u8], id: u64) -> Walk<'_> {
    Walk {
        bytes,
        id,
        off: SEGMENT_HEADER_LEN,
        end: None,
    }
}

/// An iterator over a segment's records; see [`walk`].
pub(crate) struct Walk<'a> {
    bytes: &'a [u8],
    id: u64,
    /// Where the next record starts.
    off: usize,
    end: Option<End>,
}

impl Walk<'_> {
    /// How the walk ended; `None` while records may remain.
    pub fn end(&self) -> Option<End> {
        self.end
    }
}

impl Iterator for Walk<'_> {
    type Item = (usize, RecordHeader);

    fn next(&mut self) -> Option<(usize, RecordHeader)> {
        if self.end.is_some() {
            return None;
        }
        let off = self.off;
        if off >= self.bytes.len() {
            self.end = Some(End::Written);
            return None;
        }
        match decode_record(&self.bytes[off..], self.id, off as u64) {
            Ok(Some(h)) => {
                // (within the bytes, padding included: decode_record checked)
                self.off = off + h.record_len() as usize;
                Some((off, h))
            }
            Ok(None) => {
                self.end = Some(End::Written);
                None
            }
            Err(CUT_SHORT) => {
                self.end = Some(End::CutShort { offset: off });
                None
            }
            Err(why) => {
                self.end = Some(End::Damage { offset: off, why });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(seq: u64) -> RecordHeader {
        RecordHeader {
            kind: Kind::Object,
            key: Key::of(b"http://a/"),
            key_len: 9,
            meta_len: 3,
            body_len: 5,
            seq,
        }
    }

    #[test]
    fn records_round_trip_aligned_and_every_bit_counts() {
        let mut seg = Vec::new();
        let h = object(7);
        append_record(&mut seg, 3, 32, &h, b"http://a/", b"m12", b"hello");
        assert_eq!(seg.len() as u64, h.record_len());
        assert_eq!(seg.len() % 8, 0);
        let t = RecordHeader {
            kind: Kind::Tombstone,
            key_len: 0,
            meta_len: 0,
            body_len: 0,
            ..h
        };
        append_record(&mut seg, 3, 32, &t, b"", b"", b"");
        assert_eq!(decode_record(&seg, 3, 32), Ok(Some(h)));
        let (k, m, b) = h.parts();
        assert_eq!(
            (&seg[k], &seg[m], &seg[b]),
            (&b"http://a/"[..], &b"m12"[..], &b"hello"[..])
        );
        let second = h.record_len() as usize;
        assert_eq!(
            decode_record(&seg[second..], 3, 32 + second as u64),
            Ok(Some(t))
        );
        // The end of what was written reads as zeros.
        assert_eq!(decode_record(&[0u8; 100], 3, 0), Ok(None));
        assert_eq!(decode_record(&[0u8; 10], 3, 0), Ok(None));
        // Elsewhere (offset or segment), the same bytes do not check.
        assert!(decode_record(&seg, 3, 40).is_err());
        assert!(decode_record(&seg, 4, 32).is_err());
        for at in 0..h.parts().2.end {
            for bit in [0x01, 0x80] {
                let mut bad = seg.clone();
                bad[at] ^= bit;
                assert!(decode_record(&bad, 3, 32).is_err(), "byte {at} bit {bit}");
            }
        }
        assert!(decode_record(&seg[..40], 3, 32).is_err());
    }

    #[test]
    fn segment_headers_check() {
        let b = encode_segment_header(42);
        assert_eq!(decode_segment_header(&b), Ok(42));
        for at in 0..SEGMENT_HEADER_LEN {
            let mut bad = b;
            bad[at] ^= 4;
            assert!(decode_segment_header(&bad).is_err(), "byte {at}");
        }
        assert!(decode_segment_header(&b[..20]).is_err());
    }

    #[test]
    fn a_walk_returns_the_records_up_to_the_end_a_cut_or_damage() {
        let id = 9;
        let tomb = RecordHeader {
            kind: Kind::Tombstone,
            key_len: 0,
            meta_len: 0,
            body_len: 0,
            ..object(2)
        };
        let mut seg = encode_segment_header(id).to_vec();
        let mut all = Vec::new();
        for (h, key_str, meta, body) in [
            (object(1), &b"http://a/"[..], &b"m12"[..], &b"hello"[..]),
            (tomb, b"", b"", b""),
            (object(3), b"http://a/", b"m34", b"world"),
        ] {
            all.push((seg.len(), h));
            append_record(&mut seg, id, 0, &h, key_str, meta, body);
        }
        let last = all[2].0;
        let run = |b: &[u8], id| {
            let mut w = walk(b, id);
            let found: Vec<_> = w.by_ref().collect();
            (found, w.end())
        };
        assert_eq!(run(&seg, id), (all.clone(), Some(End::Written)));
        // Zeros after the last record: the end of what was written.
        let mut zeros = seg.clone();
        zeros.resize(seg.len() + 100, 0);
        assert_eq!(run(&zeros, id), (all.clone(), Some(End::Written)));
        assert_eq!(run(&seg[..32], id), (vec![], Some(End::Written)));
        // Cut inside the last record's header or payload.
        for cut in last + 1..last + RECORD_HEADER_LEN + 17 {
            let end = Some(End::CutShort { offset: last });
            assert_eq!(
                run(&seg[..cut], id),
                (all[..2].to_vec(), end),
                "cut at {cut}"
            );
        }
        // A byte flipped in the tombstone: damage there, nothing after it.
        let mut bad = seg.clone();
        bad[all[1].0 + 40] ^= 1;
        let damage = |offset| {
            Some(End::Damage {
                offset,
                why: "record checksum mismatch",
            })
        };
        assert_eq!(run(&bad, id), (all[..1].to_vec(), damage(all[1].0)));
        // The records belong to their segment.
        assert_eq!(run(&seg, id + 1), (vec![], damage(32)));
    }

    #[test]
    fn a_record_whose_padding_is_cut_off_was_cut_short() {
        // Found by the disk_segment fuzz target: a file that ends in the
        // zeros after a record's body (a write cut short there) gave a
        // record that the open indexed with its padded length, which the
        // first read then found "shorter than its index says" (corrupt).
        let mut seg = encode_segment_header(5).to_vec();
        let h = object(1);
        append_record(&mut seg, 5, 0, &h, b"http://a/", b"m12", b"hello");
        let body_end = 32 + h.parts().2.end;
        assert!(body_end < seg.len(), "the record has padding");
        for cut in body_end..seg.len() {
            let mut w = walk(&seg[..cut], 5);
            assert_eq!(w.next(), None, "cut at {cut}");
            assert_eq!(w.end(), Some(End::CutShort { offset: 32 }), "cut at {cut}");
            assert_eq!(decode_record(&seg[32..cut], 5, 32), Err(CUT_SHORT));
        }
        assert_eq!(walk(&seg, 5).count(), 1);
    }

    #[test]
    fn lengths_that_overflow_with_the_header_are_cut_short_not_a_panic() {
        // Found by the disk_segment fuzz target: a payload length that does
        // not overflow u64 alone, but does with the fixed header added
        // (and padding), panicked (debug) or sliced out of bounds (release).
        let mut seg = encode_segment_header(2).to_vec();
        let h = RecordHeader {
            key_len: 0,
            meta_len: 0,
            body_len: 0,
            ..object(1)
        };
        append_record(&mut seg, 2, 0, &h, b"", b"", b"");
        for body in [u64::MAX, u64::MAX - 49, u64::MAX - 55, u64::MAX - 62] {
            let mut bad = seg.clone();
            bad[32 + 16..32 + 24].copy_from_slice(&body.to_le_bytes());
            assert_eq!(decode_record(&bad[32..], 2, 32), Err(CUT_SHORT), "{body}");
            let mut w = walk(&bad, 2);
            assert_eq!(w.next(), None);
            assert_eq!(w.end(), Some(End::CutShort { offset: 32 }));
        }
    }

    #[test]
    fn a_tombstone_with_lengths_over_u64_is_refused_not_a_panic() {
        // Found by the disk_segment fuzz target: the tombstone check added
        // the lengths before they were checked for overflow (a panic in
        // debug builds; in release they wrapped, to 0 for some).
        let t = RecordHeader {
            kind: Kind::Tombstone,
            key_len: 0,
            meta_len: 0,
            body_len: 0,
            ..object(1)
        };
        let mut seg = Vec::new();
        append_record(&mut seg, 1, 0, &t, b"", b"", b"");
        for (key_len, body_len) in [(1, u64::MAX), (u32::MAX, u64::MAX - 7), (0, u64::MAX)] {
            let mut bad = seg.clone();
            bad[8..12].copy_from_slice(&key_len.to_le_bytes());
            bad[16..24].copy_from_slice(&body_len.to_le_bytes());
            assert_eq!(
                decode_record(&bad, 1, 0),
                Err("tombstone with a payload"),
                "{key_len} {body_len}"
            );
        }
    }

    #[test]
    fn huge_lengths_are_refused_not_allocated() {
        let mut seg = Vec::new();
        append_record(&mut seg, 1, 0, &object(1), b"http://a/", b"m12", b"hello");
        seg[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_record(&seg, 1, 0).is_err());
    }
}
