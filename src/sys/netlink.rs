//! rtnetlink (Linux): link state events, so a pulled cable is seen at once (freevrrpd polled
//! once a second), and adding/removing virtual addresses. Messages are built and read with
//! the rust-netlink crates (netlink-packet-route over netlink-packet-core), the socket is
//! netlink-sys's; what is left here is which messages to send and what to keep of the answers.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{
    DecodeError, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, Parseable,
    ParseableParametrized,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeader, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

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

/// An address of a link, from RTM_NEWADDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// What this module reads of an rtnetlink message. Attributes are parsed one by one and
/// those that fail are skipped: the crate's whole-message parse fails on any attribute it
/// does not know how to read (a newer kernel's), and a lost RTM_DELLINK or carrier change
/// would leave VRRP running on a dead link.
#[derive(Debug)]
enum Route {
    Link(Link),
    Addr(Addr),
    Other,
}

impl NetlinkDeserializable for Route {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Route, DecodeError> {
        // A message too short for its fixed header is skipped, not the rest of the datagram.
        let ty = header.message_type;
        Ok(match ty {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => {
                parse_link(ty, payload).map_or(Route::Other, Route::Link)
            }
            libc::RTM_NEWADDR => match parse_addr(payload) {
                Ok(Some(a)) => Route::Addr(a),
                _ => Route::Other,
            },
            _ => Route::Other,
        })
    }
}

/// Parse an RTM_NEWLINK / RTM_DELLINK payload (ifinfomsg + attributes).
fn parse_link(ty: u16, payload: &[u8]) -> Result<Link, DecodeError> {
    let header = LinkHeader::parse(payload)?;
    let mut link = Link {
        index: header.index,
        name: String::new(),
        up: ty == libc::RTM_NEWLINK && header.flags.contains(LinkFlags::Up | LinkFlags::LowerUp),
        mac: None,
        deleted: ty == libc::RTM_DELLINK,
    };
    let attrs = payload.get(LINK_HEADER_LEN..).unwrap_or_default();
    for nla in NlasIterator::new(attrs).flatten() {
        match LinkAttribute::parse_with_param(&nla, header.interface_family) {
            Ok(LinkAttribute::IfName(name)) => link.name = name,
            Ok(LinkAttribute::Address(mac)) => link.mac = mac.try_into().ok(),
            _ => {}
        }
    }
    Ok(link)
}

/// Parse an RTM_NEWADDR payload (ifaddrmsg + attributes); None without an address.
fn parse_addr(payload: &[u8]) -> Result<Option<Addr>, DecodeError> {
    let header = AddressHeader::parse(payload)?;
    let (mut local, mut address) = (None, None);
    let attrs = payload.get(ADDRESS_HEADER_LEN..).unwrap_or_default();
    for nla in NlasIterator::new(attrs).flatten() {
        match AddressAttribute::parse(&nla) {
            Ok(AddressAttribute::Local(ip)) => local = Some(ip),
            Ok(AddressAttribute::Address(ip)) => address = Some(ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address on point-to-point links.
    Ok(local.or(address).map(|addr| Addr {
        index: header.index,
        addr,
        prefix: header.prefix_len,
    }))
}

/// ifinfomsg and ifaddrmsg sizes (linux/rtnetlink.h, linux/if_addr.h): where attributes start.
const LINK_HEADER_LEN: usize = 16;
const ADDRESS_HEADER_LEN: usize = 8;

/// The messages of one netlink datagram, up to the first that cannot be read (a bad length
/// ends the walk: nothing after it can be framed).
fn messages(mut datagram: &[u8]) -> impl Iterator<Item = NetlinkMessage<Route>> + '_ {
    std::iter::from_fn(move || {
        let msg = NetlinkMessage::<Route>::deserialize(datagram).ok()?;
        let next = (msg.header.length as usize).next_multiple_of(4);
        datagram = datagram.get(next..).unwrap_or_default();
        Some(msg)
    })
}

/// The link events (RTM_NEWLINK / RTM_DELLINK) in one datagram from `Netlink::link_events`.
pub fn links(datagram: &[u8]) -> Vec<Link> {
    messages(datagram)
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(Route::Link(l)) => Some(l),
            _ => None,
        })
        .collect()
}

/// Serialize one rtnetlink request.
fn request(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

/// An RTM_NEWADDR / RTM_DELADDR request for `addr/prefix` on link `index`.
pub fn addr_request(add: bool, index: u32, addr: IpAddr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut m = AddressMessage::default();
    m.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = prefix;
    m.header.index = index;
    // An IPv6 VIP is usable at once, as keepalived adds it: DAD would keep it tentative
    // (unusable as a source, not answered for) for a second after a failover, and would
    // fail outright while the old master still holds it after a crash.
    if add && addr.is_ipv6() {
        m.header.flags = AddressHeaderFlags::Nodad;
    }
    m.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
    ];
    if add {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        request(RouteNetlinkMessage::NewAddress(m), flags, seq)
    } else {
        request(
            RouteNetlinkMessage::DelAddress(m),
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
        )
    }
}

