//! The privileged parent: after the fork it only serves the child's requests, forwards stop
//! signals, reloads the configuration on SIGHUP, and cleans up when the child ends. A plain
//! poll loop (no runtime), small enough to read in one sitting. VIP changes, notify scripts
//! and listeners are served here at once; firewall work (bans, listings, ruleset reloads) goes
//! to the firewall thread ([`super::worker`]), so a VIP change never waits behind it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::frame::{self, Kind, Reassembler};
use super::worker::{Job, Worker};
use super::{Push, Reply, Request, Transition, decode, encode};
use crate::config::{self, Config, FirewallBackend};
use crate::sys::privsep::{self, Channel, Exit, SignalPipe};

/// How long a reply or push may wait for room in the child's receive buffer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a notify script may run before it is killed.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// The signals the parent handles itself.
pub const SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];

/// The parent's sending side, shared by the main loop and the firewall thread: one lock, so
/// the fragments of one message go out back to back.
pub struct Outbox {
    chan: Channel,
    sending: Mutex<()>,
}

impl Outbox {
    fn send(&self, kind: Kind, id: u64, body: &[u8], fds: &[BorrowedFd<'_>]) {
        let _one_at_a_time = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        for (k, d) in frame::split(kind, id, body).iter().enumerate() {
            let attach = if k == 0 { fds } else { &[] };
            if let Err(e) = self.chan.send(d, attach) {
                warn!(target: "priv", "cannot reach the child: {e}");
                return;
            }
        }
    }

    /// Answer request `id`.
    pub fn reply(&self, id: u64, r: &Reply) {
        self.send(Kind::Reply, id, &encode(r), &[]);
    }

    pub fn push(&self, p: &Push) {
        self.send(Kind::Push, 0, &encode(p), &[]);
    }
}

/// What the parent holds after the fork.
pub struct Parent {
    /// The configuration in force: requests are checked against it; the firewall thread
    /// replaces it after a reload took.
    cfg: Arc<RwLock<Config>>,
    /// The file to re-read on SIGHUP (None: built from a command line, as `fwlb pen`).
    reload_path: Option<PathBuf>,
    child: libc::pid_t,
    outbox: Arc<Outbox>,
    inbox: Reassembler,
    signals: SignalPipe,
    /// The firewall thread, with the installed firewall (bans, reloads, clean-stop removal).
    worker: Worker,
    pidfile: Option<PathBuf>,
    /// VRRP instances whose addresses the parent has added, removed again when the child dies.
    held: BTreeSet<(u8, String)>,
    stopping: u8,
}

impl Parent {
    pub fn new(
        cfg: Config,
        reload_path: Option<PathBuf>,
        child: libc::pid_t,
        chan: Channel,
        signals: SignalPipe,
        firewall: Box<dyn crate::firewall::Firewall>,
        pidfile: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        // A child that stops reading must not stall the parent's loop for ever: after this,
        // the message is dropped (logged) and the loop goes on watching the child.
        chan.set_send_timeout(Some(SEND_TIMEOUT))?;
        let cfg = Arc::new(RwLock::new(cfg));
        let outbox = Arc::new(Outbox {
            chan,
            sending: Mutex::new(()),
        });
        let worker = Worker::start(firewall, cfg.clone(), outbox.clone())?;
        Ok(Parent {
            cfg,
            reload_path,
            child,
            outbox,
            inbox: Reassembler::default(),
            signals,
            worker,
            pidfile,
            held: BTreeSet::new(),
            stopping: 0,
        })
    }

