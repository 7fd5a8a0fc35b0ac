//! The parent's firewall thread: bans, unbans, listings and ruleset reloads, which can take
//! from microseconds (a netlink batch) to a second (`nft -f` of a large ruleset), run here so
//! that the parent's main loop answers VIP changes and notify requests at once, whatever the
//! firewall is doing. Jobs run in arrival order; consecutive ban and unban requests that
//! arrived together become one batch (one netlink transaction for nftables). The addresses
//! of servers given by name (`Job::Servers`, checked by `openings`) go into the servers' set
//! or table here too, and are carried into every reinstalled ruleset.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::openings::{self, Resolved};
use super::parent::Outbox;
use super::{Push, Reply};
use crate::config::{self, Config, FirewallBackend};
use crate::firewall::{BanChange, Firewall, Ruleset};

/// At most this many requests go into one batch (a flood still gets answers as it goes).
const BATCH: usize = 4096;

/// Work for the thread. `id` is the request's, for its reply.
pub enum Job {
    Ban {
        id: u64,
        ips: Vec<IpAddr>,
        timeout: Option<Duration>,
    },
    Unban {
        id: u64,
        ips: Vec<IpAddr>,
    },
    List {
        id: u64,
    },
    /// The resolved addresses of `balancer`'s servers given by name (`Request::ServerAddrs`).
    Servers {
        id: u64,
        balancer: String,
        servers: Vec<(String, Vec<IpAddr>)>,
    },
    /// SIGHUP: read and validate the file; replace the ruleset if it changed (bans kept),
    /// then make it the parent's and push it to the child.
    Reload {
        path: std::path::PathBuf,
    },
}

/// The running thread.
pub struct Worker {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<Box<dyn Firewall>>>,
}

impl Worker {
    pub fn start(
        fw: Box<dyn Firewall>,
        cfg: Arc<RwLock<Config>>,
        outbox: Arc<Outbox>,
    ) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fwlb-fw".into())
            .spawn(move || run(fw, rx, &cfg, &outbox))?;
        Ok(Worker {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queue a job; false if the thread is gone (it logged why).
    pub fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|t| t.send(job).is_ok())
    }

    /// Let the queued jobs finish and take the firewall handle back.
    pub fn stop(mut self) -> Option<Box<dyn Firewall>> {
        drop(self.tx.take());
        self.thread.take().and_then(|t| t.join().ok())
    }
}

fn run(
    mut fw: Box<dyn Firewall>,
    rx: mpsc::Receiver<Job>,
    cfg: &RwLock<Config>,
    outbox: &Outbox,
) -> Box<dyn Firewall> {
    let mut open = Openings::default();
    loop {
        // pf keeps ban deadlines in user space: wake up for the next one.
        let first = match fw.next_expiry() {
            Some(t) => match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                Ok(j) => Some(j),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return fw,
            },
            None => match rx.recv() {
                Ok(j) => Some(j),
                Err(_) => return fw,
            },
        };
        expire(fw.as_mut());
        let Some(first) = first else { continue };
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        run_jobs(fw.as_mut(), jobs, cfg, outbox, &mut open);
    }
}

/// The resolved addresses of servers given by name, as accepted, and those the firewall's
/// server set holds beyond the servers given by address.
#[derive(Default)]
struct Openings {
    resolved: Resolved,
    applied: BTreeSet<IpAddr>,
    /// The last refusals per balancer: logged when they change (once per episode).
    refused: BTreeMap<String, Vec<String>>,
}

impl Openings {
    /// The addresses to hold beyond `rs`'s servers given by address.
    fn wanted(&self, rs: &Ruleset) -> BTreeSet<IpAddr> {
        let statics: BTreeSet<IpAddr> = rs.servers.iter().map(|s| s.ip()).collect();
        self.resolved.all().difference(&statics).copied().collect()
    }

