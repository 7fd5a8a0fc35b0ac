//! Link, IP and TCP headers of one captured packet, decoded in place (no copies).

/// Link types (LINKTYPE_* of the pcap and pcapng formats) we can decode.
pub(crate) const LINK_NULL: u32 = 0;
pub(crate) const LINK_ETHERNET: u32 = 1;
pub(crate) const LINK_RAW: u32 = 101;
pub(crate) const LINK_LOOP: u32 = 108;
pub(crate) const LINK_SLL: u32 = 113;
pub(crate) const LINK_IPV4: u32 = 228;
pub(crate) const LINK_IPV6: u32 = 229;
pub(crate) const LINK_SLL2: u32 = 276;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// A TCP segment. Addresses are IPv6, IPv4 as v4-mapped (`::ffff:a.b.c.d`).
pub(crate) struct Segment<'a> {
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    /// The payload bytes present in the capture: shorter than `len` under a snaplen.
    pub payload: &'a [u8],
    /// The payload length on the wire, from the IP lengths.
    pub len: u32,
}

/// Why a packet gives no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Not IP, or IP but not TCP: normal traffic, not an error.
    NotTcp,
    /// An IP fragment other than the first: no TCP header in it.
    Fragment,
    /// Headers that do not parse (cut short, bad lengths).
    Malformed,
    /// A link type or IPv6 extension header (ESP) we cannot look through.
    Unsupported,
}

type Decoded<'a> = Result<Segment<'a>, Skip>;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be128(b: &[u8], at: usize) -> Option<u128> {
    Some(u128::from_be_bytes(b.get(at..at + 16)?.try_into().ok()?))
}

/// Decode one packet captured on a link of type `link`.
pub(crate) fn decode(link: u32, p: &[u8]) -> Decoded<'_> {
    match link {
        LINK_ETHERNET => ethernet(p),
        LINK_RAW => match p.first().map(|v| v >> 4) {
            Some(4) => ipv4(p),
            Some(6) => ipv6(p),
            _ => Err(Skip::Malformed),
        },
        LINK_SLL => ethertype(be16(p, 14).ok_or(Skip::Malformed)?, p.get(16..)),
        LINK_SLL2 => ethertype(be16(p, 0).ok_or(Skip::Malformed)?, p.get(20..)),
        LINK_IPV4 => ipv4(p),
        LINK_IPV6 => ipv6(p),
        LINK_NULL | LINK_LOOP => {
            let fam = p.get(..4).ok_or(Skip::Malformed)?;
            let fam = [fam[0], fam[1], fam[2], fam[3]];
            // NULL stores the family in the capturing host's byte order, LOOP in network order.
            let v = match link {
                LINK_LOOP => u32::from_be_bytes(fam),
                _ if fam[0] == 0 && fam[1] == 0 => u32::from_be_bytes(fam),
                _ => u32::from_le_bytes(fam),
            };
            match v {
                2 => ipv4(&p[4..]),
                10 | 24 | 28 | 30 => ipv6(&p[4..]),
                _ => Err(Skip::NotTcp),
            }
        }
        _ => Err(Skip::Unsupported),
    }
}

fn ethertype(et: u16, rest: Option<&[u8]>) -> Decoded<'_> {
    let rest = rest.ok_or(Skip::Malformed)?;
    match et {
        ETH_IPV4 => ipv4(rest),
        ETH_IPV6 => ipv6(rest),
        _ => Err(Skip::NotTcp),
    }
}

fn ethernet(p: &[u8]) -> Decoded<'_> {
    let mut et = be16(p, 12).ok_or(Skip::Malformed)?;
    let mut off = 14;
    // 802.1Q, 802.1ad and the old QinQ type; a few nested tags at most.
    for _ in 0..4 {
        if !matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            break;
        }
        et = be16(p, off + 2).ok_or(Skip::Malformed)?;
        off += 4;
    }
    ethertype(et, p.get(off..))
}

