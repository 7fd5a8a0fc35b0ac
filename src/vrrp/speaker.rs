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
use super::group::Group;
use crate::config;
use crate::privsep::{Client, Request, Transition};
use crate::sys::netlink::{self, Netlink};
use crate::sys::raw::{GROUP_V4, GROUP_V6, PacketSocket, VrrpSocket};
use crate::wire::{arp, ndisc, vrrp};

pub use super::status::{InstanceStatus, Operator, OperatorTx, Status};

/// One configured virtual router and its I/O.
struct Instance {
    cfg: config::Vrrp,
    machine: Machine,
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
    Packet {
        vrid: u8,
        iface: String,
        datagram: Datagram,
    },
    Link(netlink::Link),
}

/// Open everything the instances need. Needs root (raw sockets): the privileged parent
/// does this before the fork. Addresses of ours left on an interface by a previous run that
/// died are removed: a restarted host must rejoin as backup, not answer for the VIPs.
fn open_instances(
    cfgs: &[config::Vrrp],
) -> Result<(Vec<Instance>, HashMap<String, netlink::Link>)> {
    let mut nl = Netlink::requests().context("rtnetlink")?;
    let links: HashMap<String, netlink::Link> = nl
        .dump_links()
        .context("listing links")?
        .into_iter()
        .map(|l| (l.name.clone(), l))
        .collect();
    let addrs = nl.dump_addrs().context("listing addresses")?;
    let mut out = Vec::new();
    for c in cfgs {
        let Some(link) = links.get(&c.interface) else {
            bail!("[[vrrp]] vrid {}: no interface {:?}", c.vrid, c.interface);
        };
        let vips: Vec<(IpAddr, u8)> = c
            .addresses
            .iter()
            .filter_map(|a| config::parse_cidr(a))
            .collect();
        let v6 = vips.first().is_some_and(|(a, _)| a.is_ipv6());
        // The configuration checks these; `fwlb vrrpd` builds instances itself.
        if vips.iter().any(|(a, _)| a.is_ipv6() != v6) || c.peers.iter().any(|p| p.is_ipv6() != v6)
        {
            bail!(
                "[[vrrp]] vrid {}: addresses and peers must be all IPv4 or all IPv6",
                c.vrid
            );
        }
        if v6 && c.version != 3 {
            bail!("[[vrrp]] vrid {}: IPv6 needs VRRP version 3", c.vrid);
        }
        let own = || {
            addrs
                .iter()
                .filter(|a| a.index == link.index && !vips.iter().any(|(v, _)| *v == a.addr))
                .map(|a| a.addr)
        };
        // The primary address: the interface's first IPv4 address that is not one of ours;
        // for IPv6 its link-local address, or a global one when every unicast peer is global
        // (the peers list us by the address we send from).
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
        let primary = primary.with_context(|| {
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
        })?;
        let mut advert_addrs: Vec<IpAddr> = vips.iter().map(|(a, _)| *a).collect();
        // Stable: configured order otherwise, as keepalived (which compares the lists as sets).
        advert_addrs.sort_by_key(|a| !matches!(a, IpAddr::V6(a6) if is_link_local(a6)));
        for (a, p) in &vips {
            if addrs.iter().any(|x| x.index == link.index && x.addr == *a) {
                warn!(target: "vrrp", vrid = c.vrid, interface = %c.interface,
                    "removing {a}/{p}, left on the interface by an earlier run");
                if let Err(e) = nl.del_addr(link.index, *a, *p) {
                    warn!(target: "vrrp", vrid = c.vrid, "cannot remove {a}/{p}: {e}");
                }
            }
        }
        let sock = if v6 {
            VrrpSocket::open_v6(&c.interface, link.index)
        } else {
            VrrpSocket::open_v4(&c.interface, link.index)
        }
        .with_context(|| format!("VRRP socket on {}", c.interface))?;
        let (ethertype, what) = if v6 {
            (ndisc::ETHERTYPE_IPV6, "neighbour advertisement")
        } else {
            (0x0806, "ARP")
        };
        let garp = PacketSocket::open_send_only(link.index, ethertype)
            .with_context(|| format!("{what} socket on {}", c.interface))?;
        // Read now: the child runs chrooted, without /proc.
        let router = v6
            && std::fs::read_to_string(format!(
                "/proc/sys/net/ipv6/conf/{}/forwarding",
                c.interface
            ))
            .is_ok_and(|s| s.trim() == "1");
        let mut p = fsm::Params::new(
            c.vrid,
            if c.version == 3 {
                fsm::Version::V3
            } else {
                fsm::Version::V2
            },
            c.priority,
            primary,
        );
        p.advert_interval = c.advert_interval;
        p.preempt = c.preempt;
        p.preempt_delay = c.preempt_delay;
        let auth = match &c.password {
            Some(pw) => vrrp::Auth::password(pw.as_bytes()),
            None => vrrp::Auth::None,
        };
        out.push(Instance {
            cfg: c.clone(),
            machine: Machine::new(p),
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
        });
    }
    Ok((out, links))
}

