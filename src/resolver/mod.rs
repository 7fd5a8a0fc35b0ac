//! Servers by name, resolved at run time by the child on its control-plane runtime with
//! hickory-resolver (async: the runtime thread never waits on a lookup). One task per
//! (name, preferred family), shared by every balancer whose servers use that name (the
//! emergency server's and SRV targets' included), and one task per balancer `servers_srv`
//! name, whose targets become servers and so names to look up. The decisions (which
//! address, which targets, how long to trust an answer, when to give up) are [`state`]'s and
//! [`srv`]'s; this module only asks and applies.

pub mod srv;
pub mod state;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::balancer::Balancer;
use crate::config::Config;
use crate::config::resolver::Prefer;
use state::{NameState, Outcome, Params};

/// Between lookups of a name that fails (HAProxy's `timeout retry`).
const RETRY: Duration = Duration::from_secs(1);
/// One lookup, every nameserver and attempt included.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the host's nameservers come from when `[resolver] nameservers` is empty. The parent
/// reads it before the chroot (the child cannot afterwards).
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The host's nameservers (empty when /etc/resolv.conf is missing or lists none). Blocking.
pub fn system_nameservers() -> Vec<SocketAddr> {
    std::fs::read_to_string(RESOLV_CONF)
        .map(|t| crate::config::resolver::nameservers_of_resolv_conf(&t))
        .unwrap_or_default()
}

type Key = (String, Prefer);
type Targets = Arc<Mutex<Vec<Arc<Balancer>>>>;
/// A balancer's SRV lookup: (balancer, SRV name).
type SrvKey = (String, String);
type Changed = Vec<tokio::sync::mpsc::UnboundedSender<()>>;

/// What the resolver tasks were started with: a change restarts them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Effective {
    nameservers: Vec<SocketAddr>,
    params: Params,
    hold_obsolete: Duration,
}

/// One name being resolved.
struct Name {
    targets: Targets,
    current: watch::Receiver<Option<IpAddr>>,
    task: tokio::task::JoinHandle<()>,
}

/// The child's resolver tasks. A cheap handle: clones share the tasks (an SRV task adds
/// and removes the name tasks of its targets through one).
#[derive(Clone)]
pub struct Resolvers {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    system: Vec<SocketAddr>,
    /// Told after every address or SRV target change (the child saves the state file and
    /// tells the parent the addresses for the firewall).
    changed: Changed,
    effective: Option<Effective>,
    /// The running balancers, whose servers' names are looked up.
    lbs: Vec<Arc<Balancer>>,
    names: HashMap<Key, Name>,
    srvs: HashMap<SrvKey, tokio::task::JoinHandle<()>>,
}

