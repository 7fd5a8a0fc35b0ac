#![cfg(target_os = "linux")]
//! VRRP `track` between network namespaces: two fwlb hosts share a VIP on the front segment
//! and balance to one `fwlb echo` server on the back segment. The master's traffic to the
//! server is dropped by nftables while every link stays up: its checks see the server go,
//! its priority drops below the backup's, and the backup, which still reaches the server,
//! takes over; the server back, the master preempts back. A reload removes and restores the
//! track. Real client requests show which host relayed them. Needs root, iproute2, nftables
//! and python3.

mod common;

use std::time::{Duration, Instant};

use common::vrrp::{Lan, Vip};
use common::*;
use serde_json::Value;

const VIP: Vip = Vip {
    dev: "eth0",
    cidr: "10.77.0.10/24",
};
const SERVER: &str = "10.88.0.11";

/// One request to the VIP; prints the peer the server saw (the relaying host), or "failed".
const CLIENT: &str = r#"
try:
    print(echo("10.77.0.10", 80, 2)["peer"].rsplit(":", 1)[0])
except Exception as e:
    print("failed", e)
"#;

/// Host config: the balancer on the VIP, fast checks, VRRPv3 at 100 ms, and `track`.
fn conf(priority: u8, track: &str) -> String {
    format!(
        r#"[daemon]
control = "127.0.0.1:8888"
shutdown_timeout = "1s"

[[balancer]]
name = "www"
listen = "10.77.0.10:80"
servers = ["{SERVER}:8080"]
connect_timeout = "300ms"
blacklist = "1s"
health = {{ check = "tcp", interval = "200ms", fast_interval = "100ms", down_interval = "200ms", timeout = "100ms", rise = 2, fall = 2 }}

[[vrrp]]
vrid = 51
interface = "eth0"
priority = {priority}
addresses = ["{cidr}"]
version = 3
advert_interval = "100ms"
{track}
"#,
        cidr = VIP.cidr
    )
}

const TRACK: &str = r#"track = [{ balancer = "www", weight = -60 }]"#;

/// The pair, a client on the front segment and the server on the back one.
struct Scene {
    lab: Lan,
    client: Ns,
    _server: NsDaemon,
}

fn scene() -> Scene {
    require_tool("nft", "nftables");
    require_tool("python3", "python3");
    let mut lab = Lan::new("trk", 2, |_| {});
    lab.add_segment("sw2", "q", "eth1");
    for k in lab.all() {
        lab.host(k).addr("eth0", &format!("10.77.0.{k}/24"));
        lab.host(k).addr("eth1", &format!("10.88.0.{k}/24"));
    }
    let client = lab.leaf(0, "c", "eth0");
    client.addr("eth0", "10.77.0.100/24");
    let server_ns = lab.leaf(1, "s", "eth0");
    server_ns.addr("eth0", &format!("{SERVER}/24"));
    let server = server_ns.spawn(&[BIN, "echo", &format!("{SERVER}:8080"), "--name", "s1"]);
    wait_until("the server to listen", Duration::from_secs(5), || {
        server_ns
            .exec(&["ss", "-Hltn", &format!("src {SERVER}:8080")])
            .stdout
            .len()
            > 1
    });
    Scene {
        lab,
        client,
        _server: server,
    }
}

impl Scene {
    /// Which host relayed a client request ("10.88.0.1" is h1), or "failed ...".
    fn request(&self) -> String {
        let code = format!("{PY_ECHO}{CLIENT}");
        self.client.python(&code).trim().to_string()
    }

    /// Drop (or stop dropping) host k's traffic to the server; its links stay up.
    fn cut(&self, k: usize, cut: bool) {
        let h = self.lab.host(k);
        if cut {
            h.run(&[
                "nft",
                &format!("add table ip fwt_cut; add chain ip fwt_cut out {{ type filter hook output priority 0; }}; add rule ip fwt_cut out ip daddr {SERVER} drop"),
            ]);
        } else {
            h.run(&["nft", "delete table ip fwt_cut"]);
        }
    }

