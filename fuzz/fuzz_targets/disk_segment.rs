//! The small-object log's segment decoder: `cache_store::fuzzing::walk_segment`,
//! the walk the store's open runs over every segment file
//! (`segment::walk` in `crates/cache-store/src/disk/segment.rs`), with the
//! log's own record encoder (`append_segment_record`).
//!
//! Input: one byte of options, then the rest.
//!
//! Bit 7 clear: the rest is a segment file, walked as the segment its
//! header names (bytes 16..24; 0 when shorter). Bit 1 first recomputes the
//! checksum of each record, with the log's encoder, as far as their lengths
//! chain within the bytes, so that mutations reach the checks behind it;
//! bit 2 also walks the bytes as another segment.
//!
//! Bit 7 set: the rest drives a model. A segment is built with the log's
//! encoder from a list of records (each: kind, key string, meta, body,
//! publish sequence; lengths and contents from the input), then, as the
//! options say, zeros are appended (bit 6: a file extended without its
//! data, as after a crash), a byte is xored (bit 0, at a position from the
//! input) and the file is truncated (bit 1, at a position from the input).
//!
//! Properties, on any bytes: the walk does not panic and allocates nothing;
//! every record it accepts lies within the bytes (padding included), starts
//! at a multiple of 8, the first at 32 and each where the previous one ends;
//! each, re-encoded by the log's encoder at its offset from the parts it
//! holds, gives exactly its bytes (header and payload: the padding, zeros as
//! written, is outside the checksum and not checked); the walk stops where
//! the last record ends, saying "written" only at the end of the bytes or
//! before zeros, "cut short" only when the record there claims more bytes
//! than are left; no record is accepted in another segment.
//!
//! Model: the walk returns exactly the records before the first one cut or
//! changed. It ends "written" when the file ends where a record does (or
//! zeros follow); "cut short" when it ends inside a record, or when fewer
//! than 56 bytes follow the last record and they are not all zeros (only a
//! header written in part can be there); "damage" when a byte of a record
//! (not of its padding) or of the 56 bytes after the last record was
//! changed, except that a length changed so that the record claims more
//! than the file holds cannot be told from a record cut short (the
//! checksum is after the payload): either is right then.
#![no_main]

use cache_store::fuzzing::{
    append_segment_record, segment_header, segment_id, walk_segment, SegmentEnd, SegmentRecord,
    SEGMENT_HEADER,
};
use cache_store::Key;
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Length of a record's fixed header.
const RECORD_HEADER: usize = 56;

/// Counts allocations, to check that the walk makes none.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: passes every call on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let [opts, rest @ ..] = data else {
        return;
    };
    if opts & 0x80 == 0 {
        raw(rest, *opts);
    } else {
        model(rest, *opts);
    }
});

/// The parts (key string, meta, body) of the record at `off`, whose header
/// is at least there; `None` when they run past the end of `b`.
fn parts(b: &[u8], off: usize) -> Option<(&[u8], &[u8], &[u8])> {
    let (k, m) = (u32_at(b, off + 8) as u64, u32_at(b, off + 12) as u64);
    let body = u64_at(b, off + 16);
    let start = (off + RECORD_HEADER) as u128;
    if start + k as u128 + m as u128 + body as u128 > b.len() as u128 {
        return None;
    }
    let rec = &b[off + RECORD_HEADER..];
    let (k, m) = (k as usize, m as usize);
    Some((
        &rec[..k],
        &rec[k..k + m],
        &rec[k + m..k + m + body as usize],
    ))
}

/// Where the record whose header is at `off` claims to end, padding
/// included (u128: no overflow whatever the lengths).
fn claimed_end(b: &[u8], off: usize) -> u128 {
    let payload = u128::from(u32_at(b, off + 8)) + u128::from(u32_at(b, off + 12));
    let payload = payload + u128::from(u64_at(b, off + 16));
    (off + RECORD_HEADER) as u128 + payload.next_multiple_of(8)
}

/// Re-encodes the record at `off` as the log writes it, from the header
/// fields and parts found there.
fn reencode(b: &[u8], off: usize, id: u64) -> Option<Vec<u8>> {
    let (key_str, meta, body) = parts(b, off)?;
    let key = Key::from_u128(u128::from_le_bytes(
        b[off + 24..off + 40].try_into().unwrap(),
    ));
    let mut v = Vec::new();
    let tombstone = b[off + 4] == 2;
    append_segment_record(
        &mut v,
        id,
        off as u64,
        tombstone,
        key,
        u64_at(b, off + 40),
        key_str,
        meta,
        body,
    );
    Some(v)
}

