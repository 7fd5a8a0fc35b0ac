//! The VRRP speaker: the thin I/O loop around the pure state machines (Linux). One raw
//! protocol-112 socket per instance (IPv4, or IPv6 for a VRRPv3 instance whose addresses are
//! IPv6), link state from rtnetlink events (a cable pull is seen at once), gratuitous ARP or
//! unsolicited neighbour advertisements through a packet socket. Every socket is opened by the privileged
//! parent before the fork ([`open`]); the unprivileged child runs the loop ([`run`]) and asks
//! the parent to add or remove the VIPs and to run notify scripts. Every decision is made by
//! `fsm::Machine` and `group::Group`; this file only turns their actions into requests and
//! packets, and packets into events.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::fsm::{self, Action, Event, Machine, State};
use super::group::{self, Group};
use super::track::{self, Pools, TrackStatus};
use crate::config;
use crate::privsep::{Client, Request, Transition};
use crate::sys::netlink::{self, Netlink};
use crate::sys::raw::{GROUP_V4, GROUP_V6, PacketSocket, VrrpSocket};
use crate::wire::{arp, ndisc, vrrp};

pub use super::status::{InstanceStatus, Operator, OperatorTx, Status};

/// What moves the priorities (`track`): the balancers' counts, and each instance's track
/// list in configuration order (a reload sends new lists).
pub struct Tracking {
    pub pools: watch::Receiver<Pools>,
    pub lists: watch::Receiver<Vec<Vec<config::Track>>>,
}

/// One configured virtual router and its I/O.
struct Instance {
    cfg: config::Vrrp,
    ifindex: u32,
    mac: [u8; 6],
    /// The advert source and tie-break address: the interface's IPv4 address, or for IPv6
    /// its link-local address (RFC 5798 §5.1.2.1; a global one with global unicast peers).
    primary: IpAddr,
    vips: Vec<(IpAddr, u8)>,
    /// The addresses in advert order: for IPv6 a link-local VIP first (RFC 5798 §5.2.9).
    advert_addrs: Vec<IpAddr>,
    sock: Arc<VrrpSocket>,
    /// Gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6).
    garp: Arc<PacketSocket>,
    /// IPv6: the interface forwards, so our advertisements carry the Router flag.
    router: bool,
    auth: vrrp::Auth,
    ident: u16,
    /// Unicast peers: adverts go to each of them instead of the group, and only theirs count.
    peers: Vec<IpAddr>,
    /// The rest of the gratuitous ARP / NA burst of the last takeover, still being sent:
    /// stopped when the VIPs go, or a host that lost mastership would point clients back at
    /// itself.
    garp_burst: Option<tokio::task::AbortHandle>,
    /// What `show vrrp` counts; owned here, published as snapshots.
    counters: Counters,
    /// The tracks and how they stand (`show vrrp`).
    tracks: Vec<TrackStatus>,
}

/// The per-instance counters of `show vrrp` (the rest of a row is read off the machine).
#[derive(Debug, Default)]
struct Counters {
    transitions: u64,
    adverts_sent: u64,
    adverts_received: u64,
    dropped: HashMap<String, u64>,
    /// The current master as last seen: the source of the last valid advert, or ourselves.
    master: Option<IpAddr>,
}

fn wire_version(v: u8) -> vrrp::Version {
    if v == 3 {
        vrrp::Version::V3
    } else {
        vrrp::Version::V2
    }
}

fn interval_cs(d: Duration) -> u16 {
    (d.as_millis() / 10).min(u128::from(u16::MAX)) as u16
}

impl Instance {
    fn repr(&self, priority: u8) -> vrrp::VrrpRepr {
        vrrp::VrrpRepr {
            version: wire_version(self.cfg.version),
            vrid: self.cfg.vrid,
            priority,
            interval_cs: interval_cs(self.cfg.advert_interval),
            auth: self.auth,
            addrs: self.advert_addrs.clone(),
        }
    }

