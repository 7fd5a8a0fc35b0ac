//! One firewall handle for the daemon's privileged side, whatever the OS: [`open`] gives a
//! [`Firewall`] for the configured backend, and the daemon calls the same methods on Linux
//! (nftables: `nft -f -` through `sys::nft`), FreeBSD (pf: `pf_apply`) or with `none`.
//!
//! Unlike the rest of `firewall/`, this module does I/O (through `sys/`) and reads the clock:
//! it is the applier the renderers feed. Every method is meant for the privileged parent
//! (root, outside the chroot).
//!
//! Bans behave the same on both backends: [`Firewall::install`] makes the ban set exactly
//! `rs.bans` (fill it from [`Firewall::list_bans`] to keep bans across a reinstall), and a
//! timed ban ends by itself. nftables expires entries in the kernel; pf tables have no
//! timeouts, so the pf handle keeps the deadlines ([`Deadlines`]) and the daemon calls
//! [`Firewall::expire`] when [`Firewall::next_expiry`] says (a no-op on nftables).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::model::{Backend, Ban, Ruleset};

/// One change to the ban sets, for [`Firewall::change_bans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanChange {
    /// Ban for the duration (None or zero: until unbanned); banning again replaces it.
    Ban(IpAddr, Option<Duration>),
    Unban(IpAddr),
}

/// The operations the daemon needs from a firewall backend.
pub trait Firewall: Send {
    /// What is installed, for logs: "table inet fwlb", "anchor fwlb", "nothing".
    fn describe(&self) -> &'static str;

    /// Install the ruleset atomically (all of it or nothing); the ban set becomes exactly
    /// `rs.bans`. Applying the same ruleset again changes nothing.
    fn install(&mut self, rs: &Ruleset) -> Result<()>;

    /// Ban `ip`, for `timeout` or (None or zero) until [`Firewall::unban`]; banning again
    /// replaces the timeout. Open connections from `ip` are cut.
    fn ban(&mut self, ip: IpAddr, timeout: Option<Duration>) -> Result<()>;

    /// Lift a ban; succeeds if `ip` was not banned.
    fn unban(&mut self, ip: IpAddr) -> Result<()>;

    /// Apply `changes` in order, all of them or (on nftables) none: the daemon batches the
    /// ban requests that arrive together into one call.
    fn change_bans(&mut self, changes: &[BanChange]) -> Result<()> {
        for c in changes {
            match *c {
                BanChange::Ban(ip, timeout) => self.ban(ip, timeout)?,
                BanChange::Unban(ip) => self.unban(ip)?,
            }
        }
        Ok(())
    }

    /// The bans in force, each with the time it has left (None: until unbanned).
    fn list_bans(&mut self) -> Result<Vec<Ban>>;

    /// Lift the timed bans whose time has passed, where the kernel does not (pf); returns
    /// them. nftables expires its own entries: nothing to do.
    fn expire(&mut self) -> Result<Vec<IpAddr>> {
        Ok(Vec::new())
    }

    /// When [`Firewall::expire`] next has work (None: no timed ban pending).
    fn next_expiry(&self) -> Option<Instant> {
        None
    }

    /// Remove everything [`Firewall::install`] put in (a clean stop with
    /// `keep_on_exit = false`).
    fn remove(&mut self) -> Result<()>;

