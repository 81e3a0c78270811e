//! SIGHUP in `carpool up`: a new config, applied all or nothing.
//!
//! 1. The new config is read and planned (a cache's `auto` sizes stay as
//!    they were resolved); a bad one is rejected with its errors.
//! 2. Each component is compared with what runs: an unchanged one keeps
//!    running; a changed one restarts, and the log names the keys that
//!    changed; a new one starts; one the config dropped stops.
//! 3. What can fail without touching the running array comes first: the
//!    listening sockets of new addresses, then the new caches.
//! 4. Changed caches restart on the sockets they had (connections wait in
//!    the backlog meanwhile); then the new frontend starts beside the old
//!    one, which drains once the reload is done.
//!
//! When anything in 3 or 4 fails, every change is undone: the old config
//! file is written back, restarted caches go back to their old settings,
//! new ones stop, and the old frontend never stopped serving. The log says
//! "reload rejected" with the reason.

use std::process::Child;

use anyhow::{Context, Result};
use socket2::Socket;

use super::supervise::{bind, spawn, stop_child, write_snapshot, Proc};
use super::{Component, Plan, Spec, UpOptions};

/// SIGHUP: applies the config `opts` names to `procs`, which run
/// `current`. Whether it is in force now, and the summary or the reason.
pub(super) async fn reload(
    procs: &mut Vec<Proc>,
    current: &mut Plan,
    opts: &UpOptions,
) -> (bool, String) {
    let running: Vec<Spec> = procs.iter().map(|p| p.spec.clone()).collect();
    let mut plan = match super::plan(opts, &running) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload rejected: the array keeps running on the old config");
            return (false, format!("{e:#}"));
        }
    };
    // the pid file stays where `up` wrote it
    plan.pid_file = current.pid_file.clone();
    tracing::info!("reloading the configuration (SIGHUP)");
    if plan.admin != current.admin {
        tracing::warn!("the [admin] listener changes only when carpool up restarts");
    }
    let mut t = match Transaction::prepare(std::mem::take(procs), &plan) {
        Ok(t) => t,
        Err((old, e)) => {
            *procs = old;
            return (false, reject(&e));
        }
    };
    match t.apply(&plan).await {
        Ok(()) => {
            let summary;
            (*procs, summary) = t.commit().await;
            *current = plan;
            (true, summary)
        }
        Err(e) => {
            *procs = t.undo(current).await;
            (false, reject(&e))
        }
    }
}

/// Logs a rejected reload; the reason.
fn reject(e: &anyhow::Error) -> String {
    let reason = format!("{e:#}");
    tracing::error!(
        error = %reason,
        "reload rejected: the array keeps running on the old config, unchanged"
    );
    reason
}

/// A component of the new config that needs a new process.
struct Change {
    spec: Spec,
    sockets: Vec<Socket>,
    child: Option<Child>,
}

/// What a reload does to one component.
enum Step {
    /// Unchanged: keeps running.
    Keep(Proc),
    /// Changed: `old` gives way to `new`.
    Restart {
        old: Box<Proc>,
        new: Change,
        /// The keys that changed.
        why: String,
        /// Whether `old`'s process was stopped for it (so an undo starts it
        /// again).
        stopped: bool,
    },
    /// New in the config.
    Add(Change),
}

/// A reload in progress: every component's step, and the components the
/// new config no longer has (running until the commit).
struct Transaction {
    steps: Vec<Step>,
    removed: Vec<Proc>,
}

impl Transaction {
    /// Matches the running components with `plan`'s and takes the sockets
    /// of every new or changed one. On error, nothing has changed: the
    /// components come back with it.
    fn prepare(procs: Vec<Proc>, plan: &Plan) -> Result<Transaction, (Vec<Proc>, anyhow::Error)> {
        let mut decided = Vec::new();
        for spec in &plan.specs {
            let found = procs
                .iter()
                .position(|p| p.spec.kind == spec.kind && p.spec.name == spec.name);
            let sockets = match found {
                Some(i) if procs[i].spec == *spec => None,
                _ => match sockets_for(spec, &procs) {
                    Ok(s) => Some(s),
                    Err(e) => return Err((procs, e)),
                },
            };
            decided.push((spec.clone(), found, sockets));
        }
        let mut slots: Vec<Option<Proc>> = procs.into_iter().map(Some).collect();
        let mut steps = Vec::new();
        for (spec, found, sockets) in decided {
            let old = found.and_then(|i| slots[i].take());
            steps.push(match (old, sockets) {
                (Some(p), None) => Step::Keep(p),
                (Some(old), Some(sockets)) => Step::Restart {
                    why: why(&old.spec, &spec),
                    old: Box::new(old),
                    new: Change {
                        spec,
                        sockets,
                        child: None,
                    },
                    stopped: false,
                },
                (None, Some(sockets)) => Step::Add(Change {
                    spec,
                    sockets,
                    child: None,
                }),
                (None, None) => continue, // kept only when found
            });
        }
        Ok(Transaction {
            steps,
            removed: slots.into_iter().flatten().collect(),
        })
    }

