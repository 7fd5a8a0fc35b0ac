//! nftables (Linux): fwlb's own table `inet fwlb`, rendered as one `nft -f -` script.
//!
//! The script creates the table if missing, deletes it and defines it again: nft runs a whole
//! file as one transaction, so the switch is atomic, applying the same ruleset twice leaves
//! the same result, and no other table is touched. The input chain has policy accept and only
//! traffic arriving on `front` ends in a drop, so a mistake here never cuts the host off its
//! other interfaces. Every drop has a counter (`nft list table inet fwlb` shows them).
//!
//! Dynamic data lives in sets changed without a reload: `banned4`/`banned6` (control port
//! `ban`/`unban`, with per-entry timeouts), `servers4`/`servers6` with a `back` interface
//! (the servers given by address, plus the resolved addresses of servers given by name, which
//! the parent adds and removes as the child reports them) and the syn_rate meters
//! `synflood4`/`synflood6` (filled by the kernel, one entry per source).
//!
//! With a `back` interface a forward chain lets back reach out through front and stops front
//! from opening connections into back; with `nat` a postrouting chain masquerades the back
//! network (its prefixes from the `[[vrrp]]` addresses on back, else every source the forward
//! chain saw coming from back, learned into `natsrc4`/`natsrc6`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::model::{Allow, Ban, Ruleset, VrrpFrom, net};

/// fwlb's table, in family `inet` (one table for IPv4 and IPv6).
pub const TABLE: &str = "fwlb";

/// Packets per second of ICMP echo requests accepted on front (the whole interface).
const ECHO_RATE: &str = "10/second";
/// How long a syn_rate meter entry outlives a source's last new connection.
const METER_TIMEOUT: &str = "1m";
/// Meter size: how many sources are tracked at once. A full meter fails open (a new source
/// is not limited), so the size is generous; 64k IPv4 entries take a few MB of kernel memory.
const METER_SIZE: u32 = 65535;
/// VRRP destinations (RFC 5798 5.1.1.2 / 5.1.2.2).
const VRRP_GROUP4: &str = "224.0.0.18";
const VRRP_GROUP6: &str = "ff02::12";

fn set_name(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "banned4" } else { "banned6" }
}

/// A duration in nft's notation ("1d2h3m4s5ms"); sub-millisecond parts round up, so a
/// nonzero timeout never becomes 0 (which nft would read as "no timeout").
pub fn duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        ms += 1;
    }
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            let _ = write!(out, "{}{unit}", ms / size);
            ms %= size;
        }
    }
    out
}

/// An element of a ban set: the address, and its timeout unless the ban is permanent
/// (`None` or zero: a zero-length ban is read as "no expiry", as pen's 0 durations are).
fn element(ip: IpAddr, timeout: Option<Duration>) -> String {
    match timeout.filter(|d| !d.is_zero()) {
        Some(d) => format!("{ip} timeout {}", duration(d)),
        None => ip.to_string(),
    }
}

/// The `nft -f -` script that bans `ip` (for `timeout`, else until unbanned). Banning an
/// address again replaces its timeout: add (a no-op if present), delete, add, in one
/// transaction, since `add` alone keeps an existing element's old timeout.
pub fn ban(ip: IpAddr, timeout: Option<Duration>) -> String {
    let set = set_name(ip);
    format!(
        "add element inet {TABLE} {set} {{ {ip} }}\n\
         delete element inet {TABLE} {set} {{ {ip} }}\n\
         add element inet {TABLE} {set} {{ {} }}\n",
        element(ip, timeout)
    )
}

/// The `nft -f -` script that lifts a ban. Idempotent: unbanning an address that is not
/// banned succeeds (it is added, then deleted, in one transaction).
pub fn unban(ip: IpAddr) -> String {
    let set = set_name(ip);
    format!(
        "add element inet {TABLE} {set} {{ {ip} }}\n\
         delete element inet {TABLE} {set} {{ {ip} }}\n"
    )
}

