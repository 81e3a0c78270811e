//! The dashboard (`GET /` on `carpool up`'s admin listener) in a real
//! browser: headless Chromium (Debian's `chromium`, installed by
//! `scripts/test`) loads it from a real array that served known traffic,
//! and the rendered page shows every member with its expected and actual
//! share; a screenshot is left in the test's output folder.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::origin::Origin;
use common::route;
use common::up::Up;

/// Debian's `chromium`, if installed.
fn chromium_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

/// A Chromium run in its own process group; the whole group (browser,
/// zygote, renderers, GPU process) is killed when this is dropped, so none
/// outlives the test, even on a panic.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the group this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Runs headless Chromium on `url` with `extra` arguments (profile under
/// `dir`), at most 60 s; its stdout as text.
fn run_chromium(bin: &Path, dir: &Path, tag: &str, extra: &[String], url: &str) -> String {
    let out_path = dir.join(format!("{tag}.out"));
    let err_path = dir.join(format!("{tag}.err"));
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--virtual-time-budget=5000",
    ]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Chromium refuses to run as root with its sandbox
        cmd.arg("--no-sandbox");
    }
    cmd.arg(format!(
        "--user-data-dir={}",
        dir.join(format!("profile-{tag}")).display()
    ))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&out_path).unwrap())
    .stderr(std::fs::File::create(&err_path).unwrap())
    .process_group(0);
    let mut browser = Browser {
        child: cmd.spawn().expect("start chromium"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = browser.child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            drop(browser);
            panic!(
                "chromium ({tag}) did not finish within 60 s; its stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(browser); // whatever it left running
    eprintln!("chromium ({tag}): {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        status.success(),
        "chromium ({tag}) failed: {status:?}; its stderr:\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    std::fs::read_to_string(&out_path).unwrap()
}

/// A share as the page writes it: JavaScript's `(v * 100).toFixed(1) + '%'`
/// (exact ties round up there, to even in Rust), `–` without one.
fn percent(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "–".into();
    };
    let p = v * 100.0;
    // an exact tie at one decimal is n.x5 exactly, i.e. n.25 or n.75
    let tie = (p * 4.0).fract() == 0.0 && (p * 2.0).fract() != 0.0;
    format!("{:.1}%", if tie { p + 0.01 } else { p })
}

/// The text of every element whose class list holds `class`, in `html`.
fn texts_of_class(html: &str, class: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("class=\"") {
        rest = &rest[i + 7..];
        let Some(end) = rest.find('"') else { break };
        let classes = &rest[..end];
        rest = &rest[end..];
        if classes.split_whitespace().any(|c| c == class) {
            let Some(gt) = rest.find('>') else { break };
            let text = &rest[gt + 1..];
            out.push(text[..text.find('<').unwrap_or(text.len())].to_string());
        }
    }
    out
}

/// The parts of `dom` that start at an element with `data-member="NAME"`
/// and end at the next such element, by name.
fn member_parts(dom: &str) -> Vec<(String, &str)> {
    const ATTR: &str = "data-member=\"";
    let starts: Vec<usize> = dom.match_indices(ATTR).map(|(i, _)| i).collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let end = starts.get(k + 1).copied().unwrap_or(dom.len());
            let part = &dom[i + ATTR.len()..end];
            let name = part[..part.find('"').unwrap()].to_string();
            (name, part)
        })
        .collect()
}

