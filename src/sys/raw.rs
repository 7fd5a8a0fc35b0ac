//! Raw sockets for VRRP (Linux): IP protocol 112 on one interface with the multicast group
//! joined. Over IPv4 we send our own IP header (TTL 255, as RFC 3768 §5.2.3 / RFC 5798
//! §5.1.1.3 require and keepalived sends); over IPv6 the kernel writes the header (hop limit
//! 255 by socket option, RFC 5798 §5.1.2.3) and reports the received hop limit and
//! destination as ancillary data, since an IPv6 raw socket never shows the header. And an
//! AF_PACKET socket for gratuitous ARP and unsolicited neighbour advertisements.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{
    self as nx, ControlMessage, ControlMessageOwned, LinkAddr, MsgFlags, SockaddrIn6, SockaddrLike,
    sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4).
pub const IPPROTO_VRRP: i32 = 112;
/// 224.0.0.18 (RFC 5798 §5.1.1.2).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// ff02::12 (RFC 5798 §5.1.2.2).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// A non-blocking raw IPv4 or IPv6 socket for VRRP on one interface.
pub struct VrrpSocket {
    sock: Socket,
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

/// Room for the control messages `recv_v6` asks for (IPV6_HOPLIMIT, IPV6_PKTINFO), aligned
/// as a cmsghdr must be, on the stack: no allocation per datagram.
#[repr(align(8))]
struct CmsgBuf([u8; 128]);

impl AsRawFd for VrrpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A non-blocking raw VRRP socket of `domain`, bound to interface `ifname`.
fn vrrp_socket(domain: Domain, ifname: &str) -> io::Result<Socket> {
    if ifname.contains('\0') {
        return Err(io::Error::other("interface name contains NUL"));
    }
    let ty = Type::RAW.nonblocking().cloexec();
    let sock = Socket::new(domain, ty, Some(Protocol::from(IPPROTO_VRRP)))?;
    sock.bind_device(Some(ifname.as_bytes()))?;
    Ok(sock)
}

impl VrrpSocket {
    /// Open on interface `ifname` (index `ifindex`), joined to 224.0.0.18 there.
    pub fn open_v4(ifname: &str, ifindex: u32) -> io::Result<VrrpSocket> {
        let sock = vrrp_socket(Domain::IPV4, ifname)?;
        // We build the IP header (TTL 255, TOS 0xc0) ourselves.
        sock.set_header_included_v4(true)?;
        sock.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
        // No IP_MULTICAST_IF: on a socket bound to a device the kernel sends multicast out of
        // that device (raw_sendmsg takes sk_bound_dev_if before the multicast interface).
        sock.set_multicast_ttl_v4(255)?;
        // Our own adverts must not come back as a "peer".
        sock.set_multicast_loop_v4(false)?;
        Ok(VrrpSocket { sock, ifindex })
    }

    /// Open an IPv6 socket on interface `ifname` (index `ifindex`), joined to ff02::12 there.
    /// No IPV6_CHECKSUM: the codec computes and verifies the checksum with the pseudo-header.
    pub fn open_v6(ifname: &str, ifindex: u32) -> io::Result<VrrpSocket> {
        let sock = vrrp_socket(Domain::IPV6, ifname)?;
        sock.join_multicast_v6(&GROUP_V6, ifindex)?;
        sock.set_multicast_if_v6(ifindex)?;
        sock.set_multicast_hops_v6(255)?;
        // Unicast `peers` too: the hop limit is what proves the sender is on the link.
        sock.set_unicast_hops_v6(255)?;
        // Our own adverts must not come back as a "peer".
        sock.set_multicast_loop_v6(false)?;
        sock.set_recv_hoplimit_v6(true)?;
        // socket2 has no IPV6_RECVPKTINFO; nix does.
        nx::setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)?;
        // Traffic class 0xc0 (network control), as keepalived sends.
        sock.set_tclass_v6(0xc0)?;
        // After a link comes back the link-local address is tentative (DAD) for a second;
        // without this the kernel refuses it as a source and a master would go silent.
        sock.set_freebind_v6(true)?;
        Ok(VrrpSocket { sock, ifindex })
    }

