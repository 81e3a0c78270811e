//! Squid's `refresh_pattern` (`[[cache.refresh_pattern]]` in carpool.toml):
//! how long a response without explicit freshness stays fresh, by URL.
//!
//! This module owns the compiled list, which entry applies to a URL, and
//! the lifetime that entry gives. It does not decide whether a heuristic
//! applies at all: that is RFC 9111 §4.2.2's question, answered by the
//! cache's freshness rules (`cache/freshness.rs`: no `s-maxage`, `max-age`
//! or `Expires`, and a heuristically cacheable status or `public`), which
//! ask here only then, and keep their own heuristic (10% of the time since
//! `Last-Modified`, at most a day; nothing without it) when no pattern is
//! configured.
//!
//! The rule, as Squid 5.7 applies it (`refreshStaleness` in its
//! `src/refresh.cc`) to an object without explicit expiry:
//!
//! 1. The first pattern, in file order, whose regex matches the URL (the
//!    cache key URL, `http://host[:port]/path?query`) applies; when none
//!    does, Squid's default: min 0, 20%, max 4320 minutes (three days).
//! 2. With a `Last-Modified` at least a second before `Date` (or, without
//!    `Date`, before the response arrived): the lifetime is `percent` of
//!    that interval, in whole seconds rounded down as Squid computes it,
//!    and at most `max`. `min` plays no part here: an object younger than
//!    `min` whose factor says stale is stale (only Squid's
//!    `override-lastmod`, not supported, lets `min` win).
//! 3. Without one (none, not a valid date, more than one, or not before
//!    `Date`): the lifetime is `min`, and at most `max`.
//!
//! `max` below `min` is allowed, as in Squid: `max` wins.
//!
//! Where this differs from Squid:
//! - The regexes are those of the `regex` crate (bytes, Unicode off,
//!   as the access rules' `url_regex`), not POSIX extended: the usual
//!   patterns (`^ftp:`, `\.(gif|png)$`, `(/cgi-bin/|\?)`) mean the same;
//!   there are no backreferences, `{` must start a valid repetition, `.`
//!   does not match a newline (a URL has none), and `\d` is a digit
//!   (POSIX has no such escape). POSIX classes (`[[:digit:]]`) and GNU's
//!   word boundaries (`\<`, `\>`) work.
//! - The lifetime is fixed when the response is stored (or refreshed by a
//!   304), not at each request: after a reload that changes the patterns,
//!   objects stored before it keep the lifetime they had.
//! - Squid counts in whole seconds and still calls an object fresh at an
//!   age of exactly `max`; here it is stale from `max` on.
//! - The options after the numbers (`override-expire`, `ignore-reload`,
//!   `max-stale=`…) are not supported.

use std::time::Duration;

use regex::bytes::Regex;

/// Squid's ceiling of `min` and `max`: a year, in minutes.
pub const MAX_MINUTES: u64 = 60 * 24 * 365;

/// What a pattern sets: the `min`, `percent` and `max` of its line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Lifetime of an object without a usable `Last-Modified`.
    pub min: Duration,
    /// Lifetime, in percent of the time between `Last-Modified` and `Date`.
    pub percent: u32,
    /// Longest lifetime.
    pub max: Duration,
}

/// What applies when patterns are configured and none matches the URL
/// (Squid's default: min 0, 20%, max three days).
pub const SQUID_DEFAULT: Limits = Limits {
    min: Duration::ZERO,
    percent: 20,
    max: Duration::from_secs(4320 * 60),
};

impl Limits {
    /// Limits from a squid.conf line's numbers: `min` and `max` in minutes.
    pub fn from_minutes(min: u64, percent: u32, max: u64) -> Limits {
        Limits {
            min: Duration::from_secs(min.saturating_mul(60)),
            percent,
            max: Duration::from_secs(max.saturating_mul(60)),
        }
    }

    /// The freshness lifetime these limits give an object whose
    /// `Last-Modified` is `since_modified` before its `Date` (`None`: it
    /// has no usable one). See the module documentation for the rule.
    pub fn lifetime(&self, since_modified: Option<Duration>) -> Duration {
        let life = match since_modified.map(|d| d.as_secs()).filter(|&s| s > 0) {
            // Squid: the interval times percent/100, as a double, truncated
            Some(secs) => {
                let factor = f64::from(self.percent) / 100.0;
                Duration::from_secs((secs as f64 * factor) as u64)
            }
            None => self.min,
        };
        life.min(self.max)
    }
}

/// One `[[cache.refresh_pattern]]`: a regex over the URL and its limits.
#[derive(Clone, Debug)]
pub struct RefreshPattern {
    regex: Regex,
    source: String,
    case_insensitive: bool,
    limits: Limits,
}

impl PartialEq for RefreshPattern {
    fn eq(&self, other: &Self) -> bool {
        (&self.source, self.case_insensitive, self.limits)
            == (&other.source, other.case_insensitive, other.limits)
    }
}

impl RefreshPattern {
    /// Compiles `regex` (case-insensitive: Squid's `-i`); the error says
    /// why it is no regular expression.
    pub fn new(regex: &str, case_insensitive: bool, limits: Limits) -> Result<Self, String> {
        Ok(RefreshPattern {
            regex: proxy::rules::compile(regex, case_insensitive)?,
            source: regex.to_string(),
            case_insensitive,
            limits,
        })
    }
}

/// The configured patterns, in file order. Two lists are equal when they
/// were built from the same lines (a reload restarts a cache only when its
/// settings changed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RefreshPatterns {
    list: Vec<RefreshPattern>,
}

