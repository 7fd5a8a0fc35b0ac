#![cfg(target_os = "linux")]
//! The nftables firewall installed by `fwlb run`, between two network namespaces of this test:
//! a balancer host `fw` (front eth0 10.66.0.1) and a client (10.66.0.2). Needs root, `ip` and
//! `nft` (apt-get install iproute2 nftables).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

struct Net {
    fw: String,
    client: String,
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Net {
    fn new(tag: &str) -> Net {
        for tool in ["ip", "nft", "python3"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "this test needs `{tool}` (apt-get install iproute2 nftables python3)"
            );
        }
        let p = std::process::id() % 100_000;
        let net = Net {
            fw: format!("ff{tag}{p}fw"),
            client: format!("ff{tag}{p}cl"),
        };
        for n in [&net.fw, &net.client] {
            let ok = Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot create network namespace {n}: this test needs root"
            );
        }
        run(&[
            "ip",
            "-n",
            &net.fw,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &net.client,
        ]);
        run(&[
            "ip",
            "-n",
            &net.fw,
            "addr",
            "add",
            "10.66.0.1/24",
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            &net.client,
            "addr",
            "add",
            "10.66.0.2/24",
            "dev",
            "eth0",
        ]);
        for n in [&net.fw, &net.client] {
            run(&["ip", "-n", n, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        net
    }

    /// A TCP connect from the client to 10.66.0.1:`port`: "open", "refused" or "dropped".
    fn probe(&self, port: u16) -> String {
        let py = format!(
            "import socket\ns=socket.socket(); s.settimeout(1.0)\ntry:\n  s.connect(('10.66.0.1',{port})); print('open')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError: print('dropped')\n"
        );
        run(&["ip", "netns", "exec", &self.client, "python3", "-c", &py])
            .trim()
            .to_string()
    }

    fn nft_list(&self) -> String {
        run(&[
            "ip", "netns", "exec", &self.fw, "nft", "-s", "list", "ruleset",
        ])
    }

    fn ctl(&self, args: &[&str]) -> (String, bool) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.fw, BIN, "ctl"])
            .args(args)
            .output()
            .expect("fwlb ctl");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.success(),
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.fw]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client])
            .status();
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_in(ns: &str, args: &[&str], log: &std::path::Path) -> Proc {
    Proc(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("spawn"),
    )
}