    fn cfg(&self) -> std::sync::RwLockReadGuard<'_, Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Serve until the child ends; returns the process exit code (0 only for a clean stop).
    pub fn run(mut self) -> i32 {
        let mut buf = vec![0u8; frame::MAX_DATAGRAM];
        let mut child_gone_at: Option<Instant> = None;
        loop {
            let fds = [self.signals.as_fd(), self.outbox.chan.as_fd()];
            let ready = match privsep::poll_readable(&fds, 500) {
                Ok(r) => r,
                Err(e) => {
                    error!(target: "priv", "poll: {e}");
                    vec![true, true]
                }
            };
            if ready[0] {
                for sig in self.signals.drain() {
                    self.on_signal(sig);
                }
            }
            if ready[1] && child_gone_at.is_none() {
                match self.outbox.chan.recv(&mut buf) {
                    // The child closed its end: it is exiting or dead. Wait for its status.
                    Ok((0, _)) => child_gone_at = Some(Instant::now()),
                    Ok((n, _)) => {
                        let d = buf[..n].to_vec();
                        self.datagram(&d);
                    }
                    Err(e) => {
                        warn!(target: "priv", "request channel: {e}");
                        child_gone_at = Some(Instant::now());
                    }
                }
            }
            match privsep::try_wait(self.child) {
                Ok(Some(exit)) => return self.finish(exit),
                Ok(None) => {}
                Err(e) => {
                    error!(target: "priv", "cannot wait for the child: {e}");
                    return self.finish(Exit::Code(1));
                }
            }
            // The channel closed but the child lingers (stuck in exit?): do not wait forever.
            if child_gone_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
                warn!(target: "priv", "the child closed its channel but does not exit: killing it");
                let _ = privsep::kill(self.child, libc::SIGKILL);
            }
        }
    }

    /// One datagram from the child: a request once it is whole.
    fn datagram(&mut self, d: &[u8]) {
        let msg = match self.inbox.push(d) {
            Ok(Some(m)) if m.kind == Kind::Request => m,
            Ok(Some(m)) => {
                warn!(target: "priv", "refused a message of kind {:?} from the child", m.kind);
                return;
            }
            Ok(None) => return,
            Err(e) => {
                warn!(target: "priv", "refused a message from the child: {e}");
                return;
            }
        };
        match decode::<Request>(&msg.body) {
            Ok(req) => self.request(msg.id, req),
            Err(e) => {
                warn!(target: "priv", "refused a request: {e}");
                self.outbox.reply(msg.id, &Reply::Error(e));
            }
        }
    }

    /// Check a request, then serve it here or hand it to the firewall thread.
    fn request(&mut self, id: u64, req: Request) {
        if let Err(e) = check(&self.cfg(), &req) {
            warn!(target: "priv", "refused {req:?}: {e}");
            self.outbox.reply(id, &Reply::Error(e));
            return;
        }
        let job = match req {
            Request::Ban { ips, secs } => Job::Ban {
                id,
                ips,
                timeout: secs.map(Duration::from_secs),
            },
            Request::Unban { ips } => Job::Unban { id, ips },
            Request::ListBans => Job::List { id },
            Request::ServerAddrs { balancer, servers } => Job::Servers {
                id,
                balancer,
                servers,
            },
            now => {
                let (reply, fd) = self.serve(now);
                let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
                self.outbox.send(Kind::Reply, id, &encode(&reply), &fds);
                return;
            }
        };
        if !self.worker.send(job) {
            self.outbox
                .reply(id, &Reply::Error("the firewall thread is gone".into()));
        }
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        match sig {
            libc::SIGTERM | libc::SIGINT => {
                let name = if sig == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                self.stopping = self.stopping.saturating_add(1);
                let push = if self.stopping == 1 {
                    info!(target: "priv", "{name}: stopping (the child drains open connections)");
                    Push::Stop
                } else {
                    warn!(target: "priv", "second {name}: closing open connections now");
                    Push::StopNow
                };
                self.outbox.push(&push);
            }
            libc::SIGHUP => self.reload(),
            // SIGCHLD: the loop checks the child after every wake-up.
            _ => {}
        }
    }

