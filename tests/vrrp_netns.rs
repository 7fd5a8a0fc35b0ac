#![cfg(target_os = "linux")]
//! The VRRP speaker on a real segment: two hosts (network namespaces) on a bridge, fwlb on
//! both or fwlb against keepalived, with kills, cable pulls and planned stops. Needs root and
//! `ip`; the keepalived tests need `keepalived` (apt-get install keepalived).

mod common;

use std::process::Command;
use std::time::Duration;

use common::vrrp::{Keepalived, Lan, Vip, assert_master_and_backup, keepalived_conf};
use common::*;

const VIP: &str = "10.77.0.10";
const FRONT: Vip = Vip {
    dev: "eth0",
    cidr: "10.77.0.10/24",
};
/// The second VRID of a group, on the back segment.
const BACK: Vip = Vip {
    dev: "eth1",
    cidr: "10.88.0.10/24",
};

/// Hosts h1..hN on one segment, host k with 10.77.0.k/24 on eth0.
fn lab(tag: &str, n: usize) -> Lan {
    let lab = Lan::new(&format!("v4{tag}"), n, |_| {});
    for k in lab.all() {
        lab.host(k).addr("eth0", &format!("10.77.0.{k}/24"));
    }
    lab
}

/// As `lab`, with a back segment for two-VRID groups: host k's eth1 has 10.88.0.k/24.
fn lab_with_back(tag: &str, n: usize) -> Lan {
    let mut lab = lab(tag, n);
    lab.add_segment("sw2", "q", "eth1");
    for k in lab.all() {
        lab.host(k).addr("eth1", &format!("10.88.0.{k}/24"));
    }
    lab
}

/// Which host holds `vip` now (None or Some(k)); fails if two do (split brain).
fn holder(lab: &Lan, vip: &Vip) -> Option<usize> {
    let who = lab.holders(vip, &lab.all());
    assert!(
        who.len() <= 1,
        "split brain: hosts {who:?} all hold {}",
        vip.cidr
    );
    who.first().copied()
}

/// Wait until `want` alone holds the VIP; returns how long it took.
fn wait_holder(lab: &Lan, want: Option<usize>, limit: Duration) -> Duration {
    lab.wait_holders(&FRONT, &lab.all(), want.as_slice(), limit)
}

/// How long a pair gets to elect h1, and how long h1 must then stay master.
const SETTLE: [Duration; 2] = [Duration::from_secs(3), Duration::from_millis(500)];
/// The same with keepalived, which starts slower and advertises less often.
const SETTLE_KEEPALIVED: [Duration; 2] = [Duration::from_secs(6), Duration::from_millis(2500)];

/// Wait up to `wait[0]` until h1 alone holds the VIP, and check it still does
/// `wait[1]` later.
fn stays_on_h1(lab: &Lan, wait: [Duration; 2], what: &str) {
    lab.wait_stable(&FRONT, &lab.all(), 1, wait, what);
}

/// fwlb's config for VRID 51 (the VIP on eth0) at `priority`; `daemon` and `vrrp` are more
/// keys of those sections (a `vrrp` ending in another table, such as [firewall], works too).
fn conf(daemon: &str, priority: u8, vrrp: &str) -> String {
    format!(
        "[daemon]\ncontrol = \"127.0.0.1:8888\"\n{daemon}[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = {priority}\naddresses = [\"{VIP}/24\"]\n{vrrp}"
    )
}

/// VRRPv3 at 100 ms: Master_Down_Interval for priority 100 = 300 ms + 61 ms skew.
const FAST: &str = "version = 3\nadvert_interval = \"100ms\"\n";
const QUICK_STOP: &str = "shutdown_timeout = \"1s\"\n";