    /// Accept `add` on `back` as servers and stop accepting `remove` (the resolved addresses
    /// of servers given by name, already checked by the caller), without a reinstall. Only
    /// for a ruleset with `back`; a no-op where nothing is installed.
    fn change_servers(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<()>;
}

/// The handle for `backend`. On FreeBSD, pf's descriptor is opened here, so call this before
/// any chroot. A backend the OS does not have is an error naming it.
pub fn open(backend: Backend) -> Result<Box<dyn Firewall>> {
    match backend {
        Backend::None => Ok(Box::new(NoFirewall)),
        #[cfg(target_os = "linux")]
        Backend::Nftables => Ok(Box::new(Nft::open()?)),
        #[cfg(not(target_os = "linux"))]
        Backend::Nftables => Err(anyhow!("[firewall] backend = \"nftables\" needs Linux")),
        #[cfg(target_os = "freebsd")]
        Backend::Pf => Ok(Box::new(Pf::open()?)),
        #[cfg(not(target_os = "freebsd"))]
        Backend::Pf => Err(anyhow!("[firewall] backend = \"pf\" needs FreeBSD")),
    }
}

/// `backend = "none"`: the host's firewall is managed elsewhere. Installing and removing do
/// nothing; bans are refused, since nothing would enforce them.
pub struct NoFirewall;

impl NoFirewall {
    fn refuse() -> anyhow::Error {
        anyhow!("no firewall installed ([firewall] backend = \"none\")")
    }
}

impl Firewall for NoFirewall {
    fn describe(&self) -> &'static str {
        "nothing"
    }
    fn install(&mut self, _rs: &Ruleset) -> Result<()> {
        Ok(())
    }
    fn ban(&mut self, _ip: IpAddr, _timeout: Option<Duration>) -> Result<()> {
        Err(Self::refuse())
    }
    fn unban(&mut self, _ip: IpAddr) -> Result<()> {
        Err(Self::refuse())
    }
    fn list_bans(&mut self) -> Result<Vec<Ban>> {
        Err(Self::refuse())
    }
    fn remove(&mut self) -> Result<()> {
        Ok(())
    }
    fn change_servers(&mut self, _add: &[IpAddr], _remove: &[IpAddr]) -> Result<()> {
        Ok(())
    }
}

/// nftables: the table `inet fwlb`. The ruleset goes in through `nft -f -`
/// (`firewall::nft` renders, `sys::nft` runs); the ban sets' elements change and are listed
/// through netlink (`firewall::nft_netlink`), with their timeouts kept by the kernel.
#[cfg(target_os = "linux")]
pub struct Nft {
    sets: super::nft_netlink::SetSocket,
}

#[cfg(target_os = "linux")]
impl Nft {
    pub fn open() -> Result<Nft> {
        let sets = super::nft_netlink::SetSocket::open()
            .map_err(|e| anyhow!("cannot open a netfilter netlink socket: {e}"))?;
        Ok(Nft { sets })
    }
}

#[cfg(target_os = "linux")]
impl Firewall for Nft {
    fn describe(&self) -> &'static str {
        "table inet fwlb"
    }
    fn install(&mut self, rs: &Ruleset) -> Result<()> {
        crate::sys::nft::apply(&super::nft::render(rs))
            .map_err(|e| anyhow!("cannot install the firewall: {e}"))
    }
    fn ban(&mut self, ip: IpAddr, timeout: Option<Duration>) -> Result<()> {
        self.change_bans(&[BanChange::Ban(ip, timeout)])
            .map_err(|e| anyhow!("ban {ip}: {e:#}"))
    }
    fn unban(&mut self, ip: IpAddr) -> Result<()> {
        self.change_bans(&[BanChange::Unban(ip)])
            .map_err(|e| anyhow!("unban {ip}: {e:#}"))
    }
    fn change_bans(&mut self, changes: &[BanChange]) -> Result<()> {
        self.sets.change(changes).map_err(|e| anyhow!(e))
    }
    fn list_bans(&mut self) -> Result<Vec<Ban>> {
        self.sets.list().map_err(|e| anyhow!("show bans: {e}"))
    }
    fn remove(&mut self) -> Result<()> {
        crate::sys::nft::apply(&super::nft::delete())
            .map_err(|e| anyhow!("cannot remove the firewall: {e}"))
    }
    fn change_servers(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<()> {
        self.sets
            .change_servers(add, remove)
            .map_err(|e| anyhow!("server addresses: {e}"))
    }
}

/// The deadlines of timed bans, for a backend whose kernel keeps none (pf). Pure: the
/// clock is a parameter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deadlines {
    until: HashMap<IpAddr, Instant>,
}

impl Deadlines {
    /// Record a ban: `timeout` None or zero is permanent (as on nftables), which also
    /// cancels an earlier deadline.
    pub fn set(&mut self, ip: IpAddr, timeout: Option<Duration>, now: Instant) {
        match timeout.filter(|d| !d.is_zero()) {
            // A duration too long for the clock is as good as permanent.
            Some(d) => match now.checked_add(d) {
                Some(t) => {
                    self.until.insert(ip, t);
                }
                None => {
                    self.until.remove(&ip);
                }
            },
            None => {
                self.until.remove(&ip);
            }
        }
    }

    pub fn remove(&mut self, ip: IpAddr) {
        self.until.remove(&ip);
    }

    /// Start over from the bans of a ruleset just installed.
    pub fn reset(&mut self, bans: &[Ban], now: Instant) {
        self.until.clear();
        for b in bans {
            self.set(b.ip, b.timeout, now);
        }
    }

