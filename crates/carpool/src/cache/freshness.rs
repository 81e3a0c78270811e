//! RFC 9111 as a shared cache applies it: whether a response may be stored
//! (§3), its freshness lifetime (§4.2.1, heuristics §4.2.2), its age (§4.2.3),
//! and whether a stored response answers a request without the origin (§4.2,
//! request directives §5.2.1), fresh or stale within what RFC 5861 and the
//! configuration allow. The directives are a response's `Cache-Control`, or
//! the first targeted field of the configured list that it carries (RFC 9213,
//! e.g. `CDN-Cache-Control`), which then replaces `Cache-Control` and
//! `Expires` for this cache and is not passed on. The heuristic lifetime
//! (§4.2.2) is this module's own unless Squid's `refresh_pattern` lines are
//! configured ([`crate::config::refresh`]).

use std::time::{Duration, SystemTime};

use httpx::Fields;

use crate::config::refresh::RefreshPatterns;

use super::directives::{delta_seconds, Directives};
use super::meta::{self, Meta};
use super::policy;

/// Statuses a response may be stored with (RFC 9110 final statuses whose
/// meaning this cache knows; 206 is not stored, a fill asks for the whole).
const STORABLE_STATUSES: [u16; 14] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Statuses that are heuristically cacheable (RFC 9110 §15.1).
const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];

/// Without `refresh_pattern` lines, a heuristic lifetime is this fraction
/// of the time since `Last-Modified` (RFC 9111 §4.2.2 suggests 10%)...
const HEURISTIC_FRACTION: u32 = 10;
/// ...and never more than a day (and none without `Last-Modified`).
const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 3600);

/// What the cache configuration adds to the rules.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Targeted cache-control fields, in order of precedence (RFC 9213),
    /// lower case: the first one a response carries with a valid value is
    /// used instead of `Cache-Control` and `Expires`.
    pub targeted: Vec<String>,
    /// How long a stale object may be served while one background refresh
    /// runs, for responses that do not say (`stale-while-revalidate`).
    pub stale_while_revalidate: Duration,
    /// How long a stale object may be served when the origin fails, for
    /// responses that do not say (`stale-if-error`).
    pub stale_if_error: Duration,
    /// Squid's `refresh_pattern` lines: the heuristic lifetime by URL
    /// (none: this module's own heuristic).
    pub refresh_patterns: RefreshPatterns,
}

/// When an exchange with the origin happened.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    /// When the request was sent (or, no later than that, received).
    pub request_time: SystemTime,
    /// When the response head was received.
    pub response_time: SystemTime,
}

/// What a response may become in the cache.
pub enum Verdict {
    /// Store it with this record.
    Store(Meta),
    /// Do not store it (the reason is logged at debug level).
    Pass(&'static str),
}

/// The directives that govern a response for this cache, and the targeted
/// field they came from, if any.
pub fn response_directives<'a>(
    rules: &Rules,
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
) -> (Directives, Option<&'a [u8]>) {
    for name in &rules.targeted {
        let values = fields
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v);
        if let Some(d) = Directives::targeted(values) {
            let field = fields
                .clone()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(n, _)| n);
            return (d, field);
        }
    }
    let cc = fields
        .clone()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"cache-control"))
        .map(|(_, v)| v);
    let mut d = Directives::cache_control(cc);
    // HTTP/1.0's Pragma: no-cache, when there is no Cache-Control
    if !fields
        .clone()
        .any(|(n, _)| n.eq_ignore_ascii_case(b"cache-control"))
        && fields
            .clone()
            .any(|(n, v)| n.eq_ignore_ascii_case(b"pragma") && v.eq_ignore_ascii_case(b"no-cache"))
    {
        d.no_cache = true;
    }
    (d, None)
}

/// The directives of a request (`Pragma: no-cache` counts as `no-cache`
/// when there is no `Cache-Control`, RFC 9111 §5.4).
pub fn request_directives(fields: &Fields) -> Directives {
    let mut d = Directives::cache_control(fields.get_all("cache-control"));
    if fields.get("cache-control").is_none()
        && fields.get_all("pragma").any(|v| {
            v.split(|&b| b == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
        })
    {
        d.no_cache = true;
    }
    d
}

/// The value of the one header field `name` of `head`: `None` when it is
/// absent, `Some(None)` when it is there more than once (invalid).
fn single<'a>(head: &'a [u8], name: &str) -> Option<Option<&'a [u8]>> {
    let mut values = meta::fields(head).filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()));
    let first = values.next()?.1;
    Some(values.next().is_none().then_some(first))
}

