//! `fwlb run`: the start-up sequence as code, signal handling and wiring.
//!
//! Order (architecture.md): config (already validated) -> install the firewall -> open every
//! privileged resource (listeners, control socket, VRRP sockets) -> fork. The parent stays
//! root with a trimmed capability set and serves the child's requests
//! ([`crate::privsep::parent`]). The child chroots, becomes the configured user, drops every
//! capability, sets no_new_privs, verifies all of it, and only then builds the runtime and
//! serves. On SIGTERM/SIGINT (to either process) the child stops accepting and drains open
//! connections up to `shutdown_timeout`, then both exit 0.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::balancer::Balancer;
use crate::balancer::engine::{DataPath, Listening};
use crate::config::{self, Config, Control};
use crate::control::{self, Ctl};
use crate::privsep::{self, Client, Push, Request, parent::Parent};
use crate::sys;
use crate::sys::privsep::{Channel, Forked, SignalPipe};

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
    /// The file `run -c` loaded: SIGHUP re-reads it (None for `fwlb pen` and `fwlb vrrpd`).
    pub config_file: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            set_level: Box::new(|_| {}),
            debug: 0,
            pen_file: None,
            commands: Vec::new(),
            foreground: true,
            config_file: None,
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
    if !cfg.vrrp.is_empty() && !cfg!(target_os = "linux") {
        out.push("[[vrrp]]: the speaker runs on Linux only in this version".into());
    }
    match cfg.firewall.as_ref().map(|f| f.backend.as_str()) {
        Some("nftables") if !cfg!(target_os = "linux") => {
            out.push("[firewall] backend = \"nftables\" needs Linux".into())
        }
        Some("pf") if !cfg!(target_os = "freebsd") => {
            out.push("[firewall] backend = \"pf\" needs FreeBSD".into())
        }
        _ => {}
    }
    out
}

/// Build and install the configured firewall (none, nftables, pf) before anything serves.
/// Returns the handle the parent keeps for bans, reloads and the clean-stop removal.
fn install_firewall(cfg: &Config) -> Result<Box<dyn crate::firewall::Firewall>> {
    let rs =
        crate::firewall::build(cfg).map_err(|e| anyhow::anyhow!("[firewall]: {}", e.join("; ")))?;
    let mut fw = crate::firewall::open(rs.backend)
        .map_err(|e| anyhow::anyhow!("cannot open the firewall (nothing started): {e:#}"))?;
    if cfg.firewall.is_some() && rs.backend != crate::firewall::Backend::None {
        fw.install(&rs)
            .map_err(|e| anyhow::anyhow!("cannot install the firewall (nothing started): {e:#}"))?;
        info!(target: "fw", front = %rs.front, "firewall installed ({})", fw.describe());
    }
    Ok(fw)
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
    if cfg.balancers.is_empty() && cfg.vrrp.is_empty() {
        bail!(
            "{}: nothing to run: no [[balancer]] and no [[vrrp]]",
            cfg.path.display()
        );
    }
    // The firewall goes in before anything serves; if it cannot, nothing runs (fail closed).
    let firewall = install_firewall(&cfg)?;
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
    #[cfg(target_os = "linux")]
    let speaker = if cfg.vrrp.is_empty() {
        None
    } else {
        Some(crate::vrrp::speaker::open(&cfg.vrrp).context("opening the VRRP sockets")?)
    };
    #[cfg(not(target_os = "linux"))]
    let speaker: Option<()> = None;
    if !opts.foreground {
        sys::privdrop::daemonize().context("cannot detach from the terminal")?;
    }
    let pidfile = cfg.daemon.pidfile.clone();
    if let Some(p) = &pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pidfile {}", p.display()))?;
    }
    // Held from before the fork, so a signal between the fork and the parent's loop is kept.
    let held = sys::privsep::hold_signals(&privsep::parent::SIGNALS).context("blocking signals")?;
    let (req_parent, req_child) = sys::privsep::pair().context("socketpair")?;
    let (push_parent, push_child) = sys::privsep::pair().context("socketpair")?;
    let reload_path = opts.config_file.clone();
    match sys::privsep::fork().context("fork")? {
        Forked::Parent { child } => {
            let signals = SignalPipe::install(held).context("signal handlers")?;
            // The child owns the data path: the parent keeps no listener (a dead child must
            // not leave a port accepting into a backlog nobody reads) and no VRRP socket.
            drop((req_child, push_child, listeners, ctl_sock, speaker));
            #[cfg(target_os = "linux")]
            if let Err(e) = trim_parent_capabilities() {
                warn!(target: "priv", "cannot trim the parent's capabilities: {e}");
            }
            info!(target: "priv", child, "privileged parent serving the child's requests");
            let parent = Parent::new(
                cfg,
                reload_path,
                child,
                req_parent,
                push_parent,
                signals,
                firewall,
                pidfile,
            );
            match parent.run() {
                0 => Ok(()),
                _ => bail!("the child process failed; see the log above"),
            }
        }
        Forked::Child => {
            drop((req_parent, push_parent, firewall));
            sys::privsep::reset_signals(held).context("unblocking signals")?;
            become_unprivileged(&cfg)?;
            // One thread for the control port, VRRP, signals and the parent's channel; the
            // data path runs on threads of its own (balancer::engine).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            let client = Arc::new(Client::new(req_child));
            let res = rt.block_on(serve(
                cfg, listeners, ctl_sock, speaker, client, push_child, opts,
            ));
            // Tasks still open past the drain deadline are dropped here, closing their sockets.
            rt.shutdown_timeout(std::time::Duration::from_millis(100));
            res
        }
    }
}

