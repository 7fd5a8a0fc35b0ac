//! Building and tearing down the lab's namespaces, and the processes in them.
//!
//! Everything the lab makes is findable after a crash of the lab itself: every namespace name
//! starts with `topo::PREFIX`, and the state file lists the namespaces and the pid of every
//! process started. `clean` kills what lives in those namespaces (and the recorded pids), then
//! deletes the namespaces; each run calls it first.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::topo::{PREFIX, Topology};
use crate::sys::process;

/// Where the state file and the logs go (tmpfs: gone at reboot, like the namespaces).
pub fn state_dir() -> PathBuf {
    if Path::new("/run").is_dir() {
        PathBuf::from("/run/fwlb-lab")
    } else {
        std::env::temp_dir().join("fwlb-lab")
    }
}

fn state_file() -> PathBuf {
    state_dir().join("state")
}

/// Run `ip ARGS`; an error carries ip's own message.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every network namespace of the lab (by name prefix).
pub fn lab_namespaces() -> Vec<String> {
    let out = ip(&["netns", "list"]).unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// The pids of processes in namespace `ns`.
fn pids_in(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether a recorded pid is still one of ours (pids are reused).
fn is_fwlb(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a.ends_with(b"fwlb")))
}

fn kill_and_wait(pids: &[u32]) {
    for &p in pids {
        let _ = process::signal(p, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|p| process::alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Remove whatever an earlier lab left: processes (recorded or found in a lab namespace) and
/// namespaces. Returns what was removed, for the report.
pub fn clean() -> Vec<String> {
    let mut removed = Vec::new();
    let recorded: Vec<u32> = std::fs::read_to_string(state_file())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("pid "))
        .filter_map(|p| p.split_whitespace().next()?.parse().ok())
        .filter(|p| process::alive(*p) && is_fwlb(*p))
        .collect();
    let mut pids = recorded;
    let nss = lab_namespaces();
    for ns in &nss {
        pids.extend(pids_in(ns));
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|p| *p != std::process::id());
    if !pids.is_empty() {
        kill_and_wait(&pids);
        removed.push(format!(
            "processes {}",
            pids.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    for ns in &nss {
        if ip(&["netns", "del", ns]).is_ok() {
            removed.push(format!("namespace {ns}"));
        }
    }
    let _ = std::fs::remove_file(state_file());
    removed
}

/// A process the lab started, inside a namespace.
pub struct Proc {
    pub name: String,
    pub ns: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (and reap it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The last `n` lines of its log, for a failure report.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The lab's network and processes; torn down when dropped unless `keep` is set.
pub struct Net {
    pub namespaces: Vec<String>,
    pub procs: Vec<Proc>,
    /// Every pid ever started (also those already gone), for the report.
    pub all_pids: Vec<u32>,
    pub keep: bool,
}

impl Net {
    /// Create every namespace, bridge, cable and address of `topo`.
    pub fn build(topo: &Topology) -> Result<Net> {
        std::fs::create_dir_all(state_dir().join("logs"))
            .with_context(|| format!("cannot create {}", state_dir().display()))?;
        let mut net = Net {
            namespaces: Vec::new(),
            procs: Vec::new(),
            all_pids: Vec::new(),
            keep: false,
        };
        let add_ns = |net: &mut Net, ns: &str| -> Result<()> {
            ip(&["netns", "add", ns])?;
            net.namespaces.push(ns.to_string());
            net.record()?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            Ok(())
        };
        for s in &topo.segments {
            add_ns(&mut net, &s.ns)?;
            ip(&["-n", &s.ns, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &s.ns, "link", "set", "br0", "up"])?;
        }
        // One veth per interface: `port` in the bridge's namespace, `dev` in `ns`. Interface
        // numbers are given so that no end has its peer's number: the kernel reports carrier
        // changes of a link whose peer has its own number (a physical NIC, a veth whose ends
        // happen to match in two namespaces) at most once a second (linkwatch), and a drill
        // pulling cables a second apart would then time the kernel, not the failover.
        let mut cables = 0u32;
        let mut cable = |sw: &str, port: &str, ns: &str, dev: &str| -> Result<()> {
            cables += 1;
            let (pi, di) = ((1000 + cables).to_string(), (100 + cables).to_string());
            ip(&[
                "-n", sw, "link", "add", port, "index", &pi, "type", "veth", "peer", "name", dev,
                "index", &di, "netns", ns,
            ])?;
            ip(&["-n", sw, "link", "set", port, "master", "br0", "up"])?;
            Ok(())
        };
        for h in &topo.hosts {
            add_ns(&mut net, &h.ns)?;
            for i in &h.ifaces {
                let seg = &topo.segments[i.segment];
                cable(&seg.ns, &i.port, &h.ns, &i.name)?;
                let a = format!("{}/{}", i.addr, seg.net.prefix);
                ip(&["-n", &h.ns, "addr", "add", &a, "dev", &i.name])?;
                ip(&["-n", &h.ns, "link", "set", &i.name, "up"])?;
            }
        }
        let leaves = std::iter::once(&topo.client).chain(topo.servers.iter().map(|s| &s.leaf));
        for l in leaves {
            add_ns(&mut net, &l.ns)?;
            let seg = &topo.segments[l.segment];
            cable(&seg.ns, &l.port, &l.ns, "eth0")?;
            for a in &l.addrs {
                let a = format!("{a}/{}", seg.net.prefix);
                ip(&["-n", &l.ns, "addr", "add", &a, "dev", "eth0"])?;
            }
            ip(&["-n", &l.ns, "link", "set", "eth0", "up"])?;
            if let Some(gw) = l.gateway {
                ip(&[
                    "-n",
                    &l.ns,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                ])?;
            }
        }
        Ok(net)
    }

    /// Write the state file: every namespace and live pid (a later run cleans them up).
    fn record(&self) -> Result<()> {
        let mut text = String::new();
        for n in &self.namespaces {
            text.push_str(&format!("ns {n}\n"));
        }
        for p in &self.procs {
            text.push_str(&format!("pid {} {} {}\n", p.pid(), p.ns, p.name));
        }
        let tmp = state_file().with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, state_file())?;
        Ok(())
    }

    /// Start `exe ARGS` in namespace `ns` (through `ip netns exec`, which execs it: the child's
    /// pid is the program's). Its own process group, so a Ctrl-C reaches only the lab, which
    /// then tears everything down in order.
    pub fn spawn(&mut self, name: &str, ns: &str, exe: &Path, args: &[&str]) -> Result<usize> {
        let log = state_dir().join("logs").join(format!("{name}.log"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            // The lab polls the control ports every few ms: keep those lines out of the logs.
            .env("RUST_LOG", "info,ctl=warn")
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name} in {ns}"))?;
        self.all_pids.push(child.id());
        self.procs.push(Proc {
            name: name.to_string(),
            ns: ns.to_string(),
            child,
            log,
        });
        self.record()?;
        Ok(self.procs.len() - 1)
    }

    pub fn proc_named(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().rev().find(|p| p.name == name)
    }

    /// Forget a process that has exited (after reaping it).
    pub fn forget(&mut self, name: &str) {
        if let Some(k) = self.procs.iter().rposition(|p| p.name == name) {
            let mut p = self.procs.remove(k);
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = self.record();
    }

    /// Kill every process and delete every namespace; returns what could not be removed.
    pub fn teardown(&mut self) -> Vec<String> {
        let pids: Vec<u32> = self.procs.iter().map(|p| p.pid()).collect();
        kill_and_wait(&pids);
        for p in &mut self.procs {
            let _ = p.child.wait();
        }
        self.procs.clear();
        let mut left = Vec::new();
        for ns in self.namespaces.iter().rev() {
            // A process that entered the namespace on its own would keep it alive.
            let stray = pids_in(ns);
            if !stray.is_empty() {
                kill_and_wait(&stray);
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                left.push(format!("{ns}: {e}"));
            }
        }
        self.namespaces.clear();
        let _ = std::fs::remove_file(state_file());
        left
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if !self.keep {
            for e in self.teardown() {
                eprintln!("fwlb lab: could not remove {e}");
            }
        }
    }
}

/// The namespace's file, for setns.
pub fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

/// Run `f` on a fresh thread inside namespace `ns` (setns affects only that thread; sockets
/// made there stay in that namespace).
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let path = ns_path(ns);
    let name = ns.to_string();
    std::thread::spawn(move || {
        crate::sys::netlink::enter_netns(&path)
            .map_err(|e| anyhow!("cannot enter namespace {name}: {e}"))?;
        Ok(f())
    })
}

/// `in_ns`, waiting for the result.
pub fn run_in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    in_ns(ns, f)
        .join()
        .map_err(|_| anyhow!("a thread in namespace {ns} panicked"))?
}

/// Set link `dev` of namespace `ns` up or down through rtnetlink; returns the moment just
/// before the request went out (the fault time of a cable pull).
pub fn set_link(ns: &str, dev: &str, up: bool) -> Result<Instant> {
    let dev = dev.to_string();
    run_in_ns(ns, move || -> Result<Instant> {
        let mut nl = crate::sys::netlink::Netlink::requests()?;
        let link = nl
            .dump_links()?
            .into_iter()
            .find(|l| l.name == dev)
            .ok_or_else(|| anyhow!("no link {dev}"))?;
        let t = Instant::now();
        nl.set_link(link.index, up)?;
        Ok(t)
    })?
}
