//! Counters the store reports: per-tier contents, hits and evictions, and
//! the progress of the index rebuild at open.

/// Contents and activity of one tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Objects held.
    pub objects: u64,
    /// Bytes held (memory: body + meta + key string; disk: object file
    /// sizes rounded up to 4 KiB blocks, and the length of each small
    /// object's record in the log).
    pub bytes: u64,
    /// Lookups answered from this tier.
    pub hits: u64,
    /// Objects evicted to stay within the budget.
    pub evictions: u64,
    /// The tier's budget in bytes (0 without the tier).
    pub capacity: u64,
}

/// A snapshot of the store's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The memory tier.
    pub memory: TierStats,
    /// The disk tier (all zero without one).
    pub disk: TierStats,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Disk objects dropped because a check failed (header, length,
    /// structure, block table, a body block's checksum), at open or when
    /// read.
    pub dropped_corrupt: u64,
    /// Disk bytes reserved by objects being written (counted against the
    /// disk budget, not yet in `disk.bytes`).
    pub disk_writing_bytes: u64,
    /// Everything counted against the disk budget: object files and
    /// sidecars, the log's segments whole (records of objects replaced or
    /// removed since included, until their segment is evicted), and
    /// `disk_writing_bytes`.
    pub disk_used_bytes: u64,
}

/// Progress of the disk index rebuild, reported while [`crate::Store::open`]
/// scans the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenProgress {
    /// Object files and log records looked at so far.
    pub scanned: u64,
    /// Objects kept so far.
    pub objects: u64,
    /// Bytes of the objects kept so far.
    pub bytes: u64,
    /// Files dropped as corrupt so far.
    pub dropped: u64,
    /// Bodies whose checksums were checked, good or bad (objects published
    /// after the last checkpoint of an unclean shutdown).
    pub verified: u64,
    /// Objects of the older format (version 1) discarded because their
    /// body is too large to be checked when read (over 8 MiB); not counted
    /// in `dropped`.
    pub outdated: u64,
    /// The last report: the scan is complete.
    pub done: bool,
}
