//! The request head parser and request framing (`httpx::head::parse_request`,
//! `httpx::framing::request_body`).
//!
//! Input: three bytes of limits (small, so that every limit can be reached
//! in a short input), then the bytes a client sent.
//!
//! Properties:
//! - arrival does not matter: every prefix of the input gives "incomplete",
//!   or the same head, or an error only where the whole input is refused
//!   too (the connection re-parses its buffer after each read);
//! - a head re-serialised (request line, fields, blank line) parses to the
//!   same method, target, version, fields and framing;
//! - framing agrees with RFC 9112 §6 as written out here independently:
//!   anything ambiguous (Content-Length with Transfer-Encoding, two
//!   Content-Lengths, a malformed length, a coding other than a lone
//!   chunked, chunked in HTTP/1.0) is refused.
#![no_main]

use bytes::BytesMut;
use httpx::framing::{request_body, BodyLen};
use httpx::head::{parse_request, Limits, RequestHead, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, c, input @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_head_bytes: 64 + usize::from(*a) * 16,
        max_headers: 1 + usize::from(*b % 64),
        max_uri_bytes: 1 + usize::from(*c) * 4,
        ..Limits::default()
    };
    let whole = parse(input, &limits);

    // every prefix, as if the head arrived in two reads
    let step = (input.len() / 512).max(1);
    for k in (0..input.len()).step_by(step) {
        let part = parse(&input[..k], &limits);
        match (&whole, &part) {
            (_, Ok(None)) => {}
            (Ok(Some((h, n))), Ok(Some((p, m)))) => {
                assert!(k >= *n, "a head out of {k} bytes, but it needs {n}");
                assert_eq!(m, n);
                same_head(h, p);
            }
            (Ok(Some((_, n))), Err(e)) => panic!(
                "the first {k} bytes are refused ({} {}), all {} bytes are a head of {n}",
                e.status,
                e.reason,
                input.len()
            ),
            (Ok(None), Err(e)) => panic!(
                "the first {k} bytes are refused ({} {}), all {} are incomplete",
                e.status,
                e.reason,
                input.len()
            ),
            (Err(_), Err(_)) => {}
            (_, Ok(Some(_))) => panic!("a head out of the first {k} bytes only"),
        }
    }

    let Ok(Some((head, n))) = whole else {
        return;
    };
    assert_eq!(head.raw().len(), n);
    assert!(!head.method().is_empty() && !head.target().is_empty());
    assert!(head.target().len() <= limits.max_uri_bytes);
    assert!(n <= limits.max_head_bytes);
    assert!(head.fields.len() <= limits.max_headers);

    // framing, against the rules written out independently
    let framing = request_body(&head).map_err(|e| e.status);
    assert_eq!(framing, reference_framing(&head), "{head:?}");

    // re-serialised, it parses to the same (with CRLF and `name: value`
    // it may be longer than the head was: not held to the size limit)
    let roomy = Limits {
        max_head_bytes: usize::MAX,
        ..limits.clone()
    };
    let mut out = Vec::new();
    out.extend_from_slice(head.method());
    out.push(b' ');
    out.extend_from_slice(head.target());
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
    head.fields.write_kept(&mut out, |_, _, _| true);
    out.extend_from_slice(b"\r\n");
    let again = match parse(&out, &roomy) {
        Ok(Some((h, m))) => {
            assert_eq!(m, out.len());
            h
        }
        Ok(None) => panic!(
            "re-serialised head is incomplete: {:?}",
            String::from_utf8_lossy(&out)
        ),
        Err(e) => panic!(
            "re-serialised head refused ({} {}): {:?}",
            e.status,
            e.reason,
            String::from_utf8_lossy(&out)
        ),
    };
    same_head(&head, &again);
    assert_eq!(request_body(&again).map_err(|e| e.status), framing);
});

type Parsed = Result<Option<(RequestHead, usize)>, httpx::HttpError>;

/// Parses `bytes` as the connection does; the head and its length.
fn parse(bytes: &[u8], limits: &Limits) -> Parsed {
    let mut buf = BytesMut::from(bytes);
    let head = parse_request(&mut buf, limits)?;
    Ok(head.map(|h| {
        let n = bytes.len() - buf.len();
        assert_eq!(&bytes[n..], &buf[..], "what follows the head is kept");
        (h, n)
    }))
}

fn same_head(a: &RequestHead, b: &RequestHead) {
    assert_eq!(a.method(), b.method());
    assert_eq!(a.target(), b.target());
    assert_eq!(a.version, b.version);
    assert!(a.fields.iter().eq(b.fields.iter()), "fields differ");
    assert!(a
        .fields
        .iter_known()
        .map(|(k, _, _)| k)
        .eq(b.fields.iter_known().map(|(k, _, _)| k)));
}

/// RFC 9112 §6.1–6.3 for a request, strictly: the status a proxy must
/// answer, or the body length.
fn reference_framing(head: &RequestHead) -> Result<BodyLen, u16> {
    let named = |n: &str| -> Vec<&[u8]> {
        head.fields
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, v)| v)
            .collect()
    };
    let te = named("transfer-encoding");
    let cl = named("content-length");
    if cl.len() > 1 {
        return Err(400);
    }
    if !te.is_empty() {
        if !cl.is_empty() || head.version == Version::Http10 {
            return Err(400);
        }
        let codings: Vec<Vec<u8>> = te
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| t.trim_ascii().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        let chunked = codings.iter().filter(|t| *t == b"chunked").count();
        return match (codings.len(), chunked) {
            (1, 1) => Ok(BodyLen::Chunked),
            (_, 0) => Err(501),
            _ => Err(400),
        };
    }
    let Some(v) = cl.first() else {
        return Ok(BodyLen::Empty);
    };
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(400);
    }
    if v.len() > 19 {
        // longer than any u64 needs (leading zeros count: refused, not wrong)
        return Err(400);
    }
    let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(if n == 0 {
        BodyLen::Empty
    } else {
        BodyLen::Length(n)
    })
}
