//! The child after the fork: one runtime thread for the control plane (control port, VRRP,
//! signals, the parent's channel, housekeeping), the data path on threads of its own.
//!
//! Nothing here waits synchronously: requests to the parent are futures
//! ([`crate::privsep::Client`]), the state file is written on the blocking pool, and the main
//! loop only reacts to signals and the parent's pushes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{ControlSocket, Options};
use crate::balancer::Balancer;
use crate::balancer::engine::{DataPath, Listening};
use crate::config::{self, Config, FirewallBackend};
use crate::control::{self, Ctl};
use crate::privsep::{self, Client, Event, Push, Request};
use crate::resolver::Resolvers;
use crate::sys;
use crate::sys::privsep::Channel;

/// How long the state file's saver waits after a change for the rest of its burst.
const SAVE_COALESCE: Duration = Duration::from_millis(100);

#[cfg(target_os = "linux")]
pub type Speaker = crate::vrrp::speaker::Speaker;
#[cfg(not(target_os = "linux"))]
pub type Speaker = ();

/// What the control port uses of a running speaker: its status and its operator queue.
type VrrpHandles = (
    Option<crate::vrrp::status::Status>,
    Option<crate::vrrp::status::OperatorTx>,
);

/// The listeners by (balancer, configured address).
type Listeners = HashMap<(String, SocketAddr), Listening>;

/// The signals the child handles (SIGHUP only to say it is the parent's).
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            // One sent to the whole process group must not kill the child.
            hup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
        })
    }
}

/// Why the main loop ended.
#[derive(PartialEq, Eq)]
enum End {
    /// A stop asked for (signal, parent, `exit`): drain for `deadline` (zero: close now).
    Stop { deadline: Duration },
    /// The parent is gone: nothing can change addresses or the firewall any more.
    ParentGone,
}

/// What the child runs.
struct Child {
    cfg: Config,
    dp: DataPath,
    lbs: Vec<Arc<Balancer>>,
    listening: Listeners,
    client: Arc<Client>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Lookups of the servers given by name.
    resolvers: Resolvers,
    /// Each `[[vrrp]]`'s track list, for the speaker (a reload may change them).
    tracks: Option<watch::Sender<Vec<Vec<config::Track>>>>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

/// Serve until stopped: the child's whole life after it dropped its privileges.
pub(super) async fn serve(
    cfg: Config,
    opened: super::Opened,
    chan: Channel,
    mut opts: Options,
) -> Result<()> {
    let super::Opened {
        listeners,
        ctl_sock,
        speaker,
        nameservers,
    } = opened;
    let mut signals = Signals::install()?;
    let (client, mut events) = Client::start(chan).context("the parent's channel")?;
    let mut child = Child::start(cfg, listeners, Arc::new(client))?;
    let commands = std::mem::take(&mut opts.commands);
    let ctl = child.control(speaker, opts);
    child.start_resolvers(nameservers, &ctl);
    startup_commands(&ctl, &commands).await;
    child.open_control_port(ctl_sock, &ctl)?;
    let end = child.main_loop(&mut signals, &mut events, &ctl).await;
    // A planned stop hands VRRP mastership over before the listeners close (make before
    // break): the peer takes the VIPs within its skew time while this host still answers, so
    // no client meets a closed port or an address nobody holds.
    if matches!(end, End::Stop { deadline } if !deadline.is_zero()) {
        hand_over(&child.cfg, ctl.vrrp.as_ref(), ctl.vrrp_operator.as_ref()).await;
    }
    child.stop_tasks().await;
    // The last word on health and addresses, for the next start.
    ctl.save_state().await;
    match end {
        // The supervisor restarts the whole daemon: do not linger.
        End::ParentGone => bail!("the privileged parent is gone"),
        End::Stop { deadline } => child.drain(deadline, &mut signals, &mut events).await,
    }
    // Stops the data-path threads, closing what is still open.
    drop(child.dp);
    info!(target: "lb", "exiting");
    Ok(())
}

/// pen -o / the -F file's commands, run as if sent to the control port; pen -o prints the
/// replies.
async fn startup_commands(ctl: &Ctl, lines: &[String]) {
    for line in lines {
        let words = crate::wire::penctl::parse(line.as_bytes()).unwrap_or_default();
        let r = control::commands::execute(ctl, &words).await;
        if r.error {
            warn!(target: "ctl", command = %line, "{}", r.text.trim_end());
        } else if !r.text.is_empty() {
            print!("{}", r.text);
        }
    }
}

impl Child {
    /// The data path with every configured listener, the saved state restored, and the
    /// housekeeping task.
    fn start(
        cfg: Config,
        listeners: Vec<(String, std::net::TcpListener)>,
        client: Arc<Client>,
    ) -> Result<Child> {
        // No balancer, no data-path thread (a VRRP-only host).
        let threads = if cfg.balancers.is_empty() {
            0
        } else {
            cfg.daemon.threads
        };
        let dp = DataPath::start(threads).context("cannot start the data path")?;
        let mut lbs = Vec::new();
        let mut listening = Listeners::new();
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
        // The std listeners were cloned into the data path; close the originals so a stop
        // closes the port.
        drop(listeners);
        if let Some(p) = &cfg.daemon.state_file {
            control::state::restore(p, &lbs);
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(housekeeping(lbs.clone(), stop_rx.clone()))];
        // Active health checks: tasks on this runtime, never on the data-path threads.
        for lb in &lbs {
            tasks.push(tokio::spawn(crate::health::run::checks(
                lb.clone(),
                stop_rx.clone(),
            )));
            tasks.push(tokio::spawn(crate::health::run::agents(
                lb.clone(),
                stop_rx.clone(),
            )));
        }
        Ok(Child {
            cfg,
            dp,
            lbs,
            listening,
            client,
            tasks,
            resolvers: Resolvers::new(Vec::new()),
            tracks: None,
            stop_tx,
            stop_rx,
        })
    }

