//! The byte layout of table entries inside sync frames, and the bounds-checked reader every
//! decoder in this folder uses. No I/O, no clock, no panics on any input.
//!
//! All integers are big-endian. An entry:
//! ```text
//! u8 kind (1 sticky, 2 server, 3 ban)   u8 flags (bit 0 deleted, bit 1 has expiry; others 0)
//! u64 wall_ms  u32 logical  u64 origin  [i64 expires offset, ms]
//! key:   sticky: name balancer, ip client | server: name balancer, name server, u8 field
//!        ban: ip, u8 prefix
//! value (absent when deleted):
//!        sticky: name server, i64 last-seen offset
//!        server: blacklist: opt(i64 until) | weight: u32 | drain, maint: bool | addr: opt(sockaddr)
//!        ban: nothing
//! name = u16 length + UTF-8 (at most MAX_NAME)   ip = u8 family (4, 6) + 4 or 16 bytes
//! sockaddr = ip + u16 port   opt(x) = u8 0 | u8 1 x   bool = u8 0 | 1
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::table::{Entry, Field, Key, MAX_NAME, Net, Offset, Setting, Value, Version};
use super::wire::WireError;

const KIND_STICKY: u8 = 1;
const KIND_SERVER: u8 = 2;
const KIND_BAN: u8 = 3;
const FLAG_DELETED: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

