//! IP literal handling as Squid 5.7 sees a URL host.
//!
//! Squid turns a host into an address with glibc's `getaddrinfo(AI_NUMERICHOST)`
//! and, when that succeeds, prints the address back (`inet_ntop`) in place of
//! what the client sent. So `127.1`, `0x7f.0.0.1` and `2130706433` all become
//! `127.0.0.1`, `[2001:DB8:0::1]` becomes `[2001:db8::1]`, and an IPv4-mapped
//! IPv6 literal `[::ffff:1.2.3.4]` becomes `1.2.3.4`. The unspecified addresses
//! (`0.0.0.0`, `::`, and their spellings) are kept as typed. These functions
//! replicate glibc's parsers and printer byte for byte.

use std::fmt::Write as _;

/// A parsed numeric host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numeric {
    /// IPv4 (also an IPv4-mapped IPv6 literal).
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

/// What Squid stores as the URL host for `host` (already lowercased, without
/// brackets): the canonical text of a numeric address, or `None` to keep the
/// host as it is (a name, or an unspecified address).
pub fn canonical_host(host: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    push_numeric(&mut out, canonical_numeric(host)?);
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The address Squid prints in place of `host` (see [`canonical_host`]):
/// `None` for a name or an unspecified address. An IPv4-mapped IPv6
/// address comes back as IPv4.
pub fn canonical_numeric(host: &[u8]) -> Option<Numeric> {
    match parse_numeric(host)? {
        Numeric::V4(a) if a == [0; 4] => None,
        Numeric::V6(a) if a == [0; 16] => None,
        Numeric::V6(a) if a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff => {
            // ::ffff:0.0.0.0 counts as "any" too
            (a[12..] != [0; 4]).then_some(Numeric::V4([a[12], a[13], a[14], a[15]]))
        }
        n => Some(n),
    }
}

/// Appends the canonical text of `n`: dotted quad, or bracketed IPv6.
pub fn push_numeric(out: &mut Vec<u8>, n: Numeric) {
    match n {
        Numeric::V4(a) => {
            for (i, &b) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if b >= 100 {
                    out.push(b'0' + b / 100);
                }
                if b >= 10 {
                    out.push(b'0' + b / 10 % 10);
                }
                out.push(b'0' + b % 10);
            }
        }
        Numeric::V6(a) => {
            out.push(b'[');
            out.extend_from_slice(ntop6(&a).as_bytes());
            out.push(b']');
        }
    }
}

/// `getaddrinfo(host, AI_NUMERICHOST)`: IPv4 in `inet_aton` forms (exact), else
/// IPv6 (`inet_pton`), optionally with a numeric `%scope` (which is dropped).
pub fn parse_numeric(host: &[u8]) -> Option<Numeric> {
    if let Some(v4) = aton_exact(host) {
        return Some(Numeric::V4(v4));
    }
    let addr = match host.iter().position(|&b| b == b'%') {
        Some(p) => {
            let scope = &host[p + 1..];
            if scope.is_empty() || !scope.iter().all(u8::is_ascii_digit) || scope.len() > 10 {
                return None;
            }
            let v: u64 = std::str::from_utf8(scope).ok()?.parse().ok()?;
            if v > u32::MAX as u64 {
                return None;
            }
            &host[..p]
        }
        None => host,
    };
    pton6(addr).map(Numeric::V6)
}

/// glibc `__inet_aton_exact`: `a`, `a.b`, `a.b.c` or `a.b.c.d`, each part
/// decimal, octal (leading 0) or hex (0x), the last part filling what is left.
pub fn aton_exact(s: &[u8]) -> Option<[u8; 4]> {
    let mut parts = [0u32; 3];
    let mut nparts = 0usize;
    let mut i = 0usize;
    let val: u64;
    loop {
        if !s.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (v, next) = strtoul0(s, i)?;
        i = next;
        match s.get(i) {
            Some(b'.') => {
                if nparts > 2 || v > 0xff {
                    return None;
                }
                parts[nparts] = v as u32;
                nparts += 1;
                i += 1;
            }
            _ => {
                val = v;
                break;
            }
        }
    }
    if i != s.len() {
        return None; // trailing characters (the exact variant allows none)
    }
    const MAX: [u64; 4] = [0xffff_ffff, 0xff_ffff, 0xffff, 0xff];
    if val > MAX[nparts] {
        return None;
    }
    let mut word = (val as u32).to_be_bytes();
    for (k, p) in parts[..nparts].iter().enumerate() {
        word[k] |= *p as u8;
    }
    Some(word)
}