    fn v6(&self) -> bool {
        self.primary.is_ipv6()
    }

    /// To the group, or to each unicast peer (the checksum covers the destination).
    fn send_advert(&mut self, priority: u8) {
        let repr = self.repr(priority);
        let group = if self.v6() {
            IpAddr::V6(GROUP_V6)
        } else {
            IpAddr::V4(GROUP_V4)
        };
        let dsts = if self.peers.is_empty() {
            vec![group]
        } else {
            self.peers.clone()
        };
        for dst in dsts {
            let sent = match (self.primary, dst) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    self.ident = self.ident.wrapping_add(1);
                    let pkt = vrrp::emit_ipv4_to(
                        &repr,
                        src,
                        dst,
                        self.ident,
                        vrrp::ChecksumMode::PseudoHeader,
                    );
                    self.sock.send(&pkt, dst)
                }
                (IpAddr::V6(src), IpAddr::V6(dst6)) => {
                    let pkt = vrrp::emit(&repr, src.into(), dst, vrrp::ChecksumMode::PseudoHeader);
                    self.sock.send_v6(&pkt, src, dst6)
                }
                // The configuration refuses peers of the other family.
                _ => continue,
            };
            if let Err(e) = sent {
                warn!(target: "vrrp", vrid = self.cfg.vrid, %dst, "cannot send advertisement: {e}");
            }
        }
    }

    /// The frames announcing our VIPs at our MAC.
    fn announcements(&self) -> Vec<Vec<u8>> {
        self.vips
            .iter()
            .map(|(a, _)| match a {
                IpAddr::V4(v4) => arp::gratuitous(self.mac, *v4),
                IpAddr::V6(v6) => ndisc::unsolicited_na_frame_as(self.mac, *v6, self.router),
            })
            .collect()
    }
}

/// What a receive task read: a whole IPv4 packet, or an IPv6 payload with the header fields
/// the kernel reported beside it.
enum Datagram {
    V4(Vec<u8>),
    V6 {
        payload: Vec<u8>,
        src: Ipv6Addr,
        dst: Option<Ipv6Addr>,
        hop_limit: Option<u8>,
    },
}

