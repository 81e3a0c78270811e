//! Message framing (RFC 9112 §6): how long a body is. Strict on requests —
//! anything ambiguous is refused and never forwarded (request smuggling):
//! Content-Length together with Transfer-Encoding, more than one
//! Content-Length, a malformed length, a transfer coding other than chunked.

use crate::error::HttpError;
use crate::head::{Fields, Known, RequestHead, ResponseHead, Version};

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Transfer-Encoding codings, lowercased and trimmed, in order.
fn codings(fields: &Fields) -> Vec<Vec<u8>> {
    fields
        .get_all(Known::TransferEncoding)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(|t| t.trim_ascii().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The body framing of a request, or why it is refused.
pub fn request_body(head: &RequestHead) -> Result<BodyLen, HttpError> {
    let te_present = head.fields.get(Known::TransferEncoding).is_some();
    let mut cls = head.fields.get_all(Known::ContentLength);
    let cl = cls.next();
    if cls.next().is_some() {
        return Err(HttpError::new(400, "more than one Content-Length"));
    }
    if te_present {
        if cl.is_some() {
            return Err(HttpError::new(
                400,
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if head.version == Version::Http10 {
            return Err(HttpError::new(
                400,
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        let c = codings(&head.fields);
        return match c.as_slice() {
            [only] if only == b"chunked" => Ok(BodyLen::Chunked),
            list if list.iter().any(|t| t == b"chunked") => Err(HttpError::new(
                400,
                "chunked is not the only transfer coding",
            )),
            _ => Err(HttpError::new(501, "unsupported transfer coding")),
        };
    }
    match cl {
        None => Ok(BodyLen::Empty),
        Some(v) => match parse_length(v) {
            Some(0) => Ok(BodyLen::Empty),
            Some(n) => Ok(BodyLen::Length(n)),
            None => Err(HttpError::new(400, "malformed Content-Length")),
        },
    }
}

/// The body framing of a response to a request with `method`.
pub fn response_body(method: &[u8], head: &ResponseHead) -> Result<BodyLen, HttpError> {
    if method == b"HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(BodyLen::Empty);
    }
    if head.fields.get(Known::TransferEncoding).is_some() {
        let c = codings(&head.fields);
        return Ok(if c.last().is_some_and(|t| t == b"chunked") {
            BodyLen::Chunked
        } else {
            BodyLen::UntilClose
        });
    }
    let mut value: Option<u64> = None;
    for v in head.fields.get_all(Known::ContentLength) {
        for part in v.split(|&b| b == b',') {
            let n = parse_length(part.trim_ascii())
                .ok_or(HttpError::new(502, "malformed Content-Length from parent"))?;
            if value.is_some_and(|x| x != n) {
                return Err(HttpError::new(
                    502,
                    "conflicting Content-Length from parent",
                ));
            }
            value = Some(n);
        }
    }
    Ok(match value {
        Some(0) => BodyLen::Empty,
        Some(n) => BodyLen::Length(n),
        None => BodyLen::UntilClose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{parse_request, parse_response, Limits};
    use bytes::BytesMut;

    fn req(text: &str) -> Result<BodyLen, HttpError> {
        let mut b = BytesMut::from(text.as_bytes());
        request_body(&parse_request(&mut b, &Limits::default()).unwrap().unwrap())
    }

    #[test]
    fn request_framing_is_strict() {
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n"), Ok(BodyLen::Empty));
        assert_eq!(
            req("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyLen::Length(5))
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(BodyLen::Chunked)
        );
        let e = |t| req(t).unwrap_err().status;
        assert_eq!(
            e("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            e("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            400
        );
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), 400);
        assert_eq!(e("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), 400);
        assert_eq!(
            e("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(e("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), 501);
        assert_eq!(
            e("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn response_framing() {
        let res = |m: &[u8], t: &str| {
            let mut b = BytesMut::from(t.as_bytes());
            response_body(m, &parse_response(&mut b, 4096).unwrap().unwrap())
        };
        assert_eq!(
            res(b"GET", "HTTP/1.1 200 OK\r\n\r\n"),
            Ok(BodyLen::UntilClose)
        );
        assert_eq!(
            res(b"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            Ok(BodyLen::Empty)
        );
        assert_eq!(
            res(b"GET", "HTTP/1.1 304 Not Modified\r\n\r\n"),
            Ok(BodyLen::Empty)
        );
        assert_eq!(
            res(b"GET", "HTTP/1.1 200 OK\r\nContent-Length: 9, 9\r\n\r\n"),
            Ok(BodyLen::Length(9))
        );
        assert_eq!(
            res(
                b"GET",
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nContent-Length: 8\r\n\r\n"
            )
            .unwrap_err()
            .status,
            502
        );
        assert_eq!(
            res(
                b"GET",
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            ),
            Ok(BodyLen::Chunked)
        );
    }
}
