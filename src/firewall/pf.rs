//! pf (FreeBSD): rules for the anchor `fwlb`, loaded with `pfctl -a fwlb -f -`.
//!
//! Loading an anchor replaces its translation rules, filter rules and the tables it defines in
//! one transaction. The main ruleset must call the anchor (`nat-anchor "fwlb"` and
//! `anchor "fwlb"`, [`required_lines`]); everything else in it stays the administrator's, and
//! [`check_reachable`] refuses to install when a call is missing or pf is disabled. Decisions
//! on front use `quick`, so later rules of the main ruleset cannot reopen what fwlb closed.
//!
//! Dynamic addresses live in tables of the anchor: `<fwlb_banned>` (control port `ban`),
//! `<fwlb_peers>` and `<fwlb_servers>`. The daemon changes `<fwlb_banned>` (and the
//! resolved addresses in `<fwlb_servers>`) through /dev/pf
//! ioctls (`pf_apply`, on `sys::pf`); the pfctl command lines here ([`ban`], [`unban`],
//! [`list_bans`]) are the same operations by hand. pf table entries have no timeout of their
//! own: the daemon keeps each ban's deadline and removes the entry when it passes. pf checks
//! states before rules, so a new ban must also kill the source's existing states
//! ([`kill_states`]).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::model::{Allow, Ban, Proto, Ruleset, VrrpFrom, net};

pub const ANCHOR: &str = "fwlb";
pub const BANNED: &str = "fwlb_banned";
pub const PEERS: &str = "fwlb_peers";
pub const SERVERS: &str = "fwlb_servers";
/// pfctl's place on FreeBSD (the privileged parent runs it outside the chroot).
pub const PFCTL: &str = "/sbin/pfctl";
/// FreeBSD's loopback interface.
const LOOPBACK: &str = "lo0";
/// VRRP is IP protocol 112, which /etc/protocols on FreeBSD calls "carp": use the number.
const VRRP: u8 = 112;
const VRRP_GROUP4: &str = "224.0.0.18";
const VRRP_GROUP6: &str = "ff02::12";

fn argv(args: &[&str]) -> Vec<String> {
    std::iter::once(PFCTL)
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

/// The pfctl command line (argv) that adds `ip` to `<fwlb_banned>`. `timeout` is not part of
/// the command: pf tables keep entries until removed, so the caller schedules [`unban`] for
/// the deadline. Run [`kill_states`] next, or established connections survive the ban.
pub fn ban(ip: IpAddr, timeout: Option<Duration>) -> Vec<String> {
    let _ = timeout; // see above: expiry is the daemon's job on pf
    argv(&["-a", ANCHOR, "-t", BANNED, "-T", "add", &ip.to_string()])
}

/// The pfctl command line that kills every state from `ip` (after a ban).
pub fn kill_states(ip: IpAddr) -> Vec<String> {
    argv(&["-k", &ip.to_string()])
}

/// The pfctl command line that removes `ip` from `<fwlb_banned>` (succeeds if absent).
pub fn unban(ip: IpAddr) -> Vec<String> {
    argv(&["-a", ANCHOR, "-t", BANNED, "-T", "delete", &ip.to_string()])
}

/// The pfctl command line that prints `<fwlb_banned>`, one address per line ([`parse_bans`]).
pub fn list_bans() -> Vec<String> {
    argv(&["-a", ANCHOR, "-t", BANNED, "-T", "show"])
}

/// The pfctl command line that loads an anchor text (on stdin) as the anchor `fwlb`, in one
/// transaction: its translation rules, filter rules and tables are replaced together, and a
/// text pfctl rejects changes nothing.
pub fn load() -> Vec<String> {
    argv(&["-a", ANCHOR, "-f", "-"])
}

/// The pfctl command line that empties the anchor `fwlb` (rules, translation rules and its
/// tables). With `-a`, `-F all` touches only the anchor: states, counters and the main
/// ruleset stay.
pub fn flush() -> Vec<String> {
    argv(&["-a", ANCHOR, "-F", "all"])
}

/// The pfctl command lines that print pf's status (`-s info`), the main ruleset's filter
/// rules (`-s rules`) and its translation rules (`-s nat`), for [`check_reachable`].
pub fn show_info() -> Vec<String> {
    argv(&["-s", "info"])
}

pub fn show_rules() -> Vec<String> {
    argv(&["-s", "rules"])
}

pub fn show_nat() -> Vec<String> {
    argv(&["-s", "nat"])
}

/// The lines the administrator's /etc/pf.conf needs so that packets reach fwlb's anchor
/// (`nat-anchor` only with `nat = true`). pf evaluates the main ruleset top-down; the
/// anchor's `quick` rules decide for the packets they match wherever the call stands, but
/// a `quick` rule of the main ruleset before the call wins over fwlb's.
pub fn required_lines(nat: bool) -> Vec<String> {
    let mut v = Vec::new();
    if nat {
        v.push(format!("nat-anchor \"{ANCHOR}\""));
    }
    v.push(format!("anchor \"{ANCHOR}\""));
    v
}

/// Whether pf filters at all, from `pfctl -s info` ("Status: Enabled for ..." or
/// "Status: Disabled ..."); `None` when the text has no status line.
pub fn parse_enabled(info: &str) -> Option<bool> {
    info.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("Status:")?.trim_start();
        if rest.starts_with("Enabled") {
            Some(true)
        } else if rest.starts_with("Disabled") {
            Some(false)
        } else {
            None
        }
    })
}

