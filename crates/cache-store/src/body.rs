//! What a lookup returns: the object's meta and its body, held in memory or
//! as an open file read by position (never read whole to be served), with
//! what must be checked of it before its bytes are served.

use crate::disk::verify::BodyCheck;
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The tier a lookup was answered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The memory tier.
    Memory,
    /// The disk tier (the body may have been copied into memory on the way
    /// when it is small enough for the memory tier).
    Disk,
}

/// A found object.
#[derive(Debug)]
pub struct Hit {
    /// The caller's metadata, as given to `begin` or the last `update_meta`.
    pub meta: Bytes,
    /// The body.
    pub body: Body,
    /// Where it was found.
    pub tier: Tier,
    /// The version of the stored object: new whenever the object is
    /// (re)written, unchanged by a meta update. Pass it to
    /// [`crate::Store::update_meta_if`] so a refresh validated against this
    /// version is not applied to a newer one stored meanwhile.
    pub version: u64,
}

/// A stored body.
#[derive(Debug)]
pub enum Body {
    /// Held in memory.
    Memory(Bytes),
    /// In an open object file.
    Disk(DiskBody),
}

impl Body {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Memory(b) => b.len() as u64,
            Body::Disk(d) => d.len(),
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes from body offset `off`; `Ok(0)` only at
    /// or past the end. Bytes read from disk are checked first
    /// ([`DiskBody::check`]).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Memory(b) => Ok(copy_from(b, off, buf)),
            Body::Disk(d) => d.read_at(off, buf),
        }
    }

    /// Whether every byte is known sound, so that it may be sent without
    /// [`Body::check`] (always for a body in memory).
    pub fn is_checked(&self) -> bool {
        match self {
            Body::Memory(_) => true,
            Body::Disk(d) => d.is_checked(),
        }
    }

    /// [`DiskBody::check`] for a body on disk; nothing to do in memory.
    pub fn check(&self, off: u64, len: u64) -> io::Result<()> {
        match self {
            Body::Memory(_) => Ok(()),
            Body::Disk(d) => d.check(off, len),
        }
    }
}

/// Copies from `src` at `off` into `buf`; returns the count.
pub(crate) fn copy_from(src: &[u8], off: u64, buf: &mut [u8]) -> usize {
    let Ok(off) = usize::try_from(off) else {
        return 0;
    };
    let Some(rest) = src.get(off..) else {
        return 0;
    };
    let n = rest.len().min(buf.len());
    buf[..n].copy_from_slice(&rest[..n]);
    n
}

/// A body in an open object file. It stays readable when the object is
/// evicted, removed or replaced meanwhile (an unlinked file lives on while
/// open).
///
/// A body found on disk at open is checked block by block against the
/// checksums stored with it before any of its bytes are served: reads
/// through [`DiskBody::read_at`] check what they read; whoever sends the
/// file another way (`sendfile(2)`) calls [`DiskBody::check`] on each range
/// first, unless [`DiskBody::is_checked`]. Each block is checked once per
/// object (not per lookup), and once every block was, later lookups get a
/// body that needs no check.
#[derive(Debug)]
pub struct DiskBody {
    file: File,
    offset: u64,
    len: u64,
    /// `None`: sound (written by this run, or checked whole since open).
    check: Option<BodyCheck>,
}

impl DiskBody {
    pub(crate) fn new(file: File, offset: u64, len: u64, check: Option<BodyCheck>) -> DiskBody {
        DiskBody {
            file,
            offset,
            len,
            check,
        }
    }

    /// Whether every byte is known sound: it may be sent from
    /// [`DiskBody::file`] without [`DiskBody::check`].
    pub fn is_checked(&self) -> bool {
        self.check.as_ref().is_none_or(BodyCheck::complete)
    }

    /// Checks the blocks holding body bytes `off..off + len` (clipped to the
    /// body) that were not checked yet: reads them and compares their
    /// checksums. Nothing to do, and no I/O, once checked. On a mismatch
    /// the object is dropped from the store (logged with its key, counted
    /// in [`crate::Stats::dropped_corrupt`]) and an
    /// [`io::ErrorKind::InvalidData`] error returned: none of these bytes
    /// may be served.
    pub fn check(&self, off: u64, len: u64) -> io::Result<()> {
        match &self.check {
            Some(c) if off < self.len => c.check(&self.file, off, len.min(self.len - off)),
            _ => Ok(()),
        }
    }

    /// Body length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads up to `buf.len()` bytes from body offset `off` (one positional
    /// read; it may return fewer), checked first ([`DiskBody::check`]).
    /// `Ok(0)` only at or past the end; a file shorter than its header says
    /// is an `UnexpectedEof` error.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        if off >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let want = (self.len - off).min(buf.len() as u64) as usize;
        self.check(off, want as u64)?;
        loop {
            match self.file.read_at(&mut buf[..want], self.offset + off) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "cached object file is shorter than its header says",
                    ))
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The open object file, e.g. for `sendfile(2)` from
    /// [`DiskBody::body_offset`] (of ranges checked first, see
    /// [`DiskBody::check`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Offset of the body's first byte in [`DiskBody::file`].
    pub fn body_offset(&self) -> u64 {
        self.offset
    }
}
