//! A progress meter for long operations (the disk index rebuild at open,
//! `carpool plan` over a large sample): it decides when a report is due and
//! says how far the work got, how fast it goes and how long it still takes.
//!
//! Reports are throttled: the first is due one interval after the work
//! started, each next one an interval after the last, so work that ends
//! within one interval reports nothing at all. The meter never reads the
//! clock by itself: the caller asks [`Progress::due`] after a piece of work
//! (a log segment, a few thousand records), so it costs one clock read per
//! ask and nothing in between.
//!
//! ```
//! use cache_store::progress::{Eta, Progress};
//! use std::time::{Duration, Instant};
//!
//! let start = Instant::now();
//! let mut meter = Progress::started_at(start, Some(1000), Duration::from_secs(2));
//! // 1 s in: not due yet
//! assert!(meter.due_at(100, start + Duration::from_secs(1)).is_none());
//! // 2 s in, 250 of 1000 done: 125 a second, 6 s left
//! let r = meter.due_at(250, start + Duration::from_secs(2)).expect("due");
//! assert_eq!(r.percent(), Some(25));
//! assert_eq!(r.rate(), Some(125.0));
//! assert_eq!(r.eta(), Some(Duration::from_secs(6)));
//! assert_eq!(Eta(r.eta().unwrap()).to_string(), "6 s");
//! ```

use std::fmt;
use std::time::{Duration, Instant};

/// A throttled progress meter over `total` units of work (bytes, records,
/// URLs; unknown when `None`), possibly in several steps that share one
/// reporting schedule (see [`Progress::next_step_at`]).
#[derive(Clone, Debug)]
pub struct Progress {
    /// When the current step started: rate and ETA count from here.
    start: Instant,
    /// Units of work of the current step, if known.
    total: Option<u64>,
    /// Least time between two reports (and before the first).
    interval: Duration,
    /// When the next report is due.
    next: Instant,
    /// Reports given so far, over every step.
    reports: u64,
}

/// What a progress report says: how much of the current step is done, and
/// since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// Units done.
    pub done: u64,
    /// Units in all, if known.
    pub total: Option<u64>,
    /// Time since the step started.
    pub elapsed: Duration,
    /// Whether this is the first report of the whole operation (a caller
    /// may say there what the work is, once it is known to be slow).
    pub first: bool,
}

impl Progress {
    /// A meter over `total` units starting now, reporting at most once per
    /// `interval` (zero: at every ask, for tests).
    pub fn new(total: Option<u64>, interval: Duration) -> Progress {
        Progress::started_at(Instant::now(), total, interval)
    }

    /// A meter over `total` units that started at `start`.
    pub fn started_at(start: Instant, total: Option<u64>, interval: Duration) -> Progress {
        Progress {
            start,
            total,
            interval,
            next: start + interval,
            reports: 0,
        }
    }

    /// The next step of the same operation, over `total` units, starting
    /// at `now`: rate and ETA count afresh, but the reporting schedule goes
    /// on (a step that starts late in the first interval reports as soon as
    /// the operation as a whole has taken one).
    pub fn next_step_at(&self, now: Instant, total: Option<u64>) -> Progress {
        Progress {
            start: now,
            total,
            ..self.clone()
        }
    }

    /// [`Progress::next_step_at`] now.
    pub fn next_step(&self, total: Option<u64>) -> Progress {
        self.next_step_at(Instant::now(), total)
    }

    /// A report if one is due, `done` units being done now (reads the clock).
    pub fn due(&mut self, done: u64) -> Option<Report> {
        self.due_at(done, Instant::now())
    }

    /// A report if one is due at `now`, `done` units being done.
    pub fn due_at(&mut self, done: u64, now: Instant) -> Option<Report> {
        if now < self.next {
            return None;
        }
        self.next = now + self.interval;
        self.reports += 1;
        Some(Report {
            done,
            total: self.total,
            elapsed: now.saturating_duration_since(self.start),
            first: self.reports == 1,
        })
    }

    /// Whether any report was given: the operation took longer than one
    /// interval, and its end deserves saying too.
    pub fn reported(&self) -> bool {
        self.reports > 0
    }

    /// The least time between two reports.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

impl Report {
    /// The part done, from 0 to 1, if the total is known (an empty total is
    /// all done).
    pub fn fraction(&self) -> Option<f64> {
        self.total.map(|t| {
            if t == 0 {
                1.0
            } else {
                (self.done as f64 / t as f64).min(1.0)
            }
        })
    }

    /// Whole percent done, rounded down (100 only when all is done).
    pub fn percent(&self) -> Option<u64> {
        self.total.map(|t| {
            if t == 0 || self.done >= t {
                100
            } else {
                (u128::from(self.done) * 100 / u128::from(t)) as u64
            }
        })
    }

    /// Units per second since the step started, once any time has passed.
    pub fn rate(&self) -> Option<f64> {
        let s = self.elapsed.as_secs_f64();
        (s > 0.0).then(|| self.done as f64 / s)
    }