impl Datagram {
    fn parse(&self) -> Result<vrrp::Received, vrrp::Drop> {
        match self {
            Datagram::V4(buf) => vrrp::parse_ip_packet(buf),
            Datagram::V6 {
                payload,
                src,
                dst,
                hop_limit,
            } => {
                // No hop limit reported counts as a wrong one: the check is not skipped.
                let (dst, ttl) = (dst.unwrap_or(GROUP_V6), hop_limit.unwrap_or(0));
                let repr = vrrp::parse(payload, (*src).into(), dst.into(), ttl)?;
                Ok(vrrp::Received {
                    src: (*src).into(),
                    dst: dst.into(),
                    ttl,
                    repr,
                })
            }
        }
    }
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Events from the per-instance receive tasks and the link watcher.
enum Input {
    /// Read on the socket of instance `k` (its index in the speaker's instances).
    Packet {
        k: usize,
        datagram: Datagram,
    },
    Link(netlink::Link),
}

/// The interfaces by name, as listed at open.
type Links = HashMap<String, netlink::Link>;

/// Open everything the instances need. Needs root (raw sockets): the privileged parent
/// does this before the fork. Addresses of ours left on an interface by a previous run that
/// died are removed: a restarted host must rejoin as backup, not answer for the VIPs.
fn open_instances(cfgs: &[config::Vrrp]) -> Result<(Vec<Instance>, Vec<Machine>, Links)> {
    let mut nl = Netlink::requests().context("rtnetlink")?;
    let links: Links = nl
        .dump_links()
        .context("listing links")?
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
    let addrs = nl.dump_addrs().context("listing addresses")?;
    let (mut out, mut machines) = (Vec::new(), Vec::new());
    for c in cfgs {
        let Some(link) = links.get(&c.interface) else {
            bail!("[[vrrp]] vrid {}: no interface {:?}", c.vrid, c.interface);
        };
        let vips = virtual_addresses(c)?;
        let v6 = vips.first().is_some_and(|(a, _)| a.is_ipv6());
        let primary = primary_address(c, link.index, &addrs, &vips, v6)?;
        let mut advert_addrs: Vec<IpAddr> = vips.iter().map(|(a, _)| *a).collect();
        // Stable: configured order otherwise, as keepalived (which compares the lists as sets).
        advert_addrs.sort_by_key(|a| !matches!(a, IpAddr::V6(a6) if is_link_local(a6)));
        remove_leftovers(&mut nl, c, link.index, &addrs, &vips);
        let (sock, garp) = open_sockets(c, link.index, v6)?;
        // Read now: the child runs chrooted, without /proc.
        let router = v6
            && std::fs::read_to_string(format!(
                "/proc/sys/net/ipv6/conf/{}/forwarding",
                c.interface
            ))
            .is_ok_and(|s| s.trim() == "1");
        let auth = match &c.password {
            Some(pw) => vrrp::Auth::password(pw.as_bytes()),
            None => vrrp::Auth::None,
        };
        machines.push(Machine::new(machine_params(c, primary)));
        out.push(Instance {
            cfg: c.clone(),
            ifindex: link.index,
            mac: link.mac.unwrap_or([0; 6]),
            primary,
            vips,
            advert_addrs,
            sock: Arc::new(sock),
            garp: Arc::new(garp),
            router,
            auth,
            ident: 0,
            peers: c.peers.clone(),
            garp_burst: None,
            counters: Counters::default(),
            tracks: Vec::new(),
        });
    }
    Ok((out, machines, links))
}

/// The instance's VIPs, all of one family with its peers.
fn virtual_addresses(c: &config::Vrrp) -> Result<Vec<(IpAddr, u8)>> {
    let vips: Vec<(IpAddr, u8)> = c
        .addresses
        .iter()
        .filter_map(|a| config::parse_cidr(a))
        .collect();
    let v6 = vips.first().is_some_and(|(a, _)| a.is_ipv6());
    // The configuration checks these; `fwlb vrrpd` builds instances itself.
    if vips.iter().any(|(a, _)| a.is_ipv6() != v6) || c.peers.iter().any(|p| p.is_ipv6() != v6) {
        bail!(
            "[[vrrp]] vrid {}: addresses and peers must be all IPv4 or all IPv6",
            c.vrid
        );
    }
    if v6 && c.version != 3 {
        bail!("[[vrrp]] vrid {}: IPv6 needs VRRP version 3", c.vrid);
    }
    Ok(vips)
}

/// The primary address: the interface's first IPv4 address that is not one of ours; for IPv6
/// its link-local address, or a global one when every unicast peer is global (the peers list
/// us by the address we send from).
fn primary_address(
    c: &config::Vrrp,
    ifindex: u32,
    addrs: &[netlink::Addr],
    vips: &[(IpAddr, u8)],
    v6: bool,
) -> Result<IpAddr> {
    let own = || {
        addrs
            .iter()
            .filter(|a| a.index == ifindex && !vips.iter().any(|(v, _)| *v == a.addr))
            .map(|a| a.addr)
    };
    let global_peers = !c.peers.is_empty()
        && c.peers
            .iter()
            .all(|p| matches!(p, IpAddr::V6(p6) if !is_link_local(p6)));
    let primary = if !v6 {
        own().find(|a| a.is_ipv4())
    } else if global_peers {
        own().find(|a| matches!(a, IpAddr::V6(a6) if !is_link_local(a6)))
    } else {
        own().find(|a| matches!(a, IpAddr::V6(a6) if is_link_local(a6)))
    };
    primary.with_context(|| {
        format!(
            "[[vrrp]] vrid {}: {} has no {} of its own",
            c.vrid,
            c.interface,
            match (v6, global_peers) {
                (false, _) => "IPv4 address",
                (true, false) => "IPv6 link-local address (is IPv6 enabled on it?)",
                (true, true) => "global IPv6 address to send to the global `peers` from",
            }
        )
    })
}

/// Remove VIPs an earlier run left on the interface (it died without removing them).
fn remove_leftovers(
    nl: &mut Netlink,
    c: &config::Vrrp,
    ifindex: u32,
    addrs: &[netlink::Addr],
    vips: &[(IpAddr, u8)],
) {
    for (a, p) in vips {
        if addrs.iter().any(|x| x.index == ifindex && x.addr == *a) {
            warn!(target: "vrrp", vrid = c.vrid, interface = %c.interface,
                "removing {a}/{p}, left on the interface by an earlier run");
            if let Err(e) = nl.del_addr(ifindex, *a, *p) {
                warn!(target: "vrrp", vrid = c.vrid, "cannot remove {a}/{p}: {e}");
            }
        }
    }
}

/// The VRRP socket and the gratuitous ARP / neighbour advertisement socket.
fn open_sockets(c: &config::Vrrp, ifindex: u32, v6: bool) -> Result<(VrrpSocket, PacketSocket)> {
    let sock = if v6 {
        VrrpSocket::open_v6(&c.interface, ifindex)
    } else {
        VrrpSocket::open_v4(&c.interface, ifindex)
    }
    .with_context(|| format!("VRRP socket on {}", c.interface))?;
    let (ethertype, what) = if v6 {
        (ndisc::ETHERTYPE_IPV6, "neighbour advertisement")
    } else {
        (0x0806, "ARP")
    };
    let garp = PacketSocket::open_send_only(ifindex, ethertype)
        .with_context(|| format!("{what} socket on {}", c.interface))?;
    Ok((sock, garp))
}

fn machine_params(c: &config::Vrrp, primary: IpAddr) -> fsm::Params {
    let version = if c.version == 3 {
        fsm::Version::V3
    } else {
        fsm::Version::V2
    };
    let mut p = fsm::Params::new(c.vrid, version, c.priority, primary);
    p.advert_interval = c.advert_interval;
    p.preempt = c.preempt;
    p.preempt_delay = c.preempt_delay;
    p
}

/// The groups: every `depends` link joins two VRIDs into one (symmetric) group.
fn groups(cfgs: &[config::Vrrp]) -> Vec<Group> {
    let pairs: Vec<(u8, Vec<u8>)> = cfgs.iter().map(|c| (c.vrid, c.depends.clone())).collect();
    super::group::groups_from_depends(&pairs)
}

/// Every instance, opened and ready to run: the pure core (`machines` and `groups`, the
/// machines index-aligned with `inst`) and the I/O it drives.
pub struct Speaker {
    inst: Vec<Instance>,
    machines: Vec<Machine>,
    groups: Vec<Group>,
    links: Links,
    events: Netlink,
    operator: (OperatorTx, mpsc::UnboundedReceiver<Operator>),
    status: watch::Sender<Vec<InstanceStatus>>,
}

impl Speaker {
    /// Where the control port sends operator requests (`vrrp standby`, `vrrp resume`).
    pub fn operator(&self) -> OperatorTx {
        self.operator.0.clone()
    }

