//! rtnetlink (Linux): link state events, so a pulled cable is seen at once (freevrrpd polled
//! once a second), and adding/removing virtual addresses. The message codec is pure and
//! tested on bytes; the socket part is a thin wrapper.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_REPLACE: u16 = 0x100;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// ifa_flags: skip duplicate address detection (linux/if_addr.h).
const IFA_F_NODAD: u8 = 0x02;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x10000;
const RTMGRP_LINK: u32 = 0x1;

/// A link's state as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up and with carrier: what VRRP needs to run on it.
    pub up: bool,
    pub mac: Option<[u8; 6]>,
    pub deleted: bool,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Walk route attributes: (type, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)?;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty & 0x3fff, payload))
    })
}

/// One netlink message: (type, payload after the header).
pub fn messages(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u32_at(b, 0)? as usize;
        let ty = u16_at(b, 4)?;
        if len < NLMSG_HDR || len > b.len() {
            return None;
        }
        let payload = &b[NLMSG_HDR..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty, payload))
    })
}

/// Parse an RTM_NEWLINK / RTM_DELLINK payload (ifinfomsg + attributes).
pub fn parse_link(ty: u16, p: &[u8]) -> Option<Link> {
    if ty != RTM_NEWLINK && ty != RTM_DELLINK {
        return None;
    }
    let index = u32_at(p, 4)?;
    let flags = u32_at(p, 8)?;
    let mut name = String::new();
    let mut mac = None;
    for (t, v) in attrs(p.get(16..)?) {
        match t {
            IFLA_IFNAME => {
                name =
                    String::from_utf8_lossy(v.split(|&c| c == 0).next().unwrap_or(&[])).into_owned()
            }
            IFLA_ADDRESS if v.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(v);
                mac = Some(m);
            }
            _ => {}
        }
    }
    Some(Link {
        index,
        name,
        up: flags & IFF_UP != 0 && flags & IFF_LOWER_UP != 0 && ty == RTM_NEWLINK,
        mac,
        deleted: ty == RTM_DELLINK,
    })
}