    /// The child ended: clean up and choose the exit code.
    fn finish(mut self, exit: Exit) -> i32 {
        let clean = exit == Exit::Code(0);
        if clean {
            info!(target: "priv", "child exited cleanly");
        } else {
            error!(target: "priv", "child ended with {exit}: exiting so the supervisor restarts fwlb");
        }
        // Addresses the child held go: the restarted daemon starts as backup, and the peer
        // (which saw priority 0, or no adverts) takes them.
        for (vrid, iface) in std::mem::take(&mut self.held) {
            if let Err(e) = self.vips(vrid, &iface, false) {
                warn!(target: "vrrp", vrid, "cannot remove the addresses: {e}");
            }
        }
        // The firewall stays after a crash (fail closed); a clean stop removes it when asked.
        let remove = self
            .cfg()
            .firewall
            .as_ref()
            .is_some_and(|f| !f.keep_on_exit);
        let firewall = self.worker.stop();
        if let (true, true, Some(mut fw)) = (clean, remove, firewall) {
            match fw.remove() {
                Ok(()) => info!(target: "fw", "firewall removed (keep_on_exit = false)"),
                Err(e) => warn!(target: "fw", "cannot remove the firewall: {e:#}"),
            }
        }
        if let Some(p) = &self.pidfile {
            let _ = std::fs::remove_file(p);
        }
        if clean { 0 } else { 1 }
    }

    /// Carry out a request served by the main loop (already checked).
    fn serve(&mut self, req: Request) -> (Reply, Option<OwnedFd>) {
        let res = match req {
            Request::Vips {
                vrid,
                interface,
                up,
            } => self.vips(vrid, &interface, up).map(|()| {
                if up {
                    self.held.insert((vrid, interface));
                } else {
                    self.held.remove(&(vrid, interface));
                }
                Reply::Ok
            }),
            Request::Notify {
                vrid,
                interface,
                state,
            } => self.notify(vrid, &interface, state).map(|()| Reply::Ok),
            Request::Bind { balancer, addr } => match self.bind(&balancer, addr) {
                Ok(l) => return (Reply::Ok, Some(l.into())),
                Err(e) => Err(e),
            },
            other => Err(format!("{other:?} is not served by the main loop")),
        };
        match res {
            Ok(r) => (r, None),
            Err(e) => {
                warn!(target: "priv", "refused: {e}");
                (Reply::Error(e), None)
            }
        }
    }

