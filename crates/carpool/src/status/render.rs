//! `carpool status` in the terminal: the `/status` JSON as three tables
//! (members, caches, processes) under a one-line summary.

use std::fmt::Write;

use cache_store::progress::Bytes;

use super::model::Status;

/// The status as text; `now` (seconds since the epoch) dates the states.
pub fn text(s: &Status, now: f64) -> String {
    let mut out = String::new();
    let frontends = s.processes.iter().filter(|p| p.kind == "frontend").count();
    let rate = s
        .requests_per_second
        .map_or("no requests yet".to_string(), |r| {
            format!(
                "{r:.1} requests/s over the last {}",
                duration(s.window_seconds)
            )
        });
    let _ = writeln!(
        out,
        "carpool array: hash {}, {} members, {} caches, {} frontend{}; {rate}",
        s.hash.as_deref().unwrap_or("?"),
        s.members.len(),
        s.caches.len(),
        frontends,
        if frontends == 1 { "" } else { "s" },
    );
    out.push('\n');
    let mut t = Table::new(&[
        "MEMBER", "ADDRESS", "WEIGHT", "EXPECTED", "ACTUAL", "REQUESTS", "STATE", "INFLIGHT",
        "FAILURES", "P50", "P99",
    ]);
    for m in &s.members {
        let state = format!(
            "{} {}",
            if m.alive { "alive" } else { "DEAD" },
            duration((now - m.since).max(0.0))
        );
        let address = match m.announced {
            true => format!("{} (announced)", m.address),
            false => m.address.clone(),
        };
        t.row(vec![
            m.name.clone(),
            address,
            format!("{}", m.weight),
            percent(m.expected_share),
            percent(m.actual_share),
            m.requests.to_string(),
            state,
            m.inflight.to_string(),
            m.failures.to_string(),
            seconds(m.p50_seconds),
            seconds(m.p99_seconds),
        ]);
    }
    out += &t.render();
    out.push('\n');
    let mut t = Table::new(&[
        "CACHE",
        "HIT RATIO",
        "REQUESTS",
        "OBJECTS",
        "MEMORY",
        "DISK",
    ]);
    for c in &s.caches {
        let tier = |name: &str| {
            c.tiers
                .iter()
                .find(|t| t.name == name)
                .map_or("-".to_string(), |t| {
                    format!(
                        "{} / {} ({:.0}%)",
                        Bytes(t.bytes),
                        Bytes(t.capacity_bytes),
                        t.fill * 100.0
                    )
                })
        };
        t.row(vec![
            c.name.clone(),
            percent(c.hit_ratio),
            c.requests.to_string(),
            c.objects.to_string(),
            tier("memory"),
            tier("disk"),
        ]);
    }
    out += &t.render();
    out.push('\n');
    let mut t = Table::new(&[
        "PROCESS", "KIND", "ADDRESS", "STATE", "PID", "UPTIME", "RESTARTS",
    ]);
    for p in &s.processes {
        t.row(vec![
            p.name.clone(),
            p.kind.clone(),
            p.address.clone(),
            p.state.clone(),
            p.pid.map_or("-".into(), |p| p.to_string()),
            p.uptime_seconds.map_or("-".into(), duration),
            p.restarts.to_string(),
        ]);
    }
    out += &t.render();
    out
}

/// Columns padded to their widest cell, two spaces apart.
struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&str]) -> Table {
        Table {
            rows: vec![head.iter().map(|h| h.to_string()).collect()],
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let width: Vec<usize> = (0..cols)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for r in &self.rows {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = width[i]))
                .collect();
            out += line.join("  ").trim_end();
            out.push('\n');
        }
        out
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn seconds(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{}ms", trim(s * 1000.0)),
        Some(s) => format!("{}s", trim(s)),
    }
}

/// A number without needless decimals (`0.5`, `25`, `2.5`).
fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

/// `42s`, `5m12s`, `3h04m`, `2d03h`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::{Cache, Member, Process, Tier};

    #[test]
    fn tables_line_up_and_say_what_they_know() {
        let s = Status {
            hash: Some("hrw".into()),
            sampled_at: 1000.0,
            window_seconds: 60.0,
            requests_per_second: Some(2.5),
            members: vec![Member {
                name: "cache1".into(),
                address: "127.0.0.1:3181".into(),
                weight: 1.0,
                expected_share: Some(0.3333),
                actual_share: Some(0.5),
                requests: 150,
                alive: true,
                since: 700.0,
                p50_seconds: Some(0.0025),
                p99_seconds: Some(2.5),
                ..Member::default()
            }],
            caches: vec![Cache {
                name: "cache1".into(),
                hit_ratio: None,
                tiers: vec![Tier {
                    name: "memory".into(),
                    bytes: 1536,
                    capacity_bytes: 64 << 20,
                    fill: 1536.0 / (64 << 20) as f64,
                    ..Tier::default()
                }],
                ..Cache::default()
            }],
            processes: vec![Process {
                name: "frontend".into(),
                kind: "frontend".into(),
                address: "127.0.0.1:3128".into(),
                state: "running".into(),
                pid: Some(42),
                uptime_seconds: Some(3725.0),
                restarts: 1,
            }],
            history: vec![],
        };
        let t = text(&s, 1000.0);
        assert!(t.starts_with("carpool array: hash hrw, 1 members, 1 caches, 1 frontend; 2.5 requests/s over the last 1m00s\n"), "{t}");
        assert!(t.contains("cache1  127.0.0.1:3181  1       33.3%     50.0%   150       alive 5m00s  0         0         2.5ms  2.5s\n"), "{t}");
        assert!(
            t.contains("cache1  -          0         0        1.5 KiB / 64.0 MiB (0%)  -\n"),
            "{t}"
        );
        assert!(
            t.contains("frontend  frontend  127.0.0.1:3128  running  42   1h02m   1\n"),
            "{t}"
        );
    }

    #[test]
    fn announced_members_are_marked() {
        let s = Status {
            members: vec![
                Member {
                    name: "c1".into(),
                    address: "127.0.0.1:4001".into(),
                    ..Member::default()
                },
                Member {
                    name: "c3".into(),
                    address: "127.0.0.1:4003".into(),
                    announced: true,
                    ..Member::default()
                },
            ],
            ..Status::default()
        };
        let t = text(&s, 1000.0);
        assert!(t.contains("c1      127.0.0.1:4001  "), "{t}");
        assert!(t.contains("c3      127.0.0.1:4003 (announced)  "), "{t}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(59.9), "59s");
        assert_eq!(duration(61.0), "1m01s");
        assert_eq!(duration(90061.0), "1d01h");
    }
}
