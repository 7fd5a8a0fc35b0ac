//! `[resolver]` (how server names are resolved at run time) and a balancer's `resolve_prefer`.
//! No I/O: the host's /etc/resolv.conf is read by the daemon (before the chroot) and parsed
//! with [`nameservers_of_resolv_conf`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use toml_edit::{Table, TableLike};

use super::reader::Reader;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    /// Empty: the host's /etc/resolv.conf nameservers (read by the parent before the chroot).
    pub nameservers: Vec<SocketAddr>,
    /// Upper bound on trusting an answer (its TTL is clamped to 1 s..hold_valid).
    pub hold_valid: Duration,
    /// How long the last good address is kept after NXDOMAIN or a failing nameserver.
    pub hold_nx: Duration,
    /// How long a server made from an SRV target stays (without new clients) after its
    /// target left the answer (HAProxy's `hold obsolete`): a target back within it is the
    /// same server again.
    pub hold_obsolete: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            nameservers: Vec::new(),
            hold_valid: Duration::from_secs(300),
            hold_nx: Duration::from_secs(30),
            hold_obsolete: Duration::from_secs(30),
        }
    }
}

/// Which record a server name's lookup asks for first (the other is the fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Prefer {
    #[default]
    Ipv4,
    Ipv6,
}

pub(super) fn parse(r: &mut Reader, t: &dyn TableLike) -> Resolver {
    r.check_keys(
        t,
        "[resolver]",
        &["nameservers", "hold_valid", "hold_nx", "hold_obsolete"],
    );
    let mut res = Resolver::default();
    for (s, span) in r.strings(t, "nameservers").unwrap_or_default() {
        match nameserver(s) {
            Some(a) => res.nameservers.push(a),
            None => r.err(
                span,
                format!("`nameservers`: {s:?} must be ADDR or ADDR:PORT (IPv6 as [ADDR]:PORT)"),
            ),
        }
    }
    for (key, slot) in [
        ("hold_valid", &mut res.hold_valid),
        ("hold_nx", &mut res.hold_nx),
    ] {
        if let Some((d, item)) = r.duration(t, key) {
            if d < Duration::from_secs(1) {
                r.err_at(item, format!("`{key}` must be at least 1s"));
            }
            *slot = d;
        }
    }
    if let Some((d, _)) = r.duration(t, "hold_obsolete") {
        res.hold_obsolete = d;
    }
    res
}

/// `ADDR:PORT` or a bare `ADDR` (port 53).
fn nameserver(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// A balancer's `resolve_prefer`: "ipv4" (the default) or "ipv6".
pub(super) fn prefer(r: &mut Reader, t: &Table) -> Prefer {
    let names = [("ipv4", Prefer::Ipv4), ("ipv6", Prefer::Ipv6)];
    r.choice(t, "resolve_prefer", &names, Prefer::Ipv4)
}

/// The `nameserver` lines of a resolv.conf (other options, such as search domains, do not
/// apply to server names). Written here rather than with hickory's `system-config` feature,
/// which would pull in a parser for the whole file format for these few lines.
pub fn nameservers_of_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A link-local IPv6 nameserver carries a %zone hickory cannot use: skipped.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.org\nnameserver 10.0.0.53\n nameserver ::1\nnameserver fe80::1%eth0\nnameserver\noptions ndots:2\n";
        let ns: Vec<String> = nameservers_of_resolv_conf(text)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(ns, ["10.0.0.53:53", "[::1]:53"]);
    }

    #[test]
    fn resolver_section() {
        let cfg = super::super::parse_str(
            "[resolver]\nnameservers = [\"10.0.0.53\", \"10.0.0.54:5353\"]\nhold_valid = \"60s\"\n[[balancer]]\nlisten = \"127.0.0.1:8080\"\nservers = [\"app.internal:80\", \"app.internal:81\"]\nresolve_prefer = \"ipv6\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(cfg.resolver.nameservers.len(), 2);
        assert_eq!(cfg.resolver.nameservers[1].port(), 5353);
        assert_eq!(cfg.resolver.hold_valid, Duration::from_secs(60));
        assert_eq!(cfg.resolver.hold_nx, Duration::from_secs(30));
        let b = &cfg.balancers[0];
        assert_eq!(b.resolve_prefer, Prefer::Ipv6);
        assert_eq!(b.servers[0].label(), "app.internal:80");
        let err = super::super::parse_str(
            "[resolver]\nnameservers = [\"dns.example\"]\nhold_nx = \"10ms\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`nameservers`") && err.contains("`hold_nx`"),
            "{err}"
        );
    }
}
