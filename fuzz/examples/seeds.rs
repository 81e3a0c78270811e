//! Writes the committed seed corpora, fuzz/corpus/<target>/seed-*:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! Request and response heads and chunked bodies are the shapes a proxy
//! meets (smuggling attempts among them); URLs and request lines come from
//! the Squid vectors in testdata/squid; configurations from the README's
//! examples, the embedded default and the Squid configs in testdata/squid;
//! disk records are written by the real store (`cache_store::Store`) and
//! copied from its directory (and, since the store writes only format
//! version 2 with 256 KiB blocks, re-encoded as version 1 and with 4 KiB
//! blocks as `disk/format.rs` describes, so that older files and bodies of
//! several blocks are seeds too); so are the small-object log's segments
//! (with a tombstone and a rewritten record among them), with a few inputs
//! for `disk_segment`'s model besides. Each input starts with the option bytes its
//! target reads (see the target's doc comment). Re-running it rewrites the
//! seeds (their names are stable); it does not touch other files.

use cache_store::fuzzing::{walk_segment, SegmentEnd};
use cache_store::{DiskConfig, Key, Store, StoreConfig, DEFAULT_SMALL_OBJECT};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.parent().expect("fuzz/ is in the repository");
    let mut out = Seeds {
        dir: fuzz.join("corpus"),
        count: 0,
    };
    request_heads(&mut out);
    response_heads(&mut out);
    chunked(&mut out);
    urls(&mut out, root);
    configs(&mut out, root);
    disk_records(&mut out);
    disk_segments(&mut out);
    println!("{} seeds under {}", out.count, out.dir.display());
}

struct Seeds {
    dir: PathBuf,
    count: usize,
}

