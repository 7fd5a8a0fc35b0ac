//! The parent's side of `Request::ServerAddrs`: the child says which addresses a balancer's
//! servers given by name (SRV targets and a named emergency server included) resolved to, and
//! the parent opens `back` to them. The child may be compromised, so what it says is checked
//! against the configuration and bounded before anything reaches the firewall. Pure: the
//! firewall thread (`worker`) applies what [`Resolved`] says changed.
//!
//! A server is accepted when its label (`name:port`) is one the configuration gives that
//! balancer (a server by name, its emergency server) or, with `servers_srv`, any host:port
//! up to [`MAX_TARGETS`] of them; each with at most [`MAX_ADDRS_PER_SERVER`] addresses.
//! An address is accepted when it is unicast (not unspecified, loopback, multicast or a
//! broadcast) and, where fwlb knows back networks of its family (from the `[[vrrp]]`
//! addresses on `back`), inside one of them and neither its network nor its broadcast
//! address. Only single addresses are ever added, never a network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::{self, Config};
use crate::resolver::srv::MAX_TARGETS;

/// Most addresses one server may have opened (a server uses one at a time).
pub const MAX_ADDRS_PER_SERVER: usize = 8;

/// The servers of one request: (label, addresses).
pub type Servers = [(String, Vec<IpAddr>)];

/// The labels `balancer`'s servers given by name may have, and whether it has `servers_srv`.
fn named_labels(b: &config::Balancer) -> (Vec<String>, bool) {
    let labels = b
        .servers
        .iter()
        .chain(b.emergency.iter())
        .filter(|s| s.name.is_some())
        .map(config::Server::label)
        .collect();
    (labels, b.servers_srv.is_some())
}

/// Whether a request's shape fits the configuration: a configured balancer, at most as many
/// servers as it may have by name.
pub fn check_shape(cfg: &Config, balancer: &str, servers: &Servers) -> Result<(), String> {
    let b = cfg
        .balancers
        .iter()
        .find(|b| b.name == balancer)
        .ok_or_else(|| format!("no balancer {balancer:?} in the configuration"))?;
    let (labels, srv) = named_labels(b);
    let most = labels.len() + if srv { MAX_TARGETS } else { 0 };
    if servers.len() > most {
        return Err(format!(
            "balancer {balancer:?} has at most {most} server(s) by name, not {}",
            servers.len()
        ));
    }
    Ok(())
}

/// A `host:port` label an SRV target may have.
fn srv_label(label: &str) -> bool {
    let Some((host, port)) = label.rsplit_once(':') else {
        return false;
    };
    config::server_spec::host_name(host).is_some_and(|h| h == host)
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// Why `ip` may not be opened as a server's address on `back` (None: it may).
pub fn refusal(ip: IpAddr, back_prefixes: &[(IpAddr, u8)]) -> Option<&'static str> {
    if !crate::resolver::state::acceptable(ip) || ip.is_loopback() {
        return Some("not a unicast address");
    }
    let family: Vec<(IpAddr, u8)> = back_prefixes
        .iter()
        .copied()
        .filter(|(n, _)| n.is_ipv4() == ip.is_ipv4())
        .collect();
    if family.is_empty() {
        return None;
    }
    let Some(&(net, len)) = family.iter().find(|(n, l)| config::in_network(ip, *n, *l)) else {
        return Some("outside the back networks");
    };
    if let (IpAddr::V4(a), IpAddr::V4(n)) = (ip, net)
        && len < 31
    {
        let host_bits = u32::MAX >> len;
        let a = u32::from(a);
        if a == u32::from(n) || a & host_bits == host_bits {
            return Some("the network's own or broadcast address");
        }
    }
    None
}

