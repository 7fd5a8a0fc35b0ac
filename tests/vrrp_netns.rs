#![cfg(target_os = "linux")]
//! The VRRP speaker on a real segment: two hosts (network namespaces) on a bridge, fwlb on
//! both or fwlb against keepalived, with kills, cable pulls and planned stops. Needs root and
//! `ip`; the keepalived test needs `keepalived` (apt-get install keepalived).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

const VIP: &str = "10.77.0.10";

/// A bridge namespace `sw` and hosts joined to it by veth pairs; all deleted when dropped.
struct Lab {
    tag: String,
    hosts: Vec<String>,
    /// A second segment (`sw2`, hosts' eth1 with 10.88.0.k/24) for two-VRID groups.
    back: bool,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new(tag: &str, n: usize) -> Lab {
        Self::build(tag, n, false)
    }

    fn with_back(tag: &str, n: usize) -> Lab {
        Self::build(tag, n, true)
    }

    fn build(tag: &str, n: usize, back: bool) -> Lab {
        let tag = format!("fv{tag}{}", std::process::id() % 100_000);
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
            back,
        };
        let sw = format!("{tag}sw");
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        for k in 1..=n {
            let h = format!("{tag}h{k}");
            ip(&["netns", "add", &h]);
            lab.hosts.push(h.clone());
            ip(&[
                "-n",
                &sw,
                "link",
                "add",
                &format!("p{k}"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &h,
            ]);
            ip(&["-n", &sw, "link", "set", &format!("p{k}"), "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &format!("p{k}"), "up"]);
            ip(&[
                "-n",
                &h,
                "addr",
                "add",
                &format!("10.77.0.{k}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &h, "link", "set", "eth0", "up"]);
            ip(&["-n", &h, "link", "set", "lo", "up"]);
        }
        if back {
            let sw2 = format!("{tag}sw2");
            ip(&["netns", "add", &sw2]);
            ip(&["-n", &sw2, "link", "add", "br0", "type", "bridge"]);
            ip(&["-n", &sw2, "link", "set", "br0", "up"]);
            for k in 1..=n {
                let h = format!("{tag}h{k}");
                ip(&[
                    "-n",
                    &sw2,
                    "link",
                    "add",
                    &format!("q{k}"),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth1",
                    "netns",
                    &h,
                ]);
                ip(&["-n", &sw2, "link", "set", &format!("q{k}"), "master", "br0"]);
                ip(&["-n", &sw2, "link", "set", &format!("q{k}"), "up"]);
                ip(&[
                    "-n",
                    &h,
                    "addr",
                    "add",
                    &format!("10.88.0.{k}/24"),
                    "dev",
                    "eth1",
                ]);
                ip(&["-n", &h, "link", "set", "eth1", "up"]);
            }
        }
        lab
    }

    /// Which host holds `addr` on `dev`.
    fn holder_of(&self, dev: &str, addr: &str) -> Option<usize> {
        let mut who = None;
        for (i, h) in self.hosts.iter().enumerate() {
            let out = Command::new("ip")
                .args(["-n", h, "-o", "addr", "show", "dev", dev])
                .output()
                .expect("ip");
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{addr}/24")) {
                assert!(who.is_none(), "split brain: two hosts hold {addr}");
                who = Some(i + 1);
            }
        }
        who
    }

    fn back_cable(&self, k: usize, up: bool) {
        ip(&[
            "-n",
            &format!("{}sw2", self.tag),
            "link",
            "set",
            &format!("q{k}"),
            if up { "up" } else { "down" },
        ]);
    }

    fn host(&self, k: usize) -> &str {
        &self.hosts[k - 1]
    }

    /// Every host holding the VIP now.
    fn holders(&self) -> Vec<usize> {
        let mut who = Vec::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let out = Command::new("ip")
                .args(["-n", h, "-o", "addr", "show", "dev", "eth0"])
                .output()
                .expect("ip");
            if String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/24")) {
                who.push(i + 1);
            }
        }
        who
    }

    /// Which host holds the VIP now (None or Some(k)); panics if two do (split brain).
    fn holder(&self) -> Option<usize> {
        let who = self.holders();
        assert!(who.len() <= 1, "split brain: hosts {who:?} all hold {VIP}");
        who.first().copied()
    }

    /// Wait until `want` alone holds the VIP; returns how long it took. Two holders for a
    /// moment are normal while routers that started together converge.
    fn wait_holder(&self, want: Option<usize>, limit: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.holders() == want.into_iter().collect::<Vec<_>>() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "VIP holders are {:?}, wanted {want:?} within {limit:?}",
                self.holders()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
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
        if self.back {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}sw2", self.tag)])
                .status();
        }
    }
}

// fwlb with one VRRP instance on `eth0` of host `ns`, killed when dropped.
use common::NsDaemon as Daemon;

impl Daemon {
    fn start(ns: &str, priority: u8, version: u8, interval: &str) -> Daemon {
        Self::with_config(
            ns,
            &format!(
                "[daemon]\ncontrol = \"127.0.0.1:8888\"\nshutdown_timeout = \"1s\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = {priority}\naddresses = [\"{VIP}/24\"]\nversion = {version}\nadvert_interval = \"{interval}\"\n"
            ),
        )
    }
}

#[test]
fn fwlb_pair_fails_over_on_kill_cable_and_planned_stop() {
    let lab = Lab::new("p", 2);
    // v3 at 100 ms: Master_Down_Interval for priority 100 = 300 ms + 61 ms skew.
    let mut h1 = Daemon::start(lab.host(1), 150, 3, "100ms");
    let h2 = Daemon::start(lab.host(2), 100, 3, "100ms");
    lab.wait_holder(Some(1), Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.holder(), Some(1), "stable");
    // The control port shows it.
    let show = |k: usize| {
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
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["vrrp"][0].clone()
    };
    let (s1, s2) = (show(1), show(2));
    assert_eq!(
        (s1["state"].as_str(), s2["state"].as_str()),
        (Some("master"), Some("backup")),
        "{s1} {s2}"
    );
    assert!(
        s2["adverts_received"].as_u64().is_some_and(|n| n > 0),
        "{s2}"
    );
    assert_eq!(s2["master"], "10.77.0.1");
    // Planned stop: priority 0, the backup takes over within its skew time.
    h1.signal("TERM");
    let t = lab.wait_holder(Some(2), Duration::from_secs(2));
    assert!(
        t < Duration::from_millis(300),
        "planned handover took {t:?}\n{}",
        h2.log()
    );
    let _ = h1.child.wait();
    // Back: h1 (150) preempts.
    let h1 = Daemon::start(lab.host(1), 150, 3, "100ms");
    lab.wait_holder(Some(1), Duration::from_secs(3));
    // Cable pull on the master: the backup hears nothing and takes over after
    // Master_Down_Interval; the master sees its link down and drops the VIP at once.
    lab.cable(1, false);
    let t = lab.wait_holder(Some(2), Duration::from_secs(3));
    assert!(
        t < Duration::from_millis(361 + 300),
        "cable pull failover took {t:?}"
    );
    lab.cable(1, true);
    lab.wait_holder(Some(1), Duration::from_secs(3));
    // kill -9 of the master: no priority 0, so Master_Down_Interval.
    h1.crash();
    let t0 = Instant::now();
    // The killed master cannot remove its VIP; only look at h2.
    loop {
        let out = Command::new("ip")
            .args(["-n", lab.host(2), "-o", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip");
        if String::from_utf8_lossy(&out.stdout).contains(VIP) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "no takeover after kill -9"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("kill -9: VIP on h2 after {:?}", t0.elapsed());
    assert!(
        t0.elapsed() < Duration::from_millis(361 + 300),
        "kill -9 failover took {:?}",
        t0.elapsed()
    );
    assert!(h2.log().contains("became master"), "{}", h2.log());
}

#[test]
fn fwlb_and_keepalived_interoperate() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v keepalived"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs keepalived: apt-get install keepalived"
    );
    let lab = Lab::new("k", 2);
    let dir = tempfile::tempdir().expect("dir");
    let kconf = dir.path().join("keepalived.conf");
    // keepalived as the backup (priority 100), VRRPv2 with a password at 1 s, as
    // vrrp-reference.md §3.1.
    std::fs::write(
        &kconf,
        format!(
            "global_defs {{\n  enable_script_security\n}}\nvrrp_instance VI_51 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority 100\n  advert_int 1\n  authentication {{\n    auth_type PASS\n    auth_pass secret\n  }}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
        ),
    )
    .expect("keepalived.conf");
    let pid = dir.path().join("k.pid");
    let vpid = dir.path().join("v.pid");
    let mut k = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.host(2),
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-f",
        ])
        .arg(&kconf)
        .args(["-p"])
        .arg(&pid)
        .args(["-r"])
        .arg(&vpid)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("k.log")).expect("k.log"))
        .spawn()
        .expect("keepalived");
    let h1 = Daemon::with_config(
        lab.host(1),
        &format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = 150\naddresses = [\"{VIP}/24\"]\npassword = \"secret\"\n"
        ),
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holder(Some(1), Duration::from_secs(6));
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            lab.holder(),
            Some(1),
            "keepalived accepts fwlb's adverts and stays backup"
        );
        // Planned stop of fwlb: priority 0, keepalived takes over within its skew time.
        h1.signal("TERM");
        let t = lab.wait_holder(Some(2), Duration::from_secs(4));
        assert!(
            t < Duration::from_millis(1000),
            "keepalived took over after {t:?}"
        );
    }));
    let _ = k.kill();
    let _ = k.wait();
    if let Err(e) = r {
        let klog = std::fs::read_to_string(dir.path().join("k.log")).unwrap_or_default();
        panic!(
            "{:?}\nfwlb log:\n{}\nkeepalived log:\n{klog}",
            e.downcast_ref::<String>(),
            h1.log()
        );
    }
}

