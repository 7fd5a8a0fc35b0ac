//! The IPv4 header (RFC 791) and the Internet checksum (RFC 1071) with the IPv4 and IPv6
//! pseudo-headers that upper layers (VRRPv3, ICMPv6) fold into theirs. smoltcp's split:
//! `Ipv4Packet` is a view over bytes, `Ipv4Repr` the validated header. No I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Header without options.
pub const HEADER_LEN: usize = 20;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Why bytes are not an IPv4 packet `Ipv4Repr` can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Fewer bytes than the header or the total length claims.
    Truncated,
    /// The version nibble is not 4.
    Version,
    /// IHL below 5 words, or a total length shorter than the header.
    HeaderLen,
    /// The header checksum does not verify.
    Checksum,
    /// A fragment: no upper layer here is ever fragmented.
    Fragment,
}

impl Error {
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::Version => "version",
            Error::HeaderLen => "header_len",
            Error::Checksum => "checksum",
            Error::Fragment => "fragment",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad IPv4 packet: {}", self.as_str())
    }
}

impl std::error::Error for Error {}

// ---- checksum ----

/// One's-complement sum of big-endian 16-bit words, an odd last byte padded with zero
/// (RFC 1071 §1). Not folded: u64 cannot overflow for any slice.
fn sum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    let mut acc: u64 = words
        .by_ref()
        .map(|w| match w {
            [hi, lo] => u64::from(u16::from_be_bytes([*hi, *lo])),
            _ => 0,
        })
        .sum();
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 0xffff.
    u16::try_from(acc).unwrap_or(0xffff)
}

/// The Internet checksum of `data` (RFC 1071): the value for a checksum field computed with
/// that field zero. Over data that holds a correct checksum it gives 0.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// As `checksum`, with a pseudo-header sum from `pseudo_header_v4`/`pseudo_header_v6` added in.
pub fn checksum_with(pseudo: u16, data: &[u8]) -> u16 {
    !fold(u64::from(pseudo) + sum(data))
}

/// Folded (not complemented) sum of the IPv4 pseudo-header: src, dst, zero, protocol,
/// upper-layer length (RFC 768, as RFC 5798 §5.2.8 uses it for VRRPv3).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u16 {
    // The zero byte and the protocol make one word.
    fold(sum(&src.octets()) + sum(&dst.octets()) + u64::from(protocol) + u64::from(len))
}

/// Folded (not complemented) sum of the IPv6 pseudo-header: src, dst, 32-bit upper-layer
/// length, three zero bytes, next header (RFC 8200 §8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u16 {
    let addrs = sum(&src.octets()) + sum(&dst.octets());
    fold(addrs + sum(&len.to_be_bytes()) + u64::from(next_header))
}

// ---- packet view ----

