//! Crash safety with real `kill -9`: a child process (this test executable
//! run again, see `child_process`) writes, replaces, refreshes and removes
//! objects in a loop, and is killed with SIGKILL at random moments. After
//! every kill the store is reopened: every visible object must verify byte
//! for byte against the generator its meta names, nothing is dropped as
//! corrupt (a killed process loses nothing the page cache has), and no
//! temporary file is left. Also: the directory lock excludes a second
//! process and dies with its holder.

mod common;

use cache_store::{Key, OpenProgress, Store, StoreError};
use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ENV_DIR: &str = "CACHE_STORE_CHILD_DIR";
const ENV_MODE: &str = "CACHE_STORE_CHILD_MODE";
const ENV_SEED: &str = "CACHE_STORE_CHILD_SEED";
/// Keys the child writes: "crash-0" .. "crash-{KEYS-1}".
const KEYS: u32 = 80;
/// Kill-and-reopen rounds.
const ROUNDS: u32 = 8;

fn child_cfg(dir: &Path) -> cache_store::StoreConfig {
    let mut c = disk_cfg(dir, 48 << 20, MEM);
    // Frequent checkpoints, so kills land before, during and after them.
    c.disk.as_mut().unwrap().sync_interval = Duration::from_millis(40);
    c
}

/// Meta the child stores: names the generator of the body.
fn meta_of(version: u64, len: usize, refresh: u32) -> Vec<u8> {
    format!("v={version} len={len} r={refresh}").into_bytes()
}

fn parse_meta(m: &[u8]) -> (u64, usize) {
    let s = std::str::from_utf8(m).expect("meta is text");
    let mut it = s.split(' ');
    let v = it
        .next()
        .and_then(|x| x.strip_prefix("v="))
        .and_then(|x| x.parse().ok());
    let l = it
        .next()
        .and_then(|x| x.strip_prefix("len="))
        .and_then(|x| x.parse().ok());
    match (v, l) {
        (Some(v), Some(l)) => (v, l),
        _ => panic!("bad meta {s:?}"),
    }
}

/// Not a test: the body of the child process, run by the tests below with
/// `--ignored --exact child_process`.
#[test]
#[ignore = "child process of the crash tests"]
fn child_process() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let seed: u64 = std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let s = open(child_cfg(Path::new(&dir)));
    println!("CHILD-READY");
    if std::env::var(ENV_MODE).as_deref() == Ok("hold") {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut version = seed << 32;
    // A large object streamed a little per iteration, as a slow origin
    // would: most kills find it half written.
    let mut slow: Option<(cache_store::Writer, Vec<u8>)> = None;
    loop {
        version += 1;
        if slow.is_none() {
            let k = format!("crash-{}", rng.gen_range(0..KEYS));
            let len = rng.gen_range(200_000..2_000_000);
            let w = s
                .begin(
                    Key::of(k.as_bytes()),
                    k.as_bytes(),
                    &meta_of(version, len, 0),
                    None,
                )
                .unwrap();
            slow = Some((w, content(k.as_bytes(), version, len)));
            version += 1;
        }
        if let Some((w, body)) = &mut slow {
            let at = w.written() as usize;
            let end = (at + 32_768).min(body.len());
            w.append(&body[at..end]).unwrap();
            if end == body.len() {
                if let Some((w, _)) = slow.take() {
                    w.finish().unwrap();
                }
            }
        }
        let k = format!("crash-{}", rng.gen_range(0..KEYS));
        let kb = k.as_bytes();
        match rng.gen_range(0..100) {
            0..=79 => {
                let len = match rng.gen_range(0..20) {
                    0 => rng.gen_range(1 << 20..3 << 20),
                    1 => 0,
                    2..=5 => rng.gen_range(64 << 10..512 << 10),
                    _ => rng.gen_range(1..40_000),
                };
                let body = content(kb, version, len);
                let announced = rng.gen_bool(0.5).then_some(len as u64);
                let mut w = s
                    .begin(Key::of(kb), kb, &meta_of(version, len, 0), announced)
                    .unwrap();
                for c in body.chunks(rng.gen_range(1000..70_000)) {
                    w.append(c).unwrap();
                }
                w.finish().unwrap();
            }
            80..=89 => {
                if let Some(h) = s.lookup(Key::of(kb), kb) {
                    let (v, len) = parse_meta(&h.meta);
                    let _ = s.update_meta(Key::of(kb), kb, &meta_of(v, len, rng.gen()));
                }
            }
            90..=94 => {
                s.remove(Key::of(kb), kb);
            }
            _ => {
                // A write abandoned halfway.
                let mut w = s.begin(Key::of(kb), kb, b"junk", None).unwrap();
                w.append(&content(kb, version, 50_000)).unwrap();
            }
        }
    }
}

fn spawn_child(dir: &Path, mode: &str, seed: u64) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_MODE, mode)
        .env(ENV_SEED, seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before opening the store"
        );
        // libtest prints "test child_process ... " before it on the same line.
        if line.trim_end().ends_with("CHILD-READY") {
            break;
        }
    }
    child
}

fn kill9(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[test]
fn kill_9_at_random_moments_never_exposes_a_partial_object() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut seen_total = 0;
    let mut cut_short = 0u32;
    for round in 0..ROUNDS {
        let child = spawn_child(dir.path(), "write", seed.wrapping_add(u64::from(round)));
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..700)));
        kill9(child);
        let leftovers = files(&dir.path().join("tmp")).len();
        cut_short += u32::from(leftovers > 0);

        let mut last = OpenProgress::default();
        let s = Store::open(child_cfg(dir.path()), |p| last = p).unwrap();
        assert!(
            files(&dir.path().join("tmp")).is_empty(),
            "round {round}: temp files left"
        );
        assert_eq!(last.dropped, 0, "round {round}: {last:?}");
        let mut visible = 0;
        for i in 0..KEYS {
            let k = format!("crash-{i}");
            let Some((meta, body)) = get(&s, k.as_bytes()) else {
                continue;
            };
            let (version, len) = parse_meta(&meta);
            assert_eq!(body.len(), len, "round {round}: {k}");
            assert!(
                body == content(k.as_bytes(), version, len),
                "round {round}: {k} differs"
            );
            visible += 1;
        }
        let st = s.stats();
        assert_eq!(st.dropped_corrupt, 0, "round {round}");
        assert_eq!(
            st.disk.objects, visible as u64,
            "round {round}: index vs lookups"
        );
        assert!(st.disk.bytes <= 48 << 20);
        eprintln!(
            "round {round}: {leftovers} writes cut short, {visible} objects visible, {} bodies checked at open",
            last.verified
        );
        seen_total += visible;
        // Dropped without close: the next child starts from an unclean state.
    }
    assert!(seen_total > 0, "the child never published anything");
    assert!(
        cut_short >= ROUNDS / 2,
        "only {cut_short} kills hit a write in progress"
    );
}

#[test]
fn the_lock_excludes_another_process_and_dies_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_child(dir.path(), "hold", 1);
    let e = Store::open(child_cfg(dir.path()), |_| {}).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains(&dir.path().display().to_string()));
    kill9(child);
    // The kernel released the dead process's lock.
    open(child_cfg(dir.path()));
}