/// The script that lists the ban sets: run it with `nft -f -` (text) and read the answer
/// with [`parse_bans`]. It lists the whole table: nft 1.0.6 cannot run two `list set`
/// commands from one file, and prints nothing for `list` commands under `-j -f -`.
/// For JSON, run `nft -j list table inet fwlb` (as arguments); `parse_bans` reads both.
pub fn list_bans() -> String {
    format!("list table inet {TABLE}\n")
}

/// The bans in nft's listing of fwlb's table: text (from [`list_bans`]) or JSON (`nft -j`).
/// A ban's `timeout` is the time it has left (nft's `expires`), which is also what to pass
/// to [`ban`] to restore it. Sets of other tables are ignored, even with the same names.
pub fn parse_bans(listing: &str) -> Result<Vec<Ban>, String> {
    if listing.trim_start().starts_with('{') {
        parse_bans_json(listing)
    } else {
        parse_bans_text(listing)
    }
}

fn is_ban_set(name: &str) -> bool {
    name == "banned4" || name == "banned6"
}

fn parse_bans_json(json: &str) -> Result<Vec<Ban>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("nft JSON output: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or("nft JSON output: no \"nftables\" array")?;
    let mut bans = Vec::new();
    for set in items.iter().filter_map(|i| i.get("set")) {
        let field = |k: &str| set.get(k).and_then(|n| n.as_str()).unwrap_or("");
        let name = field("name");
        if field("family") != "inet" || field("table") != TABLE || !is_ban_set(name) {
            continue;
        }
        // An empty set has no "elem" key at all.
        let elems = set.get("elem").and_then(|e| e.as_array());
        for e in elems.into_iter().flatten() {
            // A plain string, or {"elem": {"val": ..., "timeout": s, "expires": s}}.
            let (val, expires) = match e.as_str() {
                Some(s) => (s, None),
                None => {
                    let inner = e.get("elem").ok_or_else(|| {
                        format!("nft JSON output: set {name}: unexpected element {e}")
                    })?;
                    let val = inner.get("val").and_then(|v| v.as_str()).ok_or_else(|| {
                        format!("nft JSON output: set {name}: element without an address: {e}")
                    })?;
                    (val, inner.get("expires").and_then(|x| x.as_f64()))
                }
            };
            let ip: IpAddr = val
                .parse()
                .map_err(|_| format!("nft JSON output: set {name}: {val:?} is not an address"))?;
            let timeout = expires
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            bans.push(Ban { ip, timeout });
        }
    }
    Ok(bans)
}

/// A duration as nft prints it ("1h29m59s964ms"): the configuration's own notation.
fn parse_duration(s: &str) -> Option<Duration> {
    crate::config::duration::parse(s).ok()
}

fn parse_bans_text(text: &str) -> Result<Vec<Ban>, String> {
    let mut bans = Vec::new();
    let mut in_table = false;
    let mut set: Option<&str> = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("table ") {
            in_table = rest.trim_end_matches('{').trim() == format!("inet {TABLE}");
            set = None;
        } else if let Some(rest) = t.strip_prefix("set ") {
            set = Some(rest.trim_end_matches('{').trim()).filter(|n| in_table && is_ban_set(n));
        } else if t.starts_with("chain ") {
            set = None;
        } else if let (Some(name), Some(rest)) = (set, t.strip_prefix("elements = {")) {
            // Long element lists continue on the next lines, up to the closing brace.
            let mut body = rest.to_string();
            while !body.contains('}') {
                match lines.next() {
                    Some(l) => {
                        body.push(' ');
                        body.push_str(l.trim());
                    }
                    None => return Err(format!("nft listing: set {name}: unterminated elements")),
                }
            }
            let body = body.split('}').next().unwrap_or("");
            for elem in body.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let mut words = elem.split_whitespace();
                let addr = words.next().unwrap_or("");
                let ip: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("nft listing: set {name}: {addr:?} is not an address"))?;
                let mut timeout = None;
                while let Some(w) = words.next() {
                    if w == "expires" {
                        let d = words.next().unwrap_or("");
                        timeout =
                            Some(parse_duration(d).ok_or_else(|| {
                                format!("nft listing: set {name}: bad expiry {d:?}")
                            })?);
                    }
                }
                bans.push(Ban { ip, timeout });
            }
        }
    }
    Ok(bans)
}