    /// Wait until host k alone holds the VIP and relays the client's requests; how long.
    fn moves_to(&self, k: usize, limit: Duration, logs: &[&NsDaemon]) -> Duration {
        let t0 = Instant::now();
        let want = format!("10.88.0.{k}");
        showing_logs(&[("h1", logs[0]), ("h2", logs[1])], || {
            self.lab.wait_holders(&VIP, &self.lab.all(), &[k], limit);
            wait_until("a request relayed by the new master", limit, || {
                self.request() == want
            });
        });
        t0.elapsed()
    }

    fn vrrp(&self, k: usize) -> Value {
        self.lab.host(k).show_vrrp()["vrrp"][0].clone()
    }
}

#[test]
fn the_master_that_loses_its_servers_hands_over_and_takes_them_back() {
    let s = scene();
    let h1 = s.lab.host(1).daemon(&conf(150, TRACK));
    let h2 = s.lab.host(2).daemon(&conf(100, TRACK));
    s.moves_to(1, Duration::from_secs(5), &[&h1, &h2]);
    let v = s.vrrp(1);
    assert_eq!(
        (&v["effective_priority"], &v["why"]),
        (&Value::from(150), &serde_json::json!([])),
        "{v}"
    );
    assert_eq!(v["track"][0]["up"], 1, "{v}");

    // The master's back side loses its server; its links stay up.
    s.cut(1, true);
    let took = s.moves_to(2, Duration::from_secs(5), &[&h1, &h2]);
    eprintln!("servers lost on h1: h2 master and serving after {took:?}");
    let (v1, v2) = (s.vrrp(1), s.vrrp(2));
    assert_eq!(v1["state"], "backup", "{v1}");
    assert_eq!(v1["tracked_priority"], 90, "{v1}");
    assert_eq!(v1["effective_priority"], 90, "{v1}");
    assert_eq!(v1["why"][0], "www: no healthy server -60", "{v1}");
    assert_eq!(v1["track"][0]["failed"], true, "{v1}");
    assert_eq!(
        (&v2["state"], &v2["effective_priority"]),
        (&Value::from("master"), &Value::from(100)),
        "{v2}"
    );
    h1.assert_logged("priority 150 -> 90 (configured 150; www: no healthy server -60)");
    // The text table says why too.
    let table = s
        .lab
        .host(1)
        .fwlb(&["ctl", "-C", "127.0.0.1:8888", "show", "vrrp"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("150, www: no healthy server -60"), "{table}");

    // The server is back: h1's checks rise, its priority returns, it preempts (preempt on).
    s.cut(1, false);
    let took = s.moves_to(1, Duration::from_secs(5), &[&h1, &h2]);
    eprintln!("servers back on h1: h1 master and serving after {took:?}");
    assert_eq!(s.vrrp(1)["effective_priority"], 150);

    // A reload without `track`: the master keeps the VIP with its server gone.
    let cfg = h1.dir().join("fwlb.toml");
    std::fs::write(&cfg, conf(150, "")).expect("config");
    h1.signal("HUP");
    h1.wait_log_count("reload: configuration from", 1, Duration::from_secs(5));
    s.cut(1, true);
    wait_until("h1 to see its server down", Duration::from_secs(5), || {
        s.vrrp(1)["track"].as_array().is_some_and(|t| t.is_empty())
            && s.request().starts_with("failed")
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(s.lab.holders(&VIP, &s.lab.all()), [1], "no track, no move");
    assert_eq!(s.vrrp(1)["effective_priority"], 150);
    // `track` back by reload: the pair moves at once (the server is already down on h1).
    std::fs::write(&cfg, conf(150, TRACK)).expect("config");
    h1.signal("HUP");
    let took = s.moves_to(2, Duration::from_secs(5), &[&h1, &h2]);
    eprintln!("track restored by SIGHUP: h2 master and serving after {took:?}");
    s.cut(1, false);
    s.moves_to(1, Duration::from_secs(5), &[&h1, &h2]);
}
