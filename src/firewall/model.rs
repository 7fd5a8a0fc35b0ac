//! The backend-neutral ruleset: what fwlb's firewall must do, derived from the configuration.
//! Both renderers (nft.rs, pf.rs) read only this, so the two backends cannot drift apart.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::{self, Config, Control, parse_net};

/// Which firewall the configuration asks for (`[firewall] backend`).
pub use crate::config::FirewallBackend as Backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One `allow` entry: `PROTO/PORT[-LAST] [from ADDR[/PREFIX]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub proto: Proto,
    /// First port of the range.
    pub port: u16,
    /// Last port of the range (equal to `port` for a single port).
    pub port_last: u16,
    /// Source network, host bits cleared; `None` = from anywhere.
    pub from: Option<(IpAddr, u8)>,
}

/// A per-source rate of new connections, normalised to connections per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
}

/// A banned source address and how long it stays banned (`None` = until `unban`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub ip: IpAddr,
    pub timeout: Option<Duration>,
}

/// Everything both backends need. Built by [`build`]; the daemon may fill `bans` (from its
/// state file) before rendering so that a reload keeps them without a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub backend: Backend,
    /// The internet-facing interface: default drop inbound. Empty only with `Backend::None`.
    pub front: String,
    /// The servers' network.
    pub back: Option<String>,
    /// The balancers' listen addresses (deduplicated, loopback ones left out).
    pub listeners: Vec<(Proto, SocketAddr)>,
    /// Every configured VRRP peer (all instances): VRRP is accepted only from them.
    pub vrrp_peers: Vec<IpAddr>,
    /// Every interface with a VRRP instance: VRRP from anyone else is dropped there.
    pub vrrp_ifaces: Vec<String>,
    /// VRRP interfaces where some instance lists no `peers`: fwlb cannot know the peer there,
    /// so VRRP multicast is accepted from any source on them (a subset of `vrrp_ifaces`).
    pub vrrp_open_ifaces: Vec<String>,
    /// The TCP control port: reachable only from loopback and `control_allow`.
    pub control_port: Option<u16>,
    /// `[daemon] control_allow`: networks besides loopback that may use the control port.
    pub control_allow: Vec<(IpAddr, u8)>,
    pub allow: Vec<Allow>,
    /// The balancers' servers given by address (and emergency servers): accepted on `back`.
    pub servers: Vec<SocketAddr>,
    /// The addresses of servers given by name (SRV targets and emergency servers included)
    /// as the child resolved them and the parent checked them: accepted on `back` like
    /// `servers`, through the same set (nftables) or table (pf), which the parent keeps up to
    /// date. Empty from `build`; the parent fills it before a reinstall, as it does `bans`.
    pub resolved: Vec<IpAddr>,
    /// `back_policy = "drop"`: on `back`, only the servers (and the ICMP networks need) may
    /// reach this host; otherwise other traffic on `back` is left to the host's policy.
    pub back_drop: bool,
    pub nat: bool,
    /// The back networks, from the `[[vrrp]]` addresses on `back` (host bits cleared): the ones
    /// to masquerade with `nat` (empty: everything forwarded from `back` to `front` is), and
    /// the bounds of resolved server addresses ([`Ruleset::back_prefixes`]).
    pub nat_sources: Vec<(IpAddr, u8)>,
    pub syn_rate: Option<Rate>,
    /// Bans to install with the ruleset (empty from `build`).
    pub bans: Vec<Ban>,
}

/// Whom VRRP is accepted from on an interface (`Ruleset::vrrp_accepts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpFrom {
    /// Multicast (both families) from any source.
    Anyone,
    /// The peers of one family, multicast or unicast to this host.
    Peers { v4: bool },
}

impl Ruleset {
    /// The servers' addresses, each once: by address in configuration order, then the
    /// resolved ones.
    pub fn server_ips(&self) -> Vec<IpAddr> {
        let mut v = Vec::new();
        for ip in self
            .servers
            .iter()
            .map(SocketAddr::ip)
            .chain(self.resolved.iter().copied())
        {
            push_unique(&mut v, ip);
        }
        v
    }

    /// The back networks fwlb knows (from the `[[vrrp]]` addresses on `back`): resolved server
    /// addresses must be inside one of their family when there is one.
    pub fn back_prefixes(&self) -> &[(IpAddr, u8)] {
        &self.nat_sources
    }

