//! VRRP advertisements: VRRPv2 (RFC 3768) with no authentication or a simple password
//! (RFC 2338 auth type 1), VRRPv3 (RFC 5798, RFC 9568) over IPv4 and IPv6. No I/O.
//!
//! `parse` does the structural checks (TTL, version, type, exact length, checksum) on the
//! payload of an IP packet, `check` compares the result with the local virtual router, `emit`
//! and `emit_ipv4` write adverts. Every refusal is a `Drop` naming its reason, for a counter per
//! reason. `Packet` is the byte view and `VrrpRepr` the validated advert (smoltcp's split).
//!
//! Fuzzing: the seed corpus in `tests/fuzz_corpus/vrrp/` runs as the ordinary test
//! `tests/wire_corpus.rs`; there is no cargo-fuzz directory because it needs nightly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ipv4::{self, Ipv4Packet, Ipv4Repr};

/// IP protocol / IPv6 next header. RFC 3768 §5.2.4, RFC 5798 §5.1.1.4 and §5.1.2.4.
pub const PROTO: u8 = 112;
/// RFC 3768 §5.2.2, RFC 5798 §5.1.1.2.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// RFC 5798 §5.1.2.2.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit, sent and required. RFC 3768 §5.2.3, RFC 5798 §5.1.1.3 and §5.1.2.3.
pub const TTL: u8 = 255;
/// TOS keepalived sends (internetwork control); not checked on receive.
pub const TOS: u8 = 0xc0;
/// The only VRRP type. RFC 3768 §5.3.2, RFC 5798 §5.2.2.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Priority of the address owner. RFC 3768 §5.3.4, RFC 5798 §5.2.4.
pub const PRIO_OWNER: u8 = 255;
/// Priority of a master that stops. RFC 3768 §5.3.4, RFC 5798 §5.2.4.
pub const PRIO_STOP: u8 = 0;
/// v2 Auth Type: none. RFC 3768 §5.3.6.
pub const AUTH_NONE: u8 = 0;
/// v2 Auth Type: simple text password. RFC 2338 §5.3.6 (reserved in RFC 3768, still sent by
/// keepalived and freevrrpd).
pub const AUTH_PASSWORD: u8 = 1;
/// Fixed part, up to and including the checksum. RFC 3768 §5.1, RFC 5798 §5.1.
pub const HEADER_LEN: usize = 8;
/// v2 Authentication Data, always present. RFC 3768 §5.3.10.
pub const AUTH_LEN: usize = 8;
/// v3 Max Adver Int is 12 bits of centiseconds. RFC 5798 §5.2.7.
pub const MAX_INTERVAL_V3: u16 = 0x0fff;
/// v2 Adver Int is 8 bits of seconds. RFC 3768 §5.3.7.
pub const MAX_INTERVAL_V2_CS: u16 = 255 * 100;

mod field {
    use std::ops::Range;
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    /// v2
    pub const AUTH_TYPE: usize = 4;
    /// v2, seconds
    pub const ADVER_INT: usize = 5;
    /// v3: 4 reserved bits, 12 bits of centiseconds
    pub const MAX_ADVER_INT: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    /// The number in the version nibble.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// VRRPv2 authentication. v3 has none: a v3 advert parses with `Auth::None` and `emit` ignores
/// this field for v3.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Auth {
    None,
    /// Auth type 1: the password, zero padded to 8 bytes.
    Password([u8; 8]),
}

impl Auth {
    /// The first 8 bytes of `password`, zero padded, as keepalived and freevrrpd keep it.
    pub fn password(password: &[u8]) -> Auth {
        let mut p = [0u8; AUTH_LEN];
        for (d, s) in p.iter_mut().zip(password) {
            *d = *s;
        }
        Auth::Password(p)
    }
}

/// The password stays out of logs, even though it travels in clear.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "None"),
            Auth::Password(_) => write!(f, "Password(..)"),
        }
    }
}

/// How to checksum VRRPv3 over IPv4. RFC 5798 §5.2.8 includes the IPv4 pseudo-header
/// (keepalived, FRR); Cisco and Juniper leave it out like v2 (keepalived's
/// `v3_checksum_as_v2`). Receive accepts both; this only chooses what is sent. VRRPv2 never
/// has a pseudo-header, VRRPv3 over IPv6 always has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumMode {
    #[default]
    PseudoHeader,
    NoPseudoHeader,
}

/// Why an advert is dropped, one variant per counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Shorter than the 8-byte fixed header (or than the IP header around it).
    TooShort,
    /// VRRP version is neither 2 nor 3, or is not the one configured for this VRID.
    Version,
    /// Not an ADVERTISEMENT (or, for a whole IP packet, not IP protocol 112).
    Type,
    /// The length is not exactly the one the address count implies (CARP, truncation,
    /// trailing bytes, an IPv4 fragment).
    Length,
    /// The VRRP checksum (or, for a whole IP packet, the IPv4 header checksum) is wrong.
    Checksum,
    /// TTL / hop limit is not 255: the advert came from off-link.
    Ttl,
    /// Another virtual router's advert (normal on a shared segment).
    Vrid,
    /// v2 advert interval differs from ours.
    Interval,
    /// v2 authentication type or password differs from ours, or an unsupported auth type.
    Auth,
    /// The peer announces other virtual addresses: a configuration mismatch that leads to two
    /// masters, so the caller must log it loudly (see `addr_diff`).
    AddrMismatch,
    /// IP family problem: v2 over IPv6, source and destination of different families, an IP
    /// version that is neither 4 nor 6.
    Family,
}

impl Drop {
    pub const ALL: [Drop; 11] = [
        Drop::TooShort,
        Drop::Version,
        Drop::Type,
        Drop::Length,
        Drop::Checksum,
        Drop::Ttl,
        Drop::Vrid,
        Drop::Interval,
        Drop::Auth,
        Drop::AddrMismatch,
        Drop::Family,
    ];

    /// Counter / log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::TooShort => "too_short",
            Drop::Version => "version",
            Drop::Type => "type",
            Drop::Length => "length",
            Drop::Checksum => "checksum",
            Drop::Ttl => "ttl",
            Drop::Vrid => "vrid",
            Drop::Interval => "interval",
            Drop::Auth => "auth",
            Drop::AddrMismatch => "addr_mismatch",
            Drop::Family => "family",
        }
    }

    /// Whether `check` found a peer on our VRID configured differently from us: these break
    /// the election (both sides become master) and deserve a warning, not just a counter.
    pub fn is_misconfiguration(self) -> bool {
        matches!(
            self,
            Drop::Version | Drop::Interval | Drop::Auth | Drop::AddrMismatch
        )
    }
}