/// A cursor over untrusted bytes: every read checks the length first.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Refuse bytes after the end of a message.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let got = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(got)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.bytes(N)?;
        b.try_into().map_err(|_| WireError::Truncated)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError::BadByte("bool", b)),
        }
    }

    /// A u16-length string of at most `max` bytes.
    pub fn text(&mut self, max: usize) -> Result<String, WireError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(WireError::NameTooLong(len));
        }
        let b = self.bytes(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError::BadUtf8)
    }

    fn offset(&mut self) -> Result<Offset, WireError> {
        Ok(Offset::from_ms(self.i64()?))
    }

    fn ip(&mut self) -> Result<IpAddr, WireError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            b => Err(WireError::BadByte("address family", b)),
        }
    }

    fn socket_addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = self.ip()?;
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, WireError>,
    ) -> Result<Option<T>, WireError> {
        if self.bool()? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A u16-length string; longer than `max` is cut at a character boundary (callers check
/// names before they get here: `table::check`).
pub fn put_text(out: &mut Vec<u8>, s: &str, max: usize) {
    let mut end = s.len().min(max).min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    put_u16(out, end as u16);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn put_socket_addr(out: &mut Vec<u8>, a: SocketAddr) {
    put_ip(out, a.ip());
    put_u16(out, a.port());
}

fn field_byte(f: Field) -> u8 {
    match f {
        Field::Blacklist => 1,
        Field::Weight => 2,
        Field::Drain => 3,
        Field::Maint => 4,
        Field::Addr => 5,
    }
}

fn field_of(b: u8) -> Result<Field, WireError> {
    Ok(match b {
        1 => Field::Blacklist,
        2 => Field::Weight,
        3 => Field::Drain,
        4 => Field::Maint,
        5 => Field::Addr,
        _ => return Err(WireError::BadByte("server field", b)),
    })
}

/// Append one entry.
pub fn put_entry(out: &mut Vec<u8>, e: &Entry<Offset>) {
    let kind = match e.key {
        Key::Sticky { .. } => KIND_STICKY,
        Key::Server { .. } => KIND_SERVER,
        Key::Ban { .. } => KIND_BAN,
    };
    let mut flags = 0;
    if e.value.is_deleted() {
        flags |= FLAG_DELETED;
    }
    if e.expires.is_some() {
        flags |= FLAG_EXPIRES;
    }
    out.extend_from_slice(&[kind, flags]);
    put_u64(out, e.version.wall_ms);
    put_u32(out, e.version.logical);
    put_u64(out, e.version.origin);
    if let Some(t) = e.expires {
        put_i64(out, t.ms());
    }
    put_key(out, &e.key);
    put_value(out, &e.value);
}

fn put_key(out: &mut Vec<u8>, key: &Key) {
    match key {
        Key::Sticky { balancer, client } => {
            put_text(out, balancer, MAX_NAME);
            put_ip(out, *client);
        }
        Key::Server {
            balancer,
            server,
            field,
        } => {
            put_text(out, balancer, MAX_NAME);
            put_text(out, server, MAX_NAME);
            out.push(field_byte(*field));
        }
        Key::Ban { net } => {
            put_ip(out, net.addr());
            out.push(net.prefix());
        }
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value<Offset>) {
    match value {
        Value::Sticky { server, last_seen } => {
            put_text(out, server, MAX_NAME);
            put_i64(out, last_seen.ms());
        }
        Value::Setting(s) => put_setting(out, s),
        Value::Ban | Value::Deleted => {}
    }
}

fn put_setting(out: &mut Vec<u8>, s: &Setting<Offset>) {
    let flag = |out: &mut Vec<u8>, b: bool| out.push(u8::from(b));
    match s {
        Setting::Blacklist { until } => {
            flag(out, until.is_some());
            if let Some(t) = until {
                put_i64(out, t.ms());
            }
        }
        Setting::Weight(w) => put_u32(out, *w),
        Setting::Drain(b) | Setting::Maint(b) => flag(out, *b),
        Setting::Addr(a) => {
            flag(out, a.is_some());
            if let Some(a) = a {
                put_socket_addr(out, *a);
            }
        }
    }
}

/// How many bytes `put_entry` writes for `e`, to cut batches below the frame limit.
pub fn entry_len(e: &Entry<Offset>) -> usize {
    let text = |s: &str| 2 + s.len().min(MAX_NAME);
    let ip = |a: &IpAddr| if a.is_ipv4() { 5 } else { 17 };
    let head = 2 + 20 + if e.expires.is_some() { 8 } else { 0 };
    let key = match &e.key {
        Key::Sticky { balancer, client } => text(balancer) + ip(client),
        Key::Server {
            balancer, server, ..
        } => text(balancer) + text(server) + 1,
        Key::Ban { net } => ip(&net.addr()) + 1,
    };
    let value = match &e.value {
        Value::Sticky { server, .. } => text(server) + 8,
        Value::Setting(Setting::Blacklist { until }) => 1 + if until.is_some() { 8 } else { 0 },
        Value::Setting(Setting::Weight(_)) => 4,
        Value::Setting(Setting::Drain(_) | Setting::Maint(_)) => 1,
        Value::Setting(Setting::Addr(a)) => 1 + a.map_or(0, |a| ip(&a.ip()) + 2),
        Value::Ban | Value::Deleted => 0,
    };
    head + key + value
}

/// Read one entry.
pub fn entry(r: &mut Reader<'_>) -> Result<Entry<Offset>, WireError> {
    let kind = r.u8()?;
    let flags = r.u8()?;
    if flags & !(FLAG_DELETED | FLAG_EXPIRES) != 0 {
        return Err(WireError::BadByte("entry flags", flags));
    }
    let version = Version {
        wall_ms: r.u64()?,
        logical: r.u32()?,
        origin: r.u64()?,
    };
    let expires = if flags & FLAG_EXPIRES != 0 {
        Some(r.offset()?)
    } else {
        None
    };
    let key = key(r, kind)?;
    let value = if flags & FLAG_DELETED != 0 {
        Value::Deleted
    } else {
        value(r, &key)?
    };
    Ok(Entry {
        key,
        version,
        value,
        expires,
    })
}

fn key(r: &mut Reader<'_>, kind: u8) -> Result<Key, WireError> {
    match kind {
        KIND_STICKY => Ok(Key::Sticky {
            balancer: r.text(MAX_NAME)?,
            client: r.ip()?,
        }),
        KIND_SERVER => Ok(Key::Server {
            balancer: r.text(MAX_NAME)?,
            server: r.text(MAX_NAME)?,
            field: field_of(r.u8()?)?,
        }),
        KIND_BAN => {
            let addr = r.ip()?;
            let prefix = r.u8()?;
            let net = Net::new(addr, prefix).ok_or(WireError::BadByte("prefix", prefix))?;
            Ok(Key::Ban { net })
        }
        _ => Err(WireError::BadByte("entry kind", kind)),
    }
}

fn value(r: &mut Reader<'_>, key: &Key) -> Result<Value<Offset>, WireError> {
    Ok(match key {
        Key::Sticky { .. } => Value::Sticky {
            server: r.text(MAX_NAME)?,
            last_seen: r.offset()?,
        },
        Key::Server { field, .. } => Value::Setting(setting(r, *field)?),
        Key::Ban { .. } => Value::Ban,
    })
}

fn setting(r: &mut Reader<'_>, field: Field) -> Result<Setting<Offset>, WireError> {
    Ok(match field {
        Field::Blacklist => Setting::Blacklist {
            until: r.option(Reader::offset)?,
        },
        Field::Weight => Setting::Weight(r.u32()?),
        Field::Drain => Setting::Drain(r.bool()?),
        Field::Maint => Setting::Maint(r.bool()?),
        Field::Addr => Setting::Addr(r.option(Reader::socket_addr)?),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One entry of every shape, for round trips here and in wire.rs.
    pub(crate) fn samples() -> Vec<Entry<Offset>> {
        let v = |w| Version {
            wall_ms: w,
            logical: 7,
            origin: 0xdead_beef,
        };
        let server = |field| Key::Server {
            balancer: "www".into(),
            server: "app.example:8080".into(),
            field,
        };
        let entry = |key, w, value, expires| Entry {
            key,
            version: v(w),
            value,
            expires,
        };
        let setting = |s| Value::Setting(s);
        vec![
            entry(
                Key::Sticky {
                    balancer: "app".into(),
                    client: "192.0.2.250".parse().unwrap(),
                },
                1,
                Value::Sticky {
                    server: "10.0.0.12:8000".into(),
                    last_seen: Offset::from_ms(-1234),
                },
                Some(Offset::from_ms(3_600_000)),
            ),
            entry(
                Key::Sticky {
                    balancer: "app".into(),
                    client: "2001:db8::9".parse().unwrap(),
                },
                2,
                Value::Deleted,
                Some(Offset::from_ms(60_000)),
            ),
            entry(
                server(Field::Blacklist),
                3,
                setting(Setting::Blacklist {
                    until: Some(Offset::from_ms(99_999_000)),
                }),
                None,
            ),
            entry(
                server(Field::Blacklist),
                4,
                setting(Setting::Blacklist { until: None }),
                None,
            ),
            entry(server(Field::Weight), 5, setting(Setting::Weight(3)), None),
            entry(server(Field::Drain), 6, setting(Setting::Drain(true)), None),
            entry(
                server(Field::Maint),
                7,
                setting(Setting::Maint(false)),
                None,
            ),
            entry(
                server(Field::Addr),
                8,
                setting(Setting::Addr(Some("[2001:db8::5]:443".parse().unwrap()))),
                None,
            ),
            entry(server(Field::Addr), 9, setting(Setting::Addr(None)), None),
            entry(
                Key::Ban {
                    net: Net::new("198.51.100.0".parse().unwrap(), 24).unwrap(),
                },
                10,
                Value::Ban,
                Some(Offset::from_ms(3_600_000)),
            ),
            entry(
                Key::Ban {
                    net: Net::host("2001:db8::bad".parse().unwrap()),
                },
                11,
                Value::Ban,
                None,
            ),
        ]
    }

    fn encoded(e: &Entry<Offset>) -> Vec<u8> {
        let mut out = Vec::new();
        put_entry(&mut out, e);
        out
    }

    #[test]
    fn every_shape_round_trips() {
        for e in samples() {
            let bytes = encoded(&e);
            assert_eq!(entry_len(&e), bytes.len(), "{e:?}");
            let mut r = Reader::new(&bytes);
            assert_eq!(entry(&mut r).as_ref(), Ok(&e));
            assert!(r.finish().is_ok());
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for e in samples() {
            let bytes = encoded(&e);
            for cut in 0..bytes.len() {
                let mut r = Reader::new(&bytes[..cut]);
                assert_eq!(entry(&mut r), Err(WireError::Truncated), "{e:?} cut {cut}");
            }
        }
    }

    #[test]
    fn bad_bytes_are_named() {
        let sticky = encoded(&samples()[0]);
        let mut b = sticky.clone();
        b[0] = 9;
        assert_eq!(
            entry(&mut Reader::new(&b)),
            Err(WireError::BadByte("entry kind", 9))
        );
        let mut b = sticky.clone();
        b[1] |= 0x80;
        assert!(matches!(
            entry(&mut Reader::new(&b)),
            Err(WireError::BadByte("entry flags", _))
        ));
        // The balancer name's length starts after kind, flags (2), version (20), expiry (8).
        let mut b = sticky.clone();
        b[32] = 0xff;
        assert_eq!(entry(&mut Reader::new(&b)), Err(WireError::BadUtf8));
        let mut b = sticky;
        b[30..32].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            entry(&mut Reader::new(&b)),
            Err(WireError::NameTooLong(65535))
        );
        let ban = encoded(&samples()[9]);
        let mut b = ban.clone();
        *b.last_mut().unwrap() = 33;
        assert_eq!(
            entry(&mut Reader::new(&b)),
            Err(WireError::BadByte("prefix", 33))
        );
        let mut b = ban;
        b[30] = 5;
        assert_eq!(
            entry(&mut Reader::new(&b)),
            Err(WireError::BadByte("address family", 5))
        );
    }

    #[test]
    fn put_text_cuts_at_a_character_boundary() {
        let mut out = Vec::new();
        put_text(&mut out, "aé", 2);
        assert_eq!(out, [0, 1, b'a']);
    }
}