    /// What `show vrrp` and the hand-over read: a new snapshot whenever something changed.
    pub fn status(&self) -> Status {
        self.status.subscribe()
    }
}

/// Open the sockets of every instance. Needs root and no runtime: the privileged parent calls
/// it before the fork, the child runs the result.
pub fn open(cfgs: &[config::Vrrp]) -> Result<Speaker> {
    let (inst, machines, links) = open_instances(cfgs)?;
    // Rows from the start: `show vrrp` lists every instance (in Initialize) before it runs.
    let first = snapshot(&inst, &machines);
    Ok(Speaker {
        inst,
        machines,
        groups: groups(cfgs),
        links,
        events: Netlink::link_events().context("link events")?,
        operator: mpsc::unbounded_channel(),
        status: watch::channel(first).0,
    })
}

/// Run every instance until `stop`; then give up mastership with priority 0 (the peer takes
/// over within its skew time) and remove the VIPs. `ops` is the privileged parent; `tracking`
/// moves the priorities.
pub async fn run(
    sp: Speaker,
    ops: Arc<Client>,
    mut stop: watch::Receiver<bool>,
    mut tracking: Tracking,
) -> Result<()> {
    let Speaker {
        inst,
        machines,
        groups,
        links,
        events,
        operator: (_, mut operator),
        status,
    } = sp;
    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    spawn_receivers(&inst, &tx)?;
    spawn_link_watcher(events, tx)?;
    let mut sp = Running {
        inst,
        machines,
        groups,
        ops,
        status,
    };
    sp.set_tracks(&tracking.lists.borrow_and_update());
    sp.retrack(&tracking.pools.borrow_and_update().clone(), Instant::now());
    sp.start(&links, Instant::now());
    loop {
        sp.publish();
        let next = sp.machines.iter().filter_map(Machine::next_deadline).min();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = sleep => sp.timers(Instant::now()),
            Some(req) = operator.recv() => sp.operator(req, Instant::now()),
            Some(input) = rx.recv() => sp.input(input, Instant::now()),
            Ok(()) = tracking.pools.changed() => {
                let pools = tracking.pools.borrow_and_update().clone();
                sp.retrack(&pools, Instant::now());
            }
            Ok(()) = tracking.lists.changed() => {
                sp.set_tracks(&tracking.lists.borrow_and_update());
                let pools = tracking.pools.borrow().clone();
                sp.retrack(&pools, Instant::now());
            }
        }
    }
    sp.shutdown(Instant::now());
    sp.publish();
    Ok(())
}