#[test]
fn two_vrids_of_a_group_fail_over_together() {
    let lab = Lab::with_back("g", 2);
    let conf = |prio: u8| {
        format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\nshutdown_timeout = \"1s\"\n\
[[vrrp]]\nvrid = 1\ninterface = \"eth0\"\npriority = {prio}\naddresses = [\"{VIP}/24\"]\nversion = 3\nadvert_interval = \"100ms\"\ndepends = [2]\n\
[[vrrp]]\nvrid = 2\ninterface = \"eth1\"\npriority = {prio}\naddresses = [\"10.88.0.10/24\"]\nversion = 3\nadvert_interval = \"100ms\"\ndepends = [1]\n"
        )
    };
    let h1 = Daemon::with_config(lab.host(1), &conf(150));
    let h2 = Daemon::with_config(lab.host(2), &conf(100));
    let both = |who: Option<usize>, limit: Duration| {
        let t0 = Instant::now();
        loop {
            let (a, b) = (
                lab.holder_of("eth0", VIP),
                lab.holder_of("eth1", "10.88.0.10"),
            );
            if a == who && b == who {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit,
                "front {a:?} back {b:?}, wanted both on {who:?}\nh1:\n{}\nh2:\n{}",
                h1.log(),
                h2.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    both(Some(1), Duration::from_secs(3));
    // Pull the master's BACK cable only: its front VRID must follow to the peer.
    lab.back_cable(1, false);
    let t = both(Some(2), Duration::from_secs(3));
    assert!(t < Duration::from_millis(700), "group failover took {t:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.holder_of("eth0", VIP),
        Some(2),
        "the front VRID stays with the group"
    );
    // Cable back: both return together (preempt).
    lab.back_cable(1, true);
    both(Some(1), Duration::from_secs(3));
}

#[test]
fn fwlb_takes_over_from_a_keepalived_master() {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v keepalived"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs keepalived: apt-get install keepalived"
    );
    let lab = Lab::new("m", 2);
    let dir = tempfile::tempdir().expect("dir");
    let kconf = dir.path().join("keepalived.conf");
    // keepalived as the master (priority 200), VRRPv3 at 100 ms, with fwlb as the backup.
    std::fs::write(
        &kconf,
        format!(
            "global_defs {{\n  enable_script_security\n}}\nvrrp_instance VI_51 {{\n  state MASTER\n  interface eth0\n  virtual_router_id 51\n  priority 200\n  advert_int 0.1\n  version 3\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
        ),
    )
    .expect("keepalived.conf");
    let mut k = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.host(1),
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-f",
        ])
        .arg(&kconf)
        .args(["-p"])
        .arg(dir.path().join("k.pid"))
        .args(["-r"])
        .arg(dir.path().join("v.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("keepalived");
    let h2 = Daemon::start(lab.host(2), 100, 3, "100ms");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holder(Some(1), Duration::from_secs(6));
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(
            lab.holder(),
            Some(1),
            "fwlb accepts keepalived's v3 adverts and stays backup"
        );
        // keepalived stops (priority 0): fwlb takes over within its skew time (61 ms).
        let _ = Command::new("kill")
            .args(["-TERM", &k.id().to_string()])
            .status();
        let t0 = Instant::now();
        loop {
            let out = Command::new("ip")
                .args(["-n", lab.host(2), "-o", "addr", "show", "dev", "eth0"])
                .output()
                .expect("ip");
            if String::from_utf8_lossy(&out.stdout).contains(VIP) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(4), "no takeover");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1200),
            "took {:?}",
            t0.elapsed()
        );
    }));
    let _ = k.kill();
    let _ = k.wait();
    if let Err(e) = r {
        panic!("{:?}\nfwlb log:\n{}", e.downcast_ref::<String>(), h2.log());
    }
}