fn ipv4(p: &[u8]) -> Decoded<'_> {
    let vhl = *p.first().ok_or(Skip::Malformed)?;
    let ihl = usize::from(vhl & 0x0f) * 4;
    if vhl >> 4 != 4 || ihl < 20 || p.len() < ihl {
        return Err(Skip::Malformed);
    }
    let mut total = usize::from(be16(p, 2).ok_or(Skip::Malformed)?);
    if total == 0 {
        // TSO/BIG TCP segments captured on the sending host carry total length 0.
        total = p.len();
    }
    if total < ihl {
        return Err(Skip::Malformed);
    }
    if be16(p, 6).ok_or(Skip::Malformed)? & 0x1fff != 0 {
        return Err(Skip::Fragment);
    }
    if p[9] != 6 {
        return Err(Skip::NotTcp);
    }
    let src = 0xffff_0000_0000 | u128::from(be32(p, 12).ok_or(Skip::Malformed)?);
    let dst = 0xffff_0000_0000 | u128::from(be32(p, 16).ok_or(Skip::Malformed)?);
    // Frames shorter than the minimum carry padding after the IP packet: cut at `total`.
    let seen = &p[ihl..total.min(p.len())];
    tcp(src, dst, seen, total - ihl)
}

fn ipv6(p: &[u8]) -> Decoded<'_> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let plen = usize::from(be16(p, 4).ok_or(Skip::Malformed)?);
    // Payload length 0 = jumbogram or BIG TCP: take what was captured.
    let total = if plen == 0 { p.len() } else { 40 + plen };
    let src = be128(p, 8).ok_or(Skip::Malformed)?;
    let dst = be128(p, 24).ok_or(Skip::Malformed)?;
    let mut nh = p[6];
    let mut off = 40;
    for _ in 0..8 {
        let len = match nh {
            6 => {
                let seen = p.get(off..total.min(p.len())).ok_or(Skip::Malformed)?;
                return tcp(src, dst, seen, total - off);
            }
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
            0 | 43 | 60 | 135 | 139 | 140 => {
                (usize::from(*p.get(off + 1).ok_or(Skip::Malformed)?) + 1) * 8
            }
            44 => {
                if be16(p, off + 2).ok_or(Skip::Malformed)? & 0xfff8 != 0 {
                    return Err(Skip::Fragment);
                }
                8
            }
            // Authentication header: length in 4-byte units, minus 2.
            51 => (usize::from(*p.get(off + 1).ok_or(Skip::Malformed)?) + 2) * 4,
            // ESP encrypts what follows.
            50 => return Err(Skip::Unsupported),
            _ => return Err(Skip::NotTcp),
        };
        nh = *p.get(off).ok_or(Skip::Malformed)?;
        off += len;
    }
    Err(Skip::Unsupported)
}

/// `seen` = the captured part of the IP payload, `wire` = its length on the wire.
fn tcp(src: u128, dst: u128, seen: &[u8], wire: usize) -> Decoded<'_> {
    if seen.len() < 20 {
        return Err(Skip::Malformed);
    }
    let doff = usize::from(seen[12] >> 4) * 4;
    if doff < 20 || doff > seen.len() || doff > wire {
        return Err(Skip::Malformed);
    }
    Ok(Segment {
        src,
        dst,
        sport: be16(seen, 0).ok_or(Skip::Malformed)?,
        dport: be16(seen, 2).ok_or(Skip::Malformed)?,
        seq: be32(seen, 4).ok_or(Skip::Malformed)?,
        flags: seen[13],
        payload: &seen[doff..],
        len: u32::try_from(wire - doff).map_err(|_| Skip::Malformed)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let total = (20 + 20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 7, 0, 0, 0, 0, 0x50, 0x18, 0, 0]);
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn ethernet_padding_is_cut_at_ip_length() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0, 0, 5, 0x08, 0]);
        f.extend(ipv4_tcp(b"ab"));
        f.extend_from_slice(&[0xee; 6]);
        let s = decode(LINK_ETHERNET, &f).expect("tcp");
        assert_eq!((s.sport, s.dport, s.seq, s.len), (40000, 80, 7, 2));
        assert_eq!(s.payload, b"ab");
        assert_eq!(s.src, 0xffff_0a00_0001);
    }

    #[test]
    fn fragments_and_garbage() {
        let mut p = ipv4_tcp(b"x");
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(decode(LINK_RAW, &p).err(), Some(Skip::Fragment));
        for n in 0..p.len() {
            let _ = decode(LINK_RAW, &p[..n]);
            let _ = decode(LINK_ETHERNET, &p[..n]);
            let _ = decode(LINK_SLL2, &p[..n]);
        }
        assert_eq!(decode(LINK_RAW, &[0x45, 0, 0]).err(), Some(Skip::Malformed));
        assert_eq!(decode(999, &p).err(), Some(Skip::Unsupported));
    }
}
