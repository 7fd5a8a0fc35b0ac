//! pf (FreeBSD): the privileged operations on fwlb's anchor, for the privileged parent.
//!
//! - Rules: `pfctl -a fwlb -f -` with the rendered anchor (`firewall::pf::render`). Turning
//!   pf.conf text into `struct pf_rule` is pfctl's parser, and the rule ioctls changed between
//!   releases (nvlist `DIOCADDRULENV` in 13, netlink in 14); pfctl matches its own kernel. The
//!   parent runs it as root outside the chroot, so exec is fine there.
//! - Tables: /dev/pf ioctls (`DIOCRADDADDRS`, `DIOCRDELADDRS`, `DIOCRGETADDRS`) on
//!   `<fwlb_banned>` in the anchor: no process per ban, and the descriptor, opened once before
//!   any chroot, is all they need. `struct pfioc_table`, `pfr_table` and `pfr_addr` have kept
//!   their layout from FreeBSD 7 to 15 (sys/net/pfvar.h); the sizes are asserted below.
//! - States: `pfctl -k ADDR`. The struct-based `DIOCKILLSTATES` is gone from FreeBSD 14's
//!   headers (nvlist `DIOCKILLSTATESNV`, then netlink), so pfctl again.
//!
//! The layouts, request numbers and the pfctl runner also build for Linux tests (which check
//! them against the header's values and with sh standing in for pfctl); [`Pf`], which opens
//! /dev/pf and calls the kernel, is FreeBSD-only and only type-checked here: no FreeBSD host
//! runs these tests.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `MAXPATHLEN` (sys/param.h): the size of `pfrt_anchor`.
pub const MAXPATHLEN: usize = 1024;
/// `PF_TABLE_NAME_SIZE` (netpfil/pf/pf.h): the size of `pfrt_name`.
pub const PF_TABLE_NAME_SIZE: usize = 32;
/// FreeBSD's address families (sys/socket.h). Constants, not `libc::AF_*`, so the encoding
/// tested on Linux (where AF_INET6 is 10) is FreeBSD's.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 28;

/// `struct pfr_addr`: one table entry. The address is in network byte order in a union of
/// `in_addr` and `in6_addr` (16 bytes, 4-byte aligned); `net` is the prefix length. `not`
/// (a negated entry) and `fback` (the kernel's feedback) must be 0 on input.
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfrAddr {
    pub addr: [u8; 16],
    pub af: u8,
    pub net: u8,
    pub not: u8,
    pub fback: u8,
}

impl PfrAddr {
    /// The entry for one host (a /32 or /128).
    pub fn host(ip: IpAddr) -> PfrAddr {
        let mut addr = [0u8; 16];
        let (af, net) = match ip {
            IpAddr::V4(a) => {
                addr[..4].copy_from_slice(&a.octets());
                (AF_INET, 32)
            }
            IpAddr::V6(a) => {
                addr = a.octets();
                (AF_INET6, 128)
            }
        };
        PfrAddr {
            addr,
            af,
            net,
            not: 0,
            fback: 0,
        }
    }

    /// The address and prefix length of an entry the kernel returned; `None` for an unknown
    /// family or a prefix longer than the family's.
    pub fn net(&self) -> Option<(IpAddr, u8)> {
        match (self.af, self.net) {
            (AF_INET, n @ 0..=32) => {
                let o = [self.addr[0], self.addr[1], self.addr[2], self.addr[3]];
                Some((IpAddr::V4(Ipv4Addr::from(o)), n))
            }
            (AF_INET6, n @ 0..=128) => Some((IpAddr::V6(Ipv6Addr::from(self.addr)), n)),
            _ => None,
        }
    }

    /// The address, if the entry is one host; networks (which an administrator may add with
    /// pfctl) give `None`.
    pub fn host_ip(&self) -> Option<IpAddr> {
        match self.net()? {
            (ip @ IpAddr::V4(_), 32) | (ip @ IpAddr::V6(_), 128) => Some(ip),
            _ => None,
        }
    }
}

