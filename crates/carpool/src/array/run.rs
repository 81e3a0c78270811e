//! The life of `carpool up`: binds every listener, starts every component,
//! then answers signals until it stops: SIGHUP reloads the config all or
//! nothing (`reload.rs`), SIGUSR1 asks every component to reopen its logs,
//! SIGTERM/SIGINT stop the frontend first, then the caches. Crashed
//! components are restarted on each tick (`supervise.rs`).

use std::rc::Rc;

use anyhow::{Context, Result};

use super::admin::Status;
use super::reload;
use super::supervise::{bind, signal_child, spawn, stop_child, write_snapshot, Proc, TICK};
use super::{Component, Plan, UpOptions};

/// Runs the planned array until SIGTERM/SIGINT; SIGHUP reloads.
pub fn run(plan: Plan, opts: UpOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, supervise(plan, opts))
}

async fn supervise(mut plan: Plan, opts: UpOptions) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let _pid_file = crate::control::PidFile::create(&plan.pid_file)?;
    let _ = std::fs::remove_file(crate::control::ReloadRecord::path(&plan.pid_file));
    let mut reloads = 0;
    write_snapshot(&plan)?;
    super::make_log_dirs(&plan.specs)?;
    let status: Status = Rc::default();
    if let Some(addr) = plan.admin {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin: cannot listen on {addr}"))?;
        tokio::task::spawn_local(super::admin::serve(listener, status.clone()));
    }
    // every listener first: a port in use stops the start before any
    // component runs
    let sockets = plan.specs.iter().map(bind).collect::<Result<Vec<_>>>()?;
    let mut procs: Vec<Proc> = Vec::new();
    for (spec, sockets) in plan.specs.iter().zip(sockets) {
        match spawn(spec, &sockets).await {
            Ok(child) => procs.push(Proc::on(spec, sockets, Some(child), 0)),
            Err(e) => {
                for p in procs.drain(..).rev() {
                    if let Some(c) = p.child {
                        stop_child(&p.spec, c).await;
                    }
                }
                return Err(e);
            }
        }
    }
    print_summary(&plan);
    loop {
        {
            let mut st = status.borrow_mut();
            st.targets = procs.iter().map(Proc::target).collect();
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {
                for p in &mut procs {
                    p.tend().await;
                }
            }
            _ = hup.recv() => {
                let (done, text) = reload::reload(&mut procs, &mut plan, &opts).await;
                reloads += 1;
                let record = crate::control::ReloadRecord { count: reloads, done, text };
                if let Err(e) = record.write(&plan.pid_file) {
                    tracing::warn!(error = %format!("{e:#}"), "cannot record the reload's outcome");
                }
            }
            _ = usr1.recv() => reopen_logs(&procs),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping the array");
    // frontend first (it drains its clients), then the caches
    for p in procs.into_iter().rev() {
        if let Some(c) = p.child {
            stop_child(&p.spec, c).await;
        }
    }
    tracing::info!("array stopped");
    Ok(())
}

fn print_summary(plan: &Plan) {
    println!("carpool up: the array is running");
    for s in &plan.specs {
        println!("  {}", s.summary);
    }
    if !plan.specs.iter().any(|s| s.kind == Component::Frontend) {
        println!("  frontend: on another machine ([frontend] hosts)");
    }
    for r in &plan.remote {
        println!("  cache {r}: on another machine (start it there with `carpool cache -c FILE --name NAME`)");
    }
    if let Some(a) = plan.admin {
        println!("  dashboard: http://{a}/   status: carpool status (or curl http://{a}/status)   metrics: curl http://{a}/metrics");
    }
    if let Some(fe) = plan.specs.iter().find(|s| s.kind == Component::Frontend) {
        let port = fe.listen.port();
        println!("try it:  curl -x http://127.0.0.1:{port} http://example.com/");
        println!(
            "stop:    Ctrl-C (SIGTERM); reload the config: kill -HUP {}",
            std::process::id()
        );
    }
}

/// SIGUSR1 (`squid -k rotate`, logrotate's postrotate): every running
/// component reopens its access log.
fn reopen_logs(procs: &[Proc]) {
    let mut n = 0;
    for child in procs.iter().filter_map(|p| p.child.as_ref()) {
        signal_child(child, libc::SIGUSR1);
        n += 1;
    }
    tracing::info!("SIGUSR1: asked {n} components to reopen their logs");
}
