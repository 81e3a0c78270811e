//! Printing bytes that may not be text: bytes below 0x20, from 0x7f, and `\`
//! are written `\xHH`; everything else as is (the form of the test vectors).

/// Appends `bytes` to `out`, escaped.
pub fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if !(0x20..0x7f).contains(&b) || b == b'\\' {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