impl RefreshPatterns {
    /// The patterns, first one first.
    pub fn new(list: Vec<RefreshPattern>) -> RefreshPatterns {
        RefreshPatterns { list }
    }

    /// True when none is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The limits for `url`: those of the first pattern that matches it,
    /// else [`SQUID_DEFAULT`]. Allocates nothing once a thread has matched
    /// (the regex crate keeps its scratch space for the next match).
    pub fn limits(&self, url: &[u8]) -> Limits {
        self.list
            .iter()
            .find(|p| p.regex.is_match(url))
            .map_or(SQUID_DEFAULT, |p| p.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn pattern(regex: &str, i: bool, min: u64, percent: u32, max: u64) -> RefreshPattern {
        RefreshPattern::new(regex, i, Limits::from_minutes(min, percent, max)).unwrap()
    }

    /// Squid's shipped lines.
    fn squid_conf() -> RefreshPatterns {
        RefreshPatterns::new(vec![
            pattern("^ftp:", false, 1440, 20, 10080),
            pattern("^gopher:", false, 1440, 0, 1440),
            pattern(r"(/cgi-bin/|\?)", true, 0, 0, 0),
            pattern(".", false, 0, 20, 4320),
        ])
    }

    #[test]
    fn the_first_pattern_that_matches_applies() {
        let p = squid_conf();
        assert_eq!(
            p.limits(b"ftp://f.example/a"),
            Limits::from_minutes(1440, 20, 10080)
        );
        // the ? makes it the third line's, though "." matches too
        assert_eq!(
            p.limits(b"http://h.example/a?b"),
            Limits::from_minutes(0, 0, 0)
        );
        assert_eq!(
            p.limits(b"http://h.example/a"),
            Limits::from_minutes(0, 20, 4320)
        );
        // -i: case-insensitive, the others not
        assert_eq!(
            p.limits(b"http://h.example/CGI-BIN/x"),
            Limits::from_minutes(0, 0, 0)
        );
        assert_eq!(
            p.limits(b"FTP://f.example/a"),
            Limits::from_minutes(0, 20, 4320)
        );
        // none matches: Squid's default
        let only_ftp = RefreshPatterns::new(vec![pattern("^ftp:", false, 1440, 20, 10080)]);
        assert_eq!(only_ftp.limits(b"http://h.example/a"), SQUID_DEFAULT);
        assert_eq!(SQUID_DEFAULT, Limits::from_minutes(0, 20, 4320));
    }

    /// Patterns as squid.conf files have them compile and mean the same.
    #[test]
    fn squid_conf_patterns_compile() {
        let url = b"http://dl.example/pub/Debian/pool/a_1.2.deb";
        for (re, i, matches) in [
            (r"\.(deb|rpm|iso)$", false, true),
            (r"\.(DEB|RPM)$", true, true),
            (r"^http:\/\/dl\.example\/", false, true),
            (r"[[:digit:]]\.[[:digit:]]", false, true),
            (r"/debian/", false, false),
            (r"/debian/", true, true),
            (r"\<pool\>", false, true),
            (r"(/cgi-bin/|\?)", true, false),
        ] {
            let p = RefreshPatterns::new(vec![pattern(re, i, 1, 1, 1)]);
            assert_eq!(p.limits(url) != SQUID_DEFAULT, matches, "{re}");
        }
    }

    #[test]
    fn percent_of_the_last_modified_age_at_most_max_and_min_plays_no_part() {
        let l = Limits::from_minutes(10, 20, 60);
        // 20% of an hour: 12 minutes
        assert_eq!(l.lifetime(Some(secs(3600))), secs(720));
        // 20% of a day is more than max
        assert_eq!(l.lifetime(Some(secs(86_400))), secs(3600));
        // 20% of 10 minutes is below min: Squid's factor decides, not min
        assert_eq!(l.lifetime(Some(secs(600))), secs(120));
        // as Squid computes it: 29% of 100 s is 28 s (0.29 as a double)
        assert_eq!(
            Limits::from_minutes(0, 29, 60).lifetime(Some(secs(100))),
            secs(28)
        );
        // whole seconds, rounded down
        assert_eq!(
            l.lifetime(Some(Duration::from_millis(4_900))),
            Duration::ZERO
        );
        // more than 100% is allowed (Squid has no limit)
        assert_eq!(
            Limits::from_minutes(0, 500, 60).lifetime(Some(secs(60))),
            secs(300)
        );
    }

    #[test]
    fn without_last_modified_min_at_most_max() {
        let l = Limits::from_minutes(10, 20, 60);
        assert_eq!(l.lifetime(None), secs(600));
        // a Last-Modified not before Date counts as none
        assert_eq!(l.lifetime(Some(Duration::ZERO)), secs(600));
        assert_eq!(l.lifetime(Some(Duration::from_millis(900))), secs(600));
        // max below min: max wins
        assert_eq!(Limits::from_minutes(10, 20, 5).lifetime(None), secs(300));
        assert_eq!(
            Limits::from_minutes(0, 20, 60).lifetime(None),
            Duration::ZERO
        );
    }

    #[test]
    fn equal_when_built_from_the_same_lines() {
        assert_eq!(squid_conf(), squid_conf());
        let mut other = squid_conf();
        other.list[3] = pattern(".", false, 0, 20, 4321);
        assert_ne!(squid_conf(), other);
        let mut other = squid_conf();
        other.list[2] = pattern(r"(/cgi-bin/|\?)", false, 0, 0, 0);
        assert_ne!(squid_conf(), other);
        assert!(RefreshPattern::new("(", false, SQUID_DEFAULT)
            .unwrap_err()
            .contains("is not a regular expression"));
    }
}
