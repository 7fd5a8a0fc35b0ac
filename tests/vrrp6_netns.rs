#![cfg(target_os = "linux")]
//! VRRPv3 over IPv6 on a real segment: hosts (network namespaces) on a bridge, fwlb on two of
//! them or fwlb against keepalived, a third host as the client whose neighbour cache must
//! follow the master through our unsolicited neighbour advertisements. Needs root and `ip`;
//! the keepalived tests need `keepalived` (apt-get install keepalived).

mod common;

use std::time::{Duration, Instant};

use common::vrrp::{Keepalived, Lan, Vip, assert_master_and_backup, keepalived_conf};
use common::*;

const VIP: &str = "fd77::10";
const V6: Vip = Vip {
    dev: "eth0",
    cidr: "fd77::10/64",
};

/// Hosts on a bridge, host k with fd77::k/64 on eth0; without duplicate address detection,
/// so link-local addresses are usable at once, unless `dad` (as on a real host: link-local
/// addresses are tentative for a while after the link comes up).
fn lab(tag: &str, n: usize, dad: bool) -> Lan {
    let dad = if dad { "1" } else { "0" };
    let lab = Lan::new(&format!("v6{tag}"), n, |h| {
        h.sysctl("net.ipv6.conf.all.disable_ipv6=0");
        h.sysctl(&format!("net.ipv6.conf.all.accept_dad={dad}"));
        h.sysctl(&format!("net.ipv6.conf.default.accept_dad={dad}"));
    });
    for k in lab.all() {
        let h = lab.host(k);
        h.sysctl(&format!("net.ipv6.conf.eth0.accept_dad={dad}"));
        h.addr("eth0", &format!("fd77::{k}/64"));
    }
    for k in lab.all() {
        link_local(&lab, k);
    }
    lab
}

/// Host k's link-local address on eth0 (waits for it to be usable).
fn link_local(lab: &Lan, k: usize) -> String {
    lab.host(k).link_local("eth0").to_string()
}

fn mac(lab: &Lan, k: usize) -> String {
    lab.host(k).mac("eth0")
}

/// Wait until `want` alone (among `among`) holds the VIP; returns how long it took.
fn wait_holder(lab: &Lan, among: &[usize], want: usize, limit: Duration) -> Duration {
    lab.wait_holders(&V6, among, &[want], limit)
}

/// How long a pair gets to elect h1, and how long h1 must then stay master.
const SETTLE: [Duration; 2] = [Duration::from_secs(3), Duration::from_millis(500)];
/// The same with keepalived, which starts slower and advertises less often.
const SETTLE_KEEPALIVED: [Duration; 2] = [Duration::from_secs(6), Duration::from_millis(2500)];

/// Wait up to `wait[0]` until h1 alone of the pair (h1, h2) holds the VIP, check it
/// still does `wait[1]` later (`what` says why it should), and that the client (h3) resolves
/// the VIP to h1.
fn h1_serves_the_client(lab: &Lan, wait: [Duration; 2], what: &str) {
    lab.wait_stable(&V6, &[1, 2], 1, wait, what);
    client_talks(lab, 3);
    assert_eq!(client_entry(lab, 3).0, Some(mac(lab, 1)));
}

/// The client's neighbour entry for the VIP: the MAC, and whether it says the owner is a
/// router (the NA's R flag).
fn client_entry(lab: &Lan, client: usize) -> (Option<String>, bool) {
    lab.host(client).neighbour(VIP, "eth0")
}

/// Wait until the client's entry for the VIP is host `k`'s MAC, without the client sending
/// anything: only an unsolicited advertisement can change it.
fn wait_client_points_at(lab: &Lan, client: usize, k: usize, limit: Duration) -> Duration {
    let want = mac(lab, k);
    let probe = || (client_entry(lab, client).0.as_deref() == Some(want.as_str())).then_some(());
    let why = || {
        format!(
            "client's neighbour entry for {VIP} is {:?}, wanted host {k}'s {want}",
            client_entry(lab, client).0
        )
    };
    poll(limit, Duration::from_millis(5), probe, why).1
}

/// Make the client resolve the VIP (one UDP datagram to it).
fn client_talks(lab: &Lan, client: usize) {
    lab.host(client).python(&format!(
        "import socket,time\ns=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.sendto(b'x', ('{VIP}', 9))\ntime.sleep(0.2)\n"
    ));
}

/// fwlb with one IPv6 VRRPv3 instance on eth0 at `priority`; `extra` keys in [[vrrp]].
fn conf(priority: u8, extra: &str) -> String {
    format!(
        "[daemon]\ncontrol = \"127.0.0.1:8888\"\nshutdown_timeout = \"1s\"\n[[vrrp]]\nvrid = 52\ninterface = \"eth0\"\npriority = {priority}\naddresses = [\"{VIP}/64\"]\nversion = 3\nadvert_interval = \"100ms\"\n{extra}"
    )
}

