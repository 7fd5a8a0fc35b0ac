#![cfg(target_os = "linux")]
//! VRRPv3 over IPv6 on a real segment: hosts (network namespaces) on a bridge, fwlb on two of
//! them or fwlb against keepalived, a third host as the client whose neighbour cache must
//! follow the master through our unsolicited neighbour advertisements. Needs root and `ip`;
//! the keepalived tests need `keepalived` (apt-get install keepalived).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

const VIP: &str = "fd77::10";

/// A bridge namespace `sw` and hosts joined to it by veth pairs (host k has fd77::k/64 on
/// eth0, no duplicate address detection so link-local addresses are usable at once); all
/// deleted when dropped.
struct Lab {
    tag: String,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sysctl(ns: &str, setting: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", setting])
        .status()
        .expect("sysctl");
    assert!(st.success(), "sysctl -w {setting} in {ns}");
}

impl Lab {
    fn new(tag: &str, n: usize) -> Lab {
        Self::build(tag, n, false)
    }

    /// With duplicate address detection on, as on a real host: link-local addresses are
    /// tentative for a while after the link comes up.
    fn with_dad(tag: &str, n: usize) -> Lab {
        Self::build(tag, n, true)
    }

    fn build(tag: &str, n: usize, dad: bool) -> Lab {
        let tag = format!("f6{tag}{}", std::process::id() % 100_000);
        let ok = Command::new("ip")
            .args(["netns", "add", &format!("{tag}sw")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cannot create network namespaces: this test needs root and iproute2"
        );
        let mut lab = Lab {
            tag: tag.clone(),
            hosts: Vec::new(),
        };
        let sw = format!("{tag}sw");
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for k in 1..=n {
            let h = format!("{tag}h{k}");
            ip(&["netns", "add", &h]);
            lab.hosts.push(h.clone());
            sysctl(&h, "net.ipv6.conf.all.disable_ipv6=0");
            let dad = if dad { "1" } else { "0" };
            sysctl(&h, &format!("net.ipv6.conf.all.accept_dad={dad}"));
            sysctl(&h, &format!("net.ipv6.conf.default.accept_dad={dad}"));
            let port = format!("p{k}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &h,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &port, "up"]);
            sysctl(&h, &format!("net.ipv6.conf.eth0.accept_dad={dad}"));
            ip(&[
                "-n",
                &h,
                "addr",
                "add",
                &format!("fd77::{k}/64"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &h, "link", "set", "eth0", "up"]);
            ip(&["-n", &h, "link", "set", "lo", "up"]);
        }
        for k in 1..=n {
            lab.link_local(k);
        }
        lab
    }

    fn host(&self, k: usize) -> &str {
        &self.hosts[k - 1]
    }

    /// Host k's link-local address on eth0 (waits for it to appear).
    fn link_local(&self, k: usize) -> String {
        let t0 = Instant::now();
        loop {
            let out = ip(&[
                "-n",
                self.host(k),
                "-6",
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
                "scope",
                "link",
            ]);
            if !out.contains("tentative")
                && let Some(a) = out
                    .split_whitespace()
                    .skip_while(|w| *w != "inet6")
                    .nth(1)
                    .and_then(|a| a.split('/').next())
            {
                return a.to_string();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "no link-local address on host {k}: {out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn mac(&self, k: usize) -> String {
        let out = ip(&["-n", self.host(k), "-o", "link", "show", "eth0"]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or("")
            .to_string()
    }

    fn holds(&self, k: usize) -> bool {
        ip(&[
            "-n",
            self.host(k),
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .contains(&format!("{VIP}/64"))
    }

    /// Every one of `among` holding the VIP now.
    fn holders(&self, among: &[usize]) -> Vec<usize> {
        among.iter().copied().filter(|&k| self.holds(k)).collect()
    }

    /// Wait until `want` alone (among `among`) holds the VIP; returns how long it took.
    fn wait_holder(&self, among: &[usize], want: usize, limit: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.holders(among) == [want] {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "VIP holders are {:?}, wanted [{want}] within {limit:?}",
                self.holders(among)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until host `k` holds the VIP (whatever the others do); returns how long it took.
    fn wait_holds(&self, k: usize, limit: Duration) -> Duration {
        let t0 = Instant::now();
        while !self.holds(k) {
            assert!(
                t0.elapsed() < limit,
                "host {k} did not take the VIP within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t0.elapsed()
    }

    /// The MAC the client's neighbour cache holds for the VIP.
    fn client_mac_for_vip(&self, client: usize) -> Option<String> {
        let out = ip(&[
            "-n",
            self.host(client),
            "-6",
            "neigh",
            "show",
            VIP,
            "dev",
            "eth0",
        ]);
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_string)
    }

    /// Wait until the client's entry for the VIP is host `k`'s MAC, without the client
    /// sending anything: only an unsolicited advertisement can change it.
    fn wait_client_points_at(&self, client: usize, k: usize, limit: Duration) -> Duration {
        let (t0, want) = (Instant::now(), self.mac(k));
        loop {
            if self.client_mac_for_vip(client).as_deref() == Some(want.as_str()) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "client's neighbour entry for {VIP} is {:?}, wanted host {k}'s {want}",
                self.client_mac_for_vip(client)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the client's entry for the VIP says the owner is a router (the NA's R flag).
    fn client_sees_router(&self, client: usize) -> bool {
        ip(&[
            "-n",
            self.host(client),
            "-6",
            "neigh",
            "show",
            VIP,
            "dev",
            "eth0",
        ])
        .split_whitespace()
        .any(|w| w == "router")
    }

    /// Make the client resolve the VIP (one UDP datagram to it).
    fn client_talks(&self, client: usize) {
        let py = format!(
            "import socket,time\ns=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.sendto(b'x', ('{VIP}', 9))\ntime.sleep(0.2)\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", self.host(client), "python3", "-c", &py])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn cable(&self, k: usize, up: bool) {
        ip(&[
            "-n",
            &format!("{}sw", self.tag),
            "link",
            "set",
            &format!("p{k}"),
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", h]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{}sw", self.tag)])
            .status();
    }
}

// fwlb with one IPv6 VRRPv3 instance on `eth0` of host `ns`, killed when dropped.
use common::NsDaemon as Daemon;

impl Daemon {
    fn start(ns: &str, priority: u8) -> Daemon {
        Self::with(ns, priority, "")
    }

    /// As `start`, with `extra` keys in the [[vrrp]] section.
    fn with(ns: &str, priority: u8, extra: &str) -> Daemon {
        let config = format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\nshutdown_timeout = \"1s\"\n[[vrrp]]\nvrid = 52\ninterface = \"eth0\"\npriority = {priority}\naddresses = [\"{VIP}/64\"]\nversion = 3\nadvert_interval = \"100ms\"\n{extra}"
        );
        Self::with_config(ns, &config)
    }
}

fn show(lab: &Lab, k: usize) -> serde_json::Value {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.host(k),
            BIN,
            "ctl",
            "--json",
            "show",
            "vrrp",
        ])
        .output()
        .expect("fwlb ctl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "show vrrp on host {k}: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["vrrp"][0].clone()
}

#[test]
fn fwlb_pair_over_ipv6_elects_hands_over_and_survives_a_crash() {
    let lab = Lab::new("p", 3);
    let pair = [1, 2];
    // h2 forwards IPv6 on eth0: its advertisements carry the Router flag, h1's do not.
    sysctl(lab.host(2), "net.ipv6.conf.eth0.forwarding=1");
    // v3 at 100 ms: Master_Down_Interval for priority 100 = 300 ms + 61 ms skew.
    let mut h1 = Daemon::start(lab.host(1), 150);
    let h2 = Daemon::start(lab.host(2), 100);
    let logs = |h1: &Daemon, h2: &Daemon| format!("h1:\n{}\nh2:\n{}", h1.log(), h2.log());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holder(&pair, 1, Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(lab.holders(&pair), [1], "stable");
        let (s1, s2) = (show(&lab, 1), show(&lab, 2));
        assert_eq!(
            (s1["state"].as_str(), s2["state"].as_str()),
            (Some("master"), Some("backup")),
            "{s1} {s2}"
        );
        assert!(
            s2["adverts_received"].as_u64().is_some_and(|n| n > 0),
            "{s2}"
        );
        // Adverts come from the master's link-local address (RFC 5798 §5.1.2.1).
        assert_eq!(s2["master"].as_str(), Some(lab.link_local(1).as_str()));
        assert!(
            s2["dropped"].as_object().is_none_or(|m| m.is_empty()),
            "no advert dropped: {s2}"
        );
        // The client resolves the VIP to h1.
        lab.client_talks(3);
        assert_eq!(lab.client_mac_for_vip(3), Some(lab.mac(1)));
        assert!(!lab.client_sees_router(3));
    }));
    if let Err(e) = r {
        panic!("{:?}\n{}", e.downcast_ref::<String>(), logs(&h1, &h2));
    }
    // Planned stop: priority 0, the backup takes over within its skew time (61 ms), and its
    // unsolicited NA moves the client's entry.
    h1.signal("TERM");
    let t0 = Instant::now();
    let handover = lab.wait_holder(&pair, 2, Duration::from_secs(2));
    lab.wait_client_points_at(3, 2, Duration::from_secs(1));
    let na = t0.elapsed();
    eprintln!("SIGTERM: VIP on h2 after {handover:?}, client's entry after {na:?}");
    assert!(
        lab.client_sees_router(3),
        "h2 forwards: its NA has the Router flag"
    );
    assert!(
        handover < Duration::from_millis(300),
        "planned handover took {handover:?}\n{}",
        h2.log()
    );
    let _ = h1.child.wait();
    // Back: h1 (150) preempts, and the client follows it.
    let h1 = Daemon::start(lab.host(1), 150);
    lab.wait_holder(&pair, 1, Duration::from_secs(3));
    lab.wait_client_points_at(3, 1, Duration::from_secs(1));
    assert!(
        !lab.client_sees_router(3),
        "h1 does not forward: no Router flag"
    );
    // Crash: kill -9 of both processes and cable pull at once. No priority 0: the backup
    // waits Master_Down_Interval from the last advert it heard.
    h1.crash();
    lab.cable(1, false);
    let t0 = Instant::now();
    let takeover = lab.wait_holds(2, Duration::from_secs(3));
    lab.wait_client_points_at(3, 2, Duration::from_secs(3));
    let na = t0.elapsed();
    eprintln!("kill -9: VIP on h2 after {takeover:?}, client's entry after {na:?}");
    assert!(
        takeover < Duration::from_millis(361 + 300),
        "kill -9 failover took {takeover:?}\n{}",
        h2.log()
    );
    assert!(na < Duration::from_secs(1), "client followed after {na:?}");
    assert!(h2.log().contains("became master"), "{}", h2.log());
    let s2 = show(&lab, 2);
    assert_eq!(s2["state"].as_str(), Some("master"), "{s2}");
    assert_eq!(s2["master"].as_str(), Some(lab.link_local(2).as_str()));
}

#[test]
fn unicast_ipv6_peers_elect_among_themselves_only() {
    let lab = Lab::new("u", 3);
    // Global peers: each side sends from its own global address, the one the other lists.
    let h1 = Daemon::with(lab.host(1), 150, "peers = [\"fd77::2\"]\n");
    let h2 = Daemon::with(lab.host(2), 100, "peers = [\"fd77::1\"]\n");
    // A multicast router with everything else right, at a higher priority: it hears nothing
    // from the pair (their adverts are unicast), and the pair ignores its adverts.
    let h3 = Daemon::start(lab.host(3), 250);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holds(1, Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(1000));
        assert!(lab.holds(1) && !lab.holds(2), "the pair keeps its master");
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
        let t = lab.wait_holds(2, Duration::from_secs(2));
        eprintln!("unicast IPv6 SIGTERM: VIP on h2 after {t:?}");
        assert!(t < Duration::from_millis(300), "{t:?}");
    }));
    if let Err(e) = r {
        panic!(
            "{:?}\nh1:\n{}\nh2:\n{}\nh3:\n{}",
            e.downcast_ref::<String>(),
            h1.log(),
            h2.log(),
            h3.log()
        );
    }
}

#[test]
fn cable_pull_and_restore_with_duplicate_address_detection_on() {
    let lab = Lab::with_dad("d", 2);
    let pair = [1, 2];
    let h1 = Daemon::start(lab.host(1), 150);
    let h2 = Daemon::start(lab.host(2), 100);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holder(&pair, 1, Duration::from_secs(3));
        // Cable pull on the master: Fault there (VIP removed at once), takeover here after
        // Master_Down_Interval.
        lab.cable(1, false);
        let t = lab.wait_holder(&pair, 2, Duration::from_secs(3));
        eprintln!("cable pull (DAD on): VIP on h2 after {t:?}");
        assert!(t < Duration::from_millis(361 + 300), "{t:?}");
        // Cable back: h1 listens, hears h2 (lower priority) and preempts.
        lab.cable(1, true);
        let t0 = Instant::now();
        let t = lab.wait_holder(&pair, 1, Duration::from_secs(3));
        eprintln!("cable restored: VIP back on h1 after {t:?}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(lab.holders(&pair), [1], "stable after the restore");
        let s2 = show(&lab, 2);
        assert_eq!(s2["state"].as_str(), Some("backup"), "{s2}");
        assert_eq!(s2["master"].as_str(), Some(lab.link_local(1).as_str()));
        assert!(t0.elapsed() < Duration::from_secs(3));
    }));
    if let Err(e) = r {
        panic!(
            "{:?}\nh1:\n{}\nh2:\n{}",
            e.downcast_ref::<String>(),
            h1.log(),
            h2.log()
        );
    }
}

fn keepalived_needed() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v keepalived"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs keepalived: apt-get install keepalived"
    );
}

/// keepalived with one IPv6 VRRPv3 instance (vrrp-reference.md §3.1, IPv6 variant, 100 ms)
/// on `eth0` of host `ns`; killed when dropped.
struct Keepalived {
    child: Child,
    dir: tempfile::TempDir,
}

impl Keepalived {
    fn start(ns: &str, state: &str, priority: u8) -> Keepalived {
        let dir = tempfile::tempdir().expect("dir");
        let conf = dir.path().join("keepalived.conf");
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  enable_script_security\n}}\nvrrp_instance VI_52 {{\n  state {state}\n  interface eth0\n  virtual_router_id 52\n  priority {priority}\n  advert_int 0.1\n  version 3\n  virtual_ipaddress {{\n    {VIP}/64\n  }}\n}}\n"
            ),
        )
        .expect("keepalived.conf");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "keepalived", "-n", "-l", "-D", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("k.pid"))
            .arg("-r")
            .arg(dir.path().join("v.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("k.log")).expect("k.log"))
            .spawn()
            .expect("keepalived");
        Keepalived { child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("k.log")).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keepalived_backs_up_fwlb_over_ipv6() {
    keepalived_needed();
    let lab = Lab::new("k", 3);
    let pair = [1, 2];
    let k = Keepalived::start(lab.host(2), "BACKUP", 100);
    let h1 = Daemon::start(lab.host(1), 150);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holder(&pair, 1, Duration::from_secs(6));
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            lab.holders(&pair),
            [1],
            "keepalived accepts fwlb's IPv6 adverts and stays backup"
        );
        lab.client_talks(3);
        assert_eq!(lab.client_mac_for_vip(3), Some(lab.mac(1)));
        // Planned stop of fwlb: priority 0, keepalived takes over within its skew time.
        h1.signal("TERM");
        let t = lab.wait_holder(&pair, 2, Duration::from_secs(4));
        eprintln!("fwlb SIGTERM: keepalived holds the VIP after {t:?}");
        assert!(
            t < Duration::from_millis(1000),
            "keepalived took over after {t:?}"
        );
        lab.wait_client_points_at(3, 2, Duration::from_secs(2));
    }));
    if let Err(e) = r {
        panic!(
            "{:?}\nfwlb log:\n{}\nkeepalived log:\n{}",
            e.downcast_ref::<String>(),
            h1.log(),
            k.log()
        );
    }
}