    /// Where VRRP is accepted, interface by interface: multicast from anyone where some
    /// instance lists no peers (fwlb cannot know its peer), else from the peers, per family
    /// that has any (IPv4 first).
    pub fn vrrp_accepts(&self) -> Vec<(&str, VrrpFrom)> {
        let mut v = Vec::new();
        for iface in &self.vrrp_ifaces {
            if self.vrrp_open_ifaces.contains(iface) {
                v.push((iface.as_str(), VrrpFrom::Anyone));
                continue;
            }
            for v4 in [true, false] {
                if self.vrrp_peers.iter().any(|p| p.is_ipv4() == v4) {
                    v.push((iface.as_str(), VrrpFrom::Peers { v4 }));
                }
            }
        }
        v
    }

    /// Where VRRP from anyone but the accepted sources is dropped: front, then every VRRP
    /// interface, each once.
    pub fn vrrp_drop_ifaces(&self) -> Vec<&str> {
        let mut v = vec![self.front.as_str()];
        for i in &self.vrrp_ifaces {
            push_unique(&mut v, i.as_str());
        }
        v
    }
}

/// A network in rule text (both backends write it the same way): `ADDR` for a single host,
/// `ADDR/LEN` for a network.
pub fn net((ip, len): (IpAddr, u8)) -> String {
    let host = if ip.is_ipv4() { 32 } else { 128 };
    if len == host {
        ip.to_string()
    } else {
        format!("{ip}/{len}")
    }
}

/// Parse an `allow` entry: "tcp/22", "udp/53 from 192.0.2.0/24", "tcp/8000-8100 from 10.0.0.0/8".
pub fn parse_allow(s: &str) -> Result<Allow, String> {
    const FORM: &str = "write \"tcp/PORT\", \"udp/PORT\" or \"tcp/FIRST-LAST\", optionally followed by \"from ADDR[/PREFIX]\"";
    let mut words = s.split_whitespace();
    let Some(spec) = words.next() else {
        return Err(format!("allow entry is empty ({FORM})"));
    };
    let Some((proto, ports)) = spec.split_once('/') else {
        return Err(format!("allow {s:?}: no protocol ({FORM})"));
    };
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => {
            return Err(format!(
                "allow {s:?}: protocol must be \"tcp\" or \"udp\", not {proto:?}"
            ));
        }
    };
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) => Err(format!("allow {s:?}: port 0 is not a port")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "allow {s:?}: port {p:?} must be a number from 1 to 65535"
            )),
        }
    };
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(ports)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!(
            "allow {s:?}: port range {first}-{last} runs backwards"
        ));
    }
    let from = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some("from"), Some(net), None) => match parse_net(net) {
            Some(n) => Some(mask(n)),
            None => {
                return Err(format!(
                    "allow {s:?}: {net:?} must be ADDR or ADDR/PREFIX, e.g. 192.0.2.0/24"
                ));
            }
        },
        (Some("from"), None, _) => {
            return Err(format!("allow {s:?}: \"from\" needs an address"));
        }
        _ => return Err(format!("allow {s:?}: unexpected words ({FORM})")),
    };
    Ok(Allow {
        proto,
        port: first,
        port_last: last,
        from,
    })
}

/// Parse a rate such as "200/s" or "12000/m" (normalised to 200/s). Units: s, m, h (or
/// second, minute, hour). The result must be a whole number of at least 1 per second, which
/// both nftables and pf express exactly.
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let Some((n, unit)) = s.trim().split_once('/') else {
        return Err(format!(
            "rate {s:?} needs a unit: write COUNT/s, COUNT/m or COUNT/h, e.g. \"200/s\""
        ));
    };
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("rate {s:?}: {:?} must be a whole number", n.trim()))?;
    if n == 0 {
        return Err(format!("rate {s:?} must be more than 0"));
    }
    let secs: u64 = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        u => {
            return Err(format!("rate {s:?}: unknown unit {u:?} (s, m or h)"));
        }
    };
    if !n.is_multiple_of(secs) {
        return Err(format!(
            "rate {s:?} is not a whole number per second ({n}/{secs}s); write a multiple of {secs} or use /s"
        ));
    }
    match u32::try_from(n / secs) {
        Ok(per_second) => Ok(Rate { per_second }),
        Err(_) => Err(format!("rate {s:?} is too large")),
    }
}

