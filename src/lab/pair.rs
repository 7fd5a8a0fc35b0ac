//! `fwlb drill --peer ADDR`: a planned handover on a real pair, run from the master. Through
//! both control ports: check that the peer is a healthy backup, put this host on standby
//! (`vrrp standby`: priority 0, the VIPs kept until the peer is heard as master), time the
//! peer's takeover under a load loop of TCP connects to the VIPs, confirm the peer holds every
//! VRID and accepted the connections, then hand back the same way (resume here, standby
//! there, resume there) and time that too. Whatever happens, both hosts are resumed.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;

use super::drill::{self, Kind, Outcome};
use super::interrupt::{pause, watch_signals};
use super::probe::{self, Aim, Load, LoadSpec, Watcher};
use super::report;

pub struct Options {
    /// The peer's control port.
    pub peer: String,
    /// This host's control port.
    pub local: String,
    pub json: bool,
    /// Where the load goes; default: every balancer address on a VIP.
    pub targets: Vec<SocketAddrV4>,
}

const POLL: Duration = Duration::from_millis(5);
const LOAD_EVERY: Duration = Duration::from_millis(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BASELINE: Duration = Duration::from_millis(300);
const AFTER: Duration = Duration::from_millis(300);
const LIMIT: Duration = Duration::from_secs(5);
const ASK: Duration = Duration::from_secs(2);

/// One VRRP instance as `show vrrp json` reports it.
#[derive(Debug, Clone)]
struct Vrid {
    vrid: u8,
    state: String,
    standby: bool,
    master: Option<String>,
    priority: u8,
    addresses: Vec<String>,
    interval: Duration,
}

fn ask(control: &str, line: &str) -> Result<String> {
    let reply =
        crate::control::client::request_within(control, line, ASK).map_err(|e| anyhow!("{e}"))?;
    if crate::control::client::is_error(&reply) {
        bail!("{control}: `{line}`: {}", reply.trim());
    }
    Ok(reply)
}

impl Vrid {
    /// `vrid N is STATE`, with ` (standby)` when it is.
    fn state_line(&self) -> String {
        let standby = if self.standby { " (standby)" } else { "" };
        format!("vrid {} is {}{standby}", self.vrid, self.state)
    }
}

fn vrids(control: &str) -> Result<Vec<Vrid>> {
    let reply = ask(control, "show vrrp json")?;
    let v: Value = serde_json::from_str(reply.trim())
        .map_err(|e| anyhow!("{control}: not a JSON answer to show vrrp: {e}"))?;
    let rows = v["vrrp"]
        .as_array()
        .ok_or_else(|| anyhow!("{control}: no VRRP instances"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Vrid {
                vrid: u8::try_from(r["vrid"].as_u64()?).ok()?,
                state: r["state"].as_str()?.to_string(),
                standby: r["standby"].as_bool().unwrap_or(false),
                master: r["master"].as_str().map(str::to_string),
                priority: u8::try_from(r["priority"].as_u64().unwrap_or(100)).unwrap_or(100),
                addresses: r["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                interval: Duration::from_millis(r["advert_interval_ms"].as_u64().unwrap_or(1000)),
            })
        })
        .collect())
}

