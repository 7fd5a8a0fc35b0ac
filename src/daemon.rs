//! `fwlb run`: the start-up sequence as code, signal handling and wiring.
//!
//! Order: config (already validated) -> bind every listener (before anything else can fail
//! half-way) -> build the runtime -> serve -> on SIGTERM/SIGINT stop accepting and drain open
//! connections up to `shutdown_timeout`, then exit 0.

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::balancer::{self, Balancer};
use crate::config::{self, Config};
use crate::sys;

/// Settings that validate but need subsystems this version does not have yet. `run` refuses
/// them rather than silently running without them; `check` lists them.
pub fn unsupported(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let d = &cfg.daemon;
    if d.user.is_some() || d.chroot.is_some() {
        out.push("[daemon] user/chroot: privilege separation is not in this version yet".into());
    }
    if d.state_file.is_some() {
        out.push(
            "[daemon] state_file: the control port and its saved state are not in this version yet"
                .into(),
        );
    }
    if d.log == config::LogTarget::Syslog {
        out.push("[daemon] log = \"syslog\": only \"stderr\" is in this version".into());
    }
    if !cfg.vrrp.is_empty() {
        out.push("[[vrrp]]: the VRRP speaker is not in this version yet".into());
    }
    if cfg.firewall.as_ref().is_some_and(|f| f.backend != "none") {
        out.push("[firewall]: only backend = \"none\" is in this version".into());
    }
    out
}

pub fn run(cfg: Config) -> Result<()> {
    let missing = unsupported(&cfg);
    if !missing.is_empty() {
        bail!(
            "{}: cannot run this configuration:\n  {}",
            cfg.path.display(),
            missing.join("\n  ")
        );
    }
    if cfg.balancers.is_empty() {
        bail!("{}: nothing to run: no [[balancer]]", cfg.path.display());
    }
    // Bind first: a port in use is reported before anything starts.
    let mut listeners = Vec::new();
    for b in &cfg.balancers {
        for addr in &b.listen {
            let l = sys::socket::listener(*addr, b.backlog)
                .with_context(|| format!("balancer {:?}: cannot listen on {addr}", b.name))?;
            listeners.push((b.name.clone(), l));
        }
    }
    let need: usize = cfg
        .balancers
        .iter()
        .map(|b| b.max_connections * 2)
        .sum::<usize>()
        + 64;
    if let Some(lim) = sys::nofile_limit()
        && (lim as usize) < need
    {
        warn!(target: "lb", "descriptor limit {lim} is below the {need} that max_connections may need; raise `ulimit -n` or lower max_connections");
    }
    let pidfile = cfg.daemon.pidfile.clone();
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pidfile {}", p.display()))?;
    }
    let rt = if cfg.daemon.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.daemon.threads)
            .enable_all()
            .build()
    }
    .context("cannot start the runtime")?;
    let res = rt.block_on(serve(cfg, listeners));
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    // Tasks still open past the drain deadline are dropped here, closing their sockets.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    res
}

async fn serve(cfg: Config, listeners: Vec<(String, std::net::TcpListener)>) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // SIGHUP would kill the process by default; reload is not in this version, so say so.
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut lbs = Vec::new();
    let mut tasks = Vec::new();
    for b in &cfg.balancers {
        let lb = Balancer::new(b.clone());
        for (name, l) in listeners.iter().filter(|(n, _)| *n == b.name) {
            let l = tokio::net::TcpListener::from_std(l.try_clone()?)
                .with_context(|| format!("balancer {name:?}: listener"))?;
            info!(target: "lb", balancer = %b.name, listen = %l.local_addr()?,
                servers = b.servers.len(), algorithm = b.algorithm.name(), "listening");
            tasks.push(tokio::spawn(balancer::accept_loop(
                lb.clone(),
                l,
                stop_rx.clone(),
            )));
        }
        lbs.push(lb);
    }
    // The std listeners were cloned into tokio; close the originals so a stop closes the port.
    drop(listeners);
    loop {
        tokio::select! {
            _ = term.recv() => { info!(target: "lb", "SIGTERM: stop accepting, draining"); break; }
            _ = int.recv() => { info!(target: "lb", "SIGINT: stop accepting, draining"); break; }
            _ = hup.recv() => { warn!(target: "lb", "SIGHUP: reload is not in this version; ignored"); }
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let open: usize = lbs.iter().map(|l| l.active()).sum();
    let deadline = cfg.daemon.shutdown_timeout;
    if open > 0 {
        info!(target: "lb", "waiting up to {} for {open} open connection(s)", config::duration::format(deadline));
        let all = async {
            for l in &lbs {
                l.drained().await;
            }
        };
        tokio::select! {
            _ = all => info!(target: "lb", "all connections finished"),
            _ = tokio::time::sleep(deadline) => {
                let left: usize = lbs.iter().map(|l| l.active()).sum();
                warn!(target: "lb", "shutdown deadline reached, closing {left} connection(s)");
            }
            _ = term.recv() => warn!(target: "lb", "second SIGTERM: closing open connections now"),
            _ = int.recv() => warn!(target: "lb", "second SIGINT: closing open connections now"),
        }
    }
    info!(target: "lb", "exiting");
    Ok(())
}