#[test]
fn fwlb_vrrpd_runs_an_unmodified_freevrrpd_conf() {
    let lab = Lab::new("f", 2);
    let dir = tempfile::tempdir().expect("dir");
    let conf = dir.path().join("freevrrpd.conf");
    std::fs::write(
        &conf,
        format!("[VRID]\nserverid = 51\ninterface = eth0\npriority = 150\naddr = {VIP}/24\npassword = secret\n"),
    )
    .expect("conf");
    // `fwlb check --freevrrpd` prints the [[vrrp]] it becomes, and that validates as is.
    let out = Command::new(BIN)
        .args(["check", "--freevrrpd"])
        .arg(&conf)
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace("configuration OK\n", "");
    let toml = dir.path().join("fwlb.toml");
    std::fs::write(&toml, &text).expect("toml");
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&toml)
        .output()
        .expect("check");
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.path().join("log");
    let mut v = Command::new("ip")
        .args(["netns", "exec", lab.host(1), BIN, "vrrpd", "-F", "-f"])
        .arg(&conf)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("fwlb vrrpd");
    // The peer: fwlb with the matching v2 settings and a lower priority.
    let peer = Daemon::with_config(
        lab.host(2),
        &format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = 100\naddresses = [\"{VIP}/24\"]\npassword = \"secret\"\n"
        ),
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lab.wait_holder(Some(1), Duration::from_secs(6));
        // SIGTERM: priority 0, the peer takes over within its skew time.
        let _ = Command::new("kill")
            .args(["-TERM", &v.id().to_string()])
            .status();
        let t = lab.wait_holder(Some(2), Duration::from_secs(4));
        assert!(t < Duration::from_millis(1000), "{t:?}");
    }));
    let _ = v.kill();
    let _ = v.wait();
    if let Err(e) = r {
        panic!(
            "{:?}\nvrrpd log:\n{}\npeer log:\n{}",
            e.downcast_ref::<String>(),
            std::fs::read_to_string(&log).unwrap_or_default(),
            peer.log()
        );
    }
}