    /// The time `ip`'s ban has left (None: permanent or unknown). A ban past its deadline
    /// but not yet expired reports zero.
    pub fn left(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.until
            .get(&ip)
            .map(|t| t.saturating_duration_since(now))
    }

    /// The bans whose deadline has passed, in deadline order (they stay recorded until
    /// [`Deadlines::remove`], so a failed removal is retried).
    pub fn due(&self, now: Instant) -> Vec<IpAddr> {
        let mut v: Vec<(Instant, IpAddr)> = self
            .until
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(ip, t)| (*t, *ip))
            .collect();
        v.sort();
        v.into_iter().map(|(_, ip)| ip).collect()
    }

    pub fn next(&self) -> Option<Instant> {
        self.until.values().min().copied()
    }

    /// Forget deadlines of addresses no longer in the table (unbanned by hand).
    pub fn retain(&mut self, present: &[IpAddr]) {
        self.until.retain(|ip, _| present.contains(ip));
    }
}

/// The bans as `list_bans` reports them: the table's hosts with the time each has left.
pub fn annotate(hosts: &[IpAddr], deadlines: &Deadlines, now: Instant) -> Vec<Ban> {
    hosts
        .iter()
        .map(|ip| Ban {
            ip: *ip,
            timeout: deadlines.left(*ip, now),
        })
        .collect()
}

/// pf: the anchor `fwlb`, loaded with pfctl, bans in `<fwlb_banned>` through /dev/pf
/// (`pf_apply`), their deadlines here.
#[cfg(target_os = "freebsd")]
pub struct Pf {
    pf: super::pf_apply::Anchor,
    deadlines: Deadlines,
}

#[cfg(target_os = "freebsd")]
impl Pf {
    /// Open /dev/pf (as root, before any chroot).
    pub fn open() -> Result<Pf> {
        Ok(Pf {
            pf: super::pf_apply::Anchor::open()?,
            deadlines: Deadlines::default(),
        })
    }
}

