//! Streaming a message body from one connection to another, whatever its
//! size, through the source connection's read buffer (bounded: one read of
//! at most [`crate::conn::READ_CHUNK`] at a time).

use std::io;
use std::time::Duration;

use bytes::Buf;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::chunked::{ChunkError, ChunkedChecker};
use crate::conn::{Conn, READ_CHUNK};
use crate::framing::BodyLen;

/// Below this many bytes still to come, setting SO_RCVLOWAT (and resetting
/// it for the next head) costs more syscalls than it saves.
pub const LOWAT_WORTHWHILE: u64 = 16 * 1024;

/// Why a body relay stopped early.
#[derive(Debug)]
pub enum RelayError {
    /// The source closed before the body ended.
    SourceClosed,
    /// The source failed.
    Source(io::Error),
    /// Nothing arrived from the source for the idle timeout.
    SourceIdle,
    /// The destination failed (a client gone, a parent reset).
    Sink(io::Error),
    /// The destination accepted nothing for the idle timeout.
    SinkIdle,
    /// Malformed chunked coding.
    Chunk(ChunkError),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::SourceClosed => f.write_str("sender closed before the end of the body"),
            RelayError::Source(e) => write!(f, "reading body: {e}"),
            RelayError::SourceIdle => f.write_str("body idle timeout"),
            RelayError::Sink(e) => write!(f, "writing body: {e}"),
            RelayError::SinkIdle => f.write_str("receiver stalled past the body idle timeout"),
            RelayError::Chunk(c) => write!(f, "bad chunked body: {}", c.0),
        }
    }
}

/// How the relay writes the body out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// As it came (the framing stays the same).
    Same,
    /// Re-framed as chunked (an until-close body to an HTTP/1.1 client).
    Chunked,
    /// Chunked coding removed (a chunked body to an HTTP/1.0 client, which
    /// then reads until the connection closes).
    Dechunked,
}

async fn write_all<W: AsyncWrite + Unpin>(
    dst: &mut W,
    data: &[u8],
    idle: Duration,
) -> Result<(), RelayError> {
    match timeout(idle, dst.write_all(data)).await {
        Err(_) => Err(RelayError::SinkIdle),
        Ok(Err(e)) => Err(RelayError::Sink(e)),
        Ok(Ok(())) => Ok(()),
    }
}

async fn fill(src: &mut Conn, idle: Duration) -> Result<usize, RelayError> {
    match src.read_more_by(tokio::time::Instant::now() + idle).await {
        None => Err(RelayError::SourceIdle),
        Some(Err(e)) => Err(RelayError::Source(e)),
        Some(Ok(n)) => Ok(n),
    }
}

/// Reads until `src` holds at least `n` bytes (or it closes / idles out).
pub async fn fill_to(src: &mut Conn, n: usize, idle: Duration) -> Result<(), RelayError> {
    while src.rbuf.len() < n {
        if fill(src, idle).await? == 0 {
            return Err(RelayError::SourceClosed);
        }
    }
    Ok(())
}

/// Bodies up to this size are copied behind their head and leave in one
/// plain `send`: for a small body the copy costs less than `sendmsg`'s
/// message header and two-piece iovec.
pub const COALESCE_MAX: usize = 4096;

/// Writes `head` then `body`: a small body ([`COALESCE_MAX`]) is appended
/// to `head` (which then holds both) and sent in one piece, a larger one
/// with [`write_all_vectored`].
pub async fn write_head_and_body(
    dst: &TcpStream,
    head: &mut Vec<u8>,
    body: &[u8],
) -> io::Result<()> {
    if body.len() <= COALESCE_MAX {
        head.extend_from_slice(body);
        write_all_vectored(dst, head, &[]).await
    } else {
        write_all_vectored(dst, head, body).await
    }
}

