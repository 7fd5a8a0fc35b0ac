#![cfg(target_os = "linux")]
//! The nftables firewall installed by `fwlb run`, between two network namespaces of this test:
//! a balancer host `fw` (front eth0 10.66.0.1) and a client (10.66.0.2). Needs root, `ip` and
//! `nft` (apt-get install iproute2 nftables).

mod common;

use std::time::Duration;

use common::*;

/// The balancer host and its client on one cable; removed when dropped.
struct Pair {
    fw: Ns,
    client: Ns,
    _net: Net,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        require_tool("nft", "nftables");
        require_tool("python3", "python3");
        let mut net = Net::new(&format!("fw{tag}"));
        let (fw, client) = (net.host("fw"), net.host("cl"));
        net.cable(&fw, "eth0", &client, "eth0");
        fw.addr("eth0", "10.66.0.1/24");
        client.addr("eth0", "10.66.0.2/24");
        Pair {
            fw,
            client,
            _net: net,
        }
    }

    /// A TCP connect from the client to 10.66.0.1:`port`: "open", "refused" or "dropped".
    fn probe(&self, port: u16) -> String {
        probe(&self.client, "10.66.0.1", port)
    }

    fn nft_list(&self) -> String {
        self.fw.run(&["nft", "-s", "list", "ruleset"])
    }

    /// `fwlb ctl -C 127.0.0.1:8888 ARGS` on the balancer host: (stdout, success).
    fn ctl(&self, args: &[&str]) -> (String, bool) {
        let mut all = vec!["ctl", "-C", "127.0.0.1:8888"];
        all.extend_from_slice(args);
        let out = self.fw.fwlb(&all);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.success(),
        )
    }

    fn wait_open(&self, port: u16) {
        wait_until(
            &format!("port {port} to open"),
            Duration::from_secs(10),
            || self.probe(port) == "open",
        );
    }
}

/// A TCP connect from `ns` to `addr`:`port` with a 1 s timeout: "open", "refused" or
/// "dropped".
fn probe(ns: &Ns, addr: &str, port: u16) -> String {
    ns.python(&format!(
        "import socket\ns=socket.socket(); s.settimeout(1.0)\ntry:\n  s.connect(('{addr}',{port})); print('open')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError: print('dropped')\n"
    ))
    .trim()
    .to_string()
}

/// `fwlb run -c CONFIG` in `ns`.
fn run_fwlb(ns: &Ns, config: &std::path::Path) -> NsDaemon {
    ns.spawn(&[BIN, "run", "-c", config.to_str().expect("utf8")])
}