    /// Resolve the servers given by name; with a state file, their address changes are saved
    /// (a restart during a DNS outage starts from the last addresses); with a firewall, tell
    /// the parent the addresses for the back side's openings.
    fn start_resolvers(&mut self, nameservers: Vec<SocketAddr>, ctl: &Arc<Ctl>) {
        self.resolvers = Resolvers::new(nameservers);
        if ctl.firewall {
            let (tx, rx) = mpsc::unbounded_channel();
            self.resolvers.notify_changes(tx);
            let follow = super::openings::follow(
                self.lbs.clone(),
                self.client.clone(),
                rx,
                self.stop_rx.clone(),
            );
            self.tasks.push(tokio::spawn(follow));
        }
        if let Some(tx) = self.start_saver(ctl) {
            self.resolvers.notify_changes(tx);
        }
        self.resolvers.update(&self.cfg, &self.lbs);
    }

    /// With a state file, save it after every health, agent or address change, one save for
    /// a burst (a restart in the middle of an incident keeps the servers that were down out
    /// until a check says otherwise). The sender is for the resolvers' changes.
    fn start_saver(&mut self, ctl: &Arc<Ctl>) -> Option<mpsc::UnboundedSender<()>> {
        ctl.state_file.as_ref()?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        for lb in &self.lbs {
            let (mut changes, tx, mut stop) =
                (lb.health_changes(), tx.clone(), self.stop_rx.clone());
            self.tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        r = changes.changed() => if r.is_err() || tx.send(()).is_err() { return },
                        _ = stop.changed() => return,
                    }
                }
            }));
        }
        let (ctl, mut stop) = (ctl.clone(), self.stop_rx.clone());
        self.tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.recv() => if r.is_none() { return },
                    _ = stop.changed() => return,
                }
                // Let a burst (a switch taking many servers down) land in one save.
                tokio::time::sleep(SAVE_COALESCE).await;
                while rx.try_recv().is_ok() {}
                ctl.save_state().await;
            }
        }));
        Some(tx)
    }

    /// Start the VRRP speaker (if configured) and build what the control commands act on.
    fn control(&mut self, speaker: Option<Speaker>, opts: Options) -> Arc<Ctl> {
        let (vrrp, vrrp_operator) = self.start_speaker(speaker);
        let cfg = &self.cfg;
        Arc::new(Ctl {
            balancers: self.lbs.clone(),
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
            exit: Arc::new(tokio::sync::Notify::new()),
            started: Instant::now(),
            vrrp,
            vrrp_operator,
            firewall: cfg
                .firewall
                .as_ref()
                .is_some_and(|f| f.backend != FirewallBackend::None),
            privileged: Some(self.client.clone()),
            saving: tokio::sync::Mutex::new(()),
        })
    }

    #[cfg(target_os = "linux")]
    fn start_speaker(&mut self, speaker: Option<Speaker>) -> VrrpHandles {
        let Some(sp) = speaker else {
            return (None, None);
        };
        let (operator, status) = (sp.operator(), sp.status());
        info!(target: "vrrp", instances = self.cfg.vrrp.len(), "VRRP speaker started");
        let (client, stop) = (self.client.clone(), self.stop_rx.clone());
        // `track`: the balancers' counts, and the lists a reload may change.
        let (pools, followers) = super::track::follow(&self.lbs, &self.stop_rx);
        self.tasks.extend(followers);
        let lists = self.cfg.vrrp.iter().map(|v| v.track.clone()).collect();
        let (tracks, lists) = watch::channel(lists);
        self.tracks = Some(tracks);
        let tracking = crate::vrrp::speaker::Tracking { pools, lists };
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::vrrp::speaker::run(sp, client, stop, tracking).await {
                warn!(target: "vrrp", "speaker: {e:#}");
            }
        }));
        (Some(status), Some(operator))
    }

    #[cfg(not(target_os = "linux"))]
    fn start_speaker(&mut self, _speaker: Option<Speaker>) -> VrrpHandles {
        (None, None)
    }

    fn open_control_port(&mut self, sock: Option<ControlSocket>, ctl: &Arc<Ctl>) -> Result<()> {
        let Some(sock) = sock else { return Ok(()) };
        let listener = match sock {
            ControlSocket::Tcp(l) => control::Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
            ControlSocket::Unix(l) => {
                control::Listener::Unix(tokio::net::UnixListener::from_std(l)?)
            }
        };
        info!(target: "ctl", control = %ctl.control, "control port open");
        self.tasks.push(tokio::spawn(control::serve(
            ctl.clone(),
            listener,
            control::Allow(self.cfg.daemon.control_allow.clone()),
            self.stop_rx.clone(),
        )));
        Ok(())
    }

    /// Signals, the parent's pushes and `exit`, until one of them means stop.
    async fn main_loop(
        &mut self,
        sig: &mut Signals,
        events: &mut mpsc::UnboundedReceiver<Event>,
        ctl: &Ctl,
    ) -> End {
        let mut deadline = self.cfg.daemon.shutdown_timeout;
        loop {
            tokio::select! {
                _ = sig.term.recv() => { info!(target: "lb", "SIGTERM: stop accepting, draining"); break; }
                _ = sig.int.recv() => { info!(target: "lb", "SIGINT: stop accepting, draining"); break; }
                _ = sig.hup.recv() => { info!(target: "priv", "SIGHUP goes to the parent (pid {}), which re-reads the configuration", sys::privsep::parent_pid()); }
                _ = ctl.exit.notified() => { info!(target: "ctl", "exit command: stop accepting, draining"); break; }
                e = events.recv() => match e {
                    Some(Event::Push(Push::Stop)) => { info!(target: "lb", "stop: stop accepting, draining"); break; }
                    Some(Event::Push(Push::StopNow)) => { deadline = Duration::ZERO; break; }
                    Some(Event::Push(Push::Reload { path, text })) => {
                        if let Some(d) = self.apply_reload(&path, &text).await {
                            deadline = d;
                        }
                    }
                    Some(Event::Push(Push::Unknown)) => warn!(target: "priv", "ignored an unknown message from the parent"),
                    Some(Event::ParentGone) | None => {
                        warn!(target: "priv", "the privileged parent is gone: giving up mastership and exiting");
                        return End::ParentGone;
                    }
                },
            }
        }
        End::Stop { deadline }
    }

    /// Stop the control port, the speaker (which gives its addresses up) and housekeeping;
    /// close the listeners.
    async fn stop_tasks(&mut self) {
        let _ = self.stop_tx.send(true);
        self.resolvers.stop();
        for (_, ls) in self.listening.drain() {
            ls.close().await;
        }
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }

    /// Wait for open connections, up to `deadline` or a second stop request.
    async fn drain(
        &self,
        deadline: Duration,
        sig: &mut Signals,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) {
        let open: usize = self.lbs.iter().map(|l| l.active()).sum();
        if open == 0 {
            return;
        }
        info!(target: "lb", "waiting up to {} for {open} open connection(s)", config::duration::format(deadline));
        let all = async {
            for l in &self.lbs {
                l.drained().await;
            }
        };
        let now_please = async {
            loop {
                match events.recv().await {
                    Some(Event::Push(Push::StopNow)) => return "stop now",
                    Some(Event::ParentGone) | None => return "the parent is gone",
                    Some(_) => {}
                }
            }
        };
        tokio::select! {
            _ = all => info!(target: "lb", "all connections finished"),
            _ = tokio::time::sleep(deadline) => {
                let left: usize = self.lbs.iter().map(|l| l.active()).sum();
                warn!(target: "lb", "shutdown deadline reached, closing {left} connection(s)");
            }
            _ = sig.term.recv() => warn!(target: "lb", "second SIGTERM: closing open connections now"),
            _ = sig.int.recv() => warn!(target: "lb", "second SIGINT: closing open connections now"),
            why = now_please => warn!(target: "lb", "{why}: closing open connections now"),
        }
    }

    /// Apply a configuration the parent validated: per balancer, the difference in servers
    /// and settings, new listeners (bound by the parent, passed back over the socketpair) and
    /// closed ones. Established connections are not touched. Returns the new drain deadline.
    async fn apply_reload(&mut self, path: &str, text: &str) -> Option<Duration> {
        // Parsing a large file takes a while: on the blocking pool, not this thread (names
        // are not resolved by parsing but by crate::resolver).
        let (p, t) = (path.to_string(), text.to_string());
        let parsed =
            tokio::task::spawn_blocking(move || config::parse_str(&t, std::path::Path::new(&p)))
                .await;
        let new = match parsed {
            Ok(Ok(c)) => c,
            Err(e) => {
                warn!(target: "priv", "reload: parsing the configuration failed: {e}");
                return None;
            }
            Ok(Err(e)) => {
                warn!(target: "priv", "reload: the parent sent a configuration that does not parse: {e}");
                return None;
            }
        };
        for b in &new.balancers {
            let Some(lb) = self.lbs.iter().find(|l| l.cfg.name == b.name).cloned() else {
                warn!(target: "lb", balancer = %b.name, "reload: no such balancer running; skipped");
                continue;
            };
            for note in lb.reconfigure(b) {
                info!(target: "lb", balancer = %b.name, "reload: {note}");
            }
            for addr in &b.listen {
                if !self.listening.contains_key(&(b.name.clone(), *addr)) {
                    self.add_listener(&lb, *addr).await;
                }
            }
            self.close_listeners_not_in(b);
        }
        self.resolvers.update(&new, &self.lbs);
        if let Some(tx) = &self.tracks {
            let lists: Vec<Vec<config::Track>> = new.vrrp.iter().map(|v| v.track.clone()).collect();
            tx.send_if_modified(|old| {
                let changed = *old != lists;
                *old = lists;
                changed
            });
        }
        info!(target: "priv", "reload: configuration from {path} in effect");
        Some(new.daemon.shutdown_timeout)
    }

    /// A listener the parent binds for us (we may not bind privileged ports ourselves).
    async fn add_listener(&mut self, lb: &Arc<Balancer>, addr: SocketAddr) {
        let name = lb.cfg.name.clone();
        let req = Request::Bind {
            balancer: name.clone(),
            addr,
        };
        let fd = match self.client.call(req).await {
            Ok(mut a) if a.reply == privsep::Reply::Ok && a.fds.len() == 1 => a.fds.remove(0),
            Ok(a) => {
                let why = match a.reply {
                    privsep::Reply::Error(e) => e,
                    other => format!("unexpected reply {other:?}"),
                };
                warn!(target: "lb", balancer = %name, "reload: cannot listen on {addr}: {why}");
                return;
            }
            Err(e) => {
                warn!(target: "lb", balancer = %name, "reload: listen on {addr}: {e}");
                return;
            }
        };
        match start_listener(&self.dp, lb, std::net::TcpListener::from(fd)) {
            Ok((_, ls)) => {
                self.listening.insert((name, addr), ls);
            }
            Err(e) => warn!(target: "lb", balancer = %name, "reload: listen on {addr}: {e:#}"),
        }
    }

    fn close_listeners_not_in(&mut self, b: &config::Balancer) {
        let gone: Vec<(String, SocketAddr)> = self
            .listening
            .keys()
            .filter(|(n, a)| *n == b.name && !b.listen.contains(a))
            .cloned()
            .collect();
        for key in gone {
            if let Some(ls) = self.listening.remove(&key) {
                // The data path lets the socket go; open connections go on.
                tokio::spawn(ls.close());
                info!(target: "lb", balancer = %key.0, listen = %key.1, "reload: listener closed");
            }
        }
    }
}