/// `struct pfr_table`: which table, by anchor path and name (NUL-terminated, zero-filled:
/// the kernel rejects bytes after the terminator).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PfrTable {
    pub anchor: [u8; MAXPATHLEN],
    pub name: [u8; PF_TABLE_NAME_SIZE],
    pub flags: u32,
    pub fback: u8,
}

impl PfrTable {
    pub fn new(anchor: &str, name: &str) -> Result<PfrTable, String> {
        let mut t = PfrTable {
            anchor: [0; MAXPATHLEN],
            name: [0; PF_TABLE_NAME_SIZE],
            flags: 0,
            fback: 0,
        };
        // Room for the terminator; an inner NUL would silently shorten the name.
        if anchor.len() >= MAXPATHLEN || anchor.contains('\0') {
            return Err(format!("pf anchor name {anchor:?} is not usable"));
        }
        if name.is_empty() || name.len() >= PF_TABLE_NAME_SIZE || name.contains('\0') {
            return Err(format!(
                "pf table name {name:?} must be 1 to {} bytes",
                PF_TABLE_NAME_SIZE - 1
            ));
        }
        t.anchor[..anchor.len()].copy_from_slice(anchor.as_bytes());
        t.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(t)
    }
}

/// `struct pfioc_table`: the argument of every table ioctl. `buffer` points to `size`
/// entries of `esize` bytes; the kernel reports counts in `nadd`/`ndel` and, for
/// `DIOCRGETADDRS`, the table's entry count in `size`.
#[repr(C)]
pub struct PfiocTable {
    pub table: PfrTable,
    pub buffer: *mut std::ffi::c_void,
    pub esize: i32,
    pub size: i32,
    pub size2: i32,
    pub nadd: i32,
    pub ndel: i32,
    pub nchange: i32,
    pub flags: i32,
    pub ticket: u32,
}

impl PfiocTable {
    pub fn new(table: PfrTable) -> PfiocTable {
        PfiocTable {
            table,
            buffer: std::ptr::null_mut(),
            esize: size_of::<PfrAddr>() as i32,
            size: 0,
            size2: 0,
            nadd: 0,
            ndel: 0,
            nchange: 0,
            flags: 0,
            ticket: 0,
        }
    }
}

// The header's sizes (pfvar.h, FreeBSD 13 to 15, LP64): a mismatch would make the kernel
// read or write the wrong bytes, so it is a build error.
const _: () = assert!(size_of::<PfrAddr>() == 20);
const _: () = assert!(size_of::<PfrTable>() == 1064);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(size_of::<PfiocTable>() == 1104);

/// `_IOWR(group, num, len)` of FreeBSD's sys/ioccom.h: in and out, 13 bits of length.
pub const fn iowr(group: u8, num: u8, len: usize) -> u64 {
    const IOC_INOUT: u64 = 0x4000_0000 | 0x8000_0000;
    const IOCPARM_MASK: u64 = (1 << 13) - 1;
    IOC_INOUT | (((len as u64) & IOCPARM_MASK) << 16) | ((group as u64) << 8) | num as u64
}

pub const DIOCRADDADDRS: u64 = iowr(b'D', 67, size_of::<PfiocTable>());
pub const DIOCRDELADDRS: u64 = iowr(b'D', 68, size_of::<PfiocTable>());
pub const DIOCRGETADDRS: u64 = iowr(b'D', 70, size_of::<PfiocTable>());

/// What an errno from a table ioctl means for fwlb's anchor.
pub fn table_error(op: &str, table: &str, e: &std::io::Error) -> String {
    let anchor = crate::firewall::pf::ANCHOR;
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
            size_of::<PfrAddr>()
        ),
        _ => format!("{op} <{table}> in anchor {anchor:?}: {e}"),
    }
}