/// The script that removes fwlb's table (on exit with `keep_on_exit = false`).
pub fn delete() -> String {
    format!("delete table inet {TABLE}\n")
}

fn saddr(ip: IpAddr) -> &'static str {
    saddr_of(ip.is_ipv4())
}

fn saddr_of(v4: bool) -> &'static str {
    if v4 { "ip saddr" } else { "ip6 saddr" }
}

fn daddr(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ip daddr"
    } else {
        "ip6 daddr"
    }
}

/// One value or an anonymous set `{ a, b }`.
fn one_or_set(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

fn quoted_set(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    one_or_set(&q)
}

fn ports(a: &Allow) -> String {
    if a.port == a.port_last {
        a.port.to_string()
    } else {
        format!("{}-{}", a.port, a.port_last)
    }
}

/// Addresses of one family, as rule text.
fn family(ips: &[IpAddr], v4: bool) -> Vec<String> {
    ips.iter()
        .filter(|ip| ip.is_ipv4() == v4)
        .map(|ip| ip.to_string())
        .collect()
}

/// The sets that hold servers' addresses (IPv4, IPv6): the netlink changes name them too.
pub const SERVER_SETS: [&str; 2] = ["servers4", "servers6"];

/// What a named set is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetKind {
    /// Filled by the kernel from the packet path: a size, `dynamic`, a default timeout.
    Meter,
    /// Entries with timeouts of their own (bans).
    Timed,
    /// Plain addresses (servers).
    Plain,
}

/// A named set; ban and server sets may start with elements.
fn set_block(o: &mut String, name: &str, ty: &str, kind: SetKind, elements: &[String]) {
    let _ = writeln!(o, "\tset {name} {{");
    let _ = writeln!(o, "\t\ttype {ty}");
    match kind {
        SetKind::Meter => {
            let _ = writeln!(o, "\t\tsize {METER_SIZE}");
            let _ = writeln!(o, "\t\tflags dynamic,timeout");
            let _ = writeln!(o, "\t\ttimeout {METER_TIMEOUT}");
        }
        SetKind::Timed => {
            let _ = writeln!(o, "\t\tflags timeout");
        }
        SetKind::Plain => {}
    }
    if !elements.is_empty() {
        let _ = writeln!(o, "\t\telements = {{ {} }}", elements.join(", "));
    }
    let _ = writeln!(o, "\t}}");
}

/// The whole script for `nft -f -` (see the module notes). Meant for `Backend::Nftables`;
/// with an empty `front` (no firewall configured) the text matches no interface.
pub fn render(rs: &Ruleset) -> String {
    let mut o = String::new();
    // No back prefix known: the sources to masquerade are learned from the forward chain.
    let nat_learn = rs.nat && rs.nat_sources.is_empty();
    let _ = writeln!(
        o,
        "# fwlb firewall, generated from the configuration: apply with `nft -f -`."
    );
    let _ = writeln!(
        o,
        "# One transaction: create the table if missing, delete it, define it again."
    );
    let _ = writeln!(o, "table inet {TABLE} {{}}");
    let _ = writeln!(o, "delete table inet {TABLE}");
    let _ = writeln!(o, "table inet {TABLE} {{");
    sets(&mut o, rs, nat_learn);
    input_chain(&mut o, rs);
    front_in_chain(&mut o, rs);
    if let Some(back) = &rs.back {
        back_in_chain(&mut o, back, rs.back_drop);
        forward_chain(&mut o, rs, back, nat_learn);
    }
    if rs.nat {
        postrouting_chain(&mut o, rs, nat_learn);
    }
    let _ = writeln!(o, "}}");
    o
}