impl std::fmt::Display for Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated advert. Canonical (so `emit` then `parse` gives it back) when: v2 has IPv4
/// addresses and `interval_cs` a multiple of 100 up to 25500; v3 has `Auth::None`,
/// `interval_cs` ≤ 4095 and addresses of the family it is sent over; at most 255 addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VrrpRepr {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Centiseconds. v2: the wire's seconds × 100; v3: Max Adver Int.
    pub interval_cs: u16,
    pub auth: Auth,
    pub addrs: Vec<IpAddr>,
}

/// The local virtual router an advert is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub vrid: u8,
    pub version: Version,
    /// v2: the advert interval must equal this (RFC 3768 §7.1); None skips the check. Ignored
    /// for v3, whose backups adopt the master's interval.
    pub interval_cs: Option<u16>,
    /// v2 only.
    pub auth: &'a Auth,
    pub addrs: &'a [IpAddr],
    /// What we send. Not used by `check`: receive accepts both forms (see `checksum_form`).
    pub checksum: ChecksumMode,
}

// ---- packet view ----

/// A view over the bytes of a VRRP message. Accessors never panic: on a buffer too short for
/// a field they read 0 and setters do nothing, but only `new_checked` says the header is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap bytes without checking them (for `emit` into a buffer of `buffer_len` bytes).
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap bytes that hold at least the fixed header.
    pub fn new_checked(buffer: T) -> Result<Self, Drop> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Drop::TooShort);
        }
        Ok(Self::new_unchecked(buffer))
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

    pub fn version(&self) -> u8 {
        self.byte(field::VER_TYPE) >> 4
    }

    /// The type nibble.
    pub fn kind(&self) -> u8 {
        self.byte(field::VER_TYPE) & 0x0f
    }

    pub fn vrid(&self) -> u8 {
        self.byte(field::VRID)
    }

    pub fn priority(&self) -> u8 {
        self.byte(field::PRIORITY)
    }

    pub fn addr_count(&self) -> u8 {
        self.byte(field::COUNT)
    }

    /// v2 Auth Type.
    pub fn auth_type(&self) -> u8 {
        self.byte(field::AUTH_TYPE)
    }

    /// v2 Adver Int, seconds.
    pub fn adver_int(&self) -> u8 {
        self.byte(field::ADVER_INT)
    }

    /// v3 Max Adver Int, centiseconds (the reserved bits masked off, RFC 5798 §5.2.6).
    pub fn max_adver_int(&self) -> u16 {
        self.be16(field::MAX_ADVER_INT) & MAX_INTERVAL_V3
    }

    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// Everything after the fixed header: addresses, then (v2) Authentication Data.
    pub fn body(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..).unwrap_or_default()
    }

    /// Whether the checksum verifies, with a pseudo-header sum (`ipv4::pseudo_header_*`) or none.
    pub fn verify_checksum(&self, pseudo: Option<u16>) -> bool {
        let data = self.buffer.as_ref();
        match pseudo {
            Some(p) => ipv4::checksum_with(p, data) == 0,
            None => ipv4::checksum(data) == 0,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_byte(&mut self, at: usize, v: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = v;
        }
    }

    fn set_be16(&mut self, at: std::ops::Range<usize>, v: u16) {
        if let Some(b) = self.buffer.as_mut().get_mut(at)
            && b.len() == 2
        {
            b.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Version nibble and type ADVERTISEMENT.
    pub fn set_version(&mut self, version: Version) {
        self.set_byte(
            field::VER_TYPE,
            (version.number() << 4) | TYPE_ADVERTISEMENT,
        );
    }

    pub fn set_vrid(&mut self, v: u8) {
        self.set_byte(field::VRID, v);
    }

    pub fn set_priority(&mut self, v: u8) {
        self.set_byte(field::PRIORITY, v);
    }

    pub fn set_addr_count(&mut self, v: u8) {
        self.set_byte(field::COUNT, v);
    }

    pub fn set_auth_type(&mut self, v: u8) {
        self.set_byte(field::AUTH_TYPE, v);
    }

    pub fn set_adver_int(&mut self, v: u8) {
        self.set_byte(field::ADVER_INT, v);
    }

    /// Reserved bits zero (RFC 5798 §5.2.6), interval capped to 12 bits.
    pub fn set_max_adver_int(&mut self, cs: u16) {
        self.set_be16(field::MAX_ADVER_INT, cs.min(MAX_INTERVAL_V3));
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.set_be16(field::CHECKSUM, v);
    }

    pub fn body_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or_default()
    }

    /// Compute and store the checksum; call after every other setter.
    pub fn fill_checksum(&mut self, pseudo: Option<u16>) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let c = match pseudo {
            Some(p) => ipv4::checksum_with(p, data),
            None => ipv4::checksum(data),
        };
        self.set_checksum(c);
    }
}

// ---- repr ----

/// Source and destination must be one family: it decides the address size.
fn family(src: IpAddr, dst: IpAddr) -> Result<bool, Drop> {
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Ok(false),
        (IpAddr::V6(_), IpAddr::V6(_)) => Ok(true),
        _ => Err(Drop::Family),
    }
}

/// The pseudo-header sum for a message of `len` bytes, None when the families differ.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Option<u16> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(ipv4::pseudo_header_v4(
            s,
            d,
            PROTO,
            u16::try_from(len).unwrap_or(u16::MAX),
        )),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(ipv4::pseudo_header_v6(
            s,
            d,
            PROTO,
            u32::try_from(len).unwrap_or(u32::MAX),
        )),
        _ => None,
    }
}

fn read_addrs(bytes: &[u8], v6: bool) -> Vec<IpAddr> {
    if v6 {
        bytes
            .chunks_exact(16)
            .filter_map(|c| <[u8; 16]>::try_from(c).ok())
            .map(|o| IpAddr::V6(Ipv6Addr::from(o)))
            .collect()
    } else {
        bytes
            .chunks_exact(4)
            .filter_map(|c| <[u8; 4]>::try_from(c).ok())
            .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
            .collect()
    }
}