/// Runs the walk over `b` as segment `id` and checks what holds for any
/// bytes; returns what it found.
fn checked_walk(b: &[u8], id: u64) -> (Vec<SegmentRecord>, SegmentEnd) {
    // Room for every record there can be, so that pushing allocates not.
    let mut found = Vec::with_capacity(b.len() / RECORD_HEADER + 1);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut w = walk_segment(b, id);
    assert_eq!(w.end(), None, "ended before it started");
    for r in w.by_ref() {
        found.push(r);
    }
    let end = w.end().expect("a walk that returned everything has ended");
    assert!(w.next().is_none(), "records after the end");
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        before,
        "the walk allocated"
    );
    let mut at = SEGMENT_HEADER;
    for r in &found {
        assert_eq!(r.offset, at, "records follow one another from 32: {r:?}");
        assert_eq!(r.offset % 8, 0, "{r:?}");
        let payload = u64::from(r.key_len) + u64::from(r.meta_len) + r.body_len;
        assert_eq!(r.len, (RECORD_HEADER as u64 + payload).next_multiple_of(8));
        assert!(!r.tombstone || payload == 0, "a tombstone with a payload");
        assert!(
            r.offset as u64 + r.len <= b.len() as u64,
            "a record runs past the end of the bytes ({}): {r:?}",
            b.len()
        );
        // Its header and payload; not the zeros after it, which the format
        // leaves out of the checksum and the decoder does not check (they
        // carry nothing: a reader gets the parts only).
        let again = reencode(b, r.offset, id).expect("its parts are within the bytes");
        let whole = RECORD_HEADER + payload as usize;
        assert_eq!(
            again[..whole],
            b[r.offset..r.offset + whole],
            "re-encoded, the record at {} differs",
            r.offset
        );
        assert_eq!(again.len() as u64, r.len);
        at += r.len as usize;
    }
    match end {
        SegmentEnd::Written => assert!(
            b.get(at..)
                .is_none_or(|t| t.iter().take(RECORD_HEADER).all(|&x| x == 0)),
            "'written' at {at} before other bytes than zeros"
        ),
        SegmentEnd::CutShort { offset } | SegmentEnd::Damage { offset, .. } => {
            assert_eq!(
                offset, at,
                "the walk stopped elsewhere than after its last record"
            );
            assert!(at < b.len());
        }
    }
    if let SegmentEnd::CutShort { offset } = end {
        // the record there claims more bytes than are left
        assert!(
            b.len() - offset < RECORD_HEADER || claimed_end(b, offset) > b.len() as u128,
            "cut short, with the whole record there"
        );
    }
    (found, end)
}

/// Bit 1: each record's checksum recomputed, as far as records chain.
fn reseal(b: &mut [u8], id: u64) {
    let mut off = SEGMENT_HEADER;
    while off + RECORD_HEADER <= b.len() {
        let Some(again) = reencode(b, off, id) else {
            break;
        };
        b[off + 48..off + 56].copy_from_slice(&again[48..56]);
        off += again.len();
    }
}

fn raw(bytes: &[u8], opts: u8) {
    let mut b = bytes.to_vec();
    let id = b.get(16..24).map_or(0, |x| u64_at(x, 0));
    if opts & 2 != 0 {
        reseal(&mut b, id);
    }
    if let Ok(named) = segment_id(&b) {
        assert_eq!(named, id);
    }
    checked_walk(&b, id);
    if opts & 4 != 0 {
        // Not one record checks in another segment.
        let other = id ^ (1 << (opts >> 3 & 63));
        let (found, _) = checked_walk(&b, other);
        assert!(found.is_empty(), "records of {id} accepted in {other}");
    }
}

/// Reads the model's numbers from the input; zeros once it is used up.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&x, rest)) => {
                self.0 = rest;
                x
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

/// What the model expects the walk to end with.
#[derive(Debug)]
enum Expect {
    Written,
    CutShort(usize),
    Damage(usize),
    /// A record both cut and changed: either.
    CutShortOrDamage(usize),
}

