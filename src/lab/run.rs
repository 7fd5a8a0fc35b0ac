//! `fwlb lab [DIR]`: the whole pair on one machine. Build the network the two host
//! configurations describe (topo), start mock servers and both daemons in it (netns), check
//! the traffic through every VIP, run the failover drills under a load loop (probe, drill),
//! report (report), and tear everything down on exit, on Ctrl-C, or on the next run after a
//! crash of the lab itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use super::drill::{self, Kind, Outcome};
use super::interrupt::{interrupted, pause, watch_signals};
use super::netns::{self, Net};
use super::probe::{self, Aim, Load, LoadSpec, Req, States, Watcher};
use super::report::{self, Report, Traffic};
use super::topo::{self, Topology};
use crate::config::{Algorithm, ProxyProtocol};

mod servers_lost;

pub struct Options {
    /// None: conf/lab here, else the built-in pair.
    pub dir: Option<PathBuf>,
    pub json: bool,
    pub keep: bool,
    pub clean: bool,
    /// Run only these drills (by name); None: all.
    pub drills: Option<Vec<String>>,
}

/// Control ports are polled this often during a drill.
const POLL: Duration = Duration::from_millis(5);
/// The load loop: one request every 10 ms, each within 2 s (a SYN lost in a failover is
/// retransmitted after 1 s and still counts as answered, as slow).
const LOAD_EVERY: Duration = Duration::from_millis(10);
const REQ_TIMEOUT: Duration = Duration::from_secs(2);
const LOAD_MAX: usize = 1000;
const LOAD_LIMIT: Duration = Duration::from_secs(10);
/// Load before the fault (the pair must be serving), and after recovery.
const BASELINE: Duration = Duration::from_millis(300);
const AFTER: Duration = Duration::from_millis(300);
/// A drill gives up this long after the fault (or a second after its budget).
const DRILL_LIMIT: Duration = Duration::from_secs(5);
/// How long the pair may take to settle after a start or a repair.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

fn have(cmd: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .any(|d| Path::new(d).join(cmd).is_file())
}

/// iproute2 (and nftables when a host has `[firewall] backend = "nftables"`): installed with
/// apt-get when missing and root, else named exactly. Err: the exit code.
fn prerequisites(nft: bool) -> Result<(), i32> {
    let mut need = Vec::new();
    if !have("ip") {
        need.push("iproute2");
    }
    if nft && !have("nft") {
        need.push("nftables");
    }
    let root = crate::sys::process::is_root();
    if !need.is_empty() {
        let cmd = format!("apt-get update && apt-get install -y {}", need.join(" "));
        if !root || !have("apt-get") {
            eprintln!(
                "fwlb lab needs {} (not installed); as root: {cmd}",
                need.join(" and ")
            );
            return Err(1);
        }
        eprintln!("fwlb lab: installing {} ({cmd})", need.join(" "));
        let ok = std::process::Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
            && std::process::Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&need)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success());
        if !ok
            || need
                .iter()
                .any(|p| !have(if *p == "iproute2" { "ip" } else { "nft" }))
        {
            eprintln!("fwlb lab: the installation failed; run: {cmd}");
            return Err(1);
        }
    }
    if !root {
        eprintln!(
            "fwlb lab needs root (it creates network namespaces): sudo {} lab",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "fwlb".into())
        );
        return Err(1);
    }
    Ok(())
}

/// The shipped pair (conf/lab), for a binary run away from its source tree.
const BUILT_IN: [(&str, &str); 2] = [
    ("fwlb-a.toml", include_str!("../../conf/lab/fwlb-a.toml")),
    ("fwlb-b.toml", include_str!("../../conf/lab/fwlb-b.toml")),
];

/// The directory given, else conf/lab here, else the built-in pair written out.
fn lab_dir(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(d) = given {
        return Ok(d);
    }
    let here = PathBuf::from("conf/lab");
    if here.is_dir() {
        return Ok(here);
    }
    let d = netns::state_dir().join("conf");
    std::fs::create_dir_all(&d)
        .map_err(|e| format!("cannot write the built-in pair to {}: {e}", d.display()))?;
    for (name, text) in BUILT_IN {
        std::fs::write(d.join(name), text)
            .map_err(|e| format!("cannot write {}: {e}", d.join(name).display()))?;
    }
    Ok(d)
}