#[cfg(target_os = "freebsd")]
impl Firewall for Pf {
    fn describe(&self) -> &'static str {
        "anchor fwlb"
    }
    fn install(&mut self, rs: &Ruleset) -> Result<()> {
        self.pf
            .install(&super::pf::render(rs), rs.nat)
            .map_err(|e| anyhow!("cannot install the firewall: {e}"))?;
        // The load replaced <fwlb_banned> with rs.bans. Their states need no kill: a
        // reinstall swaps the table without a gap, and at boot there are none.
        self.deadlines.reset(&rs.bans, Instant::now());
        Ok(())
    }
    fn ban(&mut self, ip: IpAddr, timeout: Option<Duration>) -> Result<()> {
        // The deadline first: if killing states fails after the entry went in, the ban
        // still ends on time.
        self.deadlines.set(ip, timeout, Instant::now());
        self.pf.ban(ip).map_err(|e| anyhow!("ban {ip}: {e}"))
    }
    fn unban(&mut self, ip: IpAddr) -> Result<()> {
        self.pf.unban(ip).map_err(|e| anyhow!("unban {ip}: {e}"))?;
        self.deadlines.remove(ip);
        Ok(())
    }
    fn list_bans(&mut self) -> Result<Vec<Ban>> {
        let hosts = self.pf.list_bans().map_err(|e| anyhow!("show bans: {e}"))?;
        self.deadlines.retain(&hosts);
        Ok(annotate(&hosts, &self.deadlines, Instant::now()))
    }
    fn expire(&mut self) -> Result<Vec<IpAddr>> {
        let mut done = Vec::new();
        for ip in self.deadlines.due(Instant::now()) {
            self.pf
                .unban(ip)
                .map_err(|e| anyhow!("ban of {ip} expired, but cannot lift it: {e}"))?;
            self.deadlines.remove(ip);
            done.push(ip);
        }
        Ok(done)
    }
    fn next_expiry(&self) -> Option<Instant> {
        self.deadlines.next()
    }
    fn remove(&mut self) -> Result<()> {
        self.pf
            .remove()
            .map_err(|e| anyhow!("cannot remove the firewall: {e}"))?;
        self.deadlines = Deadlines::default();
        Ok(())
    }
    fn change_servers(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Result<()> {
        self.pf
            .change_servers(add, remove)
            .map_err(|e| anyhow!("server addresses: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::firewall::test_ip as ip;

    #[test]
    fn deadlines_follow_bans() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Deadlines::default();
        d.set(ip("192.0.2.1"), Some(s(60)), t0);
        d.set(ip("192.0.2.2"), Some(s(10)), t0);
        d.set(ip("192.0.2.3"), None, t0);
        d.set(ip("192.0.2.4"), Some(Duration::ZERO), t0);
        assert_eq!(d.next(), Some(t0 + s(10)));
        assert_eq!(d.left(ip("192.0.2.1"), t0 + s(15)), Some(s(45)));
        assert_eq!(d.left(ip("192.0.2.3"), t0), None, "permanent");
        assert_eq!(
            d.left(ip("192.0.2.4"), t0),
            None,
            "zero means permanent, as on nft"
        );
        assert!(d.due(t0 + s(9)).is_empty());
        assert_eq!(d.due(t0 + s(10)), [ip("192.0.2.2")]);
        assert_eq!(
            d.due(t0 + s(61)),
            [ip("192.0.2.2"), ip("192.0.2.1")],
            "deadline order"
        );
        assert_eq!(d.left(ip("192.0.2.2"), t0 + s(11)), Some(Duration::ZERO));
        d.remove(ip("192.0.2.2"));
        assert_eq!(d.next(), Some(t0 + s(60)));

        // Banning again replaces the deadline; a permanent ban cancels it.
        d.set(ip("192.0.2.1"), Some(s(5)), t0 + s(30));
        assert_eq!(d.next(), Some(t0 + s(35)));
        d.set(ip("192.0.2.1"), None, t0 + s(31));
        assert_eq!(d.next(), None);
        // A duration past the clock's range is permanent, not a panic.
        d.set(ip("192.0.2.5"), Some(Duration::MAX), t0);
        assert_eq!(d.next(), None);
    }

    #[test]
    fn deadlines_from_an_install_and_the_table() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set(ip("203.0.113.9"), Some(Duration::from_secs(1)), t0);
        let bans = [
            Ban {
                ip: ip("203.0.113.66"),
                timeout: Some(Duration::from_secs(5400)),
            },
            Ban {
                ip: ip("2001:db8:bad::1"),
                timeout: None,
            },
        ];
        d.reset(&bans, t0);
        assert_eq!(
            d.next(),
            Some(t0 + Duration::from_secs(5400)),
            "old deadlines dropped"
        );

        // The table holds one ban fwlb made and one added by hand with pfctl; a deadline
        // whose entry was deleted by hand is forgotten.
        d.set(ip("198.51.100.1"), Some(Duration::from_secs(3)), t0);
        let hosts = [ip("203.0.113.66"), ip("192.0.2.200")];
        d.retain(&hosts);
        assert_eq!(
            annotate(&hosts, &d, t0 + Duration::from_secs(400)),
            [
                Ban {
                    ip: ip("203.0.113.66"),
                    timeout: Some(Duration::from_secs(5000)),
                },
                Ban {
                    ip: ip("192.0.2.200"),
                    timeout: None,
                },
            ]
        );
        assert_eq!(d.left(ip("198.51.100.1"), t0), None);
    }

    #[test]
    fn none_installs_nothing_and_refuses_bans() {
        let mut fw = open(Backend::None).unwrap();
        assert_eq!(fw.describe(), "nothing");
        let rs = Ruleset {
            backend: Backend::None,
            front: String::new(),
            back: None,
            listeners: vec![],
            vrrp_peers: vec![],
            vrrp_ifaces: vec![],
            vrrp_open_ifaces: vec![],
            control_port: None,
            control_allow: vec![],
            allow: vec![],
            servers: vec![],
            resolved: vec![],
            back_drop: false,
            nat: false,
            nat_sources: vec![],
            syn_rate: None,
            bans: vec![],
        };
        fw.install(&rs).unwrap();
        let e = fw.ban(ip("192.0.2.1"), None).unwrap_err().to_string();
        assert!(e.contains("backend = \"none\""), "{e}");
        assert!(fw.list_bans().is_err());
        assert!(fw.expire().unwrap().is_empty());
        assert_eq!(fw.next_expiry(), None);
        fw.remove().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn backends_this_os_lacks_are_named() {
        let e = open(Backend::Pf).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("[firewall] backend = \"pf\" needs FreeBSD")
        );
        assert_eq!(
            open(Backend::Nftables).unwrap().describe(),
            "table inet fwlb"
        );
    }
}