#[test]
fn firewall_admits_listeners_drops_the_rest_bans_and_reapplies_idempotently() {
    let net = Pair::new("a");
    let dir = tempfile::tempdir().expect("dir");
    // Someone else's table must survive everything fwlb does.
    net.fw.run(&["nft", "add", "table", "inet", "other"]);
    net.fw
        .run(&["nft", "add", "chain", "inet", "other", "keep"]);
    let _echo = net
        .fw
        .spawn(&[BIN, "echo", "127.0.0.1:9001", "0.0.0.0:2222"]);
    let cfg = dir.path().join("fwlb.toml");
    // The network-facing child runs as nobody in a chroot: bans go through the parent.
    let jail = tempfile::tempdir().expect("jail");
    let text = format!(
        "[daemon]\ncontrol = \"0.0.0.0:8888\"\ncontrol_allow = [\"192.0.2.9\"]\nshutdown_timeout = \"1s\"\n\
user = \"nobody\"\nchroot = \"{}\"\n\
[[balancer]]\nname = \"www\"\nlisten = \"10.66.0.1:8080\"\nservers = [\"127.0.0.1:9001\"]\n\
[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nallow = [\"tcp/2223 from 10.66.0.3\"]\n",
        jail.path().display()
    );
    std::fs::write(&cfg, &text).expect("config");
    let mut fw = run_fwlb(&net.fw, &cfg);
    net.wait_open(8080);
    fw.assert_logged("firewall installed");
    // A listener: open. A service the config does not name: dropped, not refused.
    assert_eq!(net.probe(8080), "open");
    assert_eq!(net.probe(2222), "dropped", "unlisted port must be dropped");
    assert_eq!(
        net.probe(2224),
        "dropped",
        "closed ports too: no RST to scan with"
    );
    // The control port listens on every address, but from the front it is dropped.
    assert_eq!(net.probe(8888), "dropped");
    assert!(net.ctl(&["blacklist"]).1, "loopback still reaches it");
    // Ban the client: dropped; listed; unban: back.
    let (out, ok) = net.ctl(&["ban", "10.66.0.2", "10m"]);
    assert!(ok, "{out}");
    assert_eq!(net.probe(8080), "dropped", "banned client");
    let (out, ok) = net.ctl(&["--json", "show", "bans"]);
    assert!(ok && out.contains("10.66.0.2"), "{out}");
    // A reload that opens another port replaces the ruleset and keeps the ban.
    std::fs::write(
        &cfg,
        text.replace("\nallow = [", "\nallow = [\"tcp/2222\", "),
    )
    .expect("config");
    fw.signal("HUP");
    fw.wait_log_count("firewall replaced", 1, Duration::from_secs(5));
    fw.assert_logged("firewall replaced (bans kept)");
    assert_eq!(net.probe(8080), "dropped", "still banned after the reload");
    let (_, ok) = net.ctl(&["unban", "10.66.0.2"]);
    assert!(ok);
    assert_eq!(net.probe(8080), "open", "unbanned");
    assert_eq!(net.probe(2222), "open", "the reloaded allow entry");
    // And back: the port closes again.
    std::fs::write(&cfg, &text).expect("config");
    fw.signal("HUP");
    fw.wait_log_count("firewall replaced", 2, Duration::from_secs(5));
    assert_eq!(net.probe(2222), "dropped", "reloaded back");
    // Restart with the same config: the same ruleset, and the other table untouched.
    let before = net.nft_list();
    fw.signal("TERM");
    let _ = fw.child.wait();
    // keep_on_exit (default): the rules stay after the daemon stops.
    assert_eq!(
        net.probe(2222),
        "dropped",
        "the firewall stays after a stop"
    );
    let _fw = run_fwlb(&net.fw, &cfg);
    net.wait_open(8080);
    assert_eq!(
        net.nft_list(),
        before,
        "reapplying the same config changes nothing"
    );
    assert!(
        before.contains("table inet other"),
        "someone else's table survives"
    );
}

#[test]
fn keep_on_exit_false_removes_the_table_and_a_bad_firewall_starts_nothing() {
    let net = Pair::new("b");
    let dir = tempfile::tempdir().expect("dir");
    let _echo = net.fw.spawn(&[BIN, "echo", "127.0.0.1:9001"]);
    let cfg = dir.path().join("fwlb.toml");
    let write = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[daemon]\ncontrol = \"none\"\nshutdown_timeout = \"1s\"\n[[balancer]]\nlisten = \"10.66.0.1:8080\"\nservers = [\"127.0.0.1:9001\"]\n[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\n{extra}\n"
            ),
        )
        .expect("config")
    };
    write("keep_on_exit = false");
    let mut fw = run_fwlb(&net.fw, &cfg);
    net.wait_open(8080);
    assert!(net.nft_list().contains("table inet fwlb"));
    fw.signal("TERM");
    let st = fw.child.wait().expect("wait");
    assert!(st.success());
    assert!(
        !net.nft_list().contains("table inet fwlb"),
        "keep_on_exit = false removes it"
    );
    // A ruleset nft refuses: fwlb exits non-zero and serves nothing (fail closed).
    write("syn_rate = \"0/s\"");
    let out = net.fw.fwlb(&["run", "-c", cfg.to_str().expect("utf8")]);
    assert!(!out.status.success(), "must not run without its firewall");
    assert_ne!(net.probe(8080), "open");
}