/// `show vrrp --json` of host `k`: (state, transitions) of its first instance.
fn vrrp_state(lab: &Lan, k: usize) -> (String, u64) {
    let v = lab.host(k).show_vrrp();
    let i = &v["vrrp"][0];
    (
        i["state"].as_str().unwrap_or("?").to_string(),
        i["transitions"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn fwlb_pair_fails_over_on_kill_cable_and_planned_stop() {
    let lab = lab("p", 2);
    let mut h1 = lab.host(1).daemon(&conf(QUICK_STOP, 150, FAST));
    let h2 = lab.host(2).daemon(&conf(QUICK_STOP, 100, FAST));
    stays_on_h1(&lab, SETTLE, "stable");
    // The control port shows it.
    let show = |k: usize| lab.host(k).show_vrrp()["vrrp"][0].clone();
    let (s1, s2) = (show(1), show(2));
    assert_master_and_backup(&s1, &s2);
    assert_eq!(s2["master"], "10.77.0.1");
    // Planned stop: priority 0, the backup takes over within its skew time.
    h1.signal("TERM");
    let t = wait_holder(&lab, Some(2), Duration::from_secs(2));
    assert!(
        t < Duration::from_millis(300),
        "planned handover took {t:?}\n{}",
        h2.log()
    );
    let _ = h1.child.wait();
    // Back: h1 (150) preempts.
    let h1 = lab.host(1).daemon(&conf(QUICK_STOP, 150, FAST));
    wait_holder(&lab, Some(1), Duration::from_secs(3));
    // Cable pull on the master: the backup hears nothing and takes over after
    // Master_Down_Interval; the master sees its link down and drops the VIP at once.
    lab.cable(1, false);
    let t = wait_holder(&lab, Some(2), Duration::from_secs(3));
    assert!(
        t < Duration::from_millis(361 + 300),
        "cable pull failover took {t:?}"
    );
    lab.cable(1, true);
    wait_holder(&lab, Some(1), Duration::from_secs(3));
    // kill -9 of the master: no priority 0, so Master_Down_Interval. The killed master cannot
    // remove its VIP; only look at h2.
    h1.crash();
    let t = lab.wait_holds(2, &FRONT, Duration::from_secs(3));
    eprintln!("kill -9: VIP on h2 after {t:?}");
    assert!(
        t < Duration::from_millis(361 + 300),
        "kill -9 failover took {t:?}"
    );
    h2.assert_logged("became master");
}

#[test]
fn fwlb_and_keepalived_interoperate() {
    let lab = lab("k", 2);
    // keepalived as the backup (priority 100), VRRPv2 with a password at 1 s, as
    // vrrp-reference.md §3.1.
    let k = lab.host(2).keepalived(&keepalived_conf(&Keepalived {
        advert_int: "1",
        v3: false,
        password: Some("secret"),
        ..Keepalived::instance(51, FRONT.cidr)
    }));
    let h1 = lab
        .host(1)
        .daemon(&conf("", 150, "password = \"secret\"\n"));
    showing_logs(&[("fwlb", &h1), ("keepalived", &k)], || {
        stays_on_h1(
            &lab,
            SETTLE_KEEPALIVED,
            "keepalived accepts fwlb's adverts and stays backup",
        );
        // Planned stop of fwlb: priority 0, keepalived takes over within its skew time.
        h1.signal("TERM");
        let t = wait_holder(&lab, Some(2), Duration::from_secs(4));
        assert!(
            t < Duration::from_millis(1000),
            "keepalived took over after {t:?}"
        );
    });
}

#[test]
fn two_vrids_of_a_group_fail_over_together() {
    let lab = lab_with_back("g", 2);
    let conf = |prio: u8| {
        format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\nshutdown_timeout = \"1s\"\n\
[[vrrp]]\nvrid = 1\ninterface = \"eth0\"\npriority = {prio}\naddresses = [\"{VIP}/24\"]\nversion = 3\nadvert_interval = \"100ms\"\ndepends = [2]\n\
[[vrrp]]\nvrid = 2\ninterface = \"eth1\"\npriority = {prio}\naddresses = [\"10.88.0.10/24\"]\nversion = 3\nadvert_interval = \"100ms\"\ndepends = [1]\n"
        )
    };
    let h1 = lab.host(1).daemon(&conf(150));
    let h2 = lab.host(2).daemon(&conf(100));
    let both = |who: Option<usize>, limit: Duration| {
        let probe = || (holder(&lab, &FRONT) == who && holder(&lab, &BACK) == who).then_some(());
        let why = || {
            format!(
                "front {:?} back {:?}, wanted both on {who:?}\nh1:\n{}\nh2:\n{}",
                holder(&lab, &FRONT),
                holder(&lab, &BACK),
                h1.log(),
                h2.log()
            )
        };
        poll(limit, Duration::from_millis(5), probe, why).1
    };
    both(Some(1), Duration::from_secs(3));
    // Pull the master's BACK cable only: its front VRID must follow to the peer.
    lab.set_cable(1, 1, false);
    let t = both(Some(2), Duration::from_secs(3));
    assert!(t < Duration::from_millis(700), "group failover took {t:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        holder(&lab, &FRONT),
        Some(2),
        "the front VRID stays with the group"
    );
    // Cable back: both return together (preempt).
    lab.set_cable(1, 1, true);
    both(Some(1), Duration::from_secs(3));
}

#[test]
fn fwlb_takes_over_from_a_keepalived_master() {
    let lab = lab("m", 2);
    // keepalived as the master (priority 200), VRRPv3 at 100 ms, with fwlb as the backup.
    let k = lab.host(1).keepalived(&keepalived_conf(&Keepalived {
        state: "MASTER",
        priority: 200,
        ..Keepalived::instance(51, FRONT.cidr)
    }));
    let h2 = lab.host(2).daemon(&conf(QUICK_STOP, 100, FAST));
    showing_logs(&[("fwlb", &h2), ("keepalived", &k)], || {
        stays_on_h1(
            &lab,
            SETTLE_KEEPALIVED,
            "fwlb accepts keepalived's v3 adverts and stays backup",
        );
        // keepalived stops (priority 0): fwlb takes over within its skew time (61 ms).
        k.signal("TERM");
        let t = lab.wait_holds(2, &FRONT, Duration::from_secs(4));
        assert!(t < Duration::from_millis(1200), "took {t:?}");
    });
}

#[test]
fn fwlb_vrrpd_runs_an_unmodified_freevrrpd_conf() {
    let lab = lab("f", 2);
    let dir = tempfile::tempdir().expect("dir");
    let conf_file = dir.path().join("freevrrpd.conf");
    std::fs::write(
        &conf_file,
        format!("[VRID]\nserverid = 51\ninterface = eth0\npriority = 150\naddr = {VIP}/24\npassword = secret\n"),
    )
    .expect("conf");
    // `fwlb check --freevrrpd` prints the [[vrrp]] it becomes, and that validates as is.
    let text = stdout_of(
        Command::new(BIN)
            .args(["check", "--freevrrpd"])
            .arg(&conf_file),
    )
    .replace("configuration OK\n", "");
    let toml = dir.path().join("fwlb.toml");
    std::fs::write(&toml, &text).expect("toml");
    let out = output(Command::new(BIN).args(["check", "-c"]).arg(&toml));
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf_path = conf_file.to_str().expect("a UTF-8 temporary path");
    let v = lab.host(1).spawn(&[BIN, "vrrpd", "-F", "-f", conf_path]);
    // The peer: fwlb with the matching v2 settings and a lower priority.
    let peer = lab
        .host(2)
        .daemon(&conf("", 100, "password = \"secret\"\n"));
    showing_logs(&[("vrrpd", &v), ("peer", &peer)], || {
        wait_holder(&lab, Some(1), Duration::from_secs(6));
        // SIGTERM: priority 0, the peer takes over within its skew time.
        v.signal("TERM");
        let t = wait_holder(&lab, Some(2), Duration::from_secs(4));
        assert!(t < Duration::from_millis(1000), "{t:?}");
    });
}

#[test]
fn after_a_crash_the_clients_arp_points_at_the_new_master_and_preempt_off_stays() {
    require_tool("python3", "python3");
    let lab = lab("a", 3);
    let conf = |prio: u8| conf("", prio, &format!("{FAST}preempt = false\n"));
    let h1 = lab.host(1).daemon(&conf(150));
    let _h2 = lab.host(2).daemon(&conf(100));
    wait_holder(&lab, Some(1), Duration::from_secs(3));
    // The client (host 3) talks to the VIP: its ARP entry is h1's MAC.
    // Any packet to the VIP makes the client resolve it.
    let py = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('{VIP}', 9))\ntime.sleep(0.2)\n"
    );
    let _ = lab.host(3).exec(&["python3", "-c", &py]);
    let client_mac = || lab.host(3).neighbour(VIP, "eth0").0;
    assert_eq!(client_mac(), Some(lab.host(1).mac("eth0")));
    // Crash: kill -9 and cable pull at once.
    h1.crash();
    lab.cable(1, false);
    let h2_mac = lab.host(2).mac("eth0");
    let moved = || (client_mac().as_deref() == Some(h2_mac.as_str())).then_some(());
    let why = || format!("client ARP still {:?}", client_mac());
    let (_, t) = poll(
        Duration::from_secs(3),
        Duration::from_millis(10),
        moved,
        why,
    );
    // The gratuitous ARP moved it without the client asking.
    assert!(t < Duration::from_millis(1000), "{t:?}");
    drop(h1);
    lab.cable(1, true);
    // h1 back with preempt off: it stays backup, h2 keeps the VIP. The kill -9 left the VIP
    // on h1's interface; the restarted daemon removes it before it serves (no split brain).
    let _h1 = lab.host(1).daemon(&conf(150));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        holder(&lab, &FRONT),
        Some(2),
        "preempt = false: no move back"
    );
}