/// Whether a listing of the main ruleset (`pfctl -s rules` or `-s nat`) calls fwlb's anchor
/// with `keyword` ("anchor" or "nat-anchor"). pfctl prints calls quoted and normalised:
/// `anchor "fwlb" all`, `nat-anchor "fwlb" on em0 all`.
pub fn calls_anchor(listing: &str, keyword: &str) -> bool {
    let call = format!("{keyword} \"{ANCHOR}\"");
    listing.lines().any(|l| {
        l.trim_start()
            .strip_prefix(call.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
    })
}

/// What stops the loaded anchor from filtering, from the outputs of [`show_info`],
/// [`show_rules`] and (with `nat`) [`show_nat`]: pf disabled, or a call missing from the
/// main ruleset. `Ok` means packets reach the anchor. Every problem is reported at once.
pub fn check_reachable(info: &str, rules: &str, nat: Option<&str>) -> Result<(), String> {
    let mut problems = Vec::new();
    match parse_enabled(info) {
        Some(true) => {}
        Some(false) => problems.push(
            "pf is disabled (enable it: pfctl -e, and pf_enable=\"YES\" in /etc/rc.conf)"
                .to_string(),
        ),
        None => problems.push("`pfctl -s info` printed no \"Status:\" line".to_string()),
    }
    let mut missing = Vec::new();
    if let Some(nat) = nat
        && !calls_anchor(nat, "nat-anchor")
    {
        missing.push(format!("nat-anchor \"{ANCHOR}\""));
    }
    if !calls_anchor(rules, "anchor") {
        missing.push(format!("anchor \"{ANCHOR}\""));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "the main pf ruleset does not call fwlb's anchor, so its rules would never see a packet: add {} to /etc/pf.conf (translation rules before filter rules, the anchor before your own quick rules) and reload it with pfctl -f /etc/pf.conf",
            missing.join(" and ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The addresses printed by [`list_bans`]. pf keeps no timeouts, so every `timeout` is `None`;
/// the daemon knows the deadlines.
pub fn parse_bans(text: &str) -> Result<Vec<Ban>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<IpAddr>()
                .map(|ip| Ban { ip, timeout: None })
                .map_err(|_| format!("pfctl -T show: {l:?} is not an address"))
        })
        .collect()
}

/// The pfctl command line that removes bans added more than `age` ago (whole seconds):
/// `pfctl -T expire`, run periodically when every ban has the same duration.
pub fn expire(age: Duration) -> Vec<String> {
    argv(&[
        "-a",
        ANCHOR,
        "-t",
        BANNED,
        "-T",
        "expire",
        &age.as_secs().to_string(),
    ])
}

fn af(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "inet" } else { "inet6" }
}

/// A table definition with exactly these addresses (`{ }` empties it on load).
fn table(o: &mut String, name: &str, ips: &[IpAddr]) {
    let list: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    if list.is_empty() {
        let _ = writeln!(o, "table <{name}> persist {{ }}");
    } else {
        let _ = writeln!(o, "table <{name}> persist {{ {} }}", list.join(" "));
    }
}

fn port_spec(a: &Allow) -> String {
    if a.port == a.port_last {
        a.port.to_string()
    } else {
        format!("{}:{}", a.port, a.port_last)
    }
}