fn wait_open(net: &Net, port: u16) {
    let t0 = Instant::now();
    while net.probe(port) != "open" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn firewall_admits_listeners_drops_the_rest_bans_and_reapplies_idempotently() {
    let net = Net::new("a");
    let dir = tempfile::tempdir().expect("dir");
    // Someone else's table must survive everything fwlb does.
    run(&[
        "ip", "netns", "exec", &net.fw, "nft", "add", "table", "inet", "other",
    ]);
    run(&[
        "ip", "netns", "exec", &net.fw, "nft", "add", "chain", "inet", "other", "keep",
    ]);
    let _echo = spawn_in(
        &net.fw,
        &[BIN, "echo", "127.0.0.1:9001", "0.0.0.0:2222"],
        &dir.path().join("echo.log"),
    );
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
    let log = dir.path().join("fwlb.log");
    let mut fw = spawn_in(
        &net.fw,
        &[BIN, "run", "-c", cfg.to_str().expect("utf8")],
        &log,
    );
    wait_open(&net, 8080);
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logtext().contains("firewall installed"), "{}", logtext());
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
    assert!(
        net.ctl(&["-C", "127.0.0.1:8888", "blacklist"]).1,
        "loopback still reaches it"
    );
    // Ban the client: dropped; listed; unban: back.
    let (out, ok) = net.ctl(&["-C", "127.0.0.1:8888", "ban", "10.66.0.2", "10m"]);
    assert!(ok, "{out}");
    assert_eq!(net.probe(8080), "dropped", "banned client");
    let (out, ok) = net.ctl(&["-C", "127.0.0.1:8888", "--json", "show", "bans"]);
    assert!(ok && out.contains("10.66.0.2"), "{out}");
    // A reload that opens another port replaces the ruleset and keeps the ban.
    std::fs::write(
        &cfg,
        text.replace("\nallow = [", "\nallow = [\"tcp/2222\", "),
    )
    .expect("config");
    let _ = Command::new("kill")
        .args(["-HUP", &fw.0.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !logtext().contains("firewall replaced") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        logtext().contains("firewall replaced (bans kept)"),
        "{}",
        logtext()
    );
    assert_eq!(net.probe(8080), "dropped", "still banned after the reload");
    let (_, ok) = net.ctl(&["-C", "127.0.0.1:8888", "unban", "10.66.0.2"]);
    assert!(ok);
    assert_eq!(net.probe(8080), "open", "unbanned");
    assert_eq!(net.probe(2222), "open", "the reloaded allow entry");
    // And back: the port closes again.
    std::fs::write(&cfg, &text).expect("config");
    let _ = Command::new("kill")
        .args(["-HUP", &fw.0.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while logtext().matches("firewall replaced").count() < 2 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(net.probe(2222), "dropped", "reloaded back");
    // Restart with the same config: the same ruleset, and the other table untouched.
    let before = net.nft_list();
    let _ = Command::new("kill")
        .args(["-TERM", &fw.0.id().to_string()])
        .status();
    let _ = fw.0.wait();
    // keep_on_exit (default): the rules stay after the daemon stops.
    assert_eq!(
        net.probe(2222),
        "dropped",
        "the firewall stays after a stop"
    );
    fw = spawn_in(
        &net.fw,
        &[BIN, "run", "-c", cfg.to_str().expect("utf8")],
        &log,
    );
    wait_open(&net, 8080);
    assert_eq!(
        net.nft_list(),
        before,
        "reapplying the same config changes nothing"
    );
    assert!(
        before.contains("table inet other"),
        "someone else's table survives"
    );
    drop(fw);
}

#[test]
fn keep_on_exit_false_removes_the_table_and_a_bad_firewall_starts_nothing() {
    let net = Net::new("b");
    let dir = tempfile::tempdir().expect("dir");
    let _echo = spawn_in(
        &net.fw,
        &[BIN, "echo", "127.0.0.1:9001"],
        &dir.path().join("echo.log"),
    );
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
    let log = dir.path().join("fwlb.log");
    let fw = spawn_in(
        &net.fw,
        &[BIN, "run", "-c", cfg.to_str().expect("utf8")],
        &log,
    );
    wait_open(&net, 8080);
    assert!(net.nft_list().contains("table inet fwlb"));
    let _ = Command::new("kill")
        .args(["-TERM", &fw.0.id().to_string()])
        .status();
    let mut fw = fw;
    let st = fw.0.wait().expect("wait");
    assert!(st.success());
    assert!(
        !net.nft_list().contains("table inet fwlb"),
        "keep_on_exit = false removes it"
    );
    // A ruleset nft refuses: fwlb exits non-zero and serves nothing (fail closed).
    write("syn_rate = \"0/s\"");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.fw,
            BIN,
            "run",
            "-c",
            cfg.to_str().expect("utf8"),
        ])
        .output()
        .expect("run");
    assert!(!out.status.success(), "must not run without its firewall");
    assert_ne!(net.probe(8080), "open");
}

#[test]
fn syn_rate_limits_a_flood_while_a_normal_client_connects() {
    let net = Net::new("s");
    run(&[
        "ip",
        "-n",
        &net.client,
        "addr",
        "add",
        "10.66.0.3/24",
        "dev",
        "eth0",
    ]);
    let dir = tempfile::tempdir().expect("dir");
    let _echo = spawn_in(
        &net.fw,
        &[BIN, "echo", "127.0.0.1:9001"],
        &dir.path().join("echo.log"),
    );
    let cfg = dir.path().join("fwlb.toml");
    std::fs::write(
        &cfg,
        "[daemon]\ncontrol = \"none\"\n[[balancer]]\nlisten = \"10.66.0.1:8080\"\nservers = [\"127.0.0.1:9001\"]\nconnection_log = false\n\
[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nsyn_rate = \"20/s\"\n",
    )
    .expect("config");
    let _fw = spawn_in(
        &net.fw,
        &[BIN, "run", "-c", cfg.to_str().expect("utf8")],
        &dir.path().join("fwlb.log"),
    );
    wait_open(&net, 8080);
    std::thread::sleep(Duration::from_millis(1100));
    // The flood: 300 connection attempts from 10.66.0.2 within about half a second, bounded.
    let flood = "import socket,time\nok=0\nt=time.time()\nfor i in range(300):\n  s=socket.socket(); s.settimeout(0.05)\n  try:\n    s.connect(('10.66.0.1',8080)); ok+=1\n  except OSError: pass\n  s.close()\n  if time.time()-t>5: break\nprint(ok)\n";
    let ok: u32 = run(&["ip", "netns", "exec", &net.client, "python3", "-c", flood])
        .trim()
        .parse()
        .expect("count");
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
    assert_eq!(
        run(&["ip", "netns", "exec", &net.client, "python3", "-c", normal]).trim(),
        "open"
    );
    let counters = net.nft_list();
    assert!(!counters.is_empty());
    let full = run(&[
        "ip", "netns", "exec", &net.fw, "nft", "list", "table", "inet", "fwlb",
    ]);
    assert!(full.contains("packets"), "drops are counted: {full}");
}

#[test]
fn servers_on_the_back_network_reach_outside_through_nat() {
    // outside (198.51.100.50) -- front -- fw (198.51.100.1 | 10.0.0.1) -- back -- server (10.0.0.11)
    let p = std::process::id() % 100_000;
    let (outside, fw, server) = (format!("fn{p}out"), format!("fn{p}fw"), format!("fn{p}srv"));
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
        }
    }
    let _c = Cleanup(vec![outside.clone(), fw.clone(), server.clone()]);
    for n in [&outside, &fw, &server] {
        run(&["ip", "netns", "add", n]);
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    run(&[
        "ip", "-n", &fw, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        &outside,
    ]);
    run(&[
        "ip", "-n", &fw, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
        &server,
    ]);
    run(&[
        "ip",
        "-n",
        &fw,
        "addr",
        "add",
        "198.51.100.1/24",
        "dev",
        "eth0",
    ]);
    run(&["ip", "-n", &fw, "addr", "add", "10.0.0.1/24", "dev", "eth1"]);
    run(&[
        "ip",
        "-n",
        &outside,
        "addr",
        "add",
        "198.51.100.50/24",
        "dev",
        "eth0",
    ]);
    run(&[
        "ip",
        "-n",
        &server,
        "addr",
        "add",
        "10.0.0.11/24",
        "dev",
        "eth0",
    ]);
    for (n, d) in [
        (&fw, "eth0"),
        (&fw, "eth1"),
        (&outside, "eth0"),
        (&server, "eth0"),
    ] {
        run(&["ip", "-n", n, "link", "set", d, "up"]);
    }
    run(&[
        "ip", "-n", &server, "route", "add", "default", "via", "10.0.0.1",
    ]);
    run(&[
        "ip",
        "netns",
        "exec",
        &fw,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    let dir = tempfile::tempdir().expect("dir");
    let _echo = spawn_in(
        &outside,
        &[BIN, "echo", "198.51.100.50:7000"],
        &dir.path().join("echo.log"),
    );
    let cfg = dir.path().join("fwlb.toml");
    std::fs::write(
        &cfg,
        "[daemon]\ncontrol = \"none\"\n[[balancer]]\nlisten = \"198.51.100.1:80\"\nservers = [\"10.0.0.11:80\"]\n\
[firewall]\nbackend = \"nftables\"\nfront = \"eth0\"\nback = \"eth1\"\nnat = true\n",
    )
    .expect("config");
    let _fwlb = spawn_in(
        &fw,
        &[BIN, "run", "-c", cfg.to_str().expect("utf8")],
        &dir.path().join("fwlb.log"),
    );
    // From the server, through the fw, to the outside host: the echo names the peer it saw.
    let py = "import socket,time\nfor i in range(100):\n  try:\n    s=socket.create_connection(('198.51.100.50',7000),timeout=1); break\n  except OSError: time.sleep(0.1)\ns.sendall(b'hi'); s.settimeout(3)\nprint(s.recv(4096).decode())\n";
    let out = run(&["ip", "netns", "exec", &server, "python3", "-c", py]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("echo json");
    assert!(
        v["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("198.51.100.1:")),
        "the outside host sees the fw's front address: {v}"
    );
    // The outside cannot open connections into the back network.
    run(&[
        "ip",
        "-n",
        &outside,
        "route",
        "add",
        "10.0.0.0/24",
        "via",
        "198.51.100.1",
    ]);
    let probe = "import socket\ns=socket.socket(); s.settimeout(1)\ntry:\n  s.connect(('10.0.0.11',22)); print('open')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError: print('dropped')\n";
    assert_eq!(
        run(&["ip", "netns", "exec", &outside, "python3", "-c", probe]).trim(),
        "dropped"
    );
}