#[test]
fn a_dead_child_hands_over_and_the_restarted_daemon_rejoins_as_backup() {
    let lab = lab("c", 2);
    let conf = |prio: u8| {
        conf(
            "user = \"nobody\"\n",
            prio,
            &format!("{FAST}preempt = false\n"),
        )
    };
    // h2's notify scripts run in the root parent, outside the child's chroot and user.
    let notes = tempfile::tempdir().expect("dir");
    let log = notes.path().join("notify.log");
    let h2conf = format!(
        "{}notify_master = \"echo master $FWLB_VRID $FWLB_INTERFACE $(id -u) >> {p}\"\nnotify_backup = \"echo $FWLB_STATE $FWLB_VRID >> {p}\"\n",
        conf(100),
        p = log.display()
    );
    let mut h1 = lab.host(1).daemon(&conf(150));
    let _h2 = lab.host(2).daemon(&h2conf);
    wait_holder(&lab, Some(1), Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    // The unprivileged child dies: the parent removes the VIP at once and exits non-zero.
    let child = child_of(h1.pid()).expect("fwlb's child");
    send_signal("KILL", child);
    let st = h1
        .wait_exit(Duration::from_secs(3))
        .expect("the parent did not exit");
    assert_eq!(st.code(), Some(1), "{}", h1.log());
    h1.assert_logged("child ended with signal 9");
    // h2 takes over within Master_Down_Interval (300 ms + skew at priority 100).
    let took = wait_holder(&lab, Some(2), Duration::from_secs(2));
    assert!(took < Duration::from_millis(600), "{took:?}");
    let (state, transitions) = vrrp_state(&lab, 2);
    assert_eq!(state, "master");
    wait_until("notify_master to run", Duration::from_secs(3), || {
        read_log(&log).contains("master")
    });
    assert_eq!(
        read_log(&log),
        "backup 51\nmaster 51 eth0 0\n",
        "backup at start, then master, run as root by the parent"
    );
    // The supervisor restarts h1: it comes up as backup and the pair does not flap.
    let _h1 = lab.host(1).daemon(&conf(150));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(vrrp_state(&lab, 1).0, "backup", "{}", _h1.log());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(holder(&lab, &FRONT), Some(2));
    assert_eq!(
        vrrp_state(&lab, 2),
        ("master".to_string(), transitions),
        "no flap on h2"
    );
}

#[test]
fn a_third_host_with_a_wrong_password_or_address_list_cannot_take_over() {
    let lab = lab("r", 3);
    let conf = |prio: u8, pass: &str, addrs: &str| {
        format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = {prio}\naddresses = [{addrs}]\npassword = \"{pass}\"\n"
        )
    };
    let good = format!("\"{VIP}/24\"");
    let h1 = lab.host(1).daemon(&conf(150, "secret", &good));
    let h2 = lab.host(2).daemon(&conf(100, "secret", &good));
    wait_holder(&lab, Some(1), Duration::from_secs(6));
    for rogue in [
        conf(254, "wrong", &good),
        conf(254, "secret", "\"10.77.0.10/24\", \"10.77.0.11/24\""),
    ] {
        let r = lab.host(3).daemon(&rogue);
        // The rogue ignores the pair too, so it becomes master after its Master_Down_Interval
        // (3 s at v2): wait for that (start-up takes longer on a loaded machine), then give the
        // pair time to hear several of its adverts.
        let advertised = || r.log().contains("became master").then_some(());
        let why = || format!("the rogue never advertised:\n{}", r.log());
        wait_with(Duration::from_secs(8), advertised, why);
        std::thread::sleep(Duration::from_millis(1500));
        // Neither of the pair yields to priority 254 (the rogue may well think it is master,
        // with its own address list: the pair ignores it).
        let on = |k: usize| lab.holds(k, &FRONT);
        assert!(
            on(1) && !on(2),
            "the pair's master must stay: h1 {} h2 {}\n{}",
            on(1),
            on(2),
            h1.log()
        );
        drop(r);
        let flush = ["ip", "addr", "flush", "dev", "eth0", "to", "10.77.0.10/32"];
        let _ = lab.host(3).exec(&flush);
    }
    assert!(
        h2.log().contains("CONFIGURATION MISMATCH"),
        "the address-list mismatch is logged loudly:\n{}",
        h2.log()
    );
    let dropped = &lab.host(2).show_vrrp()["vrrp"][0]["dropped"];
    assert!(
        dropped.as_object().is_some_and(|m| m.len() >= 2),
        "auth and address drops counted: {dropped}"
    );
}

