//! The HAProxy PROXY protocol, v1 (text) and v2 (binary), as in
//! <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>. `decode` reads a header from
//! the start of a connection's bytes; `encode_v1`/`encode_v2` write one. No I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Longest v1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;

const V1_SIG: &[u8] = b"PROXY ";
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family, length.
const V2_FIXED: usize = 16;

/// The addresses a PROXY header announces for the client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed to decide.
    Incomplete,
    /// A header of `len` bytes; `addrs` is None for v1 UNKNOWN and v2 LOCAL/UNSPEC.
    Header {
        len: usize,
        version: u8,
        addrs: Option<Addrs>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The bytes cannot start a PROXY header.
    NotProxy,
    /// A PROXY signature with a header that breaks the spec.
    Malformed(&'static str),
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::NotProxy => write!(f, "not a PROXY protocol header"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY protocol header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Decode the PROXY header at the start of `buf`. Bytes after the header (the client's data)
/// are not looked at; the caller skips `len` bytes.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProxyError> {
    match buf.first() {
        None => Ok(Decoded::Incomplete),
        Some(b'P') => decode_v1(buf),
        Some(b'\r') => decode_v2(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Incomplete while `buf` is a strict prefix of `sig`, NotProxy once it differs; None when
/// the whole signature is there.
fn signature(buf: &[u8], sig: &[u8]) -> Option<Result<Decoded, ProxyError>> {
    let n = buf.len().min(sig.len());
    if buf.get(..n) != sig.get(..n) {
        return Some(Err(ProxyError::NotProxy));
    }
    (buf.len() < sig.len()).then_some(Ok(Decoded::Incomplete))
}

fn malformed<T>(why: &'static str) -> Result<T, ProxyError> {
    Err(ProxyError::Malformed(why))
}

// ---- v1 ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyError> {
    if let Some(r) = signature(buf, V1_SIG) {
        return r;
    }
    // The CRLF must end the header within V1_MAX bytes; nothing past that is looked at.
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or(buf);
    let rest = window.get(V1_SIG.len()..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = rest.get(..end).unwrap_or_default();
            let addrs = v1_line(line)?;
            Ok(Decoded::Header {
                len: V1_SIG.len() + end + 2,
                version: 1,
                addrs,
            })
        }
        None if buf.len() >= V1_MAX => malformed("v1 header longer than 107 bytes"),
        None => v1_partial(rest).map(|()| Decoded::Incomplete),
    }
}

/// The protocol word: TCP4, TCP6 or UNKNOWN (None).
fn v1_proto(word: &[u8]) -> Result<Option<Family>, ProxyError> {
    match word {
        b"TCP4" => Ok(Some(Family::V4)),
        b"TCP6" => Ok(Some(Family::V6)),
        b"UNKNOWN" => Ok(None),
        _ => malformed("unknown v1 protocol"),
    }
}

/// A whole v1 line after "PROXY ", CRLF excluded.
fn v1_line(line: &[u8]) -> Result<Option<Addrs>, ProxyError> {
    let mut words = line.split(|&b| b == b' ');
    let fam = v1_proto(words.next().unwrap_or_default())?;
    // UNKNOWN: the receiver ignores the rest of the line (spec §2.1).
    let Some(fam) = fam else { return Ok(None) };
    let fields: Vec<&[u8]> = words.collect();
    let [src, dst, sport, dport] = fields.as_slice() else {
        return malformed("v1 needs exactly: proto src dst sport dport");
    };
    let src = v1_addr(src, fam)?;
    let dst = v1_addr(dst, fam)?;
    let sport = v1_port(sport).ok_or(ProxyError::Malformed("bad v1 source port"))?;
    let dport = v1_port(dport).ok_or(ProxyError::Malformed("bad v1 destination port"))?;
    Ok(Some(Addrs {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
    }))
}

fn v1_addr(text: &[u8], fam: Family) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(text).map_err(|_| ProxyError::Malformed("bad v1 address"))?;
    // std rejects leading zeros in IPv4, as the spec asks (no octal confusion).
    let parsed: Option<IpAddr> = match fam {
        Family::V4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        Family::V6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    };
    match parsed {
        Some(ip) => Ok(ip),
        None if text.parse::<IpAddr>().is_ok() => malformed("v1 address family mismatch"),
        None => malformed("bad v1 address"),
    }
}

/// Decimal 0..=65535 without leading zeros (spec §2.1); `str::parse` would take "+80".
fn v1_port(text: &[u8]) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if text.len() > 1 && text.first() == Some(&b'0') {
        return None;
    }
    let n = text.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok()
}

/// Whether `rest` (after "PROXY ", no CRLF yet) can still become a valid line, so a client
/// that sends garbage is refused now rather than after 107 bytes or a timeout.
fn v1_partial(rest: &[u8]) -> Result<(), ProxyError> {
    // A final CR may be the first half of the CRLF.
    let (body, cr) = match rest.strip_suffix(b"\r") {
        Some(body) => (body, true),
        None => (rest, false),
    };
    let mut words = body.split(|&b| b == b' ');
    let proto = words.next().unwrap_or_default();
    let fields: Vec<&[u8]> = words.collect();
    if fields.is_empty() && !cr {
        // Still typing the protocol word.
        let known = [&b"TCP4"[..], b"TCP6", b"UNKNOWN"];
        return if known.iter().any(|k| k.starts_with(proto)) {
            Ok(())
        } else {
            malformed("unknown v1 protocol")
        };
    }
    let Some(fam) = v1_proto(proto)? else {
        return Ok(());
    };
    if cr && fields.len() != 4 {
        return malformed("v1 needs exactly: proto src dst sport dport");
    }
    if body.contains(&b'\r') || body.contains(&b'\n') {
        return malformed("bare CR or LF in v1 header");
    }
    let n = fields.len();
    for (i, field) in fields.iter().enumerate() {
        let whole = i + 1 < n || cr;
        match (i, whole) {
            (0 | 1, true) => {
                v1_addr(field, fam)?;
            }
            (2 | 3, true) => {
                v1_port(field).ok_or(ProxyError::Malformed("bad v1 port"))?;
            }
            (0 | 1, false) => {
                let ok = match fam {
                    Family::V4 => {
                        field.len() <= 15 && field.iter().all(|&b| b == b'.' || b.is_ascii_digit())
                    }
                    Family::V6 => {
                        field.len() <= 45
                            && field
                                .iter()
                                .all(|&b| b == b':' || b == b'.' || b.is_ascii_hexdigit())
                    }
                };
                if !ok {
                    return malformed("bad v1 address");
                }
            }
            (2 | 3, false) => {
                if field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
                    return malformed("bad v1 port");
                }
            }
            _ => return malformed("v1 needs exactly: proto src dst sport dport"),
        }
    }
    Ok(())
}

// ---- v2 ----

const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const FAM_UNSPEC: u8 = 0x00;
const FAM_TCP4: u8 = 0x11;
const FAM_TCP6: u8 = 0x21;

/// Bytes of address block a family needs; None for combinations the spec does not define.
fn v2_addr_len(fam: u8) -> Option<usize> {
    match fam {
        FAM_UNSPEC => Some(0),
        // TCP4, UDP4
        0x11 | 0x12 => Some(12),
        // TCP6, UDP6
        0x21 | 0x22 => Some(36),
        // UNIX stream, UNIX dgram
        0x31 | 0x32 => Some(216),
        _ => None,
    }
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyError> {
    if let Some(r) = signature(buf, V2_SIG) {
        return r;
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(Decoded::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return malformed("unsupported v2 version");
    }
    let cmd = ver_cmd & 0x0f;
    if cmd != CMD_LOCAL && cmd != CMD_PROXY {
        return malformed("unknown v2 command");
    }
    let Some(&fam) = buf.get(13) else {
        return Ok(Decoded::Incomplete);
    };
    // LOCAL ignores the family (spec §2.2), so only PROXY must name a known one.
    let need = if cmd == CMD_PROXY {
        v2_addr_len(fam).ok_or(ProxyError::Malformed("unknown v2 address family"))?
    } else {
        0
    };
    let Some(&[hi, lo]) = buf.get(14..V2_FIXED) else {
        return Ok(Decoded::Incomplete);
    };
    let body_len = usize::from(u16::from_be_bytes([hi, lo]));
    if body_len < need {
        return malformed("v2 length too short for the address family");
    }
    let len = V2_FIXED + body_len;
    let Some(body) = buf.get(V2_FIXED..len) else {
        return Ok(Decoded::Incomplete);
    };
    // Whatever follows the addresses is TLVs, which nothing here needs: skipped.
    let addrs = match (cmd, fam) {
        (CMD_PROXY, FAM_TCP4) => v2_tcp4(body),
        (CMD_PROXY, FAM_TCP6) => v2_tcp6(body),
        // LOCAL, UNSPEC, and the UDP/UNIX families a TCP balancer falls back on UNSPEC for
        // (the spec allows it): the real connection endpoints apply.
        _ => None,
    };
    Ok(Decoded::Header {
        len,
        version: 2,
        addrs,
    })
}

fn v2_tcp4(body: &[u8]) -> Option<Addrs> {
    let b: &[u8; 12] = body.get(..12)?.try_into().ok()?;
    let [s0, s1, s2, s3, d0, d1, d2, d3, sp0, sp1, dp0, dp1] = *b;
    Some(Addrs {
        src: SocketAddr::new(
            Ipv4Addr::new(s0, s1, s2, s3).into(),
            u16::from_be_bytes([sp0, sp1]),
        ),
        dst: SocketAddr::new(
            Ipv4Addr::new(d0, d1, d2, d3).into(),
            u16::from_be_bytes([dp0, dp1]),
        ),
    })
}

fn v2_tcp6(body: &[u8]) -> Option<Addrs> {
    let src: [u8; 16] = body.get(..16)?.try_into().ok()?;
    let dst: [u8; 16] = body.get(16..32)?.try_into().ok()?;
    let sport: [u8; 2] = body.get(32..34)?.try_into().ok()?;
    let dport: [u8; 2] = body.get(34..36)?.try_into().ok()?;
    Some(Addrs {
        src: SocketAddr::new(Ipv6Addr::from(src).into(), u16::from_be_bytes(sport)),
        dst: SocketAddr::new(Ipv6Addr::from(dst).into(), u16::from_be_bytes(dport)),
    })
}

// ---- encode ----

/// Both addresses in one family: when they differ, the IPv4 one becomes IPv4-mapped IPv6
/// (one header carries one family).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    fn v6(a: SocketAddr) -> SocketAddr {
        match a {
            SocketAddr::V4(v4) => {
                SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0).into()
            }
            v6 => v6,
        }
    }
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (v6(src), v6(dst))
    }
}