fn show(lab: &Lan, k: usize) -> serde_json::Value {
    lab.host(k).show_vrrp()["vrrp"][0].clone()
}

/// h2's `show vrrp`: a backup that hears h1, whose adverts come from its link-local address
/// (RFC 5798 §5.1.2.1).
fn h2_backs_up_h1(lab: &Lan) -> serde_json::Value {
    let s2 = show(lab, 2);
    assert_eq!(s2["state"].as_str(), Some("backup"), "{s2}");
    assert_eq!(s2["master"].as_str(), Some(link_local(lab, 1).as_str()));
    s2
}

/// `show vrrp` counted no dropped advert; `what` says why there must be none.
fn nothing_dropped(s: &serde_json::Value, what: &str) {
    assert!(
        s["dropped"].as_object().is_none_or(|m| m.is_empty()),
        "{what}: {s}"
    );
}

/// keepalived with one IPv6 VRRPv3 instance (vrrp-reference.md §3.1, IPv6 variant, 100 ms).
fn keepalived(state: &str, priority: u8) -> String {
    keepalived_conf(&Keepalived {
        state,
        priority,
        ..Keepalived::instance(52, V6.cidr)
    })
}

#[test]
fn fwlb_pair_over_ipv6_elects_hands_over_and_survives_a_crash() {
    let lab = lab("p", 3, false);
    let pair = [1, 2];
    // h2 forwards IPv6 on eth0: its advertisements carry the Router flag, h1's do not.
    lab.host(2).sysctl("net.ipv6.conf.eth0.forwarding=1");
    // v3 at 100 ms: Master_Down_Interval for priority 100 = 300 ms + 61 ms skew.
    let mut h1 = lab.host(1).daemon(&conf(150, ""));
    let h2 = lab.host(2).daemon(&conf(100, ""));
    showing_logs(&[("h1", &h1), ("h2", &h2)], || {
        h1_serves_the_client(&lab, SETTLE, "stable");
        assert!(!client_entry(&lab, 3).1);
        let (s1, s2) = (show(&lab, 1), h2_backs_up_h1(&lab));
        assert_master_and_backup(&s1, &s2);
        nothing_dropped(&s2, "no advert dropped");
    });
    // Planned stop: priority 0, the backup takes over within its skew time (61 ms), and its
    // unsolicited NA moves the client's entry.
    h1.signal("TERM");
    let t0 = Instant::now();
    let handover = wait_holder(&lab, &pair, 2, Duration::from_secs(2));
    wait_client_points_at(&lab, 3, 2, Duration::from_secs(1));
    let na = t0.elapsed();
    eprintln!("SIGTERM: VIP on h2 after {handover:?}, client's entry after {na:?}");
    assert!(
        client_entry(&lab, 3).1,
        "h2 forwards: its NA has the Router flag"
    );
    assert!(
        handover < Duration::from_millis(300),
        "planned handover took {handover:?}\n{}",
        h2.log()
    );
    let _ = h1.child.wait();
    // Back: h1 (150) preempts, and the client follows it.
    let h1 = lab.host(1).daemon(&conf(150, ""));
    wait_holder(&lab, &pair, 1, Duration::from_secs(3));
    wait_client_points_at(&lab, 3, 1, Duration::from_secs(1));
    assert!(
        !client_entry(&lab, 3).1,
        "h1 does not forward: no Router flag"
    );
    // Crash: kill -9 of both processes and cable pull at once. No priority 0: the backup
    // waits Master_Down_Interval from the last advert it heard.
    h1.crash();
    lab.cable(1, false);
    let t0 = Instant::now();
    let takeover = lab.wait_holds(2, &V6, Duration::from_secs(3));
    wait_client_points_at(&lab, 3, 2, Duration::from_secs(3));
    let na = t0.elapsed();
    eprintln!("kill -9: VIP on h2 after {takeover:?}, client's entry after {na:?}");
    assert!(
        takeover < Duration::from_millis(361 + 300),
        "kill -9 failover took {takeover:?}\n{}",
        h2.log()
    );
    assert!(na < Duration::from_secs(1), "client followed after {na:?}");
    h2.assert_logged("became master");
    let s2 = show(&lab, 2);
    assert_eq!(s2["state"].as_str(), Some("master"), "{s2}");
    assert_eq!(s2["master"].as_str(), Some(link_local(&lab, 2).as_str()));
}