    /// Starts what is new and restarts what changed: new caches first
    /// (nothing running is touched yet), then changed caches, then the
    /// frontend beside the old one.
    async fn apply(&mut self, plan: &Plan) -> Result<()> {
        write_snapshot(plan)?;
        super::make_log_dirs(&plan.specs)?;
        for step in &mut self.steps {
            if let Step::Add(new) = step {
                if new.spec.kind == Component::Cache {
                    tracing::info!(component = %new.spec.name, "new in the config: starting");
                    new.child = Some(spawn(&new.spec, &new.sockets).await?);
                }
            }
        }
        for step in &mut self.steps {
            if let Step::Restart {
                old,
                new,
                why,
                stopped,
            } = step
            {
                if new.spec.kind != Component::Cache {
                    continue;
                }
                tracing::info!(component = %new.spec.name, changed = %why, "restarting for the new config");
                if let Some(c) = old.child.take() {
                    stop_child(&old.spec, c).await;
                    *stopped = true;
                }
                new.child = Some(spawn(&new.spec, &new.sockets).await?);
            }
        }
        for step in &mut self.steps {
            let new = match step {
                Step::Restart { new, why, .. } if new.spec.kind == Component::Frontend => {
                    tracing::info!(component = %new.spec.name, changed = %why, "replacing for the new config");
                    new
                }
                Step::Add(new) if new.spec.kind == Component::Frontend => new,
                _ => continue,
            };
            new.child = Some(spawn(&new.spec, &new.sockets).await?);
        }
        Ok(())
    }

    /// The reload is done: old frontends drain, dropped caches stop. The
    /// components, and a summary of what changed.
    async fn commit(self) -> (Vec<Proc>, String) {
        let (mut restarted, mut added, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
        let mut procs = Vec::new();
        for step in self.steps {
            match step {
                Step::Keep(p) => {
                    unchanged.push(p.spec.name.clone());
                    procs.push(p);
                }
                Step::Restart { old, new, why, .. } => {
                    if let Some(c) = old.child {
                        // an old frontend: it finishes its requests
                        let spec = old.spec;
                        tokio::task::spawn_local(async move { stop_child(&spec, c).await });
                    }
                    restarted.push(format!("{} ({why})", new.spec.name));
                    procs.push(Proc::on(&new.spec, new.sockets, new.child, old.restarts));
                }
                Step::Add(new) => {
                    added.push(new.spec.name.clone());
                    procs.push(Proc::on(&new.spec, new.sockets, new.child, 0));
                }
            }
        }
        let mut removed = Vec::new();
        for p in self.removed {
            removed.push(p.spec.name.clone());
            if let Some(c) = p.child {
                tracing::info!(component = %p.spec.name, "removed by the new config: stopping");
                stop_child(&p.spec, c).await;
            }
        }
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".into()
            } else {
                v.join(", ")
            }
        };
        let (restarted, added, removed, unchanged) =
            (list(restarted), list(added), list(removed), list(unchanged));
        tracing::info!(%restarted, %added, %removed, %unchanged, "reload done");
        let summary =
            format!("restarted={restarted} added={added} removed={removed} unchanged={unchanged}");
        (procs, summary)
    }

    /// Puts back what ran before: `old` config file, old settings.
    async fn undo(self, old: &Plan) -> Vec<Proc> {
        if let Err(e) = write_snapshot(old) {
            tracing::error!(error = %format!("{e:#}"), "reload: cannot write back the old config");
        }
        let mut procs = Vec::new();
        for step in self.steps {
            match step {
                Step::Keep(p) => procs.push(p),
                Step::Restart {
                    mut old,
                    new,
                    stopped,
                    ..
                } => {
                    if let Some(c) = new.child {
                        stop_child(&new.spec, c).await;
                    }
                    if stopped {
                        old.start_again().await;
                    }
                    procs.push(*old);
                }
                Step::Add(new) => {
                    if let Some(c) = new.child {
                        stop_child(&new.spec, c).await;
                    }
                }
            }
        }
        procs.extend(self.removed);
        // caches first, as the array starts and stops them
        procs.sort_by_key(|p| p.spec.kind == Component::Frontend);
        procs
    }
}

/// The keys that changed between two plans of a component.
fn why(old: &Spec, new: &Spec) -> String {
    let keys = old.settings.changed(&new.settings);
    if keys.is_empty() {
        "how it is started".into()
    } else {
        keys.join(", ")
    }
}

/// Listening sockets for `spec`: those a running component already holds
/// on its address (shared; more joined when it has more workers now), or
/// new ones when the address is free.
fn sockets_for(spec: &Spec, holders: &[Proc]) -> Result<Vec<Socket>> {
    let held = holders
        .iter()
        .filter(|p| p.spec.listen == spec.listen)
        .find_map(|p| p.sockets.as_ref());
    let Some(held) = held else {
        return bind(spec);
    };
    let want = spec.workers.max(1);
    let mut sockets = held
        .iter()
        .take(want)
        .map(Socket::try_clone)
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("{}: sharing the sockets on {}", spec.name, spec.listen))?;
    if sockets.len() < want {
        let more = crate::process::join_workers(spec.listen, want - sockets.len())
            .with_context(|| format!("{}: cannot listen on {}", spec.name, spec.listen))?;
        sockets.extend(more.into_iter().map(Socket::from));
    }
    Ok(sockets)
}