fn model(data: &[u8], opts: u8) {
    let mut c = Cursor(data);
    let id = u64::from(c.u16());
    let mut seg = segment_header(id).to_vec();
    let mut want = Vec::new();
    for _ in 0..c.byte() % 8 {
        let flags = c.byte();
        let tombstone = flags & 1 != 0;
        let (k, m, b) = if tombstone {
            (0, 0, 0)
        } else {
            (c.byte() % 64, c.byte(), c.u16() % 2048)
        };
        let fill = c.byte();
        let key_str: Vec<u8> = (0..k).map(|j| b'a' + (fill.wrapping_add(j) % 26)).collect();
        let meta: Vec<u8> = (0..m).map(|j| fill ^ j.wrapping_mul(31)).collect();
        let body: Vec<u8> = (0..b).map(|j| fill.wrapping_add(j as u8)).collect();
        let key = if tombstone {
            Key::of(&[fill])
        } else {
            Key::of(&key_str)
        };
        let seq = u64::from(c.u32());
        let offset = seg.len();
        append_segment_record(&mut seg, id, 0, tombstone, key, seq, &key_str, &meta, &body);
        want.push(SegmentRecord {
            offset,
            tombstone,
            key,
            key_len: key_str.len() as u32,
            meta_len: meta.len() as u32,
            body_len: body.len() as u64,
            seq,
            len: (seg.len() - offset) as u64,
        });
    }
    // As written, the walk finds every record.
    assert_eq!(checked_walk(&seg, id), (want.clone(), SegmentEnd::Written));
    let records_end = seg.len();
    if opts & 0x40 != 0 {
        seg.resize(seg.len() + usize::from(c.byte()), 0);
    }
    let flip = (opts & 1 != 0).then(|| {
        let at = c.u32() as usize % seg.len();
        seg[at] ^= c.byte().max(1);
        at
    });
    if opts & 2 != 0 {
        let len = c.u32() as usize % (seg.len() + 1);
        seg.truncate(len);
    }
    let len = seg.len();
    let flipped = |r: std::ops::Range<usize>| flip.is_some_and(|at| r.contains(&at) && at < len);

    assert_eq!(
        segment_id(&seg).ok(),
        (len >= SEGMENT_HEADER && !flipped(0..SEGMENT_HEADER)).then_some(id),
        "the segment header"
    );

    // The records before the first one cut or changed, then how it ends.
    let mut kept = Vec::new();
    let mut expect = None;
    for r in &want {
        let end = r.offset + r.len as usize;
        // (a changed byte of padding changes nothing: see checked_walk)
        let payload = r.key_len as usize + r.meta_len as usize + r.body_len as usize;
        let payload_end = r.offset + RECORD_HEADER + payload;
        let (cut, changed) = (end > len, flipped(r.offset..payload_end));
        // A length changed so that the record claims more than the file
        // holds: a record cut short, as far as the format can tell (its
        // checksum is after its payload).
        let longer =
            || flipped(r.offset + 8..r.offset + 24) && claimed_end(&seg, r.offset) > len as u128;
        expect = match (cut, changed) {
            _ if r.offset >= len => Some(Expect::Written),
            (true, true) => Some(Expect::CutShortOrDamage(r.offset)),
            (false, true) if longer() => Some(Expect::CutShortOrDamage(r.offset)),
            (true, false) => Some(Expect::CutShort(r.offset)),
            (false, true) => Some(Expect::Damage(r.offset)),
            (false, false) => None,
        };
        if expect.is_some() {
            break;
        }
        kept.push(*r);
    }
    let expect = expect.unwrap_or_else(|| {
        // After the last record: zeros, one of them maybe changed. Fewer
        // bytes than a record header, not all zeros, can only be a header
        // written in part (a write cut short), whatever they hold.
        if !flipped(records_end..records_end + RECORD_HEADER) {
            Expect::Written
        } else if len - records_end < RECORD_HEADER {
            Expect::CutShort(records_end)
        } else {
            Expect::Damage(records_end)
        }
    });
    let (found, end) = checked_walk(&seg, id);
    assert_eq!(found, kept, "the records before the first damaged one");
    let ok = match (&expect, end) {
        (Expect::Written, SegmentEnd::Written) => true,
        (Expect::CutShort(at), SegmentEnd::CutShort { offset }) => *at == offset,
        (Expect::Damage(at), SegmentEnd::Damage { offset, .. }) => *at == offset,
        (
            Expect::CutShortOrDamage(at),
            SegmentEnd::CutShort { offset } | SegmentEnd::Damage { offset, .. },
        ) => *at == offset,
        _ => false,
    };
    assert!(ok, "expected {expect:?}, the walk ended {end:?}");
}
