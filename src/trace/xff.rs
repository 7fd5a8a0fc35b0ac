//! Finding `X-Forwarded-For` headers that name one address, in a byte stream that arrives in
//! TCP segments, and HTTP/1 request lines at segment starts.
//!
//! The stream is scanned once, segment by segment, with a fast search for the rare triple
//! `d-f` (from `forwarded-for`, any case); only there is the header name checked. What must
//! survive a segment boundary is tiny and kept in [`Pending`]: whether the segment ended at a
//! line start, how much of the header name it ended with, or the unfinished list element.

use std::net::IpAddr;

/// The header name with its colon; compared ignoring ASCII case.
const NAME: &[u8; 16] = b"x-forwarded-for:";
/// Offset of the `d-f` triple in [`NAME`].
const TRIPLE_AT: usize = 10;
/// Longest list element worth keeping across a segment boundary: `[v6 address]:port` with
/// quotes and spaces fits; anything longer cannot be an address.
const TOKEN_MAX: usize = 64;
/// How far a request line is looked for.
const REQUEST_LINE_MAX: usize = 8192;

/// The part of an element carried over to the next segment.
pub(crate) struct Token {
    buf: [u8; TOKEN_MAX],
    len: usize,
    too_long: bool,
}

impl Token {
    fn new() -> Token {
        Token {
            buf: [0; TOKEN_MAX],
            len: 0,
            too_long: false,
        }
    }

    fn push(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) if !self.too_long => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            _ => self.too_long = true,
        }
    }
}

/// Where the previous segment of this direction left off.
#[derive(Default)]
pub(crate) enum Pending {
    /// Mid-line (or unknown: after a gap).
    #[default]
    None,
    /// Right after a newline.
    LineStart,
    /// At a line start followed by this many bytes of the header name.
    Name(u8),
    /// Inside a header value, with the unfinished element (boxed: rare, and keeps flows small).
    Value(Box<Token>),
}

/// The address looked for.
pub(crate) struct Needle(IpAddr);

impl Needle {
    pub(crate) fn new(ip: IpAddr) -> Needle {
        Needle(ip.to_canonical())
    }

    /// Does one list element (untrimmed) name the address? Accepts `a.b.c.d`, `a.b.c.d:port`,
    /// `v6`, `[v6]`, `[v6]:port`, optionally in double quotes (RFC 7239 style).
    pub(crate) fn is(&self, elem: &[u8]) -> bool {
        let e = elem.trim_ascii();
        let e = e
            .strip_prefix(b"\"")
            .and_then(|x| x.strip_suffix(b"\""))
            .unwrap_or(e);
        let Ok(s) = std::str::from_utf8(e) else {
            return false;
        };
        let host = if let Some(rest) = s.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, _)) => h,
                None => return false,
            }
        } else if s.bytes().filter(|&c| c == b':').count() == 1 {
            s.split(':').next().unwrap_or(s)
        } else {
            s
        };
        host.parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical() == self.0)
    }
}

/// Feed the next new bytes of one direction; true if an `X-Forwarded-For` header line in them
/// (or completed by them) names the address.
pub(crate) fn feed(pending: &mut Pending, b: &[u8], needle: &Needle) -> bool {
    let mut hit = false;
    // Finish what the previous segment left open, then scan from `pos`; `at_line` says
    // whether `pos` is a line start.
    let (mut pos, mut at_line) = match std::mem::take(pending) {
        Pending::None => (0, false),
        Pending::LineStart => (0, true),
        Pending::Name(n) => {
            let n = usize::from(n);
            let want = NAME.len() - n;
            let k = want.min(b.len());
            if !b[..k].eq_ignore_ascii_case(&NAME[n..n + k]) {
                (0, false)
            } else if k < want {
                *pending = Pending::Name((n + k) as u8);
                return false;
            } else {
                match value(b, want, Token::new(), needle, &mut hit) {
                    Ok(eol) => (eol + 1, true),
                    Err(tok) => {
                        *pending = Pending::Value(tok);
                        return hit;
                    }
                }
            }
        }
        Pending::Value(tok) => match value(b, 0, *tok, needle, &mut hit) {
            Ok(eol) => (eol + 1, true),
            Err(tok) => {
                *pending = Pending::Value(tok);
                return hit;
            }
        },
    };
    let mut from = pos + TRIPLE_AT;
    while let Some(t) = find_triple(b, from) {
        let s = t - TRIPLE_AT;
        let line_start = if s == pos { at_line } else { b[s - 1] == b'\n' };
        let name_ok = b
            .get(s..s + NAME.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(NAME));
        if !(line_start && name_ok) {
            from = t + 1;
            continue;
        }
        match value(b, s + NAME.len(), Token::new(), needle, &mut hit) {
            Ok(eol) => {
                pos = eol + 1;
                at_line = true;
                from = pos + TRIPLE_AT;
            }
            Err(tok) => {
                *pending = Pending::Value(tok);
                return hit;
            }
        }
    }
    *pending = tail(b, pos, at_line);
    hit
}

