//! The body of an object still being written, readable by other tasks while
//! it grows: from the temporary file (disk) or from the writer's buffer
//! (memory only). Lets late requests for an object being fetched be served
//! what is stored so far.

use crate::body::copy_from;
use crate::sync::{read, write};
use bytes::{Bytes, BytesMut};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Where a write stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteState {
    /// Bytes may still be appended.
    Writing,
    /// Finished and published: the body is complete.
    Finished,
    /// Aborted or failed: no more bytes will come; the object was not stored.
    Aborted,
}

impl WriteState {
    fn from_u8(v: u8) -> WriteState {
        match v {
            0 => WriteState::Writing,
            1 => WriteState::Finished,
            _ => WriteState::Aborted,
        }
    }
}

enum MemBuf {
    Growing(BytesMut),
    Frozen(Bytes),
    /// Moved to a file (a body grown too large for memory): read from
    /// `file` at `offset`.
    Spilled {
        file: Arc<File>,
        offset: u64,
    },
}

enum Source {
    /// A file with the body from `offset`.
    File { file: Arc<File>, offset: u64 },
    /// The body in memory.
    Memory(RwLock<MemBuf>),
}

/// State shared by a writer and the readers of its partial body.
pub(crate) struct Partial {
    written: AtomicU64,
    state: AtomicU8,
    expected: Option<u64>,
    source: Source,
}

impl Partial {
    /// A partial body read from `file` at `offset`.
    pub fn file(file: Arc<File>, offset: u64, expected: Option<u64>) -> Partial {
        Partial::new(Source::File { file, offset }, expected)
    }

    /// A partial body held in memory, with room for `capacity` bytes.
    pub fn memory(capacity: usize, expected: Option<u64>) -> Partial {
        Partial::new(
            Source::Memory(RwLock::new(MemBuf::Growing(BytesMut::with_capacity(
                capacity,
            )))),
            expected,
        )
    }

    fn new(source: Source, expected: Option<u64>) -> Partial {
        Partial {
            written: AtomicU64::new(0),
            state: AtomicU8::new(0),
            expected,
            source,
        }
    }

    /// Appends to the in-memory body (no-op for a file source).
    pub fn push(&self, data: &[u8]) {
        if let Source::Memory(m) = &self.source {
            if let MemBuf::Growing(b) = &mut *write(m) {
                b.extend_from_slice(data);
            }
        }
    }

    /// Makes `n` bytes visible to readers (after they are in place).
    pub fn set_written(&self, n: u64) {
        self.written.store(n, Ordering::Release);
    }

    /// Ends the write.
    pub fn set_state(&self, s: WriteState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// The whole in-memory body, frozen (empty for a file source).
    pub fn freeze(&self) -> Bytes {
        let Source::Memory(m) = &self.source else {
            return Bytes::new();
        };
        let mut g = write(m);
        let frozen = match &mut *g {
            MemBuf::Growing(b) => std::mem::take(b).freeze(),
            MemBuf::Frozen(b) => b.clone(),
            MemBuf::Spilled { .. } => return Bytes::new(),
        };
        *g = MemBuf::Frozen(frozen.clone());
        frozen
    }

    /// A copy of the in-memory body so far.
    pub fn snapshot(&self) -> Bytes {
        let Source::Memory(m) = &self.source else {
            return Bytes::new();
        };
        match &*read(m) {
            MemBuf::Growing(b) => Bytes::copy_from_slice(b),
            MemBuf::Frozen(b) => b.clone(),
            MemBuf::Spilled { .. } => Bytes::new(),
        }
    }

    /// From now on the body is in `file` from `offset` (every byte written
    /// so far is there already): readers follow, the memory is freed.
    pub fn spill(&self, file: Arc<File>, offset: u64) {
        if let Source::Memory(m) = &self.source {
            *write(m) = MemBuf::Spilled { file, offset };
        }
    }
}

/// A reader of an object being written: reads whatever has been appended so
/// far. Clone it freely; it stays valid after the write ends (finished or
/// aborted), then reads the bytes that were written.
#[derive(Clone)]
pub struct PartialBody {
    shared: Arc<Partial>,
}

impl PartialBody {
    pub(crate) fn new(shared: Arc<Partial>) -> PartialBody {
        PartialBody { shared }
    }

    /// Bytes written so far (readable now).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Whether more bytes may come.
    pub fn state(&self) -> WriteState {
        WriteState::from_u8(self.shared.state.load(Ordering::Acquire))
    }

    /// The length announced at `begin`, if any.
    pub fn expected_len(&self) -> Option<u64> {
        self.shared.expected
    }

    /// Reads up to `buf.len()` bytes from body offset `off`, limited to what
    /// is written so far; `Ok(0)` when `off` is at or past that point (check
    /// [`PartialBody::state`] to know whether more will come).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<usize> {
        let written = self.written();
        if off >= written || buf.is_empty() {
            return Ok(0);
        }
        let want = (written - off).min(buf.len() as u64) as usize;
        let (file, offset) = match &self.shared.source {
            Source::File { file, offset } => (file.clone(), *offset),
            Source::Memory(m) => match &*read(m) {
                MemBuf::Growing(b) => return Ok(copy_from(b, off, &mut buf[..want])),
                MemBuf::Frozen(b) => return Ok(copy_from(b, off, &mut buf[..want])),
                MemBuf::Spilled { file, offset } => (file.clone(), *offset),
            },
        };
        loop {
            match file.read_at(&mut buf[..want], offset + off) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl std::fmt::Debug for PartialBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialBody")
            .field("written", &self.written())
            .field("state", &self.state())
            .finish()
    }
}