/// One receive task per instance socket; each tags what it reads with its instance's index.
fn spawn_receivers(inst: &[Instance], tx: &mpsc::Sender<Input>) -> Result<()> {
    for (k, i) in inst.iter().enumerate() {
        let (sock, tx, vrid, v6) = (
            crate::sys::async_fd(i.sock.clone()).context("registering the VRRP socket")?,
            tx.clone(),
            i.cfg.vrid,
            i.v6(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok(mut guard) = sock.readable().await else {
                    return;
                };
                let read = guard.try_io(|s| {
                    let s = s.get_ref();
                    if v6 {
                        s.recv_v6(&mut buf).map(|r| Datagram::V6 {
                            payload: buf.get(..r.len).unwrap_or_default().to_vec(),
                            src: r.src,
                            dst: r.dst,
                            hop_limit: r.hop_limit,
                        })
                    } else {
                        s.recv(&mut buf)
                            .map(|n| Datagram::V4(buf.get(..n).unwrap_or_default().to_vec()))
                    }
                });
                match read {
                    Ok(Ok(datagram)) => {
                        if tx.send(Input::Packet { k, datagram }).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => warn!(target: "vrrp", vrid, "receive: {e}"),
                    Err(_would_block) => {}
                }
            }
        });
    }
    Ok(())
}

/// Link state changes from rtnetlink, as they happen (a cable pull is seen at once).
fn spawn_link_watcher(events: Netlink, tx: mpsc::Sender<Input>) -> Result<()> {
    let events = crate::sys::async_fd(events).context("registering link events")?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let Ok(mut guard) = events.readable().await else {
                return;
            };
            match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
                Ok(Ok(n)) => {
                    for l in netlink::links(buf.get(..n).unwrap_or_default()) {
                        if tx.send(Input::Link(l)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => warn!(target: "vrrp", "link events: {e}"),
                Err(_would_block) => {}
            }
        }
    });
    Ok(())
}

/// The speaker while it runs: `machines` and `groups` decide (through
/// [`group::step_with_groups`]), the rest carries their actions out.
struct Running {
    inst: Vec<Instance>,
    machines: Vec<Machine>,
    groups: Vec<Group>,
    ops: Arc<Client>,
    status: watch::Sender<Vec<InstanceStatus>>,
}