/// The state after `b` when nothing is open: does it end at a line start, or at a line start
/// plus a prefix of the header name?
fn tail(b: &[u8], pos: usize, at_line: bool) -> Pending {
    let floor = pos.max(b.len().saturating_sub(NAME.len()));
    let start = match b[floor..].iter().rposition(|&c| c == b'\n') {
        Some(j) => floor + j + 1,
        None if at_line && floor == pos => pos,
        None => return Pending::None,
    };
    let t = &b[start..];
    if t.is_empty() {
        Pending::LineStart
    } else if t.len() < NAME.len() && t.eq_ignore_ascii_case(&NAME[..t.len()]) {
        Pending::Name(t.len() as u8)
    } else {
        Pending::None
    }
}

/// Check the header value starting at `b[at..]`, `tok` being its unfinished first element
/// from the previous segment. Ok(index of the newline ending it), or Err(the unfinished last
/// element) if the segment ends first.
fn value(
    b: &[u8],
    at: usize,
    mut tok: Token,
    needle: &Needle,
    hit: &mut bool,
) -> Result<usize, Box<Token>> {
    let rest = &b[at..];
    let eol = rest.iter().position(|&c| c == b'\n');
    let line = &rest[..eol.unwrap_or(rest.len())];
    let mut elems = line.split(|&c| c == b',').peekable();
    let mut first = true;
    while let Some(e) = elems.next() {
        let last = elems.peek().is_none();
        if last && eol.is_none() {
            // Unfinished: carry it over (leading blanks are dropped to save room).
            if first {
                tok.push(if tok.len == 0 {
                    e.trim_ascii_start()
                } else {
                    e
                });
            } else {
                tok = Token::new();
                tok.push(e.trim_ascii_start());
            }
            return Err(Box::new(tok));
        }
        let hit_here = if first && (tok.len > 0 || tok.too_long) {
            tok.push(e);
            !tok.too_long && needle.is(&tok.buf[..tok.len])
        } else {
            needle.is(e)
        };
        *hit |= hit_here;
        first = false;
    }
    Ok(at + eol.unwrap_or(rest.len()))
}