/// The response's age when it was received (RFC 9111 §4.2.3):
/// `corrected_initial_age`, the larger of the apparent age (from `Date`)
/// and the received `Age` corrected by the response delay.
pub fn initial_age(head: &[u8], at: Exchange) -> Duration {
    // an Age that is no delta-seconds, or there twice, is ignored
    let age_value = match single(head, "age") {
        Some(Some(v)) => delta_seconds(v).unwrap_or(0),
        _ => 0,
    };
    let date = date_value(head).unwrap_or(at.response_time);
    let apparent = at.response_time.duration_since(date).unwrap_or_default();
    let delay = at
        .response_time
        .duration_since(at.request_time)
        .unwrap_or_default();
    apparent.max(Duration::from_secs(age_value) + delay)
}

/// The response's `Date`, when it has one valid one.
fn date_value(head: &[u8]) -> Option<SystemTime> {
    httpx::date::parse(single(head, "date")??)
}

/// The freshness lifetime of a response to a request for `url` (RFC 9111
/// §4.2.1), given the directives that govern it (`targeted`: they came
/// from a targeted field, so `Expires` does not count).
pub fn lifetime(
    rules: &Rules,
    url: &[u8],
    status: u16,
    head: &[u8],
    d: &Directives,
    targeted: bool,
    at: Exchange,
) -> Duration {
    if d.conflicting || d.no_cache {
        return Duration::ZERO;
    }
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Duration::from_secs(s);
    }
    let date = date_value(head).unwrap_or(at.response_time);
    // invalid dates, "0" and duplicates mean already expired (§5.3)
    if let Some(expires) = single(head, "expires").filter(|_| !targeted) {
        return expires
            .and_then(httpx::date::parse)
            .and_then(|e| e.duration_since(date).ok())
            .unwrap_or_default();
    }
    if !(HEURISTIC_STATUSES.contains(&status) || d.public) {
        return Duration::ZERO;
    }
    // one valid Last-Modified, else none
    let modified = match single(head, "last-modified") {
        Some(Some(v)) => httpx::date::parse(v),
        _ => None,
    };
    if rules.refresh_patterns.is_empty() {
        let Some(lm) = modified else {
            return Duration::ZERO;
        };
        let since = date.duration_since(lm).unwrap_or_default();
        return (since / HEURISTIC_FRACTION).min(HEURISTIC_MAX);
    }
    // a Last-Modified after Date counts as none (Squid's rule)
    let since = modified.and_then(|lm| date.duration_since(lm).ok());
    rules.refresh_patterns.limits(url).lifetime(since)
}

/// Decides whether the response `head` (status and the end-to-end fields
/// from the origin, `Age` included) to a GET of `url` (the cache key URL)
/// with `req` fields is stored, and builds its record: the head to store
/// (without `Age`, and without the targeted field that was used), its age
/// and lifetime, and the directives that govern its reuse.
pub fn judge(
    rules: &Rules,
    url: &[u8],
    req: &Fields,
    status: u16,
    head: Vec<u8>,
    at: Exchange,
) -> Verdict {
    let (d, field) = response_directives(rules, meta::fields(&head));
    if !STORABLE_STATUSES.contains(&status) {
        return Verdict::Pass("status not stored");
    }
    if d.no_store || request_directives(req).no_store {
        return Verdict::Pass("no-store");
    }
    if d.private {
        return Verdict::Pass("private");
    }
    if req.get("authorization").is_some()
        && !(d.public || d.must_revalidate || d.s_maxage.is_some())
    {
        return Verdict::Pass("a response to a request with Authorization");
    }
    let Some(vary) = policy::vary_names(meta::fields(&head)) else {
        return Verdict::Pass("Vary: *");
    };
    let targeted = field.is_some();
    let lifetime = lifetime(rules, url, status, &head, &d, targeted, at);
    let initial_age = initial_age(&head, at);
    let directives: Vec<u8> = match field {
        Some(name) => join_values(&head, name),
        None => join_values(&head, b"cache-control"),
    };
    let mut drop: Vec<&[u8]> = vec![b"age"];
    drop.extend(field);
    let stored = policy::without_fields(&head, &drop);
    Verdict::Store(Meta {
        status,
        response_time: at.response_time,
        initial_age,
        lifetime,
        head: stored.into(),
        vary,
        directives: directives.into(),
    })
}

/// The values of every `name` field of `head`, joined by commas.
fn join_values(head: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (_, v) in meta::fields(head).filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v);
    }
    out
}

