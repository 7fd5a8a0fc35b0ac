//! Raw sockets for VRRP (Linux): IP protocol 112 on one interface with the multicast group
//! joined. Over IPv4 we send our own IP header (TTL 255, as RFC 3768 §5.2.3 / RFC 5798
//! §5.1.1.3 require and keepalived sends); over IPv6 the kernel writes the header (hop limit
//! 255 by socket option, RFC 5798 §5.1.2.3) and reports the received hop limit and
//! destination as ancillary data, since an IPv6 raw socket never shows the header. And an
//! AF_PACKET socket for gratuitous ARP and unsolicited neighbour advertisements.

use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4).
pub const IPPROTO_VRRP: i32 = 112;
/// 224.0.0.18 (RFC 5798 §5.1.1.2).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// ff02::12 (RFC 5798 §5.1.2.2).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of type T and we pass its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

fn bind_device(fd: RawFd, ifname: &str) -> io::Result<()> {
    let name = CString::new(ifname).map_err(|_| io::Error::other("interface name contains NUL"))?;
    let bytes = name.as_bytes_with_nul();
    // SAFETY: a NUL-terminated name and its length.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            bytes.as_ptr().cast(),
            bytes.len() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// A non-blocking raw IPv4 or IPv6 socket for VRRP on one interface.
pub struct VrrpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

/// One datagram read from an IPv6 VRRP socket: the payload is in the caller's buffer; the
/// header fields the checks need come from the sender's address and the ancillary data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received6 {
    pub len: usize,
    pub src: Ipv6Addr,
    /// The destination (ff02::12, or ours in unicast mode): the checksum covers it.
    pub dst: Option<Ipv6Addr>,
    /// RFC 5798 §7.1: a receiver MUST drop an advert whose hop limit is not 255.
    pub hop_limit: Option<u8>,
}

fn sockaddr_v6(addr: Ipv6Addr, scope: u32) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data; zeroed is valid.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr = libc::in6_addr {
        s6_addr: addr.octets(),
    };
    sa.sin6_scope_id = scope;
    sa
}

impl AsRawFd for VrrpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl VrrpSocket {
    /// Open on interface `ifname` (index `ifindex`), joined to 224.0.0.18 there.
    pub fn open_v4(ifname: &str, ifindex: u32) -> io::Result<VrrpSocket> {
        // SAFETY: plain socket(2).
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                IPPROTO_VRRP,
            )
        })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let ttl: libc::c_int = 255;
        // We build the IP header (TTL 255, TOS 0xc0) ourselves.
        setopt(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, &one)?;
        bind_device(raw, ifname)?;
        let mreq = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr {
                s_addr: u32::from(GROUP_V4).to_be(),
            },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: ifindex as libc::c_int,
        };
        setopt(raw, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)?;
        setopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
        setopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &ttl)?;
        // Our own adverts must not come back as a "peer".
        setopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &zero)?;
        Ok(VrrpSocket { fd, ifindex })
    }

    /// Open an IPv6 socket on interface `ifname` (index `ifindex`), joined to ff02::12 there.
    /// No IPV6_CHECKSUM: the codec computes and verifies the checksum with the pseudo-header.
    pub fn open_v6(ifname: &str, ifindex: u32) -> io::Result<VrrpSocket> {
        // SAFETY: plain socket(2).
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                IPPROTO_VRRP,
            )
        })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let hops: libc::c_int = 255;
        let index = ifindex as libc::c_int;
        bind_device(raw, ifname)?;
        let mreq = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: GROUP_V6.octets(),
            },
            ipv6mr_interface: ifindex as _,
        };
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)?;
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index)?;
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)?;
        // Unicast `peers` too: the hop limit is what proves the sender is on the link.
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops)?;
        // Our own adverts must not come back as a "peer".
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &zero)?;
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &one)?;
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &one)?;
        // Traffic class 0xc0 (network control), as keepalived sends.
        let tclass: libc::c_int = 0xc0;
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tclass)?;
        // After a link comes back the link-local address is tentative (DAD) for a second;
        // without this the kernel refuses it as a source and a master would go silent.
        setopt(raw, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, &one)?;
        Ok(VrrpSocket { fd, ifindex })
    }

    /// Send a whole IPv4 packet (header included) to `dst`.
    pub fn send(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a buffer we own and a sockaddr_in of the right size.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Receive one IPv4 packet (header included).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into a buffer we own, within its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Send a VRRP message (no IP header) from `src` to `dst` over IPv6 on our interface.
    /// The source is given per packet (IPV6_PKTINFO) so it is the link-local address
    /// RFC 5798 §5.1.2.1 requires, whatever the kernel's source selection would pick.
    pub fn send_v6(&self, payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> io::Result<usize> {
        let mut sa = sockaddr_v6(dst, self.ifindex);
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: self.ifindex as _,
        };
        // u64 alignment is what cmsghdr needs.
        let mut cbuf = [0u64; 8];
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_name = (&mut sa as *mut libc::sockaddr_in6).cast();
        mh.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        let bytes = std::mem::size_of::<libc::in6_pktinfo>();
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = space as _;
        // SAFETY: msg_control points at 64 bytes, more than CMSG_SPACE(20) = 40; the header
        // and the in6_pktinfo written through CMSG_* stay inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                (&info as *const libc::in6_pktinfo).cast::<u8>(),
                libc::CMSG_DATA(c),
                bytes,
            );
        }
        // SAFETY: mh points at live buffers (address, payload, control) for the call.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &mh, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Receive one VRRP message from an IPv6 socket into `buf` (the payload: the kernel
    /// strips the IPv6 header), with its source, destination and hop limit.
    pub fn recv_v6(&self, buf: &mut [u8]) -> io::Result<Received6> {
        // SAFETY: sockaddr_in6 is plain data; zeroed is valid.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 16];
        // SAFETY: msghdr is plain data; all-zero is valid.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_name = (&mut sa as *mut libc::sockaddr_in6).cast();
        mh.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: mh points at live buffers of the sizes it states.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut mh, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if mh.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(io::Error::other("datagram larger than the receive buffer"));
        }
        let mut got = Received6 {
            len: n as usize,
            src: Ipv6Addr::from(sa.sin6_addr.s6_addr),
            dst: None,
            hop_limit: None,
        };
        // SAFETY: the kernel filled msg_control with well-formed headers up to
        // msg_controllen; CMSG_FIRSTHDR/NXTHDR walk only within it, and each payload is read
        // unaligned, only when its length covers the type read.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(c);
                if (*c).cmsg_level == libc::IPPROTO_IPV6 {
                    match (*c).cmsg_type {
                        libc::IPV6_HOPLIMIT if len >= std::mem::size_of::<libc::c_int>() => {
                            let h = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                            got.hop_limit = u8::try_from(h).ok();
                        }
                        libc::IPV6_PKTINFO if len >= std::mem::size_of::<libc::in6_pktinfo>() => {
                            let p = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                            got.dst = Some(Ipv6Addr::from(p.ipi6_addr.s6_addr));
                        }
                        _ => {}
                    }
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        Ok(got)
    }
}