impl Running {
    /// One event for instance `k`: the pure core decides, including the group cascade; this
    /// only performs the actions, in the order given.
    fn step(&mut self, k: usize, ev: Event, now: Instant) {
        let acts = group::step_with_groups(&mut self.groups, &mut self.machines, k, ev, now);
        for (j, a) in acts {
            self.perform(j, a);
        }
    }

    fn start(&mut self, links: &Links, now: Instant) {
        for k in 0..self.inst.len() {
            let up = links.get(&self.inst[k].cfg.interface).is_some_and(|l| l.up);
            // A node that comes up never starts as master unless it owns the addresses: it
            // listens first (Master_Down_Interval), so a restarted host rejoins as backup.
            self.step(k, Event::Startup { link_up: up }, now);
        }
    }

    fn timers(&mut self, now: Instant) {
        for k in 0..self.inst.len() {
            // Checked one by one: an earlier instance's cascade may have moved this deadline.
            if self.machines[k].next_deadline().is_some_and(|t| t <= now) {
                self.step(k, Event::Timer, now);
            }
        }
    }

    fn operator(&mut self, req: Operator, now: Instant) {
        let (vrid, ev, what) = match req {
            Operator::Standby(v) => (v, Event::Standby, "standby"),
            Operator::Resume(v) => (v, Event::Resume, "resume"),
        };
        for k in 0..self.inst.len() {
            if vrid.is_none_or(|v| v == self.inst[k].cfg.vrid) {
                info!(target: "vrrp", vrid = self.inst[k].cfg.vrid, "operator: {what}");
                self.step(k, ev, now);
            }
        }
    }

    fn input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Packet { k, datagram } => {
                if let Some(ev) = self.inst.get_mut(k).and_then(|i| i.receive(&datagram)) {
                    self.step(k, ev, now);
                }
            }
            Input::Link(l) => {
                for k in 0..self.inst.len() {
                    if self.inst[k].ifindex == l.index {
                        info!(target: "vrrp", vrid = self.inst[k].cfg.vrid, interface = %l.name, up = l.up, "link state");
                        let ev = if l.up { Event::LinkUp } else { Event::LinkDown };
                        self.step(k, ev, now);
                    }
                }
            }
        }
    }

    /// New track lists (a reload), in configuration order: the instances are the same.
    fn set_tracks(&mut self, lists: &[Vec<config::Track>]) {
        if lists.len() != self.inst.len() {
            warn!(target: "vrrp", "track lists for {} instances, {} running: ignored", lists.len(), self.inst.len());
            return;
        }
        for (i, l) in self.inst.iter_mut().zip(lists) {
            if i.cfg.track != *l {
                info!(target: "vrrp", vrid = i.cfg.vrid, "track: {} balancer(s) now", l.len());
                i.cfg.track = l.clone();
            }
        }
    }

    /// Each instance's priority from its tracks and the balancers' counts; a change is an
    /// event for its machine.
    fn retrack(&mut self, pools: &Pools, now: Instant) {
        for k in 0..self.inst.len() {
            let i = &mut self.inst[k];
            let t = track::tracked(i.cfg.priority, &i.cfg.track, pools);
            i.tracks = t.tracks;
            let old = self.machines[k].priority();
            if t.priority == old {
                continue;
            }
            let why = track::reasons(&i.tracks);
            let why = if why.is_empty() {
                "every tracked balancer has a healthy server".to_string()
            } else {
                why.join(", ")
            };
            warn!(target: "vrrp", vrid = i.cfg.vrid, interface = %i.cfg.interface,
                "priority {old} -> {} (configured {}; {why})", t.priority, i.cfg.priority);
            self.step(k, Event::Priority(t.priority), now);
        }
    }

    /// Priority 0 and the VIPs removed, instance by instance.
    fn shutdown(&mut self, now: Instant) {
        for k in 0..self.inst.len() {
            let running = self.machines[k].state() != State::Initialize;
            self.step(k, Event::Shutdown, now);
            // The one transition no action reports (Became*/EnteredFault report the others).
            if running && self.machines[k].state() == State::Initialize {
                self.inst[k].counters.transitions += 1;
            }
        }
    }

    /// Send a snapshot if anything changed since the last one (at most once per loop turn).
    fn publish(&mut self) {
        for (i, m) in self.inst.iter_mut().zip(&self.machines) {
            if m.state() == State::Master {
                i.counters.master = Some(i.primary);
            }
        }
        let now = snapshot(&self.inst, &self.machines);
        self.status.send_if_modified(|last| {
            let changed = *last != now;
            if changed {
                *last = now;
            }
            changed
        });
    }
}

