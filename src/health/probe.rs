//! What a check sends and how its reply is judged: pure functions of bytes, no I/O.

use std::net::SocketAddr;

use crate::config::Health;

/// The most of a reply a check reads: a larger or endless reply is judged on this much.
pub const MAX_READ: usize = 16 * 1024;

/// What the bytes read so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Not decided yet: read more.
    More,
}

/// The HTTP check's request: `method path`, a Host header (the configured one, else the
/// server's address) and `Connection: close`.
pub fn http_request(h: &Health, server: SocketAddr) -> Vec<u8> {
    let host = h.host.clone().unwrap_or_else(|| server.to_string());
    format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fwlb-check\r\nConnection: close\r\n\r\n",
        h.method, h.path
    )
    .into_bytes()
}

/// Judge an HTTP reply from its first bytes: `buf` holds what came so far, `eof` says the
/// server closed (or `MAX_READ` was reached).
pub fn judge_http(h: &Health, buf: &[u8], eof: bool) -> Verdict {
    let done = eof || buf.len() >= MAX_READ;
    let Some(line_end) = buf.iter().position(|b| *b == b'\n') else {
        return match (done, buf.is_empty()) {
            (false, _) => Verdict::More,
            (true, true) => Verdict::Fail("closed without a reply".into()),
            (true, false) => Verdict::Fail("bad status line".into()),
        };
    };
    let Some(code) = status_code(&buf[..line_end]) else {
        return Verdict::Fail("bad status line".into());
    };
    if !h
        .expect_status
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&code))
    {
        return Verdict::Fail(format!("HTTP {code}"));
    }
    let Some(want) = &h.expect_body else {
        return Verdict::Pass;
    };
    let body = find(buf, b"\r\n\r\n").map(|i| &buf[i + 4..]);
    match body {
        Some(b) if find(b, want.as_bytes()).is_some() => Verdict::Pass,
        _ if done => Verdict::Fail("body mismatch".into()),
        _ => Verdict::More,
    }
}

/// The code of `HTTP/1.x NNN reason`.
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut words = line.split(' ');
    let version = words.next()?;
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Judge a send-expect reply: it must start with `expect`.
pub fn judge_expect(expect: &[u8], buf: &[u8], eof: bool) -> Verdict {
    let n = buf.len().min(expect.len());
    if buf[..n] != expect[..n] {
        return Verdict::Fail(format!("unexpected reply {:?}", printable(buf)));
    }
    if n == expect.len() {
        Verdict::Pass
    } else if eof || buf.len() >= MAX_READ {
        Verdict::Fail(if buf.is_empty() {
            "closed without a reply".into()
        } else {
            format!("short reply {:?}", printable(buf))
        })
    } else {
        Verdict::More
    }
}

/// The first bytes of a reply, for a log line (at most 32, lossy).
fn printable(buf: &[u8]) -> String {
    String::from_utf8_lossy(&buf[..buf.len().min(32)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Check, Health};

    fn http() -> Health {
        Health::with(Check::Http)
    }

    #[test]
    fn request_bytes() {
        let mut h = http();
        h.method = "HEAD".into();
        h.path = "/health".into();
        let addr: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        assert_eq!(
            http_request(&h, addr),
            b"HEAD /health HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: fwlb-check\r\nConnection: close\r\n\r\n"
        );
        h.host = Some("app.internal".into());
        assert!(
            String::from_utf8(http_request(&h, addr))
                .unwrap()
                .contains("\r\nHost: app.internal\r\n")
        );
    }

    #[test]
    fn status_lines() {
        let h = http();
        assert_eq!(judge_http(&h, b"HTTP/1.1 200 OK\r\n", false), Verdict::Pass);
        assert_eq!(
            judge_http(&h, b"HTTP/1.0 302 Found\r\n", false),
            Verdict::Pass
        );
        assert_eq!(
            judge_http(&h, b"HTTP/1.1 503 Unavailable\r\n", false),
            Verdict::Fail("HTTP 503".into())
        );
        assert_eq!(judge_http(&h, b"HTTP/1.1 2", false), Verdict::More);
        assert_eq!(
            judge_http(&h, b"HTTP/1.1 2", true),
            Verdict::Fail("bad status line".into())
        );
        assert_eq!(
            judge_http(&h, b"", true),
            Verdict::Fail("closed without a reply".into())
        );
        for garbage in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"HTTP/1.1 20 OK\r\n",
            b"HTTP/1.1 abc OK\r\n",
            b"HTTP/2 200\r\n",
            b"\xff\xfe\r\n",
            b"HTTP/1.1 999 X\r\n",
        ] {
            assert_eq!(
                judge_http(&h, garbage, false),
                Verdict::Fail("bad status line".into()),
                "{garbage:?}"
            );
        }
        // 16 KiB without a line end: judged, not read forever.
        assert_eq!(
            judge_http(&h, &vec![b'x'; MAX_READ], false),
            Verdict::Fail("bad status line".into())
        );
    }

    #[test]
    fn status_ranges_and_body() {
        let mut h = http();
        h.expect_status = vec![(204, 204), (300, 302)];
        assert_eq!(
            judge_http(&h, b"HTTP/1.1 200 OK\r\n", false),
            Verdict::Fail("HTTP 200".into())
        );
        assert_eq!(judge_http(&h, b"HTTP/1.1 301 M\r\n", false), Verdict::Pass);
        let mut h = http();
        h.expect_body = Some("\"ok\"".into());
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n";
        assert_eq!(judge_http(&h, head, false), Verdict::More);
        let mut full = head.to_vec();
        full.extend_from_slice(b"{\"status\": \"ok\"}");
        assert_eq!(judge_http(&h, &full, false), Verdict::Pass);
        let mut bad = head.to_vec();
        bad.extend_from_slice(b"{\"status\": \"bad\"}");
        assert_eq!(
            judge_http(&h, &bad, true),
            Verdict::Fail("body mismatch".into())
        );
        // The marker only in the headers does not count.
        let tricky = b"HTTP/1.1 200 OK\r\nX: \"ok\"\r\n\r\nnope";
        assert_eq!(
            judge_http(&h, tricky, true),
            Verdict::Fail("body mismatch".into())
        );
    }

    #[test]
    fn send_expect_prefixes() {
        assert_eq!(judge_expect(b"+PONG", b"+PO", false), Verdict::More);
        assert_eq!(judge_expect(b"+PONG", b"+PONG\r\n", false), Verdict::Pass);
        assert_eq!(
            judge_expect(b"+PONG", b"-ERR", false),
            Verdict::Fail("unexpected reply \"-ERR\"".into())
        );
        assert_eq!(
            judge_expect(b"220", b"", true),
            Verdict::Fail("closed without a reply".into())
        );
        assert_eq!(
            judge_expect(b"220", b"2", true),
            Verdict::Fail("short reply \"2\"".into())
        );
    }
}