#[test]
fn syn_rate_limits_a_flood_while_a_normal_client_connects() {
    let net = Pair::new("s");
    net.client.addr("eth0", "10.66.0.3/24");
    let dir = tempfile::tempdir().expect("dir");
    let _echo = net.fw.spawn(&[BIN, "echo", "127.0.0.1:9001"]);
    let cfg = dir.path().join("fwlb.toml");
    std::fs::write(
        &cfg,
        "[daemon]\ncontrol = \"none\"\n[[balancer]]\nlisten = \"10.66.0.1:8080\"\nservers = [\"127.0.0.1:9001\"]\nconnection_log = false\n\
[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nsyn_rate = \"20/s\"\n",
    )
    .expect("config");
    let _fw = run_fwlb(&net.fw, &cfg);
    net.wait_open(8080);
    std::thread::sleep(Duration::from_millis(1100));
    // The flood: 300 connection attempts from 10.66.0.2 within about half a second, bounded.
    let flood = "import socket,time\nok=0\nt=time.time()\nfor i in range(300):\n  s=socket.socket(); s.settimeout(0.05)\n  try:\n    s.connect(('10.66.0.1',8080)); ok+=1\n  except OSError: pass\n  s.close()\n  if time.time()-t>5: break\nprint(ok)\n";
    let ok: u32 = net.client.python(flood).trim().parse().expect("count");
    assert!(
        ok < 150,
        "the flood got {ok} of 300 connections through a 20/s limit"
    );
    assert!(
        ok >= 10,
        "the limit must not block the source entirely: {ok}"
    );
    // A normal client from another address still gets in.
    let normal = "import socket\ns=socket.socket(); s.settimeout(2); s.bind(('10.66.0.3',0)); s.connect(('10.66.0.1',8080)); print('open')\n";
    assert_eq!(net.client.python(normal).trim(), "open");
    let counters = net.nft_list();
    assert!(!counters.is_empty());
    let full = net.fw.run(&["nft", "list", "table", "inet", "fwlb"]);
    assert!(full.contains("packets"), "drops are counted: {full}");
}

#[test]
fn servers_on_the_back_network_reach_outside_through_nat() {
    require_tool("nft", "nftables");
    require_tool("python3", "python3");
    // outside (198.51.100.50) -- front -- fw (198.51.100.1 | 10.0.0.1) -- back -- server (10.0.0.11)
    let mut net = Net::new("fwn");
    let (outside, fw, server) = (net.host("out"), net.host("fw"), net.host("srv"));
    net.cable(&fw, "eth0", &outside, "eth0");
    net.cable(&fw, "eth1", &server, "eth0");
    fw.addr("eth0", "198.51.100.1/24");
    fw.addr("eth1", "10.0.0.1/24");
    outside.addr("eth0", "198.51.100.50/24");
    server.addr("eth0", "10.0.0.11/24");
    server.ip(&["route", "add", "default", "via", "10.0.0.1"]);
    fw.sysctl("net.ipv4.ip_forward=1");
    let dir = tempfile::tempdir().expect("dir");
    let _echo = outside.spawn(&[BIN, "echo", "198.51.100.50:7000"]);
    let cfg = dir.path().join("fwlb.toml");
    std::fs::write(
        &cfg,
        "[daemon]\ncontrol = \"none\"\n[[balancer]]\nlisten = \"198.51.100.1:80\"\nservers = [\"10.0.0.11:80\"]\n\
[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nback = \"eth1\"\nnat = true\n",
    )
    .expect("config");
    let _fwlb = run_fwlb(&fw, &cfg);
    // From the server, through the fw, to the outside host: the echo names the peer it saw.
    let py = "import socket,time\nfor i in range(100):\n  try:\n    s=socket.create_connection(('198.51.100.50',7000),timeout=1); break\n  except OSError: time.sleep(0.1)\ns.sendall(b'hi'); s.settimeout(3)\nprint(s.recv(4096).decode())\n";
    let out = server.python(py);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("echo json");
    assert!(
        v["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("198.51.100.1:")),
        "the outside host sees the fw's front address: {v}"
    );
    // The outside cannot open connections into the back network.
    outside.ip(&["route", "add", "10.0.0.0/24", "via", "198.51.100.1"]);
    assert_eq!(probe(&outside, "10.0.0.11", 22), "dropped");
}
