//! VRRP on a real segment: hosts (network namespaces) with their eth0 on one switch, which of
//! them hold a virtual address, and keepalived as the peer.

use std::time::Duration;

use serde_json::Value;

use super::netns::{Net, Ns};
use super::wait::poll;

/// A virtual address as it shows on a host: `cidr` (`10.77.0.10/24`) on `dev`.
pub struct Vip {
    pub dev: &'static str,
    pub cidr: &'static str,
}

/// Hosts h1..hN whose eth0 is cabled to port pK of switch `sw`, and further segments; all
/// removed when dropped.
pub struct Lan {
    pub net: Net,
    /// Each segment's switch and the prefix of its port names.
    segments: Vec<(Ns, String)>,
    hosts: Vec<Ns>,
}

impl Lan {
    /// `n` hosts on one switch; `prepare` runs in each host before its cable is plugged in
    /// (for sysctls the new interface inherits).
    pub fn new(tag: &str, n: usize, prepare: impl Fn(&Ns)) -> Lan {
        let mut net = Net::new(tag);
        let sw = net.switch("sw");
        let mut hosts = Vec::new();
        for k in 1..=n {
            let h = net.host(&format!("h{k}"));
            prepare(&h);
            net.plug(&sw, &format!("p{k}"), &h, "eth0");
            hosts.push(h);
        }
        Lan {
            net,
            segments: vec![(sw, "p".to_string())],
            hosts,
        }
    }

    /// Another segment: switch `name`, with every host's `dev` on its port `{port}K`.
    pub fn add_segment(&mut self, name: &str, port: &str, dev: &str) {
        let sw = self.net.switch(name);
        for (k, h) in self.hosts.iter().enumerate() {
            self.net.plug(&sw, &format!("{port}{}", k + 1), h, dev);
        }
        self.segments.push((sw, port.to_string()));
    }

    /// A namespace `name` that is not one of the hosts (a client, a server), its `dev` cabled
    /// to segment `segment`'s port `{port}{name}`.
    pub fn leaf(&mut self, segment: usize, name: &str, dev: &str) -> Ns {
        let ns = self.net.host(name);
        let (sw, port) = &self.segments[segment];
        self.net.plug(sw, &format!("{port}{name}"), &ns, dev);
        ns
    }

    /// Host k (from 1).
    pub fn host(&self, k: usize) -> &Ns {
        &self.hosts[k - 1]
    }

    /// 1..=N.
    pub fn all(&self) -> Vec<usize> {
        (1..=self.hosts.len()).collect()
    }

    /// Pull (`up` false) or plug back host k's cable on segment `segment` (0 is the first),
    /// at the switch's end: the host sees its carrier go.
    pub fn set_cable(&self, segment: usize, k: usize, up: bool) {
        let (sw, port) = &self.segments[segment];
        sw.link(&format!("{port}{k}"), up);
    }

    /// Host k's cable on the first segment.
    pub fn cable(&self, k: usize, up: bool) {
        self.set_cable(0, k, up);
    }

    /// Whether host k holds `vip` now.
    pub fn holds(&self, k: usize, vip: &Vip) -> bool {
        self.host(k).addrs(vip.dev).contains(vip.cidr)
    }

    /// Those of `among` that hold `vip` now.
    pub fn holders(&self, vip: &Vip, among: &[usize]) -> Vec<usize> {
        among
            .iter()
            .copied()
            .filter(|&k| self.holds(k, vip))
            .collect()
    }

    /// Wait until exactly `want` of `among` hold `vip`; returns how long it took. Two holders
    /// for a moment are normal while routers that started together converge.
    pub fn wait_holders(
        &self,
        vip: &Vip,
        among: &[usize],
        want: &[usize],
        limit: Duration,
    ) -> Duration {
        let probe = || (self.holders(vip, among) == want).then_some(());
        poll(limit, Duration::from_millis(5), probe, || {
            format!(
                "holders of {} are {:?}, wanted {want:?} within {limit:?}",
                vip.cidr,
                self.holders(vip, among)
            )
        })
        .1
    }

    /// Wait (up to `limit`) until host `k` alone of `among` holds `vip`, then check that it
    /// still does `stay` later: the others accept it as master. `what` says why it should.
    pub fn wait_stable(
        &self,
        vip: &Vip,
        among: &[usize],
        k: usize,
        [limit, stay]: [Duration; 2],
        what: &str,
    ) {
        self.wait_holders(vip, among, &[k], limit);
        std::thread::sleep(stay);
        assert_eq!(self.holders(vip, among), [k], "{what}");
    }

    /// Wait until host k holds `vip`, whatever the others do; returns how long it took.
    pub fn wait_holds(&self, k: usize, vip: &Vip, limit: Duration) -> Duration {
        let probe = || self.holds(k, vip).then_some(());
        poll(limit, Duration::from_millis(5), probe, || {
            format!("host {k} did not take {} within {limit:?}", vip.cidr)
        })
        .1
    }
}

/// `show vrrp` instances of a master and its backup: each in its state, and the backup hears
/// the master's adverts.
pub fn assert_master_and_backup(master: &Value, backup: &Value) {
    assert_eq!(
        (master["state"].as_str(), backup["state"].as_str()),
        (Some("master"), Some("backup")),
        "{master} {backup}"
    );
    assert!(
        backup["adverts_received"].as_u64().is_some_and(|n| n > 0),
        "{backup}"
    );
}

/// One keepalived `vrrp_instance` on eth0, as `keepalived_conf` writes it.
pub struct Keepalived<'a> {
    pub state: &'a str,
    pub vrid: u8,
    pub priority: u8,
    /// Seconds: "1", "0.1".
    pub advert_int: &'a str,
    /// VRRPv3 (`version 3`); else keepalived's default, v2.
    pub v3: bool,
    /// Simple-password authentication (v2 only).
    pub password: Option<&'a str>,
    /// With its prefix: `10.77.0.10/24`.
    pub vip: &'a str,
}

impl<'a> Keepalived<'a> {
    /// A backup at priority 100, VRRPv3 at 100 ms, without a password: change what differs.
    pub fn instance(vrid: u8, vip: &'a str) -> Keepalived<'a> {
        Keepalived {
            state: "BACKUP",
            vrid,
            priority: 100,
            advert_int: "0.1",
            v3: true,
            password: None,
            vip,
        }
    }
}

/// keepalived.conf for one instance (the settings of design/vrrp-reference.md §3.1).
pub fn keepalived_conf(k: &Keepalived) -> String {
    let version = if k.v3 { "  version 3\n" } else { "" };
    let auth = k
        .password
        .map(|p| format!("  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}\n"))
        .unwrap_or_default();
    format!(
        "global_defs {{\n  enable_script_security\n}}\nvrrp_instance VI_{vrid} {{\n  state {state}\n  interface eth0\n  virtual_router_id {vrid}\n  priority {priority}\n  advert_int {int}\n{version}{auth}  virtual_ipaddress {{\n    {vip}\n  }}\n}}\n",
        vrid = k.vrid,
        state = k.state,
        priority = k.priority,
        int = k.advert_int,
        vip = k.vip,
    )
}
