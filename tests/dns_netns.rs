#![cfg(target_os = "linux")]
//! Servers by name against a real DNS server: dnsmasq (Debian `dnsmasq-base`) in a network
//! namespace serves `app.test` from a hosts file with a 1 s TTL, and fwlb balances to it with
//! `fwlb echo` backends behind the addresses the name takes in turn. A name that does not
//! resolve at start, then does; an address change under load with no failed request;
//! NXDOMAIN kept for `hold_nx`, then `unresolved`; a nameserver that stops answering. SRV
//! records (`--srv-host`): two targets split by weight, a target added under load and one
//! removed, a target that does not resolve, the servers kept across a restart. An emergency
//! server by name. The firewall's back side following a server's address (the nft set, and
//! traffic from the old and new address), and the parent refusing an address outside the back
//! network. Needs root, iproute2 and (for the firewall) nftables.

mod common;

use std::path::Path;
use std::time::Duration;

use common::netns::{Net, Ns, NsDaemon};
use common::wait::{read_log, wait_for_lines, wait_until};
use common::{BIN, require_tool};
use serde_json::Value;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const DNS: &str = "10.53.0.1";
const OLD: &str = "10.0.0.21";
const NEW: &str = "10.0.0.42";
const THIRD: &str = "10.0.0.43";
const LISTEN: &str = "127.0.0.1:8000";
const SRV_NAME: &str = "_app._tcp.test";
const HOLD_NX: Duration = Duration::from_secs(4);

/// A client that connects `n` times (or for `secs` seconds, whichever `mode` says) and prints
/// {"names": {server: count}, "failed": count}.
const CLIENT: &str = r#"
import json, sys, time
mode, amount = sys.argv[1], float(sys.argv[2])
names, failed, i = {}, 0, 0
end = time.time() + amount
while (mode == "n" and i < amount) or (mode == "s" and time.time() < end):
    i += 1
    try:
        name = echo("127.0.0.1", 8000, 3)["server"]
        names[name] = names.get(name, 0) + 1
    except Exception:
        failed += 1
    time.sleep(0.01)
print(json.dumps({"names": names, "failed": failed}))
"#;

/// dnsmasq on 10.53.0.1 in `ns`, serving `hosts` and the records `extra` adds (`--srv-host`).
fn dnsmasq(ns: &Ns, hosts: &Path, extra: &[String]) -> NsDaemon {
    assert!(
        Path::new(DNSMASQ).exists(),
        "{DNSMASQ} is missing: install Debian's dnsmasq-base (apt-get install dnsmasq-base)"
    );
    let hosts_arg = format!("--addn-hosts={}", hosts.display());
    let listen = format!("--listen-address={DNS}");
    let mut args = vec![
        DNSMASQ,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        &hosts_arg,
        "--local-ttl=1",
        "--port=53",
        &listen,
        "--bind-interfaces",
        // Names under test. not in the hosts file are NXDOMAIN (not REFUSED).
        "--local=/test/",
        // Keeps root, so it can re-read the hosts file in the test's private directory.
        "--user=root",
        "--pid-file=",
        "--log-queries",
    ];
    args.extend(extra.iter().map(String::as_str));
    let d = ns.spawn(&args);
    wait_until("dnsmasq to listen", Duration::from_secs(5), || {
        ns.exec(&["ss", "-Hlun", &format!("src {DNS}:53")])
            .stdout
            .len()
            > 1
    });
    d
}

fn set_hosts(path: &Path, dns: &NsDaemon, line: &str) {
    std::fs::write(path, format!("{line}\n")).expect("hosts file");
    dns.signal("HUP");
}

/// The client's summary (`mode` "n": `amount` connections; "s": for `amount` seconds).
fn clients(ns: &Ns, mode: &str, amount: &str) -> Value {
    let code = format!("{}{CLIENT}", common::PY_ECHO);
    let out = ns.run(&["python3", "-c", &code, mode, amount]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("client output {out:?}: {e}"))
}

fn count(v: &Value, name: &str) -> u64 {
    v["names"][name].as_u64().unwrap_or(0)
}

