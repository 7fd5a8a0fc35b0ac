//! `fwlb run`: the start-up sequence as code, signal handling and wiring.
//!
//! Order: config (already validated) -> bind every listener (before anything else can fail
//! half-way) -> build the runtime -> serve -> on SIGTERM/SIGINT stop accepting and drain open
//! connections up to `shutdown_timeout`, then exit 0.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::balancer::{self, Balancer};
use crate::config::{self, Config, Control};
use crate::control::{self, Ctl};
use crate::sys;

/// What `fwlb run` (and `fwlb pen`) hand to the daemon besides the config.
pub struct Options {
    /// Changes the log level at run time (the control port's `debug N`).
    pub set_level: control::SetLevel,
    pub debug: u8,
    /// pen -F: a file of control commands run at start (and the default of `write`).
    pub pen_file: Option<std::path::PathBuf>,
    /// pen -o / the commands of the -F file, run once the balancers exist.
    pub commands: Vec<String>,
    /// false: detach from the terminal (pen without -f).
    pub foreground: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            set_level: Box::new(|_| {}),
            debug: 0,
            pen_file: None,
            commands: Vec::new(),
            foreground: true,
        }
    }
}

/// A bound control socket, before the runtime exists.
enum ControlSocket {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

fn bind_control(c: &Control) -> Result<ControlSocket> {
    match c {
        Control::Tcp(a) => Ok(ControlSocket::Tcp(
            sys::socket::listener(*a, 128)
                .with_context(|| format!("cannot open the control port {a}"))?,
        )),
        Control::Unix(p) => {
            // pen removes a stale socket file first.
            let _ = std::fs::remove_file(p);
            let l = std::os::unix::net::UnixListener::bind(p)
                .with_context(|| format!("cannot open the control socket {}", p.display()))?;
            l.set_nonblocking(true)?;
            Ok(ControlSocket::Unix(l))
        }
    }
}

/// Settings that validate but need subsystems this version does not have yet. `run` refuses
/// them rather than silently running without them; `check` lists them.
pub fn unsupported(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let d = &cfg.daemon;
    if d.log == config::LogTarget::Syslog {
        out.push("[daemon] log = \"syslog\": only \"stderr\" is in this version".into());
    }
    if !cfg.vrrp.is_empty() {
        if !cfg!(target_os = "linux") {
            out.push("[[vrrp]]: the speaker runs on Linux only in this version".into());
        } else if d.user.is_some() || d.chroot.is_some() {
            out.push("[[vrrp]] with user/chroot: changing addresses needs root, and the privileged parent process is not in this version".into());
        }
    }
    match cfg.firewall.as_ref().map(|f| f.backend.as_str()) {
        Some("nftables") if !cfg!(target_os = "linux") => {
            out.push("[firewall] backend = \"nftables\" needs Linux".into())
        }
        Some("nftables") if d.user.is_some() || d.chroot.is_some() => out.push(
            "[firewall] with user/chroot: bans need root, and the privileged parent process is not in this version".into(),
        ),
        Some("pf") => out.push("[firewall] backend = \"pf\": rendered by `fwlb check --firewall`, installed by hand with pfctl in this version".into()),
        _ => {}
    }
    out
}

/// Build and install the nftables ruleset, if configured. Returns whether to remove it at a
/// clean exit (`keep_on_exit = false`).
fn install_firewall(cfg: &Config) -> Result<bool> {
    let Some(fw) = &cfg.firewall else {
        return Ok(false);
    };
    if fw.backend != "nftables" {
        return Ok(false);
    }
    let rs =
        crate::firewall::build(cfg).map_err(|e| anyhow::anyhow!("[firewall]: {}", e.join("; ")))?;
    let script = crate::firewall::nft::render(&rs);
    sys::nft::apply(&script)
        .map_err(|e| anyhow::anyhow!("cannot install the firewall (nothing started): {e}"))?;
    info!(target: "fw", front = %rs.front, "firewall installed (table inet fwlb)");
    Ok(!fw.keep_on_exit)
}

pub fn run(cfg: Config, opts: Options) -> Result<()> {
    let missing = unsupported(&cfg);
    if !missing.is_empty() {
        bail!(
            "{}: cannot run this configuration:\n  {}",
            cfg.path.display(),
            missing.join("\n  ")
        );
    }
    // The firewall goes in before anything serves; if it cannot, nothing runs (fail closed).
    let firewall = install_firewall(&cfg)?;
    if cfg.balancers.is_empty() && cfg.vrrp.is_empty() {
        bail!(
            "{}: nothing to run: no [[balancer]] and no [[vrrp]]",
            cfg.path.display()
        );
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
    let ctl_sock = cfg.daemon.control.as_ref().map(bind_control).transpose()?;
    // Two descriptors per relayed connection.
    let need: usize = cfg
        .balancers
        .iter()
        .map(|b| b.max_connections * 2)
        .sum::<usize>();
    if let Some(lim) = sys::raise_nofile(need as u64 + 64)
        && (lim as usize) < need
    {
        warn!(target: "lb", "descriptor limit {lim} is below the {need} that max_connections needs; raise the hard limit (ulimit -Hn) or lower max_connections");
    }
    if !opts.foreground {
        sys::privdrop::daemonize().context("cannot detach from the terminal")?;
    }
    let pidfile = cfg.daemon.pidfile.clone();
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pidfile {}", p.display()))?;
    }
    // Every socket is open: give up root before any thread exists (credentials are per
    // thread). Paths used later (state file, `write`) are then inside the chroot.
    let (user, chroot) = (cfg.daemon.user.as_deref(), cfg.daemon.chroot.as_deref());
    if user.is_some() || chroot.is_some() {
        sys::privdrop::drop_privileges(user, chroot).with_context(|| {
            format!("cannot drop privileges (user {user:?}, chroot {chroot:?})")
        })?;
        info!(target: "lb", "running as {} in {}", user.unwrap_or("the same user"),
            chroot.map_or("/".into(), |c| c.display().to_string()));
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
    let res = rt.block_on(serve(cfg, listeners, ctl_sock, opts));
    if firewall {
        match sys::nft::apply(&crate::firewall::nft::delete()) {
            Ok(()) => info!(target: "fw", "firewall removed (keep_on_exit = false)"),
            Err(e) => warn!(target: "fw", "cannot remove the firewall: {e}"),
        }
    }
    if let Some(p) = &pidfile {
        let _ = std::fs::remove_file(p);
    }
    // Tasks still open past the drain deadline are dropped here, closing their sockets.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    res
}

/// Once a second: forget client-table entries past `tracking`. Its timer also keeps the
/// runtime's timer wheel from running empty, so the connect timeout armed for each new
/// connection never has to wake the I/O driver with an eventfd write.
async fn housekeeping(lbs: Vec<Arc<Balancer>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                for lb in &lbs {
                    lb.lock().clients.expire(now);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

async fn serve(
    cfg: Config,
    listeners: Vec<(String, std::net::TcpListener)>,
    ctl_sock: Option<ControlSocket>,
    opts: Options,
) -> Result<()> {
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
    if let Some(p) = &cfg.daemon.state_file {
        control::state::restore(p, &lbs);
    }
    tasks.push(tokio::spawn(housekeeping(lbs.clone(), stop_rx.clone())));
    #[cfg(target_os = "linux")]
    let vrrp_status = if cfg.vrrp.is_empty() {
        None
    } else {
        let sp = crate::vrrp::speaker::start(&cfg.vrrp).context("starting the VRRP speaker")?;
        let status = crate::vrrp::status::Status::default();
        info!(target: "vrrp", instances = cfg.vrrp.len(), "VRRP speaker started");
        tasks.push(tokio::spawn(crate::vrrp::speaker::run(
            sp,
            stop_rx.clone(),
            status.clone(),
        )));
        Some(status)
    };
    #[cfg(not(target_os = "linux"))]
    let vrrp_status = None;
    let exit = Arc::new(tokio::sync::Notify::new());
    let ctl = Arc::new(Ctl {
        balancers: lbs.clone(),
        control: cfg
            .daemon
            .control
            .as_ref()
            .map_or("none".into(), control::describe),
        exit_enabled: cfg.daemon.control_exit,
        debug: std::sync::atomic::AtomicU8::new(opts.debug),
        set_level: opts.set_level,
        state_file: cfg.daemon.state_file.clone(),
        pen_file: opts.pen_file,
        exit: exit.clone(),
        started: std::time::Instant::now(),
        vrrp: vrrp_status,
        firewall: cfg
            .firewall
            .as_ref()
            .is_some_and(|f| f.backend == "nftables"),
    });
    for line in &opts.commands {
        let words = crate::wire::penctl::parse(line.as_bytes()).unwrap_or_default();
        let r = control::commands::execute(&ctl, &words);
        if r.error {
            warn!(target: "ctl", command = %line, "{}", r.text.trim_end());
        } else if !r.text.is_empty() {
            // pen -o prints the reply on stdout.
            print!("{}", r.text);
        }
    }
    if let Some(sock) = ctl_sock {
        let listener = match sock {
            ControlSocket::Tcp(l) => control::Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
            ControlSocket::Unix(l) => {
                control::Listener::Unix(tokio::net::UnixListener::from_std(l)?)
            }
        };
        info!(target: "ctl", control = %ctl.control, "control port open");
        tasks.push(tokio::spawn(control::serve(
            ctl.clone(),
            listener,
            control::Allow(cfg.daemon.control_allow.clone()),
            stop_rx.clone(),
        )));
    }
    loop {
        tokio::select! {
            _ = term.recv() => { info!(target: "lb", "SIGTERM: stop accepting, draining"); break; }
            _ = int.recv() => { info!(target: "lb", "SIGINT: stop accepting, draining"); break; }
            _ = hup.recv() => { warn!(target: "lb", "SIGHUP: reload is not in this version; ignored"); }
            _ = exit.notified() => { info!(target: "ctl", "exit command: stop accepting, draining"); break; }
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