/// Clear the host bits of a network, so the rules show the network it denotes.
pub fn mask((ip, len): (IpAddr, u8)) -> (IpAddr, u8) {
    match ip {
        IpAddr::V4(a) => {
            let len = len.min(32);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            (IpAddr::V4(Ipv4Addr::from(u32::from(a) & m)), len)
        }
        IpAddr::V6(a) => {
            let len = len.min(128);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            (IpAddr::V6(Ipv6Addr::from(u128::from(a) & m)), len)
        }
    }
}

/// Interface names go verbatim into rule text, so only plain names are accepted (this also
/// keeps a quote or a brace in the config from changing the meaning of a rule).
fn check_ifname(what: &str, name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.is_empty() || name.len() > 15 || !ok_chars {
        return Err(format!(
            "{what} {name:?} is not an interface name (1 to 15 letters, digits, '_', '.' or '-')"
        ));
    }
    Ok(())
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// Build the ruleset from a validated configuration. Reports every problem at once.
pub fn build(cfg: &Config) -> Result<Ruleset, Vec<String>> {
    let mut errors = Vec::new();
    let fw = cfg.firewall.as_ref();
    let backend = fw.map_or(Backend::None, |f| f.backend);
    let (front, back) = interfaces(fw, backend, &mut errors);
    let nat = fw.is_some_and(|f| f.nat);
    if nat && back.is_none() {
        errors.push(
            "[firewall]: `nat = true` needs `back` (the servers' interface whose traffic is masqueraded)".to_string(),
        );
    }
    let (allow, syn_rate) = openings(fw, &mut errors);
    let back_drop = fw.is_some_and(|f| f.back_drop);
    if back_drop && back.is_none() {
        errors.push(
            "[firewall]: `back_policy = \"drop\"` needs `back` (the servers' interface)"
                .to_string(),
        );
    }
    let (listeners, servers) = balancer_addresses(cfg);
    let control_port = control_port(cfg, &mut errors);
    let control_allow = cfg.daemon.control_allow.iter().map(|n| mask(*n)).collect();
    let vrrp = vrrp_parts(cfg, back.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Ruleset {
        backend,
        front,
        back,
        listeners,
        vrrp_peers: vrrp.peers,
        vrrp_ifaces: vrrp.ifaces,
        vrrp_open_ifaces: vrrp.open_ifaces,
        control_port,
        control_allow,
        allow,
        servers,
        resolved: Vec::new(),
        back_drop,
        nat,
        nat_sources: vrrp.nat_sources,
        syn_rate,
        bans: Vec::new(),
    })
}

/// `front` (required with a backend) and `back`, checked.
fn interfaces(
    fw: Option<&config::Firewall>,
    backend: Backend,
    errors: &mut Vec<String>,
) -> (String, Option<String>) {
    let front = match fw.and_then(|f| f.front.clone()) {
        Some(f) => {
            if let Err(e) = check_ifname("[firewall] front", &f) {
                errors.push(e);
            }
            f
        }
        None => {
            if backend != Backend::None {
                errors.push(
                    "[firewall]: `front` is required with a firewall backend (the internet-facing interface, e.g. front = \"eth0\")".to_string(),
                );
            }
            String::new()
        }
    };
    let back = fw.and_then(|f| f.back.clone());
    if let Some(b) = &back {
        if let Err(e) = check_ifname("[firewall] back", b) {
            errors.push(e);
        }
        if *b == front {
            errors.push(format!(
                "[firewall]: `front` and `back` are both {b:?}; they must be different interfaces"
            ));
        }
    }
    (front, back)
}

/// The `allow` entries and `syn_rate`, parsed.
fn openings(fw: Option<&config::Firewall>, errors: &mut Vec<String>) -> (Vec<Allow>, Option<Rate>) {
    let mut allow = Vec::new();
    for s in fw.map(|f| f.allow.as_slice()).unwrap_or_default() {
        match parse_allow(s) {
            Ok(a) => push_unique(&mut allow, a),
            Err(e) => errors.push(format!("[firewall] {e}")),
        }
    }
    let syn_rate = match fw.and_then(|f| f.syn_rate.as_deref()) {
        None => None,
        Some(s) => match parse_rate(s) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(format!("[firewall] `syn_rate`: {e}"));
                None
            }
        },
    };
    (allow, syn_rate)
}