/// The groups: every `depends` link joins two VRIDs into one (symmetric) group.
fn groups(cfgs: &[config::Vrrp]) -> Vec<Group> {
    let pairs: Vec<(u8, Vec<u8>)> = cfgs.iter().map(|c| (c.vrid, c.depends.clone())).collect();
    super::group::groups_from_depends(&pairs)
}

/// Every instance, opened and ready to run.
pub struct Speaker {
    inst: Vec<Instance>,
    links: HashMap<String, netlink::Link>,
    groups: Vec<Group>,
    events: Netlink,
    operator: (OperatorTx, mpsc::UnboundedReceiver<Operator>),
}

impl Speaker {
    /// Where the control port sends operator requests (`vrrp standby`, `vrrp resume`).
    pub fn operator(&self) -> OperatorTx {
        self.operator.0.clone()
    }
}

/// Open the sockets of every instance. Needs root and no runtime: the privileged parent calls
/// it before the fork, the child runs the result.
pub fn open(cfgs: &[config::Vrrp]) -> Result<Speaker> {
    let (inst, links) = open_instances(cfgs)?;
    Ok(Speaker {
        inst,
        links,
        groups: groups(cfgs),
        events: Netlink::link_events().context("link events")?,
        operator: mpsc::unbounded_channel(),
    })
}

/// Run every instance until `stop`; then give up mastership with priority 0 (the peer takes
/// over within its skew time) and remove the VIPs. `ops` is the privileged parent.
pub async fn run(
    sp: Speaker,
    ops: Arc<Client>,
    mut stop: watch::Receiver<bool>,
    status: Status,
) -> Result<()> {
    let Speaker {
        mut inst,
        links,
        mut groups,
        events,
        operator: (_, mut operator),
    } = sp;
    let events = crate::sys::async_fd(events).context("registering link events")?;
    let nl = &*ops;
    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    for i in &inst {
        let (sock, tx, vrid, iface, v6) = (
            crate::sys::async_fd(i.sock.clone()).context("registering the VRRP socket")?,
            tx.clone(),
            i.cfg.vrid,
            i.cfg.interface.clone(),
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
                        let input = Input::Packet {
                            vrid,
                            iface: iface.clone(),
                            datagram,
                        };
                        if tx.send(input).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => warn!(target: "vrrp", vrid, "receive: {e}"),
                    Err(_would_block) => {}
                }
            }
        });
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let Ok(mut guard) = events.readable().await else {
                    return;
                };
                match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
                    Ok(Ok(n)) => {
                        for l in netlink::links(&buf[..n]) {
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
    }
    let now = Instant::now();
    for k in 0..inst.len() {
        let up = links.get(&inst[k].cfg.interface).is_some_and(|l| l.up);
        // A node that comes up never starts as master unless it owns the addresses: it listens
        // first (Master_Down_Interval), so a restarted host rejoins as backup.
        let before = inst[k].machine.state();
        let acts = inst[k].machine.step(Event::Startup { link_up: up }, now);
        perform(&mut inst, k, before, acts, &mut groups, nl, &status);
    }
    loop {
        publish(&inst, &status);
        let next = inst.iter().filter_map(|i| i.machine.next_deadline()).min();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = sleep => {
                let now = Instant::now();
                for k in 0..inst.len() {
                    if inst[k].machine.next_deadline().is_some_and(|t| t <= now) {
                        let before = inst[k].machine.state();
                        let acts = inst[k].machine.step(Event::Timer, now);
                        perform(&mut inst, k, before, acts, &mut groups, nl, &status);
                    }
                }
            }
            Some(req) = operator.recv() => {
                let now = Instant::now();
                let (vrid, ev, what) = match req {
                    Operator::Standby(v) => (v, Event::Standby, "standby"),
                    Operator::Resume(v) => (v, Event::Resume, "resume"),
                };
                for k in 0..inst.len() {
                    if vrid.is_none_or(|v| v == inst[k].cfg.vrid) {
                        info!(target: "vrrp", vrid = inst[k].cfg.vrid, "operator: {what}");
                        let before = inst[k].machine.state();
                        let acts = inst[k].machine.step(ev, now);
                        perform(&mut inst, k, before, acts, &mut groups, nl, &status);
                    }
                }
            }
            Some(input) = rx.recv() => {
                let now = Instant::now();
                match input {
                    Input::Packet { vrid, iface, datagram } => {
                        let Some(k) = inst.iter().position(|i| i.cfg.vrid == vrid && i.cfg.interface == iface) else { continue };
                        if let Some(ev) = receive(&inst[k], &datagram, &status) {
                            let before = inst[k].machine.state();
                            let acts = inst[k].machine.step(ev, now);
                            perform(&mut inst, k, before, acts, &mut groups, nl, &status);
                        }
                    }
                    Input::Link(l) => {
                        for k in 0..inst.len() {
                            if inst[k].ifindex == l.index {
                                info!(target: "vrrp", vrid = inst[k].cfg.vrid, interface = %l.name, up = l.up, "link state");
                                let ev = if l.up { Event::LinkUp } else { Event::LinkDown };
                                let before = inst[k].machine.state();
                                let acts = inst[k].machine.step(ev, now);
                                perform(&mut inst, k, before, acts, &mut groups, nl, &status);
                            }
                        }
                    }
                }
            }
        }
    }
    let now = Instant::now();
    for k in 0..inst.len() {
        let before = inst[k].machine.state();
        let acts = inst[k].machine.step(Event::Shutdown, now);
        perform(&mut inst, k, before, acts, &mut groups, nl, &status);
    }
    publish(&inst, &status);
    Ok(())
}

