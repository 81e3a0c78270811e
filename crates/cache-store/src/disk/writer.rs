//! An object being written to disk: a file in `tmp/` holding room for the
//! header, the key string, the meta and the body as it arrives, the sums of
//! its body's blocks as they fill, and its reservation of disk space.
//! [`TempObject::seal`] appends the block table; dropping it unpublished
//! deletes the file and returns the space; publishing is `DiskTier::publish`.

use super::format::{blocks, body_offset, encode_table, BLOCK_SHIFT, FIXED_LEN};
use super::DiskTier;
use crate::error::StoreError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

/// An object file being written.
pub(crate) struct TempObject {
    disk: Arc<DiskTier>,
    file: Arc<File>,
    path: PathBuf,
    body_offset: u64,
    written: u64,
    /// Sums of the body's full blocks so far.
    sums: Vec<u64>,
    /// The running sum of the block being filled (seeded with its number).
    block: Xxh3,
    /// Accounted bytes reserved so far (whole blocks of the file written).
    reserved: u64,
    published: bool,
}

impl TempObject {
    /// Creates the temporary file with the key string and meta in place.
    pub fn create(
        disk: &Arc<DiskTier>,
        key_str: &[u8],
        meta: &[u8],
    ) -> Result<TempObject, StoreError> {
        let body_offset = body_offset(key_str.len(), meta.len());
        let reserved = blocks(body_offset);
        disk.reserve(reserved)?;
        let path = disk.temp_path('w');
        let file = match File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                disk.release(reserved);
                return Err(StoreError::io("create", &path, e));
            }
        };
        // From here on, dropping `t` deletes the file and returns the space.
        let t = TempObject {
            disk: disk.clone(),
            file: Arc::new(file),
            path,
            body_offset,
            written: 0,
            sums: Vec::new(),
            block: Xxh3::with_seed(0),
            reserved,
            published: false,
        };
        let mut head = vec![0u8; body_offset as usize];
        head[FIXED_LEN..FIXED_LEN + key_str.len()].copy_from_slice(key_str);
        head[FIXED_LEN + key_str.len()..].copy_from_slice(meta);
        t.file
            .write_all_at(&head, 0)
            .map_err(|e| StoreError::io("write", &t.path, e))?;
        Ok(t)
    }

    /// Appends body bytes, reserving (and if needed evicting for) the space.
    pub fn append(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let end = self.body_offset + self.written + data.len() as u64;
        let need = blocks(end).saturating_sub(self.reserved);
        if need > 0 {
            self.disk.reserve(need)?;
            self.reserved += need;
        }
        self.file
            .write_all_at(data, self.body_offset + self.written)
            .map_err(|e| StoreError::io("write", &self.path, e))?;
        self.sum_blocks(data);
        Ok(())
    }

    /// Adds body bytes to the block sums and to the count written.
    fn sum_blocks(&mut self, mut data: &[u8]) {
        const SIZE: u64 = 1 << BLOCK_SHIFT;
        while !data.is_empty() {
            let room = SIZE - self.written % SIZE;
            let n = data.len().min(room as usize);
            self.block.update(&data[..n]);
            self.written += n as u64;
            data = &data[n..];
            if self.written.is_multiple_of(SIZE) {
                self.sums.push(self.block.digest());
                self.block = Xxh3::with_seed(self.sums.len() as u64);
            }
        }
    }

    /// Ends the body: appends the block table after it (reserving the
    /// space) and returns the table's checksum, for the header.
    pub fn seal(&mut self) -> Result<u64, StoreError> {
        if !self.written.is_multiple_of(1 << BLOCK_SHIFT) {
            self.sums.push(self.block.digest());
        }
        let (table, sum) = encode_table(&self.sums);
        let at = self.body_offset + self.written;
        let need = blocks(at + table.len() as u64).saturating_sub(self.reserved);
        if need > 0 {
            self.disk.reserve(need)?;
            self.reserved += need;
        }
        self.file
            .write_all_at(&table, at)
            .map_err(|e| StoreError::io("write", &self.path, e))?;
        Ok(sum)
    }

    /// Body bytes written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The file (shared with readers of the partial body).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Where the body starts in the file.
    pub fn body_offset(&self) -> u64 {
        self.body_offset
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks the file published (renamed away); returns its accounted bytes,
    /// which now belong to the index entry.
    pub fn into_published(mut self) -> u64 {
        self.published = true;
        self.reserved
    }
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if !self.published {
            super::remove_quietly(&self.path);
            self.disk.release(self.reserved);
        }
    }
}