    /// Add or remove every address of one configured instance (only those: the child names
    /// the instance, never an address).
    #[cfg(target_os = "linux")]
    fn vips(&mut self, vrid: u8, interface: &str, up: bool) -> Result<(), String> {
        let addrs: Vec<(IpAddr, u8)> = instance(&self.cfg(), vrid, interface)?
            .addresses
            .iter()
            .filter_map(|a| config::parse_cidr(a))
            .collect();
        let mut nl =
            crate::sys::netlink::Netlink::requests().map_err(|e| format!("rtnetlink: {e}"))?;
        let index = nl
            .dump_links()
            .map_err(|e| format!("listing links: {e}"))?
            .into_iter()
            .find(|l| l.name == interface)
            .map(|l| l.index)
            .ok_or_else(|| format!("no interface {interface:?}"))?;
        let mut errors = Vec::new();
        for (a, p) in addrs {
            let r = if up {
                nl.add_addr(index, a, p)
            } else {
                nl.del_addr(index, a, p)
            };
            if let Err(e) = r {
                errors.push(format!(
                    "{} {a}/{p}: {e}",
                    if up { "add" } else { "remove" }
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn vips(&mut self, vrid: u8, interface: &str, _up: bool) -> Result<(), String> {
        instance(&self.cfg(), vrid, interface)?;
        Err("VRRP addresses are changed on Linux only in this version".into())
    }

    /// Start the instance's configured script; a thread waits for it with a timeout so the
    /// parent's loop never blocks on it.
    fn notify(&self, vrid: u8, interface: &str, state: Transition) -> Result<(), String> {
        let script = {
            let cfg = self.cfg();
            let inst = instance(&cfg, vrid, interface)?;
            match state {
                Transition::Master => inst.notify_master.clone(),
                Transition::Backup | Transition::Fault => inst.notify_backup.clone(),
            }
        };
        let Some(script) = script else {
            return Ok(());
        };
        let child = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env("FWLB_VRID", vrid.to_string())
            .env("FWLB_STATE", state.as_str())
            .env("FWLB_INTERFACE", interface)
            .spawn()
            .map_err(|e| format!("cannot run notify script {script:?}: {e}"))?;
        std::thread::spawn(move || reap_notify(child, vrid, &script));
        Ok(())
    }

    /// A listener for a configured listen address (the child asks after a reload).
    fn bind(
        &self,
        balancer: &str,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::TcpListener, String> {
        let backlog = {
            let cfg = self.cfg();
            let b = cfg
                .balancers
                .iter()
                .find(|b| b.name == balancer)
                .ok_or_else(|| format!("no balancer {balancer:?} in the configuration"))?;
            if !b.listen.contains(&addr) {
                return Err(format!(
                    "{addr} is not a listen address of balancer {balancer:?}"
                ));
            }
            b.backlog
        };
        let l = crate::sys::socket::listener(addr, backlog)
            .map_err(|e| format!("balancer {balancer:?}: cannot listen on {addr}: {e}"))?;
        info!(target: "priv", balancer, listen = %addr, "new listener for the child");
        Ok(l)
    }

    /// SIGHUP: the firewall thread re-reads and validates the file (parsing may resolve host
    /// names, which must not hold up a VIP change), then replaces the ruleset if it changed
    /// and hands the file to the child. A broken or unappliable file keeps the old
    /// configuration, every reason logged.
    fn reload(&mut self) {
        let Some(path) = self.reload_path.clone() else {
            warn!(target: "priv", "SIGHUP: this daemon was started from a command line, not a file: nothing to reload");
            return;
        };
        info!(target: "priv", "SIGHUP: reloading {}", path.display());
        if !self.worker.send(Job::Reload { path }) {
            error!(target: "priv", "reload: the firewall thread is gone; nothing changed");
        }
    }
}

/// Wait for a notify script, killing it after [`NOTIFY_TIMEOUT`].
fn reap_notify(mut child: std::process::Child, vrid: u8, script: &str) {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    warn!(target: "vrrp", vrid, "notify script {script:?} exited with {st}");
                }
                return;
            }
            Ok(None) if start.elapsed() > NOTIFY_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                warn!(target: "vrrp", vrid, "notify script {script:?} killed after {} s", NOTIFY_TIMEOUT.as_secs());
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                warn!(target: "vrrp", vrid, "notify script {script:?}: {e}");
                return;
            }
        }
    }
}

/// The configured VRRP instance a request names.
fn instance<'a>(cfg: &'a Config, vrid: u8, interface: &str) -> Result<&'a config::Vrrp, String> {
    cfg.vrrp
        .iter()
        .find(|v| v.vrid == vrid && v.interface == interface)
        .ok_or_else(|| {
            format!("vrid {vrid} on {interface:?} is not a [[vrrp]] instance of the configuration")
        })
}

/// Most addresses one ban request may carry (a control line holds a few hundred).
pub const MAX_BAN_BATCH: usize = 4096;

/// Addresses a ban would make no sense for, or would cut the host off itself.
fn bannable(ip: IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
        && ip != IpAddr::from([255, 255, 255, 255])
}