/// The ban sets (with the bans to install) and the meters.
fn sets(o: &mut String, rs: &Ruleset, nat_learn: bool) {
    let _ = writeln!(
        o,
        "\t# Banned sources (control port: ban IP [DURATION] / unban IP)."
    );
    for (name, ty, v4) in [
        ("banned4", "ipv4_addr", true),
        ("banned6", "ipv6_addr", false),
    ] {
        let elems: Vec<String> = rs
            .bans
            .iter()
            .filter(|b| b.ip.is_ipv4() == v4)
            .map(|b| element(b.ip, b.timeout))
            .collect();
        set_block(o, name, ty, SetKind::Timed, &elems);
    }
    if rs.back.is_some() {
        let _ = writeln!(
            o,
            "\t# The servers on back: by address, and by name as resolved (kept up to date by the daemon)."
        );
        let servers = rs.server_ips();
        for (name, ty, v4) in [
            (SERVER_SETS[0], "ipv4_addr", true),
            (SERVER_SETS[1], "ipv6_addr", false),
        ] {
            set_block(o, name, ty, SetKind::Plain, &family(&servers, v4));
        }
    }
    let meter = |o: &mut String, name: &str, ty: &str| set_block(o, name, ty, SetKind::Meter, &[]);
    if rs.syn_rate.is_some() {
        let _ = writeln!(
            o,
            "\t# syn_rate meters: one entry per source opening TCP connections on front."
        );
        meter(o, "synflood4", "ipv4_addr");
        meter(o, "synflood6", "ipv6_addr");
    }
    if nat_learn {
        let _ = writeln!(
            o,
            "\t# Sources forwarded from back to front: the ones to masquerade (no back prefix known)."
        );
        meter(o, "natsrc4", "ipv4_addr");
        meter(o, "natsrc6", "ipv6_addr");
    }
}

/// A chain's opening after a blank line; a base chain (`hook`: its type, hook and priority)
/// with policy accept.
fn chain(o: &mut String, name: &str, hook: Option<&str>) {
    let _ = writeln!(o);
    let _ = writeln!(o, "\tchain {name} {{");
    if let Some(h) = hook {
        let _ = writeln!(o, "\t\ttype {h}; policy accept;");
    }
}

/// input: decisions for every interface, then one chain per fwlb interface.
fn input_chain(o: &mut String, rs: &Ruleset) {
    let front = rs.front.as_str();
    chain(o, "input", Some("filter hook input priority filter"));
    let _ = writeln!(o, "\t\tiifname \"{front}\" ip saddr @banned4 counter drop");
    let _ = writeln!(o, "\t\tiifname \"{front}\" ip6 saddr @banned6 counter drop");
    let _ = writeln!(o, "\t\tct state established,related accept");
    let _ = writeln!(o, "\t\tiif \"lo\" accept");
    if let Some(port) = rs.control_port {
        let _ = writeln!(
            o,
            "\t\t# The control port: loopback only (and control_allow), on every interface."
        );
        for n in &rs.control_allow {
            let _ = writeln!(o, "\t\t{} {} tcp dport {port} accept", saddr(n.0), net(*n));
        }
        let _ = writeln!(o, "\t\ttcp dport {port} counter drop");
    }
    if !rs.vrrp_ifaces.is_empty() {
        vrrp_input(o, rs);
    }
    let _ = writeln!(o, "\t\tiifname \"{front}\" jump front_in");
    if let Some(back) = &rs.back {
        let _ = writeln!(o, "\t\tiifname \"{back}\" jump back_in");
    }
    let _ = writeln!(o, "\t}}");
}