/// The anchor text (see the module notes).
pub fn render(rs: &Ruleset) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# fwlb firewall, generated from the configuration: load with `pfctl -a {ANCHOR} -f -`."
    );
    let _ = writeln!(
        o,
        "# The main ruleset calls it with: nat-anchor \"{ANCHOR}\" and anchor \"{ANCHOR}\"."
    );
    let _ = writeln!(o);

    // Tables: loading replaces their contents with these lists.
    let banned: Vec<IpAddr> = rs.bans.iter().map(|b| b.ip).collect();
    let servers = rs.server_ips();
    table(&mut o, BANNED, &banned);
    table(&mut o, PEERS, &rs.vrrp_peers);
    table(&mut o, SERVERS, &servers);

    // Translation rules come before filter rules (pf.conf's required order).
    if let (true, Some(back)) = (rs.nat, &rs.back) {
        nat_rules(&mut o, rs, back);
    }
    host_rules(&mut o, rs);
    if !rs.vrrp_ifaces.is_empty() {
        vrrp_rules(&mut o, rs);
    }
    if let Some(back) = &rs.back {
        back_rules(&mut o, back, rs.back_drop);
    }
    front_rules(&mut o, rs);
    o
}

/// back: the servers, from `<fwlb_servers>` (by address, and by name as resolved: the daemon
/// keeps the table up to date); with `back_policy = "drop"` the ICMP networks need, then a
/// block.
fn back_rules(o: &mut String, back: &str, drop: bool) {
    let _ = writeln!(o, "# back: the servers.");
    let _ = writeln!(
        o,
        "pass in quick on {back} from <{SERVERS}> to any keep state"
    );
    if drop {
        icmp_rules(o, back);
        let _ = writeln!(o, "# back_policy = \"drop\": nothing else inbound on back.");
        let _ = writeln!(o, "block drop in quick on {back} all label \"fwlb-back\"");
    }
}

/// nat: the back network out through front's own address.
fn nat_rules(o: &mut String, rs: &Ruleset, back: &str) {
    let front = rs.front.as_str();
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "# nat: the back network goes out through front's own address (not its aliases: the VIPs)."
    );
    if rs.nat_sources.is_empty() {
        for fam in ["inet", "inet6"] {
            let _ = writeln!(
                o,
                "nat on {front} {fam} from ({back}:network) to any -> ({front}:0)"
            );
        }
    } else {
        for n in &rs.nat_sources {
            let _ = writeln!(
                o,
                "nat on {front} {} from {} to any -> ({front}:0)",
                af(n.0),
                net(*n)
            );
        }
    }
}

/// Bans first, the host's own traffic out, then the control port.
fn host_rules(o: &mut String, rs: &Ruleset) {
    let front = rs.front.as_str();
    let _ = writeln!(o);
    let _ = writeln!(o, "# Banned sources first.");
    let _ = writeln!(
        o,
        "block drop in quick on {front} from <{BANNED}> to any label \"fwlb-banned\""
    );
    let _ = writeln!(
        o,
        "# The host's own traffic out of front keeps state, so its replies pass the final drop."
    );
    let _ = writeln!(o, "pass out on {front} all keep state");
    let Some(port) = rs.control_port else {
        return;
    };
    let _ = writeln!(
        o,
        "# The control port: loopback only (and control_allow), on every interface."
    );
    let _ = writeln!(
        o,
        "pass in quick on {LOOPBACK} proto tcp from any to any port {port} keep state"
    );
    for n in &rs.control_allow {
        let _ = writeln!(
            o,
            "pass in quick {} proto tcp from {} to any port {port} keep state",
            af(n.0),
            net(*n)
        );
    }
    let _ = writeln!(
        o,
        "block drop in quick proto tcp from any to any port {port} label \"fwlb-control\""
    );
}