/// Writes `a` then `b` with as few calls as the socket allows: `sendmsg`
/// with both pieces (no copy), not `writev`, whose trip through the file
/// layer (permission and fsnotify hooks) costs more per call on a socket;
/// a plain `send` once one piece is left.
pub async fn write_all_vectored(dst: &TcpStream, a: &[u8], b: &[u8]) -> io::Result<()> {
    let sock = socket2::SockRef::from(dst);
    let mut done = 0usize;
    let total = a.len() + b.len();
    while done < total {
        let sent = dst.try_io(Interest::WRITABLE, || {
            if done < a.len() && b.is_empty() {
                sock.send_with_flags(&a[done..], libc::MSG_NOSIGNAL)
            } else if done < a.len() {
                let bufs = [io::IoSlice::new(&a[done..]), io::IoSlice::new(b)];
                sock.send_vectored_with_flags(&bufs, libc::MSG_NOSIGNAL)
            } else {
                sock.send_with_flags(&b[done - a.len()..], libc::MSG_NOSIGNAL)
            }
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Relays a body of framing `len` from `src` (its buffer first) to `dst`.
/// Bytes after the body stay in `src.rbuf`. Returns the bytes written
/// (framing included).
pub async fn relay<W: AsyncWrite + Unpin>(
    src: &mut Conn,
    dst: &mut W,
    len: BodyLen,
    out: Out,
    idle: Duration,
) -> Result<u64, RelayError> {
    let mut written = 0u64;
    match len {
        BodyLen::Empty => {}
        BodyLen::Length(mut left) => {
            while left > 0 {
                if src.rbuf.is_empty() {
                    // A low-water mark left from an earlier, larger body must
                    // not outlive it: reset to 1 for small remainders.
                    let want = if left >= LOWAT_WORTHWHILE {
                        left.min(READ_CHUNK as u64) as usize
                    } else {
                        1
                    };
                    src.want_at_least(want);
                }
                if src.rbuf.is_empty() && fill(src, idle).await? == 0 {
                    return Err(RelayError::SourceClosed);
                }
                let take = (src.rbuf.len() as u64).min(left) as usize;
                write_all(dst, &src.rbuf[..take], idle).await?;
                src.rbuf.advance(take);
                left -= take as u64;
                written += take as u64;
            }
        }
        BodyLen::Chunked => {
            let mut checker = ChunkedChecker::new();
            loop {
                if src.rbuf.is_empty() && fill(src, idle).await? == 0 {
                    return Err(RelayError::SourceClosed);
                }
                let n = if out == Out::Dechunked {
                    let mut plain = Vec::with_capacity(src.rbuf.len());
                    let n = checker
                        .feed_with(&src.rbuf, |d| plain.extend_from_slice(d))
                        .map_err(RelayError::Chunk)?;
                    write_all(dst, &plain, idle).await?;
                    written += plain.len() as u64;
                    n
                } else {
                    let n = checker.feed(&src.rbuf).map_err(RelayError::Chunk)?;
                    write_all(dst, &src.rbuf[..n], idle).await?;
                    written += n as u64;
                    n
                };
                src.rbuf.advance(n);
                if checker.is_done() {
                    break;
                }
            }
        }
        BodyLen::UntilClose => loop {
            if src.rbuf.is_empty() && fill(src, idle).await? == 0 {
                if out == Out::Chunked {
                    write_all(dst, b"0\r\n\r\n", idle).await?;
                    written += 5;
                }
                break;
            }
            let n = src.rbuf.len();
            if out == Out::Chunked {
                let size = format!("{n:x}\r\n");
                write_all(dst, size.as_bytes(), idle).await?;
                write_all(dst, &src.rbuf[..n], idle).await?;
                write_all(dst, b"\r\n", idle).await?;
                written += (size.len() + n + 2) as u64;
            } else {
                write_all(dst, &src.rbuf[..n], idle).await?;
                written += n as u64;
            }
            src.rbuf.advance(n);
        },
    }
    Ok(written)
}

/// Reads a body as decoded pieces (chunked coding removed), for a consumer
/// that keeps the body (a cache) rather than relaying its bytes unchanged.
#[derive(Debug)]
pub struct Decoder {
    len: BodyLen,
    left: u64,
    chunked: ChunkedChecker,
    done: bool,
}

impl Decoder {
    /// A decoder for a body of framing `len`.
    pub fn new(len: BodyLen) -> Self {
        Decoder {
            len,
            left: match len {
                BodyLen::Length(n) => n,
                _ => 0,
            },
            chunked: ChunkedChecker::new(),
            done: matches!(len, BodyLen::Empty | BodyLen::Length(0)),
        }
    }

    /// True once the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next piece of the decoded body, `None` at its end. Bytes after
    /// the body stay in `src.rbuf`.
    pub async fn next(
        &mut self,
        src: &mut Conn,
        idle: Duration,
    ) -> Result<Option<bytes::Bytes>, RelayError> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.len {
                BodyLen::Empty => {
                    self.done = true;
                }
                BodyLen::Length(_) => {
                    if src.rbuf.is_empty() {
                        let want = if self.left >= LOWAT_WORTHWHILE {
                            self.left.min(READ_CHUNK as u64) as usize
                        } else {
                            1
                        };
                        src.want_at_least(want);
                        if fill(src, idle).await? == 0 {
                            return Err(RelayError::SourceClosed);
                        }
                    }
                    let take = (src.rbuf.len() as u64).min(self.left) as usize;
                    self.left -= take as u64;
                    self.done = self.left == 0;
                    return Ok(Some(src.rbuf.split_to(take).freeze()));
                }
                BodyLen::Chunked => {
                    if src.rbuf.is_empty() && fill(src, idle).await? == 0 {
                        return Err(RelayError::SourceClosed);
                    }
                    let mut plain = Vec::new();
                    let n = self
                        .chunked
                        .feed_with(&src.rbuf, |d| plain.extend_from_slice(d))
                        .map_err(RelayError::Chunk)?;
                    src.rbuf.advance(n);
                    self.done = self.chunked.is_done();
                    if !plain.is_empty() {
                        return Ok(Some(plain.into()));
                    }
                }
                BodyLen::UntilClose => {
                    if src.rbuf.is_empty() && fill(src, idle).await? == 0 {
                        self.done = true;
                        return Ok(None);
                    }
                    let n = src.rbuf.len();
                    return Ok(Some(src.rbuf.split_to(n).freeze()));
                }
            }
        }
    }
}

/// How a response whose body is framed `len` goes on to the client that
/// sent `req`: the framing the client sees and how the relay writes the
/// body. HEAD and 304 keep the upstream's `Content-Length` as information;
/// a chunked or close-delimited body is re-framed for the client's version.
pub fn client_framing(
    req: &crate::RequestHead,
    resp: &crate::ResponseHead,
    len: BodyLen,
) -> (crate::headers::Framing, Out) {
    use crate::headers::Framing;
    let http11 = req.version == crate::Version::Http11;
    match len {
        BodyLen::Empty => {
            let cl = resp
                .fields
                .get(crate::head::Known::ContentLength)
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok());
            match cl {
                Some(n) if req.method() == b"HEAD" || resp.status == 304 => {
                    (Framing::Length(n), Out::Same)
                }
                _ if resp.status == 204 || resp.status == 304 => (Framing::None, Out::Same),
                _ => (Framing::Length(0), Out::Same),
            }
        }
        BodyLen::Length(n) => (Framing::Length(n), Out::Same),
        BodyLen::Chunked if http11 => (Framing::Chunked, Out::Same),
        BodyLen::Chunked => (Framing::Close, Out::Dechunked),
        BodyLen::UntilClose if http11 => (Framing::Chunked, Out::Chunked),
        BodyLen::UntilClose => (Framing::Close, Out::Same),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn head_and_body_arrive_whole_whether_copied_or_sent_in_two_pieces() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sender = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let mut peer = l.accept().await.unwrap().0;
        for size in [0, 1, COALESCE_MAX, COALESCE_MAX + 1, 1 << 20] {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            let head_len = head.len();
            let expected = [&head[..], &body[..]].concat();
            let (sent, got) = tokio::join!(write_head_and_body(&sender, &mut head, &body), async {
                let mut got = vec![0u8; expected.len()];
                peer.read_exact(&mut got).await.map(|_| got)
            });
            sent.unwrap();
            assert!(got.unwrap() == expected, "{size}-byte body");
            // a small body was appended to the head, a large one was not
            let copied = size <= COALESCE_MAX;
            assert_eq!(head.len(), head_len + if copied { size } else { 0 });
        }
    }
}
