//! `carpool reload`, `rotate` and `stop`: `squid -k reconfigure`, `rotate`
//! and `shutdown` for a running carpool, found by its pid file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cli::Target;
use crate::control::{self, ReloadRecord};

/// How often `reload` looks for the outcome.
const POLL: Duration = Duration::from_millis(50);

/// The pid file `target` names.
fn pid_file(target: &Target) -> Result<PathBuf> {
    crate::array::pid_file(&crate::array::UpOptions {
        config: target.config.clone(),
        data: target.data.clone(),
        pid_file: target.pid_file.clone(),
        ..Default::default()
    })
}

/// SIGHUP to `carpool up`; with `wait`, the outcome of that reload.
pub fn reload(target: &Target, wait: bool, timeout: Duration) -> Result<ExitCode> {
    let path = pid_file(target)?;
    let pid = control::running(&path)?;
    let before = ReloadRecord::read(&path).map_or(0, |r| r.count);
    control::send(pid, libc::SIGHUP)?;
    if !wait {
        println!("carpool (pid {pid}): asked to reload");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = ReloadRecord::read(&path).filter(|r| r.count > before) {
            return Ok(if r.done {
                println!("carpool (pid {pid}): reload done: {}", r.text);
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "carpool (pid {pid}): reload rejected, the array runs on unchanged: {}",
                    r.text
                );
                ExitCode::from(1)
            });
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "pid {pid} got SIGHUP but reported no outcome within {}s (is it `carpool up`? a standalone frontend or cache only reopens its log on SIGHUP)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// SIGUSR1: reopen the access logs.
pub fn rotate(target: &Target) -> Result<ExitCode> {
    let path = pid_file(target)?;
    let pid = control::running(&path)?;
    control::send(pid, libc::SIGUSR1)?;
    println!("carpool (pid {pid}): asked to reopen its logs");
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM, then wait until it has exited.
pub fn stop(target: &Target, timeout: Duration) -> Result<ExitCode> {
    let path = pid_file(target)?;
    let pid = control::running(&path)?;
    control::send(pid, libc::SIGTERM)?;
    if control::wait_exit(pid, timeout) {
        println!("carpool (pid {pid}): stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "pid {pid} is still running {}s after SIGTERM",
            timeout.as_secs()
        )
    }
}
