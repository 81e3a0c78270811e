//! Opening a published object: reads and checks its header, key string and
//! meta (or the newer meta of its sidecar), and reads a whole small body
//! with its block table, checked. Never reads a body unless asked to
//! (checking a body served from the file is `verify`'s).

use super::format::{check_in_memory, decode_sidecar, Header, Invalid, FIXED_LEN};
use super::index::Entry;
use super::DiskTier;
use crate::key::Key;
use bytes::{Bytes, BytesMut};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes read at once from the start of an object file: the header, key
/// string and meta of most objects.
const HEAD_READ: usize = 4096;

/// An opened object file.
#[derive(Debug)]
pub(crate) struct OpenObject {
    pub file: File,
    pub header: Header,
    pub key_str: Vec<u8>,
    pub meta: Bytes,
}

/// Why an object could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file fails a check: drop it.
    Corrupt(Invalid),
    /// The system refused.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads `buf.len()` bytes at `off` or up to the end of the file; returns
/// the count read.
pub(crate) fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads and checks the header, key string and meta of an object file whose
/// name says it holds `key`. Does not check the body.
pub(crate) fn read_head(file: &File, key: Key) -> Result<(Header, Vec<u8>, Bytes), ReadError> {
    let mut buf = vec![0u8; HEAD_READ];
    let n = read_full_at(file, &mut buf, 0)?;
    buf.truncate(n);
    let (h, stored) = Header::decode(&buf).map_err(ReadError::Corrupt)?;
    if h.key != key {
        return Err(ReadError::Corrupt(
            "key in header differs from the file name",
        ));
    }
    let need = h.body_offset() as usize;
    if buf.len() < need {
        let have = buf.len();
        buf.resize(need, 0);
        if read_full_at(file, &mut buf[have..], have as u64)? < need - have {
            return Err(ReadError::Corrupt("file ends inside its header"));
        }
    }
    let key_end = FIXED_LEN + h.key_len as usize;
    let (key_str, meta) = (&buf[FIXED_LEN..key_end], &buf[key_end..need]);
    Header::check(&buf, key_str, meta, stored).map_err(ReadError::Corrupt)?;
    Ok((h, key_str.to_vec(), Bytes::copy_from_slice(meta)))
}

impl DiskTier {
    /// Opens the object file of `key` (index entry `e`). `Ok(None)`: the
    /// file is gone.
    pub(crate) fn open_object(&self, key: Key, e: &Entry) -> Result<Option<OpenObject>, ReadError> {
        let path = self.layout.object(key);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let (header, key_str, mut meta) = read_head(&file, key)?;
        if e.has_sidecar() {
            if let Some(m) = self.read_sidecar(key, header.seq) {
                meta = m;
            }
        }
        Ok(Some(OpenObject {
            file,
            header,
            key_str,
            meta,
        }))
    }

    /// The meta of `key`'s sidecar if it is sound and belongs to version `seq`.
    pub(crate) fn read_sidecar(&self, key: Key, seq: u64) -> Option<Bytes> {
        let path = self.layout.sidecar(key);
        let b = std::fs::read(&path).ok()?;
        match decode_sidecar(&b) {
            Ok((k, s, range)) if k == key && s == seq => Some(Bytes::copy_from_slice(&b[range])),
            Ok(_) => None,
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "ignoring bad meta sidecar");
                None
            }
        }
    }

    /// Reads a whole body (for the memory tier) with its block table, in
    /// one read, and checks every block.
    pub(crate) fn read_body(&self, o: &OpenObject) -> Result<Bytes, ReadError> {
        let h = &o.header;
        let len = usize::try_from(h.body_len + h.table_len())
            .map_err(|_| ReadError::Corrupt("body length out of range"))?;
        let mut buf = BytesMut::zeroed(len);
        let n = read_full_at(&o.file, &mut buf, h.body_offset())?;
        if n < len {
            return Err(ReadError::Corrupt("file shorter than its header says"));
        }
        check_in_memory(h, &buf).map_err(ReadError::Corrupt)?;
        buf.truncate(h.body_len as usize);
        Ok(buf.freeze())
    }
}
