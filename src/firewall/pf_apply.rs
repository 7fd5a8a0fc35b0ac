//! pf (FreeBSD): what the privileged parent does to fwlb's anchor, for the `Pf` backend.
//!
//! - Rules: `pfctl -a fwlb -f -` with the rendered anchor (`firewall::pf::render`). Turning
//!   pf.conf text into `struct pf_rule` is pfctl's parser, and the rule ioctls changed between
//!   releases (nvlist `DIOCADDRULENV` in 13, netlink in 14); pfctl matches its own kernel. The
//!   parent runs it as root outside the chroot, so exec is fine there.
//! - Bans: the table ioctls of `sys::pf` on `<fwlb_banned>` in the anchor: no process per
//!   ban, and the descriptor, opened once before any chroot, is all they need. The resolved
//!   addresses of servers given by name go into `<fwlb_servers>` the same way.
//! - States: `pfctl -k ADDR`. The struct-based `DIOCKILLSTATES` is gone from FreeBSD 14's
//!   headers (nvlist `DIOCKILLSTATESNV`, then netlink), so pfctl again.
//!
//! Unlike `firewall::pf`, this does I/O (through `sys/`). The pfctl runner and the error
//! wording also build for Linux tests (sh stands in for pfctl); [`Anchor`], which holds
//! /dev/pf, is FreeBSD-only and only type-checked there.

use super::pf as render;
use crate::sys::command::{self, Failure};

/// Run `argv` (a pfctl command line from `firewall::pf`), feeding `stdin` if given.
/// Ok(stdout), or Err with the command, its exit status and what it printed on stderr.
pub fn pfctl(argv: &[String], stdin: Option<&str>) -> Result<String, String> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| "pfctl: empty command line".to_string())?;
    command::run(prog, args, stdin).map_err(|f| match f {
        Failure::Spawn(e) => format!("cannot run {prog}: {e}"),
        Failure::Io(e) => e,
        Failure::Exit { status, stderr } => {
            format!("`{}` failed ({status}): {stderr}", argv.join(" "))
        }
    })
}

/// What an errno from a table ioctl on fwlb's anchor means.
pub fn table_error(op: &str, table: &str, e: &std::io::Error) -> String {
    let anchor = render::ANCHOR;
    match e.raw_os_error() {
        // pf_strerror in pfctl: ESRCH is a missing table, EINVAL/ENOENT a missing anchor.
        Some(libc::ESRCH) => format!(
            "{op}: table <{table}> does not exist in anchor {anchor:?}: the firewall is not installed (or was flushed by hand)"
        ),
        Some(libc::ENOENT) => {
            format!("{op}: anchor {anchor:?} does not exist: the firewall is not installed")
        }
        // The kernel checks esize against its own sizeof(struct pfr_addr).
        Some(libc::ENODEV) => format!(
            "{op}: the kernel's struct pfr_addr differs from fwlb's ({} bytes)",
            std::mem::size_of::<crate::sys::pf::PfrAddr>()
        ),
        _ => format!("{op} <{table}> in anchor {anchor:?}: {e}"),
    }
}

#[cfg(target_os = "freebsd")]
pub use freebsd::Anchor;

#[cfg(target_os = "freebsd")]
mod freebsd {
    use std::io;
    use std::net::IpAddr;

    use super::{pfctl, render, table_error};
    use crate::sys::pf::{PfDevice, PfrAddr};

    /// fwlb's anchor in pf: its rules through pfctl, its ban table through /dev/pf.
    pub struct Anchor {
        dev: PfDevice,
    }

    impl Anchor {
        /// Open /dev/pf (as root, before any chroot).
        pub fn open() -> io::Result<Anchor> {
            Ok(Anchor {
                dev: PfDevice::open()?,
            })
        }

        /// Check that packets reach the anchor (pf enabled, the main ruleset calls
        /// `anchor "fwlb"` and, with `nat`, `nat-anchor "fwlb"`), then load `anchor_rules`
        /// (rendered by `firewall::pf::render`) as the anchor in one pfctl transaction. Any
        /// failure leaves pf as it was.
        pub fn install(&self, anchor_rules: &str, nat: bool) -> Result<(), String> {
            let info = pfctl(&render::show_info(), None)?;
            let rules = pfctl(&render::show_rules(), None)?;
            let nat_rules = if nat {
                Some(pfctl(&render::show_nat(), None)?)
            } else {
                None
            };
            render::check_reachable(&info, &rules, nat_rules.as_deref())?;
            pfctl(&render::load(), Some(anchor_rules)).map(|_| ())
        }

