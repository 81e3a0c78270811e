//! A TCP connection with its read buffer: reading heads under time limits.
//! Bytes read past a head (a body, a pipelined request) stay in the buffer
//! for the next reader.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::error::HttpError;
use crate::head::{self, Limits, RequestHead, ResponseHead};

/// Read buffer size (and the largest single read).
pub const READ_CHUNK: usize = crate::bufpool::BUF_SIZE;

/// A connection and the bytes read from it but not consumed yet.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Read but not yet consumed.
    pub rbuf: BytesMut,
    /// The socket's SO_RCVLOWAT as last set (1: the kernel default).
    lowat: usize,
    /// The one timer of this connection's timed reads (made on first use).
    timer: Option<Pin<Box<Sleep>>>,
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
            rbuf: BytesMut::new(), // taken from the thread's pool when bytes come
            lowat: 1,
            timer: None,
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
        // Room for all `n` bytes, so that a read drains what woke it. (An
        // empty buffer gets a pooled one of READ_CHUNK bytes at the read.)
        if n > 1 && !self.rbuf.is_empty() && self.rbuf.capacity() - self.rbuf.len() < n {
            self.rbuf.reserve(n);
        }
    }

    /// Reads once more into the buffer: `Some(Ok(0))` means end of stream,
    /// `None` that `deadline` passed first.
    ///
    /// The connection keeps one timer for all its reads and moves its
    /// deadline on: pushing a registered timer later is a store, while a
    /// fresh `timeout()` per read registers and removes a timer each time.
    pub async fn read_more_by(&mut self, deadline: Instant) -> Option<io::Result<usize>> {
        if self.rbuf.is_empty() {
            // Wait for the peer without a buffer (see `bufpool`).
            self.release_buffer();
        }
        let timer = match &mut self.timer {
            Some(t) => {
                if t.deadline() != deadline {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self.timer.insert(Box::pin(sleep_until(deadline))),
        };
        let (stream, rbuf) = (&mut self.stream, &mut self.rbuf);
        // One poll function, reading first: the timer is looked at only
        // while the socket has nothing (the bytes win if both are there).
        std::future::poll_fn(|cx| {
            if rbuf.capacity() == 0 {
                match stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => return timer.as_mut().poll(cx).map(|()| None),
                }
            }
            make_room(rbuf);
            match poll_read_buf(stream, cx, rbuf) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            }
        })
        .await
    }

    /// Gives an emptied read buffer back to the thread's pool (a connection
    /// going idle, or about to wait for its peer). A buffer whose allocation
    /// is still shared with pieces split off it (a cache fill's body) is kept:
    /// the next read goes into its free tail, as before.
    pub fn release_buffer(&mut self) {
        crate::bufpool::give_back(&mut self.rbuf);
    }

    /// Reads the next request head. Waits up to `idle_timeout` for its first
    /// byte, then `header_timeout` for the rest.
    pub async fn read_request_head(
        &mut self,
        limits: &Limits,
    ) -> Result<RequestHead, HeadReadError> {
        self.want_at_least(1);
        if self.rbuf.is_empty() {
            match self
                .read_more_by(Instant::now() + limits.idle_timeout)
                .await
            {
                None | Some(Ok(0)) => return Err(HeadReadError::Idle),
                Some(Err(e)) => {
                    return Err(if is_reset(&e) {
                        HeadReadError::Idle
                    } else {
                        HeadReadError::Io(e)
                    });
                }
                Some(Ok(_)) => {}
            }
        }
        let mut deadline = None;
        loop {
            match head::parse_request(&mut self.rbuf, limits) {
                Ok(Some(h)) => return Ok(h),
                Ok(None) => {}
                Err(e) => return Err(HeadReadError::Bad(e)),
            }
            // The rest of the head is late (rare): from now on, it has
            // `header_timeout` to arrive.
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
            match self.read_more_by(deadline).await {
                None => return Err(HeadReadError::Timeout),
                Some(Ok(0)) => {
                    // Only blank lines before the close: an idle close.
                    if self.rbuf.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                        return Err(HeadReadError::Idle);
                    }
                    return Err(HeadReadError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(HeadReadError::Io(e)),
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
        let deadline = Instant::now() + wait;
        loop {
            if !self.rbuf.is_empty() {
                match head::parse_response(&mut self.rbuf, max_head) {
                    Ok(Some(h)) => return Ok(Some(h)),
                    Ok(None) => {}
                    Err(e) => return Err(ResponseReadError::Bad(e)),
                }
            }
            let had = self.rbuf.len();
            match self.read_more_by(deadline).await {
                None => return Err(ResponseReadError::Timeout { got_bytes: had > 0 }),
                Some(Ok(0)) if had == 0 => return Ok(None),
                Some(Ok(0)) => return Err(ResponseReadError::Truncated),
                Some(Ok(_)) => {}
                Some(Err(e)) if had == 0 => return Err(ResponseReadError::NothingRead(e)),
                Some(Err(_)) => return Err(ResponseReadError::Truncated),
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

/// Room for one more read: a pooled buffer when none is held, else more
/// space when less than 4 KiB is left.
fn make_room(rbuf: &mut BytesMut) {
    if rbuf.capacity() == 0 {
        *rbuf = crate::bufpool::take();
    } else if rbuf.is_empty() {
        // Everything read was consumed: read into the start of the buffer
        // again rather than further on (the same cache-hot memory).
        let _ = rbuf.try_reclaim(rbuf.capacity() + 1);
    }
    if rbuf.capacity() - rbuf.len() < 4096 {
        rbuf.reserve(READ_CHUNK);
    }
}

/// One read into the free tail of `buf` (tokio's `poll_read`, which also
/// notes that a short read drained the socket, saving a read that would
/// only say "would block").
fn poll_read_buf(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let spare = buf.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    match Pin::new(stream).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            // SAFETY: `poll_read` initialized the first `n` bytes of the
            // spare capacity (ReadBuf tracks what was filled).
            unsafe { buf.set_len(buf.len() + n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_connection_waiting_for_its_peer_holds_no_buffer() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let mut c = Conn::new(l.accept().await.unwrap().0);
        assert_eq!(c.rbuf.capacity(), 0, "a new connection has no buffer yet");
        peer.write_all(b"abc").await.unwrap();
        let soon = || Instant::now() + Duration::from_millis(50);
        assert_eq!(c.read_more_by(soon()).await.unwrap().unwrap(), 3);
        assert_eq!(&c.rbuf[..], b"abc");
        bytes::Buf::advance(&mut c.rbuf, 3);
        // Nothing more comes: the wait times out, and the buffer went back to the pool.
        assert!(c.read_more_by(soon()).await.is_none());
        assert_eq!(c.rbuf.capacity(), 0);
        peer.write_all(b"de").await.unwrap();
        assert_eq!(c.read_more_by(soon()).await.unwrap().unwrap(), 2);
        assert_eq!(&c.rbuf[..], b"de");
    }
}
