//! pf (FreeBSD): the /dev/pf table ioctls (`DIOCRADDADDRS`, `DIOCRDELADDRS`,
//! `DIOCRGETADDRS`) and the kernel structs they take. Hand-written: no kept crate wraps
//! FreeBSD's pf table ioctls portably. What fwlb does with them (its anchor, bans, pfctl for
//! rules and states) is `firewall::pf_apply`.
//!
//! `struct pfioc_table`, `pfr_table` and `pfr_addr` have kept their layout from FreeBSD 7 to
//! 15 (sys/net/pfvar.h); the sizes are asserted below. The layouts and request numbers also
//! build for Linux tests (which check them against the header's values); [`PfDevice`], which
//! opens /dev/pf and calls the kernel, is FreeBSD-only and only type-checked here: no FreeBSD
//! host runs these tests.

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
    pub fn new(anchor: &str, name: &str) -> std::io::Result<PfrTable> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let mut t = PfrTable {
            anchor: [0; MAXPATHLEN],
            name: [0; PF_TABLE_NAME_SIZE],
            flags: 0,
            fback: 0,
        };
        // Room for the terminator; an inner NUL would silently shorten the name.
        if anchor.len() >= MAXPATHLEN || anchor.contains('\0') {
            return Err(invalid(format!("pf anchor name {anchor:?} is not usable")));
        }
        if name.is_empty() || name.len() >= PF_TABLE_NAME_SIZE || name.contains('\0') {
            return Err(invalid(format!(
                "pf table name {name:?} must be 1 to {} bytes",
                PF_TABLE_NAME_SIZE - 1
            )));
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

#[cfg(target_os = "freebsd")]
pub use freebsd::PfDevice;

#[cfg(target_os = "freebsd")]
mod freebsd {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};

    use super::{DIOCRADDADDRS, DIOCRDELADDRS, DIOCRGETADDRS, PfiocTable, PfrAddr, PfrTable};

    /// Largest table read at once: the kernel's own limit on one ioctl
    /// (`net.pf.request_maxcount`) is 65535 by default.
    const MAX_ENTRIES: usize = 65_535;

    /// /dev/pf, opened once as root: the table operations need only this descriptor.
    pub struct PfDevice {
        fd: OwnedFd,
    }

    impl PfDevice {
        /// Open /dev/pf read-write (needs root and the pf module: `kldload pf`), close-on-exec.
        /// Do it before any chroot and keep the value.
        pub fn open() -> io::Result<PfDevice> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/pf")
                .map_err(|e| {
                    let hint = match e.raw_os_error() {
                        Some(libc::ENOENT) => {
                            " (pf is not loaded: kldload pf, or pf_enable=\"YES\" in /etc/rc.conf)"
                        }
                        Some(libc::EACCES | libc::EPERM) => " (fwlb must start as root)",
                        _ => "",
                    };
                    io::Error::new(e.kind(), format!("/dev/pf: {e}{hint}"))
                })?;
            Ok(PfDevice {
                fd: OwnedFd::from(file),
            })
        }

        fn ioctl(&self, req: u64, io: &mut PfiocTable) -> io::Result<()> {
            // SAFETY: `io` is a live, exclusively borrowed struct laid out as the kernel's
            // struct pfioc_table (sizes asserted at build time); its buffer is null or points
            // to at least `io.size` PfrAddr entries that the caller keeps alive and borrowed
            // for this call. The kernel copies in and out within those bounds. No kept crate
            // knows these structs (nix's ioctl macros would only wrap this same call).
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

        /// Add entries to table `table` of `anchor`; returns how many were new.
        pub fn add_addrs(&self, anchor: &str, table: &str, addrs: &[PfrAddr]) -> io::Result<usize> {
            self.change(DIOCRADDADDRS, anchor, table, addrs)
                .map(|io| io.nadd.max(0) as usize)
        }

        /// Delete entries from table `table` of `anchor`; returns how many were there.
        pub fn del_addrs(&self, anchor: &str, table: &str, addrs: &[PfrAddr]) -> io::Result<usize> {
            self.change(DIOCRDELADDRS, anchor, table, addrs)
                .map(|io| io.ndel.max(0) as usize)
        }

        fn change(
            &self,
            req: u64,
            anchor: &str,
            table: &str,
            addrs: &[PfrAddr],
        ) -> io::Result<PfiocTable> {
            let mut buf = addrs.to_vec();
            let mut io = PfiocTable::new(PfrTable::new(anchor, table)?);
            io.buffer = buf.as_mut_ptr().cast();
            io.size = i32::try_from(buf.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many addresses"))?;
            self.ioctl(req, &mut io)?;
            Ok(io)
        }

        /// Every entry of table `table` of `anchor`.
        pub fn get_addrs(&self, anchor: &str, table: &str) -> io::Result<Vec<PfrAddr>> {
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
                let mut io = PfiocTable::new(PfrTable::new(anchor, table)?);
                io.buffer = buf.as_mut_ptr().cast();
                io.size = want as i32;
                self.ioctl(DIOCRGETADDRS, &mut io)?;
                // On return `size` is the table's entry count; the kernel fills the buffer
                // only when it fits.
                let n = usize::try_from(io.size).unwrap_or(0);
                if n <= want {
                    buf.truncate(n);
                    return Ok(buf);
                }
                if n > MAX_ENTRIES {
                    return Err(io::Error::other(format!(
                        "{n} entries, more than fwlb reads ({MAX_ENTRIES})"
                    )));
                }
                // Some headroom for entries added meanwhile, within the kernel's limit.
                want = (n + 16).min(MAX_ENTRIES);
            }
            Err(io::Error::other("the table kept growing while being read"))
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
    }

    #[test]
    fn ioctl_argument() {
        let io = PfiocTable::new(PfrTable::new("fwlb", "fwlb_banned").unwrap());
        assert_eq!(io.esize, 20, "the kernel refuses any other esize (ENODEV)");
        assert_eq!((io.size, io.flags, io.nadd), (0, 0, 0));
        assert!(io.buffer.is_null());
    }
}