/// VRRP on the input chain: accepted from the peers (from anyone on an interface where an
/// instance lists none), dropped otherwise.
fn vrrp_input(o: &mut String, rs: &Ruleset) {
    let _ = writeln!(
        o,
        "\t\t# VRRP (IP protocol 112) only from the peers; multicast from anyone where an instance lists no peers."
    );
    for (iface, from) in rs.vrrp_accepts() {
        let v4 = match from {
            VrrpFrom::Anyone => {
                let _ = writeln!(
                    o,
                    "\t\tiifname \"{iface}\" meta l4proto vrrp ip daddr {VRRP_GROUP4} accept"
                );
                let _ = writeln!(
                    o,
                    "\t\tiifname \"{iface}\" meta l4proto vrrp ip6 daddr {VRRP_GROUP6} accept"
                );
                continue;
            }
            VrrpFrom::Peers { v4 } => v4,
        };
        let (sa, da, group) = if v4 {
            ("ip saddr", "ip daddr", VRRP_GROUP4)
        } else {
            ("ip6 saddr", "ip6 daddr", VRRP_GROUP6)
        };
        let peers = one_or_set(&family(&rs.vrrp_peers, v4));
        let _ = writeln!(
            o,
            "\t\tiifname \"{iface}\" meta l4proto vrrp {sa} {peers} {da} {group} accept"
        );
        // Unicast VRRP (peers configured) is addressed to one of our own addresses.
        let _ = writeln!(
            o,
            "\t\tiifname \"{iface}\" meta l4proto vrrp {sa} {peers} fib daddr type local accept"
        );
    }
    let _ = writeln!(
        o,
        "\t\tiifname {} meta l4proto vrrp counter drop",
        quoted_set(&rs.vrrp_drop_ifaces())
    );
}

/// front_in: default drop.
fn front_in_chain(o: &mut String, rs: &Ruleset) {
    chain(o, "front_in", None);
    let _ = writeln!(o, "\t\tct state invalid counter drop");
    if let Some(rate) = rs.syn_rate {
        let n = rate.per_second;
        let _ = writeln!(
            o,
            "\t\t# syn_rate: at most {n} new TCP connections per second from one source (burst: one second's worth)."
        );
        for (set, sa) in [("synflood4", "ip saddr"), ("synflood6", "ip6 saddr")] {
            let _ = writeln!(
                o,
                "\t\ttcp flags & (fin | syn | rst | ack) == syn update @{set} {{ {sa} limit rate over {n}/second burst {n} packets }} counter drop"
            );
        }
    }
    listener_rules(o, rs);
    icmp_rules(o);
    if !rs.allow.is_empty() {
        let _ = writeln!(o, "\t\t# allow");
    }
    for a in &rs.allow {
        let from = match a.from {
            Some(n) => format!("{} {} ", saddr(n.0), net(n)),
            None => String::new(),
        };
        let p = a.proto.name();
        let _ = writeln!(o, "\t\t{from}{p} dport {} accept", ports(a));
    }
    let _ = writeln!(o, "\t\tcounter drop");
    let _ = writeln!(o, "\t}}");
}

fn listener_rules(o: &mut String, rs: &Ruleset) {
    if !rs.listeners.is_empty() {
        let _ = writeln!(o, "\t\t# The balancers' listeners.");
    }
    for (proto, a) in &rs.listeners {
        let p = proto.name();
        let port = a.port();
        if a.ip().is_unspecified() {
            // A wildcard listener takes every address of its family (v6 sockets are v6only).
            let fam = if a.is_ipv4() { "ipv4" } else { "ipv6" };
            let _ = writeln!(o, "\t\tmeta nfproto {fam} {p} dport {port} accept");
        } else {
            let _ = writeln!(
                o,
                "\t\t{} {} {p} dport {port} accept",
                daddr(a.ip()),
                a.ip()
            );
        }
    }
}

fn icmp_rules(o: &mut String) {
    let _ = writeln!(
        o,
        "\t\t# ICMP that networks need: echo (rate limited), errors (PMTU), neighbour discovery."
    );
    let _ = writeln!(
        o,
        "\t\ticmp type echo-request limit rate {ECHO_RATE} accept"
    );
    let _ = writeln!(
        o,
        "\t\ticmp type {{ destination-unreachable, time-exceeded, parameter-problem }} accept"
    );
    let _ = writeln!(
        o,
        "\t\ticmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query }} accept"
    );
    let _ = writeln!(
        o,
        "\t\ticmpv6 type echo-request limit rate {ECHO_RATE} accept"
    );
}