/// The `*.toml` files of `dir`, in name order, each loaded and validated.
fn load_dir(dir: &Path) -> Result<Vec<(String, PathBuf, crate::config::Config)>, Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| vec![format!("{}: {e}", dir.display())])?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for f in files {
        let abs = std::fs::canonicalize(&f).unwrap_or(f.clone());
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match crate::config::load(&abs) {
            Ok(c) => out.push((name, abs, c)),
            Err(e) => errs.push(e.to_string()),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

pub fn main(opts: Options) -> i32 {
    if opts.clean {
        return clean();
    }
    let (dir, topo, nft) = match topology(opts.dir.clone()) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let drills = match drills(opts.drills.as_deref()) {
        Ok(d) => d,
        Err(code) => return code,
    };
    // servers-lost cuts the master off its servers with an nftables rule.
    if let Err(code) = prerequisites(nft || drills.contains(&Kind::ServersLost)) {
        return code;
    }
    if let Err(e) = watch_signals() {
        eprintln!("fwlb lab: {e:#}");
        return 1;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fwlb lab: cannot find this program's path: {e}");
            return 1;
        }
    };
    let mut lab = Lab {
        started: Instant::now(),
        master: expected_master(&topo),
        topo,
        net: None,
        exe,
        json: opts.json,
    };
    let cleaned = netns::clean();
    if !cleaned.is_empty() {
        lab.say(&format!(
            "removed what an earlier lab left: {}",
            cleaned.join(", ")
        ));
    }
    let mut rep = lab.base_report(&dir, cleaned);
    let res = lab.go(&drills, &mut rep);
    if let Err(e) = &res {
        rep.error = Some(format!("{e:#}"));
        lab.show_logs();
    }
    lab.finish(&mut rep, opts.keep && res.is_ok() && !interrupted());
    rep.pass = rep.error.is_none()
        && rep.traffic.iter().all(|t| t.pass)
        && rep.drills.iter().all(|d| d.pass);
    lab.print(&rep);
    if rep.pass { 0 } else { 1 }
}

/// `fwlb lab --clean`.
fn clean() -> i32 {
    if let Err(code) = prerequisites(false) {
        return code;
    }
    let removed = netns::clean();
    if removed.is_empty() {
        println!("fwlb lab: nothing to clean");
    }
    for r in removed {
        println!("fwlb lab: removed {r}");
    }
    0
}

/// The lab's directory, the topology its host configurations describe, and whether a host
/// needs nftables. Err: the exit code, the problems printed.
fn topology(given: Option<PathBuf>) -> Result<(PathBuf, Topology, bool), i32> {
    let dir = lab_dir(given).map_err(|e| {
        eprintln!("fwlb lab: {e}");
        1
    })?;
    let hosts = load_dir(&dir).map_err(|errs| {
        for e in errs {
            eprintln!("{e}");
        }
        1
    })?;
    let nft = hosts.iter().any(|(_, _, c)| {
        c.firewall
            .as_ref()
            .is_some_and(|f| f.backend == crate::config::FirewallBackend::Nftables)
    });
    let topo = topo::derive(hosts).map_err(|errs| {
        for e in errs {
            eprintln!("fwlb lab: {}: {e}", dir.display());
        }
        1
    })?;
    Ok((dir, topo, nft))
}

/// The drills `--drill` names (comma-separated or repeated; `none` for none), in the lab's
/// order; all without it.
fn drills(names: Option<&[String]>) -> Result<Vec<Kind>, i32> {
    let Some(names) = names else {
        return Ok(Kind::LAB.to_vec());
    };
    let mut v = Vec::new();
    for n in names.iter().flat_map(|n| n.split(',')) {
        if n == "none" {
            continue;
        }
        match Kind::from_name(n) {
            Some(k) => v.push(k),
            None => {
                let all: Vec<&str> = Kind::LAB.iter().map(|k| k.name()).collect();
                eprintln!(
                    "fwlb lab: no drill {n:?}; drills: {} (or none)",
                    all.join(", ")
                );
                return Err(1);
            }
        }
    }
    Ok(Kind::LAB.into_iter().filter(|k| v.contains(k)).collect())
}

/// The host meant to be master: the highest priorities (the first host on a tie).
fn expected_master(t: &Topology) -> usize {
    let score = |h: &topo::Host| {
        h.cfg
            .vrrp
            .iter()
            .map(|v| u32::from(v.priority))
            .sum::<u32>()
    };
    if score(&t.hosts[1]) > score(&t.hosts[0]) {
        1
    } else {
        0
    }
}

struct Lab {
    started: Instant,
    topo: Topology,
    net: Option<Net>,
    exe: PathBuf,
    /// The host that is master in the initial state.
    master: usize,
    json: bool,
}

fn enter(ns: &str) -> impl FnOnce() -> Result<()> + Send + 'static {
    let path = netns::ns_path(ns);
    move || {
        crate::sys::netlink::enter_netns(&path)
            .map_err(|e| anyhow!("cannot enter {}: {e}", path.display()))
    }
}

impl Lab {
    fn say(&self, msg: &str) {
        let _ = self.json;
        eprintln!("lab [{:5.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    fn net(&mut self) -> Result<&mut Net> {
        self.net
            .as_mut()
            .ok_or_else(|| anyhow!("the network is not built"))
    }

    /// The last lines of every process's log, after a failure (not after Ctrl-C).
    fn show_logs(&self) {
        let Some(net) = &self.net else {
            return;
        };
        for p in &net.procs {
            let tail = p.log_tail(8);
            if !tail.is_empty() && !interrupted() {
                eprintln!(
                    "fwlb lab: last lines of {} ({}):\n{tail}",
                    p.name,
                    p.log.display()
                );
            }
        }
    }

    /// Tear the network down, or with `keep` leave the pair up as it started.
    fn finish(&mut self, rep: &mut Report, keep: bool) {
        if keep {
            // Leave the pair as it started.
            if let Err(e) = self.ensure_initial(None).map(|_| ()) {
                rep.error = Some(format!("{e:#}"));
            }
        }
        if let Some(mut net) = self.net.take() {
            rep.pids = net.all_pids.clone();
            if keep {
                net.keep = true;
                rep.kept = true;
            } else {
                let left = net.teardown();
                if !left.is_empty() {
                    rep.error = Some(format!("could not remove: {}", left.join("; ")));
                }
            }
        }
        rep.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
    }

    /// The report (text, or JSON on stdout), and how to enter a kept pair.
    fn print(&self, rep: &Report) {
        if self.json {
            match serde_json::to_string_pretty(rep) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("fwlb lab: {e}"),
            }
        } else {
            print!("{}", rep.text());
        }
        if rep.kept {
            let text = self.keep_help();
            if self.json {
                eprint!("{text}");
            } else {
                print!("{text}");
            }
        }
    }

