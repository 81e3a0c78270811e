//! Keep-alive connection pools, one per upstream, owned by one worker thread
//! (no locks on the hot path). Optimised for a few busy upstreams: the most
//! recently used idle connection is reused first (it is the least likely to
//! have been closed by the upstream), and idle ones past their timeout are
//! dropped when met.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::conn::Conn;

/// Idle connections to each upstream (indexed 0..n).
#[derive(Debug)]
pub struct Pool {
    idle: Vec<VecDeque<(Conn, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool for `upstreams` upstreams keeping at most `max_idle` idle
    /// connections each, for at most `idle_timeout`.
    pub fn new(upstreams: usize, max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: (0..upstreams).map(|_| VecDeque::new()).collect(),
            max_idle,
            idle_timeout,
        }
    }

    /// An idle connection to upstream `i` that still looks open, if any.
    pub fn take(&mut self, i: usize) -> Option<Conn> {
        let q = self.idle.get_mut(i)?;
        while let Some((conn, since)) = q.pop_back() {
            if since.elapsed() >= self.idle_timeout || !looks_open(&conn) {
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Returns a connection after a complete exchange.
    pub fn put(&mut self, i: usize, conn: Conn) {
        if !conn.rbuf.is_empty() {
            return; // unexpected bytes: not reusable
        }
        if let Some(q) = self.idle.get_mut(i) {
            while q
                .front()
                .is_some_and(|(_, t)| t.elapsed() >= self.idle_timeout)
            {
                q.pop_front();
            }
            if q.len() >= self.max_idle {
                q.pop_front();
            }
            q.push_back((conn, Instant::now()));
        }
    }

    /// Idle connections held for upstream `i`.
    pub fn idle_count(&self, i: usize) -> usize {
        self.idle.get(i).map_or(0, VecDeque::len)
    }
}

/// An idle connection that is readable has either been closed by the peer or
/// sent something unsolicited: either way it is not reusable.
/// True when an idle connection has not been closed by its peer (nothing
/// to read, no end of stream).
pub fn looks_open(conn: &Conn) -> bool {
    let mut probe = [0u8; 1];
    match conn.stream.try_read(&mut probe) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}