impl Resolvers {
    /// `system`: the host's nameservers, read before the chroot.
    pub fn new(system: Vec<SocketAddr>) -> Self {
        Resolvers {
            inner: Arc::new(Mutex::new(Inner {
                system,
                changed: Vec::new(),
                effective: None,
                lbs: Vec::new(),
                names: HashMap::new(),
                srvs: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Send a message on `changed` after every change the tasks apply.
    pub fn notify_changes(&self, changed: tokio::sync::mpsc::UnboundedSender<()>) {
        self.lock().changed.push(changed);
    }

    /// Resolve the server names and SRV names of `cfg` for the running balancers `lbs` (at
    /// start and after a reload): new names get a task, gone ones lose theirs, and a name
    /// that stays hands its current address to servers a reload added. Call on the runtime.
    pub fn update(&self, cfg: &Config, lbs: &[Arc<Balancer>]) {
        let mut inner = self.lock();
        let nameservers = if cfg.resolver.nameservers.is_empty() {
            inner.system.clone()
        } else {
            cfg.resolver.nameservers.clone()
        };
        let effective = Effective {
            nameservers,
            params: Params {
                hold_valid: cfg.resolver.hold_valid,
                hold_nx: cfg.resolver.hold_nx,
                retry: RETRY,
            },
            hold_obsolete: cfg.resolver.hold_obsolete,
        };
        let by_name = cfg.balancers.iter().any(|b| {
            b.servers_srv.is_some()
                || b.servers
                    .iter()
                    .chain(b.emergency.iter())
                    .any(|s| s.name.is_some())
        });
        if by_name && effective.nameservers.is_empty() {
            warn!(target: "lb", "no nameserver ([resolver] nameservers is empty and {RESOLV_CONF} lists none): servers given by name stay unresolved");
        }
        inner.lbs = lbs.to_vec();
        // New nameservers or holds: restart every task from where it was.
        let mut seeds = HashMap::new();
        if inner.effective.as_ref() != Some(&effective) {
            for (key, n) in inner.names.drain() {
                n.task.abort();
                seeds.insert(key, *n.current.borrow());
            }
            for (_, t) in inner.srvs.drain() {
                t.abort();
            }
            inner.effective = Some(effective);
        }
        let weak = Arc::downgrade(&self.inner);
        inner.update_srvs(cfg, &weak);
        inner.refresh_names(&seeds);
        // A reload may have given servers an address (or taken them away).
        tell(&inner.changed);
    }

    /// Stop every lookup (the child is stopping).
    pub fn stop(&self) {
        let mut inner = self.lock();
        for (_, n) in inner.names.drain() {
            n.task.abort();
        }
        for (_, t) in inner.srvs.drain() {
            t.abort();
        }
        inner.changed.clear();
    }
}

impl Inner {
    /// One SRV task per balancer with `servers_srv`, started from the targets its servers
    /// hold (restored from the state file, or kept across a reload).
    fn update_srvs(&mut self, cfg: &Config, weak: &Weak<Mutex<Inner>>) {
        let mut wanted: HashMap<SrvKey, Arc<Balancer>> = HashMap::new();
        for b in &cfg.balancers {
            let (Some(srv), Some(lb)) = (
                &b.servers_srv,
                self.lbs.iter().find(|l| l.cfg.name == b.name),
            ) else {
                continue;
            };
            wanted.insert((b.name.clone(), srv.clone()), lb.clone());
        }
        self.srvs.retain(|key, t| {
            let keep = wanted.contains_key(key);
            if !keep {
                t.abort();
            }
            keep
        });
        let Some(eff) = self.effective.clone() else {
            return;
        };
        for (key, lb) in wanted {
            if self.srvs.contains_key(&key) {
                continue;
            }
            let task = spawn_srv(&key.1, &eff, lb, weak.clone(), self.changed.clone());
            self.srvs.insert(key, task);
        }
    }

    /// Look up every name the running balancers' servers have now (those of SRV targets
    /// included): new names get a task, gone ones lose theirs, and a name that stays hands
    /// its current address to servers that joined it. `seeds`: addresses of restarted tasks.
    fn refresh_names(&mut self, seeds: &HashMap<Key, Option<IpAddr>>) {
        let wanted = wanted(&self.lbs);
        self.names.retain(|key, n| {
            let keep = wanted.contains_key(key);
            if !keep {
                n.task.abort();
            }
            keep
        });
        let Some(eff) = self.effective.clone() else {
            return;
        };
        for (key, lbs) in wanted {
            if let Some(n) = self.names.get(&key) {
                *n.targets.lock().unwrap_or_else(|e| e.into_inner()) = lbs;
                apply(&key.0, *n.current.borrow(), &n.targets);
                continue;
            }
            // The address it had (new nameservers), or one a server of that name already has
            // (restored from the state file).
            let seed = seeds
                .get(&key)
                .copied()
                .flatten()
                .or_else(|| lbs.iter().find_map(|lb| lb.resolved_address(&key.0)));
            let name = spawn(&key, &eff, seed, lbs, self.changed.clone());
            self.names.insert(key, name);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, n) in self.names.drain() {
            n.task.abort();
        }
        for (_, t) in self.srvs.drain() {
            t.abort();
        }
    }
}

/// Every (name, family) the running balancers' servers use, with the balancers using it.
fn wanted(lbs: &[Arc<Balancer>]) -> HashMap<Key, Vec<Arc<Balancer>>> {
    let mut wanted: HashMap<Key, Vec<Arc<Balancer>>> = HashMap::new();
    for lb in lbs {
        for host in lb.server_names() {
            let list = wanted.entry((host, lb.cfg.resolve_prefer)).or_default();
            if !list.iter().any(|l| Arc::ptr_eq(l, lb)) {
                list.push(lb.clone());
            }
        }
    }
    wanted
}

fn tell(changed: &Changed) {
    for c in changed {
        let _ = c.send(());
    }
}

fn spawn(
    key: &Key,
    eff: &Effective,
    seed: Option<IpAddr>,
    lbs: Vec<Arc<Balancer>>,
    changed: Changed,
) -> Name {
    let targets: Targets = Arc::new(Mutex::new(lbs));
    let (tx, current) = watch::channel(seed);
    let resolver = build(&eff.nameservers, key.1, eff.params.hold_valid);
    let (host, params, t) = (key.0.clone(), eff.params, targets.clone());
    let task = tokio::spawn(async move {
        match resolver {
            Ok(r) => resolve_forever(host, r, params, seed, t, tx, changed).await,
            Err(e) => {
                warn!(target: "lb", server = %host, "cannot set up the resolver: {e}; the name stays unresolved")
            }
        }
    });
    Name {
        targets,
        current,
        task,
    }
}

/// The task of `lb`'s SRV name `srv`.
fn spawn_srv(
    srv: &str,
    eff: &Effective,
    lb: Arc<Balancer>,
    resolvers: Weak<Mutex<Inner>>,
    changed: Changed,
) -> tokio::task::JoinHandle<()> {
    let resolver = build(&eff.nameservers, Prefer::Ipv4, eff.params.hold_valid);
    let (srv, eff) = (srv.to_string(), eff.clone());
    tokio::spawn(async move {
        match resolver {
            Ok(r) => {
                let job = SrvJob {
                    srv,
                    resolver: r,
                    eff,
                    lb,
                    resolvers,
                    changed,
                };
                job.run().await
            }
            Err(e) => {
                warn!(target: "lb", srv = %srv, "cannot set up the resolver: {e}; no server from it")
            }
        }
    })
}

/// A resolver asking `nameservers` (UDP, then TCP for truncated answers), never /etc/hosts
/// (not readable in the chroot), with answers cached no longer than `hold_valid`.
fn build(
    nameservers: &[SocketAddr],
    prefer: Prefer,
    hold_valid: Duration,
) -> Result<TokioResolver, String> {
    let servers = nameservers
        .iter()
        .map(|a| {
            let conns = [ConnectionConfig::udp(), ConnectionConfig::tcp()].map(|mut c| {
                c.port = a.port();
                c
            });
            NameServerConfig::new(a.ip(), true, conns.to_vec())
        })
        .collect();
    let config = ResolverConfig::from_name_servers(servers);
    let mut b = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let o = b.options_mut();
    o.timeout = Duration::from_secs(1);
    o.attempts = 2;
    o.use_hosts_file = ResolveHosts::Never;
    o.ip_strategy = match prefer {
        Prefer::Ipv4 => LookupIpStrategy::Ipv4thenIpv6,
        Prefer::Ipv6 => LookupIpStrategy::Ipv6thenIpv4,
    };
    o.positive_max_ttl = Some(hold_valid);
    o.negative_max_ttl = Some(state::MIN_HOLD);
    b.build().map_err(|e| e.to_string())
}

/// Look `host` up, apply the outcome, sleep until the next lookup; until aborted.
async fn resolve_forever(
    host: String,
    resolver: TokioResolver,
    params: Params,
    seed: Option<IpAddr>,
    targets: Targets,
    tx: watch::Sender<Option<IpAddr>>,
    changed: Changed,
) {
    let mut st = NameState {
        current: seed,
        last_good: seed.map(|_| Instant::now()),
        ..NameState::default()
    };
    let mut refused_logged = false;
    loop {
        // Each lookup asks the nameservers: our own state decides how long to trust answers.
        resolver.clear_cache();
        let outcome = lookup(&resolver, &host).await;
        let now = Instant::now();
        let next = state::step(&st, &outcome, now, &params);
        if !next.refused.is_empty() {
            count_refused(&targets, next.refused.len());
            if !refused_logged {
                warn!(target: "lb", server = %host, "refused address(es) {:?} for a server (unspecified, multicast or broadcast)", next.refused);
            }
        }
        refused_logged = !next.refused.is_empty();
        log_episode(&host, &st, &next.state, &outcome, &params);
        if next.state.current != st.current {
            tx.send_replace(next.state.current);
            apply(&host, next.state.current, &targets);
            tell(&changed);
        }
        st = next.state;
        tokio::time::sleep_until(next.next_query.into()).await;
    }
}

/// Count `n` refused records or addresses on every balancer of `targets`.
fn count_refused(targets: &Targets, n: usize) {
    for lb in targets.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        lb.stats
            .dns_refused
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A balancer's `servers_srv` lookups.
struct SrvJob {
    srv: String,
    resolver: TokioResolver,
    eff: Effective,
    lb: Arc<Balancer>,
    resolvers: Weak<Mutex<Inner>>,
    changed: Changed,
}

impl SrvJob {
    /// Look the SRV name up, give the balancer its targets, have their names looked up,
    /// sleep until the next lookup; until aborted.
    async fn run(self) {
        let p = &self.eff.params;
        let mut st = srv::SrvState {
            targets: self.lb.srv_targets(Instant::now()),
            failing_since: None,
        };
        let mut refused_logged: Vec<String> = Vec::new();
        loop {
            self.resolver.clear_cache();
            let outcome = lookup_srv(&self.resolver, &self.srv).await;
            let now = Instant::now();
            let next = srv::step(&st, &outcome, now, p, self.eff.hold_obsolete);
            self.refused(&next.refused, &mut refused_logged);
            self.log_episode(&st, &next.state, &outcome);
            if next.state.targets != st.targets {
                self.apply(&next.state.targets);
            }
            st = next.state;
            tokio::time::sleep_until(next.next_query.into()).await;
        }
    }

    /// Count refused records; log them when they differ from the last answer's.
    fn refused(&self, refused: &[String], logged: &mut Vec<String>) {
        if refused.is_empty() {
            logged.clear();
            return;
        }
        self.lb
            .stats
            .dns_refused
            .fetch_add(refused.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if logged.as_slice() != refused {
            warn!(target: "lb", balancer = %self.lb.cfg.name, srv = %self.srv,
                "refused SRV record(s): {}", refused.join("; "));
            *logged = refused.to_vec();
        }
    }

    fn apply(&self, targets: &[srv::Target]) {
        let notes = self.lb.set_srv_targets(&self.srv, targets);
        for note in &notes {
            info!(target: "lb", balancer = %self.lb.cfg.name, "{note}");
        }
        // New targets are names to look up, gone ones no longer.
        if let Some(inner) = self.resolvers.upgrade() {
            inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .refresh_names(&HashMap::new());
        }
        tell(&self.changed);
    }

    /// One line when lookups start failing, and one when they work again.
    fn log_episode(&self, before: &srv::SrvState, after: &srv::SrvState, o: &srv::Outcome) {
        let (lb, name) = (&self.lb.cfg.name, &self.srv);
        match (before.failing_since, after.failing_since, o) {
            (None, Some(_), srv::Outcome::Failed(why)) => {
                warn!(target: "lb", balancer = %lb, srv = %name,
                "lookup failed ({why}): keeping its {} server(s) for up to {}", after.targets.len(),
                crate::config::duration::format(self.eff.params.hold_nx))
            }
            (None, Some(_), _) => warn!(target: "lb", balancer = %lb, srv = %name,
                "no usable SRV record: keeping its servers for up to {}", crate::config::duration::format(self.eff.params.hold_nx)),
            (Some(_), None, _) => {
                info!(target: "lb", balancer = %lb, srv = %name, "lookups answer again")
            }
            _ => {}
        }
    }
}

/// One SRV lookup.
async fn lookup_srv(resolver: &TokioResolver, name: &str) -> srv::Outcome {
    let asked = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.srv_lookup(format!("{name}.")));
    match asked.await {
        Err(_) => srv::Outcome::Failed(format!(
            "no answer within {}",
            crate::config::duration::format(LOOKUP_TIMEOUT)
        )),
        Ok(Err(e)) if e.is_nx_domain() => srv::Outcome::Failed("NXDOMAIN".into()),
        Ok(Err(e)) if e.is_no_records_found() => srv::Outcome::Failed("no SRV record".into()),
        Ok(Err(e)) => srv::Outcome::Failed(e.to_string()),
        Ok(Ok(answer)) => {
            let records = srv_records(&answer);
            // SRV records of other names only: nothing answers the question asked.
            if records.is_empty() {
                return srv::Outcome::Failed("no SRV record for the name asked".into());
            }
            let ttl = answer.valid_until();
            srv::Outcome::Answer {
                records,
                ttl: ttl.saturating_duration_since(Instant::now()),
            }
        }
    }
}

/// The SRV records of an answer that belong to the name asked, directly or through a CNAME
/// of the same answer: records for any other name are not the answer to this question.
fn srv_records(answer: &hickory_resolver::lookup::Lookup) -> Vec<srv::Record> {
    use hickory_resolver::proto::rr::RData;
    let mut owners = vec![answer.query().name().clone()];
    for r in answer.answers() {
        if let RData::CNAME(c) = &r.data
            && owners.contains(&r.name)
        {
            owners.push(c.0.clone());
        }
    }
    answer
        .answers()
        .iter()
        .filter(|r| owners.contains(&r.name))
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(srv::Record {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: s.target.to_ascii(),
            }),
            _ => None,
        })
        .collect()
}

/// One line when lookups of a name start failing, and one when they work again.
fn log_episode(host: &str, before: &NameState, after: &NameState, o: &Outcome, p: &Params) {
    match (before.failing_since, after.failing_since, o) {
        (None, Some(_), Outcome::Failed(why)) => match after.current {
            Some(ip) => warn!(target: "lb", server = %host,
                "lookup failed ({why}): keeping {ip} for up to {}", crate::config::duration::format(p.hold_nx)),
            None => warn!(target: "lb", server = %host, "lookup failed ({why}): unresolved"),
        },
        (Some(_), None, _) => info!(target: "lb", server = %host, "lookups answer again"),
        _ => {}
    }
}

async fn lookup(resolver: &TokioResolver, host: &str) -> Outcome {
    // The trailing dot: one query for the name as written, no search domains.
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(format!("{host}."))).await {
        Err(_) => Outcome::Failed(format!(
            "no answer within {}",
            crate::config::duration::format(LOOKUP_TIMEOUT)
        )),
        Ok(Err(e)) if e.is_nx_domain() => Outcome::Failed("NXDOMAIN".into()),
        Ok(Err(e)) if e.is_no_records_found() => Outcome::Failed("no A/AAAA record".into()),
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Ok(Ok(answer)) => Outcome::Answer {
            addrs: answer.iter().collect(),
            ttl: answer
                .valid_until()
                .saturating_duration_since(Instant::now()),
        },
    }
}

/// Give every balancer of `targets` the name's address (None: unresolved), logging changes.
fn apply(host: &str, ip: Option<IpAddr>, targets: &Targets) {
    let lbs = targets.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for lb in lbs {
        for note in lb.set_resolved(host, ip) {
            info!(target: "lb", balancer = %lb.cfg.name, "{note}");
        }
    }
}

/// `fwlb check`: one warning per server name (the emergency server's included) or SRV name
/// that does not resolve now through the nameservers `cfg` would use (never an error: such a
/// server starts `unresolved`, an SRV name without its servers). Blocking: runs its own
/// runtime.
pub fn check_names(cfg: &Config) -> Vec<String> {
    let mut hosts: Vec<(String, Prefer)> = Vec::new();
    let mut srvs: Vec<String> = Vec::new();
    for b in &cfg.balancers {
        for host in b
            .servers
            .iter()
            .chain(b.emergency.iter())
            .filter_map(|s| s.name.as_ref())
        {
            if !hosts
                .iter()
                .any(|(h, p)| h == host && *p == b.resolve_prefer)
            {
                hosts.push((host.clone(), b.resolve_prefer));
            }
        }
        srvs.extend(
            b.servers_srv
                .iter()
                .filter(|n| !srvs.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    if hosts.is_empty() && srvs.is_empty() {
        return Vec::new();
    }
    let nameservers = if cfg.resolver.nameservers.is_empty() {
        system_nameservers()
    } else {
        cfg.resolver.nameservers.clone()
    };
    if nameservers.is_empty() {
        return vec![format!(
            "no nameserver ([resolver] nameservers is empty and {RESOLV_CONF} lists none): servers given by name will stay unresolved"
        )];
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![format!("cannot check server names: {e}")],
    };
    let hold = cfg.resolver.hold_valid;
    rt.block_on(async {
        // All names at once: a check with many dead names waits one lookup timeout, not many.
        let mut lookups = Vec::new();
        for (host, prefer) in hosts {
            let r = build(&nameservers, prefer, hold);
            lookups.push(tokio::spawn(async move { check_name(r, host).await }));
        }
        for name in srvs {
            let r = build(&nameservers, Prefer::Ipv4, hold);
            lookups.push(tokio::spawn(async move { check_srv(r, name).await }));
        }
        let mut notes = Vec::new();
        for l in lookups {
            if let Ok(Some(note)) = l.await {
                notes.push(note);
            }
        }
        notes
    })
}

/// `fwlb check`'s warning for a server name that does not resolve now.
async fn check_name(r: Result<TokioResolver, String>, host: String) -> Option<String> {
    let outcome = match r {
        Ok(r) => lookup(&r, &host).await,
        Err(e) => Outcome::Failed(e),
    };
    let why = match outcome {
        Outcome::Answer { addrs, .. } if addrs.iter().any(|a| state::acceptable(*a)) => {
            return None;
        }
        Outcome::Failed(why) => why,
        Outcome::Answer { .. } => "no usable address".into(),
    };
    Some(format!(
        "server name {host:?} does not resolve now ({why}): its servers start unresolved and join when it does"
    ))
}

/// `fwlb check`'s warning for an SRV name that gives no server now.
async fn check_srv(r: Result<TokioResolver, String>, name: String) -> Option<String> {
    let outcome = match r {
        Ok(r) => lookup_srv(&r, &name).await,
        Err(e) => srv::Outcome::Failed(e),
    };
    let why = match &outcome {
        srv::Outcome::Failed(why) => why.clone(),
        srv::Outcome::Answer { records, .. } => {
            let p = Params {
                hold_valid: MIN_ANSWER,
                hold_nx: MIN_ANSWER,
                retry: MIN_ANSWER,
            };
            let st = srv::step(
                &Default::default(),
                &outcome,
                Instant::now(),
                &p,
                MIN_ANSWER,
            );
            if !st.state.targets.is_empty() {
                return None;
            }
            format!("{} record(s), no usable target", records.len())
        }
    };
    Some(format!(
        "SRV name {name:?} gives no server now ({why}): its balancer takes the targets when it does"
    ))
}

/// Any duration for a one-off step of `fwlb check` (only the targets matter there).
const MIN_ANSWER: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    //! Lookups against a fake nameserver on loopback that answers what each test says, the
    //! way a broken or hostile one would.

    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use hickory_resolver::proto::op::{Message, OpCode};
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use hickory_resolver::proto::rr::{Name, RData, Record};
    use tokio::net::UdpSocket;

    use super::*;

    /// What the fake nameserver does with a query: the answer records (for the name asked
    /// unless a record says otherwise), and how to spoil the reply.
    #[derive(Clone, Default)]
    struct Script {
        answers: Vec<Record>,
        wrong_id: bool,
        truncated: bool,
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn srv_rec(owner: &str, prio: u16, weight: u16, port: u16, target: &str) -> Record {
        Record::from_rdata(
            name(owner),
            5,
            RData::SRV(SRV::new(prio, weight, port, name(target))),
        )
    }

    /// A nameserver on 127.0.0.1 (UDP only: a truncated answer has no TCP to fall back to).
    async fn fake_dns(script: Arc<Mutex<Script>>) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let sc = script.lock().unwrap().clone();
                let id = q.metadata.id.wrapping_add(u16::from(sc.wrong_id));
                let mut r = Message::response(id, OpCode::Query);
                r.metadata.truncation = sc.truncated;
                r.metadata.recursion_available = true;
                r.add_queries(q.queries.clone());
                r.add_answers(sc.answers);
                let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
            }
        });
        addr
    }

    async fn srv_outcome(sc: Script) -> (srv::Outcome, Duration) {
        let dns = fake_dns(Arc::new(Mutex::new(sc))).await;
        let r = build(&[dns], Prefer::Ipv4, Duration::from_secs(300)).unwrap();
        let t0 = Instant::now();
        let o = lookup_srv(&r, "_http._tcp.app.test").await;
        (o, t0.elapsed())
    }

    const Q: &str = "_http._tcp.app.test.";

    #[tokio::test]
    async fn an_srv_answer_gives_its_records() {
        let sc = Script {
            answers: vec![
                srv_rec(Q, 10, 60, 8080, "a.app.test."),
                srv_rec(Q, 20, 0, 8081, "b.app.test."),
            ],
            ..Script::default()
        };
        let (o, _) = srv_outcome(sc).await;
        let srv::Outcome::Answer { records, ttl } = o else {
            panic!("{o:?}")
        };
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].priority, records[0].weight, records[0].port),
            (10, 60, 8080)
        );
        assert_eq!(records[0].target, "a.app.test.");
        assert!(ttl <= Duration::from_secs(5));
    }

    #[tokio::test]
    async fn records_of_another_name_are_not_an_answer() {
        let sc = Script {
            answers: vec![srv_rec("_http._tcp.evil.test.", 0, 1, 80, "evil.test.")],
            ..Script::default()
        };
        // hickory drops them already (no record found); our own filter would too.
        let (o, _) = srv_outcome(sc).await;
        assert!(
            matches!(&o, srv::Outcome::Failed(why) if why.starts_with("no SRV record")),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn a_reply_with_the_wrong_id_is_ignored_and_the_lookup_times_out() {
        let sc = Script {
            answers: vec![srv_rec(Q, 0, 1, 80, "a.app.test.")],
            wrong_id: true,
            ..Script::default()
        };
        let (o, took) = srv_outcome(sc).await;
        assert!(matches!(o, srv::Outcome::Failed(_)), "{o:?}");
        assert!(
            took <= LOOKUP_TIMEOUT + Duration::from_secs(1),
            "bounded: {took:?}"
        );
    }

    #[tokio::test]
    async fn a_truncated_answer_without_tcp_is_bounded() {
        let answers: Vec<Record> = (0..3)
            .map(|i| srv_rec(Q, 0, 1, 80, &format!("t{i}.app.test.")))
            .collect();
        let sc = Script {
            answers,
            truncated: true,
            ..Script::default()
        };
        let (o, took) = srv_outcome(sc).await;
        assert!(
            took <= LOOKUP_TIMEOUT + Duration::from_secs(1),
            "bounded: {took:?}"
        );
        // hickory retries over TCP (refused here): a failure, or at most what was sent.
        if let srv::Outcome::Answer { records, .. } = o {
            assert!(records.len() <= 3);
        }
    }

    #[tokio::test]
    async fn unusable_targets_and_addresses_are_refused() {
        let sc = Script {
            answers: vec![
                srv_rec(Q, 0, 1, 0, "zero.app.test."),
                srv_rec(Q, 0, 1, 80, "a.app.test."),
            ],
            ..Script::default()
        };
        let (o, _) = srv_outcome(sc).await;
        let p = Params {
            hold_valid: Duration::from_secs(300),
            hold_nx: Duration::from_secs(30),
            retry: RETRY,
        };
        let st = srv::step(&Default::default(), &o, Instant::now(), &p, Duration::ZERO);
        assert_eq!(st.state.targets.len(), 1);
        assert_eq!(st.refused, ["0 1 0 zero.app.test.: port 0"]);
        // A target whose A record is 0.0.0.0: refused for the server.
        let a = Record::from_rdata(name("a.app.test."), 5, RData::A(A(Ipv4Addr::UNSPECIFIED)));
        let dns = fake_dns(Arc::new(Mutex::new(Script {
            answers: vec![a],
            ..Script::default()
        })))
        .await;
        let r = build(&[dns], Prefer::Ipv4, Duration::from_secs(300)).unwrap();
        let o = lookup(&r, "a.app.test").await;
        let s = state::step(&Default::default(), &o, Instant::now(), &p);
        assert_eq!(s.refused, [std::net::IpAddr::from(Ipv4Addr::UNSPECIFIED)]);
        assert_eq!(s.state.current, None);
    }

    #[test]
    fn only_records_of_the_name_asked_or_its_cname_count() {
        use hickory_resolver::proto::op::Query;
        use hickory_resolver::proto::rr::RecordType;
        use hickory_resolver::proto::rr::rdata::CNAME;
        let q = Query::query(name(Q), RecordType::SRV);
        let alias = Record::from_rdata(name(Q), 5, RData::CNAME(CNAME(name("_svc.other.test."))));
        let answer = hickory_resolver::lookup::Lookup::new_with_max_ttl(
            q,
            [
                alias,
                srv_rec("_svc.other.test.", 0, 1, 80, "via-cname.test."),
                srv_rec(Q, 0, 1, 81, "direct.test."),
                srv_rec("_http._tcp.evil.test.", 0, 1, 82, "evil.test."),
            ],
        );
        let targets: Vec<String> = srv_records(&answer).into_iter().map(|r| r.target).collect();
        assert_eq!(targets, ["via-cname.test.", "direct.test."]);
    }
}