#[test]
fn unicast_peers_elect_among_themselves_only() {
    require_tool("nft", "nftables");
    let lab = lab("u", 3);
    // The pair also runs its firewall: VRRP is admitted only from the peer.
    let conf = |prio: u8, peer: &str, firewall: bool| {
        let fw = if firewall {
            "[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\n"
        } else {
            ""
        };
        conf("", prio, &format!("{FAST}peers = [\"{peer}\"]\n{fw}"))
    };
    let h1 = lab.host(1).daemon(&conf(150, "10.77.0.2", true));
    let h2 = lab.host(2).daemon(&conf(100, "10.77.0.1", true));
    wait_holder(&lab, Some(1), Duration::from_secs(3));
    // A third host with everything right but not a listed peer, at a higher priority.
    let _rogue = lab.host(3).daemon(&conf(250, "10.77.0.1", false));
    std::thread::sleep(Duration::from_millis(1500));
    let on = |k: usize| lab.holds(k, &FRONT);
    assert!(
        on(1) && !on(2),
        "the pair ignores a host that is not a peer"
    );
    // The pair's adverts are unicast: the third host, which lists h1 as its peer, hears none.
    let v = lab.host(3).show_vrrp();
    assert_eq!(
        v["vrrp"][0]["adverts_received"].as_u64(),
        Some(0),
        "{}",
        v["vrrp"][0]
    );
    // Planned stop: the unicast peer takes over within its skew time.
    h1.signal("TERM");
    showing_logs(&[("h2", &h2)], || {
        let t = lab.wait_holds(2, &FRONT, Duration::from_secs(2));
        assert!(t < Duration::from_millis(400), "{t:?}");
    });
}
