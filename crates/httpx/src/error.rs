//! Errors that end a request with a precise status and a logged reason, and
//! the short error responses sent for them.

use std::fmt;

/// An HTTP status code.
pub type Status = u16;

/// A request that cannot go on: the status to answer and why (for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpError {
    /// The status the client gets.
    pub status: Status,
    /// A few words for the log and the response body.
    pub reason: &'static str,
}

impl HttpError {
    /// A new error.
    pub const fn new(status: Status, reason: &'static str) -> Self {
        HttpError { status, reason }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HttpError {}

/// The standard reason phrase of a status.
pub fn reason_phrase(status: Status) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        _ => "Error",
    }
}

/// A complete error response: status line, `Content-Type: text/plain`,
/// `Content-Length`, the reason in `X-Carpool-Error`, `Connection: close`
/// when `close`, and a one-line body.
pub fn error_response(status: Status, reason: &str, close: bool) -> Vec<u8> {
    let body = format!("{status} {}: {reason}\n", reason_phrase(status));
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        reason_phrase(status),
        body.len()
    );
    out.push_str("X-Carpool-Error: ");
    out.push_str(reason);
    out.push_str("\r\n");
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}
