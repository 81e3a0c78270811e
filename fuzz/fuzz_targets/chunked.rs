//! Chunked transfer decoding (`httpx::chunked::ChunkedChecker`), as the
//! relays and the cache's body decoder drive it: fed whatever each read
//! returned.
//!
//! Input: one byte seeding how the body is split, then the body bytes.
//!
//! Properties:
//! - fed in random pieces, or byte by byte, the checker gives the same
//!   answer as fed in one piece: the same error, or the same body end and
//!   the same decoded data, or "not done yet";
//! - a body it accepts ends in CRLF, and the decoded data, chunked again in
//!   other pieces, decodes to the same.
#![no_main]

use httpx::chunked::{ChunkError, ChunkedChecker};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Bytes that belong to the body (all of the input unless it ended).
    consumed: usize,
    done: bool,
    error: Option<ChunkError>,
    decoded: Vec<u8>,
}

fn run(body: &[u8], mut next_len: impl FnMut() -> usize) -> Outcome {
    let mut c = ChunkedChecker::new();
    let mut decoded = Vec::new();
    let mut at = 0;
    while at < body.len() && !c.is_done() {
        let piece = &body[at..(at + next_len()).min(body.len())];
        match c.feed_with(piece, |d| decoded.extend_from_slice(d)) {
            Ok(n) => {
                assert!(n <= piece.len());
                assert!(
                    n == piece.len() || c.is_done(),
                    "stopped early but not done"
                );
                at += n;
            }
            Err(e) => {
                return Outcome {
                    consumed: at,
                    done: false,
                    error: Some(e),
                    decoded,
                }
            }
        }
    }
    Outcome {
        consumed: at,
        done: c.is_done(),
        error: None,
        decoded,
    }
}

/// xorshift, for split lengths.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fuzz_target!(|data: &[u8]| {
    let [seed, body @ ..] = data else {
        return;
    };
    let one = run(body, || usize::MAX);
    // an error is found wherever it is, so "consumed" may differ: compare
    // the error itself and the data decoded before it only up to a prefix
    let mut rng = Rng(u64::from(*seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let max = 1 + usize::from(*seed % 16);
    let pieces = run(body, || 1 + (rng.next() as usize % max));
    let bytes = run(body, || 1);
    for other in [&pieces, &bytes] {
        assert_eq!(one.error, other.error);
        assert_eq!(one.done, other.done);
        assert_eq!(one.decoded, other.decoded);
        if one.error.is_none() {
            assert_eq!(one.consumed, other.consumed);
        }
    }
    if !one.done {
        if one.error.is_none() {
            assert_eq!(one.consumed, body.len(), "not done, yet input left over");
        }
        return;
    }
    let end = &body[..one.consumed];
    assert!(end.ends_with(b"\r\n"), "a body ends with CRLF");
    assert!(end.len() >= 5, "0 CRLF CRLF at the least");

    // the decoded data chunked again, in other pieces, decodes to the same
    let mut again = Vec::new();
    let mut rest = &one.decoded[..];
    while !rest.is_empty() {
        let n = (1 + rng.next() as usize % 300).min(rest.len());
        again.extend_from_slice(format!("{n:X};x=y\r\n").as_bytes());
        again.extend_from_slice(&rest[..n]);
        again.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    again.extend_from_slice(b"0\r\nTrailer: t\r\n\r\n");
    let re = run(&again, || 1 + (rng.next() as usize % 64));
    assert!(re.done && re.error.is_none(), "{re:?}");
    assert_eq!(re.consumed, again.len());
    assert_eq!(re.decoded, one.decoded);
});