    /// Bring the installed set in line with the record (`rs`: the ruleset in force).
    fn sync(&mut self, fw: &mut dyn Firewall, rs: &Ruleset) -> Result<(), String> {
        // Without `back` there is no set to change; a reinstall with one renders the record.
        let want = if rs.back.is_some() {
            self.wanted(rs)
        } else {
            BTreeSet::new()
        };
        let add: Vec<IpAddr> = want.difference(&self.applied).copied().collect();
        let remove: Vec<IpAddr> = self.applied.difference(&want).copied().collect();
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        fw.change_servers(&add, &remove)
            .map_err(|e| format!("{e:#}"))?;
        for ip in &add {
            info!(target: "fw", %ip, "back open to a server given by name");
        }
        for ip in &remove {
            info!(target: "fw", %ip, "back closed to a former server address");
        }
        self.applied = want;
        Ok(())
    }

    /// Log `refused` for `balancer` if it differs from the last time.
    fn log_refusals(&mut self, balancer: &str, refused: Vec<String>) {
        if self.refused.get(balancer) == Some(&refused) {
            return;
        }
        for r in &refused {
            warn!(target: "fw", balancer, "refused a server address: {r}");
        }
        self.refused.insert(balancer.to_string(), refused);
    }

    /// `Job::Servers`: record what the configuration allows, apply it; the reply.
    fn serve(
        &mut self,
        fw: &mut dyn Firewall,
        cfg: &Config,
        balancer: &str,
        servers: &openings::Servers,
    ) -> Reply {
        let rs = match crate::firewall::build(cfg) {
            Ok(rs) => rs,
            Err(e) => return Reply::Error(e.join("; ")),
        };
        let (ok, refused) = openings::accept(cfg, rs.back_prefixes(), balancer, servers);
        self.resolved.replace(balancer, ok);
        let applied = self.sync(fw, &rs);
        let reply = match (&applied, refused.is_empty()) {
            (Err(e), _) => Reply::Error(e.clone()),
            (Ok(()), true) => Reply::Ok,
            (Ok(()), false) => Reply::Error(format!("refused: {}", refused.join("; "))),
        };
        if let Err(e) = &applied {
            warn!(target: "fw", balancer, "server addresses: {e}");
        }
        self.log_refusals(balancer, refused);
        reply
    }
}

fn expire(fw: &mut dyn Firewall) {
    if fw.next_expiry().is_some_and(|t| t <= Instant::now()) {
        match fw.expire() {
            Ok(gone) => {
                for ip in gone {
                    info!(target: "fw", %ip, "ban expired");
                }
            }
            Err(e) => warn!(target: "fw", "expiring bans: {e:#}"),
        }
    }
}

/// Run jobs in order, each run of ban/unban requests as one batch.
fn run_jobs(
    fw: &mut dyn Firewall,
    jobs: Vec<Job>,
    cfg: &RwLock<Config>,
    outbox: &Outbox,
    open: &mut Openings,
) {
    let mut bans: Vec<(u64, Vec<BanChange>)> = Vec::new();
    for job in jobs {
        match job {
            Job::Ban { id, ips, timeout } => bans.push((
                id,
                ips.into_iter()
                    .map(|ip| BanChange::Ban(ip, timeout))
                    .collect(),
            )),
            Job::Unban { id, ips } => {
                bans.push((id, ips.into_iter().map(BanChange::Unban).collect()))
            }
            other => {
                apply_bans(fw, std::mem::take(&mut bans), outbox);
                match other {
                    Job::List { id } => outbox.reply(id, &list(fw)),
                    Job::Servers {
                        id,
                        balancer,
                        servers,
                    } => {
                        let now = cfg.read().unwrap_or_else(|p| p.into_inner()).clone();
                        outbox.reply(id, &open.serve(fw, &now, &balancer, &servers));
                    }
                    Job::Reload { path } => reload(fw, &path, cfg, outbox, open),
                    Job::Ban { .. } | Job::Unban { .. } => {}
                }
            }
        }
    }
    apply_bans(fw, bans, outbox);
}

/// One transaction for all the requests; if it fails, each request on its own, so each
/// gets its own answer (one bad request does not fail the others).
fn apply_bans(fw: &mut dyn Firewall, requests: Vec<(u64, Vec<BanChange>)>, outbox: &Outbox) {
    if requests.is_empty() {
        return;
    }
    let all: Vec<BanChange> = requests.iter().flat_map(|(_, c)| c.clone()).collect();
    let together = requests.len() > 1 && fw.change_bans(&all).is_ok();
    for (id, changes) in &requests {
        let res = if together {
            Ok(())
        } else {
            fw.change_bans(changes).map_err(|e| format!("{e:#}"))
        };
        match &res {
            Ok(()) => log_changes(changes),
            Err(e) => warn!(target: "fw", "refused: {e}"),
        }
        outbox.reply(*id, &res.map_or_else(Reply::Error, |()| Reply::Ok));
    }
}