/// The servers of a request the configuration allows, with their acceptable addresses; and
/// one line per refusal. Call after [`check_shape`].
pub fn accept(
    cfg: &Config,
    back_prefixes: &[(IpAddr, u8)],
    balancer: &str,
    servers: &Servers,
) -> (Vec<(String, Vec<IpAddr>)>, Vec<String>) {
    let (labels, srv) = cfg
        .balancers
        .iter()
        .find(|b| b.name == balancer)
        .map_or((Vec::new(), false), named_labels);
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (label, ips) in servers {
        let allowed = labels.contains(label) || (srv && srv_label(label));
        if !allowed {
            refused.push(format!(
                "server {label:?}: not a server by name of {balancer:?}"
            ));
            continue;
        }
        if ips.len() > MAX_ADDRS_PER_SERVER {
            refused.push(format!(
                "server {label}: {} addresses, at most {MAX_ADDRS_PER_SERVER}",
                ips.len()
            ));
            continue;
        }
        let mut good = Vec::new();
        for ip in ips {
            match refusal(*ip, back_prefixes) {
                Some(why) => refused.push(format!("server {label}: {ip}: {why}")),
                None => good.push(*ip),
            }
        }
        ok.push((label.clone(), good));
    }
    (ok, refused)
}

/// What each balancer's servers by name resolved to, as accepted; the parent's record,
/// carried over reloads (entries the new configuration no longer allows are dropped).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolved {
    by_balancer: BTreeMap<String, Vec<(String, Vec<IpAddr>)>>,
}

impl Resolved {
    /// `balancer`'s servers are now `servers` (already accepted).
    pub fn replace(&mut self, balancer: &str, servers: Vec<(String, Vec<IpAddr>)>) {
        self.by_balancer.insert(balancer.to_string(), servers);
    }

    /// Every address, once.
    pub fn all(&self) -> BTreeSet<IpAddr> {
        self.by_balancer
            .values()
            .flatten()
            .flat_map(|(_, ips)| ips.iter().copied())
            .collect()
    }

    /// Check everything again against a new configuration; the refusals.
    pub fn recheck(&mut self, cfg: &Config, back_prefixes: &[(IpAddr, u8)]) -> Vec<String> {
        let mut refused = Vec::new();
        let old = std::mem::take(&mut self.by_balancer);
        for (balancer, servers) in old {
            if let Err(e) = check_shape(cfg, &balancer, &servers) {
                refused.push(e);
                continue;
            }
            let (ok, r) = accept(cfg, back_prefixes, &balancer, &servers);
            refused.extend(r);
            self.by_balancer.insert(balancer, ok);
        }
        refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cfg() -> Config {
        config::parse_str(
            "[[balancer]]\nname = \"web\"\nlisten = \"192.0.2.10:80\"\nservers = [\"10.0.0.5:80\", \"app.internal:80\"]\nemergency = \"sorry.internal:8080\"\n\
             [[balancer]]\nname = \"api\"\nlisten = \"192.0.2.10:81\"\nservers_srv = \"_api._tcp.internal\"\n\
             [firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nback = \"eth1\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    fn one(label: &str, ips: &[&str]) -> Vec<(String, Vec<IpAddr>)> {
        vec![(label.to_string(), ips.iter().map(|s| ip(s)).collect())]
    }

    const BACK: &[(IpAddr, u8)] = &[(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 0)), 24)];