/// A view over the bytes of an IPv4 packet. Accessors never panic: on a buffer too short for
/// a field they read 0 and setters do nothing, but only `new_checked` says the fields are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap bytes without checking them (for `emit` into a buffer of `buffer_len` bytes).
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wrap bytes after `check_len`. The version and checksum are `Ipv4Repr::parse`'s job.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The buffer holds the whole header and the `total_len` the header claims; extra bytes
    /// (Ethernet padding) are allowed and not part of the payload.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hlen = self.header_len();
        let total = usize::from(self.total_len());
        if hlen < HEADER_LEN || total < hlen {
            return Err(Error::HeaderLen);
        }
        if len < hlen || len < total {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    fn be16(&self, at: std::ops::Range<usize>) -> u16 {
        match self.buffer.as_ref().get(at) {
            Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
            _ => 0,
        }
    }

    fn addr(&self, at: std::ops::Range<usize>) -> Ipv4Addr {
        match self.buffer.as_ref().get(at) {
            Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
            _ => Ipv4Addr::UNSPECIFIED,
        }
    }

    pub fn version(&self) -> u8 {
        self.byte(field::VER_IHL) >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.byte(field::VER_IHL) & 0x0f) * 4
    }

    /// DSCP and ECN.
    pub fn tos(&self) -> u8 {
        self.byte(field::TOS)
    }

    pub fn total_len(&self) -> u16 {
        self.be16(field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        self.be16(field::FLG_OFF) & 0x4000 != 0
    }

    pub fn more_frags(&self) -> bool {
        self.be16(field::FLG_OFF) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.be16(field::FLG_OFF) & 0x1fff) << 3
    }

    pub fn ttl(&self) -> u8 {
        self.byte(field::TTL)
    }

    pub fn protocol(&self) -> u8 {
        self.byte(field::PROTOCOL)
    }

    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        self.addr(field::SRC)
    }

    pub fn dst(&self) -> Ipv4Addr {
        self.addr(field::DST)
    }

    /// The header bytes, options included (empty when the buffer is shorter).
    pub fn header(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(..self.header_len())
            .unwrap_or_default()
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        let h = self.header();
        !h.is_empty() && checksum(h) == 0
    }

    /// The bytes between the header and `total_len` (empty when the buffer is shorter).
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.total_len());
        self.buffer
            .as_ref()
            .get(self.header_len()..end)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set_byte(&mut self, at: usize, v: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = v;
        }
    }

    fn set_bytes(&mut self, at: std::ops::Range<usize>, v: &[u8]) {
        if let Some(b) = self.buffer.as_mut().get_mut(at)
            && b.len() == v.len()
        {
            b.copy_from_slice(v);
        }
    }

    /// Version 4 and a header of `len` bytes (a multiple of 4, 20..=60).
    pub fn set_version_and_header_len(&mut self, len: usize) {
        let ihl = u8::try_from(len / 4).unwrap_or(0x0f).min(0x0f);
        self.set_byte(field::VER_IHL, 0x40 | ihl);
    }

    pub fn set_tos(&mut self, v: u8) {
        self.set_byte(field::TOS, v);
    }

    pub fn set_total_len(&mut self, v: u16) {
        self.set_bytes(field::LENGTH, &v.to_be_bytes());
    }

    pub fn set_ident(&mut self, v: u16) {
        self.set_bytes(field::IDENT, &v.to_be_bytes());
    }

    /// Flags and fragment offset all zero: DF clear, as keepalived sends adverts.
    pub fn clear_flags(&mut self) {
        self.set_bytes(field::FLG_OFF, &[0, 0]);
    }

    pub fn set_ttl(&mut self, v: u8) {
        self.set_byte(field::TTL, v);
    }

    pub fn set_protocol(&mut self, v: u8) {
        self.set_byte(field::PROTOCOL, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.set_bytes(field::CHECKSUM, &v.to_be_bytes());
    }

    pub fn set_src(&mut self, v: Ipv4Addr) {
        self.set_bytes(field::SRC, &v.octets());
    }

    pub fn set_dst(&mut self, v: Ipv4Addr) {
        self.set_bytes(field::DST, &v.octets());
    }

    /// Compute and store the header checksum; call after every other setter.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum(self.header());
        self.set_checksum(c);
    }

    /// The bytes after the header, up to the end of the buffer.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        self.buffer.as_mut().get_mut(start..).unwrap_or_default()
    }
}

// ---- repr ----

