//! Finding and signalling a running carpool, as `squid -k` does: the pid
//! file that `up`, `frontend` and `cache` write (`--pid-file`), the record
//! of `up`'s last reload beside it, and the signals `carpool reload`,
//! `rotate` and `stop` send.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The pid file of a running server: written at start, removed when it
/// exits (when it still holds this process's pid).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to `path`. Refuses when the file names
    /// another carpool that is running; a stale file is replaced.
    pub fn create(path: &Path) -> Result<PidFile> {
        if let Ok(pid) = running(path) {
            anyhow::bail!(
                "carpool is already running as pid {pid} ({} names it)",
                path.display()
            );
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("pid.tmp");
        std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.path).ok() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid in a pid file.
fn read_pid(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the pid file {} (is carpool running? give --pid-file, or the -c/--data it was started with)",
            path.display()
        )
    })?;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|&p| p > 1)
        .with_context(|| format!("{}: {:?} is not a pid", path.display(), text.trim()))
}

/// The pid of the carpool server named by `path`: the file exists, the
/// process runs, and it is a carpool server (`up`, `frontend` or `cache`).
pub fn running(path: &Path) -> Result<u32> {
    let pid = read_pid(path)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline.split(|&b| b == 0);
    let exe = args.next().unwrap_or_default();
    let is_carpool = String::from_utf8_lossy(exe).contains("carpool")
        && args.any(|a| matches!(a, b"up" | b"frontend" | b"cache"));
    if !is_carpool || !alive(pid) {
        anyhow::bail!(
            "{} names pid {pid}, which is not a running carpool (a stale file: was it stopped uncleanly?)",
            path.display()
        );
    }
    Ok(pid)
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Sends `signal` to `pid`.
pub fn send(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) with a checked pid and a valid signal number.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot signal pid {pid}"));
    }
    Ok(())
}

/// Waits until `pid` has exited; false when `timeout` passed first.
pub fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// What the last reload of `carpool up` did, kept beside its pid file so
/// that `carpool reload` can wait for it and print it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadRecord {
    /// Reloads since `up` started (1 for the first).
    pub count: u64,
    /// Whether the new config is in force.
    pub done: bool,
    /// The summary, or why it was rejected.
    pub text: String,
}

impl ReloadRecord {
    /// The file beside `pid_file`.
    pub fn path(pid_file: &Path) -> PathBuf {
        pid_file.with_extension("reload")
    }

    /// Writes the record (replacing the file at once).
    pub fn write(&self, pid_file: &Path) -> Result<()> {
        let path = ReloadRecord::path(pid_file);
        let tmp = path.with_extension("reload.tmp");
        let word = if self.done { "done" } else { "rejected" };
        let line = self.text.replace('\n', " ");
        std::fs::write(&tmp, format!("{} {word} {line}\n", self.count))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The last record (none before the first reload).
    pub fn read(pid_file: &Path) -> Option<ReloadRecord> {
        let text = std::fs::read_to_string(ReloadRecord::path(pid_file)).ok()?;
        let mut parts = text.trim_end().splitn(3, ' ');
        let count = parts.next()?.parse().ok()?;
        let done = match parts.next()? {
            "done" => true,
            "rejected" => false,
            _ => return None,
        };
        Some(ReloadRecord {
            count,
            done,
            text: parts.next().unwrap_or_default().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_names_this_process_and_goes_away() {
        let dir = std::env::temp_dir().join(format!("carpool-pid-{}", std::process::id()));
        let path = dir.join("run/carpool.pid");
        let f = PidFile::create(&path).unwrap();
        assert_eq!(read_pid(&path).unwrap(), std::process::id());
        // the test binary is not a carpool server: its own file reads as stale
        assert!(running(&path).unwrap_err().to_string().contains("stale"));
        drop(f);
        assert!(!path.exists());
        std::fs::write(&path, "1234567\n").unwrap();
        assert!(running(&path).is_err());
        std::fs::write(&path, "nonsense\n").unwrap();
        assert!(read_pid(&path)
            .unwrap_err()
            .to_string()
            .contains("is not a pid"));
        let r = ReloadRecord {
            count: 3,
            done: false,
            text: "bad\nfile".into(),
        };
        r.write(&path).unwrap();
        let back = ReloadRecord::read(&path).unwrap();
        assert_eq!(
            (back.count, back.done, back.text.as_str()),
            (3, false, "bad file")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
