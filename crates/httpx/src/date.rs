//! HTTP dates (RFC 9110 §5.6.7): writing IMF-fixdate, reading it and the two
//! obsolete forms (RFC 850 and asctime) that recipients must accept; and the
//! local time of the Common Log Format, for the access log.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn write(out: &mut Vec<u8>, t: SystemTime) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, n: i64| {
        out.push(b'0' + (n / 10 % 10) as u8);
        out.push(b'0' + (n % 10) as u8);
    };
    out.extend_from_slice(DAYS[days.rem_euclid(7) as usize]);
    out.extend_from_slice(b", ");
    two(out, d as i64);
    out.push(b' ');
    out.extend_from_slice(MONTHS[(m - 1) as usize]);
    out.push(b' ');
    two(out, y / 100);
    two(out, y % 100);
    out.push(b' ');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
    out.extend_from_slice(b" GMT");
}

/// Appends `secs` (since the epoch) as the Common Log Format writes a time,
/// in the system's time zone: `03/Dec/2026:20:17:01 +0000` (Squid's `%tl`,
/// which its `common` and `combined` logs write between brackets). The
/// offset is `localtime_r(3)`'s (UTC when it cannot say), as `±hhmm`: where
/// Squid 5.7 writes a negative offset that is not a whole hour as
/// `-03-30`, this writes `-0330`.
pub fn write_log_time(out: &mut String, secs: i64) {
    write_time_at_offset(out, secs, utc_offset(secs));
}

/// [`write_log_time`] with the offset from UTC (seconds) given.
fn write_time_at_offset(out: &mut String, secs: i64, offset: i64) {
    let local = secs + offset;
    let days = local.div_euclid(86_400);
    let rem = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS[(m - 1) as usize];
    let sign = if offset < 0 { '-' } else { '+' };
    let off_min = offset.abs() / 60;
    let _ = write!(
        out,
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} {sign}{:02}{:02}",
        std::str::from_utf8(month).unwrap_or("???"),
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        off_min / 60,
        off_min % 60,
    );
}

/// The offset of local time from UTC at `secs`, in seconds, as
/// `localtime_r(3)` gives it (0 when it fails).
fn utc_offset(secs: i64) -> i64 {
    // time_t and long (tm_gmtoff) are 64 bits wide on the platforms
    // carpool runs on (64-bit Linux)
    let t = secs as libc::time_t;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r reads `t` and writes only the struct it is given
    // (thread-safe, unlike localtime); on failure it returns null and the
    // zeroed struct is not read.
    let done = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if done.is_null() {
        return 0;
    }
    // SAFETY: localtime_r filled it in.
    let tm = unsafe { tm.assume_init() };
    tm.tm_gmtoff
}

fn month(b: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(b))
        .map(|i| i as u32 + 1)
}

/// Exactly `n` digits.
fn digits(b: &[u8], n: usize) -> Option<i64> {
    if b.len() != n || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |v, d| v * 10 + i64::from(d - b'0')))
}

/// `HH:MM:SS` as seconds of the day.
fn time_of_day(b: &[u8]) -> Option<i64> {
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, s) = (
        digits(&b[0..2], 2)?,
        digits(&b[3..5], 2)?,
        digits(&b[6..8], 2)?,
    );
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(h * 3600 + m * 60 + s)
}

/// A short day name (`Mon`), any case.
fn day_name(b: &[u8]) -> bool {
    DAYS.iter().any(|d| d.eq_ignore_ascii_case(b))
}

/// A full day name (`Monday`), any case.
fn day_name_long(b: &[u8]) -> bool {
    const LONG: [&[u8]; 7] = [
        b"Monday",
        b"Tuesday",
        b"Wednesday",
        b"Thursday",
        b"Friday",
        b"Saturday",
        b"Sunday",
    ];
    LONG.iter().any(|d| d.eq_ignore_ascii_case(b))
}

/// The year of a two-digit RFC 850 year: the one in this century, unless
/// that is more than 50 years ahead of `now` (RFC 9110 §5.6.7): then the
/// century before.
fn full_year(yy: i64, now: SystemTime) -> i64 {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let this_year = civil_from_days(secs.div_euclid(86_400)).0;
    let y = this_year - this_year.rem_euclid(100) + yy;
    if y > this_year + 50 {
        y - 100
    } else if y < this_year - 50 {
        y + 100
    } else {
        y
    }
}

