//! Cache directives as RFC 9111 §5.2 defines them: the `Cache-Control`
//! fields of a request or a response (directive names matched without
//! regard to case, values as tokens or quoted strings), and a targeted
//! field such as `CDN-Cache-Control` (RFC 9213: a structured dictionary,
//! ignored whole when it does not parse).

/// Largest delta-seconds kept: RFC 9111 §1.2.2 says to use 2^31 for any
/// larger value.
pub const MAX_SECONDS: u64 = 1 << 31;

/// The directives of one message that the cache acts on. Unknown ones are
/// ignored (RFC 9111 §5.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `max-age=N`.
    pub max_age: Option<u64>,
    /// `s-maxage=N` (responses; for shared caches).
    pub s_maxage: Option<u64>,
    /// `max-stale` (requests): `Some(None)` without a value (any staleness).
    pub max_stale: Option<Option<u64>>,
    /// `min-fresh=N` (requests).
    pub min_fresh: Option<u64>,
    /// `stale-while-revalidate=N` (RFC 5861).
    pub stale_while_revalidate: Option<u64>,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<u64>,
    /// `no-cache` (with or without a field list: a list is treated as if
    /// it were absent, the stricter reading).
    pub no_cache: bool,
    /// `no-store`.
    pub no_store: bool,
    /// `private` (with or without a field list).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `immutable` (RFC 8246).
    pub immutable: bool,
    /// `only-if-cached` (requests).
    pub only_if_cached: bool,
    /// `no-transform`.
    pub no_transform: bool,
    /// A directive that sets freshness appeared twice with different values
    /// (RFC 9111 §4.2.1: such a response is to be treated as stale).
    pub conflicting: bool,
}

/// How to read a field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    /// `Cache-Control`: names in any case, values tokens or quoted strings;
    /// what does not parse is skipped.
    Lenient,
    /// A targeted field (RFC 9213 §2.1): an RFC 8941 dictionary, keys in
    /// lower case, integer values; anything else makes it invalid.
    Dictionary,
}

impl Directives {
    /// The directives of every `Cache-Control` value given.
    pub fn cache_control<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Directives {
        let mut d = Directives::default();
        for v in values {
            // lenient parsing never fails
            let _ = d.add(v, Syntax::Lenient);
        }
        d
    }

    /// The directives of a targeted field's values; `None` when a value is
    /// not a valid dictionary or there is no directive at all, so that the
    /// field is ignored (RFC 9213 §2.1).
    pub fn targeted<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Directives> {
        let mut d = Directives::default();
        let mut any = false;
        for v in values {
            any |= d.add(v, Syntax::Dictionary)?;
        }
        any.then_some(d)
    }

    /// Adds the directives of one field value; `Some(true)` when it had at
    /// least one, `None` when a dictionary does not parse.
    fn add(&mut self, value: &[u8], syntax: Syntax) -> Option<bool> {
        let mut any = false;
        for item in split_items(value) {
            let item = item.trim_ascii();
            if item.is_empty() {
                if syntax == Syntax::Dictionary {
                    return None;
                }
                continue;
            }
            let (name, arg) = match item.iter().position(|&b| b == b'=') {
                Some(i) => (item[..i].trim_ascii(), Some(item[i + 1..].trim_ascii())),
                None => (item, None),
            };
            let Ok(name) = std::str::from_utf8(name) else {
                if syntax == Syntax::Dictionary {
                    return None;
                }
                continue;
            };
            if syntax == Syntax::Dictionary && !is_dictionary_key(name) {
                return None;
            }
            let arg = match (arg, syntax) {
                (None, _) => Arg::None,
                (Some(a), Syntax::Lenient) => Arg::parse_lenient(a),
                (Some(a), Syntax::Dictionary) => Arg::parse_dictionary(a)?,
            };
            any = true;
            self.set(&name.to_ascii_lowercase(), arg);
        }
        Some(any)
    }

    fn set(&mut self, name: &str, arg: Arg) {
        let seconds = |slot: &mut Option<u64>, conflicting: &mut bool| {
            if let Some(n) = arg.seconds() {
                if slot.is_some_and(|old| old != n) {
                    *conflicting = true;
                }
                *slot = Some(slot.map_or(n, |old| old.min(n)));
            }
        };
        match name {
            "max-age" => seconds(&mut self.max_age, &mut self.conflicting),
            "s-maxage" => seconds(&mut self.s_maxage, &mut self.conflicting),
            "min-fresh" => seconds(&mut self.min_fresh, &mut false),
            "stale-while-revalidate" => seconds(&mut self.stale_while_revalidate, &mut false),
            "stale-if-error" => seconds(&mut self.stale_if_error, &mut false),
            "max-stale" => {
                self.max_stale = Some(match arg {
                    Arg::None => None,
                    _ => arg.seconds(),
                })
            }
            "no-cache" => self.no_cache = true,
            "no-store" => self.no_store = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "immutable" => self.immutable = true,
            "only-if-cached" => self.only_if_cached = true,
            "no-transform" => self.no_transform = true,
            _ => {}
        }
    }

    /// Whether a stale response may be served without revalidation at all
    /// (RFC 9111 §4.2.4: not after `must-revalidate`, `proxy-revalidate`,
    /// `s-maxage` or `no-cache`, in a shared cache).
    pub fn allows_stale(&self) -> bool {
        !(self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache)
    }
}

