//! Servers by name, resolved at run time by the child on its control-plane runtime with
//! hickory-resolver (async: the runtime thread never waits on a lookup). One task per
//! (name, preferred family), shared by every balancer whose servers use that name; the
//! decisions (which address, how long to trust it, when to give up) are [`state`]'s, this
//! module only asks and applies.

pub mod state;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
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

/// What the resolver tasks were started with: a change restarts them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Effective {
    nameservers: Vec<SocketAddr>,
    params: Params,
}

/// One name being resolved.
struct Name {
    targets: Targets,
    current: watch::Receiver<Option<IpAddr>>,
    task: tokio::task::JoinHandle<()>,
}

/// The child's resolver tasks.
pub struct Resolvers {
    system: Vec<SocketAddr>,
    /// Told after every address change (the child saves the state file).
    changed: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    effective: Option<Effective>,
    names: HashMap<Key, Name>,
}

impl Resolvers {
    /// `system`: the host's nameservers, read before the chroot.
    pub fn new(system: Vec<SocketAddr>) -> Self {
        Resolvers {
            system,
            changed: None,
            effective: None,
            names: HashMap::new(),
        }
    }

    /// Send a message on `changed` after every address change the tasks apply.
    pub fn notify_changes(&mut self, changed: tokio::sync::mpsc::UnboundedSender<()>) {
        self.changed = Some(changed);
    }

    /// Resolve the server names of `cfg` for the running balancers `lbs` (at start and after
    /// a reload): new names get a task, gone ones lose theirs, and a name that stays hands
    /// its current address to servers a reload added. Call on the runtime.
    pub fn update(&mut self, cfg: &Config, lbs: &[Arc<Balancer>]) {
        let wanted = wanted(cfg, lbs);
        let nameservers = if cfg.resolver.nameservers.is_empty() {
            self.system.clone()
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
        };
        if !wanted.is_empty() && effective.nameservers.is_empty() {
            warn!(target: "lb", "no nameserver ([resolver] nameservers is empty and {RESOLV_CONF} lists none): servers given by name stay unresolved");
        }
        // New nameservers or holds: restart every task from the address it had.
        let mut seeds = HashMap::new();
        if self.effective.as_ref() != Some(&effective) {
            for (key, n) in self.names.drain() {
                n.task.abort();
                seeds.insert(key, *n.current.borrow());
            }
            self.effective = Some(effective.clone());
        }
        self.names.retain(|key, n| {
            let keep = wanted.contains_key(key);
            if !keep {
                n.task.abort();
            }
            keep
        });
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
            let name = spawn(&key, &effective, seed, lbs, self.changed.clone());
            self.names.insert(key, name);
        }
    }

    /// Stop every lookup (the child is stopping).
    pub fn stop(&mut self) {
        for (_, n) in self.names.drain() {
            n.task.abort();
        }
        self.changed = None;
    }
}

impl Drop for Resolvers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every (name, family) of `cfg` with the running balancers that have servers of that name.
fn wanted(cfg: &Config, lbs: &[Arc<Balancer>]) -> HashMap<Key, Vec<Arc<Balancer>>> {
    let mut wanted: HashMap<Key, Vec<Arc<Balancer>>> = HashMap::new();
    for b in &cfg.balancers {
        let Some(lb) = lbs.iter().find(|l| l.cfg.name == b.name) else {
            continue;
        };
        for host in b.servers.iter().filter_map(|s| s.name.as_ref()) {
            let list = wanted.entry((host.clone(), b.resolve_prefer)).or_default();
            if !list.iter().any(|l| Arc::ptr_eq(l, lb)) {
                list.push(lb.clone());
            }
        }
    }
    wanted
}

fn spawn(
    key: &Key,
    eff: &Effective,
    seed: Option<IpAddr>,
    lbs: Vec<Arc<Balancer>>,
    changed: Option<tokio::sync::mpsc::UnboundedSender<()>>,
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
    changed: Option<tokio::sync::mpsc::UnboundedSender<()>>,
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
        if !next.refused.is_empty() && !refused_logged {
            warn!(target: "lb", server = %host, "refused address(es) {:?} for a server (unspecified, multicast or broadcast)", next.refused);
        }
        refused_logged = !next.refused.is_empty();
        log_episode(&host, &st, &next.state, &outcome, &params);
        if next.state.current != st.current {
            tx.send_replace(next.state.current);
            apply(&host, next.state.current, &targets);
            if let Some(c) = &changed {
                let _ = c.send(());
            }
        }
        st = next.state;
        tokio::time::sleep_until(next.next_query.into()).await;
    }
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

/// `fwlb check`: one warning per server name that does not resolve now through the nameservers
/// `cfg` would use (never an error: such a server starts `unresolved`). Blocking: runs its own
/// runtime.
pub fn check_names(cfg: &Config) -> Vec<String> {
    let mut hosts: Vec<(String, Prefer)> = Vec::new();
    for b in &cfg.balancers {
        for host in b.servers.iter().filter_map(|s| s.name.as_ref()) {
            if !hosts
                .iter()
                .any(|(h, p)| h == host && *p == b.resolve_prefer)
            {
                hosts.push((host.clone(), b.resolve_prefer));
            }
        }
    }
    if hosts.is_empty() {
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
    rt.block_on(async {
        // All names at once: a check with many dead names waits one lookup timeout, not many.
        let lookups: Vec<_> = hosts
            .into_iter()
            .map(|(host, prefer)| {
                let r = build(&nameservers, prefer, cfg.resolver.hold_valid);
                tokio::spawn(async move {
                    let outcome = match r {
                        Ok(r) => lookup(&r, &host).await,
                        Err(e) => Outcome::Failed(e),
                    };
                    (host, outcome)
                })
            })
            .collect();
        let mut notes = Vec::new();
        for l in lookups {
            let Ok((host, outcome)) = l.await else {
                continue;
            };
            let good = matches!(&outcome, Outcome::Answer { addrs, .. } if addrs.iter().any(|a| state::acceptable(*a)));
            if !good {
                let why = match outcome {
                    Outcome::Failed(why) => why,
                    Outcome::Answer { .. } => "no usable address".into(),
                };
                notes.push(format!(
                    "server name {host:?} does not resolve now ({why}): its servers start unresolved and join when it does"
                ));
            }
        }
        notes
    })
}