/// back_in: the servers, from their sets; then, with `back_policy = "drop"`, the ICMP
/// networks need and a drop, else the chain's end falls back to the input policy (accept).
fn back_in_chain(o: &mut String, back: &str, drop: bool) {
    chain(o, "back_in", None);
    if drop {
        let _ = writeln!(o, "\t\tct state invalid counter drop");
        let _ = writeln!(o, "\t\t# The servers (counted).");
    } else {
        let _ = writeln!(
            o,
            "\t\t# The servers (counted; other traffic on {back} is left to the host's policy)."
        );
    }
    for (set, v4) in [(SERVER_SETS[0], true), (SERVER_SETS[1], false)] {
        let _ = writeln!(o, "\t\t{} @{set} counter accept", saddr_of(v4));
    }
    if drop {
        icmp_rules(o);
        let _ = writeln!(o, "\t\t# back_policy = \"drop\": nothing else from {back}.");
        let _ = writeln!(o, "\t\tcounter drop");
    }
    let _ = writeln!(o, "\t}}");
}

/// forward: back may go out through front, front may not start connections into back.
fn forward_chain(o: &mut String, rs: &Ruleset, back: &str, nat_learn: bool) {
    let front = rs.front.as_str();
    chain(o, "forward", Some("filter hook forward priority filter"));
    let _ = writeln!(o, "\t\tct state established,related accept");
    if nat_learn {
        for (set, sa) in [("natsrc4", "ip saddr"), ("natsrc6", "ip6 saddr")] {
            let _ = writeln!(
                o,
                "\t\tiifname \"{back}\" oifname \"{front}\" ct state new update @{set} {{ {sa} }}"
            );
        }
    }
    let _ = writeln!(o, "\t\tiifname \"{back}\" oifname \"{front}\" accept");
    let _ = writeln!(o, "\t\tiifname \"{front}\" oifname \"{back}\" counter drop");
    let _ = writeln!(o, "\t}}");
}