/// The first index `i >= from` where `b[i..i + 3]` is `d-f` in any case.
pub(crate) fn find_triple(b: &[u8], from: usize) -> Option<usize> {
    const W: usize = 32;
    let mut i = from;
    // Fixed-size blocks so the compiler turns the test into vector compares.
    while i + W + 2 <= b.len() {
        let blk: &[u8; W + 2] = b[i..i + W + 2].try_into().ok()?;
        let mut any = false;
        for j in 0..W {
            any |= (blk[j] | 0x20 == b'd') & (blk[j + 1] == b'-') & (blk[j + 2] | 0x20 == b'f');
        }
        if any {
            break;
        }
        i += W;
    }
    while i + 3 <= b.len() {
        if b[i] | 0x20 == b'd' && b[i + 1] == b'-' && b[i + 2] | 0x20 == b'f' {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// If `b` starts with an HTTP/1.x request line: that line without its CR LF, and whether it
/// is whole. A line the segment ends in (a long URL, a split send) is taken as the start of
/// one if it is printable text.
pub(crate) fn request_line(b: &[u8]) -> Option<(&[u8], bool)> {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    // Cheap first-byte filter: most segments start with something else.
    if !matches!(
        b.first(),
        Some(b'G' | b'P' | b'H' | b'D' | b'O' | b'C' | b'T')
    ) {
        return None;
    }
    if !METHODS.iter().any(|m| b.starts_with(m)) {
        return None;
    }
    let head = &b[..b.len().min(REQUEST_LINE_MAX)];
    let (line, ended) = match head.iter().position(|&c| c == b'\n') {
        Some(nl) => (&head[..nl], true),
        None if head.len() < b.len() => return None,
        None => (head, false),
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let versioned = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    if versioned {
        Some((line, true))
    } else if !ended && line.iter().all(|&c| (0x20..0x7f).contains(&c)) {
        Some((line, false))
    } else {
        None
    }
}

/// Request lines that follow the first one in the same segment (pipelining): each must start
/// right after a blank line.
pub(crate) fn next_request(b: &[u8]) -> Option<(usize, &[u8], bool)> {
    let mut from = 0;
    while let Some(i) = b[from..].windows(4).position(|w| w == b"\r\n\r\n") {
        let at = from + i + 4;
        if let Some((line, whole)) = request_line(&b[at..]) {
            return Some((at, line, whole));
        }
        from = at;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needle() -> Needle {
        Needle::new("10.1.2.3".parse().expect("ip"))
    }

    /// Feed `parts` in order from a line start; true if any part hit.
    fn run(parts: &[&[u8]]) -> bool {
        let mut p = Pending::LineStart;
        parts
            .iter()
            .fold(false, |h, b| feed(&mut p, b, &needle()) | h)
    }

    #[test]
    fn whole_elements_only() {
        assert!(run(&[b"X-Forwarded-For: 10.1.2.3\r\n"]));
        assert!(run(&[b"x-forwarded-for:1.1.1.1, 10.1.2.3\r\n"]));
        assert!(run(&[b"X-FORWARDED-FOR: 1.1.1.1,10.1.2.3 , 2.2.2.2\r\n"]));
        assert!(run(&[b"X-Forwarded-For: 10.1.2.3:4711\r\n"]));
        assert!(run(&[b"X-Forwarded-For: \"10.1.2.3\"\r\n"]));
        assert!(!run(&[b"X-Forwarded-For: 10.1.2.30\r\n"]));
        assert!(!run(&[b"X-Forwarded-For: 110.1.2.3\r\n"]));
        assert!(!run(&[b"X-Forwarded-Fox: 10.1.2.3\r\n"]));
        assert!(!run(&[b"Y-X-Forwarded-For: 10.1.2.3\r\n"]));
        assert!(!run(&[b"Foo: X-Forwarded-For: 10.1.2.3\r\n"]));
        assert!(!run(&[b"X-Forwarded-For: 1.1.1.1\r\nHost: 10.1.2.3\r\n"]));
    }

    #[test]
    fn ipv6_forms() {
        let n = Needle::new("2001:db8::1".parse().expect("ip"));
        assert!(n.is(b" 2001:db8:0::1"));
        assert!(n.is(b"[2001:db8::1]:80"));
        assert!(!n.is(b"2001:db8::10"));
        let v4 = needle();
        assert!(v4.is(b"::ffff:10.1.2.3"));
    }

    #[test]
    fn every_split_point() {
        let msg: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 10.1.2.3\r\n\r\n";
        let miss: &[u8] =
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 10.1.2.30\r\n\r\n";
        for i in 0..=msg.len() {
            for j in i..=msg.len() {
                let mut p = Pending::None;
                let h = feed(&mut p, &msg[..i], &needle())
                    | feed(&mut p, &msg[i..j], &needle())
                    | feed(&mut p, &msg[j..], &needle());
                assert!(h, "split at {i},{j}");
            }
            let mut p = Pending::None;
            let h = feed(&mut p, &miss[..i], &needle()) | feed(&mut p, &miss[i..], &needle());
            assert!(!h, "split at {i}");
        }
        // One byte at a time.
        assert!(run(&msg.chunks(1).collect::<Vec<_>>()));
        assert!(!run(&miss.chunks(1).collect::<Vec<_>>()));
    }

    #[test]
    fn triple_search() {
        let mut b = vec![b'x'; 200];
        assert_eq!(find_triple(&b, 0), None);
        for at in [0, 5, 31, 32, 33, 63, 100, 197] {
            b[at..at + 3].copy_from_slice(b"D-F");
            assert_eq!(find_triple(&b, 0), Some(at), "{at}");
            assert_eq!(find_triple(&b, at + 1), None);
            b[at..at + 3].copy_from_slice(b"xxx");
        }
    }

    #[test]
    fn request_lines() {
        let whole = |l: &'static [u8]| Some((l, true));
        assert_eq!(
            request_line(b"GET /a HTTP/1.1\r\nHost: x\r\n"),
            whole(b"GET /a HTTP/1.1")
        );
        assert_eq!(request_line(b"GET /a HTTP/1.1"), whole(b"GET /a HTTP/1.1"));
        assert_eq!(
            request_line(b"GET /a HTTP/1.1\r"),
            whole(b"GET /a HTTP/1.1")
        );
        assert_eq!(
            request_line(b"GET /very-lo"),
            Some((&b"GET /very-lo"[..], false))
        );
        assert_eq!(request_line(b"GET /a\x00"), None);
        assert_eq!(request_line(b"GET /a\r\n"), None);
        assert_eq!(request_line(b"GETS /a HTTP/1.1\r\n"), None);
        assert_eq!(request_line(b"HTTP/1.1 200 OK\r\n"), None);
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.0\r\n\r\n";
        assert_eq!(
            next_request(two),
            Some((28, &b"POST /b HTTP/1.0"[..], true))
        );
        assert_eq!(next_request(&two[28..]), None);
    }
}