        /// Empty the anchor: its rules, translation rules and tables (a clean stop with
        /// `keep_on_exit = false`). The main ruleset's calls stay and then match nothing.
        pub fn remove(&self) -> Result<(), String> {
            pfctl(&render::flush(), None).map(|_| ())
        }

        /// Kill every state whose source is `ip`: pf matches states before rules, so a
        /// banned client's open connections would otherwise go on.
        pub fn kill_states(&self, ip: IpAddr) -> Result<(), String> {
            pfctl(&render::kill_states(ip), None).map(|_| ())
        }

        /// Add `ip` to `<fwlb_banned>` (a no-op if present) and kill its states.
        pub fn ban(&self, ip: IpAddr) -> Result<(), String> {
            self.dev
                .add_addrs(render::ANCHOR, render::BANNED, &[PfrAddr::host(ip)])
                .map_err(|e| table_error("add", render::BANNED, &e))?;
            self.kill_states(ip)
                .map_err(|e| format!("{ip} is banned, but its open connections were not cut: {e}"))
        }

        /// Remove `ip` from `<fwlb_banned>`; Ok(false) if it was not there.
        pub fn unban(&self, ip: IpAddr) -> Result<bool, String> {
            self.dev
                .del_addrs(render::ANCHOR, render::BANNED, &[PfrAddr::host(ip)])
                .map(|n| n > 0)
                .map_err(|e| table_error("delete", render::BANNED, &e))
        }

        /// Add `add` to `<fwlb_servers>` and delete `remove` (no-ops for what is so already).
        pub fn change_servers(&self, add: &[IpAddr], remove: &[IpAddr]) -> Result<(), String> {
            let table = render::SERVERS;
            let hosts =
                |ips: &[IpAddr]| ips.iter().map(|ip| PfrAddr::host(*ip)).collect::<Vec<_>>();
            if !remove.is_empty() {
                self.dev
                    .del_addrs(render::ANCHOR, table, &hosts(remove))
                    .map_err(|e| table_error("delete", table, &e))?;
            }
            if !add.is_empty() {
                self.dev
                    .add_addrs(render::ANCHOR, table, &hosts(add))
                    .map_err(|e| table_error("add", table, &e))?;
            }
            Ok(())
        }

        /// The banned hosts (networks added by hand with pfctl are left out).
        pub fn list_bans(&self) -> Result<Vec<IpAddr>, String> {
            let entries = self
                .dev
                .get_addrs(render::ANCHOR, render::BANNED)
                .map_err(|e| table_error("list", render::BANNED, &e))?;
            Ok(entries.iter().filter_map(PfrAddr::host_ip).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_runner() {
        // sh stands in for pfctl: stdin reaches it whole, stdout comes back.
        assert_eq!(
            pfctl(
                &argv(&["/bin/sh", "-c", "tr a-z A-Z"]),
                Some("anchor \"fwlb\"\n")
            ),
            Ok("ANCHOR \"FWLB\"\n".to_string())
        );
        assert_eq!(
            pfctl(&argv(&["/bin/sh", "-c", "echo ok"]), None),
            Ok("ok\n".into())
        );
        // A failure carries the command line, the status and stderr.
        let e = pfctl(
            &argv(&["/bin/sh", "-c", "echo 'pfctl: Syntax error' >&2; exit 1"]),
            Some("x"),
        )
        .unwrap_err();
        assert!(e.contains("failed (exit status: 1)"), "{e}");
        assert!(e.ends_with("pfctl: Syntax error"), "{e}");
        // A child that exits without reading a large input: its status is the error.
        let big = "#\n".repeat(1 << 20);
        let e = pfctl(&argv(&["/bin/sh", "-c", "exit 2"]), Some(&big)).unwrap_err();
        assert!(e.contains("exit status: 2"), "{e}");
        let e = pfctl(&argv(&["/nonexistent/pfctl"]), None).unwrap_err();
        assert!(e.starts_with("cannot run /nonexistent/pfctl"), "{e}");
        assert!(pfctl(&[], None).is_err());
    }

    #[test]
    fn errors_name_the_cause() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert!(
            table_error("add", "fwlb_banned", &e(libc::ESRCH))
                .contains("table <fwlb_banned> does not exist in anchor \"fwlb\"")
        );
        assert!(
            table_error("list", "t", &e(libc::ENOENT)).contains("anchor \"fwlb\" does not exist")
        );
        assert!(table_error("list", "t", &e(libc::ENODEV)).contains("struct pfr_addr differs"));
    }

    #[test]
    fn the_tables_fwlb_renders_fit_the_kernel_struct() {
        for name in [render::BANNED, render::PEERS, render::SERVERS] {
            assert!(
                crate::sys::pf::PfrTable::new(render::ANCHOR, name).is_ok(),
                "{name}"
            );
        }
    }
}