/// The client's ARP entry for the VIP.
fn client_mac_for_vip(lab: &Lab, client: usize) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", lab.host(client), "neigh", "show", VIP])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
}

fn mac_of(lab: &Lab, host: usize) -> String {
    let out = Command::new("ip")
        .args(["-n", lab.host(host), "-o", "link", "show", "eth0"])
        .output()
        .expect("ip");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

#[test]
fn after_a_crash_the_clients_arp_points_at_the_new_master_and_preempt_off_stays() {
    let lab = Lab::new("a", 3);
    let conf = |prio: u8, preempt: bool| {
        format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = {prio}\naddresses = [\"{VIP}/24\"]\nversion = 3\nadvert_interval = \"100ms\"\npreempt = {preempt}\n"
        )
    };
    let h1 = Daemon::with_config(lab.host(1), &conf(150, false));
    let _h2 = Daemon::with_config(lab.host(2), &conf(100, false));
    lab.wait_holder(Some(1), Duration::from_secs(3));
    // The client (host 3) talks to the VIP: its ARP entry is h1's MAC.
    // Any packet to the VIP makes the client resolve it.
    let ping = || {
        let py = format!(
            "import socket,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.sendto(b'x', ('{VIP}', 9))\ntime.sleep(0.2)\n"
        );
        let _ = Command::new("ip")
            .args(["netns", "exec", lab.host(3), "python3", "-c", &py])
            .output();
    };
    ping();
    assert_eq!(client_mac_for_vip(&lab, 3), Some(mac_of(&lab, 1)));
    // Crash: kill -9 and cable pull at once.
    h1.crash();
    lab.cable(1, false);
    let t0 = Instant::now();
    loop {
        if client_mac_for_vip(&lab, 3) == Some(mac_of(&lab, 2)) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "client ARP still {:?}",
            client_mac_for_vip(&lab, 3)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The gratuitous ARP moved it without the client asking.
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t0.elapsed()
    );
    drop(h1);
    lab.cable(1, true);
    // h1 back with preempt off: it stays backup, h2 keeps the VIP. The kill -9 left the VIP
    // on h1's interface; the restarted daemon removes it before it serves (no split brain).
    let _h1 = Daemon::with_config(lab.host(1), &conf(150, false));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lab.holder(), Some(2), "preempt = false: no move back");
}