/// The balancers' listen addresses (loopback left out) and their servers, each once.
fn balancer_addresses(cfg: &Config) -> (Vec<(Proto, SocketAddr)>, Vec<SocketAddr>) {
    let mut listeners = Vec::new();
    let mut servers = Vec::new();
    for b in &cfg.balancers {
        for a in &b.listen {
            // A loopback listener is never reachable from another host: no opening needed.
            if !a.ip().is_loopback() {
                push_unique(&mut listeners, (Proto::Tcp, *a));
            }
        }
        // A server by name has no address yet: the back side's openings cannot name it.
        for s in b.servers.iter().filter(|s| s.name.is_none()) {
            push_unique(&mut servers, s.addr);
        }
        if let Some(e) = b.emergency.as_ref().filter(|e| e.name.is_none()) {
            push_unique(&mut servers, e.addr);
        }
    }
    (listeners, servers)
}

/// The TCP control port, which no balancer may share.
fn control_port(cfg: &Config, errors: &mut Vec<String>) -> Option<u16> {
    let Some(Control::Tcp(a)) = &cfg.daemon.control else {
        return None;
    };
    let p = a.port();
    // The control port is closed on every interface but loopback, so a balancer on the same
    // port number would be closed too.
    for b in &cfg.balancers {
        if b.listen
            .iter()
            .any(|a| a.port() == p && !a.ip().is_loopback())
        {
            errors.push(format!(
                "[firewall]: balancer {:?} listens on port {p}, the control port, which the firewall opens to loopback only; use another port for one of them",
                b.name
            ));
        }
    }
    Some(p)
}

/// What the `[[vrrp]]` sections give the ruleset.
#[derive(Default)]
struct VrrpParts {
    peers: Vec<IpAddr>,
    ifaces: Vec<String>,
    open_ifaces: Vec<String>,
    nat_sources: Vec<(IpAddr, u8)>,
}