/// How a stored object may answer a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// As it is.
    Fresh,
    /// Only after revalidation with the origin (or as RFC 5861 allows).
    Stale,
}

/// Whether the stored `m` answers a request with directives `req` at `now`
/// without the origin (RFC 9111 §4.2 and §5.2.1).
pub fn usable(m: &Meta, req: &Directives, now: SystemTime) -> Use {
    if req.no_cache {
        return Use::Stale;
    }
    let age = m.age(now);
    let life = m.lifetime;
    if req
        .max_age
        .is_some_and(|max| age > Duration::from_secs(max))
    {
        return Use::Stale;
    }
    if age < life {
        let left = life - age;
        return match req.min_fresh {
            Some(min) if left < Duration::from_secs(min) => Use::Stale,
            _ => Use::Fresh,
        };
    }
    match req.max_stale {
        Some(limit) if m.directives().allows_stale() => {
            let stale = age - life;
            if limit.is_none_or(|s| stale <= Duration::from_secs(s)) {
                Use::Fresh
            } else {
                Use::Stale
            }
        }
        _ => Use::Stale,
    }
}

/// Which RFC 5861 window a stale answer is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleWindow {
    /// `stale-while-revalidate`: answer and refresh in the background.
    WhileRevalidate,
    /// `stale-if-error`: answer when the origin fails.
    IfError,
}