/// Run `argv` (a pfctl command line from `firewall::pf`), feeding `stdin` if given.
/// Ok(stdout), or Err with the command, its exit status and what it printed on stderr.
pub fn pfctl(argv: &[String], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| "pfctl: empty command line".to_string())?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    // The pipe is dropped (closed) at the end of this statement: pfctl reads to end of
    // file. A failed write still waits for the child, so none is left behind, and its own
    // complaint (why it stopped reading) comes first.
    let fed = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => pipe.write_all(text.as_bytes()).err(),
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{prog} did not finish: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    match fed {
        Some(e) => Err(format!("cannot feed {prog}: {e}")),
        None => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
    }
}

#[cfg(target_os = "freebsd")]
pub use freebsd::Pf;

#[cfg(target_os = "freebsd")]
mod freebsd {
    use std::io;
    use std::net::IpAddr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::{
        DIOCRADDADDRS, DIOCRDELADDRS, DIOCRGETADDRS, PfiocTable, PfrAddr, PfrTable, pfctl,
        table_error,
    };
    use crate::firewall::pf as render;

    /// Largest table read at once: bans are few, and the kernel's own limit on one ioctl
    /// (`net.pf.request_maxcount`) is 65535 by default.
    const MAX_ENTRIES: usize = 65_535;

    /// fwlb's handle on pf: the /dev/pf descriptor, opened once as root.
    pub struct Pf {
        fd: OwnedFd,
    }

    impl Pf {
        /// Open /dev/pf read-write (needs root and the pf module: `kldload pf`). Do it before
        /// any chroot and keep the value: the table operations use only this descriptor.
        pub fn open() -> io::Result<Pf> {
            let path = c"/dev/pf";
            // SAFETY: `path` is a NUL-terminated string that outlives the call; open returns
            // a new descriptor or -1, and nothing else is touched.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                let hint = match e.raw_os_error() {
                    Some(libc::ENOENT) => {
                        " (pf is not loaded: kldload pf, or pf_enable=\"YES\" in /etc/rc.conf)"
                    }
                    Some(libc::EACCES | libc::EPERM) => " (fwlb must start as root)",
                    _ => "",
                };
                return Err(io::Error::new(e.kind(), format!("/dev/pf: {e}{hint}")));
            }
            // SAFETY: fd is a descriptor open() just returned, owned by nothing else.
            Ok(Pf {
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
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

        fn ioctl(&self, req: u64, io: &mut PfiocTable) -> io::Result<()> {
            // SAFETY: `io` is a live, exclusively borrowed struct laid out as the kernel's
            // struct pfioc_table (sizes asserted at build time); its buffer is null or points
            // to at least `io.size` PfrAddr entries that the caller keeps alive and borrowed
            // for this call. The kernel copies in and out within those bounds.
            let rc = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    req as libc::c_ulong,
                    io as *mut PfiocTable,
                )
            };
            if rc == -1 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }

        /// Add entries to a table of the anchor; returns how many were new.
        pub fn add_addrs(&self, table: &str, addrs: &[PfrAddr]) -> Result<usize, String> {
            self.change(DIOCRADDADDRS, "add", table, addrs)
                .map(|io| io.nadd.max(0) as usize)
        }

        /// Delete entries from a table of the anchor; returns how many were there.
        pub fn del_addrs(&self, table: &str, addrs: &[PfrAddr]) -> Result<usize, String> {
            self.change(DIOCRDELADDRS, "delete", table, addrs)
                .map(|io| io.ndel.max(0) as usize)
        }

        fn change(
            &self,
            req: u64,
            op: &str,
            table: &str,
            addrs: &[PfrAddr],
        ) -> Result<PfiocTable, String> {
            let mut buf = addrs.to_vec();
            let mut io = PfiocTable::new(PfrTable::new(render::ANCHOR, table)?);
            io.buffer = buf.as_mut_ptr().cast();
            io.size = i32::try_from(buf.len()).map_err(|_| format!("{op}: too many addresses"))?;
            self.ioctl(req, &mut io)
                .map_err(|e| table_error(op, table, &e))?;
            Ok(io)
        }