/// The parent keeps what its requests need: addresses and firewall (NET_ADMIN), binding new
/// listeners on reload (NET_BIND_SERVICE), signalling a child of another uid (KILL), reading
/// the config on reload (DAC_READ_SEARCH). Notify scripts it runs get at most these.
#[cfg(target_os = "linux")]
fn trim_parent_capabilities() -> std::io::Result<()> {
    use caps::Capability::*;
    sys::privsep::trim_capabilities(&[
        CAP_NET_ADMIN,
        CAP_NET_RAW,
        CAP_NET_BIND_SERVICE,
        CAP_KILL,
        CAP_DAC_READ_SEARCH,
    ])
}

/// The child's side of the fork: chroot, user, no capabilities, no_new_privs, and a check
/// that every one of them took. Runs single-threaded (credentials are per thread).
fn become_unprivileged(cfg: &Config) -> Result<()> {
    let (user, chroot) = (cfg.daemon.user.as_deref(), cfg.daemon.chroot.as_deref());
    let root = sys::privsep::ids().0.1 == 0;
    #[cfg(target_os = "linux")]
    if root {
        sys::privsep::drop_bounding_set().context("cannot empty the capability bounding set")?;
    }
    let want = sys::privdrop::drop_privileges(user, chroot)
        .with_context(|| format!("cannot drop privileges (user {user:?}, chroot {chroot:?})"))?;
    #[cfg(target_os = "linux")]
    {
        sys::privsep::clear_capabilities().context("cannot clear capabilities")?;
        let sets = sys::privsep::capability_sets().context("reading capabilities")?;
        if root && sets != [0, 0, 0] {
            bail!("capabilities left after the drop (effective, permitted, bounding): {sets:?}");
        }
        if !sys::privsep::no_new_privs() {
            bail!("no_new_privs is not set");
        }
    }
    let ((uid, euid), (gid, egid)) = sys::privsep::ids();
    if let (Some(u), Some((want_uid, want_gid))) = (user, want)
        && (uid, euid, gid, egid) != (want_uid, want_uid, want_gid, want_gid)
    {
        bail!("still uid {uid}/{euid} gid {gid}/{egid}, not {u}");
    }
    info!(target: "priv", uid, gid,
        chroot = %chroot.map_or("/".into(), |c| c.display().to_string()),
        "child running without privileges (no capabilities, no_new_privs)");
    if user.is_none() && root {
        warn!(target: "priv", "no [daemon] user: the child runs as uid 0 (without capabilities); set user = \"_fwlb\"");
    }
    Ok(())
}