impl VrrpRepr {
    /// Structural checks in RFC 5798 §7.1 order, then the checksum. v3 over IPv4 passes with
    /// or without the pseudo-header. In unicast mode (no TTL check, as keepalived) pass 255.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
    ) -> Result<VrrpRepr, Drop> {
        // RFC 3768 §7.1, RFC 5798 §7.1: off-link adverts are forged or leaked.
        if ttl != TTL {
            return Err(Drop::Ttl);
        }
        let v6 = family(src, dst)?;
        let len = packet.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Drop::TooShort);
        }
        let version = match packet.version() {
            2 => Version::V2,
            3 => Version::V3,
            _ => return Err(Drop::Version),
        };
        if packet.kind() != TYPE_ADVERTISEMENT {
            return Err(Drop::Type);
        }
        if version == Version::V2 && v6 {
            return Err(Drop::Family);
        }
        // Exact length, as keepalived: this is what tells CARP (same protocol and group) apart.
        let addr_len = if v6 { 16 } else { 4 };
        let auth_len = if version == Version::V2 { AUTH_LEN } else { 0 };
        let addrs_len = usize::from(packet.addr_count()) * addr_len;
        if len != HEADER_LEN + addrs_len + auth_len {
            return Err(Drop::Length);
        }
        if checksum_form(packet, src, dst).is_none() {
            return Err(Drop::Checksum);
        }
        let body = packet.body();
        let (addrs, auth_data) = body.split_at_checked(addrs_len).ok_or(Drop::Length)?;
        let (auth, interval_cs) = match version {
            Version::V2 => {
                let auth = match packet.auth_type() {
                    // RFC 3768 §5.3.10: the data is ignored on receive.
                    AUTH_NONE => Auth::None,
                    AUTH_PASSWORD => {
                        Auth::Password(<[u8; 8]>::try_from(auth_data).map_err(|_| Drop::Length)?)
                    }
                    // AH (2) and anything else: not supported.
                    _ => return Err(Drop::Auth),
                };
                (auth, u16::from(packet.adver_int()) * 100)
            }
            Version::V3 => (Auth::None, packet.max_adver_int()),
        };
        Ok(VrrpRepr {
            version,
            vrid: packet.vrid(),
            priority: packet.priority(),
            interval_cs,
            auth,
            addrs: read_addrs(addrs, v6),
        })
    }

    /// Whether the message goes over IPv6 (v3 only: v2 is IPv4).
    fn over_v6(&self, src: IpAddr) -> bool {
        self.version == Version::V3 && src.is_ipv6()
    }

    /// The addresses written: those of the family sent over, at most 255 (the count is a byte).
    fn wire_addrs(&self, v6: bool) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs
            .iter()
            .copied()
            .filter(move |a| a.is_ipv6() == v6)
            .take(255)
    }

    /// Bytes `emit` writes; `ipv6` says whether a v3 advert goes over IPv6 (ignored for v2).
    pub fn buffer_len(&self, ipv6: bool) -> usize {
        let v6 = ipv6 && self.version == Version::V3;
        let per = if v6 { 16 } else { 4 };
        let auth = if self.version == Version::V2 {
            AUTH_LEN
        } else {
            0
        };
        HEADER_LEN + self.wire_addrs(v6).count() * per + auth
    }

    /// Write the advert into a buffer of `buffer_len(src.is_ipv6())` bytes. Addresses of the
    /// other family are left out and a v2 interval is rounded to whole seconds: a config
    /// validator refuses both before this runs.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: IpAddr,
        dst: IpAddr,
        mode: ChecksumMode,
    ) {
        let v6 = self.over_v6(src);
        let count = self.wire_addrs(v6).count();
        packet.set_version(self.version);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_addr_count(u8::try_from(count).unwrap_or(u8::MAX));
        match self.version {
            Version::V2 => {
                let (kind, data) = match self.auth {
                    Auth::None => (AUTH_NONE, [0; AUTH_LEN]),
                    Auth::Password(p) => (AUTH_PASSWORD, p),
                };
                packet.set_auth_type(kind);
                let secs = (u32::from(self.interval_cs) + 50) / 100;
                packet.set_adver_int(u8::try_from(secs).unwrap_or(u8::MAX));
                let at = count * 4;
                if let Some(d) = packet.body_mut().get_mut(at..at + AUTH_LEN) {
                    d.copy_from_slice(&data);
                }
            }
            Version::V3 => packet.set_max_adver_int(self.interval_cs),
        }
        let mut addrs = Vec::with_capacity(count * 16);
        for a in self.wire_addrs(v6) {
            match a {
                IpAddr::V4(a) => addrs.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => addrs.extend_from_slice(&a.octets()),
            }
        }
        if let Some(d) = packet.body_mut().get_mut(..addrs.len()) {
            d.copy_from_slice(&addrs);
        }
        let len = packet.buffer.as_ref().len();
        let pseudo = match (self.version, v6, mode) {
            (Version::V2, _, _) | (Version::V3, false, ChecksumMode::NoPseudoHeader) => None,
            (Version::V3, _, _) => pseudo_header(src, dst, len),
        };
        packet.fill_checksum(pseudo);
    }
}

/// Which checksum form verifies: v2 and the Cisco/Juniper v3-over-IPv4 form give
/// `NoPseudoHeader`; None when neither verifies. For a one-time notice when a peer's form
/// differs from ours.
pub fn checksum_form<T: AsRef<[u8]>>(
    packet: &Packet<T>,
    src: IpAddr,
    dst: IpAddr,
) -> Option<ChecksumMode> {
    let len = packet.buffer.as_ref().len();
    let with = || {
        pseudo_header(src, dst, len)
            .is_some_and(|p| packet.verify_checksum(Some(p)))
            .then_some(ChecksumMode::PseudoHeader)
    };
    let without = || {
        packet
            .verify_checksum(None)
            .then_some(ChecksumMode::NoPseudoHeader)
    };
    match (packet.version(), src) {
        (3, IpAddr::V6(_)) => with(),
        (3, IpAddr::V4(_)) => with().or_else(without),
        _ => without(),
    }
}

/// Parse the VRRP payload carried by an IP packet from `src` to `dst` with TTL/hop limit `ttl`.
pub fn parse(payload: &[u8], src: IpAddr, dst: IpAddr, ttl: u8) -> Result<VrrpRepr, Drop> {
    VrrpRepr::parse(&Packet::new_checked(payload)?, src, dst, ttl)
}

/// Compare an advert with the local virtual router: VRID, version, then for v2 the
/// authentication and the interval, then the address list as a set (order-insensitive, equal
/// counts). The checks after the VRID are configuration mismatches (`Drop::is_misconfiguration`).
pub fn check(repr: &VrrpRepr, expect: &Expect) -> Result<(), Drop> {
    if repr.vrid != expect.vrid {
        return Err(Drop::Vrid);
    }
    // keepalived has no mixed mode (RFC 5798 §8.4): a version per VRID.
    if repr.version != expect.version {
        return Err(Drop::Version);
    }
    if repr.version == Version::V2 {
        // keepalived also refuses an auth type mismatch; freevrrpd checked the password only.
        if repr.auth != *expect.auth {
            return Err(Drop::Auth);
        }
        // RFC 3768 §7.1: v2 intervals must match.
        if expect.interval_cs.is_some_and(|i| i != repr.interval_cs) {
            return Err(Drop::Interval);
        }
    }
    // Strict, as keepalived: RFC 3768 §7.1 would still accept an owner (priority 255) with a
    // different list, which hides the misconfiguration until the owner fails.
    if !same_addrs(&repr.addrs, expect.addrs) {
        return Err(Drop::AddrMismatch);
    }
    Ok(())
}

