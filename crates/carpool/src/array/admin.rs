//! The admin listener of `carpool up` (loopback by default): `GET /status`
//! lists the array's components, one per line (`name address state
//! restarts=N`); anything else is 404. Plain HTTP/1.1, one request per
//! connection: it is for people and scripts, not for load.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What `/status` shows: the supervisor rewrites it as its children change.
pub type Status = Rc<RefCell<String>>;

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin listener forever.
pub async fn serve(listener: TcpListener, status: Status) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let status = status.clone();
        tokio::task::spawn_local(async move {
            let mut buf = Vec::with_capacity(1024);
            let read = tokio::time::timeout(READ_TIMEOUT, async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let (code, body) = if buf.starts_with(b"GET /status ") {
                ("200 OK", status.borrow().clone())
            } else {
                ("404 Not Found", "not found: try GET /status\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
