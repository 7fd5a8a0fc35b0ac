//! Ethernet II frames carrying ARP for IPv4 (RFC 826), and the gratuitous ARP a new VRRP
//! master broadcasts for each virtual address (RFC 3768 §6.4.2, RFC 5798 §6.4.2) so that
//! neighbours move their cache entries to it. `ArpPacket` is the byte view and `ArpRepr` the
//! validated message (smoltcp's split). No I/O.

use std::net::Ipv4Addr;

pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet II header: destination, source, EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP for IPv4 over Ethernet: 8 fixed bytes, then two (MAC, IPv4) pairs. RFC 826.
pub const ARP_LEN: usize = 28;
/// Hardware type Ethernet. RFC 826, IANA ARP parameters.
const HTYPE_ETHERNET: u16 = 1;

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    /// HLEN and PLEN together, for the setter.
    pub const LENS: Range<usize> = 4..6;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Why bytes are not an Ethernet ARP-for-IPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    Truncated,
    /// The EtherType is not ARP (VLAN tags are not looked through).
    NotArp,
    /// Not Ethernet hardware with IPv4 protocol addresses.
    Unsupported,
}

impl Error {
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::NotArp => "not_arp",
            Error::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad ARP frame: {}", self.as_str())
    }
}

impl std::error::Error for Error {}

/// RFC 826 opcodes; others are kept so they round-trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            v => Operation::Unknown(v),
        }
    }
}

impl From<Operation> for u16 {
    fn from(op: Operation) -> u16 {
        match op {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(v) => v,
        }
    }
}

/// A view over the bytes of an ARP message (after the Ethernet header). Accessors read 0 and
/// setters do nothing on a buffer too short for their field; `new_checked` says they are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// At least the 28 bytes of Ethernet/IPv4 ARP; more is Ethernet padding.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < ARP_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn be16(&self, at: std::ops::Range<usize>) -> u16 {
        match self.buffer.as_ref().get(at) {
            Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
            _ => 0,
        }
    }

    fn mac(&self, at: std::ops::Range<usize>) -> [u8; 6] {
        self.buffer
            .as_ref()
            .get(at)
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
            .unwrap_or_default()
    }

    fn ip(&self, at: std::ops::Range<usize>) -> Ipv4Addr {
        match self.buffer.as_ref().get(at) {
            Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
            _ => Ipv4Addr::UNSPECIFIED,
        }
    }

    pub fn hardware_type(&self) -> u16 {
        self.be16(field::HTYPE)
    }

    pub fn protocol_type(&self) -> u16 {
        self.be16(field::PTYPE)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref().get(field::HLEN).copied().unwrap_or(0)
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref().get(field::PLEN).copied().unwrap_or(0)
    }

    pub fn operation(&self) -> Operation {
        self.be16(field::OPER).into()
    }

    pub fn source_hardware_addr(&self) -> [u8; 6] {
        self.mac(field::SHA)
    }

    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        self.ip(field::SPA)
    }

    pub fn target_hardware_addr(&self) -> [u8; 6] {
        self.mac(field::THA)
    }

    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        self.ip(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    fn set(&mut self, at: std::ops::Range<usize>, v: &[u8]) {
        if let Some(b) = self.buffer.as_mut().get_mut(at)
            && b.len() == v.len()
        {
            b.copy_from_slice(v);
        }
    }

    /// Ethernet hardware, IPv4 protocol, lengths 6 and 4.
    pub fn set_ethernet_ipv4(&mut self) {
        self.set(field::HTYPE, &HTYPE_ETHERNET.to_be_bytes());
        self.set(field::PTYPE, &ETHERTYPE_IPV4.to_be_bytes());
        self.set(field::LENS, &[6, 4]);
    }

    pub fn set_operation(&mut self, op: Operation) {
        self.set(field::OPER, &u16::from(op).to_be_bytes());
    }

    pub fn set_source_hardware_addr(&mut self, v: [u8; 6]) {
        self.set(field::SHA, &v);
    }

    pub fn set_source_protocol_addr(&mut self, v: Ipv4Addr) {
        self.set(field::SPA, &v.octets());
    }

    pub fn set_target_hardware_addr(&mut self, v: [u8; 6]) {
        self.set(field::THA, &v);
    }

    pub fn set_target_protocol_addr(&mut self, v: Ipv4Addr) {
        self.set(field::TPA, &v.octets());
    }
}