        /// Every entry of a table of the anchor.
        pub fn get_addrs(&self, table: &str) -> Result<Vec<PfrAddr>, String> {
            let empty = PfrAddr {
                addr: [0; 16],
                af: 0,
                net: 0,
                not: 0,
                fback: 0,
            };
            let mut want = 64usize;
            // The table may grow between the calls; a few rounds settle it.
            for _ in 0..4 {
                let mut buf = vec![empty; want];
                let mut io = PfiocTable::new(PfrTable::new(render::ANCHOR, table)?);
                io.buffer = buf.as_mut_ptr().cast();
                io.size = want as i32;
                self.ioctl(DIOCRGETADDRS, &mut io)
                    .map_err(|e| table_error("list", table, &e))?;
                // On return `size` is the table's entry count; the kernel fills the buffer
                // only when it fits.
                let n = usize::try_from(io.size).unwrap_or(0);
                if n <= want {
                    buf.truncate(n);
                    return Ok(buf);
                }
                if n > MAX_ENTRIES {
                    return Err(format!(
                        "list <{table}>: {n} entries, more than fwlb reads ({MAX_ENTRIES})"
                    ));
                }
                // Some headroom for entries added meanwhile, within the kernel's limit.
                want = (n + 16).min(MAX_ENTRIES);
            }
            Err(format!(
                "list <{table}>: the table kept growing while being read"
            ))
        }

        /// Add `ip` to `<fwlb_banned>` (a no-op if present) and kill its states.
        pub fn ban(&self, ip: IpAddr) -> Result<(), String> {
            self.add_addrs(render::BANNED, &[PfrAddr::host(ip)])?;
            self.kill_states(ip)
                .map_err(|e| format!("{ip} is banned, but its open connections were not cut: {e}"))
        }

        /// Remove `ip` from `<fwlb_banned>`; Ok(false) if it was not there.
        pub fn unban(&self, ip: IpAddr) -> Result<bool, String> {
            self.del_addrs(render::BANNED, &[PfrAddr::host(ip)])
                .map(|n| n > 0)
        }