/// Validate a received packet; count and drop what is not a valid advert for this instance.
fn receive(i: &Instance, datagram: &Datagram, status: &Status) -> Option<Event> {
    let count = |reason: &str| {
        with_status(status, i, |s| {
            *s.dropped.entry(reason.to_string()).or_insert(0) += 1
        });
    };
    let vrrp::Received { src, repr, .. } = match datagram.parse() {
        Ok(r) => r,
        Err(d) => {
            count(d.as_str());
            return None;
        }
    };
    if !i.peers.is_empty() && !i.peers.contains(&src) {
        // Unicast mode: only the configured peers may take part in the election.
        count("not-a-peer");
        return None;
    }
    if repr.vrid != i.cfg.vrid {
        // Another virtual router on the same segment: not ours, not an error.
        return None;
    }
    let addrs: Vec<IpAddr> = i.vips.iter().map(|(a, _)| *a).collect();
    let expect = vrrp::Expect {
        vrid: i.cfg.vrid,
        version: wire_version(i.cfg.version),
        interval_cs: (i.cfg.version == 2).then(|| interval_cs(i.cfg.advert_interval)),
        auth: &i.auth,
        addrs: &addrs,
        checksum: vrrp::ChecksumMode::PseudoHeader,
    };
    if let Err(d) = vrrp::check(&repr, &expect) {
        count(d.as_str());
        if d == vrrp::Drop::AddrMismatch {
            // Split brain waiting to happen: both sides think they own different addresses.
            warn!(target: "vrrp", vrid = i.cfg.vrid, peer = %src,
                "CONFIGURATION MISMATCH: the peer advertises {:?}, we have {:?}", repr.addrs, addrs);
        }
        return None;
    }
    with_status(status, i, |s| {
        s.adverts_received += 1;
        s.master = Some(src.to_string());
    });
    Some(Event::Advert {
        src,
        priority: repr.priority,
        interval: Duration::from_millis(u64::from(repr.interval_cs) * 10),
    })
}