/// `strtoul(s + i, &end, 0)` for a string starting with a digit, bounded to
/// 32 bits the way `inet_aton` checks it. Returns the value and the end index.
fn strtoul0(s: &[u8], start: usize) -> Option<(u64, usize)> {
    let mut i = start;
    let (base, mut any) = if s[i] == b'0' {
        if matches!(s.get(i + 1), Some(b'x' | b'X'))
            && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 2;
            (16u64, false)
        } else {
            (8u64, false)
        }
    } else {
        (10u64, false)
    };
    let mut v: u64 = 0;
    let mut overflow = false;
    while let Some(&c) = s.get(i) {
        let d = match c {
            b'0'..=b'9' => (c - b'0') as u64,
            b'a'..=b'f' => (c - b'a' + 10) as u64,
            b'A'..=b'F' => (c - b'A' + 10) as u64,
            _ => break,
        };
        if d >= base {
            break;
        }
        any = true;
        match v.checked_mul(base).and_then(|x| x.checked_add(d)) {
            Some(x) => v = x,
            None => overflow = true,
        }
        i += 1;
    }
    if !any && base == 8 {
        // a lone "0" — strtoul consumed it
        return Some((0, start + 1));
    }
    if overflow || v > 0xffff_ffff {
        return None;
    }
    Some((v, i))
}

/// glibc `inet_pton4`: strict dotted quad (no leading zeros).
fn pton4(s: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut octets = 0usize;
    let mut saw_digit = false;
    let mut cur: u32 = 0;
    let mut idx = 0usize;
    for &ch in s {
        if ch.is_ascii_digit() {
            let new = cur * 10 + (ch - b'0') as u32;
            if saw_digit && cur == 0 {
                return None;
            }
            if new > 255 {
                return None;
            }
            cur = new;
            out[idx] = new as u8;
            if !saw_digit {
                octets += 1;
                if octets > 4 {
                    return None;
                }
                saw_digit = true;
            }
        } else if ch == b'.' && saw_digit {
            if octets == 4 {
                return None;
            }
            idx += 1;
            cur = 0;
            saw_digit = false;
        } else {
            return None;
        }
    }
    if octets < 4 {
        return None;
    }
    Some(out)
}

/// glibc `inet_pton6`.
pub fn pton6(src: &[u8]) -> Option<[u8; 16]> {
    let mut tmp = [0u8; 16];
    let mut tp = 0usize;
    let mut colonp: Option<usize> = None;
    let mut i = 0usize;
    if src.is_empty() {
        return None;
    }
    if src[0] == b':' {
        i += 1;
        if src.get(i) != Some(&b':') {
            return None;
        }
    }
    let mut curtok = i;
    let mut xdigits = 0usize;
    let mut val: u32 = 0;
    while i < src.len() {
        let ch = src[i];
        i += 1;
        if let Some(d) = (ch as char).to_digit(16) {
            if xdigits == 4 {
                return None;
            }
            val = (val << 4) | d;
            if val > 0xffff {
                return None;
            }
            xdigits += 1;
            continue;
        }
        if ch == b':' {
            curtok = i;
            if xdigits == 0 {
                if colonp.is_some() {
                    return None;
                }
                colonp = Some(tp);
                continue;
            } else if i == src.len() {
                return None;
            }
            if tp + 2 > 16 {
                return None;
            }
            tmp[tp] = (val >> 8) as u8;
            tmp[tp + 1] = val as u8;
            tp += 2;
            xdigits = 0;
            val = 0;
            continue;
        }
        if ch == b'.' && tp + 4 <= 16 {
            if let Some(v4) = pton4(&src[curtok..]) {
                tmp[tp..tp + 4].copy_from_slice(&v4);
                tp += 4;
                xdigits = 0;
                break;
            }
        }
        return None;
    }
    if xdigits > 0 {
        if tp + 2 > 16 {
            return None;
        }
        tmp[tp] = (val >> 8) as u8;
        tmp[tp + 1] = val as u8;
        tp += 2;
    }
    if let Some(cp) = colonp {
        if tp == 16 {
            return None;
        }
        let n = tp - cp;
        let mut out = [0u8; 16];
        out[..cp].copy_from_slice(&tmp[..cp]);
        out[16 - n..].copy_from_slice(&tmp[cp..tp]);
        return Some(out);
    }
    if tp != 16 {
        return None;
    }
    Some(tmp)
}