        /// The banned hosts (networks added by hand with pfctl are left out).
        pub fn list_bans(&self) -> Result<Vec<IpAddr>, String> {
            Ok(self
                .get_addrs(render::BANNED)?
                .iter()
                .filter_map(PfrAddr::host_ip)
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of};

    #[test]
    fn layouts_match_pfvar_h() {
        assert_eq!(size_of::<PfrAddr>(), 20);
        assert_eq!(
            align_of::<PfrAddr>(),
            4,
            "in_addr makes the union 4-aligned"
        );
        assert_eq!(offset_of!(PfrAddr, af), 16);
        assert_eq!(offset_of!(PfrAddr, net), 17);
        assert_eq!(offset_of!(PfrAddr, not), 18);
        assert_eq!(offset_of!(PfrAddr, fback), 19);

        assert_eq!(
            size_of::<PfrTable>(),
            1064,
            "1024 + 32 + 4 + 1, padded to 4"
        );
        assert_eq!(offset_of!(PfrTable, name), 1024);
        assert_eq!(offset_of!(PfrTable, flags), 1056);
        assert_eq!(offset_of!(PfrTable, fback), 1060);

        if cfg!(target_pointer_width = "64") {
            assert_eq!(size_of::<PfiocTable>(), 1104);
            assert_eq!(offset_of!(PfiocTable, buffer), 1064);
            assert_eq!(offset_of!(PfiocTable, esize), 1072);
            assert_eq!(offset_of!(PfiocTable, size), 1076);
            assert_eq!(offset_of!(PfiocTable, nadd), 1084);
            assert_eq!(offset_of!(PfiocTable, ndel), 1088);
            assert_eq!(offset_of!(PfiocTable, flags), 1096);
            assert_eq!(offset_of!(PfiocTable, ticket), 1100);
        }
    }

    #[test]
    fn request_numbers() {
        // _IOWR('D', n, struct pfioc_table) with sizeof 1104 = 0x450, as pfctl is built.
        if cfg!(target_pointer_width = "64") {
            assert_eq!(DIOCRADDADDRS, 0xc450_4443);
            assert_eq!(DIOCRDELADDRS, 0xc450_4444);
            assert_eq!(DIOCRGETADDRS, 0xc450_4446);
        }
        // Another ioctl of the header, by the same formula: DIOCXBEGIN, _IOWR('D', 81,
        // struct pfioc_trans) with two ints and a pointer, as other pf clients hard-code it.
        assert_eq!(iowr(b'D', 81, 16), 0xc010_4451);
    }

    /// The entry's bytes as the kernel reads them.
    fn bytes(a: &PfrAddr) -> Vec<u8> {
        let mut v = a.addr.to_vec();
        v.extend([a.af, a.net, a.not, a.fback]);
        v
    }

    #[test]
    fn ipv4_entry() {
        let a = PfrAddr::host("192.0.2.7".parse().unwrap());
        assert_eq!(
            bytes(&a),
            [
                192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 32, 0, 0
            ],
            "network byte order, rest of the union zero, AF_INET, /32"
        );
        assert_eq!(a.host_ip(), Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn ipv6_entry() {
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let a = PfrAddr::host(ip);
        let mut want = vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        want.extend([28, 128, 0, 0]);
        assert_eq!(bytes(&a), want, "FreeBSD's AF_INET6 is 28 (Linux's is 10)");
        assert_eq!(a.host_ip(), Some(ip));
        // A v4-mapped address stays an IPv6 entry: pf matches families separately.
        let m = PfrAddr::host("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!((m.af, m.net), (AF_INET6, 128));
    }

    #[test]
    fn entries_from_the_kernel() {
        let mut net = PfrAddr::host("10.0.0.0".parse().unwrap());
        net.net = 8;
        assert_eq!(net.net(), Some(("10.0.0.0".parse().unwrap(), 8)));
        assert_eq!(net.host_ip(), None, "a network is not a banned host");
        let mut bad = PfrAddr::host("10.0.0.1".parse().unwrap());
        bad.net = 33;
        assert_eq!(bad.net(), None);
        bad.af = 7;
        bad.net = 32;
        assert_eq!(bad.net(), None, "unknown family");
    }

    #[test]
    fn table_names_are_checked_and_zero_filled() {
        let t = PfrTable::new("fwlb", "fwlb_banned").unwrap();
        assert_eq!(&t.anchor[..5], b"fwlb\0");
        assert!(t.anchor[4..].iter().all(|b| *b == 0));
        assert_eq!(&t.name[..12], b"fwlb_banned\0");
        assert!(t.name[11..].iter().all(|b| *b == 0));
        assert_eq!((t.flags, t.fback), (0, 0));
        assert!(PfrTable::new("fwlb", "").is_err());
        assert!(PfrTable::new("fwlb", &"x".repeat(31)).is_ok());
        assert!(
            PfrTable::new("fwlb", &"x".repeat(32)).is_err(),
            "no room for the NUL"
        );
        assert!(PfrTable::new("fw\0lb", "t").is_err());
        assert!(PfrTable::new(&"a".repeat(1024), "t").is_err());
        // The names fwlb renders fit.
        for name in [
            crate::firewall::pf::BANNED,
            crate::firewall::pf::PEERS,
            crate::firewall::pf::SERVERS,
        ] {
            assert!(
                PfrTable::new(crate::firewall::pf::ANCHOR, name).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn ioctl_argument() {
        let io = PfiocTable::new(PfrTable::new("fwlb", "fwlb_banned").unwrap());
        assert_eq!(io.esize, 20, "the kernel refuses any other esize (ENODEV)");
        assert_eq!((io.size, io.flags, io.nadd), (0, 0, 0));
        assert!(io.buffer.is_null());
    }

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
}
