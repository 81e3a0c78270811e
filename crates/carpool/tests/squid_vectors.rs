//! `carpool route --squid-conf` agrees with a real Squid 5.7 on every vector,
//! and so does `carpool route -c` on the carpool.toml `carpool import-squid`
//! makes of the same squid.conf (line for line the same output).
//!
//! Vectors come from `scripts/squid-vectors`, which runs Squid as a CARP
//! frontend and records, per raw request line, the key Squid hashed and the
//! parent it picked (from its own `carpSelectParent` debug lines) or the status
//! it refused the line with. The committed set is in `testdata/squid/`; when
//! `CARPOOL_SQUID_VECTORS` names a directory (scripts/test makes a fresh one
//! from a random seed whenever squid is installed), it is checked too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

struct Vector {
    line_no: usize,
    expect: String,
    key: Vec<u8>,
    input: Vec<u8>,
}

fn read_vectors(path: &Path) -> Vec<Vector> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.is_empty())
        .map(|(i, l)| {
            let mut f = l.splitn(3, '\t');
            let (expect, key, input) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            Vector {
                line_no: i + 1,
                expect: expect.to_string(),
                key: unescape(key),
                input: unescape(input),
            }
        })
        .collect()
}

fn vector_sets(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut sets: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p
                .file_name()?
                .to_str()?
                .strip_suffix(".vectors")?
                .to_string();
            Some((dir.join(format!("{name}.squid.conf")), p))
        })
        .collect();
    sets.sort();
    sets
}

/// The recorded squid.conf has `@NAME@` placeholders for the run's ports and
/// paths (they do not affect routing): a copy with each replaced by a number.
fn concrete_conf(conf: &Path) -> PathBuf {
    let text = std::fs::read(conf).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'@' {
            if let Some(len) = text[i + 1..].iter().position(|&b| b == b'@') {
                let name = &text[i + 1..i + 1 + len];
                if !name.is_empty()
                    && name
                        .iter()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
                {
                    out.extend_from_slice(b"3128");
                    i += len + 2;
                    continue;
                }
            }
        }
        out.push(text[i]);
        i += 1;
    }
    let dir = std::env::temp_dir().join(format!("carpool-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(conf.file_name().unwrap());
    std::fs::write(&path, out).unwrap();
    path
}

/// `carpool import-squid CONF -o CONF.toml`: the imported file.
fn import(conf: &Path) -> PathBuf {
    let out = conf.with_extension("imported.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .arg("import-squid")
        .arg(conf)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run carpool import-squid");
    assert!(
        o.status.success(),
        "import-squid {}: {}",
        conf.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Runs route --explain over every input (`source`: `--squid-conf` or
/// `-c`) and returns its output lines.
fn route(source: &str, conf: &Path, inputs: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carpool"))
        .args(["route", "--explain", source])
        .arg(conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start carpool");
    let mut stdin = child.stdin.take().unwrap();
    let payload: Vec<u8> = inputs
        .iter()
        .flat_map(|i| i.iter().copied().chain([b'\n']))
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let out = child.wait_with_output().expect("carpool output");
    writer.join().unwrap().expect("write stdin");
    assert!(
        out.status.success(),
        "carpool route failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .map(|l| l.to_vec())
        .filter(|l| !l.is_empty())
        .collect()
}

fn escape(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if !(0x20..0x7f).contains(&c) || c == b'\\' {
                format!("\\x{c:02x}")
            } else {
                (c as char).to_string()
            }
        })
        .collect()
}

/// Checks one directory; returns (vectors checked, failures).
fn check_dir(dir: &Path) -> (usize, Vec<String>) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for (conf, vectors) in vector_sets(dir) {
        let vs = read_vectors(&vectors);
        assert!(!vs.is_empty(), "{} has no vectors", vectors.display());
        // `carpool route` reads one request line per input line; Squid's
        // request line too ends at the first LF (what follows is header
        // lines, and an HTTP/0.9 request, the only kind with an LF inside its
        // target that reaches a parent, has none).
        let inputs: Vec<&[u8]> = vs
            .iter()
            .map(|v| v.input.split(|&b| b == b'\n').next().unwrap_or_default())
            .collect();
        let concrete = concrete_conf(&conf);
        let outs = route("--squid-conf", &concrete, &inputs);
        let imported = route("-c", &import(&concrete), &inputs);
        let differ = outs.iter().zip(&imported).filter(|(a, b)| a != b).count();
        assert!(
            differ == 0 && outs.len() == imported.len(),
            "{}: the imported carpool.toml routes {differ} of {} inputs differently",
            conf.display(),
            outs.len()
        );
        assert_eq!(
            outs.len(),
            vs.len(),
            "one output line per input ({})",
            vectors.display()
        );
        for (v, out) in vs.iter().zip(&outs) {
            checked += 1;
            let mut fields = out.split(|&b| b == b'\t');
            // route prints a name that is not UTF-8 escaped (`lat\xe9n1`);
            // the vectors hold its bytes
            let choice = fields.next().unwrap_or_default();
            let choice = escape(&carp::table::unescape_name(&String::from_utf8_lossy(
                choice,
            )));
            let key = fields
                .find_map(|f| f.strip_prefix(b"key="))
                .map(|k| unescape(&String::from_utf8_lossy(k)));
            let want = match v.expect.as_str() {
                e if e.starts_with("LOCAL") => "LOCAL".to_string(),
                e => e.to_string(),
            };
            let key_ok = v.key == b"-" || key.as_deref() == Some(v.key.as_slice());
            if choice != want || !key_ok {
                failures.push(format!(
                    "{}:{}: input {:?}\n    squid:   {} key={}\n    carpool: {} key={}",
                    vectors.display(),
                    v.line_no,
                    escape(&v.input),
                    v.expect,
                    escape(&v.key),
                    choice,
                    key.as_deref().map(escape).unwrap_or_default()
                ));
            }
        }
    }
    (checked, failures)
}

fn report(dir: &Path) {
    let (checked, failures) = check_dir(dir);
    assert!(checked > 0, "no vectors under {}", dir.display());
    if !failures.is_empty() {
        let show = std::env::var("CARPOOL_VECTORS_SHOW")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        let shown: Vec<_> = failures.iter().take(show).cloned().collect();
        panic!(
            "{} of {checked} vectors disagree with Squid under {}:\n{}",
            failures.len(),
            dir.display(),
            shown.join("\n")
        );
    }
    eprintln!("{checked} vectors agree with Squid under {}", dir.display());
}

#[test]
fn committed_vectors_agree_with_squid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/squid");
    report(&dir);
}

#[test]
fn fresh_vectors_agree_with_squid() {
    match std::env::var_os("CARPOOL_SQUID_VECTORS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let dir = if dir.is_absolute() {
                dir
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(dir)
            };
            report(&dir)
        }
        None => eprintln!(
            "SKIP: fresh_vectors_agree_with_squid: CARPOOL_SQUID_VECTORS is not set \
             (scripts/test sets it after generating vectors from a live Squid)"
        ),
    }
}