/// An RTM_NEWLINK request setting link `index` administratively up or down (`ip link set
/// DEV up|down`): the lab pulls and restores cables with it.
pub fn link_request(index: u32, up: bool, seq: u32) -> Vec<u8> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    // Only IFF_UP changes (the change mask), to the value in flags.
    m.header.change_mask = LinkFlags::Up;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    request(
        RouteNetlinkMessage::NewLink(m),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
    )
}

/// A netlink route socket.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Netlink {
    /// `groups`: multicast groups to listen to (RTMGRP_LINK for link events), 0 for requests.
    fn open(groups: u32, nonblocking: bool) -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, groups))?;
        sock.set_non_blocking(nonblocking)?;
        Ok(Netlink { sock, seq: 1 })
    }

    /// Link events (non-blocking, for an event loop).
    pub fn link_events() -> io::Result<Netlink> {
        Self::open(libc::RTMGRP_LINK as u32, true)
    }

    /// For requests and dumps (blocking).
    pub fn requests() -> io::Result<Netlink> {
        Self::open(0, false)
    }

    /// Receive one datagram (several messages) into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(&mut &mut buf[..], 0)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Send a dump request; collect what `keep` takes of each answer until NLMSG_DONE.
    fn dump<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        keep: impl Fn(Route) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        let seq = self.next_seq();
        self.sock
            .send(&request(msg, NLM_F_REQUEST | NLM_F_DUMP, seq), 0)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for m in messages(&buf[..n]) {
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(r) => out.extend(keep(r)),
                    _ => {}
                }
            }
        }
    }

    /// Every link and its state now.
    pub fn dump_links(&mut self) -> io::Result<Vec<Link>> {
        // ifinfomsg, all zero: every family, every link.
        let get = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.dump(get, |r| match r {
            Route::Link(l) => Some(l),
            _ => None,
        })
    }

    /// Every address of every link now, in the kernel's order (primary addresses first).
    pub fn dump_addrs(&mut self) -> io::Result<Vec<Addr>> {
        // ifaddrmsg, all zero: every family.
        let get = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        self.dump(get, |r| match r {
            Route::Addr(a) => Some(a),
            _ => None,
        })
    }

    /// Send request `m` (sequence number `seq`) and wait for the kernel's answer to it.
    fn request_ack(&mut self, m: &[u8], seq: u32) -> io::Result<()> {
        self.sock.send(m, 0)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf)?;
            for msg in messages(&buf[..n]) {
                // The answer (an NLMSG_ERROR, code 0 for success) carries the request's seq.
                if let NetlinkPayload::Error(e) = msg.payload
                    && msg.header.sequence_number == seq
                {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(e.to_io()),
                    };
                }
            }
        }
    }

    /// Add `addr/prefix` to link `index` (already there: fine).
    pub fn add_addr(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let seq = self.next_seq();
        match self.request_ack(&addr_request(true, index, addr, prefix, seq), seq) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// Set link `index` administratively up or down.
    pub fn set_link(&mut self, index: u32, up: bool) -> io::Result<()> {
        let seq = self.next_seq();
        self.request_ack(&link_request(index, up, seq), seq)
    }

    /// Remove `addr/prefix` from link `index` (already gone: fine).
    pub fn del_addr(&mut self, index: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let seq = self.next_seq();
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
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::NetlinkBuffer;

    const IFF_UP: u32 = 0x1;
    const IFF_LOWER_UP: u32 = 0x10000;

    /// An RTM_NEWLINK/RTM_DELLINK as the kernel sends it, built by the crate.
    fn link_msg(ty: u16, index: u32, flags: u32, name: &str, mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::from_bits_retain(flags);
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let msg = if ty == libc::RTM_DELLINK {
            RouteNetlinkMessage::DelLink(m)
        } else {
            RouteNetlinkMessage::NewLink(m)
        };
        request(msg, 0, 0)
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_ne_bytes([b[off], b[off + 1]])
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    /// Parse a request back through the crate (the kernel's view of it).
    fn parsed(m: &[u8]) -> (NetlinkHeader, RouteNetlinkMessage) {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m).unwrap();
        match msg.payload {
            NetlinkPayload::InnerMessage(r) => (msg.header, r),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn link_events_parse() {
        let mut b = link_msg(
            libc::RTM_NEWLINK,
            3,
            IFF_UP | IFF_LOWER_UP,
            "eth0",
            Some([2, 0, 0, 0, 0, 1]),
        );
        b.extend(link_msg(libc::RTM_NEWLINK, 4, IFF_UP, "eth1", None));
        b.extend(link_msg(
            libc::RTM_DELLINK,
            5,
            IFF_UP | IFF_LOWER_UP,
            "eth2",
            None,
        ));
        let links = links(&b);
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
    fn an_attribute_that_fails_to_parse_costs_only_itself() {
        let mut m = link_msg(libc::RTM_NEWLINK, 3, IFF_UP | IFF_LOWER_UP, "eth0", None);
        // IFLA_MTU with a 1-byte value: the crate refuses it (and with it the whole message).
        m.extend_from_slice(&[5, 0, 4, 0, 0x05, 0, 0, 0]);
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        assert!(NetlinkMessage::<RouteNetlinkMessage>::deserialize(&m).is_err());
        let l = links(&m);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].name.as_str(), l[0].up), ("eth0", true));
    }

    #[test]
    fn truncated_or_garbage_never_panics() {
        let good = link_msg(
            libc::RTM_NEWLINK,
            3,
            IFF_UP,
            "eth0",
            Some([2, 0, 0, 0, 0, 1]),
        );
        for cut in 0..good.len() {
            let _ = links(&good[..cut]);
        }
        for at in 0..good.len() {
            for v in [0x00, 0x01, 0x03, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[at] = v;
                let _ = links(&bad);
            }
        }
        let mut bad = good.clone();
        bad[16 + 16] = 0xff; // attribute length
        let _ = links(&bad);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = links(&b);
            let _: Vec<_> = messages(&b).collect();
        }
    }

    #[test]
    fn addresses_parse_local_first() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = 24;
        m.header.index = 7;
        m.attributes = vec![
            AddressAttribute::Address("10.0.0.2".parse().unwrap()),
            AddressAttribute::Local(v4),
        ];
        let b = request(RouteNetlinkMessage::NewAddress(m), 0, 0);
        let got: Vec<Addr> = messages(&b)
            .filter_map(|m| match m.payload {
                NetlinkPayload::InnerMessage(Route::Addr(a)) => Some(a),
                _ => None,
            })
            .collect();
        let want = Addr {
            index: 7,
            addr: v4,
            prefix: 24,
        };
        assert_eq!(got, vec![want]);
    }

    #[test]
    fn addr_request_layout() {
        let m = addr_request(true, 7, "10.0.0.1".parse().unwrap(), 24, 9);
        assert_eq!(u32_at(&m, 0), m.len() as u32);
        assert_eq!(u16_at(&m, 4), libc::RTM_NEWADDR);
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        assert_eq!(u16_at(&m, 6), flags);
        assert_eq!(u32_at(&m, 8), 9);
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32_at(&m, 20), 7);
        let (_, r) = parsed(&m);
        let RouteNetlinkMessage::NewAddress(a) = r else {
            panic!("{r:?}")
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            a.attributes,
            vec![AddressAttribute::Local(ip), AddressAttribute::Address(ip)]
        );
        // IPv6 addresses are added without duplicate address detection; removal has no flags.
        let v6: IpAddr = "fd77::10".parse().unwrap();
        let m = addr_request(true, 7, v6, 64, 10);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 64, 0x02, 0]);
        let m = addr_request(false, 7, v6, 64, 11);
        assert_eq!(u16_at(&m, 4), libc::RTM_DELADDR);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(&m[16..20], &[libc::AF_INET6 as u8, 64, 0, 0]);
        let (_, r) = parsed(&m);
        assert!(matches!(r, RouteNetlinkMessage::DelAddress(a) if a.attributes.len() == 2));
    }

    #[test]
    fn link_request_layout() {
        let m = link_request(7, false, 4);
        assert_eq!(m.len(), 32);
        assert_eq!(u32_at(&m, 0), 32);
        assert_eq!(u16_at(&m, 4), libc::RTM_NEWLINK);
        assert_eq!(u16_at(&m, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&m, 8), 4);
        assert_eq!(u32_at(&m, 20), 7);
        assert_eq!((u32_at(&m, 24), u32_at(&m, 28)), (0, IFF_UP));
        let up = link_request(7, true, 5);
        assert_eq!(u32_at(&up, 24), IFF_UP);
        let (h, r) = parsed(&up);
        assert_eq!(h.sequence_number, 5);
        assert!(matches!(r, RouteNetlinkMessage::NewLink(l) if l.attributes.is_empty()));
    }

    #[test]
    fn dump_answers_end_at_done_or_error() {
        // NLMSG_DONE and an NLMSG_ERROR (-EPERM) as the kernel frames them.
        let mut b = link_msg(libc::RTM_NEWLINK, 3, IFF_UP, "eth0", None);
        let mut done = vec![0u8; 20];
        {
            let mut nb = NetlinkBuffer::new(&mut done[..]);
            nb.set_length(20);
            nb.set_message_type(libc::NLMSG_DONE as u16);
        }
        b.extend_from_slice(&done);
        let kinds: Vec<&str> = messages(&b)
            .map(|m| match m.payload {
                NetlinkPayload::InnerMessage(Route::Link(_)) => "link",
                NetlinkPayload::Done(_) => "done",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["link", "done"]);
        let mut err = vec![0u8; 36];
        {
            let mut nb = NetlinkBuffer::new(&mut err[..]);
            nb.set_length(36);
            nb.set_message_type(libc::NLMSG_ERROR as u16);
            nb.set_sequence_number(9);
        }
        err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        let m: Vec<_> = messages(&err).collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].header.sequence_number, 9);
        let NetlinkPayload::Error(e) = &m[0].payload else {
            panic!("{:?}", m[0].payload)
        };
        assert_eq!(e.to_io().raw_os_error(), Some(libc::EPERM));
    }
}