#[test]
fn fwlb_backs_up_keepalived_over_ipv6() {
    keepalived_needed();
    let lab = Lab::new("m", 3);
    let pair = [1, 2];
    let k = Keepalived::start(lab.host(1), "MASTER", 200);
    let h2 = Daemon::start(lab.host(2), 100);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holder(&pair, 1, Duration::from_secs(6));
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            lab.holders(&pair),
            [1],
            "fwlb accepts keepalived's IPv6 adverts and stays backup"
        );
        let s2 = show(&lab, 2);
        assert_eq!(s2["state"].as_str(), Some("backup"), "{s2}");
        assert_eq!(s2["master"].as_str(), Some(lab.link_local(1).as_str()));
        assert!(
            s2["dropped"].as_object().is_none_or(|m| m.is_empty()),
            "keepalived's adverts all pass the checks: {s2}"
        );
        lab.client_talks(3);
        assert_eq!(lab.client_mac_for_vip(3), Some(lab.mac(1)));
        // keepalived stops (priority 0): fwlb takes over within its skew time (61 ms), and
        // the client follows on fwlb's unsolicited NA.
        let _ = Command::new("kill")
            .args(["-TERM", &k.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        let t = lab.wait_holds(2, Duration::from_secs(4));
        lab.wait_client_points_at(3, 2, Duration::from_secs(2));
        let na = t0.elapsed();
        eprintln!(
            "keepalived SIGTERM: fwlb holds the VIP after {t:?}, client's entry after {na:?}"
        );
        assert!(t < Duration::from_millis(1200), "took {t:?}");
    }));
    if let Err(e) = r {
        panic!(
            "{:?}\nfwlb log:\n{}\nkeepalived log:\n{}",
            e.downcast_ref::<String>(),
            h2.log(),
            k.log()
        );
    }
}
