//! A TCP connection with its read buffer: reading heads under time limits.
//! Bytes read past a head (a body, a pipelined request) stay in the buffer
//! for the next reader.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::error::HttpError;
use crate::head::{self, Limits, RequestHead, ResponseHead};

/// Read buffer growth step (and the largest single read).
pub const READ_CHUNK: usize = 64 * 1024;

/// A connection and the bytes read from it but not consumed yet.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Read but not yet consumed.
    pub rbuf: BytesMut,
    /// The socket's SO_RCVLOWAT as last set (1: the kernel default).
    lowat: usize,
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadReadError {
    /// The client closed (or sat idle past the idle timeout) between requests: not an error.
    Idle,
    /// A malformed or oversized head: answer with this status.
    Bad(HttpError),
    /// The head did not arrive in time (408).
    Timeout,
    /// The connection broke in the middle of a head.
    Io(io::Error),
}

impl Conn {
    /// Wraps a connected socket.
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(8 * 1024),
            lowat: 1,
        }
    }

    /// Asks the kernel to wake readers only once `n` bytes (at most
    /// [`READ_CHUNK`]) are queued, so a body that arrives in many small
    /// segments is read in few syscalls. Only for bytes that are sure to come
    /// (the rest of a body of known length); heads read with the default.
    pub fn want_at_least(&mut self, n: usize) {
        let n = n.clamp(1, READ_CHUNK);
        if n != self.lowat {
            set_rcvlowat(&self.stream, n);
            self.lowat = n;
        }
        if n > 1 && self.rbuf.capacity() - self.rbuf.len() < n {
            self.rbuf.reserve(n);
        }
    }

    /// Reads once more into the buffer; `Ok(0)` means end of stream.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf
                .reserve(READ_CHUNK.max(self.rbuf.len()).min(READ_CHUNK));
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Reads the next request head. Waits up to `idle_timeout` for its first
    /// byte, then `header_timeout` for the rest.
    pub async fn read_request_head(
        &mut self,
        limits: &Limits,
    ) -> Result<RequestHead, HeadReadError> {
        self.want_at_least(1);
        if self.rbuf.is_empty() {
            match timeout(limits.idle_timeout, self.read_more()).await {
                Err(_) | Ok(Ok(0)) => return Err(HeadReadError::Idle),
                Ok(Err(e)) => {
                    return Err(if is_reset(&e) {
                        HeadReadError::Idle
                    } else {
                        HeadReadError::Io(e)
                    });
                }
                Ok(Ok(_)) => {}
            }
        }
        let deadline = tokio::time::Instant::now() + limits.header_timeout;
        loop {
            match head::parse_request(&mut self.rbuf, limits) {
                Ok(Some(h)) => return Ok(h),
                Ok(None) => {}
                Err(e) => return Err(HeadReadError::Bad(e)),
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return Err(HeadReadError::Timeout),
                Ok(Ok(0)) => {
                    // Only blank lines before the close: an idle close.
                    if self.rbuf.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                        return Err(HeadReadError::Idle);
                    }
                    return Err(HeadReadError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(HeadReadError::Io(e)),
            }
        }
    }

    /// Reads a response head within `wait` (the first-byte timeout).
    /// `Ok(None)`: the peer closed before sending a single byte.
    pub async fn read_response_head(
        &mut self,
        wait: Duration,
        max_head: usize,
    ) -> Result<Option<ResponseHead>, ResponseReadError> {
        self.want_at_least(1);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !self.rbuf.is_empty() {
                match head::parse_response(&mut self.rbuf, max_head) {
                    Ok(Some(h)) => return Ok(Some(h)),
                    Ok(None) => {}
                    Err(e) => return Err(ResponseReadError::Bad(e)),
                }
            }
            let had = self.rbuf.len();
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Err(_) => return Err(ResponseReadError::Timeout { got_bytes: had > 0 }),
                Ok(Ok(0)) if had == 0 => return Ok(None),
                Ok(Ok(0)) => return Err(ResponseReadError::Truncated),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if had == 0 => return Err(ResponseReadError::NothingRead(e)),
                Ok(Err(_)) => return Err(ResponseReadError::Truncated),
            }
        }
    }
}

/// Why no response head could be read from a parent.
#[derive(Debug)]
pub enum ResponseReadError {
    /// Malformed head (502).
    Bad(HttpError),
    /// No complete head in time (504).
    Timeout {
        /// Whether some bytes had arrived.
        got_bytes: bool,
    },
    /// The parent closed in the middle of the head (502).
    Truncated,
    /// The connection failed before any byte arrived (retryable).
    NothingRead(io::Error),
}

fn set_rcvlowat(stream: &TcpStream, n: usize) {
    use std::os::fd::AsRawFd;
    let v = n as libc::c_int;
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Errors a client causes by going away.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}
