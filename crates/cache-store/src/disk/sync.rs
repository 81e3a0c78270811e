//! Durability: the background thread that syncs the file system every
//! `sync_interval` (after writing out the log's buffer) and then records a
//! checkpoint (the publish sequence below which every object is on stable
//! storage), and the clean close, which
//! records a checkpoint marked clean. The checkpoint file is replaced
//! atomically (temporary file, fsync, rename, fsync of the directory).

use super::format::{Checkpoint, CHECKPOINT_FILE};
use super::DiskTier;
use crate::error::StoreError;
use crate::sync::{lock, write};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl DiskTier {
    /// Flushes everything written in the cache directory's file system.
    pub(crate) fn syncfs(&self) -> Result<(), StoreError> {
        // SAFETY: syncfs only reads the descriptor, which `dir_file` keeps open.
        let rc = unsafe { libc::syncfs(self.dir_file.as_raw_fd()) };
        if rc != 0 {
            return Err(StoreError::io(
                "syncfs",
                &self.layout.dir,
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Writes the checkpoint file atomically.
    pub(crate) fn write_checkpoint(&self, c: Checkpoint) -> Result<(), StoreError> {
        let tmp = self.temp_path('c');
        let dest = self.layout.dir.join(CHECKPOINT_FILE);
        let res = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&c.encode())?;
                f.sync_all()
            })
            .map_err(|e| StoreError::io("write checkpoint", &tmp, e))
            .and_then(|()| {
                fs::rename(&tmp, &dest)
                    .map_err(|e| StoreError::io("rename checkpoint to", &dest, e))
            })
            .and_then(|()| {
                self.dir_file
                    .sync_all()
                    .map_err(|e| StoreError::io("fsync directory", &self.layout.dir, e))
            });
        if res.is_err() {
            super::remove_quietly(&tmp);
        }
        res
    }

    /// Syncs and records a checkpoint; `clean` also closes the tier to new
    /// publishes first, so the clean mark covers everything published.
    pub(crate) fn checkpoint(&self, clean: bool) -> Result<(), StoreError> {
        let _one = lock(&self.checkpointing);
        let synced_below = {
            // No publish is between taking its sequence and its rename.
            let _g = write(&self.gate);
            if clean {
                self.closed.store(true, Ordering::Release);
            } else if self.is_closed() {
                return Ok(()); // closed: the clean checkpoint stands
            }
            self.clock.load(Ordering::Relaxed)
        };
        // Every record published below `synced_below` is in the log's file
        // or its buffer: write the buffer out before the sync.
        self.log.flush()?;
        self.syncfs()?;
        self.write_checkpoint(Checkpoint {
            clean,
            synced_below,
        })
    }

    /// The background syncer's loop. An interval without publishes needs no
    /// sync: the last checkpoint still covers everything.
    pub(crate) fn sync_loop(self: Arc<Self>) {
        let mut synced = 0;
        loop {
            let deadline = Instant::now() + self.cfg.sync_interval;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                if !self.sync_signal.wait(deadline - now) {
                    return;
                }
            }
            let published = self.publishes.load(Ordering::Relaxed);
            if published == synced {
                continue;
            }
            match self.checkpoint(false) {
                Ok(()) => synced = published,
                Err(err) => tracing::warn!(%err, "periodic sync of the disk cache failed"),
            }
        }
    }
}