impl Seeds {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.dir.join(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
        self.count += 1;
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn request_heads(out: &mut Seeds) {
    // limits: a generous one and a tight one (see request_head.rs)
    const ROOMY: &[u8] = &[0xff, 0x3f, 0xff];
    const TIGHT: &[u8] = &[0x04, 0x03, 0x08];
    let heads: &[(&str, &str)] = &[
        ("origin-get", "GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"),
        ("absolute-get", "GET http://www.example.com/a/b?c=d HTTP/1.1\r\nHost: www.example.com\r\nProxy-Connection: keep-alive\r\n\r\n"),
        ("http10", "GET http://example.com/ HTTP/1.0\r\n\r\n"),
        ("connect", "CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\nProxy-Authorization: Basic dTpw\r\n\r\n"),
        ("post-cl", "POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2"),
        ("post-chunked", "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("pipelined", "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("leading-crlf", "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("bare-lf", "GET / HTTP/1.1\nHost: h\nX-A: 1\n\n"),
        ("mixed-lf", "GET / HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n"),
        ("expect", "PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
        ("expect-http10", "PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"),
        ("websocket", "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        ("connection-tokens", "GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\n\r\n"),
        ("purge", "PURGE http://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        ("options-star", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("via-loop", "GET http://h/ HTTP/1.1\r\nHost: h\r\nVia: 1.1 fe1 (carpool)\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n"),
        // smuggling-looking ones
        ("smuggle-cl-te", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"),
        ("smuggle-te-cl", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
        ("smuggle-cl-cl", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("smuggle-cl-list", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ("smuggle-cl-plus", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello"),
        ("smuggle-cl-hex", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello"),
        ("smuggle-cl-zeros", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000000000000000005\r\n\r\nhello"),
        ("smuggle-cl-huge", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        ("smuggle-te-space-name", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
        ("smuggle-te-xchunked", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n"),
        ("smuggle-te-chunked-identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
        ("smuggle-te-twice", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("smuggle-te-tab", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\n\r\n"),
        ("smuggle-te-vtab", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\x0b\r\n\r\n"),
        ("smuggle-te-case", "POST / HTTP/1.1\r\nHost: h\r\ntRANSFER-eNCODING: cHuNkEd\r\n\r\n"),
        ("smuggle-te-http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("smuggle-obs-fold", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"),
        ("smuggle-nul", "GET / HTTP/1.1\r\nHost: h\0evil\r\n\r\n"),
        ("smuggle-cr-in-value", "GET / HTTP/1.1\r\nHost: h\rX-Evil: 1\r\n\r\n"),
        ("host-twice", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
        ("host-vs-uri", "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n"),
        ("lowercase-method", "get / HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("http2-version", "GET / HTTP/2.0\r\nHost: h\r\n\r\n"),
        ("http09", "GET /\r\n\r\n"),
        ("double-space", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("empty-value", "GET / HTTP/1.1\r\nHost:\r\nX-Empty: \r\n\r\n"),
        ("long-method", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA / HTTP/1.1\r\n\r\n"),
        ("utf8-target", "GET /caf\u{e9}?q=\u{fc}ber HTTP/1.1\r\nHost: h\r\n\r\n"),
    ];
    for (name, text) in heads {
        out.put("request_head", name, &cat(&[ROOMY, text.as_bytes()]));
    }
    out.put(
        "request_head",
        "tight-limits",
        &cat(&[
            TIGHT,
            b"GET /a/long/path/to/somewhere HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
        ]),
    );
    out.put(
        "request_head",
        "tight-long-method",
        &cat(&[
            TIGHT,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ /x HTTP/1.1\r\n\r\n",
        ]),
    );
    let many: String = (0..70).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    out.put(
        "request_head",
        "many-headers",
        &cat(&[ROOMY, b"GET / HTTP/1.1\r\n", many.as_bytes(), b"\r\n"]),
    );
}

fn response_heads(out: &mut Seeds) {
    // byte 0: head limit (>> 2) and method (& 3: GET, HEAD, POST, OPTIONS)
    let heads: &[(&str, u8, &str)] = &[
        ("200-cl", 0xfc, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello"),
        ("200-chunked", 0xfc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("200-close", 0xfc, "HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody until close"),
        ("head-cl", 0xfd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("204", 0xfc, "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
        ("304", 0xfc, "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n"),
        ("100-continue", 0xfe, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ("101-upgrade", 0xfc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        ("no-reason", 0xfc, "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"),
        ("cl-list", 0xfc, "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc"),
        ("cl-conflict", 0xfc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("te-and-cl", 0xfc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        ("te-gzip-chunked", 0xfc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("te-chunked-gzip", 0xfc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        ("cl-bad", 0xfc, "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
        ("bare-lf", 0xfc, "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"),
        ("cache-headers", 0xfc, "HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nCache-Control: max-age=60, stale-if-error=30\r\nVary: Accept-Encoding\r\nETag: \"v1\"\r\nLast-Modified: Sun, 31 Dec 2023 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"),
        ("tight", 0x04, "HTTP/1.1 200 OK\r\nX-Long-Header-Name: a fairly long value to pass the limit\r\nContent-Length: 0\r\n\r\n"),
        ("obs-fold", 0xfc, "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        ("status-999", 0xfc, "HTTP/1.1 999 Odd\r\n\r\n"),
    ];
    for (name, opts, text) in heads {
        out.put("response_head", name, &cat(&[&[*opts], text.as_bytes()]));
    }
}

fn chunked(out: &mut Seeds) {
    let bodies: &[(&str, &[u8])] = &[
        ("simple", b"5\r\nhello\r\n0\r\n\r\n"),
        ("two-chunks", b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"),
        ("uppercase-hex", b"A\r\n0123456789\r\nFF\r\n"),
        ("extension", b"5;name=value\r\nhello\r\n0;last\r\n\r\n"),
        ("quoted-extension", b"5;a=\"b;c\"\r\nhello\r\n0\r\n\r\n"),
        ("space-before-ext", b"5 ;x\r\nhello\r\n0\r\n\r\n"),
        ("trailers", b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"),
        ("leftover", b"1\r\na\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n"),
        ("empty", b"0\r\n\r\n"),
        ("leading-zeros", b"0005\r\nhello\r\n000\r\n\r\n"),
        ("too-many-digits", b"0000000000000000005\r\nhello\r\n0\r\n\r\n"),
        ("huge-size", b"fffffffffffffff\r\nxx"),
        ("overflow", b"ffffffffffffffffff\r\n"),
        ("bare-lf-size", b"5\nhello\r\n0\r\n\r\n"),
        ("bare-lf-data", b"5\r\nhello\n0\r\n\r\n"),
        ("data-too-long", b"5\r\nhello!\r\n0\r\n\r\n"),
        ("negative", b"-5\r\nhello\r\n0\r\n\r\n"),
        ("hex-prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("no-final-crlf", b"5\r\nhello\r\n0\r\n"),
        ("bare-lf-trailer", b"0\r\nX: 1\n\r\n"),
        ("cr-only", b"5\rhello\r\n"),
        ("smuggle-in-ext", b"5;\nGET / HTTP/1.1\r\nhello\r\n0\r\n\r\n"),
        ("binary-data", b"8\r\n\x00\x01\x02\r\n\xff\xfe\r\n\r\n0\r\n\r\n"),
        ("tab-ext", b"3\t;x\r\nabc\r\n0\r\n\r\n"),
        ("long-run", b"40\r\n0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n20\r\n0123456789abcdef0123456789abcdef\r\n0\r\n\r\n"),
    ];
    for (i, (name, body)) in bodies.iter().enumerate() {
        // the split seed varies: pieces of 1..16 bytes
        out.put(
            "chunked",
            name,
            &cat(&[&[(i as u8).wrapping_mul(37)], body]),
        );
    }
}

/// Un-escapes a testdata/squid vector column (`\xHH`).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn urls(out: &mut Seeds, root: &Path) {
    // byte 0: method (index % 8: GET HEAD POST CONNECT OPTIONS PUT PURGE get),
    // bit 7: also as a `carpool route` line
    let text = fs::read_to_string(root.join("testdata/squid/equal4.vectors"))
        .expect("testdata/squid/equal4.vectors");
    let lines: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').nth(2))
        .map(unescape)
        .collect();
    // the first few hundred are hand-made shapes; the rest random
    for (i, line) in lines.iter().take(420).step_by(10).enumerate() {
        out.put("normalize", &format!("line-{i:02}"), &cat(&[&[0x80], line]));
        // its target, when it is `GET target HTTP/1.1`
        if let Some(t) = line
            .strip_prefix(b"GET ")
            .and_then(|t| t.strip_suffix(b" HTTP/1.1"))
        {
            out.put("normalize", &format!("target-{i:02}"), &cat(&[&[0], t]));
        }
    }
    let more: &[(&str, u8, &[u8])] = &[
        ("connect", 3, b"www.example.com:443"),
        ("connect-v6", 3, b"[2001:db8::1]:8443"),
        ("connect-noport", 3, b"example.com"),
        ("options-star", 4, b"*"),
        ("urn", 0, b"urn:ISBN:0-395-36341-1"),
        ("ftp-userinfo", 0, b"ftp://user%40x:p%3Aw@ftp.example.com/pub/"),
        ("v4-short", 0, b"http://127.1/"),
        ("v6-mapped", 0, b"http://[::ffff:1.2.3.4]:8080/x"),
        ("trailing-dots", 0, b"http://h.example../a"),
        ("whitespace", 0, b"http://h.example/a b\tc"),
        ("unknown-scheme", 1, b"Gopher://H.example:70/1"),
        ("cache-object", 0, b"cache_object://localhost/info"),
        ("squid-internal", 0, b"http://h/squid-internal-static/icons/x.png"),
        ("long-host", 0, b"http://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd.example/"),
        ("purge", 6, b"http://example.com/x"),
        ("line-connect", 0x83, b"CONNECT example.com:443 HTTP/1.1"),
        ("line-http09", 0x80, b"GET http://h/a"),
    ];
    for (name, m, t) in more {
        out.put("normalize", name, &cat(&[&[*m], t]));
    }
}

fn configs(out: &mut Seeds, root: &Path) {
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut n = 0;
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (&mut block, line) {
            (None, "```toml") => block = Some(String::new()),
            (Some(b), "```") => {
                out.put("config_toml", &format!("readme-{n}"), b.as_bytes());
                n += 1;
                block = None;
            }
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    let default = fs::read(root.join("crates/carpool/src/array/default.toml"))
        .expect("crates/carpool/src/array/default.toml");
    out.put("config_toml", "default", &default);
    let toml: &[(&str, &str)] = &[
        ("squid-mode", "hash = \"squid\"\n[[parent]]\nname = \"p1\"\nhost = \"10.0.0.1\"\nport = 3128\nweight = 2\ncarp_key = \"host,path\"\n[[parent]]\nhost = \"10.0.0.2\"\nport = 3128\n"),
        ("carp-v1", "hash = \"carp-v1\"\n[[parent]]\nhost = \"a\"\nport = 1\n[[parent]]\nhost = \"b\"\nport = 65535\nmax_conn = 100\n"),
        ("duplicate-names", "[[parent]]\nname = \"x\"\nhost = \"a\"\nport = 80\n[[parent]]\nname = \"x\"\nhost = \"b\"\nport = 80\n"),
        ("bad-values", "hash = \"md5\"\n[[parent]]\nhost = \"\"\nport = 99999\nweight = 0\ncarp_key = \"hostname\"\n[frontend]\nworkers = -1\nallow_clients = [\"10.0.0.0/33\"]\nsafe_ports = [\"9-1\", 0]\nclient_header_timeout = -1.5\n"),
        ("unknown-key", "[[parent]]\nhost = \"a\"\nport = 80\ncolour = \"blue\"\n"),
        ("no-parents", "hash = \"hrw\"\n[frontend]\nlisten = \"127.0.0.1:3128\"\n"),
        ("syntax-error", "[[parent]\nhost = \"a\"\n"),
        ("accel", "[frontend]\nlisten = \"[::1]:8080\"\nmode = \"accel\"\ndefault_site = \"www.example.com\"\n[health]\nprobe = \"http\"\nprobe_url = \"http://x/health\"\nfail_limit = 3\nprobe_interval = 0.5\n[[parent]]\nhost = \"c1\"\nport = 3128\n"),
        ("cache-sizes", "[cache]\nmem = \"512M\"\ndisk = \"2T\"\nmem_max_object = \"1K\"\nmax_object_size = \"8G\"\nupstream_proxy = \"up.example:3128\"\n[[parent]]\nhost = \"c\"\nport = 1\nmem = \"auto\"\ndisk = \"1X\"\n"),
        ("admin", "[admin]\nlisten = \"127.0.0.1:3180\"\n[[parent]]\nname = \"\u{e9}t\u{e9}\"\nhost = \"[2001:db8::1]\"\nport = 3128\n"),
    ];
    for (name, text) in toml {
        out.put("config_toml", name, text.as_bytes());
    }

    let mut port = 4000;
    for ent in fs::read_dir(root.join("testdata/squid")).expect("testdata/squid") {
        let path = ent.expect("list testdata/squid").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".squid.conf") else {
            continue;
        };
        let text = fs::read_to_string(&path).expect("read squid.conf");
        // placeholders as scripts/squid-vectors fills them
        let mut filled = String::new();
        for (i, part) in text.split('@').enumerate() {
            if i % 2 == 1
                && part
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                if part.contains("PORT") {
                    port += 1;
                    filled.push_str(&port.to_string());
                } else {
                    filled.push_str("/tmp/squid");
                }
            } else {
                if i % 2 == 1 {
                    filled.push('@');
                }
                filled.push_str(part);
            }
        }
        out.put("config_squid", stem, filled.as_bytes());
    }
    let squid: &[(&str, &str)] = &[
        ("minimal", "cache_peer 10.0.0.1 parent 3128 0 carp\ncache_peer 10.0.0.2 parent 3128 0 carp\n"),
        ("continuation", "cache_peer 10.0.0.1 parent 3128 0 \\\n  carp name=a weight=2 \\\n  carp-key=host,path\ncache_peer 10.0.0.2 parent 3128 0 carp name=b\n"),
        ("mixed-peers", "# frontend\nhttp_port 3128 accel defaultsite=www.example.com\nhttp_port 8080\ninclude /etc/squid/conf.d/*.conf\ncache_peer sib.example sibling 3128 3130 proxy-only\ncache_peer p1.example parent 3128 0 carp weight=0 max-conn=50\ncache_peer P1.example parent 3128 0 carp\n"),
        ("errors", "cache_peer a parent 99999 0 carp\ncache_peer b cousin 3128 0\ncache_peer c sibling 3128 0 carp\ncache_peer d parent 3128 0 carp-key=host carp\ncache_peer e parent 3128 0 carp weight=x\ncache_peer f parent 3128\nhttp_port nowhere\n"),
        ("crlf-comments", "cache_peer 10.0.0.1 parent 3128 0 carp name=x # a comment\r\n#cache_peer 10.0.0.9 parent 3128 0 carp\r\n   \r\ncache_peer [::1] parent 3128 0 carp name=y carp-key=schemeX,hostname,port,path,params\r\n"),
        ("utf8-names", "cache_peer caf\u{e9} parent 3128 0 carp\ncache_peer x parent 3128 0 carp name=\u{fc}\n"),
    ];
    for (name, text) in squid {
        out.put("config_squid", name, text.as_bytes());
    }
    out.put(
        "config_squid",
        "latin1",
        b"cache_peer caf\xe9 parent 3128 0 carp\ncache_peer ok parent 3128 0 carp\n",
    );
}

fn disk_records(out: &mut Seeds) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(
        StoreConfig {
            mem_bytes: 0,
            mem_max_object: 0,
            disk: Some(DiskConfig {
                dir: dir.path().to_path_buf(),
                max_bytes: 64 << 20,
                sync_interval: Duration::from_secs(3600),
                // Object files, not the small-object log: this target
                // decodes object files.
                small_object: 0,
                progress_interval: cache_store::DEFAULT_PROGRESS_INTERVAL,
            }),
            max_object_size: 1 << 20,
        },
        |_| {},
    )
    .expect("open a store");
    let objects: &[(&str, &[u8], Vec<u8>)] = &[
        (
            "http://example.com/",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
            b"<html>hello</html>".to_vec(),
        ),
        (
            "http://example.com/empty",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            Vec::new(),
        ),
        ("http://example.com/no-meta", b"", b"x".to_vec()),
        (
            "http://example.com/big",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n",
            (0..3000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        (
            "http://example.com/blocks",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9000\r\n\r\n",
            (0..9000u32).map(|i| (i * 13 % 241) as u8).collect(),
        ),
        (
            "http://example.com/vary\0accept-encoding=gzip",
            b"HTTP/1.1 200 OK\r\nVary: Accept-Encoding\r\nContent-Encoding: gzip\r\n\r\n",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0],
        ),
        ("", b"meta of an empty key", b"body".to_vec()),
    ];
    for (key_str, meta, body) in objects {
        let key = Key::of(key_str.as_bytes());
        let mut w = store
            .begin(key, key_str.as_bytes(), meta, Some(body.len() as u64))
            .expect("begin");
        w.append(body).expect("append");
        w.finish().expect("finish");
    }
    // a refresh: the meta sidecar
    let k = objects[0].0.as_bytes();
    assert!(store
        .update_meta(Key::of(k), k, b"HTTP/1.1 200 OK\r\nAge: 0\r\n\r\n")
        .expect("update_meta"));
    store.close().expect("close");
    drop(store);
    let mut files = Vec::new();
    for sub in fs::read_dir(dir.path().join("objects")).expect("objects/") {
        for f in fs::read_dir(sub.expect("list").path()).expect("objects/XX") {
            files.push(f.expect("list").path());
        }
    }
    files.push(dir.path().join("checkpoint"));
    files.sort();
    let (mut objects_n, mut sidecars_n) = (0, 0);
    for path in files {
        let bytes = fs::read(&path).expect("read a store file");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let label = if name == "checkpoint" {
            "checkpoint".to_string()
        } else if name.ends_with(".m") {
            sidecars_n += 1;
            format!("sidecar-{sidecars_n}")
        } else {
            objects_n += 1;
            format!("object-{objects_n}")
        };
        let mut variants = vec![(label.clone(), bytes.clone())];
        if label.starts_with("object-") {
            // the re-encoder is the store's format: it gives back its files
            assert_eq!(reencode(&bytes, Some(18)), bytes, "{label}");
            variants.push((format!("{label}-v1"), reencode(&bytes, None)));
            if u64::from_le_bytes(bytes[40..48].try_into().unwrap()) > 4096 {
                variants.push((format!("{label}-4k"), reencode(&bytes, Some(12))));
            }
        }
        // as found (verified after an unclean stop), and with checksums
        // recomputed after mutation (see disk_record.rs)
        for (label, bytes) in variants {
            if label.starts_with("object-") {
                // each is whole: the store's decoders accept every block
                let key = Key::from_u128(u128::from_le_bytes(bytes[16..32].try_into().unwrap()));
                let found = cache_store::fuzzing::check_object_file(&bytes, key, true);
                assert!(found.is_ok_and(|o| o.in_memory), "{label}");
            }
            out.put(
                "disk_record",
                &format!("{label}-verify"),
                &cat(&[&[8], &bytes]),
            );
            out.put(
                "disk_record",
                &format!("{label}-reseal"),
                &cat(&[&[3], &bytes]),
            );
        }
    }
}

fn disk_segments(out: &mut Seeds) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(
        StoreConfig {
            mem_bytes: 0,
            mem_max_object: 0,
            disk: Some(DiskConfig {
                dir: dir.path().to_path_buf(),
                max_bytes: 64 << 20,
                sync_interval: Duration::from_secs(3600),
                // Small objects go to the log: these are its segments.
                small_object: DEFAULT_SMALL_OBJECT,
                progress_interval: cache_store::DEFAULT_PROGRESS_INTERVAL,
            }),
            max_object_size: 1 << 20,
        },
        |_| {},
    )
    .expect("open a store");
    let objects: &[(&str, &[u8], Vec<u8>)] = &[
        (
            "http://example.com/",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
            b"<html>hello</html>".to_vec(),
        ),
        (
            "http://example.com/empty",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            Vec::new(),
        ),
        ("http://example.com/no-meta", b"", b"x".to_vec()),
        (
            "http://example.com/gone",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"removed".to_vec(),
        ),
        (
            "http://example.com/vary\0accept-encoding=gzip",
            b"HTTP/1.1 200 OK\r\nVary: Accept-Encoding\r\nContent-Encoding: gzip\r\n\r\n",
            vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0],
        ),
        (
            "http://example.com/small",
            b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n",
            (0..300u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("", b"meta of an empty key", b"body".to_vec()),
    ];
    for (key_str, meta, body) in objects {
        let key = Key::of(key_str.as_bytes());
        let mut w = store
            .begin(key, key_str.as_bytes(), meta, Some(body.len() as u64))
            .expect("begin");
        w.append(body).expect("append");
        w.finish().expect("finish");
    }
    // a removal (a tombstone) and a refresh (the record written again)
    let gone = objects[3].0.as_bytes();
    assert!(store.remove(Key::of(gone), gone));
    let k = objects[0].0.as_bytes();
    assert!(store
        .update_meta(Key::of(k), k, b"HTTP/1.1 200 OK\r\nAge: 0\r\n\r\n")
        .expect("update_meta"));
    store.close().expect("close");
    drop(store);
    let files = fs::read_dir(dir.path().join("objects"))
        .expect("objects/")
        .flat_map(|sub| fs::read_dir(sub.expect("list").path()).expect("objects/XX"))
        .count();
    assert_eq!(files, 0, "every object went to the log");
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.path().join("log"))
        .expect("log/")
        .map(|e| e.expect("list").path())
        .collect();
    segments.sort();
    assert!(!segments.is_empty());
    for (i, path) in segments.iter().enumerate() {
        let bytes = fs::read(path).expect("read a segment");
        let id = u64::from_str_radix(&path.file_name().unwrap().to_string_lossy(), 16)
            .expect("a segment's name is its id");
        // the store's walk finds every record, to the end
        let mut walk = walk_segment(&bytes, id);
        let records = walk.by_ref().count();
        assert_eq!(
            records,
            objects.len() + 2,
            "objects, a tombstone, a rewrite"
        );
        assert_eq!(walk.end(), Some(SegmentEnd::Written));
        assert!(bytes.len() < 4096, "a small seed");
        // as written, with checksums recomputed after mutation, and also
        // walked as another segment (see disk_segment.rs)
        for (name, opts) in [("", 0u8), ("-reseal", 2), ("-other", 4 | 7 << 3)] {
            let label = format!("segment-{}{name}", i + 1);
            out.put("disk_segment", &label, &cat(&[&[opts], &bytes]));
        }
    }
    // The model (bit 7): a segment built from records, then zeros added
    // (bit 6), a byte changed (bit 0), cut (bit 1). After the segment id
    // and the number of records, each record: flags (bit 0: a tombstone),
    // then for an object the key string, meta and body lengths (1, 1 and 2
    // bytes); a fill byte, the publish sequence (4 bytes). Then the
    // number of zeros, the position and mask of the changed byte, the cut.
    let records: &[u8] = &[
        0, 40, 60, 0x10, 0, b'a', 1, 0, 0, 0, // an object, 16 bytes of body
        1, b'b', 2, 0, 0, 0, // a tombstone
        0, 9, 3, 5, 0, b'c', 3, 0, 0, 0, // an object, 5 bytes of body
    ];
    let model: &[(&str, u8, &[u8])] = &[
        ("as-built", 0x80, &[]),
        // records at 32 (176 bytes), 208 (56) and 264 (80)
        ("changed-in-the-tombstone", 0x81, &[248, 0, 0, 0, 0x01]),
        ("cut-in-the-last-record", 0x82, &[0x20, 1, 0, 0]),
        // 64 zeros after 344: one changed at 350, cut at 400
        (
            "zeros-changed-and-cut",
            0xc3,
            &[64, 0x5e, 1, 0, 0, 0x80, 0x90, 1, 0, 0],
        ),
    ];
    for (name, opts, tail) in model {
        let input = cat(&[&[*opts], &[7, 0, 3], records, tail]);
        out.put("disk_segment", &format!("model-{name}"), &input);
    }
}

/// An object file the store wrote, re-encoded as `disk/format.rs` gives
/// the format: as version 1 (`shift` None: no block table, the body's
/// xxh3-64 at bytes 56..64, bytes 12..16 zero) or as version 2 with blocks
/// of `1 << shift` bytes.
fn reencode(file: &[u8], shift: Option<u32>) -> Vec<u8> {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, Xxh3};
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    let body_offset = 72 + u32_at(32) + u32_at(36);
    let body_len = u64::from_le_bytes(file[40..48].try_into().unwrap()) as usize;
    let body = &file[body_offset..body_offset + body_len];
    let mut b = file[..body_offset + body_len].to_vec();
    let sum = match shift {
        None => {
            b[8..16].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
            xxh3_64(body)
        }
        Some(shift) => {
            b[12..16].copy_from_slice(&shift.to_le_bytes());
            let table: Vec<u8> = body
                .chunks(1 << shift)
                .enumerate()
                .flat_map(|(i, block)| xxh3_64_with_seed(block, i as u64).to_le_bytes())
                .collect();
            b.extend_from_slice(&table);
            xxh3_64(&table)
        }
    };
    b[56..64].copy_from_slice(&sum.to_le_bytes());
    let mut h = Xxh3::new();
    h.update(&b[..64]);
    h.update(&b[72..body_offset]);
    b[64..72].copy_from_slice(&h.digest().to_le_bytes());
    b
}