    fn base_report(&self, dir: &Path, cleaned: Vec<String>) -> Report {
        let t = &self.topo;
        let seg = |k: usize| t.segments[k].name.clone();
        let leaf = |l: &topo::Leaf| report::LeafReport {
            namespace: l.ns.clone(),
            segment: seg(l.segment),
            addresses: l.addrs.iter().map(|a| a.to_string()).collect(),
            gateway: l.gateway.map(|g| g.to_string()),
        };
        Report {
            pass: false,
            dir: dir.display().to_string(),
            duration_ms: 0.0,
            cleaned,
            hosts: t
                .hosts
                .iter()
                .map(|h| report::HostReport {
                    name: h.name.clone(),
                    config: h.config.display().to_string(),
                    namespace: h.ns.clone(),
                    control: h.control.clone(),
                    interfaces: h
                        .ifaces
                        .iter()
                        .map(|i| report::Iface {
                            name: i.name.clone(),
                            address: format!("{}/{}", i.addr, t.segments[i.segment].net.prefix),
                            segment: seg(i.segment),
                            port: i.port.clone(),
                        })
                        .collect(),
                    vrids: h.vrids(),
                })
                .collect(),
            segments: t
                .segments
                .iter()
                .map(|s| report::SegmentReport {
                    name: s.name.clone(),
                    namespace: s.ns.clone(),
                    network: s.net.to_string(),
                    vips: s.vips.iter().map(|v| v.to_string()).collect(),
                })
                .collect(),
            client: leaf(&t.client),
            servers: t.servers.iter().map(|s| leaf(&s.leaf)).collect(),
            traffic: Vec::new(),
            drills: Vec::new(),
            pids: Vec::new(),
            kept: false,
            notes: t.notes.clone(),
            error: None,
        }
    }

    fn go(&mut self, drills: &[Kind], rep: &mut Report) -> Result<()> {
        let nss = self.topo.namespaces();
        self.say(&format!(
            "building {} namespaces: {}",
            nss.len(),
            nss.join(" ")
        ));
        self.net = Some(Net::build(&self.topo)?);
        pause(Duration::ZERO)?;
        self.start_servers()?;
        for h in 0..self.topo.hosts.len() {
            self.start_daemon(h)?;
        }
        self.say(&format!(
            "waiting for {} to be master and {} backup",
            self.topo.hosts[self.master].name,
            self.topo.hosts[1 - self.master].name
        ));
        self.wait_steady(self.master, false)?;
        if !self.topo.targets.is_empty() {
            self.say("traffic check: every balancer, from 8 client addresses");
            rep.traffic = self.traffic()?;
        }
        for &k in drills {
            if k == Kind::BackLink && self.back_port(self.master).is_none() {
                rep.notes
                    .push("no back segment: the back-link drill was skipped".into());
                continue;
            }
            if k == Kind::ServersLost
                && let Some(why) = self.servers_lost_skip()
            {
                rep.notes.push(why);
                continue;
            }
            let warm = self.ensure_initial(Some(k))?;
            self.say(&format!("drill: {}", k.title()));
            let mut out = self.drill(k)?;
            out.notes.extend(warm);
            self.say(&format!(
                "  {} -> {}: master at {} ms, first answer at {} ms, {} of {} requests failed: {}",
                out.from,
                out.to,
                out.timeline_ms
                    .became_master
                    .map_or("-".into(), |v| format!("{v:.0}")),
                out.timeline_ms
                    .first_success
                    .map_or("-".into(), |v| format!("{v:.0}")),
                out.requests.failed,
                out.requests.total,
                if out.pass {
                    "pass".to_string()
                } else {
                    format!("FAIL ({})", out.problems.join("; "))
                }
            ));
            self.undo(k)?;
            if k == Kind::ServersLost {
                self.servers_back(&mut out)?;
            }
            rep.drills.push(out);
        }
        Ok(())
    }