/// VRRP accepted from the peers (from anyone on an interface where an instance lists none),
/// dropped otherwise.
fn vrrp_rules(o: &mut String, rs: &Ruleset) {
    let _ = writeln!(
        o,
        "# VRRP only from the peers; multicast from anyone where an instance lists no peers."
    );
    for (iface, from) in rs.vrrp_accepts() {
        let (fam, group) = match from {
            VrrpFrom::Anyone => {
                let _ = writeln!(
                    o,
                    "pass in quick on {iface} inet proto {VRRP} from any to {VRRP_GROUP4} no state"
                );
                let _ = writeln!(
                    o,
                    "pass in quick on {iface} inet6 proto {VRRP} from any to {VRRP_GROUP6} no state"
                );
                continue;
            }
            VrrpFrom::Peers { v4: true } => ("inet", VRRP_GROUP4),
            VrrpFrom::Peers { v4: false } => ("inet6", VRRP_GROUP6),
        };
        let _ = writeln!(
            o,
            "pass in quick on {iface} {fam} proto {VRRP} from <{PEERS}> to {group} no state"
        );
        // Unicast VRRP goes to one of our addresses; (self) follows address changes.
        let _ = writeln!(
            o,
            "pass in quick on {iface} {fam} proto {VRRP} from <{PEERS}> to (self) no state"
        );
    }
    let ifaces = rs.vrrp_drop_ifaces();
    let on = match ifaces.as_slice() {
        [one] => one.to_string(),
        _ => format!("{{ {} }}", ifaces.join(" ")),
    };
    let _ = writeln!(
        o,
        "block drop in quick on {on} proto {VRRP} label \"fwlb-vrrp\""
    );
}

/// Front: listeners, ICMP, allow entries, then the default drop.
fn front_rules(o: &mut String, rs: &Ruleset) {
    let front = rs.front.as_str();
    let state = match rs.syn_rate {
        Some(r) => format!(
            "flags S/SA keep state (max-src-conn-rate {}/1)",
            r.per_second
        ),
        None => "flags S/SA keep state".to_string(),
    };
    let opts = |proto: Proto| {
        if proto == Proto::Tcp {
            state.as_str()
        } else {
            "keep state"
        }
    };
    if !rs.listeners.is_empty() {
        let _ = writeln!(o, "# The balancers' listeners.");
    }
    for (proto, a) in &rs.listeners {
        let to = if a.ip().is_unspecified() {
            "any".to_string()
        } else {
            a.ip().to_string()
        };
        let _ = writeln!(
            o,
            "pass in quick on {front} {} proto {} from any to {to} port {} {}",
            af(a.ip()),
            proto.name(),
            a.port(),
            opts(*proto)
        );
    }
    icmp_rules(o, front);
    if !rs.allow.is_empty() {
        let _ = writeln!(o, "# allow");
    }
    for a in &rs.allow {
        let (fam, from) = match a.from {
            Some(n) => (format!(" {}", af(n.0)), net(n)),
            None => (String::new(), "any".to_string()),
        };
        let _ = writeln!(
            o,
            "pass in quick on {front}{fam} proto {} from {from} to any port {} {}",
            a.proto.name(),
            port_spec(a),
            opts(a.proto)
        );
    }
    let _ = writeln!(o, "# Everything else inbound on front.");
    let _ = writeln!(o, "block drop in quick on {front} all label \"fwlb-front\"");
}