/// Whether the stale `m` may still be served at `now` in `window`: the
/// response's own directive, else the configured default; never when its
/// directives forbid serving it stale (`must-revalidate`, `no-cache`...).
pub fn stale_within(m: &Meta, rules: &Rules, window: StaleWindow, now: SystemTime) -> bool {
    let d = m.directives();
    if !d.allows_stale() {
        return false;
    }
    let allowed = match window {
        StaleWindow::WhileRevalidate => d
            .stale_while_revalidate
            .map_or(rules.stale_while_revalidate, Duration::from_secs),
        StaleWindow::IfError => d
            .stale_if_error
            .map_or(rules.stale_if_error, Duration::from_secs),
    };
    m.age(now) < m.lifetime + allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn at(t: SystemTime) -> Exchange {
        Exchange {
            request_time: t,
            response_time: t,
        }
    }

    fn fields(text: &str) -> Fields {
        let t = format!("GET http://h.example/a HTTP/1.1\r\nHost: h.example\r\n{text}\r\n");
        httpx::head::parse_request(&mut BytesMut::from(t.as_bytes()), &Default::default())
            .unwrap()
            .unwrap()
            .fields
    }

    fn judged(rules: &Rules, req: &str, resp: &str, x: Exchange) -> Verdict {
        let head = format!("HTTP/1.1 200 OK\r\n{resp}");
        judge(
            rules,
            b"http://h.example/a",
            &fields(req),
            200,
            head.into_bytes(),
            x,
        )
    }

    fn stored(resp: &str, x: Exchange) -> Meta {
        match judged(&Rules::default(), "", resp, x) {
            Verdict::Store(m) => m,
            Verdict::Pass(why) => panic!("not stored: {why}"),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_age_a_response_arrives_with_counts() {
        // whole seconds: Date has no finer grain
        let t = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        // already older than its max-age: stale at once
        let m = stored("Cache-Control: max-age=3600\r\nAge: 7200\r\n", at(t));
        assert_eq!(m.initial_age, secs(7200));
        assert_eq!(usable(&m, &Directives::default(), t), Use::Stale);
        // Age plus the time the exchange took
        let x = Exchange {
            request_time: t,
            response_time: t + secs(2),
        };
        let m = stored("Cache-Control: max-age=60\r\nAge: 30\r\n", x);
        assert_eq!(m.initial_age, secs(32));
        assert_eq!(m.age(t + secs(12)), secs(42));
        assert!(!String::from_utf8_lossy(&m.head).contains("Age"));
        // the apparent age from Date when it says more
        let mut date = Vec::new();
        httpx::date::write(&mut date, t - secs(100));
        let resp = format!(
            "Cache-Control: max-age=60\r\nAge: 5\r\nDate: {}\r\n",
            String::from_utf8(date).unwrap()
        );
        assert_eq!(stored(&resp, at(t)).initial_age, secs(100));
        // an Age that is not a number, or twice, is ignored
        assert_eq!(stored("Age: x\r\n", at(t)).initial_age, secs(0));
        assert_eq!(stored("Age: 1\r\nAge: 2\r\n", at(t)).initial_age, secs(0));
    }

    #[test]
    fn expires_counts_from_date_and_a_bad_one_is_the_past() {
        let t = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        let date = "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n";
        let m = stored(
            &format!("{date}Expires: Tue, 14 Nov 2023 22:23:20 GMT\r\n"),
            at(t),
        );
        assert_eq!(m.lifetime, secs(600));
        // RFC 850 and asctime are read too
        let m = stored(
            &format!("{date}Expires: Tuesday, 14-Nov-23 22:23:20 GMT\r\n"),
            at(t),
        );
        assert_eq!(m.lifetime, secs(600));
        let m = stored(
            &format!("{date}Expires: Tue Nov 14 22:23:20 2023\r\n"),
            at(t),
        );
        assert_eq!(m.lifetime, secs(600));
        for bad in ["0", "Thu, 18  Aug  2050 02:01:18 GMT", "soon"] {
            let m = stored(&format!("{date}Expires: {bad}\r\n"), at(t));
            assert_eq!(m.lifetime, secs(0), "{bad}");
        }
        // max-age wins over Expires
        let m = stored(
            &format!("{date}Expires: 0\r\nCache-Control: max-age=9\r\n"),
            at(t),
        );
        assert_eq!(m.lifetime, secs(9));
    }

    #[test]
    fn directives_in_any_case_and_what_is_not_stored() {
        let t = SystemTime::now();
        let m = stored("Cache-Control: MaX-AgE=60\r\n", at(t));
        assert_eq!(m.lifetime, secs(60));
        let m = stored(
            "Cache-Control: No-CaChE, max-age=60\r\nExpires: Thu, 01 Jan 2099 00:00:00 GMT\r\n",
            at(t),
        );
        assert_eq!(usable(&m, &Directives::default(), t), Use::Stale);
        let r = Rules::default();
        for (req, resp) in [
            ("", "Cache-Control: NO-STORE, max-age=60\r\n"),
            ("", "Cache-Control: Private, max-age=60\r\n"),
            ("", "Cache-Control: max-age=60\r\nVary: *\r\n"),
            (
                "Cache-Control: no-store\r\n",
                "Cache-Control: max-age=60\r\n",
            ),
            (
                "Authorization: Basic eDp5\r\n",
                "Cache-Control: max-age=60\r\n",
            ),
        ] {
            assert!(
                matches!(judged(&r, req, resp, at(t)), Verdict::Pass(_)),
                "{req}{resp}"
            );
        }
        assert!(matches!(
            judged(
                &r,
                "Authorization: Basic eDp5\r\n",
                "Cache-Control: public, max-age=60\r\n",
                at(t)
            ),
            Verdict::Store(_)
        ));
        // s-maxage wins over max-age in a shared cache
        assert_eq!(
            stored("Cache-Control: max-age=60, s-maxage=5\r\n", at(t)).lifetime,
            secs(5)
        );
    }

    #[test]
    fn heuristic_freshness_from_last_modified() {
        let t = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        let m = stored(
            "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\nLast-Modified: Tue, 14 Nov 2023 21:13:20 GMT\r\n",
            at(t),
        );
        assert_eq!(m.lifetime, secs(360));
        let m = stored(
            "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\nLast-Modified: Tue, 14 Nov 2000 21:13:20 GMT\r\n",
            at(t),
        );
        assert_eq!(m.lifetime, HEURISTIC_MAX);
        assert_eq!(stored("", at(t)).lifetime, secs(0));
    }

    /// The lifetime `rules` give the response `status` with fields `resp`
    /// to a GET of `url`, received at `t`.
    fn lifetime_of(rules: &Rules, url: &str, status: u16, resp: &str, t: SystemTime) -> Duration {
        let head = format!("HTTP/1.1 {status} X\r\n{resp}");
        match judge(
            rules,
            url.as_bytes(),
            &fields(""),
            status,
            head.into_bytes(),
            at(t),
        ) {
            Verdict::Store(m) => m.lifetime,
            Verdict::Pass(why) => panic!("not stored: {why}"),
        }
    }

    #[test]
    fn refresh_patterns_give_the_heuristic_lifetime_by_url() {
        use crate::config::refresh::{Limits, RefreshPattern, RefreshPatterns};
        let p = |re: &str, i: bool, min: u64, pct: u32, max: u64| {
            RefreshPattern::new(re, i, Limits::from_minutes(min, pct, max)).unwrap()
        };
        let rules = Rules {
            refresh_patterns: RefreshPatterns::new(vec![
                p(r"\.iso$", false, 60, 50, 600),
                p("/never/", true, 0, 0, 0),
                p("/never/but-listed-later", false, 60, 50, 600),
                p("/nolm/", false, 5, 20, 60),
                p("/maxbelowmin/", false, 10, 20, 2),
            ]),
            ..Rules::default()
        };
        let t = SystemTime::UNIX_EPOCH + secs(1_700_000_000);
        let date = "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n";
        // Last-Modified an hour before Date, a day before, and after it
        let hour = format!("{date}Last-Modified: Tue, 14 Nov 2023 21:13:20 GMT\r\n");
        let day = format!("{date}Last-Modified: Mon, 13 Nov 2023 22:13:20 GMT\r\n");
        let later = format!("{date}Last-Modified: Tue, 14 Nov 2023 22:13:21 GMT\r\n");
        let life = |url: &str, resp: &str| lifetime_of(&rules, url, 200, resp, t);
        // 50% of an hour; 50% of a day is more than max (10 hours)
        assert_eq!(life("http://h.example/a.iso", &hour), secs(1800));
        assert_eq!(life("http://h.example/a.iso", &day), secs(36_000));
        // min plays no part when there is a Last-Modified: 50% of a
        // second is 0, though min is an hour
        let just = format!("{date}Last-Modified: Tue, 14 Nov 2023 22:13:19 GMT\r\n");
        assert_eq!(life("http://h.example/a.iso", &just), secs(0));
        // without one, or with one after Date, or an invalid one: min
        assert_eq!(life("http://h.example/a.iso", date), secs(3600));
        assert_eq!(life("http://h.example/a.iso", &later), secs(3600));
        let bad = format!("{date}Last-Modified: yesterday\r\n");
        assert_eq!(life("http://h.example/a.iso", &bad), secs(3600));
        assert_eq!(life("http://h.example/nolm/x", date), secs(300));
        // max below min: max
        assert_eq!(life("http://h.example/maxbelowmin/x", date), secs(120));
        // the first that matches; -i
        assert_eq!(
            life("http://h.example/never/but-listed-later", &day),
            secs(0)
        );
        assert_eq!(life("http://h.example/NEVER/x", &day), secs(0));
        // none matches: Squid's default, 20% and at most three days
        assert_eq!(life("http://h.example/A.ISO", &hour), secs(720));
        let old = format!("{date}Last-Modified: Tue, 14 Nov 2000 21:13:20 GMT\r\n");
        assert_eq!(life("http://h.example/other", &old), secs(3 * 86_400));
        assert_eq!(life("http://h.example/other", date), secs(0));
        // explicit freshness wins, both ways
        let never = "http://h.example/never/x";
        assert_eq!(
            life(never, &format!("{day}Cache-Control: max-age=60\r\n")),
            secs(60)
        );
        assert_eq!(
            life(
                never,
                &format!("{day}Expires: Tue, 14 Nov 2023 22:23:20 GMT\r\n")
            ),
            secs(600)
        );
        let iso = "http://h.example/a.iso";
        assert_eq!(
            life(iso, &format!("{day}Cache-Control: s-maxage=5\r\n")),
            secs(5)
        );
        assert_eq!(life(iso, &format!("{day}Expires: 0\r\n")), secs(0));
        assert_eq!(
            life(iso, &format!("{day}Cache-Control: no-cache\r\n")),
            secs(0)
        );
        // only where heuristics are allowed: not a 302, unless public
        assert_eq!(lifetime_of(&rules, iso, 302, &day, t), secs(0));
        let public = format!("{day}Cache-Control: public\r\n");
        assert_eq!(lifetime_of(&rules, iso, 302, &public, t), secs(36_000));
        assert_eq!(lifetime_of(&rules, iso, 404, date, t), secs(3600));
        // no patterns: carpool's own heuristic, nothing without Last-Modified
        let none = Rules::default();
        assert_eq!(lifetime_of(&none, iso, 200, &hour, t), secs(360));
        assert_eq!(lifetime_of(&none, iso, 200, &day, t), secs(8640));
        assert_eq!(lifetime_of(&none, iso, 200, &old, t), HEURISTIC_MAX);
        assert_eq!(lifetime_of(&none, iso, 200, date, t), secs(0));
        assert_eq!(lifetime_of(&none, iso, 200, &later, t), secs(0));
    }

    #[test]
    fn request_directives_decide_with_the_stored_age() {
        let t = SystemTime::now();
        let m = stored("Cache-Control: max-age=60\r\n", at(t));
        let u = |req: &str, when: SystemTime| usable(&m, &request_directives(&fields(req)), when);
        assert_eq!(u("", t + secs(59)), Use::Fresh);
        assert_eq!(u("", t + secs(61)), Use::Stale);
        assert_eq!(u("Cache-Control: no-cache\r\n", t), Use::Stale);
        assert_eq!(u("Pragma: no-cache\r\n", t), Use::Stale);
        assert_eq!(u("Cache-Control: MAX-AGE=0\r\n", t + secs(1)), Use::Stale);
        assert_eq!(u("Cache-Control: min-fresh=120\r\n", t), Use::Stale);
        assert_eq!(u("Cache-Control: min-fresh=30\r\n", t), Use::Fresh);
        assert_eq!(u("Cache-Control: max-stale\r\n", t + secs(500)), Use::Fresh);
        assert_eq!(
            u("Cache-Control: max-stale=1\r\n", t + secs(120)),
            Use::Stale
        );
        assert_eq!(
            u("Cache-Control: max-stale=100\r\n", t + secs(120)),
            Use::Fresh
        );
        // must-revalidate: never served stale
        let m = stored("Cache-Control: max-age=60, must-revalidate\r\n", at(t));
        let any = request_directives(&fields("Cache-Control: max-stale\r\n"));
        assert_eq!(usable(&m, &any, t + secs(61)), Use::Stale);
    }

    #[test]
    fn stale_windows_from_the_response_or_the_configuration() {
        let t = SystemTime::now();
        let rules = Rules {
            stale_if_error: secs(30),
            ..Rules::default()
        };
        let m = stored(
            "Cache-Control: max-age=10, stale-while-revalidate=5\r\n",
            at(t),
        );
        let swr = StaleWindow::WhileRevalidate;
        assert!(stale_within(&m, &rules, swr, t + secs(14)));
        assert!(!stale_within(&m, &rules, swr, t + secs(16)));
        assert!(stale_within(&m, &rules, StaleWindow::IfError, t + secs(39)));
        assert!(!stale_within(
            &m,
            &rules,
            StaleWindow::IfError,
            t + secs(41)
        ));
        let m = stored("Cache-Control: max-age=10, must-revalidate\r\n", at(t));
        assert!(!stale_within(
            &m,
            &rules,
            StaleWindow::IfError,
            t + secs(11)
        ));
    }

    #[test]
    fn a_targeted_field_replaces_cache_control_and_is_not_kept() {
        let t = SystemTime::now();
        let rules = Rules {
            targeted: vec!["carpool-cache-control".into(), "cdn-cache-control".into()],
            ..Rules::default()
        };
        let judge_with = |resp: &str| judged(&rules, "", resp, at(t));
        let Verdict::Store(m) = judge_with(
            "Cache-Control: no-store\r\nCDN-Cache-Control: max-age=600\r\nExpires: 0\r\n",
        ) else {
            panic!("a targeted max-age makes it storable")
        };
        assert_eq!(m.lifetime, secs(600));
        let head = String::from_utf8_lossy(&m.head).into_owned();
        assert!(
            !head.contains("CDN-Cache-Control") && head.contains("no-store"),
            "{head}"
        );
        // the first of the list wins
        let Verdict::Store(m) =
            judge_with("CDN-Cache-Control: max-age=600\r\nCarpool-Cache-Control: max-age=5\r\n")
        else {
            panic!()
        };
        assert_eq!(m.lifetime, secs(5));
        assert!(String::from_utf8_lossy(&m.head).contains("CDN-Cache-Control"));
        for resp in [
            "Cache-Control: max-age=60\r\nCDN-Cache-Control: no-store\r\n",
            "Cache-Control: max-age=60\r\nCDN-Cache-Control: private\r\n",
        ] {
            assert!(matches!(judge_with(resp), Verdict::Pass(_)), "{resp}");
        }
        let Verdict::Store(m) =
            judge_with("Cache-Control: max-age=60\r\nCDN-Cache-Control: no-cache\r\n")
        else {
            panic!()
        };
        assert_eq!(usable(&m, &Directives::default(), t), Use::Stale);
        // an invalid targeted field is ignored: Cache-Control decides
        let Verdict::Store(m) =
            judge_with("Cache-Control: max-age=60\r\nCDN-Cache-Control: Max-Age=1\r\n")
        else {
            panic!()
        };
        assert_eq!(m.lifetime, secs(60));
    }
}
