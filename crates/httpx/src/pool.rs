//! Keep-alive connection pools, one per upstream, owned by one worker thread
//! (no locks on the hot path). Optimised for a few busy upstreams: the most
//! recently used idle connection is reused first (it is the least likely to
//! have been closed by the upstream), and idle ones past their timeout are
//! dropped when met.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::conn::Conn;

/// Idle connections to one upstream, oldest first.
#[derive(Debug, Default)]
pub struct IdleQueue(VecDeque<(Conn, Instant)>);

impl IdleQueue {
    /// The most recently used connection that is younger than `timeout`
    /// and still looks open; the others met on the way are dropped.
    pub fn take(&mut self, timeout: Duration) -> Option<Conn> {
        while let Some((conn, since)) = self.0.pop_back() {
            if since.elapsed() < timeout && looks_open(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection after a complete exchange (unless bytes are left
    /// in its buffer), dropping expired ones and the oldest beyond `max`.
    pub fn put(&mut self, mut conn: Conn, max: usize, timeout: Duration) {
        if !conn.rbuf.is_empty() || max == 0 {
            return; // unexpected bytes: not reusable
        }
        conn.release_buffer();
        self.prune(timeout);
        if self.0.len() >= max {
            self.0.pop_front();
        }
        self.0.push_back((conn, Instant::now()));
    }

    /// Drops the connections idle for `timeout` or more.
    pub fn prune(&mut self, timeout: Duration) {
        while self.0.front().is_some_and(|(_, t)| t.elapsed() >= timeout) {
            self.0.pop_front();
        }
    }

    /// Idle connections held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Idle connections to each upstream (indexed 0..n): a fixed set of
/// upstreams, such as a frontend's parents.
#[derive(Debug)]
pub struct Pool {
    idle: Vec<IdleQueue>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// A pool for `upstreams` upstreams keeping at most `max_idle` idle
    /// connections each, for at most `idle_timeout`.
    pub fn new(upstreams: usize, max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: (0..upstreams).map(|_| IdleQueue::default()).collect(),
            max_idle,
            idle_timeout,
        }
    }

    /// An idle connection to upstream `i` that still looks open, if any.
    pub fn take(&mut self, i: usize) -> Option<Conn> {
        self.idle.get_mut(i)?.take(self.idle_timeout)
    }

    /// Returns a connection after a complete exchange.
    pub fn put(&mut self, i: usize, conn: Conn) {
        if let Some(q) = self.idle.get_mut(i) {
            q.put(conn, self.max_idle, self.idle_timeout);
        }
    }

    /// Drops the idle connections to upstream `i` (it moved elsewhere).
    pub fn clear(&mut self, i: usize) {
        if let Some(q) = self.idle.get_mut(i) {
            *q = IdleQueue::default();
        }
    }

    /// Idle connections held for upstream `i`.
    pub fn idle_count(&self, i: usize) -> usize {
        self.idle.get(i).map_or(0, IdleQueue::len)
    }
}

/// Idle connections to upstreams met on the way (a cache's origins), by
/// key, for at most `max_keys` upstreams at once.
#[derive(Debug)]
pub struct KeyedPool<K> {
    idle: HashMap<K, IdleQueue>,
    max_keys: usize,
    max_idle: usize,
    idle_timeout: Duration,
}

impl<K: Eq + Hash + Clone> KeyedPool<K> {
    /// A pool keeping at most `max_idle` idle connections per upstream for
    /// at most `idle_timeout`, for at most `max_keys` upstreams.
    pub fn new(max_keys: usize, max_idle: usize, idle_timeout: Duration) -> Self {
        KeyedPool {
            idle: HashMap::new(),
            max_keys,
            max_idle,
            idle_timeout,
        }
    }

    /// An idle connection to `key` that still looks open, if any.
    pub fn take(&mut self, key: &K) -> Option<Conn> {
        self.idle.get_mut(key)?.take(self.idle_timeout)
    }

    /// Returns a connection after a complete exchange. A new upstream past
    /// `max_keys` (after dropping expired ones) is not pooled.
    pub fn put(&mut self, key: &K, conn: Conn) {
        if !self.idle.contains_key(key) && self.idle.len() >= self.max_keys {
            let timeout = self.idle_timeout;
            self.idle.retain(|_, q| {
                q.prune(timeout);
                !q.is_empty()
            });
            if self.idle.len() >= self.max_keys {
                return;
            }
        }
        self.idle
            .entry(key.clone())
            .or_default()
            .put(conn, self.max_idle, self.idle_timeout);
    }
}

/// True when an idle connection has not been closed by its peer: nothing to
/// read and no end of stream (a readable idle connection was either closed
/// or sent something unsolicited, and is not reusable either way).
pub fn looks_open(conn: &Conn) -> bool {
    let mut probe = [0u8; 1];
    match conn.stream.try_read(&mut probe) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(l: &tokio::net::TcpListener) -> (Conn, tokio::net::TcpStream) {
        let addr = l.local_addr().unwrap();
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (Conn::new(c), s)
    }

    #[tokio::test]
    async fn keyed_pool_reuses_drops_closed_and_bounds_its_keys() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut pool: KeyedPool<&str> = KeyedPool::new(1, 2, Duration::from_secs(30));
        let (c, _peer) = pair(&l).await;
        let local = c.stream.local_addr().unwrap();
        pool.put(&"a", c);
        let again = pool.take(&"a").expect("reused");
        assert_eq!(again.stream.local_addr().unwrap(), local);
        assert!(pool.take(&"a").is_none());
        // a connection its peer closed is not handed out
        let (c, peer) = pair(&l).await;
        pool.put(&"a", c);
        drop(peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(&"a").is_none());
        // one key at most: a second upstream is not pooled while "a" holds one
        let (c1, _p1) = pair(&l).await;
        let (c2, _p2) = pair(&l).await;
        pool.put(&"a", c1);
        pool.put(&"b", c2);
        assert!(pool.take(&"b").is_none());
        assert!(pool.take(&"a").is_some());
    }

    #[tokio::test]
    async fn expired_connections_are_not_reused() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut pool = Pool::new(1, 4, Duration::from_millis(30));
        let (c, _peer) = pair(&l).await;
        pool.put(0, c);
        assert_eq!(pool.idle_count(0), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(pool.take(0).is_none());
    }
}
