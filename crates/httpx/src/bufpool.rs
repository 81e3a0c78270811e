//! Read buffers shared by the connections of one thread, most recently
//! returned first (HAProxy's way): a connection holds a buffer only while
//! bytes are in it, never while it waits for the peer. With many connections
//! the few buffers in use stay in the CPU cache, instead of each message
//! landing in its own connection's cold buffer; idle keep-alive connections
//! hold no buffer at all.

use std::cell::RefCell;

use bytes::BytesMut;

/// Size of the buffers handed out (and the largest single read).
pub const BUF_SIZE: usize = 64 * 1024;

/// Most buffers a thread keeps for reuse; more are freed when returned.
pub const MAX_POOLED: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least [`BUF_SIZE`] bytes: the one
/// returned last if any, else a new one.
pub fn take() -> BytesMut {
    FREE.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(BUF_SIZE))
}

/// True when `buf` is empty and its whole allocation can be reused (not
/// shared with bytes split off it, not grown past twice [`BUF_SIZE`]); then it
/// is also moved back to the start of that allocation, so that the next
/// reader writes where the last one did.
pub fn reusable(buf: &mut BytesMut) -> bool {
    if !buf.is_empty() || buf.capacity() == 0 {
        return false;
    }
    let _ = buf.try_reclaim(buf.capacity() + 1);
    (BUF_SIZE..=2 * BUF_SIZE).contains(&buf.capacity())
}

/// Hands an emptied buffer back for reuse; one that is not [`reusable`] is
/// freed.
pub fn give(mut buf: BytesMut) {
    if reusable(&mut buf) {
        FREE.with_borrow_mut(|free| {
            if free.len() < MAX_POOLED {
                free.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_returned_first_taken_and_shared_buffers_are_not_pooled() {
        let mut a = take();
        a.extend_from_slice(b"hello");
        let held = a.split_to(5); // `a` now shares its allocation with `held`
        let p = a.as_ptr();
        assert!(!reusable(&mut a));
        give(a); // shared: not pooled (`held` keeps the allocation alive)
        let b = take();
        assert_ne!(b.as_ptr(), p);
        assert!(b.capacity() >= BUF_SIZE);
        let pb = b.as_ptr();
        give(b);
        let c = take();
        assert_eq!(c.as_ptr(), pb, "the buffer returned last comes back first");
        let mut d = take();
        d.extend_from_slice(b"x");
        give(d); // not empty: not pooled
        give(c);
        assert_eq!(take().as_ptr(), pb);
        drop(held);
    }
}