fn same_addrs(a: &[IpAddr], b: &[IpAddr]) -> bool {
    // At most 255 each: quadratic is fine and allocates nothing.
    a.len() == b.len() && a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// For the log line on `Drop::AddrMismatch`: (ours missing from the advert, advertised but not
/// ours). Both empty means the counts differ through duplicates.
pub fn addr_diff(ours: &[IpAddr], theirs: &[IpAddr]) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let missing = ours.iter().filter(|a| !theirs.contains(a)).copied();
    let extra = theirs.iter().filter(|a| !ours.contains(a)).copied();
    (missing.collect(), extra.collect())
}

/// The VRRP payload of an advert from `src` to `dst` (the group, or a peer in unicast mode).
pub fn emit(repr: &VrrpRepr, src: IpAddr, dst: IpAddr, mode: ChecksumMode) -> Vec<u8> {
    let mut buf = vec![0u8; repr.buffer_len(repr.over_v6(src))];
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst, mode);
    buf
}

/// A whole IPv4 packet (header + VRRP) as keepalived/freevrrpd send it with IP_HDRINCL: TTL
/// 255, proto 112, TOS 0xc0, DF clear, dst 224.0.0.18.
pub fn emit_ipv4(repr: &VrrpRepr, src: Ipv4Addr, ident: u16, mode: ChecksumMode) -> Vec<u8> {
    emit_ipv4_to(repr, src, GROUP_V4, ident, mode)
}

/// As [`emit_ipv4`], to `dst`: a unicast peer (keepalived's `unicast_peer`) instead of the
/// group. The v3 checksum covers the destination, so it is computed for it.
pub fn emit_ipv4_to(
    repr: &VrrpRepr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    mode: ChecksumMode,
) -> Vec<u8> {
    let vrrp = emit(repr, src.into(), dst.into(), mode);
    let ip = Ipv4Repr {
        src,
        dst,
        protocol: PROTO,
        ttl: TTL,
        tos: TOS,
        payload_len: vrrp.len(),
    };
    let mut buf = vec![0u8; ip.buffer_len()];
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut p, ident);
    if let Some(d) = p.payload_mut().get_mut(..vrrp.len()) {
        d.copy_from_slice(&vrrp);
    }
    buf
}

/// An advert with the IP header fields `check` and the state machine need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub repr: VrrpRepr,
}

const IPV6_HEADER_LEN: usize = 40;

/// A whole IP packet: an IPv4 header (what an IPv4 raw socket reads) or the IPv6 fixed header
/// without extension headers (a capture; an IPv6 raw socket gives the payload alone, for
/// `parse`), then VRRP. IP-layer faults map onto `Drop`: truncation → TooShort, bad header
/// lengths and fragments → Length, header checksum → Checksum, protocol ≠ 112 → Type, IP
/// version ≠ 4/6 → Family.
pub fn parse_ip_packet(packet: &[u8]) -> Result<Received, Drop> {
    let (src, dst, ttl, payload) = match packet.first().map(|b| b >> 4) {
        None => return Err(Drop::TooShort),
        Some(4) => {
            let p = Ipv4Packet::new_checked(packet).map_err(ip_drop)?;
            let ip = Ipv4Repr::parse(&p).map_err(ip_drop)?;
            if ip.protocol != PROTO {
                return Err(Drop::Type);
            }
            // From `packet`, not `p`, so the slice outlives the view.
            let payload = packet
                .get(p.header_len()..usize::from(p.total_len()))
                .ok_or(Drop::TooShort)?;
            (ip.src.into(), ip.dst.into(), ip.ttl, payload)
        }
        Some(6) => {
            let h = packet.get(..IPV6_HEADER_LEN).ok_or(Drop::TooShort)?;
            let (Some(&[l0, l1]), Some(&next), Some(&hop), Some(s), Some(d)) = (
                h.get(4..6),
                h.get(6),
                h.get(7),
                h.get(8..24).and_then(|s| <[u8; 16]>::try_from(s).ok()),
                h.get(24..40).and_then(|d| <[u8; 16]>::try_from(d).ok()),
            ) else {
                return Err(Drop::TooShort);
            };
            if next != PROTO {
                return Err(Drop::Type);
            }
            let end = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([l0, l1]));
            let payload = packet.get(IPV6_HEADER_LEN..end).ok_or(Drop::TooShort)?;
            (
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                hop,
                payload,
            )
        }
        Some(_) => return Err(Drop::Family),
    };
    let repr = parse(payload, src, dst, ttl)?;
    Ok(Received {
        src,
        dst,
        ttl,
        repr,
    })
}

fn ip_drop(e: ipv4::Error) -> Drop {
    match e {
        ipv4::Error::Truncated => Drop::TooShort,
        ipv4::Error::Version => Drop::Family,
        ipv4::Error::HeaderLen | ipv4::Error::Fragment => Drop::Length,
        ipv4::Error::Checksum => Drop::Checksum,
    }
}

#[cfg(test)]
mod unicast_tests {
    use super::*;