/// The `show vrrp` rows.
fn snapshot(inst: &[Instance], machines: &[Machine]) -> Vec<InstanceStatus> {
    inst.iter()
        .zip(machines)
        .map(|(i, m)| InstanceStatus {
            vrid: i.cfg.vrid,
            interface: i.cfg.interface.clone(),
            state: m.state(),
            priority: i.cfg.priority,
            effective_priority: m.effective_priority(),
            tracked_priority: m.priority(),
            track: i.tracks.clone(),
            why: why(i, m),
            master: i.counters.master.map(|a| a.to_string()),
            transitions: i.counters.transitions,
            adverts_sent: i.counters.adverts_sent,
            adverts_received: i.counters.adverts_received,
            dropped: i.counters.dropped.clone(),
            standby: m.standby(),
            addresses: i.vips.iter().map(|(a, p)| format!("{a}/{p}")).collect(),
            advert_interval_ms: u64::try_from(i.cfg.advert_interval.as_millis()).unwrap_or(0),
        })
        .collect()
}

/// What holds the effective priority where it is, for `show vrrp`.
fn why(i: &Instance, m: &Machine) -> Vec<String> {
    let mut out = track::reasons(&i.tracks);
    if m.group_held() {
        out.push("held by its group (depends): 0".into());
    }
    if m.standby() {
        out.push("standby: 0".into());
    }
    out
}

impl Running {
    /// Carry out one action of instance `k`'s machine.
    fn perform(&mut self, k: usize, a: Action) {
        let (ops, i) = (&*self.ops, &mut self.inst[k]);
        match a {
            Action::SendAdvert { priority } => {
                i.send_advert(priority);
                i.counters.adverts_sent += 1;
            }
            Action::AddVips => i.set_vips(ops, true),
            Action::RemoveVips => i.set_vips(ops, false),
            Action::SendGratuitous => i.announce(),
            Action::BecameMaster => {
                info!(target: "vrrp", vrid = i.cfg.vrid, interface = %i.cfg.interface, "became master");
                i.transition(ops, Transition::Master);
            }
            Action::BecameBackup => {
                info!(target: "vrrp", vrid = i.cfg.vrid, interface = %i.cfg.interface, "became backup");
                i.transition(ops, Transition::Backup);
            }
            Action::EnteredFault => {
                warn!(target: "vrrp", vrid = i.cfg.vrid, interface = %i.cfg.interface, "fault: interface down");
                i.transition(ops, Transition::Fault);
            }
            Action::Log(m) => info!(target: "vrrp", vrid = i.cfg.vrid, "{m}"),
        }
    }
}

