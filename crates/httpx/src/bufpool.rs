//! Read buffers shared by the connections of one thread, most recently
//! returned first (HAProxy's way): a connection holds a buffer only while
//! bytes are in it, never while it waits for the peer. With many connections
//! the few buffers in use stay in the CPU cache, instead of each message
//! landing in its own connection's cold buffer; idle keep-alive connections
//! hold no buffer at all.
//!
//! Write buffers (the heads a connection writes, a small answer with its
//! body) are shared the same way: taken for a request, given back when the
//! connection goes idle.

use std::cell::RefCell;

use bytes::BytesMut;

/// Size of the buffers handed out (and the largest single read).
pub const BUF_SIZE: usize = 64 * 1024;

/// Most buffers a thread keeps for reuse; more are freed when returned.
pub const MAX_POOLED: usize = 64;

/// Capacity of a new write buffer: a response head, or a small answer
/// whole, fits without growing.
pub const WRITE_BUF_START: usize = 2 * 1024;

/// Write buffers that grew past this (a huge head) are freed, not pooled.
pub const WRITE_BUF_MAX: usize = 16 * 1024;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static FREE_WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least [`BUF_SIZE`] bytes: the one
/// returned last if any, else a new one.
pub fn take() -> BytesMut {
    FREE.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(BUF_SIZE))
}

/// Moves the buffer in `slot` into the pool when it is empty and its whole
/// allocation can be reused (not shared with bytes split off it, not grown
/// past twice [`BUF_SIZE`]), leaving `slot` without a buffer; otherwise
/// leaves it where it is. A pooled buffer is reset to the start of its
/// allocation, so that the next reader writes where the last one did.
pub fn give_back(slot: &mut BytesMut) {
    if !slot.is_empty() || slot.capacity() == 0 {
        return;
    }
    let _ = slot.try_reclaim(slot.capacity() + 1);
    if !(BUF_SIZE..=2 * BUF_SIZE).contains(&slot.capacity()) {
        return;
    }
    let buf = std::mem::take(slot);
    FREE.with_borrow_mut(|free| {
        if free.len() < MAX_POOLED {
            free.push(buf);
        }
    });
}

/// An empty write buffer: the one returned last if any, else a new one of
/// [`WRITE_BUF_START`] bytes.
pub fn take_write() -> Vec<u8> {
    FREE_WRITE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(WRITE_BUF_START))
}

/// Keeps `buf` for the next [`take_write`] (emptied), unless it grew past
/// [`WRITE_BUF_MAX`] or [`MAX_POOLED`] are kept already: then it is freed.
pub fn give_back_write(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > WRITE_BUF_MAX {
        return;
    }
    buf.clear();
    FREE_WRITE.with_borrow_mut(|free| {
        if free.len() < MAX_POOLED {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_returned_first_taken_and_shared_or_full_buffers_stay() {
        let mut a = take();
        a.extend_from_slice(b"hello");
        let held = a.split_to(5); // `a` now shares its allocation with `held`
        give_back(&mut a);
        assert!(a.capacity() > 0, "a shared buffer stays with its owner");
        let p = a.as_ptr();
        let mut b = take();
        assert_ne!(b.as_ptr(), p);
        assert!(b.capacity() >= BUF_SIZE);
        let pb = b.as_ptr();
        give_back(&mut b);
        assert_eq!(b.capacity(), 0, "pooled: the slot holds no buffer");
        let mut c = take();
        assert_eq!(c.as_ptr(), pb, "the buffer returned last comes back first");
        let mut d = take();
        d.extend_from_slice(b"x");
        give_back(&mut d);
        assert_eq!(&d[..], b"x", "a buffer with bytes in it stays");
        give_back(&mut c);
        assert_eq!(take().as_ptr(), pb);
        drop(held);
    }

    #[test]
    fn write_buffers_come_back_emptied_and_huge_ones_are_freed() {
        let mut a = take_write();
        assert!(a.is_empty() && a.capacity() >= WRITE_BUF_START);
        a.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        let pa = a.as_ptr();
        give_back_write(a);
        let b = take_write();
        assert_eq!(b.as_ptr(), pa, "the buffer returned last comes back first");
        assert!(b.is_empty());
        give_back_write(Vec::with_capacity(WRITE_BUF_MAX + 1));
        let c = take_write();
        assert!(
            c.capacity() <= WRITE_BUF_MAX,
            "a buffer past WRITE_BUF_MAX is not kept"
        );
        give_back_write(b);
        give_back_write(c);
    }
}