fn vrrp_parts(cfg: &Config, back: Option<&str>, errors: &mut Vec<String>) -> VrrpParts {
    let mut p = VrrpParts::default();
    for v in &cfg.vrrp {
        if let Err(e) = check_ifname(
            &format!("[[vrrp]] vrid {}: interface", v.vrid),
            &v.interface,
        ) {
            errors.push(e);
        }
        push_unique(&mut p.ifaces, v.interface.clone());
        if v.peers.is_empty() {
            push_unique(&mut p.open_ifaces, v.interface.clone());
        }
        for peer in &v.peers {
            push_unique(&mut p.peers, *peer);
        }
        if back == Some(v.interface.as_str()) {
            // The config module has checked the form; an unparsable one is skipped, not fatal.
            for n in v
                .addresses
                .iter()
                .filter_map(|a| crate::config::parse_cidr(a))
            {
                push_unique(&mut p.nat_sources, mask(n));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(src: &str) -> Config {
        match crate::config::parse_str(src, Path::new("t.toml")) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}"),
        }
    }

    fn errs(src: &str) -> Vec<String> {
        match build(&cfg(src)) {
            Ok(rs) => panic!("expected errors, got {rs:#?}"),
            Err(e) => e,
        }
    }

    const LB: &str = "[[balancer]]\nname = \"www\"\nlisten = \"198.51.100.10:80\"\nservers = [\"10.0.0.11:80\", \"10.0.0.12:80\"]\n";

    #[test]
    fn allow_forms() {
        assert_eq!(
            parse_allow("tcp/22 from 192.0.2.0/24"),
            Ok(Allow {
                proto: Proto::Tcp,
                port: 22,
                port_last: 22,
                from: Some(("192.0.2.0".parse().unwrap(), 24)),
            })
        );
        assert_eq!(
            parse_allow("udp/53"),
            Ok(Allow {
                proto: Proto::Udp,
                port: 53,
                port_last: 53,
                from: None,
            })
        );
        let a = parse_allow("tcp/8000-8100 from 10.0.0.0/8").unwrap();
        assert_eq!((a.port, a.port_last), (8000, 8100));
        // A single host, and host bits are cleared.
        let a = parse_allow("tcp/22 from 2001:db8::7").unwrap();
        assert_eq!(a.from, Some(("2001:db8::7".parse().unwrap(), 128)));
        let a = parse_allow("  tcp/22   from  192.0.2.77/24 ").unwrap();
        assert_eq!(a.from, Some(("192.0.2.0".parse().unwrap(), 24)));
    }

    #[test]
    fn allow_errors_say_what_is_wrong() {
        let cases = [
            ("", "allow entry is empty"),
            ("22", "no protocol"),
            (
                "icmp/8",
                "protocol must be \"tcp\" or \"udp\", not \"icmp\"",
            ),
            ("TCP/22", "protocol must be \"tcp\" or \"udp\""),
            ("tcp/ssh", "port \"ssh\" must be a number from 1 to 65535"),
            ("tcp/0", "port 0 is not a port"),
            ("tcp/70000", "port \"70000\" must be a number"),
            ("tcp/", "port \"\" must be a number"),
            ("tcp/100-90", "port range 100-90 runs backwards"),
            ("tcp/1-", "port \"\" must be a number"),
            ("tcp/22 from", "\"from\" needs an address"),
            ("tcp/22 from 10.0.0.0/33", "must be ADDR or ADDR/PREFIX"),
            ("tcp/22 from example.com", "must be ADDR or ADDR/PREFIX"),
            ("tcp/22 to 10.0.0.1", "unexpected words"),
            ("tcp/22 from 10.0.0.1 extra", "unexpected words"),
        ];
        for (input, want) in cases {
            match parse_allow(input) {
                Ok(a) => panic!("{input:?} parsed as {a:?}"),
                Err(e) => assert!(e.contains(want), "{input:?}: {e:?} lacks {want:?}"),
            }
        }
    }

    #[test]
    fn rates_normalise_to_per_second() {
        for (s, n) in [
            ("200/s", 200),
            ("200/second", 200),
            (" 12000/m ", 200),
            ("60/min", 1),
            ("7200/h", 2),
            ("4294967295/s", u32::MAX),
        ] {
            assert_eq!(parse_rate(s), Ok(Rate { per_second: n }), "{s}");
        }
    }

    #[test]
    fn rate_errors_say_what_is_wrong() {
        let cases = [
            ("200", "needs a unit"),
            ("", "needs a unit"),
            ("x/s", "\"x\" must be a whole number"),
            ("-5/s", "must be a whole number"),
            ("1.5/s", "must be a whole number"),
            ("0/s", "must be more than 0"),
            ("200/d", "unknown unit \"d\""),
            ("30/m", "not a whole number per second"),
            ("4294967296/s", "too large"),
        ];
        for (input, want) in cases {
            match parse_rate(input) {
                Ok(r) => panic!("{input:?} parsed as {r:?}"),
                Err(e) => assert!(e.contains(want), "{input:?}: {e:?} lacks {want:?}"),
            }
        }
    }

    #[test]
    fn masking() {
        assert_eq!(
            mask(("10.0.0.1".parse().unwrap(), 24)),
            ("10.0.0.0".parse().unwrap(), 24)
        );
        assert_eq!(
            mask(("2001:db8::1".parse().unwrap(), 64)),
            ("2001:db8::".parse().unwrap(), 64)
        );
        assert_eq!(
            mask(("10.1.2.3".parse().unwrap(), 0)),
            ("0.0.0.0".parse().unwrap(), 0)
        );
    }

    #[test]
    fn pair_host() {
        let rs = build(&cfg(&format!(
            "{LB}emergency = \"10.0.0.99:80\"\n\
             [[vrrp]]\nvrid = 1\ninterface = \"eth0\"\npriority = 255\naddresses = [\"198.51.100.10/24\"]\npeers = [\"198.51.100.3\"]\n\
             [[vrrp]]\nvrid = 2\ninterface = \"eth1\"\npriority = 255\naddresses = [\"10.0.0.1/24\"]\n\
             [firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nback = \"eth1\"\nallow = [\"tcp/22 from 192.0.2.0/24\", \"tcp/22 from 192.0.2.0/24\"]\nnat = true\n"
        )))
        .unwrap();
        assert_eq!(rs.backend, Backend::Nftables);
        assert_eq!(rs.front, "eth0");
        assert_eq!(rs.back.as_deref(), Some("eth1"));
        assert_eq!(
            rs.listeners,
            vec![(Proto::Tcp, "198.51.100.10:80".parse().unwrap())]
        );
        assert_eq!(rs.servers.len(), 3, "servers plus the emergency server");
        assert_eq!(rs.vrrp_ifaces, vec!["eth0", "eth1"]);
        assert_eq!(rs.vrrp_open_ifaces, vec!["eth1"], "vrid 2 lists no peers");
        assert_eq!(
            rs.vrrp_peers,
            vec!["198.51.100.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(rs.control_port, Some(8888), "the default control port");
        assert_eq!(rs.allow.len(), 1, "a repeated allow entry counts once");
        assert!(rs.nat);
        assert_eq!(
            rs.nat_sources,
            vec![("10.0.0.0".parse().unwrap(), 24)],
            "the back network, from the VIP on eth1"
        );
        assert_eq!(rs.syn_rate, None);
        assert!(rs.bans.is_empty());
    }

    #[test]
    fn no_firewall_section_is_backend_none() {
        let rs = build(&cfg(LB)).unwrap();
        assert_eq!(rs.backend, Backend::None);
        assert_eq!(rs.front, "");
    }

    #[test]
    fn loopback_listeners_and_unix_control_need_no_rules() {
        let rs = build(&cfg(
            "[daemon]\ncontrol = \"/run/fwlb.sock\"\n[[balancer]]\nlisten = [\"127.0.0.1:8080\", \"[::]:8080\"]\nservers = [\"10.0.0.1\"]\n[firewall]\nbackend = \"pf\"\nfront = \"em0\"\nsyn_rate = \"600/m\"\n",
        ))
        .unwrap();
        assert_eq!(rs.backend, Backend::Pf);
        assert_eq!(
            rs.listeners,
            vec![(Proto::Tcp, "[::]:8080".parse().unwrap())]
        );
        assert_eq!(rs.control_port, None);
        assert_eq!(rs.syn_rate, Some(Rate { per_second: 10 }));
    }

    #[test]
    fn every_error_at_once() {
        let e = errs(&format!(
            "{LB}[firewall]\nbackend = \"nftables\"\nallow = [\"tcp/22 from nowhere\", \"udp/0\"]\nsyn_rate = \"fast\"\nnat = true\n"
        ));
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(e[0].contains("`front` is required"), "{}", e[0]);
        assert!(e[1].contains("`nat = true` needs `back`"), "{}", e[1]);
        assert!(
            e[2].starts_with("[firewall] allow \"tcp/22 from nowhere\": \"nowhere\""),
            "{}",
            e[2]
        );
        assert!(e[3].contains("port 0 is not a port"), "{}", e[3]);
        assert!(
            e[4].starts_with("[firewall] `syn_rate`: rate \"fast\" needs a unit"),
            "{}",
            e[4]
        );
    }

    #[test]
    fn interface_names_are_checked() {
        let e = errs(&format!(
            "{LB}[[vrrp]]\nvrid = 1\ninterface = \"eth0 \\\"x\"\naddresses = [\"10.0.0.1/24\"]\n[firewall]\nbackend = \"nftables\"\nfront = \"eth0\\\"; drop\"\nback = \"a-very-long-interface-name\"\n"
        ));
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(e[0].starts_with("[firewall] front \"eth0\\\"; drop\" is not an interface name"));
        assert!(e[1].starts_with("[firewall] back \"a-very-long-interface-name\""));
        assert!(e[2].starts_with("[[vrrp]] vrid 1: interface \"eth0 \\\"x\""));
    }

    #[test]
    fn front_and_back_differ() {
        let e = errs("[firewall]\nbackend = \"pf\"\nfront = \"em0\"\nback = \"em0\"\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].contains("must be different interfaces"), "{}", e[0]);
    }

    #[test]
    fn control_port_clash_with_a_listener() {
        let e = errs(
            "[daemon]\ncontrol = \"127.0.0.1:8080\"\n[[balancer]]\nname = \"alt\"\nlisten = \"198.51.100.10:8080\"\nservers = [\"10.0.0.1\"]\n[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\n",
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].contains("balancer \"alt\" listens on port 8080, the control port"),
            "{}",
            e[0]
        );
    }

    #[test]
    fn control_allow_is_kept() {
        let rs = build(&cfg(
            "[daemon]\ncontrol = \"0.0.0.0:8888\"\ncontrol_allow = [\"192.0.2.9/24\"]\n[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\n",
        ))
        .unwrap();
        assert_eq!(rs.control_port, Some(8888));
        assert_eq!(rs.control_allow, vec![("192.0.2.0".parse().unwrap(), 24)]);
    }

    #[test]
    fn nat_without_vrrp_on_back_masquerades_all_of_back() {
        let rs = build(&cfg(
            "[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nback = \"eth1\"\nnat = true\n",
        ))
        .unwrap();
        assert!(rs.nat);
        assert!(rs.nat_sources.is_empty());
    }

    #[test]
    fn backend_none_needs_no_front() {
        let rs = build(&cfg(&format!("{LB}[firewall]\nbackend = \"none\"\n"))).unwrap();
        assert_eq!(rs.backend, Backend::None);
    }
}
