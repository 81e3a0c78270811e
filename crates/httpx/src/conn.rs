//! A TCP connection with its read buffer: reading heads under time limits.
//! Bytes read past a head (a body, a pipelined request) stay in the buffer
//! for the next reader.
//!
//! Memory per connection: a connection waiting for its peer holds no read
//! buffer (see `bufpool`), and one whose head is not complete yet (a slow
//! client, or one that never finishes its head) holds only a small buffer
//! sized for the bytes it has ([`LATE_HEAD_BUFFER`] and up), never a pooled
//! [`READ_CHUNK`] one.

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

/// The smallest buffer the bytes of a head that is not complete yet wait
/// in, instead of the pooled [`READ_CHUNK`] buffer they were read into; it
/// grows (doubling) only as the head does, so never much past the head
/// size limit.
pub const LATE_HEAD_BUFFER: usize = 1024;

/// Least free room for one more read of a late head (below it the
/// buffer doubles).
const LATE_HEAD_MIN_ROOM: usize = 512;

/// Free room below which a buffer for a body grows by [`READ_CHUNK`].
const BODY_MIN_ROOM: usize = 4096;

/// What a read is for, which decides how the buffer grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Room {
    /// A head: grow in proportion to it.
    Head,
    /// Anything else (a body): room for a whole [`READ_CHUNK`].
    Body,
}

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
        self.read_more(deadline, Room::Body).await
    }

    async fn read_more(&mut self, deadline: Instant, room: Room) -> Option<io::Result<usize>> {
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
            make_room(rbuf, room);
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

    /// Lets go of an emptied read buffer whatever it is: into the pool,
    /// or freed when the pool does not take it (a small one that held a
    /// late head). For a connection that may now wait long (between
    /// requests, or while its request is served).
    fn drop_buffer(&mut self) {
        self.release_buffer();
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    /// Before waiting for the rest of a head: moves the bytes it has out of
    /// a big (pooled) buffer into a small one of their own, and gives the
    /// big one back, so that a connection whose head comes slowly (or
    /// never completes) costs [`LATE_HEAD_BUFFER`] or a little more, not
    /// [`READ_CHUNK`]. A buffer already small for them stays: bytes are
    /// copied once, not at every wait.
    fn park_late_head(&mut self) {
        let len = self.rbuf.len();
        let small = (2 * len).max(LATE_HEAD_BUFFER).next_power_of_two();
        // See the whole allocation, not only its tail past a head already
        // taken (a pipelined request behind it).
        let _ = self.rbuf.try_reclaim(self.rbuf.capacity() + 1);
        if self.rbuf.capacity() <= small {
            return;
        }
        let mut parked = BytesMut::with_capacity(small);
        parked.extend_from_slice(&self.rbuf);
        let mut big = std::mem::replace(&mut self.rbuf, parked);
        big.clear();
        crate::bufpool::give_back(&mut big);
    }

    /// Reads the next request head. Waits up to `idle_timeout` for its first
    /// byte, then `header_timeout` for the rest.
    pub async fn read_request_head(
        &mut self,
        limits: &Limits,
    ) -> Result<RequestHead, HeadReadError> {
        self.want_at_least(1);
        if self.rbuf.is_empty() {
            // Idle between requests: no buffer at all.
            self.drop_buffer();
            match self
                .read_more(Instant::now() + limits.idle_timeout, Room::Head)
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
                Ok(Some(h)) => {
                    if self.rbuf.is_empty() {
                        // (the head was copied out) The request is served
                        // without holding the client's buffer.
                        self.drop_buffer();
                    }
                    return Ok(h);
                }
                Ok(None) => {}
                Err(e) => return Err(HeadReadError::Bad(e)),
            }
            // The rest of the head is late (rare): from now on, it has
            // `header_timeout` to arrive, and waits in a small buffer.
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
            self.park_late_head();
            match self.read_more(deadline, Room::Head).await {
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
            if had > 0 {
                self.park_late_head();
            }
            match self.read_more(deadline, Room::Head).await {
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
/// space when little is left: for a body [`READ_CHUNK`] more, for a late
/// head (in its small buffer) as much again as it has.
fn make_room(rbuf: &mut BytesMut, room: Room) {
    if rbuf.capacity() == 0 {
        *rbuf = crate::bufpool::take();
    } else if rbuf.is_empty() {
        // Everything read was consumed: read into the start of the buffer
        // again rather than further on (the same cache-hot memory).
        let _ = rbuf.try_reclaim(rbuf.capacity() + 1);
    }
    let free = rbuf.capacity() - rbuf.len();
    match room {
        Room::Body if free < BODY_MIN_ROOM => rbuf.reserve(READ_CHUNK),
        Room::Head if free < LATE_HEAD_MIN_ROOM => {
            rbuf.reserve(rbuf.len().max(LATE_HEAD_BUFFER));
        }
        Room::Body | Room::Head => {}
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

    #[tokio::test]
    async fn a_late_head_waits_in_a_small_buffer_and_a_whole_one_leaves_none() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let mut c = Conn::new(l.accept().await.unwrap().0);
        let limits = Limits::default();
        let wait = Duration::from_millis(50);
        // Half a head: read into a pooled READ_CHUNK buffer, then moved to a
        // small one for the wait (the future is dropped mid-wait; the bytes
        // stay with the connection).
        let half = b"GET / HTTP/1.1\r\nHost: x\r\n";
        peer.write_all(half).await.unwrap();
        let r = tokio::time::timeout(wait, c.read_request_head(&limits)).await;
        assert!(r.is_err(), "the head is not complete");
        assert_eq!(&c.rbuf[..], half);
        assert_eq!(c.rbuf.capacity(), LATE_HEAD_BUFFER);
        // A long field arrives: the buffer grows with the head, not to READ_CHUNK.
        let field = format!("X-Long: {}\r\n", "a".repeat(3000));
        peer.write_all(field.as_bytes()).await.unwrap();
        let r = tokio::time::timeout(wait, c.read_request_head(&limits)).await;
        assert!(r.is_err());
        assert_eq!(c.rbuf.len(), half.len() + field.len());
        assert!(c.rbuf.capacity() <= 8 * 1024, "{}", c.rbuf.capacity());
        // The end of the head: the request goes on without a read buffer.
        peer.write_all(b"\r\n").await.unwrap();
        let h = c.read_request_head(&limits).await.unwrap();
        assert_eq!(h.target(), b"/");
        assert_eq!(c.rbuf.capacity(), 0);
        // A pipelined second request cut short keeps its bytes, in a small buffer.
        peer.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(c.read_request_head(&limits).await.unwrap().target(), b"/a");
        let r = tokio::time::timeout(wait, c.read_request_head(&limits)).await;
        assert!(r.is_err());
        assert_eq!(&c.rbuf[..], b"GET /b HTTP/1.1\r\n");
        assert_eq!(c.rbuf.capacity(), LATE_HEAD_BUFFER);
    }

    #[tokio::test]
    async fn a_late_response_head_waits_in_a_small_buffer_and_its_body_follows() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let mut c = Conn::new(l.accept().await.unwrap().0);
        let wait = Duration::from_millis(50);
        peer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n")
            .await
            .unwrap();
        let r = tokio::time::timeout(wait, c.read_response_head(wait * 10, 64 * 1024)).await;
        assert!(r.is_err(), "the head is not complete");
        assert_eq!(c.rbuf.capacity(), LATE_HEAD_BUFFER);
        // The rest of the head with the start of a body: the body reads get
        // READ_CHUNK of room again.
        peer.write_all(b"\r\nabc").await.unwrap();
        let h = c
            .read_response_head(wait, 64 * 1024)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(&c.rbuf[..], b"abc");
        peer.write_all(&[b'x'; 8000]).await.unwrap();
        let mut got = 3;
        while got < 8003 {
            got += c
                .read_more_by(Instant::now() + wait)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(c.rbuf.capacity() >= READ_CHUNK, "{}", c.rbuf.capacity());
    }
}