    /// The time left at the rate so far, when the total is known and
    /// anything was done.
    pub fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        if self.done >= total {
            return Some(Duration::ZERO);
        }
        if self.done == 0 {
            return None;
        }
        let left = (total - self.done) as f64 / self.done as f64;
        Some(Duration::from_secs_f64(self.elapsed.as_secs_f64() * left))
    }
}

/// A duration for people, to the second, rounded up: `0 s`, `7 s`,
/// `3 min 05 s`, `2 h 10 min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eta(pub Duration);

impl fmt::Display for Eta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        match s {
            0..60 => write!(f, "{s} s"),
            60..3600 => write!(f, "{} min {:02} s", s / 60, s % 60),
            _ => write!(f, "{} h {:02} min", s / 3600, s % 3600 / 60),
        }
    }
}

/// A count for people, its digits in groups of three: `10,000,000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        f.write_str(&out)
    }
}

/// Bytes for people, in binary units with one decimal: `512 B`, `1.5 GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut x = self.0 as f64 / 1024.0;
        let mut u = 0;
        while x >= 1024.0 && u < UNITS.len() - 1 {
            x /= 1024.0;
            u += 1;
        }
        write!(f, "{x:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn nothing_is_due_before_the_first_interval_then_once_per_interval() {
        let t0 = Instant::now();
        let mut p = Progress::started_at(t0, Some(100), 2 * S);
        assert!(p.due_at(10, t0).is_none());
        assert!(p.due_at(10, t0 + S).is_none());
        assert!(!p.reported());
        let r = p.due_at(20, t0 + 2 * S).expect("due at 2 s");
        assert!(r.first);
        assert!(p.reported());
        // the next one an interval after the last report, not after the start
        assert!(p.due_at(30, t0 + 3 * S).is_none());
        assert!(p
            .due_at(30, t0 + 4 * S - Duration::from_millis(1))
            .is_none());
        let r = p.due_at(40, t0 + 4 * S).expect("due at 4 s");
        assert!(!r.first);
        assert_eq!(r.elapsed, 4 * S);
    }

    #[test]
    fn a_zero_interval_reports_at_every_ask() {
        let t0 = Instant::now();
        let mut p = Progress::started_at(t0, None, Duration::ZERO);
        assert!(p.due_at(0, t0).is_some_and(|r| r.first));
        assert!(p.due_at(1, t0).is_some_and(|r| !r.first));
    }

    #[test]
    fn rate_and_eta_come_from_what_was_done_so_far() {
        let r = Report {
            done: 300,
            total: Some(1200),
            elapsed: 3 * S,
            first: true,
        };
        assert_eq!(r.rate(), Some(100.0));
        assert_eq!(r.eta(), Some(9 * S));
        assert_eq!(r.percent(), Some(25));
        assert_eq!(r.fraction(), Some(0.25));
        // rounded down: 100% only when done
        let almost = Report {
            done: 999,
            total: Some(1000),
            ..r
        };
        assert_eq!(almost.percent(), Some(99));
        let all = Report {
            done: 1000,
            total: Some(1000),
            ..r
        };
        assert_eq!(
            (all.percent(), all.eta()),
            (Some(100), Some(Duration::ZERO))
        );
        // nothing done yet: no rate to go by
        let none = Report { done: 0, ..r };
        assert_eq!(none.eta(), None);
        // no total: a rate, no ETA
        let open = Report { total: None, ..r };
        assert_eq!((open.percent(), open.eta()), (None, None));
        assert_eq!(open.rate(), Some(100.0));
        let instant = Report {
            elapsed: Duration::ZERO,
            ..r
        };
        assert_eq!(instant.rate(), None);
        let empty = Report {
            done: 0,
            total: Some(0),
            ..r
        };
        assert_eq!(empty.percent(), Some(100));
    }

    #[test]
    fn a_next_step_counts_afresh_on_the_same_schedule() {
        let t0 = Instant::now();
        let first = Progress::started_at(t0, Some(10), 2 * S);
        let mut second = first.next_step_at(t0 + S + S / 2, Some(50));
        // due 2 s after the operation started, not after the step did
        let r = second.due_at(5, t0 + 2 * S).expect("due");
        assert!(r.first);
        assert_eq!((r.total, r.elapsed), (Some(50), S / 2));
        assert_eq!(r.eta(), Some(S * 9 / 2));
        // and a step after a report is not a first report again
        let mut third = second.next_step_at(t0 + 3 * S, None);
        assert!(third.reported());
        let r = third.due_at(1, t0 + 4 * S).expect("due");
        assert!(!r.first);
    }

    #[test]
    fn durations_counts_and_bytes_read_well() {
        let eta = |d: Duration| Eta(d).to_string();
        assert_eq!(eta(Duration::ZERO), "0 s");
        assert_eq!(eta(Duration::from_millis(100)), "1 s");
        assert_eq!(eta(59 * S), "59 s");
        assert_eq!(eta(Duration::from_millis(59_001)), "1 min 00 s");
        assert_eq!(eta(185 * S), "3 min 05 s");
        assert_eq!(eta(7800 * S), "2 h 10 min");
        let count = |n| Count(n).to_string();
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(10_000_000), "10,000,000");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
        let bytes = |n| Bytes(n).to_string();
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(768 << 20), "768.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
