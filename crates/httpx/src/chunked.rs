//! A streaming checker for the chunked transfer coding: it reads the bytes of
//! a chunked body as they pass through the proxy (unchanged, trailers
//! included), says where the body ends, and refuses bad syntax: non-hex or
//! oversized chunk sizes, missing CRLFs, bare LFs, overlong extension or
//! trailer sections.

/// Why a chunked body is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

/// Longest chunk-size line (size and extensions) accepted.
const MAX_LINE: usize = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size { digits: u8 },
    /// After the size: extensions up to CR.
    Ext,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting CR after data.
    DataCr,
    /// Expecting LF after data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Expecting LF after a trailer line's CR.
    TrailerLf,
    /// Expecting LF of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Tracks one chunked body.
#[derive(Clone, Debug)]
pub struct ChunkedChecker {
    state: State,
    size: u64,
    line_len: usize,
    trailer_len: usize,
    last_chunk: bool,
}

impl Default for ChunkedChecker {
    fn default() -> Self {
        ChunkedChecker {
            state: State::Size { digits: 0 },
            size: 0,
            line_len: 0,
            trailer_len: 0,
            last_chunk: false,
        }
    }
}

impl ChunkedChecker {
    /// A checker at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the final CRLF has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of the body; returns how many belong to it (all of
    /// `data` unless the body ends inside it).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        self.feed_with(data, |_| {})
    }

    /// As [`feed`](Self::feed), also handing each run of chunk data (the
    /// decoded body) to `on_data`.
    pub fn feed_with(
        &mut self,
        data: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let take = left.min((data.len() - i) as u64) as usize;
                    on_data(&data[i..i + take]);
                    i += take;
                    self.state = if left == take as u64 {
                        State::DataCr
                    } else {
                        State::Data(left - take as u64)
                    };
                    continue;
                }
                _ => {}
            }
            let b = data[i];
            i += 1;
            self.state = self.step(b)?;
        }
        Ok(i)
    }

    /// The state after byte `b` of the framing (sizes, extensions, CRLFs,
    /// trailers: everything but chunk data).
    #[inline]
    fn step(&mut self, b: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { digits } => match (b as char).to_digit(16) {
                Some(d) => {
                    if digits >= 15 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    self.size = self.size * 16 + d as u64;
                    State::Size { digits: digits + 1 }
                }
                None if digits == 0 => return Err(ChunkError("chunk size is not hexadecimal")),
                None => match b {
                    b'\r' => State::SizeLf,
                    b';' | b' ' | b'\t' => {
                        self.line_len = 0;
                        State::Ext
                    }
                    _ => return Err(ChunkError("invalid character after chunk size")),
                },
            },
            State::Ext => {
                self.line_len += 1;
                if self.line_len > MAX_LINE {
                    return Err(ChunkError("chunk extension too long"));
                }
                match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkError("bare LF in chunk size line")),
                    _ => State::Ext,
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF in chunk size line"));
                }
                if self.size == 0 {
                    self.last_chunk = true;
                    State::TrailerStart
                } else {
                    let s = self.size;
                    self.size = 0;
                    State::Data(s)
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("chunk data longer than its size"));
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF after chunk data"));
                }
                State::Size { digits: 0 }
            }
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                b'\n' => return Err(ChunkError("bare LF in trailer section")),
                _ => {
                    self.bump_trailers()?;
                    State::TrailerLine
                }
            },
            State::TrailerLine => {
                self.bump_trailers()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError("bare LF in trailer section")),
                    _ => State::TrailerLine,
                }
            }
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF in trailer section"));
                }
                State::TrailerStart
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError("CR without LF at end of chunked body"));
                }
                State::Done
            }
            // feed_with handles data runs and the end itself
            s @ (State::Data(_) | State::Done) => s,
        })
    }

    fn bump_trailers(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkError("trailer section too long"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &[u8]) -> Result<usize, ChunkError> {
        let mut c = ChunkedChecker::new();
        let n = c.feed(body)?;
        assert!(c.is_done(), "not done after {n}");
        Ok(n)
    }

    #[test]
    fn valid_bodies_end_where_they_end() {
        assert_eq!(check(b"5\r\nhello\r\n0\r\n\r\nNEXT"), Ok(15));
        assert_eq!(
            check(b"A;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"),
            Ok(34)
        );
        // byte by byte gives the same answer
        let body = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let mut c = ChunkedChecker::new();
        for (i, b) in body.iter().enumerate() {
            assert_eq!(c.feed(std::slice::from_ref(b)), Ok(1), "at {i}");
        }
        assert!(c.is_done());
    }

    #[test]
    fn bad_syntax_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhello!\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"0\r\nX: 1\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\n",
        ] {
            let mut c = ChunkedChecker::new();
            assert!(
                c.feed(bad).is_err() || !c.is_done(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut c = ChunkedChecker::new();
        assert!(c.feed(b"5\r\nhello!\r\n").is_err());
    }
}