/// A validated IPv4 header. Options are skipped on parse and never emitted; fragments are
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Check version, lengths, fragmentation and the header checksum.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr, Error> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::Version);
        }
        if !packet.verify_checksum() {
            return Err(Error::Checksum);
        }
        if packet.more_frags() || packet.frag_offset() != 0 {
            return Err(Error::Fragment);
        }
        Ok(Ipv4Repr {
            src: packet.src(),
            dst: packet.dst(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            payload_len: usize::from(packet.total_len()).saturating_sub(packet.header_len()),
        })
    }

    /// Header plus payload: the buffer `emit` needs.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Write the header (no options, DF clear, checksum filled). The payload is the caller's:
    /// `payload_mut` after this call.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>, ident: u16) {
        packet.set_version_and_header_len(HEADER_LEN);
        packet.set_tos(self.tos);
        packet.set_total_len(u16::try_from(self.buffer_len()).unwrap_or(u16::MAX));
        packet.set_ident(ident);
        packet.clear_flags();
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src(self.src);
        packet.set_dst(self.dst);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// keepalived's VRRPv2 advert, IP header and payload (vrrp-reference.md §1.5).
    static PACKET_BYTES: [u8; 40] = [
        0x45, 0xc0, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xd0, 0x44, 0x0a, 0x4d, 0x00,
        0x01, 0xe0, 0x00, 0x00, 0x12, 0x21, 0x33, 0x96, 0x01, 0x01, 0x01, 0xd0, 0x26, 0x0a, 0x4d,
        0x00, 0x0a, 0x73, 0x33, 0x63, 0x72, 0x65, 0x74, 0x31, 0x32,
    ];

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: Ipv4Addr::new(10, 77, 0, 1),
            dst: Ipv4Addr::new(224, 0, 0, 18),
            protocol: 112,
            ttl: 255,
            tos: 0xc0,
            payload_len: 20,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Ipv4Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0xc0);
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.ident(), 1);
        assert!(!p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 255);
        assert_eq!(p.protocol(), 112);
        assert_eq!(p.checksum(), 0xd044);
        assert!(p.verify_checksum());
        assert_eq!(p.src(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(224, 0, 0, 18));
        assert_eq!(p.payload(), &PACKET_BYTES[20..]);
    }

    #[test]
    fn parse_and_emit() {
        let p = Ipv4Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p), Ok(repr()));
        let mut buf = vec![0u8; repr().buffer_len()];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        repr().emit(&mut p, 1);
        p.payload_mut().copy_from_slice(&PACKET_BYTES[20..]);
        assert_eq!(buf, PACKET_BYTES);
    }

    #[test]
    fn refusals() {
        let parse = |b: &[u8]| Ipv4Packet::new_checked(b).and_then(|p| Ipv4Repr::parse(&p));
        assert_eq!(parse(&PACKET_BYTES[..19]), Err(Error::Truncated));
        assert_eq!(parse(&PACKET_BYTES[..39]), Err(Error::Truncated));
        let with = |at: usize, v: u8| {
            let mut b = PACKET_BYTES;
            b[at] = v;
            b
        };
        assert_eq!(parse(&with(0, 0x44)), Err(Error::HeaderLen));
        assert_eq!(parse(&with(0, 0x65)), Err(Error::Version));
        assert_eq!(parse(&with(8, 64)), Err(Error::Checksum));
        assert_eq!(parse(&with(3, 0x13)), Err(Error::HeaderLen));
        // A fragment with a correct checksum.
        let mut frag = with(6, 0x20);
        frag[10..12].fill(0);
        let c = checksum(&frag[..20]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&frag), Err(Error::Fragment));
        // Ethernet padding after total_len is not payload.
        let mut padded = PACKET_BYTES.to_vec();
        padded.extend_from_slice(&[0; 6]);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &PACKET_BYTES[20..]);
        assert_eq!(Ipv4Repr::parse(&p), Ok(repr()));
    }

    #[test]
    fn checksums() {
        // RFC 1071 §3 example words: sum 0xddf2, checksum 0x220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), 0x220d);
        // An odd byte counts as the high half of a word.
        assert_eq!(checksum(&[0x12]), !0x1200);
        assert_eq!(checksum(&[]), 0xffff);
        // VRRPv3 over IPv4 from vrrp-reference.md §1.5: 0x4333 with the pseudo-header.
        let vrrp = [
            0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0, 0, 0x0a, 0x4d, 0x00, 0x0a,
        ];
        let ph = pseudo_header_v4(
            Ipv4Addr::new(10, 77, 0, 1),
            Ipv4Addr::new(224, 0, 0, 18),
            112,
            12,
        );
        assert_eq!(checksum_with(ph, &vrrp), 0x4333);
        // And over IPv6: 0x2b7a.
        let mut v6 = vec![0x31, 0x34, 0x96, 0x01, 0x00, 0x64, 0, 0];
        v6.extend_from_slice(&"fd77::10".parse::<Ipv6Addr>().unwrap().octets());
        let ph = pseudo_header_v6(
            "fe80::d434:63ff:fed3:da3d".parse().unwrap(),
            "ff02::12".parse().unwrap(),
            112,
            24,
        );
        assert_eq!(checksum_with(ph, &v6), 0x2b7a);
    }

    proptest! {
        #[test]
        fn round_trips(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            protocol in any::<u8>(),
            ttl in any::<u8>(),
            tos in any::<u8>(),
            ident in any::<u16>(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let r = Ipv4Repr {
                src: src.into(),
                dst: dst.into(),
                protocol,
                ttl,
                tos,
                payload_len: payload.len(),
            };
            let mut buf = vec![0u8; r.buffer_len()];
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            r.emit(&mut p, ident);
            p.payload_mut().copy_from_slice(&payload);
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&p), Ok(r));
            prop_assert_eq!(p.ident(), ident);
            prop_assert_eq!(p.payload(), &payload[..]);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let p = Ipv4Packet::new_unchecked(&bytes[..]);
            // Accessors are safe even unchecked.
            let _ = (p.payload(), p.header(), p.verify_checksum(), p.src(), p.frag_offset());
            if let Ok(p) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = Ipv4Repr::parse(&p);
            }
        }

        #[test]
        fn checksum_verifies(data in prop::collection::vec(any::<u8>(), 0..64)) {
            // Appending the checksum (on an even boundary) makes the whole sum verify.
            let mut d = data.clone();
            if d.len() % 2 == 1 {
                d.push(0);
            }
            let c = checksum(&d);
            d.extend_from_slice(&c.to_be_bytes());
            prop_assert_eq!(checksum(&d), 0);
        }
    }
}