/// An address of a link, from RTM_NEWADDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Parse an RTM_NEWADDR payload (ifaddrmsg + attributes).
pub fn parse_addr(ty: u16, p: &[u8]) -> Option<Addr> {
    if ty != RTM_NEWADDR {
        return None;
    }
    let family = *p.first()?;
    let prefix = *p.get(1)?;
    let index = u32_at(p, 4)?;
    let mut local = None;
    let mut address = None;
    for (t, v) in attrs(p.get(8..)?) {
        let ip = match (family as i32, v.len()) {
            (libc::AF_INET, 4) => IpAddr::from([v[0], v[1], v[2], v[3]]),
            (libc::AF_INET6, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(v);
                IpAddr::from(b)
            }
            _ => continue,
        };
        match t {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address on point-to-point links.
    Some(Addr {
        index,
        addr: local.or(address)?,
        prefix,
    })
}

/// The error code of an NLMSG_ERROR payload (0 = an ACK).
fn parse_error(p: &[u8]) -> Option<i32> {
    u32_at(p, 0).map(|e| e as i32)
}

fn header(len: usize, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m
}

fn push_attr(m: &mut Vec<u8>, ty: u16, v: &[u8]) {
    m.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(v);
    m.resize(align4(m.len()), 0);
}

/// An RTM_NEWADDR / RTM_DELADDR request for `addr/prefix` on link `index`.
pub fn addr_request(add: bool, index: u32, addr: IpAddr, prefix: u8, seq: u32) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let flags = NLM_F_REQUEST | NLM_F_ACK | if add { NLM_F_CREATE | NLM_F_REPLACE } else { 0 };
    let mut m = header(0, if add { RTM_NEWADDR } else { RTM_DELADDR }, flags, seq);
    // An IPv6 VIP is usable at once, as keepalived adds it: DAD would keep it tentative
    // (unusable as a source, not answered for) for a second after a failover, and would
    // fail outright while the old master still holds it after a crash.
    let ifa_flags = if add && addr.is_ipv6() {
        IFA_F_NODAD
    } else {
        0
    };
    // ifaddrmsg: family, prefixlen, flags, scope (universe), index
    m.extend_from_slice(&[family, prefix, ifa_flags, 0]);
    m.extend_from_slice(&index.to_ne_bytes());
    push_attr(&mut m, IFA_LOCAL, &bytes);
    push_attr(&mut m, IFA_ADDRESS, &bytes);
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// An RTM_NEWLINK request setting link `index` administratively up or down (`ip link set
/// DEV up|down`): the lab pulls and restores cables with it.
pub fn link_request(index: u32, up: bool, seq: u32) -> Vec<u8> {
    let mut m = header(0, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq);
    // ifinfomsg: family (unspec), pad, type, index, flags, change mask (only IFF_UP).
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&(if up { IFF_UP } else { 0 }).to_ne_bytes());
    m.extend_from_slice(&IFF_UP.to_ne_bytes());
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// A netlink route socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Netlink {
    /// `groups`: multicast groups to listen to (RTMGRP_LINK for link events), 0 for requests.
    fn open(groups: u32, nonblocking: bool) -> io::Result<Netlink> {
        let ty =
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_NETLINK, ty, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = groups;
        // SAFETY: a valid fd and a sockaddr_nl of the right size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 1 })
    }

    /// Link events (non-blocking, for an event loop).
    pub fn link_events() -> io::Result<Netlink> {
        Self::open(RTMGRP_LINK, true)
    }

    /// For requests and dumps (blocking).
    pub fn requests() -> io::Result<Netlink> {
        Self::open(0, false)
    }

    fn send(&self, m: &[u8]) -> io::Result<()> {
        // SAFETY: sending a buffer we own to the kernel (destination: the kernel, by default).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receive one datagram (several messages) into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into a buffer we own, within its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Send a dump request of type `ty` with request body `body`; collect what `parse` makes
    /// of each answer until NLMSG_DONE.
    fn dump<T>(
        &mut self,
        ty: u16,
        body: &[u8],
        parse: impl Fn(u16, &[u8]) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        self.seq += 1;
        let mut m = header(0, ty, NLM_F_REQUEST | NLM_F_DUMP, self.seq);
        m.extend_from_slice(body);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        self.send(&m)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for (t, p) in messages(&buf[..n]) {
                match t {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let e = parse_error(p).unwrap_or(-libc::EIO);
                        return Err(io::Error::from_raw_os_error(-e));
                    }
                    _ => out.extend(parse(t, p)),
                }
            }
        }
    }

    /// Every link and its state now.
    pub fn dump_links(&mut self) -> io::Result<Vec<Link>> {
        // ifinfomsg, all zero: every family, every link.
        self.dump(RTM_GETLINK, &[0u8; 16], parse_link)
    }

    /// Every address of every link now, in the kernel's order (primary addresses first).
    pub fn dump_addrs(&mut self) -> io::Result<Vec<Addr>> {
        // ifaddrmsg, all zero: every family.
        self.dump(RTM_GETADDR, &[0u8; 8], parse_addr)
    }

    fn request_ack(&mut self, m: &[u8], seq: u32) -> io::Result<()> {
        self.send(m)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf)?;
            for (ty, p) in messages(&buf[..n]) {
                if ty == NLMSG_ERROR && u32_at(p, 4 + 8) == Some(seq) {
                    return match parse_error(p) {
                        Some(0) => Ok(()),
                        Some(e) => Err(io::Error::from_raw_os_error(-e)),
                        None => Err(io::Error::other("short netlink error message")),
                    };
                }
            }
        }
    }

    /// Add `addr/prefix` to link `index` (already there: fine).
    pub fn add_addr(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        match self.request_ack(&addr_request(true, index, addr, prefix, seq), seq) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// Set link `index` administratively up or down.
    pub fn set_link(&mut self, index: u32, up: bool) -> io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        self.request_ack(&link_request(index, up, seq), seq)
    }

    /// Remove `addr/prefix` from link `index` (already gone: fine).
    pub fn del_addr(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        match self.request_ack(&addr_request(false, index, addr, prefix, seq), seq) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH)
                ) =>
            {
                Ok(())
            }
            r => r,
        }
    }
}

