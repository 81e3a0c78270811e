//! What a lookup returns: the object's meta and its body, held in memory or
//! as an open file read by position (never read whole to be served).

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
    /// or past the end.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Memory(b) => Ok(copy_from(b, off, buf)),
            Body::Disk(d) => d.read_at(off, buf),
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
#[derive(Debug)]
pub struct DiskBody {
    file: File,
    offset: u64,
    len: u64,
}

impl DiskBody {
    pub(crate) fn new(file: File, offset: u64, len: u64) -> DiskBody {
        DiskBody { file, offset, len }
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
    /// read; it may return fewer). `Ok(0)` only at or past the end; a file
    /// shorter than its header says is an `UnexpectedEof` error.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        if off >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let want = (self.len - off).min(buf.len() as u64) as usize;
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
    /// [`DiskBody::body_offset`].
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Offset of the body's first byte in [`DiskBody::file`].
    pub fn body_offset(&self) -> u64 {
        self.offset
    }
}