/// Every balancer address the load can reach a VIP on.
fn targets(control: &str, local: &[Vrid]) -> Result<Vec<SocketAddrV4>> {
    let vips: Vec<std::net::Ipv4Addr> = local
        .iter()
        .flat_map(|v| v.addresses.iter())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    let reply = match ask(control, "balancers json") {
        Ok(r) => r,
        // A pair without balancers: VRRP only.
        Err(_) => return Ok(Vec::new()),
    };
    let v: Value = serde_json::from_str(reply.trim()).unwrap_or(Value::Null);
    let mut out = BTreeSet::new();
    for b in v["balancers"].as_array().into_iter().flatten() {
        for l in b["listen"].as_array().into_iter().flatten() {
            let Some(SocketAddr::V4(a)) = l.as_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if a.ip().is_unspecified() {
                out.extend(vips.iter().map(|ip| SocketAddrV4::new(*ip, a.port())));
            } else if vips.contains(a.ip()) {
                out.insert(a);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Connections the peer's balancers accepted so far.
fn accepted(control: &str) -> Option<u64> {
    let reply = ask(control, "balancers json").ok()?;
    let v: Value = serde_json::from_str(reply.trim()).ok()?;
    let mut n = 0;
    for b in v["balancers"].as_array()? {
        let name = b["name"].as_str()?;
        let s = ask(control, &format!("balancer {name} show stats json")).ok()?;
        let s: Value = serde_json::from_str(s.trim()).ok()?;
        n += s["accepted"].as_u64()?;
    }
    Some(n)
}

/// Why this pair cannot be drilled from here, if it cannot.
fn refusal(local: &[Vrid], peer: &[Vrid], peer_addr: &str) -> Option<String> {
    let a: BTreeSet<u8> = local.iter().map(|v| v.vrid).collect();
    let b: BTreeSet<u8> = peer.iter().map(|v| v.vrid).collect();
    if a.is_empty() {
        return Some("this host runs no VRRP instance".into());
    }
    if a != b {
        return Some(format!("the VRIDs differ: here {a:?}, on the peer {b:?}"));
    }
    if local.iter().all(|v| v.state == "backup") && peer.iter().all(|v| v.state == "master") {
        return Some(format!(
            "this host is the backup: run the drill on the master (the host of {peer_addr}), with --peer pointing at this host's control port"
        ));
    }
    for v in local {
        if v.state != "master" || v.standby {
            return Some(format!(
                "this host is not the master of every VRID: {}",
                v.state_line()
            ));
        }
    }
    for v in peer {
        let ours = local
            .iter()
            .find(|l| l.vrid == v.vrid)
            .and_then(|l| l.master.clone());
        if v.state != "backup" || v.standby {
            return Some(format!(
                "the peer is not a healthy backup: {}",
                v.state_line()
            ));
        }
        if v.master != ours {
            return Some(format!(
                "the peer does not hear this host: for vrid {} it sees master {:?}, this host is {:?}",
                v.vrid, v.master, ours
            ));
        }
    }
    None
}

#[derive(Debug, Serialize)]
struct DrillReport {
    pass: bool,
    local: String,
    peer: String,
    targets: Vec<String>,
    /// Connections the peer's balancers accepted while it held the VIPs.
    accepted_by_peer: Option<u64>,
    drills: Vec<Outcome>,
    problems: Vec<String>,
}

pub fn main(opts: Options) -> i32 {
    if let Err(e) = watch_signals() {
        eprintln!("fwlb drill: {e:#}");
        return 1;
    }
    let Ready {
        local,
        peer,
        targets,
    } = match preflight(&opts) {
        Ok(v) => v,
        Err(why) => {
            eprintln!("fwlb drill: {why}");
            return 1;
        }
    };
    let me = local
        .first()
        .and_then(|v| v.master.clone())
        .unwrap_or_else(|| "this host".into());
    let me = format!("local {me}");
    let them = format!("peer {}", opts.peer);
    eprintln!(
        "fwlb drill: {me} hands VRIDs {} over to {them} and takes them back; load: a TCP connect every 10 ms to {}",
        local
            .iter()
            .map(|v| v.vrid.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        if targets.is_empty() {
            "nothing (no balancer on a VIP)".to_string()
        } else {
            targets
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    let mut rep = DrillReport {
        pass: false,
        local: opts.local.clone(),
        peer: opts.peer.clone(),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        accepted_by_peer: None,
        drills: Vec::new(),
        problems: Vec::new(),
    };
    let res = run(&opts, &local, &peer, &targets, &me, &them, &mut rep);
    // Whatever happened: neither host stays on standby.
    for c in [&opts.local, &opts.peer] {
        if let Err(e) = ask(c, "vrrp resume") {
            rep.problems.push(format!("could not resume {c}: {e:#}"));
        }
    }
    if let Err(e) = res {
        rep.problems.push(format!("{e:#}"));
    }
    rep.pass =
        rep.problems.is_empty() && rep.drills.len() == 2 && rep.drills.iter().all(|d| d.pass);
    rep.print(opts.json);
    if rep.pass { 0 } else { 1 }
}

/// What a drill starts from.
struct Ready {
    local: Vec<Vrid>,
    peer: Vec<Vrid>,
    /// Where the load goes.
    targets: Vec<SocketAddrV4>,
}

/// Both hosts' VRIDs, once they show the drill may run. Err: why not.
fn preflight(opts: &Options) -> Result<Ready, String> {
    let local =
        vrids(&opts.local).map_err(|e| format!("cannot read this host's VRRP state: {e:#}"))?;
    let peer =
        vrids(&opts.peer).map_err(|e| format!("refusing: the peer does not answer: {e:#}"))?;
    if let Some(why) = refusal(&local, &peer, &opts.peer) {
        return Err(format!("refusing: {why}"));
    }
    let targets = if opts.targets.is_empty() {
        targets(&opts.local, &local).map_err(|e| format!("{e:#}"))?
    } else {
        opts.targets.clone()
    };
    Ok(Ready {
        local,
        peer,
        targets,
    })
}

impl DrillReport {
    fn print(&self, json: bool) {
        if json {
            match serde_json::to_string_pretty(self) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("fwlb drill: {e}"),
            }
            return;
        }
        print!("{}", report::drills_table(&self.drills));
        if let Some(n) = self.accepted_by_peer {
            println!("\nthe peer accepted {n} connection(s) while it held the VIPs");
        }
        for d in &self.drills {
            for p in &d.problems {
                println!("  {}: {p}", d.title);
            }
        }
        for p in &self.problems {
            println!("  {p}");
        }
        println!("\n{}", if self.pass { "PASS" } else { "FAIL" });
    }
}

/// One timed move of every VRID from `from` to `to`: `act` starts it (t0 just before).
#[allow(clippy::too_many_arguments)]
fn phase(
    from: (&str, &str),
    to: (&str, &str),
    to_vrids: &[Vrid],
    targets: &[SocketAddrV4],
    act: impl FnOnce() -> Result<()>,
) -> Result<Outcome> {
    let w_to = Watcher::start(to.1.to_string(), POLL, || Ok(()));
    let w_from = Watcher::start(from.1.to_string(), POLL, || Ok(()));
    let load = (!targets.is_empty()).then(|| {
        Load::start(
            LoadSpec {
                aims: targets
                    .iter()
                    .map(|a| Aim {
                        addr: *a,
                        send_proxy: false,
                        http: false,
                    })
                    .collect(),
                sources: Vec::new(),
                every: LOAD_EVERY,
                timeout: CONNECT_TIMEOUT,
                max: 1000,
                limit: Duration::from_secs(10),
            },
            || Ok(()),
        )
    });
    let res = (|| -> Result<Instant> {
        pause(BASELINE)?;
        let t0 = Instant::now();
        act()?;
        let mut done: Option<Instant> = None;
        while t0.elapsed() < LIMIT {
            pause(Duration::from_millis(10))?;
            let ok =
                probe::all_in(&w_to.latest(), "master") && !probe::any_master(&w_from.latest());
            match (ok, done) {
                (true, None) => done = Some(Instant::now()),
                (true, Some(d)) if d.elapsed() >= AFTER => break,
                _ => {}
            }
        }
        Ok(t0)
    })();
    let reqs = match load {
        Some(l) => l.stop()?,
        None => Vec::new(),
    };
    let (to_seen, from_seen) = (w_to.stop(), w_from.stop());
    let t0 = res?;
    let interval = to_vrids
        .iter()
        .map(|v| v.interval)
        .max()
        .unwrap_or_default();
    let prio = to_vrids.iter().map(|v| v.priority).min().unwrap_or(100);
    let no_host = |_: IpAddr| -> Option<String> { None };
    Ok(drill::evaluate(&drill::Observed {
        kind: Kind::Handover,
        from: from.0,
        to: to.0,
        t0,
        budget: drill::budget(interval, prio),
        to_seen: &to_seen,
        from_seen: &from_seen,
        reqs: &reqs,
        host_of: &no_host,
    }))
}

fn run(
    opts: &Options,
    local: &[Vrid],
    peer: &[Vrid],
    targets: &[SocketAddrV4],
    me: &str,
    them: &str,
    rep: &mut DrillReport,
) -> Result<()> {
    let before = accepted(&opts.peer);
    // Over: this host on standby; the peer takes every VRID after its Skew_Time.
    let mut over = phase((me, &opts.local), (them, &opts.peer), peer, targets, || {
        ask(&opts.local, "vrrp standby").map(|_| ())
    })?;
    over.title = "hand over (vrrp standby)".into();
    let held = vrids(&opts.peer)?;
    if !held.iter().all(|v| v.state == "master") {
        over.problems.push(format!(
            "the peer holds only VRIDs {:?}",
            held.iter()
                .filter(|v| v.state == "master")
                .map(|v| v.vrid)
                .collect::<Vec<_>>()
        ));
        over.pass = false;
    }
    let after = accepted(&opts.peer);
    if let (Some(b), Some(a)) = (before, after) {
        rep.accepted_by_peer = Some(a.saturating_sub(b));
        if !targets.is_empty() && a <= b {
            over.problems
                .push("the peer accepted no connection while it held the VIPs".into());
            over.pass = false;
        }
    }
    let failed = !over.pass;
    rep.drills.push(over);
    if failed {
        bail!("the peer did not take over cleanly: not handing back by standby (both resumed)");
    }
    // Back: resume here, stand the peer by; this host takes every VRID after its Skew_Time.
    let mut back = phase(
        (them, &opts.peer),
        (me, &opts.local),
        local,
        targets,
        || {
            ask(&opts.local, "vrrp resume")?;
            ask(&opts.peer, "vrrp standby").map(|_| ())
        },
    )?;
    back.name = "handback".into();
    back.title = "hand back (vrrp standby on the peer)".into();
    rep.drills.push(back);
    ask(&opts.peer, "vrrp resume")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(vrid: u8, state: &str, master: &str) -> Vrid {
        Vrid {
            vrid,
            state: state.into(),
            standby: false,
            master: Some(master.into()),
            priority: 100,
            addresses: vec![],
            interval: Duration::from_millis(100),
        }
    }

    #[test]
    fn refusals() {
        let local = vec![v(1, "master", "192.0.2.2"), v(2, "master", "10.0.0.2")];
        let peer = vec![v(1, "backup", "192.0.2.2"), v(2, "backup", "10.0.0.2")];
        assert_eq!(refusal(&local, &peer, "p"), None);
        let r = refusal(&local, &peer[..1], "p").unwrap_or_default();
        assert!(r.contains("VRIDs differ"), "{r}");
        let mut standby = peer.clone();
        standby[1].standby = true;
        assert!(
            refusal(&local, &standby, "p")
                .unwrap_or_default()
                .contains("not a healthy backup")
        );
        let mut deaf = peer.clone();
        deaf[0].master = Some("192.0.2.9".into());
        assert!(
            refusal(&local, &deaf, "p")
                .unwrap_or_default()
                .contains("does not hear")
        );
        let r = refusal(&peer, &local, "p").unwrap_or_default();
        assert!(r.contains("this host is the backup"), "{r}");
        let mut split = local.clone();
        split[1].state = "backup".into();
        assert!(
            refusal(&split, &peer, "p")
                .unwrap_or_default()
                .contains("not the master")
        );
    }
}