/// Whether the configuration allows `req` at all (the parent's first line of defence: the
/// child may be compromised, so it only ever names things the operator configured).
pub fn check(cfg: &Config, req: &Request) -> Result<(), String> {
    let instance = |vrid: u8, interface: &str| instance(cfg, vrid, interface).map(|_| ());
    let firewall = || match cfg.firewall.as_ref().map(|f| f.backend) {
        Some(FirewallBackend::Nftables | FirewallBackend::Pf) => Ok(()),
        _ => Err("no firewall installed ([firewall] backend = \"nftables\" or \"pf\")".to_string()),
    };
    match req {
        Request::Vips {
            vrid, interface, ..
        } => instance(*vrid, interface),
        Request::Notify {
            vrid, interface, ..
        } => instance(*vrid, interface),
        Request::Ban { ips, .. } | Request::Unban { ips } => {
            firewall()?;
            if ips.is_empty() || ips.len() > MAX_BAN_BATCH {
                return Err(format!(
                    "a ban request names 1 to {MAX_BAN_BATCH} addresses, not {}",
                    ips.len()
                ));
            }
            match ips.iter().find(|ip| !bannable(**ip)) {
                Some(ip) => Err(format!("{ip} cannot be banned")),
                None => Ok(()),
            }
        }
        Request::ListBans => firewall(),
        Request::ServerAddrs { balancer, servers } => {
            firewall()?;
            super::openings::check_shape(cfg, balancer, servers)
        }
        Request::Bind { balancer, addr } => {
            let b = cfg
                .balancers
                .iter()
                .find(|b| b.name == *balancer)
                .ok_or_else(|| format!("no balancer {balancer:?} in the configuration"))?;
            if b.listen.contains(addr) {
                Ok(())
            } else {
                Err(format!(
                    "{addr} is not a listen address of balancer {balancer:?}"
                ))
            }
        }
        Request::Unknown => Err("unknown request".into()),
    }
}

