//! The lab's network, derived from the two host configurations alone (pure: no I/O here).
//!
//! - Each network a [[vrrp]] address lives in is a segment (a bridge); every host gets the
//!   interface its configuration names on it. Interfaces are matched across hosts by network.
//! - A host's own address on a segment is the `peers` entry the other host lists there, else
//!   the lowest address not taken by a VIP, a server or the other host.
//! - The front segment holds the balancers' listen addresses (or is `[firewall] front`); a
//!   client namespace sits on it with eight addresses from the top of the network, its default
//!   route through the front VIP.
//! - Every configured server address (and emergency server) gets a mock backend, `fwlb echo`,
//!   in a servers namespace on the segment the address belongs to, routed through that
//!   segment's VIP (the firewall pair is the servers' gateway).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use crate::config::{Algorithm, Config, Control, ProxyProtocol, Server};

/// Every namespace of the lab starts with this, so a later run finds what a crashed one left.
pub const PREFIX: &str = "fwlab-";

/// Client source addresses: enough for sticky and hash spreads to show.
pub const CLIENT_ADDRS: usize = 8;

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Net {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    pub fn of(addr: Ipv4Addr, prefix: u8) -> Net {
        let mask = Self::mask(prefix);
        Net {
            base: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        }
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & Self::mask(self.prefix) == u32::from(self.base)
    }

    /// Host addresses, lowest first (no network or broadcast address).
    fn hosts(&self) -> impl DoubleEndedIterator<Item = Ipv4Addr> + use<> {
        let base = u32::from(self.base);
        let size = 1u64 << (32 - u32::from(self.prefix.min(32)));
        // A /31 or /32 has no room for the lab's hosts: an empty range.
        let last = if size <= 2 {
            base
        } else {
            base + (size - 2) as u32
        };
        (base + 1..=last).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

#[derive(Debug, Clone)]
pub struct Segment {
    /// "front", "back", or "segN".
    pub name: String,
    /// The namespace holding the bridge `br0`.
    pub ns: String,
    pub net: Net,
    /// The VRRP addresses on it (the first is the gateway of client or servers).
    pub vips: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub struct HostIf {
    /// The interface name from the configuration.
    pub name: String,
    pub segment: usize,
    pub addr: Ipv4Addr,
    /// The other end of its veth, a port of the segment's bridge (the "cable").
    pub port: String,
}

#[derive(Debug, Clone)]
pub struct Host {
    /// The configuration file's stem (`fwlb-a`).
    pub name: String,
    pub config: PathBuf,
    pub cfg: Config,
    pub ns: String,
    pub ifaces: Vec<HostIf>,
    /// Its control port as reached from inside its own namespace.
    pub control: String,
}

impl Host {
    pub fn vrids(&self) -> Vec<u8> {
        self.cfg.vrrp.iter().map(|v| v.vrid).collect()
    }

    /// The address this host connects to servers from, on the segment `seg`.
    pub fn addr_on(&self, seg: usize) -> Option<Ipv4Addr> {
        self.ifaces
            .iter()
            .find(|i| i.segment == seg)
            .map(|i| i.addr)
    }
}

/// A namespace with one interface `eth0` on a segment: the client, or the servers.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub ns: String,
    pub segment: usize,
    pub addrs: Vec<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    pub port: String,
}

#[derive(Debug, Clone)]
pub struct ServerSet {
    pub leaf: Leaf,
    /// Each server address and the ports `fwlb echo` listens on there.
    pub listen: Vec<(Ipv4Addr, Vec<u16>)>,
}

/// A balancer address the client can reach, and what it should see there.
#[derive(Debug, Clone)]
pub struct Target {
    pub balancer: String,
    pub addr: SocketAddrV4,
    pub algorithm: Algorithm,
    pub forwarded_for: bool,
    pub proxy: ProxyProtocol,
    pub accept_proxy: bool,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub hosts: Vec<Host>,
    pub segments: Vec<Segment>,
    pub front: usize,
    pub client: Leaf,
    pub servers: Vec<ServerSet>,
    pub targets: Vec<Target>,
    /// Things the lab leaves out, said once.
    pub notes: Vec<String>,
}

impl Topology {
    /// Every namespace, bridges first (they are created first and deleted last).
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.segments.iter().map(|s| s.ns.clone()).collect();
        v.extend(self.hosts.iter().map(|h| h.ns.clone()));
        v.push(self.client.ns.clone());
        v.extend(self.servers.iter().map(|s| s.leaf.ns.clone()));
        v
    }

    /// Which host an address (the TCP peer a server saw) belongs to.
    pub fn host_of(&self, a: IpAddr) -> Option<usize> {
        self.hosts
            .iter()
            .position(|h| h.ifaces.iter().any(|i| IpAddr::V4(i.addr) == a))
    }
}

/// Interface names are at most 15 bytes (IFNAMSIZ - 1).
fn ifname(s: &str) -> String {
    s.chars().take(15).collect()
}

fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// A host as `derive` takes it: its name (the file's stem), its file and its configuration.
pub type HostConfig = (String, PathBuf, Config);

/// Each host's interfaces and the network each one is on.
type IfNets = Vec<BTreeMap<String, Net>>;

/// Each host's address on each segment, by segment.
type HostAddrs = Vec<BTreeMap<usize, Ipv4Addr>>;

/// Server addresses over both hosts (and emergency servers), with the ports to serve there.
type ServerPorts = BTreeMap<Ipv4Addr, BTreeSet<u16>>;

/// Ok when no stage so far found a problem.
fn none_of(errs: Vec<String>) -> Result<(), Vec<String>> {
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// Build the topology of hosts given as (name, file, configuration), in file-name order.
/// Each stage reports every problem it finds; the next runs only when there were none.
pub fn derive(hosts: Vec<HostConfig>) -> Result<Topology, Vec<String>> {
    if hosts.len() != 2 {
        return Err(vec![format!(
            "the lab needs the two host configurations of a pair (*.toml); found {}",
            hosts.len()
        )]);
    }
    let mut errs = check_hosts(&hosts);
    let (ifnets, vips) = interface_networks(&hosts, &mut errs);
    none_of(errs)?;
    let nets: Vec<Net> = vips.keys().copied().collect();
    none_of(one_interface_per_network(&hosts, &ifnets, &nets))?;
    let server_ports = server_ports(&hosts, &nets)?;
    let first = &hosts[0].2;
    let roles = roles(first, &ifnets[0], nets, &server_ports);
    let segments = segments(&roles, &vips);
    // Reserved before any host or client takes one.
    let mut taken: BTreeSet<Ipv4Addr> = vips.values().flatten().copied().collect();
    taken.extend(server_ports.keys().copied());
    let (host_addr, client_addrs) = addresses(&hosts, &ifnets, &roles, taken)?;
    let out_hosts = hosts
        .iter()
        .enumerate()
        .map(|(h, hc)| host(h, hc, &ifnets[h], &roles.nets, &host_addr[h]))
        .collect();
    let front = roles.front;
    let client = Leaf {
        ns: format!("{PREFIX}client"),
        segment: front,
        addrs: client_addrs,
        gateway: segments[front].vips.first().copied(),
        port: "client".into(),
    };
    let servers = server_sets(&roles, &segments, &server_ports);
    let mut notes = Vec::new();
    let targets = targets(first, &segments[front], &mut notes);
    Ok(Topology {
        hosts: out_hosts,
        segments,
        front,
        client,
        servers,
        targets,
        notes,
    })
}

/// What each host's configuration must have for the lab.
fn check_hosts(hosts: &[HostConfig]) -> Vec<String> {
    let mut errs = Vec::new();
    for (name, _, cfg) in hosts {
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || matches!(name.as_str(), "client" | "servers")
            || name.starts_with("sw-")
        {
            errs.push(format!(
                "{name}: host names (file names) may use letters, digits, '-', '_', '.' and may not be \"client\", \"servers\" or start with \"sw-\""
            ));
        }
        for n in crate::daemon::unsupported(cfg) {
            errs.push(format!("{name}: {n}"));
        }
        if cfg.vrrp.is_empty() {
            errs.push(format!(
                "{name}: no [[vrrp]]: the lab needs the pair's virtual addresses"
            ));
        }
        if cfg.daemon.control.is_none() {
            errs.push(format!(
                "{name}: control = \"none\": the lab watches each host through its control port"
            ));
        }
    }
    errs
}

/// Each host's interfaces and their networks, from the [[vrrp]] addresses; and every network
/// with the VRRP addresses in it.
fn interface_networks(
    hosts: &[HostConfig],
    errs: &mut Vec<String>,
) -> (IfNets, BTreeMap<Net, BTreeSet<Ipv4Addr>>) {
    let mut ifnets = Vec::new();
    let mut vips: BTreeMap<Net, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for (name, _, cfg) in hosts {
        let mut m: BTreeMap<String, Net> = BTreeMap::new();
        for v in &cfg.vrrp {
            for a in &v.addresses {
                let Some((ip, prefix)) = crate::config::parse_cidr(a) else {
                    continue;
                };
                let Some(ip) = v4(ip) else {
                    errs.push(format!(
                        "{name}: vrid {}: {a}: the lab builds IPv4 segments only",
                        v.vrid
                    ));
                    continue;
                };
                let net = Net::of(ip, prefix);
                match m.get(&v.interface) {
                    Some(n) if !n.contains(ip) => errs.push(format!(
                        "{name}: {} has addresses in two networks ({n} and {net}); the lab needs one network per interface",
                        v.interface
                    )),
                    Some(_) => {}
                    None => {
                        m.insert(v.interface.clone(), net);
                    }
                }
                vips.entry(*m.get(&v.interface).unwrap_or(&net))
                    .or_default()
                    .insert(ip);
            }
        }
        if let Some(fw) = &cfg.firewall {
            for i in fw.front.iter().chain(fw.back.iter()) {
                if !m.contains_key(i) {
                    errs.push(format!(
                        "{name}: [firewall] names {i}, which has no [[vrrp]]: the lab takes an interface's network from its VRRP addresses"
                    ));
                }
            }
        }
        ifnets.push(m);
    }
    (ifnets, vips)
}

/// Segments: every network, each with exactly one interface of every host.
fn one_interface_per_network(hosts: &[HostConfig], ifnets: &IfNets, nets: &[Net]) -> Vec<String> {
    let mut errs = Vec::new();
    for (h, (name, _, _)) in hosts.iter().enumerate() {
        for net in nets {
            let n = ifnets[h].values().filter(|n| *n == net).count();
            if n != 1 {
                errs.push(format!(
                    "{name}: {} interfaces on {net} (the other host has VRRP addresses there); each host needs exactly one",
                    n
                ));
            }
        }
    }
    errs
}

/// Every server address on one of the networks, with its ports.
fn server_ports(hosts: &[HostConfig], nets: &[Net]) -> Result<ServerPorts, Vec<String>> {
    let mut errs = Vec::new();
    let mut ports = ServerPorts::new();
    for (name, _, cfg) in hosts {
        for b in &cfg.balancers {
            let all = b
                .servers
                .iter()
                .map(|s| s.addr)
                .chain(b.emergency.iter().map(|e| e.addr));
            for sa in all {
                match v4(sa.ip()) {
                    Some(ip) if nets.iter().any(|n| n.contains(ip)) => {
                        ports.entry(ip).or_default().insert(sa.port());
                    }
                    _ => errs.push(format!(
                        "{name}: balancer {}: server {sa} is on none of the pair's networks ({}): the lab puts mock servers on a network that has a [[vrrp]] address",
                        b.name,
                        nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
                    )),
                }
            }
        }
    }
    none_of(errs)?;
    Ok(ports)
}

/// The networks in the report's order (front first, then back, then the others) and which
/// is which.
struct Roles {
    nets: Vec<Net>,
    front: usize,
    back: Option<usize>,
    /// The segments with servers on them.
    server_segs: BTreeSet<usize>,
}

/// Front is where the first host's balancers listen (else its `[firewall] front`, else the
/// first network without servers); back is its `[firewall] back`, else another network with
/// servers.
fn roles(
    first: &Config,
    first_ifnets: &BTreeMap<String, Net>,
    nets: Vec<Net>,
    server_ports: &ServerPorts,
) -> Roles {
    let seg_of = |a: Ipv4Addr| nets.iter().position(|n| n.contains(a));
    let by_iface = |name: &Option<String>| -> Option<usize> {
        let n = first_ifnets.get(name.as_deref()?)?;
        nets.iter().position(|x| x == n)
    };
    let fw_front = first.firewall.as_ref().and_then(|f| by_iface(&f.front));
    let fw_back = first.firewall.as_ref().and_then(|f| by_iface(&f.back));
    let listen_seg = first
        .balancers
        .iter()
        .flat_map(|b| b.listen.iter())
        .find_map(|l| v4(l.ip()).and_then(seg_of));
    let server_segs: BTreeSet<usize> = server_ports.keys().filter_map(|a| seg_of(*a)).collect();
    let front = listen_seg
        .or(fw_front)
        .or_else(|| (0..nets.len()).find(|s| !server_segs.contains(s)))
        .unwrap_or(0);
    let back = fw_back.or_else(|| server_segs.iter().copied().find(|s| *s != front));
    let mut order: Vec<usize> = (0..nets.len()).collect();
    order.sort_by_key(|&k| (k != front, Some(k) != back, k));
    let remap = |k: usize| order.iter().position(|&o| o == k).unwrap_or(k);
    Roles {
        nets: order.iter().map(|&k| nets[k]).collect(),
        front: remap(front),
        back: back.map(remap),
        server_segs: server_segs.into_iter().map(remap).collect(),
    }
}

fn segments(roles: &Roles, vips: &BTreeMap<Net, BTreeSet<Ipv4Addr>>) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut extra = 0;
    for (k, net) in roles.nets.iter().enumerate() {
        let name = if k == roles.front {
            "front".to_string()
        } else if Some(k) == roles.back {
            "back".to_string()
        } else {
            extra += 1;
            format!("seg{extra}")
        };
        segments.push(Segment {
            ns: format!("{PREFIX}sw-{name}"),
            name,
            net: *net,
            vips: vips
                .get(net)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default(),
        });
    }
    segments
}

/// The segment of network `net`.
fn index(nets: &[Net], net: &Net) -> usize {
    nets.iter().position(|n| n == net).unwrap_or(0)
}

/// Each host's address on each segment (a `peers` entry of the other host, or the lowest
/// free one), then the client's from the top of the front network.
fn addresses(
    hosts: &[HostConfig],
    ifnets: &IfNets,
    roles: &Roles,
    mut taken: BTreeSet<Ipv4Addr>,
) -> Result<(HostAddrs, Vec<Ipv4Addr>), Vec<String>> {
    let nets = &roles.nets;
    let mut errs = Vec::new();
    let mut host_addr = peer_addresses(hosts, ifnets, nets, &mut taken, &mut errs);
    for (seg, net) in nets.iter().enumerate() {
        for ha in host_addr.iter_mut() {
            if ha.contains_key(&seg) {
                continue;
            }
            match net.hosts().find(|a| !taken.contains(a)) {
                Some(a) => {
                    ha.insert(seg, a);
                    taken.insert(a);
                }
                None => errs.push(format!("{net} has no address left for a host")),
            }
        }
    }
    let front = nets[roles.front];
    let client_addrs: Vec<Ipv4Addr> = front
        .hosts()
        .rev()
        .filter(|a| !taken.contains(a))
        .take(CLIENT_ADDRS)
        .collect();
    if client_addrs.is_empty() {
        errs.push(format!("{front} has no address left for the client"));
    }
    none_of(errs)?;
    Ok((host_addr, client_addrs))
}

/// The addresses the hosts' `peers` entries give the other host, by segment.
fn peer_addresses(
    hosts: &[HostConfig],
    ifnets: &IfNets,
    nets: &[Net],
    taken: &mut BTreeSet<Ipv4Addr>,
    errs: &mut Vec<String>,
) -> HostAddrs {
    let mut host_addr: HostAddrs = vec![BTreeMap::new(); hosts.len()];
    for (h, (_, _, cfg)) in hosts.iter().enumerate() {
        let other = 1 - h;
        for v in &cfg.vrrp {
            let Some(net) = ifnets[h].get(&v.interface) else {
                continue;
            };
            let seg = index(nets, net);
            for p in v.peers.iter().filter_map(|p| v4(*p)) {
                if !net.contains(p) {
                    continue;
                }
                match host_addr[other].get(&seg) {
                    Some(a) if *a != p => errs.push(format!(
                        "{}: lists two peers on {net} ({a} and {p}); the lab has one other host",
                        hosts[h].0
                    )),
                    _ => {
                        host_addr[other].insert(seg, p);
                        taken.insert(p);
                    }
                }
            }
        }
    }
    host_addr
}

/// Host number `h` (0 or 1) with its interfaces cabled to their segments.
fn host(
    h: usize,
    (name, path, cfg): &HostConfig,
    ifnets: &BTreeMap<String, Net>,
    nets: &[Net],
    addrs: &BTreeMap<usize, Ipv4Addr>,
) -> Host {
    let mut ifaces: Vec<HostIf> = ifnets
        .iter()
        .map(|(iface, net)| {
            let seg = index(nets, net);
            HostIf {
                name: iface.clone(),
                segment: seg,
                addr: addrs[&seg],
                port: ifname(&format!("h{}-{iface}", h + 1)),
            }
        })
        .collect();
    ifaces.sort_by_key(|i| i.segment);
    Host {
        name: name.clone(),
        config: path.clone(),
        cfg: cfg.clone(),
        ns: format!("{PREFIX}{name}"),
        ifaces,
        control: control_inside(cfg),
    }
}

/// The host's control port as reached from inside its namespace (a wildcard is loopback).
fn control_inside(cfg: &Config) -> String {
    match &cfg.daemon.control {
        Some(Control::Tcp(a)) if a.ip().is_unspecified() => {
            let lo: IpAddr = if a.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            SocketAddr::new(lo, a.port()).to_string()
        }
        Some(c) => crate::control::describe(c),
        None => String::new(),
    }
}

/// One servers namespace per segment with servers on it.
fn server_sets(roles: &Roles, segments: &[Segment], server_ports: &ServerPorts) -> Vec<ServerSet> {
    let sets = &roles.server_segs;
    sets.iter()
        .map(|&seg| {
            let listen: Vec<(Ipv4Addr, Vec<u16>)> = server_ports
                .iter()
                .filter(|(a, _)| roles.nets[seg].contains(**a))
                .map(|(a, p)| (*a, p.iter().copied().collect()))
                .collect();
            let ns = if sets.len() == 1 {
                format!("{PREFIX}servers")
            } else {
                format!("{PREFIX}servers-{}", segments[seg].name)
            };
            ServerSet {
                leaf: Leaf {
                    ns,
                    segment: seg,
                    addrs: listen.iter().map(|(a, _)| *a).collect(),
                    gateway: segments[seg].vips.first().copied(),
                    port: ifname(&format!("servers-{}", segments[seg].name)),
                },
                listen,
            }
        })
        .collect()
}

/// What the client can reach: the first host's listen addresses on the front segment.
fn targets(first: &Config, front: &Segment, notes: &mut Vec<String>) -> Vec<Target> {
    let mut targets = Vec::new();
    for b in &first.balancers {
        for l in &b.listen {
            let addrs: Vec<Ipv4Addr> = match l.ip() {
                IpAddr::V4(a) if a.is_unspecified() => front.vips.clone(),
                IpAddr::V4(a) if front.net.contains(a) => vec![a],
                other => {
                    notes.push(format!(
                        "balancer {} listens on {other}, which the client on {} cannot reach: not checked",
                        b.name, front.net
                    ));
                    Vec::new()
                }
            };
            for a in addrs {
                targets.push(Target {
                    balancer: b.name.clone(),
                    addr: SocketAddrV4::new(a, l.port()),
                    algorithm: b.algorithm,
                    forwarded_for: b.http_forwarded_for,
                    proxy: b.proxy_protocol,
                    accept_proxy: b.accept_proxy,
                    servers: b.servers.clone(),
                });
            }
        }
    }
    if targets.is_empty() {
        notes.push("no balancer listens on the front network: the drills watch VRRP only".into());
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, text: &str) -> (String, PathBuf, Config) {
        let path = PathBuf::from(format!("{name}.toml"));
        let cfg = crate::config::parse_str(text, &path).expect("valid config");
        (name.to_string(), path, cfg)
    }

    const A: &str = include_str!("../../conf/lab/fwlb-a.toml");
    const B: &str = include_str!("../../conf/lab/fwlb-b.toml");

    #[test]
    fn shipped_pair() {
        let t = derive(vec![host("fwlb-a", A), host("fwlb-b", B)]).expect("topology");
        let names: Vec<&str> = t.segments.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["front", "back"]);
        assert_eq!(
            t.segments[t.front].vips,
            ["192.0.2.10".parse::<Ipv4Addr>().unwrap()]
        );
        // Addresses come from the other host's `peers`.
        let a: Vec<String> = t.hosts[0]
            .ifaces
            .iter()
            .map(|i| format!("{} {}", i.name, i.addr))
            .collect();
        let b: Vec<String> = t.hosts[1]
            .ifaces
            .iter()
            .map(|i| format!("{} {}", i.name, i.addr))
            .collect();
        assert_eq!(a, ["eth0 192.0.2.2", "eth1 10.0.0.2"]);
        assert_eq!(b, ["eth0 192.0.2.3", "eth1 10.0.0.3"]);
        assert_eq!(t.hosts[0].ns, "fwlab-fwlb-a");
        assert_eq!(t.hosts[0].control, "127.0.0.1:8888");
        assert_eq!(t.client.addrs.len(), CLIENT_ADDRS);
        assert_eq!(
            t.client.addrs[0],
            "192.0.2.254".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(t.client.gateway, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(t.servers.len(), 1);
        assert_eq!(t.servers[0].leaf.ns, "fwlab-servers");
        assert_eq!(t.servers[0].leaf.gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(t.servers[0].listen.len(), 3);
        assert_eq!(t.servers[0].listen[0].1, [80, 8000]);
        let tg: Vec<String> = t
            .targets
            .iter()
            .map(|x| format!("{} {}", x.balancer, x.addr))
            .collect();
        assert_eq!(tg, ["www 192.0.2.10:80", "app 192.0.2.10:8000"]);
        assert_eq!(t.host_of("10.0.0.3".parse().unwrap()), Some(1));
        assert!(t.namespaces().iter().all(|n| n.starts_with(PREFIX)));
    }

    #[test]
    fn without_peers_addresses_are_the_lowest_free() {
        let strip = |s: &str| -> String {
            s.lines()
                .filter(|l| !l.starts_with("peers"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let t = derive(vec![host("x", &strip(A)), host("y", &strip(B))]).expect("topology");
        let a: Vec<Ipv4Addr> = t
            .hosts
            .iter()
            .flat_map(|h| h.ifaces.iter().map(|i| i.addr))
            .collect();
        let s: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        // 10.0.0.1 is the back VIP; .11-.13 are servers.
        assert_eq!(s, ["192.0.2.1", "10.0.0.2", "192.0.2.2", "10.0.0.3"]);
    }

    #[test]
    fn mistakes_are_named() {
        let e = derive(vec![host("a", A)]).unwrap_err();
        assert!(e[0].contains("two host configurations"), "{e:?}");
        let far = A.replace("\"10.0.0.13\"]", "\"10.9.9.9\"]");
        let e = derive(vec![host("a", &far), host("b", B)]).unwrap_err();
        assert!(
            e.iter()
                .any(|m| m.contains("server 10.9.9.9:80 is on none")),
            "{e:?}"
        );
        let one_leg = B.replace(
            "addresses = [\"10.0.0.1/24\"]",
            "addresses = [\"10.5.0.1/24\"]",
        );
        let e = derive(vec![host("a", A), host("b", &one_leg)]).unwrap_err();
        assert!(
            e.iter().any(|m| m.contains("0 interfaces on 10.0.0.0/24")),
            "{e:?}"
        );
    }

    #[test]
    fn nets() {
        let n = Net::of("10.1.2.3".parse().unwrap(), 24);
        assert_eq!(n.to_string(), "10.1.2.0/24");
        assert!(n.contains("10.1.2.255".parse().unwrap()));
        assert!(!n.contains("10.1.3.0".parse().unwrap()));
        assert_eq!(n.hosts().next(), Some("10.1.2.1".parse().unwrap()));
        assert_eq!(n.hosts().next_back(), Some("10.1.2.254".parse().unwrap()));
    }
}