    #[test]
    fn only_configured_names_or_srv_targets_of_a_known_balancer() {
        let c = cfg();
        assert!(check_shape(&c, "mail", &[]).is_err());
        let (ok, refused) = accept(&c, &[], "web", &one("app.internal:80", &["10.0.0.21"]));
        assert_eq!((ok.len(), refused.len()), (1, 0));
        let (ok, _) = accept(&c, &[], "web", &one("sorry.internal:8080", &["10.0.0.99"]));
        assert_eq!(ok.len(), 1, "the emergency server by name");
        let (ok, refused) = accept(&c, &[], "web", &one("evil.internal:80", &["10.0.0.66"]));
        assert!(
            ok.is_empty() && refused[0].contains("not a server by name"),
            "{refused:?}"
        );
        // The address server is not by name: refused.
        let (ok, _) = accept(&c, &[], "web", &one("10.0.0.5:80", &["10.0.0.5"]));
        assert!(ok.is_empty());
        // An SRV balancer takes any target, up to MAX_TARGETS, but a label must be host:port.
        let (ok, _) = accept(
            &c,
            &[],
            "api",
            &one("pod-7.api.internal:9000", &["10.0.0.70"]),
        );
        assert_eq!(ok.len(), 1);
        for bad in ["pod-7.api.internal", "pod 7:9000", "pod:0", "a:b"] {
            let (ok, _) = accept(&c, &[], "api", &one(bad, &["10.0.0.70"]));
            assert!(ok.is_empty(), "{bad}");
        }
        let many: Vec<(String, Vec<IpAddr>)> = (0..=MAX_TARGETS)
            .map(|i| (format!("t{i}.internal:80"), vec![ip("10.0.0.7")]))
            .collect();
        assert!(check_shape(&c, "api", &many).is_err());
        assert!(check_shape(&c, "api", &many[..MAX_TARGETS]).is_ok());
        assert!(
            check_shape(&c, "web", &many[..3]).is_err(),
            "web has 2 by name"
        );
        let lots: Vec<&str> = vec!["10.0.0.7"; MAX_ADDRS_PER_SERVER + 1];
        let (ok, refused) = accept(&c, &[], "web", &one("app.internal:80", &lots));
        assert!(
            ok.is_empty() && refused[0].contains("at most"),
            "{refused:?}"
        );
    }

    #[test]
    fn bogus_addresses_are_refused() {
        for bad in [
            "0.0.0.0",
            "::",
            "127.0.0.1",
            "::1",
            "224.0.0.18",
            "ff02::1",
            "255.255.255.255",
        ] {
            assert_eq!(
                refusal(ip(bad), &[]),
                Some("not a unicast address"),
                "{bad}"
            );
        }
        assert_eq!(refusal(ip("192.0.2.7"), &[]), None, "no back network known");
        assert_eq!(refusal(ip("10.0.0.21"), BACK), None);
        assert_eq!(
            refusal(ip("192.0.2.7"), BACK),
            Some("outside the back networks")
        );
        assert_eq!(
            refusal(ip("10.0.0.255"), BACK),
            Some("the network's own or broadcast address")
        );
        assert_eq!(
            refusal(ip("10.0.0.0"), BACK),
            Some("the network's own or broadcast address")
        );
        assert_eq!(
            refusal(ip("2001:db8::5"), BACK),
            None,
            "no IPv6 back network known"
        );
        // What a request comes to: the good address kept, the bad one named.
        let (ok, refused) = accept(
            &cfg(),
            BACK,
            "web",
            &one("app.internal:80", &["10.0.0.21", "0.0.0.0"]),
        );
        assert_eq!(ok, one("app.internal:80", &["10.0.0.21"]));
        assert_eq!(
            refused,
            ["server app.internal:80: 0.0.0.0: not a unicast address"]
        );
    }

    #[test]
    fn the_record_replaces_per_balancer_and_follows_reloads() {
        let c = cfg();
        let mut r = Resolved::default();
        r.replace("web", one("app.internal:80", &["10.0.0.21"]));
        r.replace("api", one("t.internal:80", &["10.0.0.30", "10.0.0.21"]));
        assert_eq!(r.all(), [ip("10.0.0.21"), ip("10.0.0.30")].into());
        r.replace("api", Vec::new());
        assert_eq!(r.all(), [ip("10.0.0.21")].into());
        // A reload without the name: its entry goes.
        let mut new = c.clone();
        new.balancers[0].servers.truncate(1);
        let refused = r.recheck(&new, &[]);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(r.all().is_empty());
    }
}
