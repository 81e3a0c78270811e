//! The store's error type: every failure names the file or directory it
//! concerns.

use std::io;
use std::path::PathBuf;

/// An error of the storage tiers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done ("create", "rename", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system error: part of the message, not a separate `source`,
        /// so that a report of the error chain says it once.
        error: io::Error,
    },
    /// Another process (or another `Store` in this one) has the directory open.
    #[error(
        "cache directory {} is in use by another process (lock {} is held); stop it or give this one another directory",
        dir.display(),
        dir.join(crate::disk::format::LOCK_FILE).display()
    )]
    Locked {
        /// The cache directory.
        dir: PathBuf,
    },
    /// The object grew past the size limit.
    #[error("object too large: {attempted} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in force for this object.
        limit: u64,
        /// The size the write would have reached.
        attempted: u64,
    },
    /// The body's length differs from the length announced at `begin`.
    #[error("body length mismatch: {expected} bytes announced, {written} written")]
    LengthMismatch {
        /// The announced length.
        expected: u64,
        /// The length written (or that the write would have reached).
        written: u64,
    },
    /// The disk tier cannot make room: everything left is being written.
    #[error("disk cache {} is full: {needed} more bytes needed and nothing left to evict", dir.display())]
    DiskFull {
        /// The cache directory.
        dir: PathBuf,
        /// Bytes that could not be reserved.
        needed: u64,
    },
    /// The key string is longer than the format allows.
    #[error("key string of {len} bytes exceeds the limit of {limit}")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The metadata is larger than the format allows.
    #[error("metadata of {len} bytes exceeds the limit of {limit}")]
    MetaTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The store was closed: no new objects are accepted.
    #[error("the store is closed")]
    Closed,
    /// The configuration cannot work.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// An I/O error with its operation and path.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, error: io::Error) -> Self {
        StoreError::Io {
            what,
            path: path.into(),
            error,
        }
    }
}
