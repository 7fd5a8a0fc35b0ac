#![cfg(target_os = "linux")]
//! Servers by name against a real DNS server: dnsmasq (Debian `dnsmasq-base`) in a network
//! namespace serves `app.test` from a hosts file with a 1 s TTL, and fwlb balances to it with
//! two `fwlb echo` backends behind the two addresses the name takes in turn. A name that does
//! not resolve at start, then does; an address change under load with no failed request;
//! NXDOMAIN kept for `hold_nx`, then `unresolved`; a nameserver that stops answering. Needs
//! root and iproute2.

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
const LISTEN: &str = "127.0.0.1:8000";
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

fn dnsmasq(ns: &Ns, hosts: &Path) -> NsDaemon {
    assert!(
        Path::new(DNSMASQ).exists(),
        "{DNSMASQ} is missing: install Debian's dnsmasq-base (apt-get install dnsmasq-base)"
    );
    let hosts_arg = format!("--addn-hosts={}", hosts.display());
    let d = ns.spawn(&[
        DNSMASQ,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        &hosts_arg,
        "--local-ttl=1",
        "--port=53",
        &format!("--listen-address={DNS}"),
        "--bind-interfaces",
        // Names under test. not in the hosts file are NXDOMAIN (not REFUSED).
        "--local=/test/",
        // Keeps root, so it can re-read the hosts file in the test's private directory.
        "--user=root",
        "--pid-file=",
        "--log-queries",
    ]);
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

/// One namespace: dnsmasq on 10.53.0.1 serving `hosts_line`, the backend "old" on
/// 10.0.0.21:8080 and "new" on 10.0.0.42:8080 (fwlb is to listen on 127.0.0.1:8000), and an
/// empty directory for fwlb's chroot.
struct Scene {
    ns: Ns,
    dir: tempfile::TempDir,
    hosts: std::path::PathBuf,
    dns: NsDaemon,
    _backends: [NsDaemon; 2],
}

impl Scene {
    fn new(net: &mut Net, hosts_line: &str) -> Scene {
        require_tool("python3", "python3");
        require_tool("ss", "iproute2");
        let ns = net.host("dns");
        // On loopback: everything runs in this one namespace.
        for a in [DNS, OLD, NEW] {
            ns.addr("lo", &format!("{a}/32"));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, format!("{hosts_line}\n")).expect("hosts file");
        let dns = dnsmasq(&ns, &hosts);
        let backends = [("old", OLD), ("new", NEW)]
            .map(|(name, ip)| ns.spawn(&[BIN, "echo", "--name", name, &format!("{ip}:8080")]));
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("chroot dir");
        // The unprivileged child writes its state file there.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        Scene {
            ns,
            dir,
            hosts,
            dns,
            _backends: backends,
        }
    }

    /// As deployed: the child chrooted (no /etc/resolv.conf, no /etc/hosts) and unprivileged.
    fn daemon_keys(&self) -> String {
        format!(
            "user = \"nobody\"\nchroot = \"{}\"\n",
            self.dir.path().join("root").display()
        )
    }
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