fn log_changes(changes: &[BanChange]) {
    for c in changes {
        match c {
            BanChange::Ban(ip, timeout) => info!(target: "fw", %ip, timeout = ?timeout, "banned"),
            BanChange::Unban(ip) => info!(target: "fw", %ip, "unbanned"),
        }
    }
}

fn list(fw: &mut dyn Firewall) -> Reply {
    match fw.list_bans() {
        Ok(bans) => Reply::Bans(
            bans.into_iter()
                .map(|b| {
                    let ms = b
                        .timeout
                        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
                    (b.ip, ms)
                })
                .collect(),
        ),
        Err(e) => Reply::Error(format!("{e:#}")),
    }
}

/// SIGHUP: the file, validated against the running configuration; then the firewall (a
/// failure keeps the running configuration whole), the parent's copy, and the child.
fn reload(
    fw: &mut dyn Firewall,
    path: &Path,
    cfg: &RwLock<Config>,
    outbox: &Outbox,
    open: &mut Openings,
) {
    let old = cfg.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Some((new, text)) = read_and_check(path, &old) else {
        return;
    };
    if let Err(e) = reload_firewall(fw, &old, &new, open) {
        error!(target: "fw", "reload: {e}; keeping the running configuration");
        return;
    }
    *cfg.write().unwrap_or_else(|p| p.into_inner()) = new;
    let path = path.display().to_string();
    outbox.push(&Push::Reload { path, text });
}

/// The new configuration and its text, or None (every reason logged).
fn read_and_check(path: &Path, old: &Config) -> Option<(Config, String)> {
    let keeping = "keeping the running configuration";
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            error!(target: "priv", "reload: cannot read {}: {e}; {keeping}", path.display());
            return None;
        }
    };
    let new = match config::parse_str(&text, path) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                error!(target: "priv", "reload: {e}");
            }
            error!(target: "priv", "reload: {} error(s); {keeping}", errs.0.len());
            return None;
        }
    };
    let blocked = super::parent::restart_needed(old, &new);
    if !blocked.is_empty() {
        for b in &blocked {
            error!(target: "priv", "reload: {b}");
        }
        error!(target: "priv", "reload: these changes need a restart; nothing changed");
        return None;
    }
    Some((new, text))
}

/// Replace the ruleset when the new configuration builds a different one, keeping the bans
/// and the resolved server addresses the new configuration still allows (they go into the
/// same atomic install); otherwise drop from the set what it no longer allows.
fn reload_firewall(
    fw: &mut dyn Firewall,
    old: &Config,
    new: &Config,
    open: &mut Openings,
) -> Result<(), String> {
    if new
        .firewall
        .as_ref()
        .is_none_or(|f| f.backend == FirewallBackend::None)
    {
        return Ok(());
    }
    let build = |c: &Config| crate::firewall::build(c).map_err(|e| e.join("; "));
    let (old, mut rs) = (build(old)?, build(new)?);
    let refused = open.resolved.recheck(new, rs.back_prefixes());
    for r in refused {
        info!(target: "fw", "reload: a server address is no longer opened: {r}");
    }
    if old == rs {
        return open.sync(fw, &rs);
    }
    let started = Instant::now();
    rs.bans = fw.list_bans().map_err(|e| format!("{e:#}"))?;
    let want = open.wanted(&rs);
    rs.resolved = want.iter().copied().collect();
    fw.install(&rs)
        .map_err(|e| format!("cannot install the new firewall: {e:#}"))?;
    open.applied = if rs.back.is_some() {
        want
    } else {
        BTreeSet::new()
    };
    info!(target: "fw", bans = rs.bans.len(), ms = started.elapsed().as_millis() as u64,
        "firewall replaced (bans kept)");
    Ok(())
}
