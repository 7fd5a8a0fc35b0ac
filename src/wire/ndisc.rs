//! IPv6 neighbour advertisements (RFC 4861 §4.4), for the unsolicited ones a new VRRPv3 master
//! sends for each IPv6 virtual address (RFC 5798 §6.4.2, RFC 4861 §7.2.6): Override set,
//! Solicited clear, the target link-layer address option carrying the MAC. `NaRepr::emit` writes
//! the ICMPv6 message, `unsolicited_na_frame` the whole Ethernet frame as keepalived sends it on
//! a packet socket; the parsers are for tests and captures. No I/O.

use std::net::Ipv6Addr;

use super::ipv4;

/// All-nodes multicast, where unsolicited advertisements go. RFC 4861 §7.2.6, RFC 4291 §2.7.1.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Ethernet address of ff02::1 (33:33 + low 32 bits). RFC 2464 §7.
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// IPv6 next header for ICMPv6. RFC 4443 §1.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// Neighbor Advertisement. RFC 4861 §4.4.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Sent and required, so a receiver knows the message was not routed. RFC 4861 §7.1.2.
pub const HOP_LIMIT: u8 = 255;
/// Target Link-Layer Address option. RFC 4861 §4.6.1.
pub const OPT_TARGET_LLADDR: u8 = 2;
/// Type, code, checksum, flags + reserved, target. RFC 4861 §4.4.
pub const NA_LEN: usize = 24;
/// The target link-layer address option for Ethernet: 1 unit of 8 bytes.
const LLADDR_OPT_LEN: usize = 8;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERNET_HEADER_LEN: usize = 14;
const IPV6_HEADER_LEN: usize = 40;

// Flag bits of the first byte after the checksum. RFC 4861 §4.4.
const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// Why bytes are not a valid neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    Truncated,
    /// Not IPv6/ICMPv6 type 136 code 0.
    NotNa,
    /// Hop limit not 255 (frame parse only).
    HopLimit,
    Checksum,
    /// An option of length 0 or running past the end. RFC 4861 §7.1.2.
    BadOption,
    /// A multicast target, or Solicited set on a multicast destination. RFC 4861 §7.1.2.
    Invalid,
}

impl Error {
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::NotNa => "not_na",
            Error::HopLimit => "hop_limit",
            Error::Checksum => "checksum",
            Error::BadOption => "bad_option",
            Error::Invalid => "invalid",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad neighbour advertisement: {}", self.as_str())
    }
}

impl std::error::Error for Error {}

/// A neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NaRepr {
    /// Set only when the sender forwards (keepalived reads the interface's forwarding sysctl).
    pub router: bool,
    pub solicited: bool,
    /// Replace the cached link-layer address: what makes neighbours follow the new master.
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// Target link-layer address option (the first one, when a message has several).
    pub lladdr: Option<[u8; 6]>,
}