/// Once a second: forget client-table entries past `tracking`.
async fn housekeeping(lbs: Vec<Arc<Balancer>>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                for lb in &lbs {
                    lb.expire_clients(now);
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
    use crate::vrrp::status::{InstanceStatus, Operator};
    let (Some(status), Some(tx)) = (status, operator) else {
        return;
    };
    let no_master =
        |s: &Vec<InstanceStatus>| !s.iter().any(|i| i.state == crate::vrrp::State::Master);
    if no_master(&status.borrow()) {
        return;
    }
    let longest = cfg
        .vrrp
        .iter()
        .map(|v| v.advert_interval)
        .max()
        .unwrap_or_default();
    let limit = (longest * 4).clamp(Duration::from_millis(200), Duration::from_secs(3));
    info!(target: "vrrp", "stop: handing mastership over before closing the listeners (up to {} ms)", limit.as_millis());
    if tx.send(Operator::Standby(None)).is_err() {
        return;
    }
    let t0 = Instant::now();
    // Woken by each snapshot the speaker sends, not by polling.
    let mut watch = status.clone();
    match tokio::time::timeout(limit, watch.wait_for(no_master)).await {
        Ok(Ok(_)) => {
            info!(target: "vrrp", "stop: the peer took over after {} ms", t0.elapsed().as_millis());
        }
        Ok(Err(_)) => warn!(target: "vrrp", "stop: the speaker has stopped; not waiting"),
        Err(_) => {
            warn!(target: "vrrp", "stop: no peer took over within {} ms; giving the addresses up anyway", limit.as_millis());
        }
    }
}
