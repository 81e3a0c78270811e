//! Storage tiers of carpool's HTTP cache: a byte-bounded memory tier and a
//! persistent, crash-safe, byte-bounded disk tier, written by streaming and
//! read by position. It stores opaque bytes — a key string, a meta blob and
//! a body — and knows nothing of HTTP (freshness, Vary, Range, collapsed
//! forwarding belong to the caller).
//!
//! ```
//! use cache_store::{Key, Store, StoreConfig};
//!
//! let store = Store::open(StoreConfig::default(), |_| {})?;
//! let url = b"http://example.com/logo.png";
//! let mut w = store.begin(Key::of(url), url, b"200 image/png", Some(5))?;
//! let early = w.reader(); // what other tasks read while the body arrives
//! w.append(b"hel")?;
//! w.append(b"lo")?;
//! assert_eq!(early.written(), 5);
//! w.finish()?;
//! let hit = store.lookup(Key::of(url), url).expect("stored");
//! let mut buf = [0u8; 5];
//! hit.body.read_at(0, &mut buf)?;
//! assert_eq!((&hit.meta[..], &buf), (&b"200 image/png"[..], b"hello"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Tiers
//!
//! **Memory** (`memory`): whole objects in a [quick_cache] weighted cache,
//! each weighed as body + meta + key string, bounded by `mem_bytes`; bodies
//! over `mem_max_object` never enter. quick_cache was chosen by measurement
//! (`benches/memory_tier.rs`: 1 KiB values, 95% of lookups on a Zipf-like
//! hot set that fits, 5% one-off keys) against moka and foyer: medians of two
//! runs, about 2× foyer's and 5× moka's lookups per second on one thread and
//! on two, with the best hit ratio of the three (0.97).
//!
//! **Disk** (`disk`): small objects packed into a log, larger ones a file
//! each.
//!
//! *The log* (`disk/log.rs`, format in `disk/segment.rs`): an object whose
//! record — key string, meta, body and a 56-byte header — takes at most
//! [`DiskConfig::small_object`] bytes (default 32 KiB) is appended to the
//! active segment `dir/log/<16 hex id>` (segments are 1/32 of the budget,
//! 256 KiB to 16 MiB). Records are gathered in memory and written with one
//! positional write per 256 KiB, per 100 ms, and before every sync: storing
//! a small object costs no file creation, rename or unlink. Each record
//! carries an xxh3-64 seeded with its segment and offset, checked whenever
//! it is read; at open every segment is read whole, every record checked
//! (a segment is kept up to its first bad record). Segments are evicted
//! whole, oldest first. A removal (or the replacement of a logged object by
//! a file) appends a tombstone, written out at once, so the removed version
//! never comes back after a restart; a meta refresh appends the record
//! again with the new meta (same version). A body of unknown length that
//! outgrows the log moves to a file, readers of its partial body following
//! it. One million 200-byte objects with 100-byte meta take 1.17x their
//! stored bytes on the file system and are indexed again in under a second
//! (`examples/small_objects.rs`).
//!
//! *Object files* (`dir/objects/XX/<key hex>`, format in
//! `disk/format.rs`): a header (magic, version, key, lengths, publish
//! sequence, block size, the checksum of the block table, and an xxh3-64 of
//! the header, key string and meta), then the key string, the meta, the
//! body, and the block table: one xxh3-64 per 256 KiB block of the body. An
//! object is written to `dir/tmp/` and published by `rename(2)`, so a lookup
//! sees a whole object or none. Bodies small enough for the memory tier
//! found on disk are read whole, every block checked, and copied into
//! memory; larger ones are served as an open file ([`DiskBody`]: positional
//! reads or `sendfile(2)` from [`DiskBody::body_offset`]), never read
//! whole. An open `DiskBody` keeps working when its object is evicted,
//! replaced or removed.
//!
//! **Block checks.** A large body found on disk at open is checked block
//! by block before its bytes are served ([`DiskBody::check`]; `read_at`
//! does it itself, a caller that uses `sendfile(2)` calls it for each range
//! first): only the blocks a read covers, each once per object (the index
//! entry shares what was checked among readers); once every block was
//! checked, lookups return bodies with nothing left to check
//! ([`DiskBody::is_checked`]), so steady-state hits cost no extra I/O. A
//! block that fails drops the object (index and file), is logged with the
//! key and the block, counts in [`Stats::dropped_corrupt`], and fails the
//! read with `InvalidData`. Objects written by this run are trusted.
//! Version 1 files (before block checksums, one xxh3-64 of the whole body)
//! are read as one block, checked whole when first read; those over 8 MiB
//! are discarded at open with one warning ([`OpenProgress::outdated`]).
//!
//! **Meta refresh** ([`Store::update_meta`], a 304): the new meta goes into a
//! small sidecar `<key hex>.m` (magic, the object's publish sequence, meta,
//! checksum) published by rename; the body file is not touched, so the cost
//! is O(meta) whatever the body size. A sidecar names the version it belongs
//! to, so one left over from a replaced object is ignored and deleted.
//! [`Store::update_meta_if`] applies the refresh only to the version the
//! caller validated ([`Hit::version`]).
//!
//! # Space and eviction
//!
//! Disk usage is counted against `max_bytes`: object files and sidecars in
//! 4 KiB blocks, log records by their length (a segment's space, records of
//! replaced objects included, returns when the segment is evicted), plus
//! the space each writer reserves before its bytes reach the disk. So the
//! directory stays under `max_bytes` while objects are being written; a
//! writer that would cross the limit evicts first, and fails with
//! [`StoreError::DiskFull`] only when everything left is being written. A
//! background thread evicts from 95% down to 90% of the limit. Object files
//! are evicted LRU by last access (publish or lookup): each index shard
//! keeps its files in access order. Log segments go whole, oldest first,
//! dated by when they were sealed; the victim is whichever is older, the
//! least recently used file or the oldest segment. After a restart, recency
//! starts from publish order.
//!
//! # Crash safety
//!
//! - **Process killed (`kill -9`) at any moment.** A partial object file is
//!   only ever a file in `tmp/`, deleted at the next open; publishing is one
//!   atomic rename; the page cache keeps every completed write. A log
//!   record cut short is found by its checksum or length and ignored.
//!   Nothing visible is ever partial (tested with real SIGKILLs). Small
//!   objects published in the last 100 ms before the kill (still in the
//!   log's buffer) are lost: they are misses after the restart, or the
//!   version they replaced is found again (whole, as it was stored).
//!   Removals are written out at once and stay removed.
//! - **Power loss.** Renamed files may reach the disk before their data
//!   blocks, leaving objects with holes or zeros. A background thread calls
//!   `syncfs(2)` every `sync_interval` (when something was published) and
//!   then records a checkpoint: the publish sequence below which every
//!   object is durable, written atomically (temp file, fsync, rename, fsync
//!   of the directory). Publishers hold a gate from taking their sequence to
//!   finishing their rename, and the checkpoint reads the clock through that
//!   gate, so "below the checkpoint" really means "renamed before the sync".
//!   [`Store::close`] syncs and records a checkpoint marked clean; open
//!   immediately replaces it with an unclean one before anything is
//!   written.
//! - **At open** every log record is read and checked whole (a segment is
//!   kept up to its first bad record, which is counted unless the file ends
//!   inside it: a write cut short), and every object file's header is read
//!   and checked (magic, version,
//!   key against the file name, checksum, file length against the header).
//!   After an unclean shutdown (no clean mark), objects published at or
//!   after the last checkpoint also have every body block verified; what
//!   fails any check is deleted and counted ([`Stats::dropped_corrupt`],
//!   [`OpenProgress::dropped`]). The other bodies are checked block by
//!   block when first read (above); small ones whenever read into memory.
//!   A rebuild that takes longer than [`DiskConfig::progress_interval`]
//!   (default 2 s) logs at info level what it reads, then its progress once
//!   per interval (percent, rate and time left, with [`progress`]), then
//!   what it found; a quicker one logs nothing but a debug summary.
//! - **Limits of the guarantee.** A removal or meta refresh made after the
//!   last sync may be undone by a power loss (the old object or meta comes
//!   back whole; sidecars carry their own checksum). Damage inside a log
//!   segment loses the records after it in that segment. A body is checked once
//!   per run: damage done to its file after it was checked (or after this
//!   run wrote it) is not seen until the next start.
//!   `syncfs` flushes the whole file system: give the cache its own.
//!
//! # Concurrency
//!
//! [`Store`] is `Send + Sync`. The index is split into shards, each behind a
//! mutex held only for in-memory updates and for the metadata operation that
//! must match them (the publishing rename, moving a victim out of
//! `objects/`, a sidecar rename); body reads and writes, header reads and
//! file deletions happen outside any lock. The memory tier is changed under
//! the same shard lock, so both tiers agree on an object's version.
//!
//! The directory is locked with `flock(2)` on `dir/lock` while a store has
//! it open: a second store, in this process or another, gets
//! [`StoreError::Locked`]. The lock dies with the process.

#![warn(missing_docs)]

mod body;
mod config;
mod disk;
mod error;
/// Entry points for the fuzz targets in `fuzz/` (feature `fuzzing` only):
/// the disk decoders on bytes in memory. Not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod key;
mod memory;
mod partial;
pub mod progress;
mod stats;
mod store;
mod sync;

pub use body::{Body, DiskBody, Hit, Tier};
pub use config::{
    DiskConfig, StoreConfig, DEFAULT_MAX_OBJECT_SIZE, DEFAULT_MEM_BYTES, DEFAULT_MEM_MAX_OBJECT,
    DEFAULT_PROGRESS_INTERVAL, DEFAULT_SMALL_OBJECT, DEFAULT_SYNC_INTERVAL,
};
pub use disk::format::{MAX_KEY_LEN, MAX_META_LEN};
pub use error::StoreError;
pub use key::Key;
pub use partial::{PartialBody, WriteState};
pub use stats::{OpenProgress, Stats, TierStats};
pub use store::{Store, Writer};