/// Reads an HTTP date in one of its three forms (RFC 9110 §5.6.7), exactly
/// as the grammar has it: single spaces, two-digit days (asctime: a space
/// before a one-digit day), four-digit years (RFC 850: two), `GMT`. Names
/// of days and months in any case. Anything else is no date: for `Expires`
/// that means already expired.
pub fn parse(v: &[u8]) -> Option<SystemTime> {
    let v = v.trim_ascii();
    let (y, m, d, t) = if v.len() == 29 && v[3] == b',' {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        if !day_name(&v[0..3]) || v[4] != b' ' || v[7] != b' ' || v[11] != b' ' {
            return None;
        }
        if v[16] != b' ' || v[25] != b' ' || &v[26..] != b"GMT" {
            return None;
        }
        let (d, m, y) = (
            digits(&v[5..7], 2)?,
            month(&v[8..11])?,
            digits(&v[12..16], 4)?,
        );
        (y, m, d, time_of_day(&v[17..25])?)
    } else if let Some(comma) = v.iter().position(|&b| b == b',').filter(|&c| c > 3) {
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        let rest = &v[comma..];
        if !day_name_long(&v[..comma]) || rest.len() != 24 || rest[1] != b' ' {
            return None;
        }
        if rest[4] != b'-' || rest[8] != b'-' || rest[11] != b' ' || rest[20] != b' ' {
            return None;
        }
        if &rest[21..] != b"GMT" {
            return None;
        }
        let (d, m) = (digits(&rest[2..4], 2)?, month(&rest[5..8])?);
        let y = full_year(digits(&rest[9..11], 2)?, SystemTime::now());
        (y, m, d, time_of_day(&rest[12..20])?)
    } else if v.len() == 24 {
        // asctime: Sun Nov  6 08:49:37 1994
        if !day_name(&v[0..3]) || v[3] != b' ' || v[7] != b' ' || v[10] != b' ' || v[19] != b' ' {
            return None;
        }
        let d = match &v[8..10] {
            [b' ', one] => digits(&[*one], 1)?,
            two => digits(two, 2)?,
        };
        (
            digits(&v[20..24], 4)?,
            month(&v[4..7])?,
            d,
            time_of_day(&v[11..19])?,
        )
    } else {
        return None;
    };
    if !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let secs = days_from_civil(y, m, d as u32) * 86_400 + t;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse(b"Sun Nov  6 08:49:37 1994"), Some(t));
        let mut out = Vec::new();
        write(&mut out, t);
        assert_eq!(out, b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse(b"yesterday"), None);
        assert_eq!(parse(b"Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse(b"sun, 06 nov 1994 08:49:37 GMT"), Some(t));
    }

    /// RFC 9110 §5.6.7's grammar, exactly: extra or missing spaces, short
    /// fields and other zones are no date (an `Expires` like that means
    /// already expired).
    #[test]
    fn anything_off_the_grammar_is_no_date() {
        for bad in [
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18 Aug 2050  02:01:18 GMT",
            "Thu, 8 Aug 2050 02:01:18 GMT",
            "Thu,18 Aug 2050 02:01:18 GMT",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 18 Agu 2050 02:01:18 GMT",
            "Thursday, 18-Aug-2050 02:01:18 GMT",
            "Thursday, 18 Aug 50 02:01:18 GMT",
            "Thu Aug 18 02:01:18 2050 GMT",
            "Thu Aug 8 02:01:18 2050",
            "Thu  Aug 18 02:01:18 2050",
            "0",
            "",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert!(parse(b"Thu Aug 18 02:01:18 2050").is_some());
        assert!(parse(b"Thursday, 18-Aug-50 02:01:18 GMT").is_some());
    }

    #[test]
    fn two_digit_years_are_within_fifty_years() {
        let now = UNIX_EPOCH + Duration::from_secs(1_796_000_000); // 2026
        assert_eq!(full_year(50, now), 2050);
        assert_eq!(full_year(94, now), 1994);
        assert_eq!(full_year(76, now), 2076);
        assert_eq!(full_year(77, now), 1977);
        assert_eq!(full_year(0, now), 2000);
    }

    #[test]
    fn log_time_in_any_zone() {
        let t = 1_796_329_021; // 2026-12-03 20:17:01 UTC
        for (offset, want) in [
            (0, "03/Dec/2026:20:17:01 +0000"),
            (3600, "03/Dec/2026:21:17:01 +0100"),
            (5 * 3600 + 1800, "04/Dec/2026:01:47:01 +0530"),
            (-(3 * 3600 + 1800), "03/Dec/2026:16:47:01 -0330"),
            (-10 * 3600, "03/Dec/2026:10:17:01 -1000"),
        ] {
            let mut out = String::new();
            write_time_at_offset(&mut out, t, offset);
            assert_eq!(out, want);
        }
        let mut out = String::new();
        write_time_at_offset(&mut out, 951_782_400, 0);
        assert_eq!(out, "29/Feb/2000:00:00:00 +0000");
        // the machine's own zone: its offset, whatever it is
        out.clear();
        write_log_time(&mut out, t);
        let mut want = String::new();
        write_time_at_offset(&mut want, t, utc_offset(t));
        assert_eq!(out, want);
    }

    #[test]
    fn round_trips_over_decades() {
        for s in (0..4_000_000_000u64).step_by(86_399 * 97) {
            let t = UNIX_EPOCH + Duration::from_secs(s);
            let mut out = Vec::new();
            write(&mut out, t);
            assert_eq!(parse(&out), Some(t), "{}", String::from_utf8_lossy(&out));
        }
    }
}