    #[test]
    fn unicast_advert_parses_with_its_own_checksum() {
        let repr = VrrpRepr {
            version: Version::V3,
            vrid: 9,
            priority: 120,
            interval_cs: 10,
            auth: Auth::None,
            addrs: vec!["192.0.2.10".parse().unwrap()],
        };
        let peer = Ipv4Addr::new(192, 0, 2, 2);
        let pkt = emit_ipv4_to(
            &repr,
            Ipv4Addr::new(192, 0, 2, 1),
            peer,
            1,
            ChecksumMode::PseudoHeader,
        );
        let r = parse_ip_packet(&pkt).unwrap();
        assert_eq!(r.dst, IpAddr::V4(peer));
        assert_eq!(r.repr, repr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Captured from keepalived 2.2.7 (vrrp-reference.md §1.5): VRID 51, VIP 10.77.0.10, src
    // 10.77.0.1; IPv6 VRID 52, VIP fd77::10, src fe80::d434:63ff:fed3:da3d.
    static V2_PASS_IP: [u8; 40] = [
        0x45, 0xc0, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xd0, 0x44, 0x0a, 0x4d, 0x00,
        0x01, 0xe0, 0x00, 0x00, 0x12, // IPv4 header
        0x21, 0x33, 0x96, 0x01, 0x01, 0x01, 0xd0, 0x26, 0x0a, 0x4d, 0x00, 0x0a, b's', b'3', b'c',
        b'r', b'e', b't', b'1', b'2',
    ];
    static V2_PASS_PRIO0: [u8; 20] = [
        0x21, 0x33, 0x00, 0x01, 0x01, 0x01, 0x66, 0x27, 0x0a, 0x4d, 0x00, 0x0a, b's', b'3', b'c',
        b'r', b'e', b't', b'1', b'2',
    ];
    static V3_V4: [u8; 12] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0x43, 0x33, 0x0a, 0x4d, 0x00, 0x0a,
    ];
    static V3_V4_10CS: [u8; 12] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0x43, 0x8d, 0x0a, 0x4d, 0x00, 0x0a,
    ];
    static V3_V4_PRIO0: [u8; 12] = [
        0x31, 0x33, 0x00, 0x01, 0x00, 0x64, 0xd9, 0x33, 0x0a, 0x4d, 0x00, 0x0a,
    ];
    static V3_V6: [u8; 24] = [
        0x31, 0x34, 0x96, 0x01, 0x00, 0x64, 0x2b, 0x7a, 0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0x10,
    ];
    static V3_V6_PRIO0: [u8; 24] = [
        0x31, 0x34, 0x00, 0x01, 0x00, 0x64, 0xc1, 0x7a, 0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0x10,
    ];

    // Hand-built, checksums computed independently (Python, RFC 1071).
    /// v2, auth none, VRID 7, prio 100, 3 s, 192.0.2.10 and 192.0.2.11.
    static V2_NONE_2ADDRS: [u8; 24] = [
        0x21, 0x07, 0x64, 0x02, 0x00, 0x03, 0xf6, 0xdc, 0xc0, 0x00, 0x02, 0x0a, 0xc0, 0x00, 0x02,
        0x0b, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    /// v2, password "abc", VRID 1, prio 254, 1 s, 198.51.100.1.
    static V2_SHORT_PASS: [u8; 20] = [
        0x21, 0x01, 0xfe, 0x01, 0x01, 0x01, 0xf1, 0x63, 0xc6, 0x33, 0x64, 0x01, b'a', b'b', b'c',
        0, 0, 0, 0, 0,
    ];
    /// keepalived's v3 advert checksummed without the pseudo-header (Cisco/Juniper form).
    static V3_V4_NO_PSEUDO: [u8; 12] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x64, 0x2e, 0x10, 0x0a, 0x4d, 0x00, 0x0a,
    ];
    /// v3 over IPv6, VRID 9, prio 200, 50 cs, fe80::1 and 2001:db8::10, from fe80::2.
    static V3_V6_2ADDRS: [u8; 40] = [
        0x31, 0x09, 0xc8, 0x02, 0x00, 0x32, 0xdc, 0x46, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn src4() -> IpAddr {
        ip("10.77.0.1")
    }

    fn grp4() -> IpAddr {
        IpAddr::V4(GROUP_V4)
    }

    fn src6() -> IpAddr {
        ip("fe80::d434:63ff:fed3:da3d")
    }

    fn grp6() -> IpAddr {
        IpAddr::V6(GROUP_V6)
    }

    fn v2_pass(priority: u8) -> VrrpRepr {
        VrrpRepr {
            version: Version::V2,
            vrid: 51,
            priority,
            interval_cs: 100,
            auth: Auth::password(b"s3cret12"),
            addrs: vec![ip("10.77.0.10")],
        }
    }

    fn v3(vrid: u8, priority: u8, interval_cs: u16, addr: &str) -> VrrpRepr {
        VrrpRepr {
            version: Version::V3,
            vrid,
            priority,
            interval_cs,
            auth: Auth::None,
            addrs: vec![ip(addr)],
        }
    }

    /// (bytes, src, dst, repr, checksum mode to emit them back)
    fn vectors() -> Vec<(&'static [u8], IpAddr, IpAddr, VrrpRepr, ChecksumMode)> {
        use ChecksumMode::*;
        vec![
            (
                &V2_PASS_IP[20..],
                src4(),
                grp4(),
                v2_pass(150),
                PseudoHeader,
            ),
            (&V2_PASS_PRIO0, src4(), grp4(), v2_pass(0), PseudoHeader),
            (
                &V3_V4,
                src4(),
                grp4(),
                v3(51, 150, 100, "10.77.0.10"),
                PseudoHeader,
            ),
            (
                &V3_V4_10CS,
                src4(),
                grp4(),
                v3(51, 150, 10, "10.77.0.10"),
                PseudoHeader,
            ),
            (
                &V3_V4_PRIO0,
                src4(),
                grp4(),
                v3(51, 0, 100, "10.77.0.10"),
                PseudoHeader,
            ),
            (
                &V3_V6,
                src6(),
                grp6(),
                v3(52, 150, 100, "fd77::10"),
                PseudoHeader,
            ),
            // The mode is irrelevant over IPv6: the pseudo-header is always there.
            (
                &V3_V6_PRIO0,
                src6(),
                grp6(),
                v3(52, 0, 100, "fd77::10"),
                NoPseudoHeader,
            ),
            (
                &V2_NONE_2ADDRS,
                src4(),
                grp4(),
                VrrpRepr {
                    version: Version::V2,
                    vrid: 7,
                    priority: 100,
                    interval_cs: 300,
                    auth: Auth::None,
                    addrs: vec![ip("192.0.2.10"), ip("192.0.2.11")],
                },
                NoPseudoHeader,
            ),
            (
                &V2_SHORT_PASS,
                src4(),
                grp4(),
                VrrpRepr {
                    version: Version::V2,
                    vrid: 1,
                    priority: 254,
                    interval_cs: 100,
                    auth: Auth::password(b"abc"),
                    addrs: vec![ip("198.51.100.1")],
                },
                PseudoHeader,
            ),
            (
                &V3_V4_NO_PSEUDO,
                src4(),
                grp4(),
                v3(51, 150, 100, "10.77.0.10"),
                NoPseudoHeader,
            ),
            (
                &V3_V6_2ADDRS,
                ip("fe80::2"),
                grp6(),
                VrrpRepr {
                    version: Version::V3,
                    vrid: 9,
                    priority: 200,
                    interval_cs: 50,
                    auth: Auth::None,
                    addrs: vec![ip("fe80::1"), ip("2001:db8::10")],
                },
                PseudoHeader,
            ),
        ]
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&V2_PASS_IP[20..]).unwrap();
        assert_eq!(
            (p.version(), p.kind(), p.vrid(), p.priority()),
            (2, 1, 51, 150)
        );
        assert_eq!((p.addr_count(), p.auth_type(), p.adver_int()), (1, 1, 1));
        assert_eq!(p.checksum(), 0xd026);
        assert_eq!(p.body(), b"\x0a\x4d\x00\x0as3cret12");
        assert!(p.verify_checksum(None));
        let p = Packet::new_checked(&V3_V6[..]).unwrap();
        assert_eq!(
            (p.version(), p.kind(), p.vrid(), p.priority()),
            (3, 1, 52, 150)
        );
        assert_eq!(
            (p.addr_count(), p.max_adver_int(), p.checksum()),
            (1, 100, 0x2b7a)
        );
        // Reserved bits are not part of the interval.
        let mut b = V3_V4;
        b[4] |= 0xf0;
        assert_eq!(Packet::new_unchecked(&b[..]).max_adver_int(), 100);
    }

