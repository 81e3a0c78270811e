//! Bytes both ways between the client and a peer, for a CONNECT tunnel or a
//! connection a `101` switched to another protocol.

use std::time::Duration;

use httpx::conn::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of each direction's copy buffer.
const SPLICE_BUFFER: usize = 16 * 1024;

/// Copies both ways until both directions are done or nothing moved for
/// `idle` (bytes already buffered on either side go first). Half-closes are
/// passed on. Returns (client→peer, peer→client) bytes.
pub async fn splice_both(client: &mut Conn, peer: &mut Conn, idle: Duration) -> (u64, u64) {
    let mut up = 0u64;
    let mut down = 0u64;
    if !client.rbuf.is_empty() {
        if peer.stream.write_all(&client.rbuf).await.is_err() {
            return (0, 0);
        }
        up += client.rbuf.len() as u64;
        client.rbuf.clear();
    }
    if !peer.rbuf.is_empty() {
        if client.stream.write_all(&peer.rbuf).await.is_err() {
            return (up, 0);
        }
        down += peer.rbuf.len() as u64;
        peer.rbuf.clear();
    }
    let (mut cr, mut cw) = client.stream.split();
    let (mut pr, mut pw) = peer.stream.split();
    let mut a = vec![0u8; SPLICE_BUFFER];
    let mut b = vec![0u8; SPLICE_BUFFER];
    let (mut up_open, mut down_open) = (true, true);
    while up_open || down_open {
        tokio::select! {
            r = cr.read(&mut a), if up_open => match r {
                Ok(0) | Err(_) => {
                    up_open = false;
                    let _ = pw.shutdown().await;
                }
                Ok(n) => {
                    if pw.write_all(&a[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                }
            },
            r = pr.read(&mut b), if down_open => match r {
                Ok(0) | Err(_) => {
                    down_open = false;
                    let _ = cw.shutdown().await;
                }
                Ok(n) => {
                    if cw.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                    down += n as u64;
                }
            },
            _ = tokio::time::sleep(idle) => {
                tracing::info!("tunnel closed after {idle:?} without traffic");
                break;
            }
        }
    }
    (up, down)
}
