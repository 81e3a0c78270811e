//! The disk tier survives a restart: objects written, the store closed (or
//! just dropped) and reopened are found with identical bytes and meta, and
//! the reopening reports its progress.

mod common;

use cache_store::{Key, OpenProgress, Store};
use common::*;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;

/// Writes a random population with replacements, meta updates and removals;
/// returns what must be found: key → (version, meta, len).
fn populate(s: &Store, rng: &mut StdRng, n: u32) -> BTreeMap<String, (u64, Vec<u8>, usize)> {
    let mut want = BTreeMap::new();
    for i in 0..n {
        let k = format!("http://example.com/{}", rng.gen_range(0..n / 2));
        let len = match rng.gen_range(0..10) {
            0 => rng.gen_range(100_000..400_000),
            1 => 0,
            _ => rng.gen_range(1..20_000),
        };
        let meta = format!("v{i} {k}").into_bytes();
        put(
            s,
            k.as_bytes(),
            &meta,
            &content(k.as_bytes(), u64::from(i), len),
            4096,
        );
        want.insert(k, (u64::from(i), meta, len));
    }
    let keys: Vec<String> = want.keys().cloned().collect();
    for k in keys.iter().step_by(5) {
        let meta = format!("refreshed {k}").into_bytes();
        assert!(s
            .update_meta(Key::of(k.as_bytes()), k.as_bytes(), &meta)
            .unwrap());
        want.get_mut(k).unwrap().1 = meta;
    }
    for k in keys.iter().skip(2).step_by(7) {
        assert!(s.remove(Key::of(k.as_bytes()), k.as_bytes()));
        want.remove(k);
    }
    want
}

fn check_all(s: &Store, want: &BTreeMap<String, (u64, Vec<u8>, usize)>) {
    for (k, (version, meta, len)) in want {
        let (m, b) = get(s, k.as_bytes()).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(&m, meta, "{k}");
        assert!(
            b == content(k.as_bytes(), *version, *len),
            "{k}: body differs"
        );
    }
}

#[test]
fn objects_survive_a_clean_restart() {
    let mut rng = StdRng::seed_from_u64(seed());
    let dir = tempfile::tempdir().unwrap();
    let want = {
        let s = open(disk_cfg(dir.path(), 256 << 20, MEM));
        let want = populate(&s, &mut rng, 300);
        check_all(&s, &want);
        s.close().unwrap();
        want
    };
    let mut reports = Vec::new();
    let s = Store::open(disk_cfg(dir.path(), 256 << 20, MEM), |p| reports.push(p)).unwrap();
    let last = *reports.last().unwrap();
    assert!(last.done);
    assert_eq!(last.objects, want.len() as u64);
    assert_eq!(
        (last.dropped, last.verified),
        (0, 0),
        "clean: nothing to verify"
    );
    let bytes: u64 = want.values().map(|(_, _, len)| *len as u64).sum();
    assert!(last.bytes > bytes, "{last:?}");
    let st = s.stats();
    assert_eq!(st.disk.objects, want.len() as u64);
    check_all(&s, &want);
    // Removed keys stay removed.
    let all = (0..150).map(|i| format!("http://example.com/{i}"));
    for k in all.filter(|k| !want.contains_key(k)) {
        assert!(
            s.lookup(Key::of(k.as_bytes()), k.as_bytes()).is_none(),
            "{k} came back"
        );
    }
}

#[test]
fn objects_survive_an_unclean_restart_and_are_verified() {
    let mut rng = StdRng::seed_from_u64(seed());
    let dir = tempfile::tempdir().unwrap();
    let want = {
        let s = open(disk_cfg(dir.path(), 256 << 20, 0));
        populate(&s, &mut rng, 100)
        // dropped without close: no clean mark, no checkpoint since open
    };
    let mut last = OpenProgress::default();
    let s = Store::open(disk_cfg(dir.path(), 256 << 20, 0), |p| last = p).unwrap();
    assert_eq!(last.objects, want.len() as u64);
    assert_eq!(last.verified, want.len() as u64, "{last:?}");
    assert_eq!(last.dropped, 0);
    check_all(&s, &want);
}

#[test]
fn progress_is_reported_while_scanning() {
    let dir = tempfile::tempdir().unwrap();
    let n = 800;
    {
        let s = open(disk_cfg(dir.path(), 256 << 20, 0));
        for i in 0..n {
            put(&s, format!("k{i}").as_bytes(), b"", b"x", 1);
        }
        s.close().unwrap();
    }
    let mut reports = Vec::new();
    let s = Store::open(disk_cfg(dir.path(), 256 << 20, 0), |p| reports.push(p)).unwrap();
    assert!(reports.len() >= 3, "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0].scanned < w[1].scanned));
    assert!(reports[..reports.len() - 1].iter().all(|p| !p.done));
    let last = reports.last().unwrap();
    assert!(last.done && last.scanned == n && last.objects == n);
    assert_eq!(s.stats().disk.objects, n);
}

#[test]
fn a_smaller_budget_at_open_evicts_down_to_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(disk_cfg(dir.path(), 8 << 20, 0));
        for i in 0..100 {
            put(&s, format!("k{i}").as_bytes(), b"", &[1; 20_000], 20_000);
        }
        s.close().unwrap();
    }
    let s = open(disk_cfg(dir.path(), 1 << 20, 0));
    let st = s.stats();
    assert!(st.disk.bytes <= 1 << 20, "{st:?}");
    assert!(usage(&dir.path().join("objects")) <= 1 << 20);
    // The newest survive.
    assert!(get(&s, b"k99").is_some());
    assert!(get(&s, b"k0").is_none());
}
