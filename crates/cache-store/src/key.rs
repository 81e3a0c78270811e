//! The key of a stored object: a 128-bit xxh3 hash of the caller's key string.
//! Owns the hash choice and the key's text form (32 lowercase hex digits, also
//! the object's file name on disk).

use std::fmt;

/// 128-bit key of a stored object: xxh3-128 of the caller's key string.
///
/// Two different key strings can in theory share a `Key`; the store keeps the
/// key string with every object and compares it on lookup, so a collision is
/// a miss, never a wrong object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(u128);

/// Length of a key in hex.
pub(crate) const KEY_HEX_LEN: usize = 32;

impl Key {
    /// The key of a key string.
    pub fn of(s: &[u8]) -> Key {
        Key(xxhash_rust::xxh3::xxh3_128(s))
    }

    /// A key from its 128-bit value (as [`Key::as_u128`] returns it).
    pub const fn from_u128(v: u128) -> Key {
        Key(v)
    }

    /// The 128-bit value.
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// The key of an object file name: exactly 32 lowercase hex digits.
    pub(crate) fn parse_hex(s: &str) -> Option<Key> {
        if s.len() != KEY_HEX_LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Key)
    }

    /// The top byte: names the subdirectory the object file lives in.
    pub(crate) fn dir_byte(self) -> u8 {
        (self.0 >> 120) as u8
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strict_parse() {
        let k = Key::of(b"http://example.com/");
        let s = k.to_string();
        assert_eq!(s.len(), KEY_HEX_LEN);
        assert_eq!(Key::parse_hex(&s), Some(k));
        assert_eq!(Key::parse_hex(&s.to_uppercase()), None);
        assert_eq!(Key::parse_hex(&s[1..]), None);
        assert_eq!(Key::parse_hex("+0000000000000000000000000000000"), None);
        assert_eq!(k.dir_byte(), u8::from_str_radix(&s[..2], 16).unwrap());
    }

    #[test]
    fn key_is_xxh3_128() {
        assert_eq!(
            Key::of(b"abc").as_u128(),
            xxhash_rust::xxh3::xxh3_128(b"abc")
        );
        assert_ne!(Key::of(b"a"), Key::of(b"b"));
        assert_eq!(
            format!("{:?}", Key::from_u128(1)),
            format!("Key({:032x})", 1)
        );
    }
}
