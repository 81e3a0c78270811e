//! Configuration of the store: budgets and limits of both tiers, with their
//! defaults, and the checks done at open.

use crate::error::StoreError;
use std::path::PathBuf;
use std::time::Duration;

/// Default memory tier budget.
pub const DEFAULT_MEM_BYTES: u64 = 256 << 20;
/// Default largest object kept in the memory tier.
pub const DEFAULT_MEM_MAX_OBJECT: u64 = 1 << 20;
/// Default largest object the store accepts.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 4 << 30;
/// Default largest object packed into the disk log (key string, meta,
/// body and a 56-byte record header).
pub const DEFAULT_SMALL_OBJECT: u64 = 32 << 10;
/// Default interval between two disk syncs (and checkpoints).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Default interval between two progress lines of the disk index rebuild
/// at open (a rebuild that takes less logs none).
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// What the store may hold.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Memory tier budget in bytes (body + metadata + key string of every
    /// object); 0 = no memory tier.
    pub mem_bytes: u64,
    /// Objects whose body is larger than this never enter the memory tier.
    pub mem_max_object: u64,
    /// The disk tier; `None` = memory only.
    pub disk: Option<DiskConfig>,
    /// Writers refuse to grow a body past this ([`StoreError::TooLarge`]).
    /// A memory-only store also refuses bodies larger than `mem_max_object`,
    /// since it could not keep them.
    pub max_object_size: u64,
}

impl Default for StoreConfig {
    /// Memory only, with the default budgets.
    fn default() -> Self {
        StoreConfig {
            mem_bytes: DEFAULT_MEM_BYTES,
            mem_max_object: DEFAULT_MEM_MAX_OBJECT,
            disk: None,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
        }
    }
}

/// The disk tier: a directory this store owns alone.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    /// The cache directory (created if needed).
    pub dir: PathBuf,
    /// Size bound of the directory's objects, in bytes of 4 KiB blocks.
    pub max_bytes: u64,
    /// How often everything written is synced to stable storage and a
    /// checkpoint recorded; objects published since the last checkpoint are
    /// verified at open after an unclean shutdown.
    pub sync_interval: Duration,
    /// Objects whose record (key string, meta, body and a 56-byte header)
    /// takes at most this many bytes are packed into the log's segments;
    /// larger ones get a file each. Capped at a quarter of a segment
    /// (segments are 1/32 of `max_bytes`, between 256 KiB and 16 MiB).
    /// 0: every object gets a file.
    pub small_object: u64,
    /// While the index is rebuilt at open, an info line with its progress
    /// (done, rate, time left) at most this often; a rebuild that takes less
    /// than this logs no progress at all. Zero: at every check (per log
    /// segment, per 256 object files), for tests.
    pub progress_interval: Duration,
}

impl DiskConfig {
    /// A disk tier in `dir` bounded to `max_bytes`, synced every
    /// [`DEFAULT_SYNC_INTERVAL`], objects up to [`DEFAULT_SMALL_OBJECT`]
    /// packed into the log, rebuild progress every
    /// [`DEFAULT_PROGRESS_INTERVAL`].
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        DiskConfig {
            dir: dir.into(),
            max_bytes,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            small_object: DEFAULT_SMALL_OBJECT,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
        }
    }
}

impl StoreConfig {
    /// Rejects settings that cannot work.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: String| Err(StoreError::Config(m));
        if self.max_object_size == 0 {
            return bad("max_object_size is 0".into());
        }
        if self.mem_bytes > 0 && self.mem_max_object > self.mem_bytes {
            return bad(format!(
                "mem_max_object ({}) is larger than mem_bytes ({})",
                self.mem_max_object, self.mem_bytes
            ));
        }
        match &self.disk {
            None if self.mem_bytes == 0 => bad("no memory tier (mem_bytes = 0) and no disk".into()),
            Some(d) if d.max_bytes == 0 => bad(format!("disk {}: max_bytes is 0", d.dir.display())),
            Some(d) if d.sync_interval.is_zero() => {
                bad(format!("disk {}: sync_interval is 0", d.dir.display()))
            }
            _ => Ok(()),
        }
    }
}