fn icmp_rules(o: &mut String, front: &str) {
    let _ = writeln!(
        o,
        "# ICMP that networks need (the kernel rate-limits replies: net.inet.icmp.icmplim)."
    );
    let _ = writeln!(
        o,
        "pass in quick on {front} inet proto icmp icmp-type echoreq keep state"
    );
    let _ = writeln!(
        o,
        "pass in quick on {front} inet proto icmp icmp-type {{ unreach, timex, paramprob }} no state"
    );
    let _ = writeln!(
        o,
        "pass in quick on {front} inet6 proto icmp6 icmp6-type {{ unreach, toobig, timex, paramprob, routeradv, neighbrsol, neighbradv, listqry }} no state"
    );
    let _ = writeln!(
        o,
        "pass in quick on {front} inet6 proto icmp6 icmp6-type echoreq keep state"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::firewall::test_ip as ip;

    #[test]
    fn table_commands() {
        assert_eq!(
            ban(ip("192.0.2.7"), Some(Duration::from_secs(60))),
            [
                "/sbin/pfctl",
                "-a",
                "fwlb",
                "-t",
                "fwlb_banned",
                "-T",
                "add",
                "192.0.2.7"
            ]
        );
        assert_eq!(
            kill_states(ip("2001:db8::7")),
            ["/sbin/pfctl", "-k", "2001:db8::7"]
        );
        assert_eq!(
            unban(ip("2001:db8::7")).join(" "),
            "/sbin/pfctl -a fwlb -t fwlb_banned -T delete 2001:db8::7"
        );
        assert_eq!(
            list_bans().join(" "),
            "/sbin/pfctl -a fwlb -t fwlb_banned -T show"
        );
        assert_eq!(
            expire(Duration::from_millis(3_600_900)).join(" "),
            "/sbin/pfctl -a fwlb -t fwlb_banned -T expire 3600"
        );
    }

    #[test]
    fn anchor_commands() {
        assert_eq!(load().join(" "), "/sbin/pfctl -a fwlb -f -");
        assert_eq!(flush().join(" "), "/sbin/pfctl -a fwlb -F all");
        assert_eq!(show_info().join(" "), "/sbin/pfctl -s info");
        assert_eq!(show_rules().join(" "), "/sbin/pfctl -s rules");
        assert_eq!(show_nat().join(" "), "/sbin/pfctl -s nat");
        assert_eq!(required_lines(false), ["anchor \"fwlb\""]);
        assert_eq!(
            required_lines(true),
            ["nat-anchor \"fwlb\"", "anchor \"fwlb\""]
        );
    }

    /// The shape of FreeBSD 14's `pfctl -s info`.
    const INFO_ON: &str = "Status: Enabled for 0 days 02:13:07           Debug: Urgent\n\nState Table                          Total             Rate\n  current entries                        4\n";

    #[test]
    fn pf_status() {
        assert_eq!(parse_enabled(INFO_ON), Some(true));
        assert_eq!(
            parse_enabled("Status: Disabled for 0 days 00:00:12           Debug: Urgent\n"),
            Some(false)
        );
        assert_eq!(
            parse_enabled("pfctl: /dev/pf: No such file or directory\n"),
            None
        );
        assert_eq!(parse_enabled(""), None);
    }

    #[test]
    fn anchor_calls_in_the_main_ruleset() {
        let rules = "scrub in all fragment reassemble\nblock drop in log all\nanchor \"fwlb\" all\npass out all flags S/SA keep state\n";
        assert!(calls_anchor(rules, "anchor"));
        assert!(calls_anchor("anchor \"fwlb\" in on em0 all\n", "anchor"));
        assert!(calls_anchor("  anchor \"fwlb\"\n", "anchor"));
        // Another anchor, a longer name, a nested path or a nat-anchor is not the call.
        assert!(!calls_anchor("anchor \"fwlb2\" all\n", "anchor"));
        assert!(!calls_anchor("anchor \"other/fwlb\" all\n", "anchor"));
        assert!(!calls_anchor("anchor \"fwlb/sub\" all\n", "anchor"));
        assert!(!calls_anchor("nat-anchor \"fwlb\" all\n", "anchor"));
        assert!(!calls_anchor(
            "block drop in quick on em0 from <fwlb_banned> to any label \"fwlb\"\n",
            "anchor"
        ));
        assert!(calls_anchor("nat-anchor \"fwlb\" all\n", "nat-anchor"));
        assert!(!calls_anchor("", "anchor"));
    }

    #[test]
    fn reachability_says_what_to_add() {
        let rules = "anchor \"fwlb\" all\n";
        let nat = "nat-anchor \"fwlb\" all\n";
        assert_eq!(check_reachable(INFO_ON, rules, None), Ok(()));
        assert_eq!(check_reachable(INFO_ON, rules, Some(nat)), Ok(()));

        let e = check_reachable(INFO_ON, "pass all\n", None).unwrap_err();
        assert!(e.contains("add anchor \"fwlb\" to /etc/pf.conf"), "{e}");
        assert!(!e.contains("nat-anchor"), "{e}");

        let e = check_reachable(INFO_ON, rules, Some("")).unwrap_err();
        assert!(e.contains("add nat-anchor \"fwlb\" to /etc/pf.conf"), "{e}");

        let e = check_reachable("Status: Disabled for 0 days\n", "", Some("")).unwrap_err();
        assert!(e.starts_with("pf is disabled"), "{e}");
        assert!(
            e.contains("add nat-anchor \"fwlb\" and anchor \"fwlb\""),
            "every problem at once: {e}"
        );
        let e = check_reachable("", rules, None).unwrap_err();
        assert!(e.contains("no \"Status:\" line"), "{e}");
    }

    #[test]
    fn bans_from_pfctl_show() {
        assert_eq!(
            parse_bans("   192.0.2.7\n   2001:db8::7\n\n"),
            Ok(vec![
                Ban {
                    ip: ip("192.0.2.7"),
                    timeout: None
                },
                Ban {
                    ip: ip("2001:db8::7"),
                    timeout: None
                }
            ])
        );
        assert_eq!(parse_bans(""), Ok(vec![]));
        assert!(parse_bans("   nope\n").unwrap_err().contains("\"nope\""));
    }
}