/// postrouting: masquerade the back network through front.
fn postrouting_chain(o: &mut String, rs: &Ruleset, nat_learn: bool) {
    let front = rs.front.as_str();
    chain(
        o,
        "postrouting",
        Some("nat hook postrouting priority srcnat"),
    );
    if nat_learn {
        for (set, sa) in [("natsrc4", "ip saddr"), ("natsrc6", "ip6 saddr")] {
            let _ = writeln!(o, "\t\toifname \"{front}\" {sa} @{set} masquerade");
        }
    } else {
        for v4 in [true, false] {
            let nets: Vec<String> = rs
                .nat_sources
                .iter()
                .filter(|n| n.0.is_ipv4() == v4)
                .map(|n| net(*n))
                .collect();
            if !nets.is_empty() {
                let _ = writeln!(
                    o,
                    "\t\toifname \"{front}\" {} {} masquerade",
                    saddr_of(v4),
                    one_or_set(&nets)
                );
            }
        }
    }
    let _ = writeln!(o, "\t}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::firewall::test_ip as ip;

    #[test]
    fn durations_in_nft_notation() {
        assert_eq!(duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(duration(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_nanos(1)), "1ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn ban_replaces_the_timeout_in_one_transaction() {
        assert_eq!(
            ban(ip("192.0.2.7"), Some(Duration::from_secs(3600))),
            "add element inet fwlb banned4 { 192.0.2.7 }\n\
             delete element inet fwlb banned4 { 192.0.2.7 }\n\
             add element inet fwlb banned4 { 192.0.2.7 timeout 1h }\n"
        );
        assert_eq!(
            ban(ip("2001:db8::7"), None),
            "add element inet fwlb banned6 { 2001:db8::7 }\n\
             delete element inet fwlb banned6 { 2001:db8::7 }\n\
             add element inet fwlb banned6 { 2001:db8::7 }\n"
        );
        assert!(
            ban(ip("192.0.2.7"), Some(Duration::ZERO)).ends_with("{ 192.0.2.7 }\n"),
            "a zero timeout is a permanent ban"
        );
    }

    #[test]
    fn unban_list_delete() {
        assert_eq!(
            unban(ip("2001:db8::7")),
            "add element inet fwlb banned6 { 2001:db8::7 }\n\
             delete element inet fwlb banned6 { 2001:db8::7 }\n"
        );
        assert_eq!(list_bans(), "list table inet fwlb\n");
        assert_eq!(delete(), "delete table inet fwlb\n");
    }

    #[test]
    fn bans_from_nft_json() {
        // As printed by nft 1.0.6 for `nft -j list sets inet` (another table's set is ignored).
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "banned4", "table": "fwlb", "type": "ipv4_addr", "handle": 6, "flags": ["timeout"], "elem": ["192.0.2.98", {"elem": {"val": "192.0.2.99", "timeout": 5400, "expires": 5399}}]}}, {"set": {"family": "inet", "name": "banned6", "table": "fwlb", "type": "ipv6_addr", "handle": 7, "flags": ["timeout"]}}, {"set": {"family": "inet", "name": "banned4", "table": "other", "type": "ipv4_addr", "handle": 1, "elem": ["10.9.9.9"]}}]}"#;
        assert_eq!(
            parse_bans(json),
            Ok(vec![
                Ban {
                    ip: ip("192.0.2.98"),
                    timeout: None
                },
                Ban {
                    ip: ip("192.0.2.99"),
                    timeout: Some(Duration::from_secs(5399))
                },
            ])
        );
        assert!(
            parse_bans("{ not json")
                .unwrap_err()
                .starts_with("nft JSON output")
        );
        assert!(
            parse_bans("{}")
                .unwrap_err()
                .contains("no \"nftables\" array")
        );
        let bad = r#"{"nftables": [{"set": {"family": "inet", "table": "fwlb", "name": "banned4", "elem": ["nope"]}}]}"#;
        assert!(
            parse_bans(bad)
                .unwrap_err()
                .contains("\"nope\" is not an address")
        );
    }

    #[test]
    fn bans_from_nft_text() {
        // `list table inet fwlb` through `nft -f -` (nft 1.0.6), with a wrapped element list.
        let text = "table inet fwlb {\n\tset banned4 {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\telements = { 203.0.113.66 timeout 1h30m expires 1h29m59s964ms, 203.0.113.67,\n\t\t\t     203.0.113.68 timeout 1d expires 23h59m }\n\t}\n\n\tset banned6 {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t\telements = { 2001:db8:bad::1 timeout 10m expires 9m59s980ms }\n\t}\n\n\tset synflood4 {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n\t\telements = { 198.51.100.99 expires 30s }\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\ntable inet other {\n\tset banned4 {\n\t\ttype ipv4_addr\n\t\telements = { 10.9.9.9 }\n\t}\n}\n";
        let ms = Duration::from_millis;
        assert_eq!(
            parse_bans(text),
            Ok(vec![
                Ban {
                    ip: ip("203.0.113.66"),
                    timeout: Some(ms(5_399_964))
                },
                Ban {
                    ip: ip("203.0.113.67"),
                    timeout: None
                },
                Ban {
                    ip: ip("203.0.113.68"),
                    timeout: Some(ms(86_340_000))
                },
                Ban {
                    ip: ip("2001:db8:bad::1"),
                    timeout: Some(ms(599_980))
                },
            ])
        );
        assert_eq!(parse_bans(""), Ok(vec![]));
        assert!(
            parse_bans(
                "table inet fwlb {\n\tset banned4 {\n\t\telements = { 1.2.3.4 expires soon }\n"
            )
            .unwrap_err()
            .contains("bad expiry \"soon\"")
        );
        assert!(
            parse_bans("table inet fwlb {\n\tset banned4 {\n\t\telements = { 1.2.3.4,\n")
                .unwrap_err()
                .contains("unterminated")
        );
    }

    #[test]
    fn nft_durations_parse() {
        assert_eq!(
            parse_duration("1d2h3m4s5ms"),
            Some(Duration::from_millis(93_784_005))
        );
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration(""), None);
    }
}