    fn start_servers(&mut self) -> Result<()> {
        let exe = self.exe.clone();
        let sets = self.topo.servers.clone();
        for s in &sets {
            for (addr, ports) in &s.listen {
                let listen: Vec<String> = ports.iter().map(|p| format!("{addr}:{p}")).collect();
                let mut args: Vec<&str> = vec!["echo"];
                args.extend(listen.iter().map(String::as_str));
                let name = addr.to_string();
                args.extend(["--name", &name]);
                self.net()?
                    .spawn(&format!("echo-{addr}"), &s.leaf.ns, &exe, &args)?;
            }
        }
        // Ready when each answers a connect from inside its namespace.
        for s in &sets {
            let addrs: Vec<std::net::SocketAddr> = s
                .listen
                .iter()
                .flat_map(|(a, ps)| ps.iter().map(move |p| std::net::SocketAddr::from((*a, *p))))
                .collect();
            let ok = netns::run_in_ns(&s.leaf.ns, move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                addrs.iter().all(|a| {
                    loop {
                        if std::net::TcpStream::connect_timeout(a, Duration::from_millis(200))
                            .is_ok()
                        {
                            break true;
                        }
                        if Instant::now() > deadline {
                            break false;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })?;
            if !ok {
                bail!("the mock servers in {} did not start", s.leaf.ns);
            }
        }
        let n: usize = sets.iter().map(|s| s.listen.len()).sum();
        self.say(&format!("{n} mock servers (fwlb echo) listening"));
        Ok(())
    }

    fn start_daemon(&mut self, h: usize) -> Result<Instant> {
        let host = self.topo.hosts[h].clone();
        let exe = self.exe.clone();
        let cfg = host.config.display().to_string();
        let t = Instant::now();
        self.net()?
            .spawn(&host.name, &host.ns, &exe, &["run", "-c", &cfg])?;
        self.say(&format!(
            "started {} (fwlb run -c {cfg}) in {}",
            host.name, host.ns
        ));
        Ok(t)
    }

    fn running(&mut self, h: usize) -> bool {
        let name = self.topo.hosts[h].name.clone();
        self.net
            .as_mut()
            .and_then(|n| n.proc_named(&name))
            .is_some_and(|p| !p.exited())
    }

    fn pid(&mut self, h: usize) -> Result<u32> {
        let name = self.topo.hosts[h].name.clone();
        self.net()?
            .proc_named(&name)
            .map(|p| p.pid())
            .ok_or_else(|| anyhow!("{name} is not running"))
    }

    fn states(&self, h: usize) -> Result<States> {
        let c = self.topo.hosts[h].control.clone();
        netns::run_in_ns(&self.topo.hosts[h].ns, move || {
            probe::states(&c, Duration::from_millis(500))
        })
    }

    /// Wait until `master` holds every VRID and the other host is backup of every VRID (or,
    /// with `alone`, is down), for three polls in a row.
    fn wait_steady(&mut self, master: usize, alone: bool) -> Result<()> {
        let t0 = Instant::now();
        let other = 1 - master;
        let mut good = 0;
        loop {
            let hosts: &[usize] = if alone { &[master] } else { &[master, other] };
            for &h in hosts {
                if !self.running(h) {
                    let name = self.topo.hosts[h].name.clone();
                    let tail = self
                        .net()?
                        .proc_named(&name)
                        .map(|p| p.log_tail(10))
                        .unwrap_or_default();
                    bail!("{name} exited:\n{tail}");
                }
            }
            let (m, o) = (self.states(master)?, self.states(other)?);
            let other_ok = if alone {
                o.is_none()
            } else {
                probe::all_in(&o, "backup")
            };
            // A backup holding a VIP would answer ARP for it: not a steady pair.
            let other_clean = alone || self.vips_held(other).is_empty();
            if probe::all_in(&m, "master") && other_ok && other_clean {
                good += 1;
                if good >= 3 {
                    return Ok(());
                }
            } else {
                good = 0;
            }
            if t0.elapsed() > SETTLE_LIMIT {
                bail!(
                    "the pair did not settle within {} s: {} {}, {} {} (holding {:?})",
                    SETTLE_LIMIT.as_secs(),
                    self.topo.hosts[master].name,
                    drill::show(&m),
                    self.topo.hosts[other].name,
                    drill::show(&o),
                    self.vips_held(other)
                );
            }
            pause(Duration::from_millis(20))?;
        }
    }

    /// Servers blacklisted during a drill (connects over a pulled cable) are put back at once.
    fn clear_blacklists(&self, h: usize) -> Result<()> {
        let host = &self.topo.hosts[h];
        let mut lines = Vec::new();
        for b in &host.cfg.balancers {
            for k in 0..b.servers.len() {
                lines.push(format!("balancer {} server {k} blacklist 0", b.name));
            }
        }
        let c = host.control.clone();
        netns::run_in_ns(&host.ns, move || {
            for l in lines {
                let _ = crate::control::client::request_within(&c, &l, Duration::from_secs(1));
            }
        })
    }

    /// The VIPs a host's interfaces hold now.
    fn vips_held(&self, h: usize) -> Vec<(String, String)> {
        let host = &self.topo.hosts[h];
        let mut out = Vec::new();
        for i in &host.ifaces {
            let seg = &self.topo.segments[i.segment];
            let text = netns::ip(&["-n", &host.ns, "-o", "-4", "addr", "show", "dev", &i.name])
                .unwrap_or_default();
            for v in &seg.vips {
                let cidr = format!("{v}/{}", seg.net.prefix);
                if text.contains(&format!(" {cidr} ")) {
                    out.push((i.name.clone(), cidr));
                }
            }
        }
        out
    }

    /// Bring the lab to its initial state for drill `next` (None: the end of a --keep run):
    /// both daemons up, the expected master holding every VRID, no blacklisted server. A
    /// restore drill needs the master stopped instead.
    /// Returns a note when the pair needed time before it served promptly again.
    fn ensure_initial(&mut self, next: Option<Kind>) -> Result<Option<String>> {
        let (m, b) = (self.master, 1 - self.master);
        if next == Some(Kind::Restore) {
            if self.running(m) {
                let pid = self.pid(m)?;
                let _ = crate::sys::process::signal(pid, libc::SIGTERM);
                self.wait_exit(m)?;
            }
            self.wait_steady(b, true)?;
            self.clear_blacklists(b)?;
            return self.wait_serving(b);
        }
        let mut started = false;
        for h in [m, b] {
            if !self.running(h) {
                let name = self.topo.hosts[h].name.clone();
                self.net()?.forget(&name);
                self.start_daemon(h)?;
                started = true;
            }
        }
        if started {
            pause(Duration::from_millis(50))?;
        }
        self.wait_steady(m, false)?;
        self.clear_blacklists(m)?;
        self.clear_blacklists(b)?;
        self.wait_serving(m)
    }

    /// Requests through every target from every client address until one whole round is
    /// answered within 200 ms each (at most 5 s): a drill starts from a pair that serves. A
    /// host back from a cable pull can stall first: ARP entries for its servers made while the
    /// cable was out stay incomplete until the kernel's next probe (once a second).
    fn wait_serving(&mut self, via: usize) -> Result<Option<String>> {
        if self.topo.targets.is_empty() {
            return Ok(None);
        }
        let t0 = Instant::now();
        loop {
            let reqs = self.client_requests(1)?;
            let prompt = reqs.iter().all(|r| {
                r.result.is_ok()
                    && r.end.saturating_duration_since(r.start) < Duration::from_millis(200)
            });
            if prompt {
                let took = t0.elapsed();
                return Ok((took > Duration::from_millis(300)).then(|| {
                    format!(
                        "before this drill, requests through {} stalled for {} ms after the previous repair (ARP entries for its servers made while a cable was out wait for the kernel's next probe, once a second)",
                        self.topo.hosts[via].name,
                        took.as_millis()
                    )
                }));
            }
            if t0.elapsed() > Duration::from_secs(5) {
                let bad = reqs.iter().filter(|r| r.result.is_err()).count();
                bail!(
                    "the pair does not serve promptly through {}: {bad} of {} requests failed in the last round",
                    self.topo.hosts[via].name,
                    reqs.len()
                );
            }
            pause(Duration::from_millis(20))?;
        }
    }

    fn wait_exit(&mut self, h: usize) -> Result<()> {
        let name = self.topo.hosts[h].name.clone();
        let limit = self.topo.hosts[h].cfg.daemon.shutdown_timeout + Duration::from_secs(3);
        let t0 = Instant::now();
        while self.running(h) {
            if t0.elapsed() > limit {
                bail!(
                    "{name} did not exit within {} s of SIGTERM",
                    limit.as_secs()
                );
            }
            pause(Duration::from_millis(10))?;
        }
        self.net()?.forget(&name);
        Ok(())
    }

    /// Undo a drill's fault (the next `ensure_initial` restarts what is down).
    fn undo(&mut self, k: Kind) -> Result<()> {
        let m = self.master;
        match k {
            Kind::Kill => {
                let name = self.topo.hosts[m].name.clone();
                self.net()?.forget(&name);
            }
            Kind::FrontLink => {
                let (ns, port) = self.front_port(m);
                netns::set_link(&ns, &port, true)?;
            }
            Kind::BackLink => {
                if let Some((ns, port)) = self.back_port(m) {
                    netns::set_link(&ns, &port, true)?;
                }
            }
            Kind::Term => self.wait_exit(m)?,
            Kind::Handover => {
                // Hand back the same way: resume here, stand the peer by until this host
                // holds everything again, resume the peer.
                let b = 1 - m;
                self.ctl(m, "vrrp resume")?;
                self.ctl(b, "vrrp standby")?;
                let t0 = Instant::now();
                while !probe::all_in(&self.states(m)?, "master") {
                    if t0.elapsed() > SETTLE_LIMIT {
                        bail!("{} did not take its VRIDs back", self.topo.hosts[m].name);
                    }
                    pause(Duration::from_millis(10))?;
                }
                self.ctl(b, "vrrp resume")?;
            }
            Kind::Restore => {}
            Kind::ServersLost => {
                self.cut_servers(m, false)?;
            }
        }
        Ok(())
    }

    /// One control command to host `h`; an error reply is an error.
    fn ctl(&self, h: usize, line: &str) -> Result<String> {
        let (c, l) = (self.topo.hosts[h].control.clone(), line.to_string());
        let reply = netns::run_in_ns(&self.topo.hosts[h].ns, move || {
            crate::control::client::request_within(&c, &l, Duration::from_secs(2))
        })?
        .map_err(|e| anyhow!("{}: {e}", self.topo.hosts[h].name))?;
        if crate::control::client::is_error(&reply) {
            bail!("{}: `{line}`: {}", self.topo.hosts[h].name, reply.trim());
        }
        Ok(reply)
    }

    fn front_port(&self, h: usize) -> (String, String) {
        let f = self.topo.front;
        let port = self.topo.hosts[h]
            .ifaces
            .iter()
            .find(|i| i.segment == f)
            .map(|i| i.port.clone())
            .unwrap_or_default();
        (self.topo.segments[f].ns.clone(), port)
    }

    /// The master's cable on the back segment (where the servers are).
    fn back_port(&self, h: usize) -> Option<(String, String)> {
        let seg = self
            .topo
            .segments
            .iter()
            .position(|s| s.name == "back")
            .or_else(|| self.topo.servers.first().map(|s| s.leaf.segment))
            .filter(|s| *s != self.topo.front)?;
        let i = self.topo.hosts[h]
            .ifaces
            .iter()
            .find(|i| i.segment == seg)?;
        Some((self.topo.segments[seg].ns.clone(), i.port.clone()))
    }

    fn aims(&self) -> Vec<Aim> {
        self.topo
            .targets
            .iter()
            .map(|t| Aim {
                addr: t.addr,
                send_proxy: t.accept_proxy,
                http: true,
            })
            .collect()
    }

    fn host_name_of(&self) -> impl Fn(IpAddr) -> Option<String> + use<> {
        let t = self.topo.clone();
        move |a| t.host_of(a).map(|h| t.hosts[h].name.clone())
    }

    /// The budget of a failover to host `h`: its longest advert interval, its lowest priority.
    fn budget(&self, h: usize) -> Duration {
        let v = &self.topo.hosts[h].cfg.vrrp;
        let interval = v
            .iter()
            .map(|x| x.advert_interval)
            .max()
            .unwrap_or_default();
        let prio = v.iter().map(|x| x.priority).min().unwrap_or(100);
        drill::budget(interval, prio)
    }

    /// Run drill `k` from the initial state: load, fault, watch, evaluate.
    fn drill(&mut self, k: Kind) -> Result<Outcome> {
        let (from, to) = if k == Kind::Restore {
            (1 - self.master, self.master)
        } else {
            (self.master, 1 - self.master)
        };
        let (hf, ht) = (self.topo.hosts[from].clone(), self.topo.hosts[to].clone());
        let budget = self.budget(to) + self.detection_time(k, from);
        let limit = DRILL_LIMIT.max(budget + Duration::from_secs(1));
        let w_to = Watcher::start(ht.control.clone(), POLL, enter(&ht.ns));
        let w_from = Watcher::start(hf.control.clone(), POLL, enter(&hf.ns));
        let load = self.start_load();
        let host_of = self.host_name_of();
        let res = (|| -> Result<(Instant, Vec<String>)> {
            pause(BASELINE)?;
            let t0 = self.fault(k, from, to)?;
            let served_by_to = |r: &Req| {
                r.result
                    .as_ref()
                    .ok()
                    .and_then(|s| s.peer)
                    .and_then(&host_of)
                    .as_deref()
                    == Some(ht.name.as_str())
            };
            // Until the new master holds everything, answers through it, and the old one
            // holds nothing; then a little longer, to see it stays that way.
            let mut done: Option<Instant> = None;
            while t0.elapsed() < limit {
                pause(Duration::from_millis(10))?;
                let served = load
                    .as_ref()
                    .is_none_or(|l| l.finished().iter().any(|r| r.end >= t0 && served_by_to(r)));
                let ok = probe::all_in(&w_to.latest(), "master")
                    && !probe::any_master(&w_from.latest())
                    && served;
                match (ok, done) {
                    (true, None) => done = Some(Instant::now()),
                    (true, Some(d)) if d.elapsed() >= AFTER => break,
                    _ => {}
                }
            }
            let notes = if k == Kind::Kill {
                self.leftover_vips(from).into_iter().collect()
            } else {
                Vec::new()
            };
            Ok((t0, notes))
        })();
        let reqs: Vec<Req> = match load {
            Some(l) => l.stop()?,
            None => Vec::new(),
        };
        let to_seen = w_to.stop();
        let from_seen = w_from.stop();
        let (t0, notes) = res?;
        let mut out = drill::evaluate(&drill::Observed {
            kind: k,
            from: &hf.name,
            to: &ht.name,
            t0,
            budget,
            to_seen: &to_seen,
            from_seen: &from_seen,
            reqs: &reqs,
            host_of: &host_of,
        });
        out.notes = notes;
        Ok(out)
    }

    /// The load loop through every target, when there are targets.
    fn start_load(&self) -> Option<Load> {
        (!self.topo.targets.is_empty()).then(|| {
            Load::start(
                LoadSpec {
                    aims: self.aims(),
                    sources: self.topo.client.addrs.clone(),
                    every: LOAD_EVERY,
                    timeout: REQ_TIMEOUT,
                    max: LOAD_MAX,
                    limit: LOAD_LIMIT,
                },
                enter(&self.topo.client.ns),
            )
        })
    }

    /// Cause drill `k`'s fault on host `from` (a restore starts `to`); when it happened.
    fn fault(&mut self, k: Kind, from: usize, to: usize) -> Result<Instant> {
        Ok(match k {
            Kind::Kill => {
                // The whole daemon, parent and child at once: a crash nobody announces
                // (either one alone is handled by the other, which hands over).
                let pid = self.pid(from)?;
                let t = Instant::now();
                crate::sys::process::signal_group(pid, libc::SIGKILL)?;
                t
            }
            Kind::Term => {
                let pid = self.pid(from)?;
                let t = Instant::now();
                crate::sys::process::signal(pid, libc::SIGTERM)?;
                t
            }
            Kind::FrontLink => {
                let (ns, port) = self.front_port(from);
                netns::set_link(&ns, &port, false)?
            }
            Kind::BackLink => {
                let (ns, port) = self
                    .back_port(from)
                    .ok_or_else(|| anyhow!("no back segment"))?;
                netns::set_link(&ns, &port, false)?
            }
            Kind::Restore => self.start_daemon(to)?,
            Kind::Handover => {
                let t = Instant::now();
                self.ctl(from, "vrrp standby")?;
                t
            }
            Kind::ServersLost => self.cut_servers(from, true)?,
        })
    }

    /// A note on the addresses a killed daemon left on host `h`, if any.
    fn leftover_vips(&self, h: usize) -> Option<String> {
        let left = self.vips_held(h);
        if left.is_empty() {
            return None;
        }
        Some(format!(
            "the killed daemon left {} on {} (the restarted daemon removes them)",
            left.iter()
                .map(|(i, a)| format!("{a} ({i})"))
                .collect::<Vec<_>>()
                .join(", "),
            self.topo.hosts[h].name
        ))
    }

    /// Requests through every target from every client address, three rounds, one at a
    /// time; then check each target's spread and client address.
    fn traffic(&mut self) -> Result<Vec<Traffic>> {
        let reqs = self.client_requests(3)?;
        let host_of = self.host_name_of();
        let mut out = Vec::new();
        for (ti, t) in self.topo.targets.iter().enumerate() {
            let mine: Vec<&Req> = reqs.iter().filter(|r| r.target == ti).collect();
            out.push(check_traffic(
                t,
                &mine,
                &host_of,
                &self.topo.hosts[self.master].name,
            ));
        }
        Ok(out)
    }

    /// `rounds` requests through every target from every client address, one at a time, from
    /// the client's namespace; each request knows its target.
    fn client_requests(&self, rounds: usize) -> Result<Vec<Req>> {
        let (aims, sources) = (self.aims(), self.topo.client.addrs.clone());
        netns::run_in_ns(&self.topo.client.ns, move || -> Result<Vec<Req>> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(async move {
                let mut out = Vec::new();
                for (ti, aim) in aims.iter().enumerate() {
                    for _ in 0..rounds {
                        for src in &sources {
                            let mut r = probe::request(aim, *src, REQ_TIMEOUT).await;
                            r.target = ti;
                            out.push(r);
                        }
                    }
                }
                out
            }))
        })?
    }

    fn keep_help(&self) -> String {
        let exe = self.exe.display();
        let t = &self.topo;
        let mut s = String::from(
            "\nThe lab is still up (--keep). Enter a namespace with `ip netns exec NAME COMMAND`:\n",
        );
        if let Some(tg) = t.targets.first() {
            s.push_str(&format!(
                "  ip netns exec {} curl -s http://{}/          # a client request (apt-get install curl)\n",
                t.client.ns, tg.addr
            ));
        }
        for h in &t.hosts {
            s.push_str(&format!("  ip netns exec {} {exe} ctl show vrrp\n", h.ns));
        }
        s.push_str(&format!(
            "  ip netns exec {} bash                           # a shell on {}\n",
            t.hosts[0].ns, t.hosts[0].name
        ));
        s.push_str(&format!("Namespaces: {}\n", t.namespaces().join(" ")));
        s.push_str(&format!(
            "Logs: {}\n",
            netns::state_dir().join("logs").display()
        ));
        s.push_str(&format!("Remove it all: {exe} lab --clean\n"));
        s
    }
}

/// One target's traffic check: every request answered by a configured server through the
/// master, spread as the algorithm says, the client's address passed on as configured.
fn check_traffic(
    t: &topo::Target,
    reqs: &[&Req],
    host_of: &dyn Fn(IpAddr) -> Option<String>,
    master: &str,
) -> Traffic {
    let mut problems = Vec::new();
    let mut by_server: BTreeMap<String, usize> = BTreeMap::new();
    let mut served_by: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_client: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    let configured: BTreeSet<String> = t.servers.iter().map(|s| s.addr.to_string()).collect();
    let mut failed = 0;
    let mut ca_ok = true;
    for r in reqs {
        match &r.result {
            Err(f) => {
                failed += 1;
                problems.push(format!("a request from {} failed: {f:?}", r.src));
            }
            Ok(seen) => {
                *by_server.entry(seen.server.clone()).or_insert(0) += 1;
                per_client
                    .entry(r.src)
                    .or_default()
                    .insert(seen.server.clone());
                if let Some(h) = seen.peer.and_then(host_of) {
                    *served_by.entry(h).or_insert(0) += 1;
                }
                if !configured.contains(&seen.server) {
                    problems.push(format!("{} is not a configured server", seen.server));
                }
                let want = IpAddr::V4(r.src);
                let got_ok = match (t.forwarded_for, t.proxy) {
                    (_, ProxyProtocol::V1 | ProxyProtocol::V2) => seen.proxy_src == Some(want),
                    (true, ProxyProtocol::None) => {
                        seen.forwarded_for.as_deref() == Some(want.to_string().as_str())
                    }
                    (false, ProxyProtocol::None) => true,
                };
                if !got_ok && ca_ok {
                    ca_ok = false;
                    problems.push(format!(
                        "the server did not see client {}: X-Forwarded-For {:?}, PROXY source {:?}",
                        r.src, seen.forwarded_for, seen.proxy_src
                    ));
                }
            }
        }
    }
    problems.dedup();
    if served_by.keys().any(|h| h != master) {
        problems.push(format!(
            "requests went through another host than the master {master}: {served_by:?}"
        ));
    }
    let spread = spread_problem(t, &by_server, &per_client);
    if let Some(p) = &spread {
        problems.push(p.clone());
    }
    let client_address = match (t.proxy, t.forwarded_for) {
        (ProxyProtocol::V1, _) => "proxy-v1",
        (ProxyProtocol::V2, _) => "proxy-v2",
        (ProxyProtocol::None, true) => "x-forwarded-for",
        (ProxyProtocol::None, false) => "none",
    };
    Traffic {
        balancer: t.balancer.clone(),
        listen: t.addr.to_string(),
        algorithm: t.algorithm.name().into(),
        requests: reqs.len(),
        failed,
        by_server,
        served_by,
        client_address: client_address.into(),
        client_address_ok: (client_address != "none").then_some(ca_ok),
        spread_ok: spread.is_none(),
        pass: problems.is_empty(),
        problems,
    }
}

/// Whether the answers per server match the algorithm, for requests made one at a time in
/// rounds over the same client addresses.
fn spread_problem(
    t: &topo::Target,
    by_server: &BTreeMap<String, usize>,
    per_client: &BTreeMap<Ipv4Addr, BTreeSet<String>>,
) -> Option<String> {
    let count = |s: &str| by_server.get(s).copied().unwrap_or(0);
    let even = |names: &[String]| -> Option<String> {
        let c: Vec<usize> = names.iter().map(|n| count(n)).collect();
        let (lo, hi) = (c.iter().min()?, c.iter().max()?);
        (hi - lo > 1).then(|| format!("uneven: {by_server:?} (expected equal shares, within one)"))
    };
    let all: Vec<String> = t.servers.iter().map(|s| s.addr.to_string()).collect();
    let sticky = || -> Option<String> {
        per_client
            .iter()
            .find(|(_, s)| s.len() > 1)
            .map(|(c, s)| format!("client {c} went to several servers: {s:?}"))
    };
    match t.algorithm {
        Algorithm::RoundRobin | Algorithm::LeastConn => even(&all),
        Algorithm::Sticky => sticky().or_else(|| {
            // New clients are dealt round robin: clients per server even.
            let mut clients: BTreeMap<&String, usize> = BTreeMap::new();
            for s in per_client.values().flatten() {
                *clients.entry(s).or_insert(0) += 1;
            }
            let c: Vec<usize> = all
                .iter()
                .map(|n| clients.get(n).copied().unwrap_or(0))
                .collect();
            let (lo, hi) = (c.iter().min()?, c.iter().max()?);
            (hi - lo > 1).then(|| format!("new clients were not dealt round robin: {clients:?}"))
        }),
        Algorithm::Hash | Algorithm::Consistent => sticky(),
        Algorithm::Weight => {
            let total: usize = by_server.values().sum();
            let wsum: u32 = t.servers.iter().map(|s| s.weight).sum();
            t.servers.iter().find_map(|s| {
                let want = total as f64 * f64::from(s.weight) / f64::from(wsum.max(1));
                let got = count(&s.addr.to_string()) as f64;
                ((got - want).abs() > 1.0).then(|| {
                    format!(
                        "{} got {got} answers, its weight {} asks for {want:.1}",
                        s.addr, s.weight
                    )
                })
            })
        }
        Algorithm::Prio => {
            let best = t.servers.iter().map(|s| s.prio).min()?;
            let top: Vec<String> = t
                .servers
                .iter()
                .filter(|s| s.prio == best)
                .map(|s| s.addr.to_string())
                .collect();
            let stray: usize = by_server
                .iter()
                .filter(|(s, _)| !top.contains(s))
                .map(|(_, n)| n)
                .sum();
            if stray > 0 {
                Some(format!(
                    "{stray} answer(s) from servers of a lower prio than {best}"
                ))
            } else {
                even(&top)
            }
        }
    }
}