/// Once a second: forget client-table entries past `tracking`.
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

fn start_listener(
    dp: &DataPath,
    lb: &Arc<Balancer>,
    l: std::net::TcpListener,
) -> Result<(SocketAddr, Listening)> {
    let ls = dp
        .listen(lb, l)
        .with_context(|| format!("balancer {:?}: listener", lb.cfg.name))?;
    let addr = ls.addr();
    info!(target: "lb", balancer = %lb.cfg.name, listen = %addr,
        servers = lb.lock().servers.len(), algorithm = lb.cfg.algorithm.name(), "listening");
    Ok((addr, ls))
}

/// Put every VRRP instance in standby and wait until none is master (the peer has taken
/// over), for at most 4 advert intervals (200 ms to 3 s: a host without a peer still stops).
async fn hand_over(
    cfg: &Config,
    status: Option<&crate::vrrp::status::Status>,
    operator: Option<&crate::vrrp::status::OperatorTx>,
) {
    let (Some(status), Some(tx)) = (status, operator) else {
        return;
    };
    let masters = || {
        status
            .lock()
            .map(|s| s.iter().filter(|i| i.state == "master").count())
            .unwrap_or(0)
    };
    if masters() == 0 {
        return;
    }
    let longest = cfg
        .vrrp
        .iter()
        .map(|v| v.advert_interval)
        .max()
        .unwrap_or_default();
    let limit = (longest * 4).clamp(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(3),
    );
    info!(target: "vrrp", "stop: handing mastership over before closing the listeners (up to {} ms)", limit.as_millis());
    if tx
        .send(crate::vrrp::status::Operator::Standby(None))
        .is_err()
    {
        return;
    }
    let t0 = std::time::Instant::now();
    while masters() > 0 && t0.elapsed() < limit {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    if masters() == 0 {
        info!(target: "vrrp", "stop: the peer took over after {} ms", t0.elapsed().as_millis());
    } else {
        warn!(target: "vrrp", "stop: no peer took over within {} ms; giving the addresses up anyway", limit.as_millis());
    }
}

/// What wakes the child's main loop besides signals.
enum Wake {
    Push(Push),
    ParentGone,
}

/// Read the parent's pushes; the channel closing means the parent is gone.
async fn read_pushes(chan: Channel, tx: tokio::sync::mpsc::Sender<Wake>) {
    let fd = match chan
        .set_nonblocking(true)
        .and_then(|()| sys::async_fd(chan))
    {
        Ok(fd) => fd,
        Err(e) => {
            warn!(target: "priv", "push channel: {e}");
            let _ = tx.send(Wake::ParentGone).await;
            return;
        }
    };
    let mut buf = vec![0u8; sys::privsep::MAX_MESSAGE];
    loop {
        let Ok(mut guard) = fd.readable().await else {
            let _ = tx.send(Wake::ParentGone).await;
            return;
        };
        match guard.try_io(|c| c.get_ref().recv(&mut buf)) {
            Ok(Ok((0, _))) | Ok(Err(_)) => {
                let _ = tx.send(Wake::ParentGone).await;
                return;
            }
            Ok(Ok((n, _))) => {
                let p = privsep::decode(&buf[..n]).unwrap_or(Push::Unknown);
                if tx.send(Wake::Push(p)).await.is_err() {
                    return;
                }
            }
            Err(_would_block) => {}
        }
    }
}

/// Apply a configuration the parent validated: per balancer, the difference in servers and
/// settings, new listeners (bound by the parent, passed back over the socketpair) and
/// closed ones. Established connections are not touched.
fn apply_reload(
    dp: &DataPath,
    path: &str,
    text: &str,
    lbs: &[Arc<Balancer>],
    listening: &mut HashMap<(String, SocketAddr), Listening>,
    client: &Client,
    deadline: &mut std::time::Duration,
) {
    let new = match config::parse_str(text, std::path::Path::new(path)) {
        Ok(c) => c,
        Err(e) => {
            warn!(target: "priv", "reload: the parent sent a configuration that does not parse: {e}");
            return;
        }
    };
    *deadline = new.daemon.shutdown_timeout;
    for b in &new.balancers {
        let Some(lb) = lbs.iter().find(|l| l.cfg.name == b.name) else {
            warn!(target: "lb", balancer = %b.name, "reload: no such balancer running; skipped");
            continue;
        };
        for note in lb.reconfigure(b) {
            info!(target: "lb", balancer = %b.name, "reload: {note}");
        }
        for addr in &b.listen {
            if listening.contains_key(&(b.name.clone(), *addr)) {
                continue;
            }
            let req = Request::Bind {
                balancer: b.name.clone(),
                addr: *addr,
            };
            let fd = match client.call(&req) {
                Ok((privsep::Reply::Ok, mut fds)) if fds.len() == 1 => fds.remove(0),
                Ok((privsep::Reply::Error(e), _)) => {
                    warn!(target: "lb", balancer = %b.name, "reload: cannot listen on {addr}: {e}");
                    continue;
                }
                Ok((other, _)) => {
                    warn!(target: "lb", balancer = %b.name, "reload: listen on {addr}: unexpected reply {other:?}");
                    continue;
                }
                Err(e) => {
                    warn!(target: "lb", balancer = %b.name, "reload: listen on {addr}: {e}");
                    continue;
                }
            };
            let l = std::net::TcpListener::from(fd);
            match start_listener(dp, lb, l) {
                Ok((_, ls)) => {
                    listening.insert((b.name.clone(), *addr), ls);
                }
                Err(e) => {
                    warn!(target: "lb", balancer = %b.name, "reload: listen on {addr}: {e:#}")
                }
            }
        }
        let gone: Vec<(String, SocketAddr)> = listening
            .keys()
            .filter(|(n, a)| *n == b.name && !b.listen.contains(a))
            .cloned()
            .collect();
        for key in gone {
            if let Some(ls) = listening.remove(&key) {
                // The data path lets the socket go; open connections go on.
                tokio::spawn(ls.close());
                info!(target: "lb", balancer = %key.0, listen = %key.1, "reload: listener closed");
            }
        }
    }
    info!(target: "priv", "reload: configuration from {path} in effect");
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    cfg: Config,
    listeners: Vec<(String, std::net::TcpListener)>,
    ctl_sock: Option<ControlSocket>,
    #[cfg(target_os = "linux")] speaker: Option<crate::vrrp::speaker::Speaker>,
    #[cfg(not(target_os = "linux"))] speaker: Option<()>,
    client: Arc<Client>,
    pushes: Channel,
    opts: Options,
) -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    // SIGHUP is the parent's (it re-reads the file); one sent to the whole process group
    // must not kill the child.
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let (wake_tx, mut wake) = tokio::sync::mpsc::channel(16);
    tokio::spawn(read_pushes(pushes, wake_tx));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut lbs = Vec::new();
    let mut listening: HashMap<(String, SocketAddr), Listening> = HashMap::new();
    let mut tasks = Vec::new();
    // No balancer, no data-path thread (a VRRP-only host).
    let threads = if cfg.balancers.is_empty() {
        0
    } else {
        cfg.daemon.threads
    };
    let dp = DataPath::start(threads).context("cannot start the data path")?;
    for b in &cfg.balancers {
        let lb = Balancer::new(b.clone());
        for (name, l) in listeners.iter().filter(|(n, _)| *n == b.name) {
            let (addr, ls) = start_listener(&dp, &lb, l.try_clone()?)?;
            // Keyed by the configured address (a port-0 listener reports its real one).
            let key = b
                .listen
                .iter()
                .find(|a| **a == addr || a.port() == 0)
                .copied()
                .unwrap_or(addr);
            listening.insert((name.clone(), key), ls);
        }
        lbs.push(lb);
    }
    // The std listeners were cloned into the data path; close the originals so a stop closes
    // the port.
    drop(listeners);
    if let Some(p) = &cfg.daemon.state_file {
        control::state::restore(p, &lbs);
    }
    tasks.push(tokio::spawn(housekeeping(lbs.clone(), stop_rx.clone())));
    #[cfg(target_os = "linux")]
    let vrrp_operator = speaker.as_ref().map(|sp| sp.operator());
    #[cfg(not(target_os = "linux"))]
    let vrrp_operator = None;
    #[cfg(target_os = "linux")]
    let vrrp_status = match speaker {
        None => None,
        Some(sp) => {
            let status = crate::vrrp::status::Status::default();
            info!(target: "vrrp", instances = cfg.vrrp.len(), "VRRP speaker started");
            let (client, stop, st) = (client.clone(), stop_rx.clone(), status.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::vrrp::speaker::run(sp, client, stop, st).await {
                    warn!(target: "vrrp", "speaker: {e:#}");
                }
            }));
            Some(status)
        }
    };
    #[cfg(not(target_os = "linux"))]
    let vrrp_status = {
        let _ = speaker;
        None
    };
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
        vrrp_operator,
        firewall: cfg.firewall.as_ref().is_some_and(|f| f.backend != "none"),
        privileged: Some(client.clone()),
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
    let mut deadline = cfg.daemon.shutdown_timeout;
    let mut parent_gone = false;
    loop {
        tokio::select! {
            _ = term.recv() => { info!(target: "lb", "SIGTERM: stop accepting, draining"); break; }
            _ = int.recv() => { info!(target: "lb", "SIGINT: stop accepting, draining"); break; }
            _ = hup.recv() => { info!(target: "priv", "SIGHUP goes to the parent (pid {}), which re-reads the configuration", sys::privsep::parent_pid()); }
            _ = exit.notified() => { info!(target: "ctl", "exit command: stop accepting, draining"); break; }
            w = wake.recv() => match w {
                Some(Wake::Push(Push::Stop)) => { info!(target: "lb", "stop: stop accepting, draining"); break; }
                Some(Wake::Push(Push::StopNow)) => { deadline = std::time::Duration::ZERO; break; }
                Some(Wake::Push(Push::Reload { path, text })) => {
                    apply_reload(&dp, &path, &text, &lbs, &mut listening, &client, &mut deadline);
                }
                Some(Wake::Push(Push::Unknown)) => warn!(target: "priv", "ignored an unknown message from the parent"),
                Some(Wake::ParentGone) | None => {
                    warn!(target: "priv", "the privileged parent is gone: giving up mastership and exiting");
                    parent_gone = true;
                    break;
                }
            },
        }
    }
    // A planned stop hands VRRP mastership over before the listeners close (make before
    // break): the peer takes the VIPs within its skew time while this host still answers, so
    // no client meets a closed port or an address nobody holds.
    if !parent_gone && !deadline.is_zero() {
        hand_over(&cfg, ctl.vrrp.as_ref(), ctl.vrrp_operator.as_ref()).await;
    }
    let _ = stop_tx.send(true);
    for (_, ls) in listening.drain() {
        ls.close().await;
    }
    for t in tasks {
        let _ = t.await;
    }
    if parent_gone {
        // The supervisor restarts the whole daemon; nothing here can change addresses or the
        // firewall any more, so do not linger.
        bail!("the privileged parent is gone");
    }
    let open: usize = lbs.iter().map(|l| l.active()).sum();
    if open > 0 {
        info!(target: "lb", "waiting up to {} for {open} open connection(s)", config::duration::format(deadline));
        let all = async {
            for l in &lbs {
                l.drained().await;
            }
        };
        let now_please = async {
            loop {
                match wake.recv().await {
                    Some(Wake::Push(Push::StopNow)) => return "stop now",
                    Some(Wake::ParentGone) | None => return "the parent is gone",
                    Some(_) => {}
                }
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
            why = now_please => warn!(target: "lb", "{why}: closing open connections now"),
        }
    }
    // Stops the data-path threads, closing what is still open.
    drop(dp);
    info!(target: "lb", "exiting");
    Ok(())
}