    #[test]
    fn parse_vectors() {
        for (bytes, src, dst, repr, _) in vectors() {
            assert_eq!(parse(bytes, src, dst, 255), Ok(repr), "{bytes:02x?}");
        }
    }

    #[test]
    fn emit_vectors() {
        for (bytes, src, dst, repr, mode) in vectors() {
            assert_eq!(emit(&repr, src, dst, mode), bytes, "{repr:?}");
        }
        // The whole captured IPv4 packet, header included, byte for byte.
        let src = Ipv4Addr::new(10, 77, 0, 1);
        assert_eq!(
            emit_ipv4(&v2_pass(150), src, 1, ChecksumMode::PseudoHeader),
            V2_PASS_IP
        );
        let got = parse_ip_packet(&V2_PASS_IP).unwrap();
        assert_eq!((got.src, got.dst, got.ttl), (src4(), grp4(), 255));
        assert_eq!(got.repr, v2_pass(150));
    }

    #[test]
    fn checksum_forms() {
        let form = |b: &[u8], src, dst| checksum_form(&Packet::new_unchecked(b), src, dst);
        use ChecksumMode::*;
        assert_eq!(form(&V3_V4, src4(), grp4()), Some(PseudoHeader));
        assert_eq!(form(&V3_V4_NO_PSEUDO, src4(), grp4()), Some(NoPseudoHeader));
        assert_eq!(form(&V2_PASS_PRIO0, src4(), grp4()), Some(NoPseudoHeader));
        assert_eq!(form(&V3_V6, src6(), grp6()), Some(PseudoHeader));
        // The pseudo-header includes the destination: unicast must use the real one.
        assert_eq!(form(&V3_V4, src4(), ip("10.77.0.2")), None);
        // v2 checksummed with a pseudo-header, or v3/IPv6 without one, is wrong.
        let v2_pseudo = {
            let mut b = V2_PASS_PRIO0;
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.fill_checksum(pseudo_header(src4(), grp4(), 20));
            b
        };
        assert_eq!(parse(&v2_pseudo, src4(), grp4(), 255), Err(Drop::Checksum));
        let v6_plain = {
            let mut b = V3_V6;
            Packet::new_unchecked(&mut b[..]).fill_checksum(None);
            b
        };
        assert_eq!(parse(&v6_plain, src6(), grp6(), 255), Err(Drop::Checksum));
    }

    /// A copy of `bytes` with `f` applied and the checksum recomputed as the vector had it.
    fn altered(bytes: &[u8], src: IpAddr, dst: IpAddr, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = bytes.to_vec();
        f(&mut b);
        let v3 = b.first().is_some_and(|v| v >> 4 == 3);
        let len = b.len();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum(if v3 {
            pseudo_header(src, dst, len)
        } else {
            None
        });
        b
    }

    #[test]
    fn parse_drops() {
        let (s4, g4, s6, g6) = (src4(), grp4(), src6(), grp6());
        let v2 = &V2_PASS_IP[20..];
        let p = |b: &[u8], src, dst| parse(b, src, dst, 255);
        assert_eq!(parse(v2, s4, g4, 64), Err(Drop::Ttl));
        assert_eq!(parse(&V3_V6, s6, g6, 1), Err(Drop::Ttl));
        assert_eq!(p(&[], s4, g4), Err(Drop::TooShort));
        assert_eq!(p(&v2[..7], s4, g4), Err(Drop::TooShort));
        assert_eq!(p(&v2[..19], s4, g4), Err(Drop::Length));
        let mut long = v2.to_vec();
        long.push(0);
        assert_eq!(p(&long, s4, g4), Err(Drop::Length));
        assert_eq!(p(v2, s4, g6), Err(Drop::Family));
        assert_eq!(p(v2, s6, g6), Err(Drop::Family));
        let mut bad = v2.to_vec();
        bad[6] ^= 1;
        assert_eq!(p(&bad, s4, g4), Err(Drop::Checksum));
        let bad = altered(v2, s4, g4, |b| b[0] = 0x11);
        assert_eq!(p(&bad, s4, g4), Err(Drop::Version));
        let bad = altered(v2, s4, g4, |b| b[0] = 0x41);
        assert_eq!(p(&bad, s4, g4), Err(Drop::Version));
        let bad = altered(v2, s4, g4, |b| b[0] = 0x22);
        assert_eq!(p(&bad, s4, g4), Err(Drop::Type));
        let bad = altered(v2, s4, g4, |b| b[4] = 2);
        assert_eq!(p(&bad, s4, g4), Err(Drop::Auth));
        // Count says 2, one address there.
        let bad = altered(v2, s4, g4, |b| b[3] = 2);
        assert_eq!(p(&bad, s4, g4), Err(Drop::Length));
        // v3 over IPv4 read as over IPv6 (wrong address size).
        assert_eq!(p(&V3_V4, s6, g6), Err(Drop::Length));
        // Auth type 0: the data is ignored (RFC 3768 §5.3.10).
        let none = altered(v2, s4, g4, |b| b[4] = 0);
        assert_eq!(p(&none, s4, g4).map(|r| r.auth), Ok(Auth::None));
    }

    /// ucarp's CARP advert: same protocol, group and first byte, 36 bytes (§1.9).
    #[test]
    fn carp_is_refused_by_length() {
        let mut carp = vec![0x21, 51, 0, 7, 0, 1, 0, 0];
        carp.extend_from_slice(&[0x5a; 28]);
        let c = ipv4::checksum(&carp);
        carp[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse(&carp, src4(), grp4(), 255), Err(Drop::Length));
    }