fn pseudo(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> u16 {
    ipv4::pseudo_header_v6(
        src,
        dst,
        NEXT_HEADER_ICMPV6,
        u32::try_from(len).unwrap_or(u32::MAX),
    )
}

impl NaRepr {
    /// Parse an ICMPv6 message sent from `src` to `dst` (checksum over the pseudo-header,
    /// RFC 4443 §2.3). Options other than the target link-layer address are skipped.
    pub fn parse(icmp: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<NaRepr, Error> {
        let (Some(&kind), Some(&code), Some(&flags), Some(target), Some(mut opts)) = (
            icmp.first(),
            icmp.get(1),
            icmp.get(4),
            icmp.get(8..NA_LEN)
                .and_then(|t| <[u8; 16]>::try_from(t).ok()),
            icmp.get(NA_LEN..),
        ) else {
            return Err(Error::Truncated);
        };
        if kind != TYPE_NEIGHBOR_ADVERT || code != 0 {
            return Err(Error::NotNa);
        }
        if ipv4::checksum_with(pseudo(src, dst, icmp.len()), icmp) != 0 {
            return Err(Error::Checksum);
        }
        let target = Ipv6Addr::from(target);
        let solicited = flags & FLAG_SOLICITED != 0;
        if target.is_multicast() || (solicited && dst.is_multicast()) {
            return Err(Error::Invalid);
        }
        let mut lladdr = None;
        while !opts.is_empty() {
            let (Some(&t), Some(&units)) = (opts.first(), opts.get(1)) else {
                return Err(Error::BadOption);
            };
            let len = usize::from(units) * 8;
            let Some(opt) = opts.get(..len).filter(|_| len > 0) else {
                return Err(Error::BadOption);
            };
            if t == OPT_TARGET_LLADDR && lladdr.is_none() {
                lladdr = opt.get(2..8).and_then(|m| <[u8; 6]>::try_from(m).ok());
            }
            opts = opts.get(len..).unwrap_or_default();
        }
        Ok(NaRepr {
            router: flags & FLAG_ROUTER != 0,
            solicited,
            override_flag: flags & FLAG_OVERRIDE != 0,
            target,
            lladdr,
        })
    }

    pub fn buffer_len(&self) -> usize {
        NA_LEN
            + if self.lladdr.is_some() {
                LLADDR_OPT_LEN
            } else {
                0
            }
    }

    /// The ICMPv6 message from `src` to `dst`, checksum filled.
    pub fn emit(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut flags = 0;
        for (set, bit) in [
            (self.router, FLAG_ROUTER),
            (self.solicited, FLAG_SOLICITED),
            (self.override_flag, FLAG_OVERRIDE),
        ] {
            if set {
                flags |= bit;
            }
        }
        let mut b = Vec::with_capacity(self.buffer_len());
        b.extend_from_slice(&[TYPE_NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0]);
        b.extend_from_slice(&self.target.octets());
        if let Some(mac) = self.lladdr {
            b.extend_from_slice(&[OPT_TARGET_LLADDR, 1]);
            b.extend_from_slice(&mac);
        }
        let c = ipv4::checksum_with(pseudo(src, dst, b.len()), &b);
        if let Some(field) = b.get_mut(2..4) {
            field.copy_from_slice(&c.to_be_bytes());
        }
        b
    }
}

/// Parse an ICMPv6 neighbour advertisement from `src` to `dst`.
pub fn parse(icmp: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<NaRepr, Error> {
    NaRepr::parse(icmp, src, dst)
}

fn unsolicited(mac: [u8; 6], target: Ipv6Addr) -> NaRepr {
    unsolicited_as(mac, target, false)
}

fn unsolicited_as(mac: [u8; 6], target: Ipv6Addr, router: bool) -> NaRepr {
    NaRepr {
        router,
        solicited: false,
        override_flag: true,
        target,
        lladdr: Some(mac),
    }
}

/// The unsolicited advertisement for `target` owned by `mac`, as the ICMPv6 message from `src`
/// to ff02::1 (send with hop limit 255). keepalived uses the virtual address itself as `src`.
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr, src: Ipv6Addr) -> Vec<u8> {
    unsolicited(mac, target).emit(src, ALL_NODES)
}

/// The same as a whole Ethernet frame, as keepalived sends it on a packet socket: to
/// 33:33:00:00:00:01 from `mac`, IPv6 from `target` to ff02::1, hop limit 255, traffic class 0.
pub fn unsolicited_na_frame(mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    unsolicited_na_frame_as(mac, target, false)
}

/// As [`unsolicited_na_frame`], with the Router flag set when `router`: a host that forwards
/// must say so, or neighbours using the address as their default gateway drop it from their
/// default router list (RFC 4861 §7.2.5; keepalived sets it from the forwarding sysctl).
pub fn unsolicited_na_frame_as(mac: [u8; 6], target: Ipv6Addr, router: bool) -> Vec<u8> {
    let icmp = unsolicited_as(mac, target, router).emit(target, ALL_NODES);
    let mut b = Vec::with_capacity(ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + icmp.len());
    b.extend_from_slice(&ALL_NODES_MAC);
    b.extend_from_slice(&mac);
    b.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    b.extend_from_slice(&[0x60, 0, 0, 0]);
    b.extend_from_slice(&u16::try_from(icmp.len()).unwrap_or(0).to_be_bytes());
    b.extend_from_slice(&[NEXT_HEADER_ICMPV6, HOP_LIMIT]);
    b.extend_from_slice(&target.octets());
    b.extend_from_slice(&ALL_NODES.octets());
    b.extend_from_slice(&icmp);
    b
}

/// A neighbour advertisement in an Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub na: NaRepr,
}

/// Parse an Ethernet frame with IPv6 (no extension headers) carrying a neighbour
/// advertisement; trailing padding is allowed.
pub fn parse_frame(frame: &[u8]) -> Result<Frame, Error> {
    let (Some(eth_dst), Some(eth_src), Some(&[t0, t1])) = (
        frame.get(0..6).and_then(|m| <[u8; 6]>::try_from(m).ok()),
        frame.get(6..12).and_then(|m| <[u8; 6]>::try_from(m).ok()),
        frame.get(12..14),
    ) else {
        return Err(Error::Truncated);
    };
    if u16::from_be_bytes([t0, t1]) != ETHERTYPE_IPV6 {
        return Err(Error::NotNa);
    }
    let ip = frame.get(ETHERNET_HEADER_LEN..).unwrap_or_default();
    let (Some(&v), Some(&[l0, l1]), Some(&next), Some(&hop), Some(src), Some(dst)) = (
        ip.first(),
        ip.get(4..6),
        ip.get(6),
        ip.get(7),
        ip.get(8..24).and_then(|a| <[u8; 16]>::try_from(a).ok()),
        ip.get(24..40).and_then(|a| <[u8; 16]>::try_from(a).ok()),
    ) else {
        return Err(Error::Truncated);
    };
    if v >> 4 != 6 || next != NEXT_HEADER_ICMPV6 {
        return Err(Error::NotNa);
    }
    if hop != HOP_LIMIT {
        return Err(Error::HopLimit);
    }
    let end = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([l0, l1]));
    let icmp = ip.get(IPV6_HEADER_LEN..end).ok_or(Error::Truncated)?;
    let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
    Ok(Frame {
        eth_dst,
        eth_src,
        src,
        dst,
        na: NaRepr::parse(icmp, src, dst)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: [u8; 6] = [0xd6, 0x34, 0x63, 0xd3, 0xda, 0x3d];

    fn vip() -> Ipv6Addr {
        "fd77::10".parse().unwrap()
    }

    /// Built by hand from RFC 4861 §4.4 for fd77::10 at d6:34:63:d3:da:3d, checksum computed
    /// independently (Python, RFC 1071 over the RFC 8200 pseudo-header).
    static NA: [u8; 32] = [
        0x88, 0x00, 0x47, 0x4a, 0x20, 0, 0, 0, // type, code, checksum, O flag
        0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // target
        0x02, 0x01, 0xd6, 0x34, 0x63, 0xd3, 0xda, 0x3d, // target link-layer address
    ];

    #[test]
    fn emit_vector() {
        assert_eq!(unsolicited_na(MAC, vip(), vip()), NA);
        let na = parse(&NA, vip(), ALL_NODES).unwrap();
        assert_eq!(na, unsolicited(MAC, vip()));
        assert!(na.override_flag && !na.router && !na.solicited);
        // Another source address changes only the checksum.
        let ll: Ipv6Addr = "fe80::d434:63ff:fed3:da3d".parse().unwrap();
        let other = unsolicited_na(MAC, vip(), ll);
        assert_eq!(other[4..], NA[4..]);
        assert_eq!(parse(&other, ll, ALL_NODES), Ok(na));
        assert_eq!(parse(&other, vip(), ALL_NODES), Err(Error::Checksum));
    }

    #[test]
    fn frame() {
        let f = unsolicited_na_frame(MAC, vip());
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(
            f[..14],
            [
                0x33, 0x33, 0, 0, 0, 1, 0xd6, 0x34, 0x63, 0xd3, 0xda, 0x3d, 0x86, 0xdd
            ]
        );
        assert_eq!(f[14..22], [0x60, 0, 0, 0, 0, 32, 58, 255]);
        assert_eq!(f[54..], NA);
        let got = parse_frame(&f).unwrap();
        assert_eq!((got.eth_dst, got.eth_src), (ALL_NODES_MAC, MAC));
        assert_eq!((got.src, got.dst), (vip(), ALL_NODES));
        assert_eq!(got.na, unsolicited(MAC, vip()));
        let mut hop = f.clone();
        hop[21] = 64;
        assert_eq!(parse_frame(&hop), Err(Error::HopLimit));
        assert_eq!(parse_frame(&f[..85]), Err(Error::Truncated));
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 4]);
        assert_eq!(parse_frame(&padded), Ok(got));
        // A forwarding host sets the Router flag: one bit and the checksum differ.
        let r = unsolicited_na_frame_as(MAC, vip(), true);
        let got = parse_frame(&r).unwrap();
        assert!(got.na.router && got.na.override_flag && !got.na.solicited);
        assert_eq!(r[58], NA[4] | FLAG_ROUTER);
        assert_eq!((&r[..56], &r[59..]), (&f[..56], &f[59..]));
        assert_eq!(unsolicited_na_frame_as(MAC, vip(), false), f);
    }

    #[test]
    fn refusals() {
        let p = |b: &[u8]| parse(b, vip(), ALL_NODES);
        let refill = |mut b: Vec<u8>| {
            b[2..4].fill(0);
            let c = ipv4::checksum_with(pseudo(vip(), ALL_NODES, b.len()), &b);
            b[2..4].copy_from_slice(&c.to_be_bytes());
            b
        };
        assert_eq!(p(&NA[..23]), Err(Error::Truncated));
        let mut bad = NA.to_vec();
        bad[31] ^= 1;
        assert_eq!(p(&bad), Err(Error::Checksum));
        let mut ns = NA.to_vec();
        ns[0] = 135;
        assert_eq!(p(&refill(ns)), Err(Error::NotNa));
        let mut zero = NA.to_vec();
        zero[25] = 0;
        assert_eq!(p(&refill(zero)), Err(Error::BadOption));
        let mut long = NA.to_vec();
        long[25] = 2;
        assert_eq!(p(&refill(long)), Err(Error::BadOption));
        let mut solicited = NA.to_vec();
        solicited[4] |= FLAG_SOLICITED;
        assert_eq!(p(&refill(solicited)), Err(Error::Invalid));
        let mut mcast = NA.to_vec();
        mcast[8] = 0xff;
        assert_eq!(p(&refill(mcast)), Err(Error::Invalid));
        // No options: valid, no link-layer address. An unknown option is skipped.
        assert_eq!(p(&refill(NA[..24].to_vec())).map(|n| n.lladdr), Ok(None));
        let mut extra = NA[..24].to_vec();
        extra.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]);
        extra.extend_from_slice(&NA[24..]);
        assert_eq!(p(&refill(extra)).map(|n| n.lladdr), Ok(Some(MAC)));
    }

    fn v6() -> impl Strategy<Value = Ipv6Addr> {
        any::<[u8; 16]>().prop_map(Ipv6Addr::from)
    }

    proptest! {
        #[test]
        fn round_trips(
            router in any::<bool>(),
            override_flag in any::<bool>(),
            target in v6().prop_filter("unicast target", |t| !t.is_multicast()),
            lladdr in any::<Option<[u8; 6]>>(),
            src in v6(),
        ) {
            let na = NaRepr { router, solicited: false, override_flag, target, lladdr };
            let b = na.emit(src, ALL_NODES);
            prop_assert_eq!(b.len(), na.buffer_len());
            prop_assert_eq!(parse(&b, src, ALL_NODES), Ok(na));
        }

        #[test]
        fn frame_round_trips(mac in any::<[u8; 6]>(), target in v6()) {
            let f = unsolicited_na_frame(mac, target);
            let got = parse_frame(&f);
            if target.is_multicast() {
                prop_assert_eq!(got, Err(Error::Invalid));
            } else {
                prop_assert_eq!(got.map(|g| g.na), Ok(unsolicited(mac, target)));
            }
        }

        #[test]
        fn never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..120),
            src in v6(),
            dst in v6(),
        ) {
            let _ = parse(&bytes, src, dst);
            let _ = parse_frame(&bytes);
            // Past the type check, so the option walk is fuzzed too.
            let mut na = vec![TYPE_NEIGHBOR_ADVERT, 0];
            na.extend_from_slice(&bytes);
            let _ = parse(&na, src, dst);
        }
    }
}