/// Changes a reload cannot apply to a running daemon. What a reload does apply: per
/// balancer, its listeners, servers (added, removed, reweighted), emergency server,
/// algorithm, timeouts, blacklist and tracking times; the firewall; `shutdown_timeout`.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut od = old.daemon.clone();
    od.shutdown_timeout = new.daemon.shutdown_timeout;
    if od != new.daemon {
        out.push("[daemon] changed (other than shutdown_timeout)".to_string());
    }
    // `track` is applied by the running speaker; the rest of a [[vrrp]] needs a restart.
    let untracked = |c: &Config| {
        c.vrrp
            .iter()
            .map(|v| config::Vrrp {
                track: Vec::new(),
                ..v.clone()
            })
            .collect::<Vec<_>>()
    };
    if untracked(old) != untracked(new) {
        out.push("[[vrrp]] changed (other than track)".to_string());
    }
    if old.firewall.as_ref().map(|f| &f.backend) != new.firewall.as_ref().map(|f| &f.backend) {
        out.push("[firewall] backend changed".to_string());
    }
    let names = |c: &Config| {
        c.balancers
            .iter()
            .map(|b| b.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(new) {
        out.push(format!(
            "the [[balancer]] list changed ({:?} -> {:?}): adding, removing or renaming a balancer",
            names(old),
            names(new)
        ));
    }
    for (o, n) in old.balancers.iter().zip(&new.balancers) {
        let mut live = n.clone();
        // The fields a reload applies; everything else must be unchanged.
        live.listen = o.listen.clone();
        live.servers = o.servers.clone();
        live.servers_srv = o.servers_srv.clone();
        live.emergency = o.emergency.clone();
        live.algorithm = o.algorithm;
        live.blacklist = o.blacklist;
        live.tracking = o.tracking;
        live.connect_timeout = o.connect_timeout;
        live.idle_timeout = o.idle_timeout;
        live.health = o.health.clone();
        live.slowstart = o.slowstart;
        live.on_down = o.on_down;
        if &live != o {
            out.push(format!(
                "balancer {:?}: a setting other than listen, servers, servers_srv, emergency, algorithm, timeouts, blacklist, tracking, health, slowstart or on_down changed",
                o.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        config::parse_str(
            "[daemon]\ncontrol = \"none\"\n[[balancer]]\nname = \"web\"\nlisten = \"192.0.2.10:80\"\nservers = [\"10.0.0.1:80\"]\n[[vrrp]]\nvrid = 7\ninterface = \"eth0\"\npriority = 100\naddresses = [\"192.0.2.10/24\"]\n[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn requests_outside_the_configuration_are_refused() {
        let c = cfg();
        let vips = |vrid, interface: &str| Request::Vips {
            vrid,
            interface: interface.into(),
            up: true,
        };
        assert_eq!(check(&c, &vips(7, "eth0")), Ok(()));
        assert!(check(&c, &vips(8, "eth0")).unwrap_err().contains("vrid 8"));
        assert!(
            check(&c, &vips(7, "eth1")).is_err(),
            "right vrid, wrong interface"
        );
        let bind = |b: &str, a: &str| Request::Bind {
            balancer: b.into(),
            addr: a.parse().unwrap(),
        };
        assert_eq!(check(&c, &bind("web", "192.0.2.10:80")), Ok(()));
        assert!(
            check(&c, &bind("web", "192.0.2.10:22")).is_err(),
            "not a listen address"
        );
        assert!(
            check(&c, &bind("mail", "192.0.2.10:80")).is_err(),
            "no such balancer"
        );
        let notify = Request::Notify {
            vrid: 7,
            interface: "eth0".into(),
            state: Transition::Master,
        };
        assert_eq!(check(&c, &notify), Ok(()));
        // A state that is not one of the three never decodes: refused before the check.
        let garbled = br#"{"Notify":{"vrid":7,"interface":"eth0","state":"; rm -rf /"}}"#;
        assert!(decode::<Request>(garbled).is_err());
        let ban = |ips: &[&str]| Request::Ban {
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            secs: None,
        };
        assert_eq!(check(&c, &ban(&["203.0.113.9", "2001:db8::9"])), Ok(()));
        for bad in [
            &["127.0.0.1"][..],
            &["203.0.113.9", "0.0.0.0"],
            &["224.0.0.18"],
            &[],
        ] {
            assert!(check(&c, &ban(bad)).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_BAN_BATCH)
            .map(|i| format!("10.{}.{}.1", i / 256, i % 256))
            .collect();
        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        assert!(check(&c, &ban(&many)).is_err(), "too many in one request");
        assert!(check(&c, &Request::Unknown).is_err());
        let mut nofw = cfg();
        nofw.firewall = None;
        assert!(check(&nofw, &Request::ListBans).is_err());
        let addrs = |b: &str, n: usize| Request::ServerAddrs {
            balancer: b.into(),
            servers: vec![("app.internal:80".into(), vec!["10.0.0.21".parse().unwrap()]); n],
        };
        assert!(check(&nofw, &addrs("web", 0)).is_err(), "no firewall");
        assert_eq!(check(&c, &addrs("web", 0)), Ok(()));
        assert!(
            check(&c, &addrs("web", 1)).is_err(),
            "web has no server by name"
        );
        assert!(check(&c, &addrs("mail", 0)).is_err(), "no such balancer");
    }

    #[test]
    fn reload_refuses_what_needs_a_restart() {
        let old = cfg();
        let mut new = cfg();
        new.balancers[0]
            .servers
            .push(config::server("10.0.0.2:80", 80).unwrap());
        new.balancers[0]
            .listen
            .push("192.0.2.10:443".parse().unwrap());
        new.daemon.shutdown_timeout = Duration::from_secs(3);
        // The speaker applies a new track list.
        new.vrrp[0].track = vec![config::Track {
            balancer: "web".into(),
            weight: -60,
        }];
        assert!(
            restart_needed(&old, &new).is_empty(),
            "{:?}",
            restart_needed(&old, &new)
        );
        new.vrrp[0].priority = 200;
        new.daemon.threads = 4;
        new.balancers[0].proxy_protocol = config::ProxyProtocol::V2;
        let r = restart_needed(&old, &new);
        assert_eq!(r.len(), 3, "{r:?}");
    }
}