    #[test]
    fn checks() {
        let addrs = [ip("10.77.0.10")];
        let auth = Auth::password(b"s3cret12");
        let v2 = Expect {
            vrid: 51,
            version: Version::V2,
            interval_cs: Some(100),
            auth: &auth,
            addrs: &addrs,
            checksum: ChecksumMode::PseudoHeader,
        };
        let r = v2_pass(150);
        assert_eq!(check(&r, &v2), Ok(()));
        assert_eq!(check(&r, &Expect { vrid: 52, ..v2 }), Err(Drop::Vrid));
        let v3e = Expect {
            version: Version::V3,
            ..v2
        };
        assert_eq!(check(&r, &v3e), Err(Drop::Version));
        assert_eq!(
            check(
                &r,
                &Expect {
                    interval_cs: Some(200),
                    ..v2
                }
            ),
            Err(Drop::Interval)
        );
        assert_eq!(
            check(
                &r,
                &Expect {
                    interval_cs: None,
                    ..v2
                }
            ),
            Ok(())
        );
        let other = Auth::password(b"s3cret13");
        assert_eq!(check(&r, &Expect { auth: &other, ..v2 }), Err(Drop::Auth));
        assert_eq!(
            check(
                &r,
                &Expect {
                    auth: &Auth::None,
                    ..v2
                }
            ),
            Err(Drop::Auth)
        );
        let two = [ip("10.77.0.10"), ip("10.77.0.11")];
        assert_eq!(
            check(&r, &Expect { addrs: &two, ..v2 }),
            Err(Drop::AddrMismatch)
        );
        assert_eq!(
            check(&r, &Expect { addrs: &[], ..v2 }),
            Err(Drop::AddrMismatch)
        );
        // v3: the interval is the master's to choose and there is no authentication.
        let v3r = v3(51, 150, 35, "10.77.0.10");
        assert_eq!(
            check(
                &v3r,
                &Expect {
                    auth: &other,
                    ..v3e
                }
            ),
            Ok(())
        );
        // Order does not matter, counts do.
        let mut r2 = v2_pass(150);
        r2.addrs = vec![ip("10.77.0.11"), ip("10.77.0.10")];
        assert_eq!(check(&r2, &Expect { addrs: &two, ..v2 }), Ok(()));
        r2.addrs = vec![ip("10.77.0.10"), ip("10.77.0.10")];
        assert_eq!(
            check(&r2, &Expect { addrs: &two, ..v2 }),
            Err(Drop::AddrMismatch)
        );
        assert_eq!(
            addr_diff(&two, &[ip("10.77.0.10"), ip("10.77.0.12")]),
            (vec![ip("10.77.0.11")], vec![ip("10.77.0.12")])
        );
        assert!(Drop::AddrMismatch.is_misconfiguration());
        assert!(!Drop::Vrid.is_misconfiguration());
    }

    #[test]
    fn drop_names_are_distinct() {
        let mut names: Vec<_> = Drop::ALL.iter().map(|d| d.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Drop::ALL.len());
    }

    #[test]
    fn emit_edges() {
        // Addresses of the other family are left out; the count follows.
        let mut r = v3(9, 100, 100, "10.0.0.1");
        r.addrs.push(ip("2001:db8::1"));
        let b = emit(&r, src4(), grp4(), ChecksumMode::PseudoHeader);
        assert_eq!(
            parse(&b, src4(), grp4(), 255).unwrap().addrs,
            [ip("10.0.0.1")]
        );
        let b = emit(&r, src6(), grp6(), ChecksumMode::PseudoHeader);
        assert_eq!(
            parse(&b, src6(), grp6(), 255).unwrap().addrs,
            [ip("2001:db8::1")]
        );
        // Intervals out of range are capped or rounded, never wrap.
        r.interval_cs = u16::MAX;
        let b = emit(&r, src4(), grp4(), ChecksumMode::PseudoHeader);
        assert_eq!(parse(&b, src4(), grp4(), 255).unwrap().interval_cs, 4095);
        let mut r = v2_pass(1);
        r.interval_cs = u16::MAX;
        let b = emit(&r, src4(), grp4(), ChecksumMode::PseudoHeader);
        assert_eq!(parse(&b, src4(), grp4(), 255).unwrap().interval_cs, 25500);
        r.interval_cs = 149;
        let b = emit(&r, src4(), grp4(), ChecksumMode::PseudoHeader);
        assert_eq!(parse(&b, src4(), grp4(), 255).unwrap().interval_cs, 100);
        // More than 255 addresses: the first 255 go out.
        r.addrs = (0..300u32).map(|i| IpAddr::V4(Ipv4Addr::from(i))).collect();
        let b = emit(&r, src4(), grp4(), ChecksumMode::PseudoHeader);
        assert_eq!(
            parse(&b, src4(), grp4(), 255).unwrap().addrs,
            r.addrs[..255]
        );
        // No addresses is legal on the wire (keepalived allows an instance without VIPs).
        r.addrs.clear();
        r.interval_cs = 200;
        let b = emit(&r, src4(), grp4(), ChecksumMode::PseudoHeader);
        assert_eq!(parse(&b, src4(), grp4(), 255), Ok(r));
    }

    #[test]
    fn ip_packets() {
        // IPv6 as keepalived sent it: 6c05e1be 0018 70 ff.
        let mut v6 = vec![0x6c, 0x05, 0xe1, 0xbe, 0x00, 0x18, 0x70, 0xff];
        for a in [src6(), grp6()] {
            if let IpAddr::V6(a) = a {
                v6.extend_from_slice(&a.octets());
            }
        }
        v6.extend_from_slice(&V3_V6);
        let got = parse_ip_packet(&v6).unwrap();
        assert_eq!((got.src, got.dst, got.ttl), (src6(), grp6(), 255));
        assert_eq!(got.repr, v3(52, 150, 100, "fd77::10"));
        let mut hop = v6.clone();
        hop[7] = 254;
        assert_eq!(parse_ip_packet(&hop), Err(Drop::Ttl));
        assert_eq!(parse_ip_packet(&v6[..50]), Err(Drop::TooShort));
        assert_eq!(parse_ip_packet(&v6[..39]), Err(Drop::TooShort));
        let mut nh = v6.clone();
        nh[6] = 0; // hop-by-hop options header: not handled
        assert_eq!(parse_ip_packet(&nh), Err(Drop::Type));

        assert_eq!(parse_ip_packet(&[]), Err(Drop::TooShort));
        assert_eq!(parse_ip_packet(&[0x55; 40]), Err(Drop::Family));
        assert_eq!(parse_ip_packet(&V2_PASS_IP[..30]), Err(Drop::TooShort));
        let mut bad = V2_PASS_IP;
        bad[8] = 64; // TTL, header checksum now wrong
        assert_eq!(parse_ip_packet(&bad), Err(Drop::Checksum));
        let ttl64 = {
            let mut p = Ipv4Packet::new_unchecked(V2_PASS_IP);
            p.set_ttl(64);
            p.fill_checksum();
            p.into_inner()
        };
        assert_eq!(parse_ip_packet(&ttl64), Err(Drop::Ttl));
        let udp = {
            let mut p = Ipv4Packet::new_unchecked(V2_PASS_IP);
            p.set_protocol(17);
            p.fill_checksum();
            p.into_inner()
        };
        assert_eq!(parse_ip_packet(&udp), Err(Drop::Type));
    }

