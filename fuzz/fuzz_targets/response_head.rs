//! The response head parser and response framing (`httpx::head::parse_response`,
//! `httpx::framing::response_body`): what a parent or an origin sends back.
//!
//! Input: one byte (the head size limit and the request method), then the
//! bytes the parent sent.
//!
//! Properties: every prefix gives "incomplete", or the same head, or an
//! error only where the whole input is refused too; a head re-serialised
//! parses to the same; framing agrees with RFC 9112 §6.3 written out here.
#![no_main]

use bytes::BytesMut;
use httpx::framing::{response_body, BodyLen};
use httpx::head::{parse_response, ResponseHead};
use libfuzzer_sys::fuzz_target;

const METHODS: [&[u8]; 4] = [b"GET", b"HEAD", b"POST", b"OPTIONS"];

fuzz_target!(|data: &[u8]| {
    let [a, input @ ..] = data else {
        return;
    };
    let max_head = 32 + usize::from(*a >> 2) * 32;
    let method = METHODS[usize::from(*a & 3)];
    let whole = parse(input, max_head);

    let step = (input.len() / 512).max(1);
    for k in (0..input.len()).step_by(step) {
        let part = parse(&input[..k], max_head);
        match (&whole, &part) {
            (_, Ok(None)) => {}
            (Ok(Some((h, n))), Ok(Some((p, m)))) => {
                assert!(k >= *n);
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
    assert!(head.status <= 999);

    let framing = response_body(method, &head).map_err(|e| e.status);
    assert_eq!(framing, reference_framing(method, &head), "{head:?}");

    let mut out = Vec::new();
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(format!(" {:03} ", head.status).as_bytes());
    out.extend_from_slice(head.reason());
    out.extend_from_slice(b"\r\n");
    head.fields.write_kept(&mut out, |_, _, _| true);
    out.extend_from_slice(b"\r\n");
    let again = match parse(&out, usize::MAX) {
        Ok(Some((h, m))) => {
            assert_eq!(m, out.len());
            h
        }
        other => panic!(
            "re-serialised head does not parse ({:?}): {:?}",
            other.err(),
            String::from_utf8_lossy(&out)
        ),
    };
    same_head(&head, &again);
    assert_eq!(response_body(method, &again).map_err(|e| e.status), framing);
});

type Parsed = Result<Option<(ResponseHead, usize)>, httpx::HttpError>;

fn parse(bytes: &[u8], max_head: usize) -> Parsed {
    let mut buf = BytesMut::from(bytes);
    let head = parse_response(&mut buf, max_head)?;
    Ok(head.map(|h| {
        let n = bytes.len() - buf.len();
        assert_eq!(&bytes[n..], &buf[..], "what follows the head is kept");
        (h, n)
    }))
}

fn same_head(a: &ResponseHead, b: &ResponseHead) {
    assert_eq!(a.status, b.status);
    assert_eq!(a.reason(), b.reason());
    assert_eq!(a.version, b.version);
    assert!(a.fields.iter().eq(b.fields.iter()), "fields differ");
}

/// RFC 9112 §6.3 for a response to `method`.
fn reference_framing(method: &[u8], head: &ResponseHead) -> Result<BodyLen, u16> {
    if method == b"HEAD" || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(BodyLen::Empty);
    }
    let named = |n: &str| -> Vec<&[u8]> {
        head.fields
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, v)| v)
            .collect()
    };
    let te = named("transfer-encoding");
    if !te.is_empty() {
        // the final coding decides: chunked, or read until the close
        let last = te
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|t| t.trim_ascii())
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => BodyLen::Chunked,
            _ => BodyLen::UntilClose,
        });
    }
    // a list of equal lengths is one length (§6.3 item 5)
    let mut length = None;
    for part in named("content-length")
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
    {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(502);
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(502);
        }
        length = Some(n);
    }
    Ok(match length {
        None => BodyLen::UntilClose,
        Some(0) => BodyLen::Empty,
        Some(n) => BodyLen::Length(n),
    })
}