impl Instance {
    /// Validate a received packet; count and drop what is not a valid advert for us.
    fn receive(&mut self, datagram: &Datagram) -> Option<Event> {
        let vrrp::Received { src, repr, .. } = match datagram.parse() {
            Ok(r) => r,
            Err(d) => {
                self.count_drop(d.as_str());
                return None;
            }
        };
        if !self.peers.is_empty() && !self.peers.contains(&src) {
            // Unicast mode: only the configured peers may take part in the election.
            self.count_drop("not-a-peer");
            return None;
        }
        if repr.vrid != self.cfg.vrid {
            // Another virtual router on the same segment: not ours, not an error.
            return None;
        }
        let addrs: Vec<IpAddr> = self.vips.iter().map(|(a, _)| *a).collect();
        let expect = vrrp::Expect {
            vrid: self.cfg.vrid,
            version: wire_version(self.cfg.version),
            interval_cs: (self.cfg.version == 2).then(|| interval_cs(self.cfg.advert_interval)),
            auth: &self.auth,
            addrs: &addrs,
            checksum: vrrp::ChecksumMode::PseudoHeader,
        };
        if let Err(d) = vrrp::check(&repr, &expect) {
            self.count_drop(d.as_str());
            if d == vrrp::Drop::AddrMismatch {
                // Split brain waiting to happen: both sides think they own different addresses.
                warn!(target: "vrrp", vrid = self.cfg.vrid, peer = %src,
                    "CONFIGURATION MISMATCH: the peer advertises {:?}, we have {:?}", repr.addrs, addrs);
            }
            return None;
        }
        self.counters.adverts_received += 1;
        self.counters.master = Some(src);
        Some(Event::Advert {
            src,
            priority: repr.priority,
            interval: Duration::from_millis(u64::from(repr.interval_cs) * 10),
        })
    }

    fn count_drop(&mut self, reason: &str) {
        *self.counters.dropped.entry(reason.to_string()).or_insert(0) += 1;
    }

    /// Ask the parent to add or remove the VIPs. Removing them also stops a takeover's
    /// announcements, or a host that lost mastership would point clients back at itself.
    fn set_vips(&mut self, ops: &Client, up: bool) {
        if !up && let Some(b) = self.garp_burst.take() {
            b.abort();
        }
        let req = Request::Vips {
            vrid: self.cfg.vrid,
            interface: self.cfg.interface.clone(),
            up,
        };
        let what = if up {
            "cannot add the addresses"
        } else {
            "cannot remove the addresses"
        };
        call_parent(ops, req, self.cfg.vrid, what);
    }

    /// Gratuitous ARP, or unsolicited NA with Override (RFC 5798 §6.4.2): one burst now, the
    /// rest spaced by `garp_interval` (a switch relearning the port may drop the first).
    fn announce(&mut self) {
        let frames = self.announcements();
        for f in &frames {
            let _ = self.garp.send(f);
        }
        let (sock, count, spacing) = (
            self.garp.clone(),
            self.cfg.garp_count,
            self.cfg.garp_interval,
        );
        if let Some(b) = self.garp_burst.take() {
            b.abort();
        }
        let burst = tokio::spawn(async move {
            for _ in 1..count {
                tokio::time::sleep(spacing).await;
                for f in &frames {
                    let _ = sock.send(f);
                }
            }
        });
        self.garp_burst = Some(burst.abort_handle());
    }

    /// Count a state change and ask the parent to run the notify script (freevrrpd's
    /// masterscript / backupscript) for it, if one is configured; it runs as root, outside
    /// the chroot, with a timeout.
    fn transition(&mut self, ops: &Client, state: Transition) {
        self.counters.transitions += 1;
        let script = match state {
            Transition::Master => &self.cfg.notify_master,
            Transition::Backup | Transition::Fault => &self.cfg.notify_backup,
        };
        if script.is_none() {
            return;
        }
        let req = Request::Notify {
            vrid: self.cfg.vrid,
            interface: self.cfg.interface.clone(),
            state,
        };
        call_parent(ops, req, self.cfg.vrid, "notify script");
    }
}

/// Send `req` to the privileged parent now (requests keep their order) and await the reply
/// on a task of its own: the speaker's loop never waits for the parent.
fn call_parent(ops: &Client, req: Request, vrid: u8, what: &'static str) {
    let done = ops.call_ok(req);
    tokio::spawn(async move {
        if let Err(e) = done.await {
            warn!(target: "vrrp", vrid, "{what}: {e}");
        }
    });
}