    // ---- properties ----

    fn v4() -> impl Strategy<Value = IpAddr> {
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into()))
    }

    fn v6() -> impl Strategy<Value = IpAddr> {
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into()))
    }

    /// A canonical repr with the src and dst it is sent between.
    fn advert() -> impl Strategy<Value = (VrrpRepr, IpAddr, IpAddr)> {
        let auth = prop_oneof![Just(Auth::None), any::<[u8; 8]>().prop_map(Auth::Password)];
        let addrs4 = || prop::collection::vec(v4(), 0..12);
        let v2 = (
            any::<u8>(),
            any::<u8>(),
            0..=255u16,
            auth,
            addrs4(),
            v4(),
            v4(),
        )
            .prop_map(|(vrid, priority, secs, auth, addrs, s, d)| {
                let r = VrrpRepr {
                    version: Version::V2,
                    vrid,
                    priority,
                    interval_cs: secs * 100,
                    auth,
                    addrs,
                };
                (r, s, d)
            });
        let v3_4 = (any::<u8>(), any::<u8>(), 0..=4095u16, addrs4(), v4(), v4()).prop_map(
            |(vrid, priority, interval_cs, addrs, s, d)| {
                let r = VrrpRepr {
                    version: Version::V3,
                    vrid,
                    priority,
                    interval_cs,
                    auth: Auth::None,
                    addrs,
                };
                (r, s, d)
            },
        );
        let v3_6 = (
            any::<u8>(),
            any::<u8>(),
            0..=4095u16,
            prop::collection::vec(v6(), 0..6),
            v6(),
            v6(),
        )
            .prop_map(|(vrid, priority, interval_cs, addrs, s, d)| {
                let r = VrrpRepr {
                    version: Version::V3,
                    vrid,
                    priority,
                    interval_cs,
                    auth: Auth::None,
                    addrs,
                };
                (r, s, d)
            });
        prop_oneof![v2, v3_4, v3_6]
    }

    fn mode() -> impl Strategy<Value = ChecksumMode> {
        prop_oneof![
            Just(ChecksumMode::PseudoHeader),
            Just(ChecksumMode::NoPseudoHeader)
        ]
    }

    proptest! {
        #[test]
        fn round_trips((r, src, dst) in advert(), mode in mode(), ident in any::<u16>()) {
            let b = emit(&r, src, dst, mode);
            prop_assert_eq!(b.len(), r.buffer_len(src.is_ipv6()));
            prop_assert_eq!(parse(&b, src, dst, 255), Ok(r.clone()));
            let expect = Expect {
                vrid: r.vrid,
                version: r.version,
                interval_cs: Some(r.interval_cs),
                auth: &r.auth,
                addrs: &r.addrs,
                checksum: mode,
            };
            prop_assert_eq!(check(&r, &expect), Ok(()));
            if let IpAddr::V4(s) = src {
                let whole = emit_ipv4(&r, s, ident, mode);
                let got = parse_ip_packet(&whole);
                prop_assert_eq!(got.map(|g| (g.src, g.dst, g.repr)), Ok((src, grp4(), r)));
            }
        }

        #[test]
        fn never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..120),
            src in prop_oneof![v4(), v6()],
            dst in prop_oneof![v4(), v6()],
            ttl in prop_oneof![Just(255u8), any::<u8>()],
        ) {
            let _ = parse(&bytes, src, dst, ttl);
            let _ = parse_ip_packet(&bytes);
            let p = Packet::new_unchecked(&bytes[..]);
            let _ = (p.body(), p.max_adver_int(), checksum_form(&p, src, dst));
        }

        /// Headers that pass the first checks, so the fuzzing reaches the length and checksum.
        #[test]
        fn never_panics_past_the_header(
            first in prop::sample::select(vec![0x21u8, 0x31]),
            rest in prop::collection::vec(any::<u8>(), 0..80),
            v6 in any::<bool>(),
        ) {
            let mut b = vec![first];
            b.extend_from_slice(&rest);
            let (s, d) = if v6 { (src6(), grp6()) } else { (src4(), grp4()) };
            let _ = parse(&b, s, d, 255);
        }

        /// Every single-byte corruption is dropped or reads as a different advert. The one
        /// exception is v3 over IPv4, where two checksums are valid (with and without the
        /// pseudo-header): a change of the checksum field, or of the reserved bits it does not
        /// otherwise see, may land on the other form and read the same.
        #[test]
        fn corruption_is_caught(
            (r, src, dst) in advert(),
            mode in mode(),
            at in any::<prop::sample::Index>(),
            x in 1..=255u8,
        ) {
            let mut b = emit(&r, src, dst, mode);
            let i = at.index(b.len());
            b[i] ^= x;
            if let Ok(got) = parse(&b, src, dst, 255) {
                let dual = r.version == Version::V3 && src.is_ipv4();
                let unseen = i == 6 || i == 7 || (i == 4 && x & 0x0f == 0);
                prop_assert!(got != r || (dual && unseen), "byte {} ^ {:#x} read as {:?}", i, x, got);
            }
        }

        /// The same on a whole IPv4 packet: the header checksum guards the IP fields.
        #[test]
        fn ip_corruption_is_caught(
            (r, src, _dst) in advert(),
            at in any::<prop::sample::Index>(),
            x in 1..=255u8,
        ) {
            let IpAddr::V4(s) = src else { return Ok(()) };
            let mut b = emit_ipv4(&r, s, 7, ChecksumMode::PseudoHeader);
            let i = at.index(b.len());
            b[i] ^= x;
            if let Ok(got) = parse_ip_packet(&b) {
                let dual = r.version == Version::V3;
                let unseen = i == 26 || i == 27 || (i == 24 && x & 0x0f == 0);
                prop_assert!(
                    got.repr != r || got.src != src || (dual && unseen),
                    "byte {} ^ {:#x} read as {:?}", i, x, got
                );
            }
        }
    }
}