/// `fwlb run` with `config`, once it listens and its control port answers.
fn start_fwlb(ns: &Ns, config: &str) -> NsDaemon {
    let fwlb = ns.daemon(config);
    wait_for_lines(&fwlb.log, "listening", 1, Duration::from_secs(10));
    wait_until("the control port", Duration::from_secs(5), || {
        ns.fwlb(&["ctl", "-C", "127.0.0.1:8888", "servers"])
            .status
            .success()
    });
    fwlb
}

fn show_servers(ns: &Ns) -> Value {
    let out = ns.fwlb(&["ctl", "-C", "127.0.0.1:8888", "--json", "show", "servers"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "show servers: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn address(ns: &Ns) -> String {
    let v = show_servers(ns);
    let s = &v["servers"][0];
    assert_eq!(s["name"], "app.test", "{v}");
    s["address"].as_str().unwrap_or("").to_string()
}

/// One namespace: dnsmasq on 10.53.0.1 serving `hosts_line`, the backends "old" on
/// 10.0.0.21:8080, "new" on 10.0.0.42:8080 and "third" on 10.0.0.43:8080 (fwlb is to listen
/// on 127.0.0.1:8000), and an empty directory for fwlb's chroot.
struct Scene {
    ns: Ns,
    dir: tempfile::TempDir,
    hosts: std::path::PathBuf,
    dns: NsDaemon,
    _backends: [NsDaemon; 3],
}

impl Scene {
    fn new(net: &mut Net, hosts_line: &str) -> Scene {
        Scene::with_records(net, hosts_line, &[])
    }

    /// With dnsmasq's `extra` records (`--srv-host=...`) besides the hosts file.
    fn with_records(net: &mut Net, hosts_line: &str, extra: &[String]) -> Scene {
        require_tool("python3", "python3");
        require_tool("ss", "iproute2");
        let ns = net.host("dns");
        // On loopback: everything runs in this one namespace.
        for a in [DNS, OLD, NEW, THIRD] {
            ns.addr("lo", &format!("{a}/32"));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, format!("{hosts_line}\n")).expect("hosts file");
        let dns = dnsmasq(&ns, &hosts, extra);
        let backends = [("old", OLD), ("new", NEW), ("third", THIRD)]
            .map(|(name, ip)| ns.spawn(&[BIN, "echo", "--name", name, &format!("{ip}:8080")]));
        Scene {
            ns,
            dir: chroot_dir(dir),
            hosts,
            dns,
            _backends: backends,
        }
    }

    /// dnsmasq again, with other records (SIGHUP re-reads hosts files only).
    fn restart_dns(&mut self, extra: &[String]) {
        self.dns.kill();
        self.dns = dnsmasq(&self.ns, &self.hosts, extra);
    }

    /// As deployed: the child chrooted (no /etc/resolv.conf, no /etc/hosts) and unprivileged.
    fn daemon_keys(&self) -> String {
        format!(
            "user = \"nobody\"\nchroot = \"{}\"\n",
            self.dir.path().join("root").display()
        )
    }
}

/// `dir` with an empty `root` inside for fwlb's chroot, writable by its unprivileged child
/// (the state file goes there).
fn chroot_dir(dir: tempfile::TempDir) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("chroot dir");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// `/etc/netns/NS/resolv.conf`, which `ip netns exec NS` mounts over /etc/resolv.conf for the
/// programs it runs there; removed when dropped.
struct NetnsResolvConf(std::path::PathBuf);

impl NetnsResolvConf {
    fn new(ns: &Ns, text: &str) -> NetnsResolvConf {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        std::fs::write(dir.join("resolv.conf"), text).expect("resolv.conf");
        NetnsResolvConf(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn nameservers_default_to_the_hosts_resolv_conf() {
    let mut net = Net::new("dnsrc");
    let scene = Scene::new(&mut net, &format!("{OLD} app.test"));
    let ns = &scene.ns;
    let _conf = NetnsResolvConf::new(ns, &format!("search example.org\nnameserver {DNS}\n"));
    // No [resolver]: the parent reads resolv.conf before the child chroots to an empty dir.
    let config = format!(
        "[daemon]\n{}[[balancer]]\nname = \"t\"\nlisten = \"{LISTEN}\"\nservers = [\"app.test:8080\"]\n",
        scene.daemon_keys()
    );
    let fwlb = start_fwlb(ns, &config);
    wait_until("the name to resolve", Duration::from_secs(5), || {
        address(ns) == format!("{OLD}:8080")
    });
    let v = clients(ns, "n", "3");
    assert_eq!(count(&v, "old"), 3, "{v}: {}", read_log(&fwlb.log));
}

#[test]
fn servers_by_name_follow_dns() {
    let mut net = Net::new("dns");
    let mut scene = Scene::new(&mut net, "");
    let (ns, hosts) = (scene.ns.clone(), scene.hosts.clone());
    let config = format!(
        "[daemon]\nshutdown_timeout = \"1s\"\nstate_file = \"/state.json\"\n{}[resolver]\nnameservers = [\"{DNS}:53\"]\nhold_nx = \"{}s\"\n[[balancer]]\nname = \"t\"\nlisten = \"{LISTEN}\"\nservers = [\"app.test:8080\"]\nblacklist = \"1s\"\n",
        scene.daemon_keys(),
        HOLD_NX.as_secs()
    );
    // `fwlb check` warns about the name that does not resolve, and passes.
    let file = scene.dir.path().join("fwlb.toml");
    std::fs::write(&file, &config).expect("config");
    let check = ns.fwlb(&["check", "-c", file.to_str().expect("UTF-8 path")]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{err}");
    assert!(
        err.contains("warning: server name \"app.test\" does not resolve"),
        "{err}"
    );
    let mut fwlb = start_fwlb(&ns, &config);

    // 1. Not resolvable at start: fwlb runs, the server is unresolved and gets nobody.
    assert_eq!(address(&ns), "unresolved");
    assert_eq!(show_servers(&ns)["servers"][0]["health"], "unresolved");
    let v = clients(&ns, "n", "3");
    assert_eq!(v["failed"], 3, "no server while unresolved: {v}");
    set_hosts(&hosts, &scene.dns, &format!("{OLD} app.test"));
    wait_until("the name to resolve", Duration::from_secs(5), || {
        address(&ns) == format!("{OLD}:8080")
    });
    let v = clients(&ns, "n", "5");
    assert_eq!(
        (count(&v, "old"), v["failed"].as_u64()),
        (5, Some(0)),
        "{v}"
    );
    assert!(read_log(&fwlb.log).contains("resolved: address 10.0.0.21 (dns)"));

    // 2. The address changes under load: no request fails, the traffic moves.
    let code = format!("{}{CLIENT}", common::PY_ECHO);
    let load = ns.spawn(&["python3", "-c", &code, "s", "5"]);
    std::thread::sleep(Duration::from_secs(1));
    set_hosts(&hosts, &scene.dns, &format!("{NEW} app.test"));
    wait_for_lines(
        &fwlb.log,
        "address 10.0.0.21 -> 10.0.0.42 (dns)",
        1,
        Duration::from_secs(5),
    );
    let mut load = load;
    assert!(
        load.wait_exit(Duration::from_secs(15)).is_some(),
        "load client hangs"
    );
    let v: Value = serde_json::from_str(read_log(&load.log).trim()).expect("load summary");
    assert_eq!(v["failed"], 0, "no failed request during the move: {v}");
    assert!(count(&v, "old") > 0 && count(&v, "new") > 0, "{v}");
    let v = clients(&ns, "n", "5");
    assert_eq!(count(&v, "new"), 5, "{v}");
    assert_eq!(show_servers(&ns)["servers"][0]["index"], "0");

    // 3. NXDOMAIN: the last address is kept for hold_nx, then the server is unresolved.
    set_hosts(&hosts, &scene.dns, "");
    wait_for_lines(&fwlb.log, "keeping 10.0.0.42", 1, Duration::from_secs(5));
    let failing = std::time::Instant::now();
    let v = clients(&ns, "n", "3");
    assert_eq!(count(&v, "new"), 3, "kept within hold_nx: {v}");
    wait_until("unresolved after hold_nx", Duration::from_secs(10), || {
        address(&ns) == "unresolved"
    });
    assert!(
        failing.elapsed() >= HOLD_NX - Duration::from_secs(2),
        "dropped too early"
    );
    let v = clients(&ns, "n", "2");
    assert_eq!(v["failed"], 2, "{v}");
    // ... and joins again by itself.
    set_hosts(&hosts, &scene.dns, &format!("{NEW} app.test"));
    wait_until("resolved again", Duration::from_secs(5), || {
        address(&ns) == format!("{NEW}:8080")
    });

    // 4. The nameserver stops answering: the last good address is kept (for hold_nx).
    scene.dns.kill();
    wait_for_lines(&fwlb.log, "keeping 10.0.0.42", 2, Duration::from_secs(10));
    let v = clients(&ns, "n", "3");
    assert_eq!(count(&v, "new"), 3, "{v}: {}", read_log(&fwlb.log));
    assert_eq!(address(&ns), format!("{NEW}:8080"));

    // 5. A restart while the nameserver is still dead starts from the saved address.
    fwlb.kill();
    let fwlb = start_fwlb(&ns, &config);
    assert_eq!(
        address(&ns),
        format!("{NEW}:8080"),
        "{}",
        read_log(&fwlb.log)
    );
    let v = clients(&ns, "n", "3");
    assert_eq!(count(&v, "new"), 3, "{v}: {}", read_log(&fwlb.log));
}

/// dnsmasq's SRV record for `SRV_NAME`.
fn srv_host(target: &str, prio: u16, weight: u16) -> String {
    format!("--srv-host={SRV_NAME},{target},8080,{prio},{weight}")
}

/// `show servers` as (name, address, state, index) of each server.
fn srv_servers(ns: &Ns) -> Vec<(String, String, String, String)> {
    let v = show_servers(ns);
    let text = |s: &Value, k: &str| s[k].as_str().unwrap_or("-").to_string();
    v["servers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        text(s, "name"),
                        text(s, "address"),
                        text(s, "state"),
                        text(s, "index"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The server named `name`: (address, state, index).
fn server_named(ns: &Ns, name: &str) -> Option<(String, String, String)> {
    srv_servers(ns)
        .into_iter()
        .find(|(n, ..)| n == name)
        .map(|(_, a, st, i)| (a, st, i))
}

#[test]
fn servers_from_srv_records_follow_the_answer() {
    let mut net = Net::new("dnssrv");
    let hosts = format!("{OLD} a.test\n{NEW} b.test\n{THIRD} c.test");
    let (a, b, c) = (
        srv_host("a.test", 10, 3),
        srv_host("b.test", 10, 1),
        srv_host("c.test", 10, 1),
    );
    let nowhere = srv_host("nowhere.test", 10, 1);
    let mut scene = Scene::with_records(&mut net, &hosts, &[a.clone(), b.clone(), nowhere.clone()]);
    let ns = scene.ns.clone();
    let config = format!(
        "[daemon]\nshutdown_timeout = \"1s\"\nstate_file = \"/state.json\"\n{}[resolver]\nnameservers = [\"{DNS}:53\"]\nhold_obsolete = \"2s\"\n[[balancer]]\nname = \"t\"\nlisten = \"{LISTEN}\"\nservers_srv = \"{SRV_NAME}\"\nalgorithm = \"weight\"\n",
        scene.daemon_keys()
    );
    let fwlb = start_fwlb(&ns, &config);
    let resolved = |name: &str, ip: &str| {
        server_named(&ns, name).is_some_and(|(addr, ..)| addr == format!("{ip}:8080"))
    };
    wait_until("both targets to resolve", Duration::from_secs(10), || {
        resolved("a.test", OLD) && resolved("b.test", NEW)
    });
    // The target that does not resolve is a server that gets nobody.
    let (addr, state, _) = server_named(&ns, "nowhere.test").expect("nowhere.test is a server");
    assert_eq!(
        (addr.as_str(), state.as_str()),
        ("unresolved", "unresolved")
    );

    // 1. Weights 3 and 1.
    let v = clients(&ns, "n", "40");
    let (old, new) = (count(&v, "old"), count(&v, "new"));
    assert_eq!(v["failed"], 0, "{v}");
    assert!(
        (27..=33).contains(&old) && (7..=13).contains(&new),
        "weights 3:1: {v}"
    );

    // 2. A target added under load: no request fails, it gets clients.
    let code = format!("{}{CLIENT}", common::PY_ECHO);
    let mut load = ns.spawn(&["python3", "-c", &code, "s", "6"]);
    std::thread::sleep(Duration::from_secs(1));
    scene.restart_dns(&[a.clone(), b.clone(), c.clone(), nowhere.clone()]);
    wait_for_lines(
        &fwlb.log,
        "server c.test:8080 added from _app._tcp.test",
        1,
        Duration::from_secs(10),
    );
    wait_until("c.test to resolve", Duration::from_secs(10), || {
        resolved("c.test", THIRD)
    });
    assert!(
        load.wait_exit(Duration::from_secs(20)).is_some(),
        "load client hangs"
    );
    let v: Value = serde_json::from_str(read_log(&load.log).trim()).expect("load summary");
    assert_eq!(
        v["failed"], 0,
        "no failed request while a target joins: {v}"
    );
    let v = clients(&ns, "n", "25");
    assert!(count(&v, "third") > 0, "{v}");
    let (_, _, c_index) = server_named(&ns, "c.test").expect("c.test");

    // 3. A target removed: no new clients at once, gone after hold_obsolete; c keeps its index.
    scene.restart_dns(&[a.clone(), c.clone(), nowhere.clone()]);
    wait_for_lines(
        &fwlb.log,
        "server b.test:8080 left the SRV answer",
        1,
        Duration::from_secs(10),
    );
    let v = clients(&ns, "n", "20");
    assert_eq!(
        (count(&v, "new"), v["failed"].as_u64()),
        (0, Some(0)),
        "{v}"
    );
    wait_for_lines(
        &fwlb.log,
        "server b.test:8080 removed",
        1,
        Duration::from_secs(10),
    );
    assert!(
        server_named(&ns, "b.test").is_none(),
        "{:?}",
        srv_servers(&ns)
    );
    assert_eq!(server_named(&ns, "c.test").map(|s| s.2), Some(c_index));

    // 4. A restart while the nameserver is down starts from the saved servers.
    scene.dns.kill();
    let mut fwlb = fwlb;
    fwlb.kill();
    let fwlb = start_fwlb(&ns, &config);
    assert!(
        resolved("a.test", OLD) && resolved("c.test", THIRD),
        "{:?}\n{}",
        srv_servers(&ns),
        read_log(&fwlb.log)
    );
    let v = clients(&ns, "n", "8");
    assert_eq!(v["failed"], 0, "{v}: {}", read_log(&fwlb.log));
    assert_eq!(count(&v, "old") + count(&v, "third"), 8, "{v}");
}

#[test]
fn an_emergency_server_by_name_follows_dns() {
    let mut net = Net::new("dnsemg");
    let scene = Scene::new(&mut net, &format!("{OLD} sorry.test"));
    let ns = &scene.ns;
    // The only server refuses: every client goes to the emergency server.
    let config = format!(
        "[daemon]\n{}[resolver]\nnameservers = [\"{DNS}:53\"]\n[[balancer]]\nname = \"t\"\nlisten = \"{LISTEN}\"\nservers = [\"127.0.0.1:9\"]\nemergency = \"sorry.test:8080\"\n",
        scene.daemon_keys()
    );
    let fwlb = start_fwlb(ns, &config);
    let emergency = || server_named(ns, "sorry.test").map(|s| (s.0, s.2));
    wait_until(
        "the emergency name to resolve",
        Duration::from_secs(10),
        || emergency() == Some((format!("{OLD}:8080"), "emergency".into())),
    );
    let v = clients(ns, "n", "3");
    assert_eq!(count(&v, "old"), 3, "{v}: {}", read_log(&fwlb.log));
    set_hosts(&scene.hosts, &scene.dns, &format!("{NEW} sorry.test"));
    wait_for_lines(
        &fwlb.log,
        "server sorry.test:8080 address 10.0.0.21 -> 10.0.0.42 (dns)",
        1,
        Duration::from_secs(10),
    );
    let v = clients(ns, "n", "3");
    assert_eq!(count(&v, "new"), 3, "{v}");
}

/// A TCP connect from `ns`, from source `src`, to `dst`:`port` (1 s): "open", "refused" or
/// "dropped".
fn probe_from(ns: &Ns, src: &str, dst: &str, port: u16) -> String {
    ns.python(&format!(
        "import socket\ns=socket.socket(); s.settimeout(1.0); s.bind(('{src}', 0))\ntry:\n  s.connect(('{dst}',{port})); print('open')\nexcept ConnectionRefusedError: print('refused')\nexcept OSError: print('dropped')\n"
    ))
    .trim()
    .to_string()
}

#[test]
fn the_back_side_opens_to_a_server_by_name_as_its_address_moves() {
    require_tool("nft", "nftables");
    require_tool("python3", "python3");
    require_tool("ss", "iproute2");
    let mut net = Net::new("dnsfw");
    // fw (dnsmasq on loopback, fwlb, a service on 10.0.0.2:7000) -- eth1 -- srv (10.0.0.21
    // and 10.0.0.42, a backend on each).
    let (fw, srv) = (net.host("fw"), net.host("srv"));
    net.cable(&fw, "eth1", &srv, "eth0");
    fw.addr("eth1", "10.0.0.2/24");
    fw.addr("lo", &format!("{DNS}/32"));
    srv.addr("eth0", &format!("{OLD}/24"));
    srv.addr("eth0", &format!("{NEW}/24"));
    let dir = chroot_dir(tempfile::tempdir().expect("tempdir"));
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("{OLD} app.test\n192.0.2.77 bogus.test\n")).expect("hosts");
    let dns = dnsmasq(&fw, &hosts, &[]);
    let _service = fw.spawn(&[BIN, "echo", "--name", "fw", "10.0.0.2:7000"]);
    let _backends = [("old", OLD), ("new", NEW)]
        .map(|(name, ip)| srv.spawn(&[BIN, "echo", "--name", name, &format!("{ip}:8080")]));
    // The VRRP address on eth1 tells fwlb the back network (10.0.0.0/24).
    let config = format!(
        "[daemon]\nuser = \"nobody\"\nchroot = \"{}\"\nshutdown_timeout = \"1s\"\n[resolver]\nnameservers = [\"{DNS}:53\"]\n\
         [[balancer]]\nname = \"t\"\nlisten = \"{LISTEN}\"\nservers = [\"app.test:8080\", \"bogus.test:8080\"]\n\
         [[vrrp]]\nvrid = 9\ninterface = \"eth1\"\nversion = 3\nadvert_interval = \"100ms\"\naddresses = [\"10.0.0.1/24\"]\n\
         [firewall]\nbackend = \"nftables\"\nfront = \"front0\"\nback = \"eth1\"\nback_policy = \"drop\"\n",
        dir.path().join("root").display()
    );
    let fwlb = start_fwlb(&fw, &config);
    let set = || fw.run(&["nft", "list", "set", "inet", "fwlb", "servers4"]);
    wait_until(
        "10.0.0.21 in the servers' set",
        Duration::from_secs(10),
        || set().contains(OLD),
    );
    assert_eq!(probe_from(&srv, OLD, "10.0.0.2", 7000), "open", "{}", set());
    assert_eq!(
        probe_from(&srv, NEW, "10.0.0.2", 7000),
        "dropped",
        "not a server's address"
    );
    // fwlb reaches its server through the back side.
    let v = clients(&fw, "n", "3");
    assert_eq!(count(&v, "old"), 3, "{v}");
    // The parent refused the address outside the back network, and said so once.
    wait_for_lines(
        &fwlb.log,
        "refused a server address: server bogus.test:8080: 192.0.2.77: outside the back networks",
        1,
        Duration::from_secs(10),
    );
    assert!(!set().contains("192.0.2.77"), "{}", set());

    // The name moves: the set follows, and so does what the firewall lets in.
    std::fs::write(&hosts, format!("{NEW} app.test\n192.0.2.77 bogus.test\n")).expect("hosts");
    dns.signal("HUP");
    wait_until(
        "10.0.0.42 in the set, 10.0.0.21 out",
        Duration::from_secs(10),
        || {
            let s = set();
            s.contains(NEW) && !s.contains(OLD)
        },
    );
    assert_eq!(probe_from(&srv, NEW, "10.0.0.2", 7000), "open");
    assert_eq!(probe_from(&srv, OLD, "10.0.0.2", 7000), "dropped");
    let log = read_log(&fwlb.log);
    assert_eq!(
        log.matches("refused a server address: server bogus.test")
            .count(),
        1,
        "once per episode:\n{log}"
    );
}
