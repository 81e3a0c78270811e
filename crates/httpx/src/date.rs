//! HTTP dates (RFC 9110 §5.6.7): writing IMF-fixdate, reading it and the two
//! obsolete forms (RFC 850 and asctime) that recipients must accept.

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

fn month(b: &[u8]) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(b))
        .map(|i| i as u32 + 1)
}

fn num(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64))
}

fn hms(b: &[u8]) -> Option<i64> {
    let mut p = b.split(|&c| c == b':');
    let (h, m, s) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
    if p.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(h * 3600 + m * 60 + s)
}

/// Reads an HTTP date in any of its three forms.
pub fn parse(v: &[u8]) -> Option<SystemTime> {
    let words: Vec<&[u8]> = v
        .trim_ascii()
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    let (y, m, d, t) = match words.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, mon, y, t, gmt] if gmt.eq_ignore_ascii_case(b"GMT") => {
            (num(y)?, month(mon)?, num(d)?, hms(t)?)
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, gmt] if gmt.eq_ignore_ascii_case(b"GMT") => {
            let mut p = dmy.split(|&c| c == b'-');
            let (d, mon, y) = (num(p.next()?)?, month(p.next()?)?, num(p.next()?)?);
            // two-digit years: within 50 years of now (RFC 9110), taken as 19xx/20xx
            let y = if y < 70 {
                2000 + y
            } else if y < 100 {
                1900 + y
            } else {
                y
            };
            (y, mon, d, hms(t)?)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, mon, d, t, y] => (num(y)?, month(mon)?, num(d)?, hms(t)?),
        _ => return None,
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