/// Enter the network namespace at `path` (e.g. /var/run/netns/NAME) on the calling thread
/// only: the lab and the namespace tests run one thread per simulated host.
pub fn enter_netns(path: &std::path::Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns on a descriptor we just opened; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_msg(ty: u16, index: u32, flags: u32, name: &str, mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut m = header(0, ty, 0, 0);
        m.extend_from_slice(&[0, 0, 1, 0]);
        m.extend_from_slice(&index.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        push_attr(&mut m, IFLA_IFNAME, &n);
        if let Some(mac) = mac {
            push_attr(&mut m, IFLA_ADDRESS, &mac);
        }
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn link_events_parse() {
        let mut b = link_msg(
            RTM_NEWLINK,
            3,
            IFF_UP | IFF_LOWER_UP,
            "eth0",
            Some([2, 0, 0, 0, 0, 1]),
        );
        b.extend(link_msg(RTM_NEWLINK, 4, IFF_UP, "eth1", None));
        b.extend(link_msg(
            RTM_DELLINK,
            5,
            IFF_UP | IFF_LOWER_UP,
            "eth2",
            None,
        ));
        let links: Vec<Link> = messages(&b).filter_map(|(t, p)| parse_link(t, p)).collect();
        assert_eq!(links.len(), 3);
        assert_eq!(
            (links[0].index, links[0].name.as_str(), links[0].up),
            (3, "eth0", true)
        );
        assert_eq!(links[0].mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(!links[1].up, "no carrier");
        assert!(links[2].deleted && !links[2].up);
    }

    #[test]
    fn truncated_or_garbage_never_panics() {
        let good = link_msg(RTM_NEWLINK, 3, IFF_UP, "eth0", None);
        for cut in 0..good.len() {
            let _: Vec<_> = messages(&good[..cut])
                .filter_map(|(t, p)| parse_link(t, p))
                .collect();
        }
        let mut bad = good.clone();
        bad[16 + 16] = 0xff; // attribute length
        let _: Vec<_> = messages(&bad)
            .filter_map(|(t, p)| parse_link(t, p))
            .collect();
    }

    #[test]
    fn addr_request_layout() {
        let m = addr_request(true, 7, "10.0.0.1".parse().unwrap(), 24, 9);
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWADDR));
        assert_eq!(u32_at(&m, 8), Some(9));
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32_at(&m, 20), Some(7));
        let a: Vec<(u16, &[u8])> = attrs(&m[24..]).collect();
        assert_eq!(
            a,
            vec![
                (IFA_LOCAL, &[10u8, 0, 0, 1][..]),
                (IFA_ADDRESS, &[10u8, 0, 0, 1][..])
            ]
        );
        // IPv6 addresses are added without duplicate address detection; removal has no flags.
        let v6: IpAddr = "fd77::10".parse().unwrap();
        let m = addr_request(true, 7, v6, 64, 10);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 64, IFA_F_NODAD, 0]);
        let m = addr_request(false, 7, v6, 64, 11);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 64, 0, 0]);
    }

    #[test]
    fn link_request_layout() {
        let m = link_request(7, false, 4);
        assert_eq!(m.len(), 32);
        assert_eq!(u32_at(&m, 0), Some(32));
        assert_eq!(u16_at(&m, 4), Some(RTM_NEWLINK));
        assert_eq!(u32_at(&m, 8), Some(4));
        assert_eq!(u32_at(&m, 20), Some(7));
        assert_eq!((u32_at(&m, 24), u32_at(&m, 28)), (Some(0), Some(IFF_UP)));
        let up = link_request(7, true, 5);
        assert_eq!(u32_at(&up, 24), Some(IFF_UP));
    }
}
