//! pen's server syntax `host[:port[:max[:hard[:weight[:prio]]]]]`, with `[v6addr]` brackets.
//! No I/O except name resolution in [`resolve`], which callers choose to do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// A server as written, before its host is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    pub host: String,
    pub port: Option<u16>,
    pub max: Option<u32>,
    pub hard: Option<u32>,
    pub weight: Option<u32>,
    pub prio: Option<i32>,
}

/// Parse pen's `host:port:max:hard:weight:prio`. Trailing fields may be omitted.
pub fn parse(spec: &str) -> Result<ServerSpec, String> {
    let s = spec.trim();
    if s.is_empty() {
        return Err("empty server address".into());
    }
    let (host, rest) = if let Some(after) = s.strip_prefix('[') {
        let end = after
            .find(']')
            .ok_or_else(|| format!("server {spec:?}: missing ']' after the IPv6 address"))?;
        let rest = &after[end + 1..];
        let rest = match rest.strip_prefix(':') {
            Some(r) => r,
            None if rest.is_empty() => "",
            None => return Err(format!("server {spec:?}: expected ':' after ']'")),
        };
        (after[..end].to_string(), rest)
    } else {
        if s.parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(format!(
                "server {spec:?}: IPv6 addresses need brackets, e.g. \"[::1]:80\""
            ));
        }
        match s.split_once(':') {
            Some((h, r)) => (h.to_string(), r),
            None => (s.to_string(), ""),
        }
    };
    if host.is_empty() {
        return Err(format!("server {spec:?}: empty host"));
    }
    let fields: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split(':').collect()
    };
    if fields.len() > 5 {
        return Err(format!(
            "server {spec:?}: too many fields (host:port:max:hard:weight:prio; IPv6 needs brackets)"
        ));
    }
    let num = |i: usize, what: &str| -> Result<Option<u32>, String> {
        match fields.get(i) {
            None => Ok(None),
            Some(f) => f
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("server {spec:?}: {what} {f:?} is not a number")),
        }
    };
    let port = match fields.first() {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err(format!("server {spec:?}: port 0 is not a valid port")),
            Ok(p) => Some(p),
            Err(_) => return Err(format!("server {spec:?}: port {p:?} is not a port number")),
        },
    };
    let prio = match fields.get(4) {
        None => None,
        Some(f) => Some(
            f.parse::<i32>()
                .map_err(|_| format!("server {spec:?}: prio {f:?} is not a number"))?,
        ),
    };
    Ok(ServerSpec {
        host,
        port,
        max: num(1, "max")?,
        hard: num(2, "hard")?,
        weight: num(3, "weight")?,
        prio,
    })
}

/// The address of an IP literal, or `0.0.0.0:port` and the host name to resolve later.
pub fn address_or_name(
    spec: &ServerSpec,
    default_port: u16,
) -> Result<(SocketAddr, Option<String>), String> {
    let port = spec.port.unwrap_or(default_port);
    if let Ok(ip) = spec.host.parse::<IpAddr>() {
        return Ok((SocketAddr::new(ip, port), None));
    }
    let Some(name) = host_name(&spec.host) else {
        return Err(format!(
            "server host {:?} is neither an IP address nor a host name",
            spec.host
        ));
    };
    Ok((
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        Some(name),
    ))
}

/// A DNS name as servers use it: labels of letters, digits, `-` and `_` (SRV labels), at most
/// 253 bytes; lower case, without the trailing dot. None if `s` is not one.
pub fn host_name(s: &str) -> Option<String> {
    let name = s.trim_end_matches('.');
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then(|| name.to_ascii_lowercase())
}

/// Resolve the host (an IP literal, or a name through the system resolver, first answer wins,
/// as pen does) with `default_port` when the spec has none.
pub fn resolve(spec: &ServerSpec, default_port: u16) -> Result<SocketAddr, String> {
    let port = spec.port.unwrap_or(default_port);
    if let Ok(ip) = spec.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (spec.host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve server host {:?}: {e}", spec.host))?
        .next()
        .ok_or_else(|| format!("server host {:?} has no address", spec.host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_short_forms() {
        let s = parse("10.0.0.12:80:100:120:2:0").unwrap();
        assert_eq!(s.host, "10.0.0.12");
        assert_eq!(
            (s.port, s.max, s.hard, s.weight, s.prio),
            (Some(80), Some(100), Some(120), Some(2), Some(0))
        );
        let s = parse("web1").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("web1", None));
        let s = parse("[2001:db8::1]:8080:5").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.max),
            ("2001:db8::1", Some(8080), Some(5))
        );
        assert_eq!(resolve(&parse("[::1]").unwrap(), 81).unwrap().port(), 81);
        let (a, n) = address_or_name(&parse("App1.internal.:8080").unwrap(), 80).unwrap();
        assert_eq!(
            (a.to_string(), n.as_deref()),
            ("0.0.0.0:8080".into(), Some("app1.internal"))
        );
        let (a, n) = address_or_name(&parse("10.0.0.1").unwrap(), 80).unwrap();
        assert_eq!((a.to_string(), n), ("10.0.0.1:80".into(), None));
        assert!(address_or_name(&parse("a b:80").unwrap(), 80).is_err());
        assert!(address_or_name(&parse("a..b:80").unwrap(), 80).is_err());
    }

    #[test]
    fn bad_specs() {
        assert!(parse("").is_err());
        assert!(parse("1.2.3.4:http").unwrap_err().contains("port"));
        assert!(parse("1.2.3.4:80:x").unwrap_err().contains("max"));
        assert!(
            parse("1.2.3.4:80:1:2:3:4:5")
                .unwrap_err()
                .contains("too many")
        );
        assert!(parse("[::1").unwrap_err().contains("]"));
        assert!(parse("1.2.3.4:0").is_err());
        assert!(parse("2001:db8::1").unwrap_err().contains("brackets"));
    }
}
