//! What is known of one object version's body while it is being checked:
//! which blocks were read and found sound, shared by every reader of that
//! version through its index entry (`index::Check::Partly`), and whether a
//! block failed. No I/O: the checking is `verify.rs`'s.

use super::format::Header;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The blocks of one object version checked so far.
pub(crate) struct Marks {
    pub(crate) header: Header,
    pub(crate) sums: Box<[u64]>,
    /// One bit per block: checked and sound.
    pub(crate) done: Box<[AtomicU64]>,
    /// Blocks not checked yet.
    pub(crate) left: AtomicU64,
    /// A block failed: nothing more of this version may be served.
    pub(crate) failed: AtomicBool,
}

impl std::fmt::Debug for Marks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Marks")
            .field("seq", &self.header.seq)
            .field("blocks", &self.sums.len())
            .field("checked", &self.checked())
            .finish()
    }
}

impl Marks {
    /// Nothing checked yet of the body `header` describes, whose block sums
    /// are `sums` (one per block).
    pub fn new(header: Header, sums: Vec<u64>) -> Marks {
        let n = sums.len() as u64;
        Marks {
            header,
            sums: sums.into(),
            done: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            left: AtomicU64::new(n),
            failed: AtomicBool::new(false),
        }
    }

    /// Every block was checked and is sound.
    pub fn complete(&self) -> bool {
        self.left.load(Ordering::Acquire) == 0
    }

    pub(crate) fn is_done(&self, i: u64) -> bool {
        self.done[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Marks block `i` checked; true when that completed the body.
    pub(crate) fn mark(&self, i: u64) -> bool {
        let bit = 1 << (i % 64);
        let old = self.done[(i / 64) as usize].fetch_or(bit, Ordering::AcqRel);
        old & bit == 0 && self.left.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Blocks checked so far.
    pub(crate) fn checked(&self) -> u64 {
        self.sums.len() as u64 - self.left.load(Ordering::Relaxed)
    }
}