/// glibc `inet_ntop6`: longest run (≥ 2) of zero groups as `::`, first on ties;
/// `::a.b.c.d` and `::ffff:a.b.c.d` forms with a dotted tail.
pub fn ntop6(a: &[u8; 16]) -> String {
    let mut w = [0u16; 8];
    for (i, word) in w.iter_mut().enumerate() {
        *word = u16::from_be_bytes([a[2 * i], a[2 * i + 1]]);
    }
    let (mut best, mut best_len) = (None::<usize>, 0usize);
    let (mut cur, mut cur_len) = (None::<usize>, 0usize);
    for (i, &word) in w.iter().enumerate() {
        if word == 0 {
            match cur {
                None => {
                    cur = Some(i);
                    cur_len = 1;
                }
                Some(_) => cur_len += 1,
            }
        } else if let Some(c) = cur {
            if best.is_none() || cur_len > best_len {
                best = Some(c);
                best_len = cur_len;
            }
            cur = None;
        }
    }
    if let Some(c) = cur {
        if best.is_none() || cur_len > best_len {
            best = Some(c);
            best_len = cur_len;
        }
    }
    if best_len < 2 {
        best = None;
    }
    let mut out = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if let Some(b) = best {
            if i >= b && i < b + best_len {
                if i == b {
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best == Some(0) && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            return out;
        }
        let _ = write!(out, "{:x}", w[i]);
        i += 1;
    }
    if let Some(b) = best {
        if b + best_len == 8 {
            out.push(':');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Option<String> {
        canonical_host(s.as_bytes())
    }

    #[test]
    fn ipv4_spellings() {
        assert_eq!(canon("127.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(canon("0x7f.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(canon("017.0.0.1").as_deref(), Some("15.0.0.1"));
        assert_eq!(canon("2130706433").as_deref(), Some("127.0.0.1"));
        assert_eq!(canon("1.2.65535").as_deref(), Some("1.2.255.255"));
        assert_eq!(canon("08.0.0.1"), None);
        assert_eq!(canon("1.2.3.4.5"), None);
        assert_eq!(canon("256.1.1.1"), None);
        assert_eq!(canon("4294967296"), None);
        assert_eq!(canon("0.0.0.0"), None);
        assert_eq!(canon("example.com"), None);
    }

    #[test]
    fn ipv6_spellings() {
        assert_eq!(canon("::1").as_deref(), Some("[::1]"));
        assert_eq!(canon("2001:DB8:0:0::1").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(canon("::ffff:1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(canon("::1.2.3.4").as_deref(), Some("[::1.2.3.4]"));
        assert_eq!(canon("1:0:0:2:0:0:0:3").as_deref(), Some("[1:0:0:2::3]"));
        assert_eq!(canon("1:0:0:2:3:0:0:4").as_deref(), Some("[1::2:3:0:0:4]"));
        assert_eq!(canon("fe80::1%2").as_deref(), Some("[fe80::1]"));
        assert_eq!(canon("::"), None);
        assert_eq!(canon("::1.2.3.04"), None);
        assert_eq!(canon("1::2::3"), None);
        assert_eq!(canon("12345::1"), None);
    }
}