    /// Send a whole IPv4 packet (header included) to `dst`.
    pub fn send(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        self.sock
            .send_to(packet, &SockAddr::from(SocketAddrV4::new(dst, 0)))
    }

    /// Receive one IPv4 packet (header included).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.sock).read(buf)
    }

    /// Send a VRRP message (no IP header) from `src` to `dst` over IPv6 on our interface.
    /// The source is given per packet (IPV6_PKTINFO) so it is the link-local address
    /// RFC 5798 §5.1.2.1 requires, whatever the kernel's source selection would pick.
    pub fn send_v6(&self, payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> io::Result<usize> {
        let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, self.ifindex));
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: self.ifindex as _,
        };
        let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
        let iov = [IoSlice::new(payload)];
        let fd = self.sock.as_raw_fd();
        Ok(nx::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&to))?)
    }

    /// Receive one VRRP message from an IPv6 socket into `buf` (the payload: the kernel
    /// strips the IPv6 header), with its source, destination and hop limit.
    pub fn recv_v6(&self, buf: &mut [u8]) -> io::Result<Received6> {
        let mut cbuf = CmsgBuf([0; 128]);
        let mut iov = [IoSliceMut::new(buf)];
        let fd = self.sock.as_raw_fd();
        let msg = nx::recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cbuf.0), MsgFlags::empty())?;
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::other("datagram larger than the receive buffer"));
        }
        let src = msg
            .address
            .map(|a| a.ip())
            .ok_or_else(|| io::Error::other("datagram without a source address"))?;
        let mut got = Received6 {
            len: msg.bytes,
            src,
            dst: None,
            hop_limit: None,
        };
        for c in msg.cmsgs()? {
            match c {
                ControlMessageOwned::Ipv6HopLimit(h) => got.hop_limit = u8::try_from(h).ok(),
                ControlMessageOwned::Ipv6PacketInfo(p) => {
                    got.dst = Some(Ipv6Addr::from(p.ipi6_addr.s6_addr))
                }
                _ => {}
            }
        }
        Ok(got)
    }
}

/// An AF_PACKET socket bound to one interface, for gratuitous ARP (and NA) frames.
pub struct PacketSocket {
    sock: Socket,
    ifindex: u32,
    /// What `send` tells the kernel the frames carry (network order).
    protocol: u16,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A sockaddr_ll for interface `ifindex` and `protocol` (network order), with the frame's
/// destination MAC when sending.
fn link_addr(ifindex: u32, protocol: u16, dst: Option<&[u8]>) -> io::Result<LinkAddr> {
    let mut sa = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol,
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    if let Some(mac) = dst.and_then(|d| d.get(0..6)) {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(mac);
    }
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sa` is a fully initialised sockaddr_ll of `len` bytes, read (copied) by the
    // call only. Neither nix's LinkAddr nor socket2's SockAddr can be built from fields.
    unsafe { LinkAddr::from_raw((&sa as *const libc::sockaddr_ll).cast(), Some(len)) }
        .ok_or_else(|| io::Error::other("not a sockaddr_ll"))
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
        let sock = Socket::new(Domain::PACKET, Type::RAW.nonblocking().cloexec(), None)?;
        nx::bind(
            sock.as_raw_fd(),
            &link_addr(ifindex, receive.to_be(), None)?,
        )?;
        Ok(PacketSocket {
            sock,
            ifindex,
            protocol: ethertype.to_be(),
        })
    }

    /// Send a whole Ethernet frame (headers included) out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        let to = link_addr(self.ifindex, self.protocol, Some(frame))?;
        Ok(nx::sendto(
            self.sock.as_raw_fd(),
            frame,
            &to,
            MsgFlags::empty(),
        )?)
    }

    /// Receive one frame.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.sock).read(buf)
    }
}
