//! `fwlb run`: the start-up sequence as code, signal handling and wiring.
//!
//! Order (architecture.md): config (already validated) -> install the firewall -> open every
//! privileged resource (listeners, control socket, VRRP sockets) -> fork. The parent stays
//! root with a trimmed capability set and serves the child's requests
//! ([`crate::privsep::parent`]). The child chroots, becomes the configured user, drops every
//! capability, sets no_new_privs, verifies all of it, and only then builds the runtime and
//! serves. On SIGTERM/SIGINT (to either process) the child stops accepting and drains open
//! connections up to `shutdown_timeout`, then both exit 0.

mod child;
mod openings;
// VRRP `track` only where the speaker runs.
#[cfg(target_os = "linux")]
mod track;

use anyhow::{Context, Result, bail};
use tracing::{info, warn};

use crate::config::{Config, Control, FirewallBackend};
use crate::control;
use crate::privsep::{self, parent::Parent};
use crate::sys;
use crate::sys::privsep::{Forked, SignalPipe};

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
    match cfg.firewall.as_ref().map(|f| f.backend) {
        Some(FirewallBackend::Nftables) if !cfg!(target_os = "linux") => {
            out.push("[firewall] backend = \"nftables\" needs Linux".into())
        }
        Some(FirewallBackend::Pf) if !cfg!(target_os = "freebsd") => {
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
    runnable(&cfg)?;
    // The firewall goes in before anything serves; if it cannot, nothing runs (fail closed).
    let firewall = install_firewall(&cfg)?;
    let opened = Opened::open(&cfg)?;
    if !opts.foreground {
        sys::privdrop::daemonize().context("cannot detach from the terminal")?;
    }
    if let Some(p) = &cfg.daemon.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pidfile {}", p.display()))?;
    }
    // Held from before the fork, so a signal between the fork and the parent's loop is kept.
    let held = sys::privsep::hold_signals(&privsep::parent::SIGNALS).context("blocking signals")?;
    let (to_child, to_parent) = sys::privsep::pair().context("socketpair")?;
    match sys::privsep::fork().context("fork")? {
        Forked::Parent { child } => {
            // The child owns the data path: the parent keeps no listener (a dead child must
            // not leave a port accepting into a backlog nobody reads) and no VRRP socket.
            drop((to_parent, opened));
            let signals = SignalPipe::install(held).context("signal handlers")?;
            let reload_path = opts.config_file.clone();
            parent_side(cfg, reload_path, child, to_child, signals, firewall)
        }
        Forked::Child => {
            drop((to_child, firewall));
            sys::privsep::reset_signals(held).context("unblocking signals")?;
            child_side(cfg, opened, to_parent, opts)
        }
    }
}

/// Refuse what this build cannot run, or a configuration with nothing to run.
fn runnable(cfg: &Config) -> Result<()> {
    let missing = unsupported(cfg);
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
    Ok(())
}

/// What only root can open, opened before the fork for the child to use.
struct Opened {
    listeners: Vec<(String, std::net::TcpListener)>,
    ctl_sock: Option<ControlSocket>,
    speaker: Option<child::Speaker>,
    /// The host's nameservers (/etc/resolv.conf), for servers given by name: read here, as
    /// the chrooted child cannot.
    nameservers: Vec<std::net::SocketAddr>,
}

impl Opened {
    fn open(cfg: &Config) -> Result<Opened> {
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
        raise_descriptor_limit(cfg);
        Ok(Opened {
            listeners,
            ctl_sock,
            speaker: open_speaker(cfg)?,
            nameservers: crate::resolver::system_nameservers(),
        })
    }
}

/// Two descriptors per relayed connection, as far as the hard limit allows.
fn raise_descriptor_limit(cfg: &Config) {
    let need: usize = cfg.balancers.iter().map(|b| b.max_connections * 2).sum();
    if let Some(lim) = sys::raise_nofile(need as u64 + 64)
        && (lim as usize) < need
    {
        warn!(target: "lb", "descriptor limit {lim} is below the {need} that max_connections needs; raise the hard limit (ulimit -Hn) or lower max_connections");
    }
}

#[cfg(target_os = "linux")]
fn open_speaker(cfg: &Config) -> Result<Option<child::Speaker>> {
    if cfg.vrrp.is_empty() {
        return Ok(None);
    }
    let sp = crate::vrrp::speaker::open(&cfg.vrrp).context("opening the VRRP sockets")?;
    Ok(Some(sp))
}

#[cfg(not(target_os = "linux"))]
fn open_speaker(_cfg: &Config) -> Result<Option<child::Speaker>> {
    Ok(None)
}

/// The root parent after the fork: trimmed capabilities, then its loop until the child ends.
fn parent_side(
    cfg: Config,
    reload_path: Option<std::path::PathBuf>,
    child: libc::pid_t,
    chan: sys::privsep::Channel,
    signals: SignalPipe,
    firewall: Box<dyn crate::firewall::Firewall>,
) -> Result<()> {
    #[cfg(target_os = "linux")]
    if let Err(e) = trim_parent_capabilities() {
        warn!(target: "priv", "cannot trim the parent's capabilities: {e}");
    }
    info!(target: "priv", child, "privileged parent serving the child's requests");
    let pidfile = cfg.daemon.pidfile.clone();
    let parent = Parent::new(cfg, reload_path, child, chan, signals, firewall, pidfile)
        .context("cannot start the parent's firewall thread")?;
    match parent.run() {
        0 => Ok(()),
        _ => bail!("the child process failed; see the log above"),
    }
}

/// The child after the fork: drop every privilege, then one runtime thread for the control
/// port, VRRP, signals and the parent's channel; the data path runs on threads of its own
/// (balancer::engine).
fn child_side(
    cfg: Config,
    opened: Opened,
    chan: sys::privsep::Channel,
    opts: Options,
) -> Result<()> {
    become_unprivileged(&cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let res = rt.block_on(child::serve(cfg, opened, chan, opts));
    // Tasks still open past the drain deadline are dropped here, closing their sockets.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    res
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
