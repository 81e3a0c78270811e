//! The `route` and `plan` commands as a user runs them: real binary, real files.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{run_with_stdin, run_with_stdin_env};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carpool"))
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("carpool-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const TOML: &str = r#"
hash = "hrw"

[[parent]]
name = "alpha"
host = "127.0.0.1"
port = 4001

[[parent]]
name = "beta"
host = "127.0.0.1"
port = 4002
weight = 2

[[parent]]
name = "gamma"
host = "127.0.0.1"
port = 4003
"#;

#[test]
fn route_prints_one_decision_per_line_in_order() {
    let conf = temp_file("order.toml", TOML);
    let input = "http://a.example/1\nGET http://a.example/1 HTTP/1.1\nhttp:/broken\nsecure.example:443\nOPTIONS * HTTP/1.1\nGET http://a.example/\u{7f} HTTP/1.1\n";
    let out = run_with_stdin(&["route", "-c", conf.to_str().unwrap()], input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(["alpha", "beta", "gamma"].contains(&lines[0]));
    assert_eq!(
        lines[0], lines[1],
        "a target and its request line route alike"
    );
    assert_eq!(lines[2], "REJECT 400");
    assert!(["alpha", "beta", "gamma"].contains(&lines[3]));
    assert_eq!(lines[4], "REJECT 501");
    assert_eq!(lines[5], "REJECT 400");
}

#[test]
fn explain_shows_key_and_every_member() {
    let conf = temp_file("explain.toml", TOML);
    let out = run_with_stdin(
        &["route", "--explain", "-c", conf.to_str().unwrap()],
        "HTTP://A.Example:80/x?y\n",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    assert_eq!(fields[1], "key=http://a.example/x?y");
    assert_eq!(fields.len(), 2 + 3, "{text}");
    let winner = fields[0];
    let rank1 = fields[2..].iter().find(|f| f.contains(" rank=1 ")).unwrap();
    assert!(rank1.starts_with(winner), "{rank1} vs {winner}");
}

#[test]
fn squid_conf_source_uses_squid_mode() {
    let conf = temp_file(
        "squid.conf",
        "cache_peer 127.0.0.1 parent 4001 0 carp name=p1\ncache_peer 127.0.0.1 parent 4002 0 carp name=p2\ncache_peer 127.0.0.2 sibling 4003 0\n",
    );
    let out = run_with_stdin(
        &["route", "--squid-conf", conf.to_str().unwrap()],
        "http://example.com/\n",
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains(":3:"),
        "sibling ignored with a warning: {stderr}"
    );
    let choice = String::from_utf8(out.stdout).unwrap();
    assert!(choice == "p1\n" || choice == "p2\n");
}

#[test]
fn config_errors_name_file_line_and_key() {
    let cases = [
        (
            "bad.toml",
            "hash = \"hrw\"\n[[parent]]\nhost = \"a\"\nport = 99999\n",
            "-c",
            "4: `port`",
        ),
        (
            "bad.conf",
            "http_port 3128\ncache_peer a parent 3128 0 carp weight=x\n",
            "--squid-conf",
            "2: `weight`",
        ),
    ];
    for (name, text, flag, want) in cases {
        let bad = temp_file(name, text);
        let out = run_with_stdin(&["route", flag, bad.to_str().unwrap()], "");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:{want}", bad.display())), "{err}");
    }

    let out = run_with_stdin(&["route", "-c", "/nonexistent/carpool.toml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// route streams: answers come out while input is still arriving, and a large
/// input does not grow its memory (peak RSS read from /proc while it runs).
#[test]
fn route_streams_with_bounded_memory() {
    let conf = temp_file("stream.toml", TOML);
    let mut child = bin()
        .args(["route", "-c", conf.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut n = 0u64;
        for line in BufReader::new(stdout).lines() {
            let _ = line.unwrap();
            n += 1;
        }
        n
    });
    // 1M lines (~60 MB) written while the stdin stays open.
    let mut block = String::new();
    for i in 0..10_000 {
        block.push_str(&format!(
            "http://host{}.example/some/long/path/to/object-{i}.bin?x=1\n",
            i % 97
        ));
    }
    for _ in 0..100 {
        stdin.write_all(block.as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(reader.join().unwrap(), 1_000_000);
    assert!(hwm_kb < 30 * 1024, "peak RSS {hwm_kb} kB for a 60 MB input");
}

/// The percentage on `plan`'s `moved:` line.
fn moved_percent(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("moved:"))
        .expect("a moved: line");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap()
}

#[test]
fn plan_reports_shares_and_moves() {
    let old = temp_file("old.toml", TOML);
    let new = temp_file(
        "new.toml",
        &TOML.replace(
            "[[parent]]\nname = \"gamma\"\nhost = \"127.0.0.1\"\nport = 4003\n",
            "",
        ),
    );
    let out = bin()
        .args([
            "plan",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--samples",
            "40000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let pct = moved_percent(&text);
    // gamma had 1/4 of the weight: in hrw only its URLs move
    assert!((pct - 25.0).abs() < 1.5, "{text}");
    assert!(text.contains("gamma") && text.contains("1 -> -"), "{text}");
    // the same change in squid mode moves more than the minimum
    let sq_old = temp_file("old.conf", "cache_peer 127.0.0.1 parent 4003 0 carp name=gamma\ncache_peer 127.0.0.1 parent 4001 0 carp name=alpha\ncache_peer 127.0.0.1 parent 4002 0 carp name=beta\n");
    let sq_new = temp_file("new.conf", "cache_peer 127.0.0.1 parent 4001 0 carp name=alpha\ncache_peer 127.0.0.1 parent 4002 0 carp name=beta\n");
    let out = bin()
        .args([
            "plan",
            sq_old.to_str().unwrap(),
            sq_new.to_str().unwrap(),
            "--samples",
            "40000",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let pct = moved_percent(&text);
    assert!(
        pct > 40.0,
        "squid mode removing the first-sorted member: {text}"
    );
}

#[test]
fn plan_reads_urls_from_stdin() {
    let conf = temp_file("same.toml", TOML);
    let c = conf.to_str().unwrap();
    let out = run_with_stdin(
        &["plan", c, c, "--stdin"],
        "http://a/\nhttp://b/\nnot a url\n",
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("2 URLs from stdin, 1 unroutable lines skipped"),
        "{text}"
    );
    assert!(text.contains("moved: 0.00%"), "{text}");
}

#[test]
fn check_validates_without_running() {
    let good = temp_file("check-good.toml", TOML);
    let out = bin()
        .args(["check", "-c", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("OK: hash = \"hrw\", 3 parents"), "{text}");
    let bad = temp_file("check-bad.toml", &TOML.replace("port = 4002", "port = 0"));
    let out = bin()
        .args(["check", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:12: `port`", bad.display())),
        "{err}"
    );
    let sq = temp_file(
        "check.conf",
        "cache_peer 127.0.0.1 parent 4001 0 carp name=a\n",
    );
    let out = bin()
        .args(["check", "--squid-conf", sq.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK: hash = \"squid\", 1 parents"));
}

/// `plan`'s columns line up with their header whatever the names and
/// figures (a long parent name or weight pushed its row out of line).
#[test]
fn plan_columns_line_up() {
    let old = temp_file(
        "cols-old.toml",
        "hash = \"hrw\"\n[[parent]]\nname = \"a-rather-long-parent-name-01\"\nhost = \"127.0.0.1\"\nport = 1\nweight = 100000\n[[parent]]\nname = \"b\"\nhost = \"127.0.0.1\"\nport = 2\n",
    );
    let new = temp_file(
        "cols-new.toml",
        "hash = \"hrw\"\n[[parent]]\nname = \"a-rather-long-parent-name-01\"\nhost = \"127.0.0.1\"\nport = 1\n[[parent]]\nname = \"c\"\nhost = \"127.0.0.1\"\nport = 3\n",
    );
    let out = bin()
        .args([
            "plan",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--samples",
            "2000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let table: Vec<&str> = text.lines().skip(1).take(4).collect();
    assert!(table[0].starts_with("parent"), "{text}");
    // right-aligned columns: every line ends where the header does, and
    // each column's last character sits under the header's
    let ends = |l: &str| -> Vec<usize> {
        let b = l.as_bytes();
        (1..b.len())
            .filter(|&i| b[i - 1] != b' ' && (i == b.len() || b[i] == b' '))
            .chain([b.len()])
            .collect()
    };
    let header_ends = ends(table[0]);
    for row in &table[1..] {
        assert_eq!(row.len(), table[0].len(), "{text}");
        let row_ends = ends(row);
        for e in &header_ends[1..] {
            assert!(
                row_ends.contains(e),
                "column ending at {e} out of line:\n{text}"
            );
        }
    }
}

/// `check` names every bad value of a file in one run, tells a squid.conf
/// given as TOML what to do, and says plainly when it cannot read a file.
#[test]
fn check_reports_every_error_at_once() {
    let bad = temp_file(
        "check-many.toml",
        &TOML
            .replace("hash = \"hrw\"", "hash = \"ring\"")
            .replace("port = 4002", "port = 0")
            .replace("port = 4003", "port = 4003\nweight = -1"),
    );
    let out = bin()
        .args(["check", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["2: `hash`", "12: `port`", "19: `weight`"] {
        assert!(
            err.contains(&format!("{}:{want}", bad.display())),
            "{want} missing from:\n{err}"
        );
    }

    let sq = temp_file(
        "squid-as-toml",
        "http_port 3128\ncache_peer 127.0.0.1 parent 4001 0 carp name=a\n",
    );
    let out = bin()
        .args(["check", "-c", sq.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("looks like a squid.conf"), "{err}");
    assert!(err.contains("--squid-conf"), "{err}");

    let out = bin()
        .args(["check", "-c", "/nonexistent/carpool.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read /nonexistent/carpool.toml: No such file"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one message, once:\n{err}");
}

/// `plan` over `args` with progress every `interval_ms` (none: the default,
/// 2 s), stdin from `stdin`.
fn plan_with_progress(args: &[&str], interval_ms: Option<u64>, stdin: Stdio) -> (String, String) {
    let mut cmd = bin();
    cmd.arg("plan").args(args).stdin(stdin);
    match interval_ms {
        Some(ms) => cmd.env("CARPOOL_PROGRESS_INTERVAL_MS", ms.to_string()),
        None => cmd.env_remove("CARPOOL_PROGRESS_INTERVAL_MS"),
    };
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

/// The number (digits grouped by commas) after `before` in `line`.
fn number_after(line: &str, before: &str) -> u64 {
    let rest = &line[line
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} in {line}"))
        + before.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit() && c != ',')
        .unwrap_or(rest.len());
    rest[..end]
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("a number after {before:?} in {line}"))
}

/// A long `plan` says how far it got on stderr, one line per interval
/// (every 4096 URLs here, the interval being 0), and prints the same report
/// on stdout as without; a quick one prints nothing on stderr.
#[test]
fn plan_shows_its_progress_on_stderr_only() {
    let old = temp_file("progress-old.toml", TOML);
    let new = temp_file(
        "progress-new.toml",
        &TOML.replace("port = 4003\n", "port = 4003\nweight = 3\n"),
    );
    let args = [
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--samples",
        "100000",
    ];
    // the default interval (2 s) is longer than this run: nothing shown
    let (quiet_out, quiet_err) = plan_with_progress(&args, None, Stdio::null());
    assert_eq!(quiet_err, "", "a quick plan shows no progress");
    let (out, err) = plan_with_progress(&args, Some(0), Stdio::null());
    assert_eq!(out, quiet_out, "the report does not change");
    assert!(!out.contains("carpool: plan:"), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 100_000 / 4096, "{err}");
    for (i, l) in lines.iter().enumerate() {
        let done = number_after(l, "carpool: plan: ");
        assert_eq!(done, (i as u64 + 1) * 4096, "{err}");
        assert!(l.contains(" of 100,000 URLs ("), "{l}");
        assert_eq!(number_after(l, "URLs ("), done * 100 / 100_000, "{l}");
        assert!(number_after(l, "%), ") > 0, "{l}: a rate");
        assert!(l.contains(" URLs/s, ETA "), "{l}");
        // the rest of this quick run: seconds at most
        assert!(l.ends_with(" s") && number_after(l, "ETA ") < 60, "{l}");
    }
}

/// From a pipe, `plan --stdin` can count lines but not say how many are
/// left; from a file it knows the size, and the time left.
#[test]
fn plan_from_stdin_shows_lines_read_and_from_a_file_the_time_left() {
    let conf = temp_file("progress-stdin.toml", TOML);
    let c = conf.to_str().unwrap();
    let input: String = (0..20_000)
        .map(|i| format!("http://site{}.example/page/{i}\n", i % 97))
        .collect();
    // a pipe: lines read and a rate, no total
    let out = run_with_stdin_env(
        &["plan", c, c, "--stdin"],
        &[("CARPOOL_PROGRESS_INTERVAL_MS", "0")],
        &input,
    );
    let (stdout, err) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(stdout.contains("20000 URLs from stdin"), "{stdout}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 20_000 / 4096, "{err}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(number_after(l, "carpool: plan: "), (i as u64 + 1) * 4096);
        assert!(
            l.contains(" lines read, ") && l.ends_with(" lines/s"),
            "{l}"
        );
    }
    // a file: bytes of the whole, percent, time left
    let file = temp_file("progress-urls.txt", &input);
    let (stdout, err) = plan_with_progress(
        &[c, c, "--stdin"],
        Some(0),
        Stdio::from(std::fs::File::open(&file).unwrap()),
    );
    assert!(stdout.contains("20000 URLs from stdin"), "{stdout}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 20_000 / 4096, "{err}");
    let size = input.len() as u64;
    let mut last = 0;
    for l in &lines {
        assert!(
            l.contains(&format!(" KiB of {:.1} KiB read (", size as f64 / 1024.0)),
            "{l}"
        );
        let pct = number_after(l, "read (");
        assert!(pct > last && pct < 100, "{err}");
        last = pct;
        assert!(l.ends_with(" s") && number_after(l, "ETA ") < 60, "{l}");
    }
}