/// A validated ARP message for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: Operation,
    pub source_hardware_addr: [u8; 6],
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: [u8; 6],
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, Error> {
        if packet.buffer.as_ref().len() < ARP_LEN {
            return Err(Error::Truncated);
        }
        if packet.hardware_type() != HTYPE_ETHERNET
            || packet.protocol_type() != ETHERTYPE_IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(ArpRepr {
            operation: packet.operation(),
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        ARP_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_ethernet_ipv4();
        packet.set_operation(self.operation);
        packet.set_source_hardware_addr(self.source_hardware_addr);
        packet.set_source_protocol_addr(self.source_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }

    /// An announcement of the sender's own address (sender IP = target IP, RFC 5227 §3),
    /// request or reply form.
    pub fn is_gratuitous(&self) -> bool {
        self.source_protocol_addr == self.target_protocol_addr
            && matches!(self.operation, Operation::Request | Operation::Reply)
    }
}

/// The Ethernet II header around an ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub arp: ArpRepr,
}

/// Parse an Ethernet II frame carrying ARP (trailing padding allowed).
pub fn parse_frame(frame: &[u8]) -> Result<Frame, Error> {
    let (Some(dst), Some(src), Some(&[t0, t1]), Some(body)) = (
        frame.get(0..6).and_then(|m| <[u8; 6]>::try_from(m).ok()),
        frame.get(6..12).and_then(|m| <[u8; 6]>::try_from(m).ok()),
        frame.get(12..14),
        frame.get(ETHERNET_HEADER_LEN..),
    ) else {
        return Err(Error::Truncated);
    };
    if u16::from_be_bytes([t0, t1]) != ETHERTYPE_ARP {
        return Err(Error::NotArp);
    }
    let arp = ArpRepr::parse(&ArpPacket::new_checked(body)?)?;
    Ok(Frame { dst, src, arp })
}

/// The 42-byte frame (no padding: the NIC adds it).
pub fn emit_frame(frame: &Frame) -> Vec<u8> {
    let mut buf = Vec::with_capacity(ETHERNET_HEADER_LEN + ARP_LEN);
    buf.extend_from_slice(&frame.dst);
    buf.extend_from_slice(&frame.src);
    buf.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    buf.resize(ETHERNET_HEADER_LEN + frame.arp.buffer_len(), 0);
    if let Some(body) = buf.get_mut(ETHERNET_HEADER_LEN..) {
        frame.arp.emit(&mut ArpPacket::new_unchecked(body));
    }
    buf
}

/// keepalived's gratuitous ARP for `ip` from interface (or virtual) MAC `mac`: broadcast, a
/// request with sender = target = `ip` and target MAC ff:ff:ff:ff:ff:ff (vrrp-reference.md §1.8).
pub fn gratuitous(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    emit_frame(&Frame {
        dst: BROADCAST,
        src: mac,
        arp: ArpRepr {
            operation: Operation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: BROADCAST,
            target_protocol_addr: ip,
        },
    })
}

/// The reply form (iputils `arping -A`): broadcast, a reply with sender = target = `ip` and
/// target MAC = `mac`. For neighbours that update their cache on replies only.
pub fn gratuitous_reply(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    emit_frame(&Frame {
        dst: BROADCAST,
        src: mac,
        arp: ArpRepr {
            operation: Operation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: mac,
            target_protocol_addr: ip,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0xd6, 0x34, 0x63, 0xd3, 0xda, 0x3d];
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

    /// keepalived 2.2.7's GARP for 10.77.0.10 (vrrp-reference.md §1.8).
    static GARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xd6, 0x34, 0x63, 0xd3, 0xda, 0x3d, 0x08,
        0x06, // eth
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0xd6, 0x34, 0x63, 0xd3, 0xda, 0x3d, 0x0a,
        0x4d, 0x00, 0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x4d, 0x00, 0x0a,
    ];

    #[test]
    fn deconstruct() {
        let p = ArpPacket::new_checked(&GARP[14..]).unwrap();
        assert_eq!((p.hardware_type(), p.protocol_type()), (1, 0x0800));
        assert_eq!((p.hardware_len(), p.protocol_len()), (6, 4));
        assert_eq!(p.operation(), Operation::Request);
        assert_eq!(p.source_hardware_addr(), MAC);
        assert_eq!(p.source_protocol_addr(), VIP);
        assert_eq!(p.target_hardware_addr(), BROADCAST);
        assert_eq!(p.target_protocol_addr(), VIP);
    }

    #[test]
    fn keepalived_garp() {
        assert_eq!(gratuitous(MAC, VIP), GARP);
        let f = parse_frame(&GARP).unwrap();
        assert_eq!((f.dst, f.src), (BROADCAST, MAC));
        assert!(f.arp.is_gratuitous());
        assert_eq!(f.arp.operation, Operation::Request);
        assert_eq!(emit_frame(&f), GARP);
        // Padded to the 60-byte Ethernet minimum, as received.
        let mut padded = GARP.to_vec();
        padded.resize(60, 0);
        assert_eq!(parse_frame(&padded), Ok(f));
    }

    #[test]
    fn reply_form() {
        let b = gratuitous_reply(MAC, VIP);
        assert_eq!(b.len(), 42);
        let f = parse_frame(&b).unwrap();
        assert_eq!(f.dst, BROADCAST);
        assert_eq!(f.arp.operation, Operation::Reply);
        assert_eq!(f.arp.target_hardware_addr, MAC);
        assert!(f.arp.is_gratuitous());
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_frame(&GARP[..13]), Err(Error::Truncated));
        assert_eq!(parse_frame(&GARP[..41]), Err(Error::Truncated));
        let with = |at: usize, v: u8| {
            let mut b = GARP;
            b[at] = v;
            parse_frame(&b)
        };
        assert_eq!(with(12, 0x81), Err(Error::NotArp));
        assert_eq!(with(15, 6), Err(Error::Unsupported)); // IEEE 802 hardware
        assert_eq!(with(16, 0x86), Err(Error::Unsupported));
        assert_eq!(with(18, 8), Err(Error::Unsupported));
        assert_eq!(with(19, 16), Err(Error::Unsupported));
        // An ordinary who-has is not gratuitous; an unknown opcode round-trips.
        let f = with(41, 1).unwrap();
        assert!(!f.arp.is_gratuitous());
        let f = with(21, 9).unwrap();
        assert_eq!(f.arp.operation, Operation::Unknown(9));
        assert!(!f.arp.is_gratuitous());
    }

    fn op() -> impl Strategy<Value = Operation> {
        any::<u16>().prop_map(Operation::from)
    }

    proptest! {
        #[test]
        fn round_trips(
            dst in any::<[u8; 6]>(),
            src in any::<[u8; 6]>(),
            operation in op(),
            sha in any::<[u8; 6]>(),
            spa in any::<[u8; 4]>(),
            tha in any::<[u8; 6]>(),
            tpa in any::<[u8; 4]>(),
        ) {
            let f = Frame {
                dst,
                src,
                arp: ArpRepr {
                    operation,
                    source_hardware_addr: sha,
                    source_protocol_addr: spa.into(),
                    target_hardware_addr: tha,
                    target_protocol_addr: tpa.into(),
                },
            };
            prop_assert_eq!(parse_frame(&emit_frame(&f)), Ok(f));
        }

        #[test]
        fn garp_round_trips(mac in any::<[u8; 6]>(), ip in any::<[u8; 4]>()) {
            for b in [gratuitous(mac, ip.into()), gratuitous_reply(mac, ip.into())] {
                let f = parse_frame(&b).unwrap();
                prop_assert!(f.arp.is_gratuitous());
                prop_assert_eq!(f.src, mac);
                prop_assert_eq!(f.arp.source_protocol_addr, Ipv4Addr::from(ip));
            }
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_frame(&bytes);
            let p = ArpPacket::new_unchecked(&bytes[..]);
            let _ = (p.operation(), p.target_protocol_addr(), ArpRepr::parse(&p));
        }
    }
}
