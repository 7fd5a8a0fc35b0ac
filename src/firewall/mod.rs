//! The firewall fwlb derives from its own configuration (architecture.md, `firewall/`).
//!
//! `model` turns the config into a backend-neutral [`Ruleset`]; `nft` and `pf` render it as
//! text for `nft -f -` (table `inet fwlb`) and `pfctl -a fwlb -f -` (anchor `fwlb`), and give
//! the commands that change the dynamic sets (bans) without a reload. Everything here is pure
//! (no I/O, no clock) except `backend`, the [`Firewall`] handle through which the privileged
//! parent applies the text and changes the bans, the same calls on either OS, and `pf_apply`,
//! which does that on pf (pfctl and /dev/pf).
//!
//! What the ruleset does, on both backends:
//! - inbound on `front`: drop by default; banned sources first; established and related
//!   traffic; the balancers' listen ports on their addresses; VRRP only from the `peers`;
//!   the ICMP networks need (echo, PMTU, neighbour discovery); the `allow` entries;
//!   an optional per-source rate limit of new TCP connections (`syn_rate`);
//! - the control port only from loopback (and `control_allow`), on every interface;
//! - from `back`, the servers (given by address, and by name as resolved: the parent keeps
//!   their set or table up to date); with `back_policy = "drop"` nothing else; with
//!   `nat = true` the back network is masqueraded out of front, and front may not open
//!   connections into back;
//! - other interfaces are left alone (nothing else fwlb installs drops there).

pub mod backend;
pub mod model;
pub mod nft;
#[cfg(target_os = "linux")]
pub mod nft_netlink;
pub mod pf;
// The pfctl runner and error wording are tested on every OS; only FreeBSD opens /dev/pf.
#[cfg(any(target_os = "freebsd", test))]
pub mod pf_apply;

pub use backend::{BanChange, Firewall, open};
pub use model::{Allow, Backend, Ban, Proto, Rate, Ruleset, build, parse_allow, parse_rate};

/// An address written in a test.
#[cfg(test)]
pub(crate) fn test_ip(s: &str) -> std::net::IpAddr {
    s.parse().expect("a test address")
}