#[test]
fn unicast_ipv6_peers_elect_among_themselves_only() {
    let lab = lab("u", 3, false);
    // Global peers: each side sends from its own global address, the one the other lists.
    let h1 = lab.host(1).daemon(&conf(150, "peers = [\"fd77::2\"]\n"));
    let h2 = lab.host(2).daemon(&conf(100, "peers = [\"fd77::1\"]\n"));
    // A multicast router with everything else right, at a higher priority: it hears nothing
    // from the pair (their adverts are unicast), and the pair ignores its adverts.
    let h3 = lab.host(3).daemon(&conf(250, ""));
    showing_logs(&[("h1", &h1), ("h2", &h2), ("h3", &h3)], || {
        lab.wait_holds(1, &V6, Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            lab.holds(1, &V6) && !lab.holds(2, &V6),
            "the pair keeps its master"
        );
        let (s2, s3) = (show(&lab, 2), show(&lab, 3));
        assert_eq!(s2["state"].as_str(), Some("backup"), "{s2}");
        assert_eq!(
            s2["master"].as_str(),
            Some("fd77::1"),
            "sent from h1's global address"
        );
        assert!(
            s2["dropped"]["not-a-peer"].as_u64().is_some_and(|n| n > 0),
            "h3's multicast adverts are refused: {s2}"
        );
        assert_eq!(
            s3["adverts_received"].as_u64(),
            Some(0),
            "no advert of the pair reached the group: {s3}"
        );
        // Planned stop: priority 0 by unicast, the peer takes over within its skew time.
        h1.signal("TERM");
        let t = lab.wait_holds(2, &V6, Duration::from_secs(2));
        eprintln!("unicast IPv6 SIGTERM: VIP on h2 after {t:?}");
        assert!(t < Duration::from_millis(300), "{t:?}");
    });
}

#[test]
fn cable_pull_and_restore_with_duplicate_address_detection_on() {
    let lab = lab("d", 2, true);
    let pair = [1, 2];
    let h1 = lab.host(1).daemon(&conf(150, ""));
    let h2 = lab.host(2).daemon(&conf(100, ""));
    showing_logs(&[("h1", &h1), ("h2", &h2)], || {
        wait_holder(&lab, &pair, 1, Duration::from_secs(3));
        // Cable pull on the master: Fault there (VIP removed at once), takeover here after
        // Master_Down_Interval.
        lab.cable(1, false);
        let t = wait_holder(&lab, &pair, 2, Duration::from_secs(3));
        eprintln!("cable pull (DAD on): VIP on h2 after {t:?}");
        assert!(t < Duration::from_millis(361 + 300), "{t:?}");
        // Cable back: h1 listens, hears h2 (lower priority) and preempts.
        lab.cable(1, true);
        let t0 = Instant::now();
        let t = wait_holder(&lab, &pair, 1, Duration::from_secs(3));
        eprintln!("cable restored: VIP back on h1 after {t:?}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(lab.holders(&V6, &pair), [1], "stable after the restore");
        h2_backs_up_h1(&lab);
        assert!(t0.elapsed() < Duration::from_secs(3));
    });
}

#[test]
fn keepalived_backs_up_fwlb_over_ipv6() {
    let lab = lab("k", 3, false);
    let pair = [1, 2];
    let k = lab.host(2).keepalived(&keepalived("BACKUP", 100));
    let h1 = lab.host(1).daemon(&conf(150, ""));
    showing_logs(&[("fwlb", &h1), ("keepalived", &k)], || {
        h1_serves_the_client(
            &lab,
            SETTLE_KEEPALIVED,
            "keepalived accepts fwlb's IPv6 adverts and stays backup",
        );
        // Planned stop of fwlb: priority 0, keepalived takes over within its skew time.
        h1.signal("TERM");
        let t = wait_holder(&lab, &pair, 2, Duration::from_secs(4));
        eprintln!("fwlb SIGTERM: keepalived holds the VIP after {t:?}");
        assert!(
            t < Duration::from_millis(1000),
            "keepalived took over after {t:?}"
        );
        wait_client_points_at(&lab, 3, 2, Duration::from_secs(2));
    });
}

#[test]
fn fwlb_backs_up_keepalived_over_ipv6() {
    let lab = lab("m", 3, false);
    let k = lab.host(1).keepalived(&keepalived("MASTER", 200));
    let h2 = lab.host(2).daemon(&conf(100, ""));
    showing_logs(&[("fwlb", &h2), ("keepalived", &k)], || {
        h1_serves_the_client(
            &lab,
            SETTLE_KEEPALIVED,
            "fwlb accepts keepalived's IPv6 adverts and stays backup",
        );
        let s2 = h2_backs_up_h1(&lab);
        nothing_dropped(&s2, "keepalived's adverts all pass the checks");
        // keepalived stops (priority 0): fwlb takes over within its skew time (61 ms), and
        // the client follows on fwlb's unsolicited NA.
        k.signal("TERM");
        let t0 = Instant::now();
        let t = lab.wait_holds(2, &V6, Duration::from_secs(4));
        wait_client_points_at(&lab, 3, 2, Duration::from_secs(2));
        let na = t0.elapsed();
        eprintln!(
            "keepalived SIGTERM: fwlb holds the VIP after {t:?}, client's entry after {na:?}"
        );
        assert!(t < Duration::from_millis(1200), "took {t:?}");
    });
}
