//! `carpool lb-rules`: print the rules, or apply / remove them (root).

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};

use crate::lbrules::Spread;

/// Prints the rules, or applies or removes them.
pub fn run(spread: &Spread, nftables: bool, apply: bool, remove: bool) -> Result<ExitCode> {
    if !(apply || remove) {
        print!("{}", spread.explanation());
        if nftables {
            print!("{}", spread.nftables());
        } else {
            for rule in spread.iptables("-A") {
                println!("iptables {}", rule.join(" "));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("--apply and --remove change the kernel's NAT table and need root");
    }
    match (nftables, apply) {
        (true, true) => {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .context("running nft (Debian package nftables)")?;
            child
                .stdin
                .take()
                .context("nft stdin")?
                .write_all(spread.nftables().as_bytes())?;
            if !child.wait()?.success() {
                bail!("nft refused the ruleset (see above)");
            }
        }
        (true, false) => {
            if !Command::new("nft")
                .args(["delete", "table", "ip", "carpool_lb"])
                .status()
                .context("running nft")?
                .success()
            {
                bail!("nft could not delete table ip carpool_lb (not installed?)");
            }
        }
        (false, add) => {
            let op = if add { "-A" } else { "-D" };
            let rules = spread.iptables(op);
            for (i, rule) in rules.iter().enumerate() {
                let ok = Command::new("iptables")
                    .args(rule)
                    .status()
                    .context("running iptables (Debian package iptables)")?
                    .success();
                if !ok {
                    if add {
                        // undo what was added, so a failed apply leaves nothing behind
                        for done in spread.iptables("-D").iter().take(i) {
                            let _ = Command::new("iptables").args(done).status();
                        }
                    }
                    bail!("iptables {} failed", rule.join(" "));
                }
            }
        }
    }
    eprintln!(
        "carpool lb-rules: {} rules {}",
        if nftables { "nftables" } else { "iptables" },
        if apply { "applied" } else { "removed" }
    );
    Ok(ExitCode::SUCCESS)
}