/// Carry out a machine's actions, and feed group consequences back into the machines.
fn perform(
    inst: &mut [Instance],
    k: usize,
    before: State,
    acts: Vec<Action>,
    groups: &mut [Group],
    ops: &Client,
    status: &Status,
) {
    let mut work = vec![(k, before, acts)];
    while let Some((k, before, acts)) = work.pop() {
        for a in acts {
            let i = &mut inst[k];
            match a {
                Action::SendAdvert { priority } => {
                    i.send_advert(priority);
                    with_status(status, i, |s| s.adverts_sent += 1);
                }
                Action::AddVips | Action::RemoveVips => {
                    let up = matches!(a, Action::AddVips);
                    if !up && let Some(b) = i.garp_burst.take() {
                        b.abort();
                    }
                    let req = Request::Vips {
                        vrid: i.cfg.vrid,
                        interface: i.cfg.interface.clone(),
                        up,
                    };
                    // Sent now, in order; the reply is awaited off the speaker's loop.
                    let (done, vrid) = (ops.call_ok(req), i.cfg.vrid);
                    tokio::spawn(async move {
                        if let Err(e) = done.await {
                            warn!(target: "vrrp", vrid, "cannot {} the addresses: {e}",
                                if up { "add" } else { "remove" });
                        }
                    });
                }
                Action::SendGratuitous => {
                    // Gratuitous ARP, or unsolicited NA with Override (RFC 5798 §6.4.2).
                    let frames = i.announcements();
                    for f in &frames {
                        let _ = i.garp.send(f);
                    }
                    // The rest of the burst, spaced by `garp_interval` (a switch relearning
                    // the port may drop the first).
                    let (sock, count, spacing) =
                        (i.garp.clone(), i.cfg.garp_count, i.cfg.garp_interval);
                    if let Some(b) = i.garp_burst.take() {
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
                    i.garp_burst = Some(burst.abort_handle());
                }
                Action::BecameMaster => {
                    info!(target: "vrrp", vrid = i.cfg.vrid, interface = %i.cfg.interface, "became master");
                    notify(ops, i, Transition::Master);
                }
                Action::BecameBackup => {
                    info!(target: "vrrp", vrid = i.cfg.vrid, interface = %i.cfg.interface, "became backup");
                    notify(ops, i, Transition::Backup);
                }
                Action::EnteredFault => {
                    warn!(target: "vrrp", vrid = i.cfg.vrid, interface = %i.cfg.interface, "fault: interface down");
                    notify(ops, i, Transition::Fault);
                }
                Action::Log(m) => info!(target: "vrrp", vrid = i.cfg.vrid, "{m}"),
            }
        }
        let after = inst[k].machine.state();
        if before != after {
            with_status(status, &inst[k], |s| s.transitions += 1);
            let vrid = inst[k].cfg.vrid;
            let now = Instant::now();
            for g in groups.iter_mut() {
                for (member, ev) in g.on_member_state(vrid, after) {
                    if let Some(m) = inst.iter().position(|x| x.cfg.vrid == member) {
                        let before = inst[m].machine.state();
                        let acts = inst[m].machine.step(ev, now);
                        work.push((m, before, acts));
                    }
                }
            }
        }
    }
}

/// Ask the parent to run the notify script (freevrrpd's masterscript / backupscript) for
/// this state, if one is configured; it runs as root, outside the chroot, with a timeout.
fn notify(ops: &Client, i: &Instance, state: Transition) {
    let script = match state {
        Transition::Master => &i.cfg.notify_master,
        Transition::Backup | Transition::Fault => &i.cfg.notify_backup,
    };
    if script.is_none() {
        return;
    }
    let req = Request::Notify {
        vrid: i.cfg.vrid,
        interface: i.cfg.interface.clone(),
        state,
    };
    let (done, vrid) = (ops.call_ok(req), i.cfg.vrid);
    tokio::spawn(async move {
        if let Err(e) = done.await {
            warn!(target: "vrrp", vrid, "notify script: {e}");
        }
    });
}

/// Change instance `i`'s entry of the shared status (a poisoned lock just skips the update).
fn with_status(status: &Status, i: &Instance, f: impl FnOnce(&mut InstanceStatus)) {
    if let Ok(mut st) = status.lock()
        && let Some(s) = st
            .iter_mut()
            .find(|s| s.vrid == i.cfg.vrid && s.interface == i.cfg.interface)
    {
        f(s);
    }
}

fn publish(inst: &[Instance], status: &Status) {
    let Ok(mut st) = status.lock() else { return };
    for i in inst {
        let pos = st
            .iter()
            .position(|s| s.vrid == i.cfg.vrid && s.interface == i.cfg.interface);
        let s = match pos {
            Some(p) => &mut st[p],
            None => {
                st.push(InstanceStatus {
                    vrid: i.cfg.vrid,
                    interface: i.cfg.interface.clone(),
                    ..Default::default()
                });
                let last = st.len() - 1;
                &mut st[last]
            }
        };
        s.state = i.machine.state();
        s.priority = i.cfg.priority;
        s.effective_priority = i.machine.effective_priority();
        s.standby = i.machine.standby();
        if s.addresses.is_empty() {
            s.addresses = i.vips.iter().map(|(a, p)| format!("{a}/{p}")).collect();
        }
        s.advert_interval_ms = u64::try_from(i.cfg.advert_interval.as_millis()).unwrap_or(0);
        if i.machine.state() == State::Master {
            s.master = Some(i.primary.to_string());
        }
    }
}