/// A v1 header ("PROXY TCP4|TCP6 src dst sport dport\r\n").
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A v2 PROXY-command header without TLVs.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = same_family(src, dst);
    let mut out = Vec::with_capacity(V2_FIXED + 36);
    out.extend_from_slice(V2_SIG);
    out.push(0x20 | CMD_PROXY);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(FAM_TCP4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            // same_family made both IPv6 here.
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(FAM_TCP6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn header(len: usize, version: u8, src: &str, dst: &str) -> Decoded {
        Decoded::Header {
            len,
            version,
            addrs: Some(Addrs {
                src: sa(src),
                dst: sa(dst),
            }),
        }
    }

    /// Every strict prefix of a valid header is Incomplete, whatever the split.
    fn all_prefixes_incomplete(full: &[u8]) {
        for n in 0..full.len() {
            assert_eq!(
                decode(&full[..n]),
                Ok(Decoded::Incomplete),
                "prefix of {n} bytes of {full:?}"
            );
        }
    }

    #[test]
    fn v1_spec_examples() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        let want = header(line.len(), 1, "192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(decode(line), Ok(want.clone()));
        assert_eq!(
            encode_v1(sa("192.168.0.1:56324"), sa("192.168.0.11:443")),
            line.to_vec()
        );
        // The client's data after the header is not part of it.
        let mut more = line.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(decode(&more), Ok(want));
        all_prefixes_incomplete(line);

        // The spec's worst cases.
        let tcp4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(tcp4.len(), 56);
        assert_eq!(
            decode(tcp4),
            Ok(header(
                56,
                1,
                "255.255.255.255:65535",
                "255.255.255.255:65535"
            ))
        );
        let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        let a6 = format!("[{f}]:65535");
        assert_eq!(decode(tcp6.as_bytes()), Ok(header(104, 1, &a6, &a6)));
        assert_eq!(encode_v1(sa(&a6), sa(&a6)), tcp6.as_bytes());
        all_prefixes_incomplete(tcp6.as_bytes());

        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            decode(unknown),
            Ok(Decoded::Header {
                len: 15,
                version: 1,
                addrs: None
            })
        );
        all_prefixes_incomplete(unknown);
        let unknown_full = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
        assert_eq!(unknown_full.len(), V1_MAX);
        assert_eq!(
            decode(unknown_full.as_bytes()),
            Ok(Decoded::Header {
                len: V1_MAX,
                version: 1,
                addrs: None
            })
        );
        all_prefixes_incomplete(unknown_full.as_bytes());
    }

    #[test]
    fn v1_tcp6_and_mixed_families() {
        let line = b"PROXY TCP6 2001:db8::1 ::1 1234 80\r\n";
        assert_eq!(
            decode(line),
            Ok(header(line.len(), 1, "[2001:db8::1]:1234", "[::1]:80"))
        );
        assert_eq!(encode_v1(sa("[2001:db8::1]:1234"), sa("[::1]:80")), line);
        // Mixed: the IPv4 side becomes IPv4-mapped IPv6.
        let mixed = encode_v1(sa("10.0.0.1:1000"), sa("[2001:db8::2]:443"));
        assert_eq!(
            mixed,
            b"PROXY TCP6 ::ffff:10.0.0.1 2001:db8::2 1000 443\r\n"
        );
        assert_eq!(
            decode(&mixed),
            Ok(header(
                mixed.len(),
                1,
                "[::ffff:10.0.0.1]:1000",
                "[2001:db8::2]:443"
            ))
        );
    }

    #[test]
    fn v1_refusals() {
        let bad = |b: &[u8]| match decode(b) {
            Err(ProxyError::Malformed(_)) => {}
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(b)),
        };
        bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n");
        bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n");
        bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 80\r\n");
        bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n");
        bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 80 80\r\n");
        bad(b"PROXY TCP4 1.2.3.4  5.6.7.8 80 80\r\n");
        bad(b"PROXY TCP4 01.2.3.4 5.6.7.8 80 80\r\n");
        bad(b"PROXY TCP4 ::1 ::1 80 80\r\n");
        bad(b"PROXY TCP6 1.2.3.4 5.6.7.8 80 80\r\n");
        bad(b"PROXY TCP5 1.2.3.4 5.6.7.8 80 80\r\n");
        bad(b"PROXY UNKNOWNX\r\n");
        bad(b"PROXY \r\n");
        // Refused before the CRLF: these can never become valid.
        bad(b"PROXY X");
        bad(b"PROXY TCP4 1.2.3.4 ::");
        bad(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 80 ");
        bad(b"PROXY TCP4 1.2.3.4\n");
        bad(b"PROXY TCP4 1.2.3.4\r");
        bad(b"PROXY TCP4 999.2.3.4 ");
        // No CRLF within 107 bytes.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'a');
        assert_eq!(
            decode(&long),
            Err(ProxyError::Malformed("v1 header longer than 107 bytes"))
        );
        long.truncate(V1_MAX - 1);
        assert_eq!(decode(&long), Ok(Decoded::Incomplete));
        // A CRLF that ends at byte 108 is too late.
        long.extend_from_slice(b"\r\n");
        assert!(matches!(decode(&long), Err(ProxyError::Malformed(_))));
    }

    #[test]
    fn not_proxy() {
        assert_eq!(decode(b""), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"P"), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"PROXY"), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"\r\n\r\n\0"), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"POST"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"PROXYTCP4"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"proxy TCP4"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"\r\n\r\nX"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"\x16\x03\x01"), Err(ProxyError::NotProxy));
        assert_eq!(
            decode(b"\r\n\r\n\0\r\nQUIT\r\x21\x11\0\x0c"),
            Err(ProxyError::NotProxy)
        );
    }

    const SIG: &[u8] = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A";

    #[test]
    fn v2_tcp4() {
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        h.extend_from_slice(&[192, 168, 0, 1, 192, 168, 0, 11]);
        h.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]); // 56324, 443
        let want = header(28, 2, "192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(decode(&h), Ok(want.clone()));
        assert_eq!(
            encode_v2(sa("192.168.0.1:56324"), sa("192.168.0.11:443")),
            h
        );
        all_prefixes_incomplete(&h);
        // Trailing client data is not part of the header.
        let mut more = h.clone();
        more.extend_from_slice(b"hello");
        assert_eq!(decode(&more), Ok(want));

        // With TLVs: ALPN "h2" and a NOOP, counted in the length and skipped.
        let mut t = SIG.to_vec();
        let tlvs: &[u8] = &[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x01, 0x00];
        t.extend_from_slice(&[0x21, 0x11]);
        t.extend_from_slice(&(12 + tlvs.len() as u16).to_be_bytes());
        t.extend_from_slice(&h[16..28]);
        t.extend_from_slice(tlvs);
        assert_eq!(
            decode(&t),
            Ok(header(t.len(), 2, "192.168.0.1:56324", "192.168.0.11:443"))
        );
        all_prefixes_incomplete(&t);
    }

    #[test]
    fn v2_tcp6() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut h = SIG.to_vec();
        h.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(&[0x04, 0xd2, 0x00, 0x50]); // 1234, 80
        let want = header(52, 2, "[2001:db8::1]:1234", "[2001:db8::2]:80");
        assert_eq!(decode(&h), Ok(want));
        assert_eq!(
            encode_v2(sa("[2001:db8::1]:1234"), sa("[2001:db8::2]:80")),
            h
        );
        all_prefixes_incomplete(&h);

        let mut t = h.clone();
        t[14..16].copy_from_slice(&(36u16 + 7).to_be_bytes());
        t.extend_from_slice(&[0x02, 0x00, 0x04, b'h', b'o', b's', b't']);
        assert_eq!(
            decode(&t),
            Ok(header(59, 2, "[2001:db8::1]:1234", "[2001:db8::2]:80"))
        );

        // Mixed families: TCP6 with the IPv4 side mapped.
        let m = encode_v2(sa("[2001:db8::1]:1234"), sa("10.1.2.3:80"));
        assert_eq!(m[13], 0x21);
        assert_eq!(
            decode(&m),
            Ok(header(52, 2, "[2001:db8::1]:1234", "[::ffff:10.1.2.3]:80"))
        );
    }

    #[test]
    fn v2_local_and_unspec() {
        let none = |len| {
            Ok(Decoded::Header {
                len,
                version: 2,
                addrs: None,
            })
        };
        let mut local = SIG.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(decode(&local), none(16));
        all_prefixes_incomplete(&local);
        // LOCAL with a family and TLVs: all ignored, endpoints are the real ones.
        let mut local_tlv = SIG.to_vec();
        local_tlv.extend_from_slice(&[0x20, 0x11, 0x00, 0x0f]);
        local_tlv.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        local_tlv.extend_from_slice(&[0x04, 0x00, 0x00]);
        assert_eq!(decode(&local_tlv), none(31));
        all_prefixes_incomplete(&local_tlv);
        // PROXY + UNSPEC, with a TLV.
        let mut unspec = SIG.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x03, 0x04, 0x00, 0x00]);
        assert_eq!(decode(&unspec), none(19));
        // UDP4 falls back on UNSPEC.
        let mut udp = SIG.to_vec();
        udp.extend_from_slice(&[0x21, 0x12, 0x00, 0x0c]);
        udp.extend_from_slice(&[0; 12]);
        assert_eq!(decode(&udp), none(28));
    }

    #[test]
    fn v2_refusals() {
        let with = |fixed: [u8; 4]| {
            let mut h = SIG.to_vec();
            h.extend_from_slice(&fixed);
            h.extend_from_slice(&[0; 64]);
            decode(&h)
        };
        let bad = |r: Result<Decoded, ProxyError>| {
            assert!(matches!(r, Err(ProxyError::Malformed(_))), "{r:?}")
        };
        bad(with([0x11, 0x11, 0, 12])); // version 1
        bad(with([0x22, 0x11, 0, 12])); // command 2
        bad(with([0x21, 0x13, 0, 12])); // transport 3
        bad(with([0x21, 0x41, 0, 12])); // family 4
        bad(with([0x21, 0x11, 0, 11])); // too short for TCP4
        bad(with([0x21, 0x21, 0, 12])); // too short for TCP6
        // Refused as soon as the bad byte is there.
        let mut early = SIG.to_vec();
        early.push(0x31);
        bad(decode(&early));
        early.pop();
        early.extend_from_slice(&[0x21, 0x21, 0x00]);
        assert_eq!(decode(&early), Ok(Decoded::Incomplete));
        early.push(0x10);
        bad(decode(&early));
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).into(), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(Ipv6Addr::from(ip).into(), p)),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(src in addr(), dst in addr(), tail in prop::collection::vec(any::<u8>(), 0..8)) {
            let want = same_family(src, dst);
            for (version, mut h) in [(1u8, encode_v1(src, dst)), (2, encode_v2(src, dst))] {
                let len = h.len();
                let max = if version == 1 { V1_MAX } else { 52 };
                prop_assert!(len <= max);
                for n in 0..len {
                    prop_assert_eq!(decode(&h[..n]), Ok(Decoded::Incomplete));
                }
                h.extend_from_slice(&tail);
                let addrs = Some(Addrs { src: want.0, dst: want.1 });
                prop_assert_eq!(decode(&h), Ok(Decoded::Header { len, version, addrs }));
            }
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn never_panics_after_signatures(
            v2 in any::<bool>(),
            bytes in prop::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut b = if v2 { SIG.to_vec() } else { V1_SIG.to_vec() };
            b.extend_from_slice(&bytes);
            let _ = decode(&b);
        }
    }
}