/// An AF_PACKET socket bound to one interface, for gratuitous ARP (and NA) frames.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    /// What `send` tells the kernel the frames carry (network order).
    protocol: u16,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PacketSocket {
    /// `ethertype` in host order, e.g. 0x0806 for ARP: sends, and receives every frame of
    /// that type arriving on the interface.
    pub fn open(ifindex: u32, ethertype: u16) -> io::Result<PacketSocket> {
        Self::open_with(ifindex, ethertype, ethertype)
    }

    /// Send frames of `ethertype` (host order) and receive nothing: a socket bound to
    /// protocol 0 gets no copy of incoming traffic, which matters for IPv6 (0x86dd), where a
    /// receiving socket that is never read would take a copy of every IPv6 packet.
    pub fn open_send_only(ifindex: u32, ethertype: u16) -> io::Result<PacketSocket> {
        Self::open_with(ifindex, 0, ethertype)
    }

    fn open_with(ifindex: u32, receive: u16, ethertype: u16) -> io::Result<PacketSocket> {
        // Protocol 0 here, the one to receive only in bind(2): a socket created with a
        // protocol is hooked in at once, and binding it then unhooks it first, which waits for
        // an RCU grace period (synchronize_net, 10-20 ms). Measured in `fwlb lab`, a socket
        // opened on becoming master, on the thread that also serves clients, stalled the new
        // master's first connections by ~35 ms.
        // SAFETY: plain socket(2).
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; zeroed is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = receive.to_be();
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: a valid fd and a sockaddr_ll of the right size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket {
            fd,
            ifindex,
            protocol: ethertype.to_be(),
        })
    }

    /// Send a whole Ethernet frame (headers included) out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: sockaddr_ll is plain data; zeroed is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = self.protocol;
        sa.sll_ifindex = self.ifindex as i32;
        sa.sll_halen = 6;
        if let Some(dst) = frame.get(0..6) {
            sa.sll_addr[..6].copy_from_slice(dst);
        }
        // SAFETY: a buffer we own and a sockaddr_ll of the right size.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Receive one frame.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into a buffer we own, within its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}