/// A directive's argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arg {
    None,
    /// delta-seconds, capped at [`MAX_SECONDS`].
    Seconds(u64),
    /// Anything else (a quoted field list, a token).
    Other,
}

impl Arg {
    fn seconds(self) -> Option<u64> {
        match self {
            Arg::Seconds(n) => Some(n),
            _ => None,
        }
    }

    /// A token or quoted string (RFC 9111 §5.2: senders use the token form
    /// for delta-seconds, recipients accept the quoted one).
    fn parse_lenient(a: &[u8]) -> Arg {
        let a = match a {
            [b'"', inner @ .., b'"'] => inner,
            _ => a,
        };
        delta_seconds(a).map_or(Arg::Other, Arg::Seconds)
    }

    /// An RFC 8941 bare item: an integer is seconds (a negative one or
    /// another type is no valid value for the directives we use, but the
    /// dictionary stays valid).
    fn parse_dictionary(a: &[u8]) -> Option<Arg> {
        if a.is_empty() {
            return None;
        }
        if let Some(n) = delta_seconds(a) {
            return Some(Arg::Seconds(n));
        }
        match a[0] {
            b'-' if delta_seconds(&a[1..]).is_some() => Some(Arg::Other),
            b'"' if a.len() >= 2 && a[a.len() - 1] == b'"' => Some(Arg::Other),
            b'?' if a == b"?0" || a == b"?1" => Some(Arg::Other),
            c if c.is_ascii_alphabetic() || c == b'*' => Some(Arg::Other),
            _ => None,
        }
    }
}

/// delta-seconds (RFC 9111 §1.2.2; also the `Age` value): digits only,
/// capped at [`MAX_SECONDS`].
pub fn delta_seconds(a: &[u8]) -> Option<u64> {
    if a.is_empty() || !a.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        a.iter()
            .fold(0u64, |n, d| (n * 10 + u64::from(d - b'0')).min(MAX_SECONDS)),
    )
}

/// An RFC 8941 key: a lower-case letter or `*`, then lower-case letters,
/// digits, `_ - . *`.
fn is_dictionary_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0] == b'*')
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.' | b'*')
        })
}

/// The comma-separated items of a value, commas inside quoted strings kept.
fn split_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = v;
    let mut done = v.is_empty();
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in rest.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    let item = &rest[..i];
                    rest = &rest[i + 1..];
                    return Some(item);
                }
                _ => {}
            }
        }
        done = true;
        Some(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(v: &str) -> Directives {
        Directives::cache_control([v.as_bytes()])
    }

    #[test]
    fn names_are_matched_in_any_case() {
        let d = cc("MaX-AgE=60, No-CaChE, S-MAXAGE=\"5\", Must-Revalidate");
        assert_eq!((d.max_age, d.s_maxage), (Some(60), Some(5)));
        assert!(d.no_cache && d.must_revalidate);
        assert!(!d.allows_stale());
    }

    #[test]
    fn values_and_lists() {
        let d = cc("private=\"Set-Cookie, X-A\", max-age=10, no-cache=\"a,b\"");
        assert!(d.private && d.no_cache);
        assert_eq!(d.max_age, Some(10));
        let d = Directives::cache_control([&b"max-stale"[..], b"min-fresh=3, stale-if-error=9"]);
        assert_eq!(d.max_stale, Some(None));
        assert_eq!((d.min_fresh, d.stale_if_error), (Some(3), Some(9)));
        assert_eq!(cc("max-stale=7").max_stale, Some(Some(7)));
        // too large: 2^31; not a number: ignored
        assert_eq!(
            cc("max-age=99999999999999999999").max_age,
            Some(MAX_SECONDS)
        );
        assert_eq!(cc("max-age=ten").max_age, None);
        assert_eq!(cc("max-age=-1").max_age, None);
        assert_eq!(cc(",, ,max-age=1,").max_age, Some(1));
        assert_eq!(cc(""), Directives::default());
    }

    #[test]
    fn two_different_freshness_values_conflict() {
        let d = Directives::cache_control([&b"max-age=60"[..], b"max-age=5"]);
        assert!(d.conflicting);
        assert_eq!(d.max_age, Some(5));
        assert!(!cc("max-age=60, max-age=60").conflicting);
    }

    #[test]
    fn targeted_fields_are_dictionaries_or_ignored() {
        let d = Directives::targeted([&b"max-age=600, stale-if-error=30"[..]]).unwrap();
        assert_eq!((d.max_age, d.stale_if_error), (Some(600), Some(30)));
        let d = Directives::targeted([&b"no-store"[..]]).unwrap();
        assert!(d.no_store);
        let d = Directives::targeted([&b"private, max-age=?1, x=\"y\", z=-4"[..]]).unwrap();
        assert!(d.private && d.max_age.is_none());
        // upper case keys, empty members, quoted integers: not a dictionary
        for bad in [
            "Max-Age=60",
            "max-age=60,,private",
            "max-age=\"60",
            "max-age=6 0",
            "",
        ] {
            assert_eq!(Directives::targeted([bad.as_bytes()]), None, "{bad:?}");
        }
        assert_eq!(Directives::targeted(std::iter::empty()), None);
    }
}
