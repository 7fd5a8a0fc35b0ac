//! `health = { check = ..., ... }` of a `[[balancer]]`: the active health check's settings,
//! every error reported at its location. No I/O.

use std::time::Duration;

use toml_edit::TableLike;

use super::reader::{Reader, span_of};

/// What an active check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// No active check (pen's behaviour): only failed connects take a server out.
    None,
    /// A TCP connect.
    Tcp,
    /// An HTTP request, the status (and optionally the body) checked.
    Http,
    /// Bytes sent, a prefix of the reply expected (Redis `PING` / `+PONG`, SMTP `220`).
    SendExpect,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::None => "none",
            Check::Tcp => "tcp",
            Check::Http => "http",
            Check::SendExpect => "send-expect",
        }
    }
}

/// What happens to the established connections of a server marked down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDown {
    /// They go on (the default).
    Keep,
    /// They are cut.
    Shutdown,
}

/// `on_down = "keep" | "shutdown"` of a balancer table.
pub fn on_down(r: &mut Reader, t: &dyn TableLike) -> OnDown {
    match r.string(t, "on_down") {
        None | Some(("keep", _)) => OnDown::Keep,
        Some(("shutdown", _)) => OnDown::Shutdown,
        Some((other, item)) => {
            r.err_at(
                item,
                format!("`on_down`: {other:?} is not \"keep\" or \"shutdown\""),
            );
            OnDown::Keep
        }
    }
}

/// One balancer's health-check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub check: Check,
    pub interval: Duration,
    /// While a server is changing state (rising or falling).
    pub fast_interval: Duration,
    /// While a server is down.
    pub down_interval: Duration,
    /// For the whole check: connect, write and read.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The port checked; None: the server's.
    pub port: Option<u16>,
    /// Send a PROXY v1 header first.
    pub proxy_protocol: bool,
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    /// Accepted status codes, as inclusive ranges.
    pub expect_status: Vec<(u16, u16)>,
    pub expect_body: Option<String>,
    pub send: Vec<u8>,
    pub expect: Vec<u8>,
    /// The agent check (`agent = { port = N, ... }` of the balancer), if any.
    pub agent: Option<Agent>,
}

/// `agent = { port = N, interval = "2s", timeout = "1s" }`: HAProxy's agent check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub port: u16,
    pub interval: Duration,
    /// For connect and the line together.
    pub timeout: Duration,
}

/// The `agent` key of a balancer table.
pub fn agent(r: &mut Reader, t: &dyn TableLike) -> Option<Agent> {
    let item = t.get("agent")?;
    let Some(a) = item.as_table_like() else {
        r.err_at(item, "`agent` must be a table, e.g. { port = 9999 }");
        return None;
    };
    r.check_keys(a, "`agent`", &["port", "interval", "timeout"]);
    let mut out = Agent {
        port: 0,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
    };
    for (key, field) in [
        ("interval", &mut out.interval),
        ("timeout", &mut out.timeout),
    ] {
        if let Some((d, item)) = r.duration(a, key) {
            if d.is_zero() {
                r.err_at(item, format!("`{key}` must be more than 0s"));
            } else {
                *field = d;
            }
        }
    }
    match a.get("port") {
        None => {
            r.err_at(item, "`agent` needs a `port`");
            None
        }
        Some(_) => {
            out.port = r.int(a, "port", 1, 65_535)? as u16;
            Some(out)
        }
    }
}

impl Health {
    /// The defaults with `check`.
    pub fn with(check: Check) -> Self {
        Health {
            check,
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(500),
            down_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            port: None,
            proxy_protocol: false,
            method: "GET".into(),
            path: "/".into(),
            host: None,
            expect_status: vec![(200, 399)],
            expect_body: None,
            send: Vec::new(),
            expect: Vec::new(),
            agent: None,
        }
    }

    /// The default of a balancer with `servers` servers: a TCP check when there is a choice.
    pub fn default_for(servers: usize) -> Self {
        Health::with(if servers > 1 { Check::Tcp } else { Check::None })
    }
}

const KEYS: &[&str] = &[
    "check",
    "interval",
    "fast_interval",
    "down_interval",
    "timeout",
    "rise",
    "fall",
    "port",
    "proxy_protocol",
    "method",
    "path",
    "host",
    "expect_status",
    "expect_body",
    "send",
    "expect",
];

/// The `health` key of a balancer table with `servers` servers.
pub fn read(r: &mut Reader, t: &dyn TableLike, servers: usize) -> Health {
    let Some(item) = t.get("health") else {
        return Health::default_for(servers);
    };
    let Some(h) = item.as_table_like() else {
        r.err_at(item, "`health` must be a table, e.g. { check = \"tcp\" }");
        return Health::default_for(servers);
    };
    // A `health` table without `check` means a TCP check.
    let mut out = Health::with(Check::Tcp);
    overlay(r, h, &mut out);
    out
}

/// A server's own `health` and `agent` keys (a server written as a table) over its
/// balancer's settings `base`; None when it has neither.
pub fn for_server(r: &mut Reader, t: &dyn TableLike, base: &Health) -> Option<Health> {
    if t.get("health").is_none() && t.get("agent").is_none() {
        return None;
    }
    let mut out = base.clone();
    if let Some(item) = t.get("health") {
        match item.as_table_like() {
            Some(h) => overlay(r, h, &mut out),
            None => r.err_at(item, "`health` must be a table, e.g. { path = \"/ready\" }"),
        }
    }
    if t.get("agent").is_some() {
        out.agent = agent(r, t);
    }
    Some(out)
}