fn attr_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[test]
fn chromium_renders_every_member_and_its_shares() {
    let Some(chromium) = chromium_binary() else {
        eprintln!(
            "SKIP: chromium_renders_every_member_and_its_shares: chromium is not installed (scripts/test installs Debian's chromium)"
        );
        return;
    };
    let begun = Instant::now();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out).unwrap();
    let o = Origin::start();
    let up = Up::start("dashboard");

    // known traffic: 30 URLs twice, the second round from the caches
    let urls: Vec<String> = (0..30)
        .map(|i| o.url(&format!("/d{i}?cc=max-age%3D600")))
        .collect();
    let owners = route(&std::fs::read_to_string(&up.conf).unwrap(), &urls);
    assert_eq!(owners.len(), urls.len(), "carpool route: {owners:?}");
    for round in 0..2 {
        for u in &urls {
            let r = up.get(u);
            assert_eq!(r.status, 200, "round {round} {u}: {}\n{}", r.head, up.log());
            let want = if round == 0 { "MISS" } else { "HIT" };
            assert_eq!(r.header("x-cache").as_deref(), Some(want), "{u}");
        }
    }

    // From here on no traffic: the actual shares (over a 60 s window that
    // started with the array) stay what this fetch says while the browser
    // reads them.
    let status = common::admin_status_after(up.admin, 2 * urls.len() as u64);
    let members = status["members"].as_array().expect("members").clone();
    let names: Vec<String> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["c0", "c1", "c2"], "{status:#}");
    for m in &members {
        let name = m["name"].as_str().unwrap();
        let owned = owners.iter().filter(|o| *o == name).count() as f64;
        let actual = m["actual_share"].as_f64().expect("an actual share");
        assert!(
            (actual - owned / urls.len() as f64).abs() < 1e-9,
            "{name} owns {owned} of the URLs: {m:#}"
        );
    }

    let admin_url = format!("http://127.0.0.1:{}/", up.admin);
    let profile = up.dir.join("chromium");
    std::fs::create_dir_all(&profile).unwrap();
    let dom = run_chromium(
        &chromium,
        &profile,
        "dump-dom",
        &["--dump-dom".to_string()],
        &admin_url,
    );
    std::fs::write(out.join("dashboard.dom.html"), &dom).unwrap();
    let png_path = out.join("dashboard.png");
    let _ = std::fs::remove_file(&png_path);
    run_chromium(
        &chromium,
        &profile,
        "screenshot",
        &[
            format!("--screenshot={}", png_path.display()),
            "--window-size=1280,1000".to_string(),
        ],
        &admin_url,
    );
    eprintln!(
        "dashboard: screenshot {} and DOM {}",
        png_path.display(),
        out.join("dashboard.dom.html").display()
    );

    // rendered, and without the error banner
    assert!(
        dom.contains("data-rendered=\"1\""),
        "the page did not render:\n{dom}"
    );
    let banner = dom.find("id=\"banner\"").expect("the banner element");
    let banner = &dom[banner..];
    let banner = &banner[banner.find('>').unwrap() + 1..];
    let banner = &banner[..banner.find('<').unwrap()];
    assert_eq!(banner, "", "the page shows the error banner");

    // every member with its shares, and no other
    let parts = member_parts(&dom);
    let mut shown: Vec<String> = parts.iter().map(|(n, _)| n.clone()).collect();
    shown.sort();
    shown.dedup();
    let mut want_names: Vec<String> = names.iter().map(|n| attr_escape(n)).collect();
    want_names.sort();
    assert_eq!(shown, want_names, "members on the page");
    for m in &members {
        let name = attr_escape(m["name"].as_str().unwrap());
        let expected = percent(m["expected_share"].as_f64());
        let actual = percent(m["actual_share"].as_f64());
        let mut both = 0;
        for (_, part) in parts.iter().filter(|(n, _)| *n == name) {
            let (e, a) = (
                texts_of_class(part, "expected"),
                texts_of_class(part, "actual"),
            );
            assert!(
                e.iter().all(|t| *t == expected) && a.iter().all(|t| *t == actual),
                "{name}: the page says expected {e:?} actual {a:?}, /status {expected} {actual}\n{part}"
            );
            if !e.is_empty() && !a.is_empty() {
                both += 1;
            }
        }
        assert!(
            both >= 1,
            "{name}: no element with its expected and actual share\n{dom}"
        );
    }

    // the screenshot: a PNG 1280 px wide, not blank
    let png = std::fs::read(&png_path).expect("the screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!(width, 1280, "screenshot width");
    assert!(height >= 900, "screenshot height {height}");
    assert!(png.len() > 20_000, "screenshot of {} bytes", png.len());
    eprintln!(
        "dashboard: {} members, {width}x{height} PNG of {} KiB, {:.1} s",
        members.len(),
        png.len() / 1024,
        begun.elapsed().as_secs_f64()
    );
}

#[test]
fn shares_are_formatted_as_the_page_does() {
    assert_eq!(percent(None), "–");
    assert_eq!(percent(Some(1.0 / 3.0)), "33.3%");
    assert_eq!(percent(Some(2.0 / 3.0)), "66.7%");
    assert_eq!(percent(Some(0.0)), "0.0%");
    assert_eq!(percent(Some(1.0)), "100.0%");
    // what `(v * 100).toFixed(1)` gives in V8 (node) on exact ties and
    // next to them
    assert_eq!(percent(Some(0.0025)), "0.3%");
    assert_eq!(percent(Some(0.0075)), "0.8%");
    assert_eq!(percent(Some(0.1225)), "12.3%");
    assert_eq!(percent(Some(0.1275)), "12.8%");
    assert_eq!(percent(Some(0.3325)), "33.3%");
    assert_eq!(percent(Some(0.00125)), "0.1%");
}