/// The first child process of `pid` (fwlb's parent has exactly one: the unprivileged child).
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `show vrrp --json` of host `k`: (state, transitions) of its first instance.
fn vrrp_state(lab: &Lab, k: usize) -> (String, u64) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.host(k),
            BIN,
            "ctl",
            "-C",
            "127.0.0.1:8888",
            "--json",
            "show",
            "vrrp",
        ])
        .output()
        .expect("fwlb ctl");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let i = &v["vrrp"][0];
    (
        i["state"].as_str().unwrap_or("?").to_string(),
        i["transitions"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn a_dead_child_hands_over_and_the_restarted_daemon_rejoins_as_backup() {
    let lab = Lab::new("c", 2);
    let conf = |prio: u8| {
        format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\nuser = \"nobody\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = {prio}\naddresses = [\"{VIP}/24\"]\nversion = 3\nadvert_interval = \"100ms\"\npreempt = false\n"
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
    let mut h1 = Daemon::with_config(lab.host(1), &conf(150));
    let _h2 = Daemon::with_config(lab.host(2), &h2conf);
    lab.wait_holder(Some(1), Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    // The unprivileged child dies: the parent removes the VIP at once and exits non-zero.
    let child = child_of(h1.child.id()).expect("fwlb's child");
    let _ = Command::new("kill")
        .args(["-9", &child.to_string()])
        .status();
    let t0 = Instant::now();
    let st = loop {
        if let Ok(Some(st)) = h1.child.try_wait() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the parent did not exit"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(st.code(), Some(1), "{}", h1.log());
    assert!(
        h1.log().contains("child ended with signal 9"),
        "{}",
        h1.log()
    );
    // h2 takes over within Master_Down_Interval (300 ms + skew at priority 100).
    let took = lab.wait_holder(Some(2), Duration::from_secs(2));
    assert!(took < Duration::from_millis(600), "{took:?}");
    let (state, transitions) = vrrp_state(&lab, 2);
    assert_eq!(state, "master");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("master")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "notify_master did not run"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "backup 51\nmaster 51 eth0 0\n",
        "backup at start, then master, run as root by the parent"
    );
    // The supervisor restarts h1: it comes up as backup and the pair does not flap.
    let _h1 = Daemon::with_config(lab.host(1), &conf(150));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(vrrp_state(&lab, 1).0, "backup", "{}", _h1.log());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(lab.holder(), Some(2));
    assert_eq!(
        vrrp_state(&lab, 2),
        ("master".to_string(), transitions),
        "no flap on h2"
    );
}

#[test]
fn a_third_host_with_a_wrong_password_or_address_list_cannot_take_over() {
    let lab = Lab::new("r", 3);
    let conf = |prio: u8, pass: &str, addrs: &str| {
        format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = {prio}\naddresses = [{addrs}]\npassword = \"{pass}\"\n"
        )
    };
    let good = format!("\"{VIP}/24\"");
    let h1 = Daemon::with_config(lab.host(1), &conf(150, "secret", &good));
    let h2 = Daemon::with_config(lab.host(2), &conf(100, "secret", &good));
    lab.wait_holder(Some(1), Duration::from_secs(6));
    for rogue in [
        conf(254, "wrong", &good),
        conf(254, "secret", "\"10.77.0.10/24\", \"10.77.0.11/24\""),
    ] {
        let r = Daemon::with_config(lab.host(3), &rogue);
        // The rogue ignores the pair too, so it becomes master after its Master_Down_Interval
        // (3 s at v2): wait for that (start-up takes longer on a loaded machine), then give the
        // pair time to hear several of its adverts.
        let t0 = Instant::now();
        while !r.log().contains("became master") {
            assert!(
                t0.elapsed() < Duration::from_secs(8),
                "the rogue never advertised:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1500));
        // Neither of the pair yields to priority 254 (the rogue may well think it is master,
        // with its own address list: the pair ignores it).
        let on = |k: usize| {
            let out = Command::new("ip")
                .args(["-n", lab.host(k), "-o", "addr", "show", "dev", "eth0"])
                .output()
                .expect("ip");
            String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/24"))
        };
        assert!(
            on(1) && !on(2),
            "the pair's master must stay: h1 {} h2 {}\n{}",
            on(1),
            on(2),
            h1.log()
        );
        drop(r);
        let _ = Command::new("ip")
            .args([
                "-n",
                lab.host(3),
                "addr",
                "flush",
                "dev",
                "eth0",
                "to",
                &format!("{VIP}/32"),
            ])
            .output();
    }
    assert!(
        h2.log().contains("CONFIGURATION MISMATCH"),
        "the address-list mismatch is logged loudly:\n{}",
        h2.log()
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.host(2),
            BIN,
            "ctl",
            "--json",
            "show",
            "vrrp",
        ])
        .output()
        .expect("ctl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let dropped = &v["vrrp"][0]["dropped"];
    assert!(
        dropped.as_object().is_some_and(|m| m.len() >= 2),
        "auth and address drops counted: {dropped}"
    );
}

#[test]
fn unicast_peers_elect_among_themselves_only() {
    let lab = Lab::new("u", 3);
    // The pair also runs its firewall: VRRP is admitted only from the peer.
    let conf = |prio: u8, peer: &str, firewall: bool| {
        format!(
            "[daemon]\ncontrol = \"127.0.0.1:8888\"\n[[vrrp]]\nvrid = 51\ninterface = \"eth0\"\npriority = {prio}\naddresses = [\"{VIP}/24\"]\nversion = 3\nadvert_interval = \"100ms\"\npeers = [\"{peer}\"]\n{}",
            if firewall {
                "[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\n"
            } else {
                ""
            }
        )
    };
    let h1 = Daemon::with_config(lab.host(1), &conf(150, "10.77.0.2", true));
    let h2 = Daemon::with_config(lab.host(2), &conf(100, "10.77.0.1", true));
    lab.wait_holder(Some(1), Duration::from_secs(3));
    // A third host with everything right but not a listed peer, at a higher priority.
    let _rogue = Daemon::with_config(lab.host(3), &conf(250, "10.77.0.1", false));
    std::thread::sleep(Duration::from_millis(1500));
    let on = |k: usize| {
        let out = Command::new("ip")
            .args(["-n", lab.host(k), "-o", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/24"))
    };
    assert!(
        on(1) && !on(2),
        "the pair ignores a host that is not a peer"
    );
    // The pair's adverts are unicast: the third host, which lists h1 as its peer, hears none.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.host(3),
            BIN,
            "ctl",
            "--json",
            "show",
            "vrrp",
        ])
        .output()
        .expect("ctl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["vrrp"][0]["adverts_received"].as_u64(),
        Some(0),
        "{}",
        v["vrrp"][0]
    );
    // Planned stop: the unicast peer takes over within its skew time.
    h1.signal("TERM");
    let t0 = Instant::now();
    while !on(2) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "no unicast takeover\n{}",
            h2.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
}