/// The keys of the `health` table `h` over `out`.
fn overlay(r: &mut Reader, h: &dyn TableLike, out: &mut Health) {
    r.check_keys(h, "`health`", KEYS);
    if h.get("check").is_some() {
        out.check = check(r, h);
    }
    timings(r, h, out);
    if let Some(p) = r.int(h, "port", 1, 65_535) {
        out.port = Some(p as u16);
    }
    if let Some(b) = r.boolean(h, "proxy_protocol") {
        out.proxy_protocol = b;
    }
    http(r, h, out);
    send_expect(r, h, out);
}

fn check(r: &mut Reader, h: &dyn TableLike) -> Check {
    let Some((s, item)) = r.string(h, "check") else {
        return Check::Tcp;
    };
    match s {
        "none" => Check::None,
        "tcp" => Check::Tcp,
        "http" => Check::Http,
        "send-expect" => Check::SendExpect,
        other => {
            r.err_at(
                item,
                format!(
                    "`check`: {other:?} is not one of \"tcp\", \"http\", \"send-expect\", \"none\""
                ),
            );
            Check::Tcp
        }
    }
}

fn timings(r: &mut Reader, h: &dyn TableLike, out: &mut Health) {
    let positive = |r: &mut Reader, key: &str, field: &mut Duration| {
        if let Some((d, item)) = r.duration(h, key) {
            if d.is_zero() {
                r.err_at(item, format!("`{key}` must be more than 0s"));
            } else {
                *field = d;
            }
        }
    };
    positive(r, "interval", &mut out.interval);
    positive(r, "fast_interval", &mut out.fast_interval);
    positive(r, "down_interval", &mut out.down_interval);
    positive(r, "timeout", &mut out.timeout);
    if let Some(n) = r.int(h, "rise", 1, 1000) {
        out.rise = n as u32;
    }
    if let Some(n) = r.int(h, "fall", 1, 1000) {
        out.fall = n as u32;
    }
}

fn http(r: &mut Reader, h: &dyn TableLike, out: &mut Health) {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if let Some((m, item)) = r.string(h, "method") {
        if token(m) {
            out.method = m.to_string();
        } else {
            r.err_at(item, format!("`method`: {m:?} is not an HTTP method"));
        }
    }
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if let Some((p, item)) = r.string(h, "path") {
        if p.starts_with('/') && printable(p) {
            out.path = p.to_string();
        } else {
            r.err_at(
                item,
                format!("`path`: {p:?} must start with / and hold no space"),
            );
        }
    }
    if let Some((host, item)) = r.string(h, "host") {
        if !host.is_empty() && printable(host) {
            out.host = Some(host.to_string());
        } else {
            r.err_at(item, format!("`host`: {host:?} is not a host name"));
        }
    }
    if let Some(list) = r.strings(h, "expect_status") {
        out.expect_status.clear();
        for (s, span) in list {
            match status_range(s) {
                Some(range) => out.expect_status.push(range),
                None => r.err(
                    span,
                    format!(
                        "`expect_status`: {s:?} is not a status code or a range like \"200-399\""
                    ),
                ),
            }
        }
    }
    if let Some((b, _)) = r.string(h, "expect_body") {
        out.expect_body = Some(b.to_string());
    }
}

/// "200" or "200-399".
pub fn status_range(s: &str) -> Option<(u16, u16)> {
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    match s.split_once('-') {
        Some((a, b)) => Some((code(a)?, code(b)?)).filter(|(a, b)| a <= b),
        None => code(s).map(|c| (c, c)),
    }
}

fn send_expect(r: &mut Reader, h: &dyn TableLike, out: &mut Health) {
    let bytes = |r: &mut Reader, key: &str| -> Option<Vec<u8>> {
        let (s, item) = r.string(h, key)?;
        match unescape(s) {
            Ok(b) => Some(b),
            Err(e) => {
                r.err_at(item, format!("`{key}`: {e}"));
                None
            }
        }
    };
    if let Some(b) = bytes(r, "send") {
        out.send = b;
    }
    if let Some(b) = bytes(r, "expect") {
        out.expect = b;
    }
    if out.check == Check::SendExpect && out.expect.is_empty() {
        let span = h.get("check").and_then(span_of);
        r.err(
            span,
            "`health`: check = \"send-expect\" needs a non-empty `expect`",
        );
    }
}

/// `\r`, `\n`, `\t`, `\\`, `\0` and `\xHH` (TOML's own escapes are undone by the TOML parser
/// already; these serve literal strings, where `'PING\r\n'` stays as written).
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = it.by_ref().take(2).collect();
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("\\x needs two hex digits")?;
                out.push(v);
            }
            Some(c) => return Err(format!("unknown escape \\{}", c as char)),
            None => return Err("a lone \\ at the end".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_escapes() {
        assert_eq!(status_range("200-399"), Some((200, 399)));
        assert_eq!(status_range("204"), Some((204, 204)));
        assert_eq!(status_range("399-200"), None);
        assert_eq!(status_range("abc"), None);
        assert_eq!(status_range("999"), None);
        assert_eq!(unescape("PING\\r\\n").unwrap(), b"PING\r\n");
        assert_eq!(unescape("\\x41\\\\").unwrap(), b"A\\");
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
        assert!(unescape("x\\").is_err());
    }
}
