//! A streaming HTTP/1.x request rewriter for the client->server direction of a relay: adds
//! X-Forwarded-For / X-Forwarded-Proto to every request of a keep-alive connection, whatever
//! the read boundaries. Bodies are framed as RFC 9112 §6 says so the next head is found, and
//! ambiguous framing (the request smuggling vectors) is refused. A connection whose first
//! line cannot be an HTTP request (TLS, SSH...) is relayed untouched. No I/O.

use std::collections::VecDeque;
use std::net::IpAddr;

/// Longest request head (request line, header lines, blank line).
pub const MAX_HEAD: usize = 16 * 1024;

/// What the relay sends the client when `feed` refuses its bytes.
pub const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What a client whose request head is not complete within its time is answered.
pub const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Longest method accepted.
const MAX_METHOD: usize = 20;
/// Request lines kept for `take_request_lines`, and the bytes kept of each: the caller logs
/// them, so a client must not make them grow without bound.
const MAX_LOGGED: usize = 16;
const MAX_LOGGED_LINE: usize = 1024;
/// Longest chunk-size line (extensions included) or trailer line. Nothing is buffered there;
/// the bound only stops a client from streaming an endless extension at the server.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone)]
pub struct XffConfig {
    /// The address to add.
    pub client: IpAddr,
    /// The client is a trusted proxy: keep its X-Forwarded-For and append; else replace.
    pub trusted: bool,
    /// "http" or "https" for X-Forwarded-Proto.
    pub proto: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    HeadTooLarge,
    Malformed(&'static str),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::HeadTooLarge => write!(f, "request head longer than {MAX_HEAD} bytes"),
            HttpError::Malformed(why) => write!(f, "malformed request: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

fn bad<T>(why: &'static str) -> Result<T, HttpError> {
    Err(HttpError::Malformed(why))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Start of the connection: not yet known to be HTTP; `head` holds the bytes so far.
    Detect(Sniff),
    /// Reading a request head into `head`.
    Head,
    /// Relaying this many more Content-Length body bytes.
    Body(u64),
    /// Relaying a chunked body.
    Chunked(Chunk),
    /// Not HTTP, or switched protocols: relayed untouched.
    Passthrough,
    /// `feed` refused the stream (`failed` says why).
    Failed,
}

/// Where a chunked body is (RFC 9112 §7.1). Framing is checked byte by byte; chunk data is
/// relayed in bulk. CRLF is required here even though heads accept bare LF: the body is
/// relayed as is, so any leniency the server does not share would desynchronise us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In the hex chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: optional whitespace, then `;` extensions, up to CR.
    Ext {
        size: u64,
        semi: bool,
        len: usize,
    },
    /// CR of the size line seen.
    SizeLf {
        size: u64,
    },
    /// Chunk data bytes still to relay.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line or of the final empty line.
    TrailerStart,
    TrailerName {
        len: usize,
    },
    TrailerValue {
        len: usize,
    },
    TrailerLf,
    /// CR of the final empty line seen.
    EndLf,
}

/// How far the first line of the connection has been sniffed.
///
/// Passthrough is only chosen when no lenient HTTP server could read the line as a request:
/// nginx and node skip leading CR/LF, nginx takes `_`/`-` in methods, Go any token and any
/// length. Relaying such a line untouched would deliver a forged X-Forwarded-For, so these
/// count as HTTP here and are then refused by the strict request-line rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    /// Only CR / LF so far.
    Blank,
    /// In a token; the request line starts at `blank`.
    Method { blank: usize },
    /// After "token SP": HTTP if the line has "HTTP/" by its LF.
    Line { blank: usize },
}

enum Sniffed {
    /// All bytes looked at, undecided.
    More(Sniff),
    NotHttp,
    /// The first line ends `used` bytes into the input.
    LineEnd {
        used: usize,
        blank: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    XForwardedFor,
    XForwardedProto,
    ContentLength,
    TransferEncoding,
    Upgrade,
    Connection,
    Other,
}

/// One header line of the head being read, as offsets into `head`.
#[derive(Debug, Clone, Copy)]
struct HeaderLine {
    start: usize,
    /// The value, without surrounding whitespace.
    value: (usize, usize),
    /// Just after the line's LF.
    next: usize,
    kind: Kind,
}

/// The request line of the head being read.
#[derive(Debug, Clone, Copy, Default)]
struct RequestLine {
    /// End of the line's text (before CR LF).
    end: usize,
    connect: bool,
    http10: bool,
}

pub struct RequestRewriter {
    cfg: XffConfig,
    /// `cfg.client` as text, once.
    client: String,
    state: State,
    failed: Option<HttpError>,
    /// The head read so far (or, in Detect, the undecided first bytes).
    head: Vec<u8>,
    /// Start of the head line not yet ended; 0 while the request line is being read.
    line_start: usize,
    req: RequestLine,
    headers: Vec<HeaderLine>,
    requests: u64,
    lines: VecDeque<String>,
}

impl RequestRewriter {
    pub fn new(cfg: XffConfig) -> Self {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; the server wants a.b.c.d.
        let client = cfg.client.to_canonical().to_string();
        RequestRewriter {
            cfg,
            client,
            state: State::Detect(Sniff::Blank),
            failed: None,
            head: Vec::new(),
            line_start: 0,
            req: RequestLine::default(),
            headers: Vec::new(),
            requests: 0,
            lines: VecDeque::new(),
        }
    }

    /// Feed bytes read from the client; append what must go to the server to `out`. Bytes of an
    /// incomplete head are kept inside until the head is complete. After an error every call
    /// returns it again; what was appended to `out` by the failing call is not to be sent.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.run(input, out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.state = State::Failed;
            self.head = Vec::new();
            self.headers = Vec::new();
        }
        r
    }

    /// Requests rewritten so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// True once the stream was found not to be HTTP (relayed untouched from then on) or was
    /// switched to opaque after CONNECT / Upgrade.
    pub fn passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// Between requests or inside a head: the client owes the next request head (its body,
    /// if any, has been relayed whole). False once passthrough or failed.
    pub fn awaiting_head(&self) -> bool {
        matches!(self.state, State::Detect(_) | State::Head)
    }

    /// Bytes of a started but incomplete request head held inside (0 between requests).
    pub fn partial_head(&self) -> usize {
        match self.state {
            State::Head => self.head.len(),
            _ => 0,
        }
    }

    /// Request lines seen (method SP target SP version), drained by the caller for logging; at
    /// most 16 not yet drained are kept (the newest), each cut to 1 KiB.
    pub fn take_request_lines(&mut self) -> Vec<String> {
        self.lines.drain(..).collect()
    }

    fn run(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
        while !input.is_empty() {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                // `feed` returns the error before getting here.
                State::Failed => return Ok(()),
                State::Detect(s) => {
                    // Only bytes within MAX_HEAD of the start may decide, so that every split
                    // of the stream decides alike.
                    let room = MAX_HEAD.saturating_sub(self.head.len());
                    let window = input.get(..room).unwrap_or(input);
                    match sniff(s, self.head.len(), window) {
                        Sniffed::More(s) => {
                            if input.len() > window.len() {
                                return Err(HttpError::HeadTooLarge);
                            }
                            self.head.extend_from_slice(input);
                            self.state = State::Detect(s);
                            return Ok(());
                        }
                        Sniffed::NotHttp => {
                            self.passthrough_from(input, out);
                            return Ok(());
                        }
                        Sniffed::LineEnd { used, blank } => {
                            let (line, rest) = input.split_at(used.min(input.len()));
                            self.head.extend_from_slice(line);
                            let first = span(&self.head, blank, self.head.len());
                            if !first.windows(5).any(|w| w.eq_ignore_ascii_case(b"HTTP/")) {
                                self.passthrough_from(rest, out);
                                return Ok(());
                            }
                            // Read the head from its request line; the blank lines before it
                            // are dropped (RFC 9112 §2.2).
                            let buffered = std::mem::take(&mut self.head);
                            self.state = State::Head;
                            self.run(span(&buffered, blank, buffered.len()), out)?;
                            input = rest;
                        }
                    }
                }
                State::Head => match self.read_head(input, out)? {
                    Some(rest) => input = rest,
                    None => return Ok(()),
                },
                State::Body(left) => {
                    let (body, rest) = take(input, left);
                    out.extend_from_slice(body);
                    input = rest;
                    let left = left.saturating_sub(body.len() as u64);
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::Chunked(c) => input = self.chunked(c, input, out)?,
            }
        }
        Ok(())
    }

    /// Not HTTP: the sniffed bytes and `input` go out untouched, and all that follows.
    fn passthrough_from(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.append(&mut self.head);
        out.extend_from_slice(input);
        self.head = Vec::new();
        self.state = State::Passthrough;
    }

    /// Take head lines from `input`. When the head is complete it is emitted rewritten, the
    /// state moves on, and the bytes after it are returned; None when all went into `head`.
    fn read_head<'a>(
        &mut self,
        mut input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<&'a [u8]>, HttpError> {
        loop {
            let Some(nl) = find_byte(input, b'\n') else {
                if self.head.len() + input.len() > MAX_HEAD {
                    return Err(HttpError::HeadTooLarge);
                }
                self.head.extend_from_slice(input);
                return Ok(None);
            };
            if self.head.len() + nl + 1 > MAX_HEAD {
                return Err(HttpError::HeadTooLarge);
            }
            // `nl` is an index into `input`, so both halves exist.
            let (line, rest) = input.split_at(nl + 1);
            input = rest;
            self.head.extend_from_slice(line);
            let start = self.line_start;
            let next = self.head.len();
            // The line's text without LF or CRLF.
            let text = span(&self.head, start, next - 1);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            let end = start + text.len();
            if text.contains(&b'\r') {
                return bad("bare CR in request head");
            }
            if start == 0 {
                if text.is_empty() {
                    // Empty lines before a request line are ignored (RFC 9112 §2.2); some
                    // clients send a CRLF after a body.
                    self.head.clear();
                    continue;
                }
                let (connect, http10) = request_line(text)?;
                self.req = RequestLine {
                    end,
                    connect,
                    http10,
                };
            } else if text.is_empty() {
                self.finish_head(start, out)?;
                return Ok(Some(input));
            } else {
                let (name_end, value) = header_line(text)?;
                let name = span(text, 0, name_end);
                self.headers.push(HeaderLine {
                    start,
                    value: (start + value.0, start + value.1),
                    next,
                    kind: kind(name),
                });
            }
            self.line_start = next;
        }
    }

    /// The head is in `head`, its blank line starting at `blank`: check the framing, emit the
    /// rewritten head and pick what follows it.
    fn finish_head(&mut self, blank: usize, out: &mut Vec<u8>) -> Result<(), HttpError> {
        let head = &self.head;
        let req = self.req;
        let value = |h: &HeaderLine| span(head, h.value.0, h.value.1);

        // Framing, RFC 9112 §6.1-6.3, refusing whatever two parsers could read differently.
        let mut te = false;
        let mut chunked_last = false;
        let mut chunked_early = false;
        let mut cl: Option<&[u8]> = None;
        let mut upgrade = false;
        let mut connection_upgrade = false;
        let mut xfp = false;
        for h in &self.headers {
            match h.kind {
                Kind::TransferEncoding => {
                    te = true;
                    for coding in list(value(h)) {
                        // Anything after a chunked means it is not the final coding (or is
                        // applied twice).
                        chunked_early |= chunked_last;
                        chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                    }
                }
                Kind::ContentLength => {
                    for n in value(h).split(|&b| b == b',').map(trim) {
                        if n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
                            return bad("bad Content-Length");
                        }
                        match cl {
                            Some(first) if first != n => return bad("conflicting Content-Length"),
                            _ => cl = Some(n),
                        }
                    }
                }
                Kind::Upgrade => upgrade = true,
                Kind::Connection => {
                    connection_upgrade |= list(value(h)).any(|t| t.eq_ignore_ascii_case(b"upgrade"))
                }
                Kind::XForwardedProto => xfp = true,
                Kind::XForwardedFor | Kind::Other => {}
            }
        }
        if te && cl.is_some() {
            return bad("both Transfer-Encoding and Content-Length");
        }
        if te && (!chunked_last || chunked_early) {
            return bad("Transfer-Encoding without chunked as the final coding");
        }
        if te && req.http10 {
            // RFC 9112 §6.1: HTTP/1.0 framing with Transfer-Encoding is faulty.
            return bad("Transfer-Encoding in an HTTP/1.0 request");
        }
        let length = match cl {
            Some(digits) => digits
                .iter()
                .try_fold(0u64, |n, &d| {
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                })
                .ok_or(HttpError::Malformed("Content-Length too large"))?,
            None => 0,
        };

        // Every other line byte for byte and in order, the forwarding headers before the
        // blank line.
        let trusted = self.cfg.trusted;
        let mut from = 0;
        for h in &self.headers {
            let drop = match h.kind {
                Kind::XForwardedFor => true,
                Kind::XForwardedProto => !trusted,
                _ => false,
            };
            if drop {
                out.extend_from_slice(span(head, from, h.start));
                from = h.next;
            }
        }
        out.extend_from_slice(span(head, from, blank));
        out.extend_from_slice(b"X-Forwarded-For: ");
        if trusted {
            let kept = self
                .headers
                .iter()
                .filter(|h| h.kind == Kind::XForwardedFor);
            for v in kept.map(value).filter(|v| !v.is_empty()) {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
        out.extend_from_slice(self.client.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !(trusted && xfp) {
            out.extend_from_slice(b"X-Forwarded-Proto: ");
            out.extend_from_slice(self.cfg.proto.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(span(head, blank, head.len()));

        let mut line = String::from_utf8_lossy(span(head, 0, req.end)).into_owned();
        if line.len() > MAX_LOGGED_LINE {
            let mut cut = MAX_LOGGED_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        if self.lines.len() == MAX_LOGGED {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.requests += 1;

        // The server only switches protocols on an Upgrade listed in Connection, and never for
        // HTTP/1.0 (RFC 9110 §7.8); going opaque on any other Upgrade would let a client send
        // later requests with forged headers past the rewriter.
        let switch = req.connect || (upgrade && connection_upgrade && !req.http10);
        self.state = if switch {
            State::Passthrough
        } else if te {
            State::Chunked(Chunk::Size { size: 0, digits: 0 })
        } else if length > 0 {
            State::Body(length)
        } else {
            State::Head
        };
        self.head.clear();
        if self.head.capacity() > 4096 {
            // Do not keep a big head's buffer for the life of an idle keep-alive connection.
            self.head = Vec::new();
        }
        self.headers.clear();
        self.line_start = 0;
        Ok(())
    }

    /// Relay chunked-body bytes from `input`; returns what follows the part consumed.
    fn chunked<'a>(
        &mut self,
        mut c: Chunk,
        input: &'a [u8],
        out: &mut Vec<u8>,
    ) -> Result<&'a [u8], HttpError> {
        if let Chunk::Data(left) = c {
            let (data, rest) = take(input, left);
            out.extend_from_slice(data);
            let left = left.saturating_sub(data.len() as u64);
            self.state = State::Chunked(if left == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data(left)
            });
            return Ok(rest);
        }
        let mut used = 0;
        let mut done = false;
        for &b in input {
            used += 1;
            match chunk_step(c, b)? {
                Some(next) => c = next,
                None => {
                    done = true;
                    break;
                }
            }
            if matches!(c, Chunk::Data(_)) {
                break;
            }
        }
        let (framing, rest) = input.split_at(used.min(input.len()));
        out.extend_from_slice(framing);
        self.state = if done { State::Head } else { State::Chunked(c) };
        Ok(rest)
    }
}

/// Sniff `window`, the bytes that follow the `offset` already sniffed.
fn sniff(mut s: Sniff, offset: usize, window: &[u8]) -> Sniffed {
    for (j, &b) in window.iter().enumerate() {
        s = match s {
            Sniff::Blank if b == b'\r' || b == b'\n' => Sniff::Blank,
            Sniff::Blank if is_tchar(b) => Sniff::Method { blank: offset + j },
            Sniff::Method { .. } if is_tchar(b) => s,
            Sniff::Method { blank } if b == b' ' => Sniff::Line { blank },
            Sniff::Line { blank } => {
                let rest = window.get(j..).unwrap_or_default();
                return match find_byte(rest, b'\n') {
                    Some(nl) => Sniffed::LineEnd {
                        used: j + nl + 1,
                        blank,
                    },
                    None => Sniffed::More(s),
                };
            }
            _ => return Sniffed::NotHttp,
        };
    }
    Sniffed::More(s)
}

/// The first `n` bytes of `input` (all when shorter), and the rest.
fn take(input: &[u8], n: u64) -> (&[u8], &[u8]) {
    let k = usize::try_from(n).map_or(input.len(), |n| n.min(input.len()));
    input.split_at(k)
}

/// `buf[a..b]`, or nothing if out of range (never, by construction; this keeps it panic-free).
fn span(buf: &[u8], a: usize, b: usize) -> &[u8] {
    buf.get(a..b).unwrap_or_default()
}

/// Without leading and trailing SP / HT (optional whitespace).
fn trim(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    span(v, start, end)
}

/// The non-empty elements of a comma-separated header list.
fn list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|e| !e.is_empty())
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `method SP target SP version`; returns (is CONNECT, is HTTP/1.0).
fn request_line(text: &[u8]) -> Result<(bool, bool), HttpError> {
    let mut parts = text.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("request line is not: method SP target SP version");
    };
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(u8::is_ascii_uppercase)
    {
        return bad("bad method");
    }
    // Visible ASCII; bytes >= 0x80 are let through as many servers accept raw UTF-8 paths.
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return bad("bad request target");
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return bad("unsupported HTTP version"),
    };
    Ok((method == b"CONNECT", http10))
}

/// `name: value`; returns the name's end and the trimmed value's span, both within `text`.
fn header_line(text: &[u8]) -> Result<(usize, (usize, usize)), HttpError> {
    if matches!(text.first(), Some(b' ' | b'\t')) {
        // obs-fold: servers disagree on it, a smuggling vector (RFC 9112 §5.2).
        return bad("folded header line");
    }
    let Some(colon) = text.iter().position(|&b| b == b':') else {
        return bad("header line without colon");
    };
    let name = span(text, 0, colon);
    // A space before the colon is refused too (RFC 9112 §5.1).
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return bad("bad header name");
    }
    let raw = span(text, colon + 1, text.len());
    if raw.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return bad("control character in header value");
    }
    let value = trim(raw);
    // `value` is a subslice of `raw`; find its offset from the leading whitespace cut.
    let lead = raw.len() - raw.trim_ascii_start().len();
    let lead = lead.min(raw.len() - value.len());
    let from = colon + 1 + lead;
    Ok((colon, (from, from + value.len())))
}

fn kind(name: &[u8]) -> Kind {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    if is(b"x-forwarded-for") {
        Kind::XForwardedFor
    } else if is(b"x-forwarded-proto") {
        Kind::XForwardedProto
    } else if is(b"content-length") {
        Kind::ContentLength
    } else if is(b"transfer-encoding") {
        Kind::TransferEncoding
    } else if is(b"upgrade") {
        Kind::Upgrade
    } else if is(b"connection") {
        Kind::Connection
    } else {
        Kind::Other
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// One framing byte of a chunked body; None once the body is over.
fn chunk_step(c: Chunk, b: u8) -> Result<Option<Chunk>, HttpError> {
    let visible = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
    let next = match c {
        Chunk::Size { size, digits } => match (hex(b), b) {
            (Some(d), _) => {
                // 16 hex digits fill a u64.
                if digits >= 16 {
                    return bad("chunk size too large");
                }
                Chunk::Size {
                    size: size << 4 | d,
                    digits: digits + 1,
                }
            }
            _ if digits == 0 => return bad("bad chunk size"),
            (None, b'\r') => Chunk::SizeLf { size },
            (None, b';') => Chunk::Ext {
                size,
                semi: true,
                len: 0,
            },
            (None, b' ' | b'\t') => Chunk::Ext {
                size,
                semi: false,
                len: 0,
            },
            _ => return bad("bad chunk size"),
        },
        Chunk::Ext { size, semi, len } => {
            if len >= MAX_CHUNK_LINE {
                return bad("chunk extension too long");
            }
            match b {
                b'\r' => Chunk::SizeLf { size },
                b' ' | b'\t' | b';' => Chunk::Ext {
                    size,
                    semi: semi || b == b';',
                    len: len + 1,
                },
                _ if semi && visible(b) => Chunk::Ext {
                    size,
                    semi,
                    len: len + 1,
                },
                _ => return bad("bad chunk extension"),
            }
        }
        Chunk::SizeLf { size } => match b {
            b'\n' if size == 0 => Chunk::TrailerStart,
            b'\n' => Chunk::Data(size),
            _ => return bad("chunk size line not ended by CRLF"),
        },
        // Relayed in bulk by the caller, never stepped.
        Chunk::Data(_) => return bad("chunk data stepped"),
        Chunk::DataCr if b == b'\r' => Chunk::DataLf,
        Chunk::DataLf if b == b'\n' => Chunk::Size { size: 0, digits: 0 },
        Chunk::DataCr | Chunk::DataLf => return bad("chunk data not followed by CRLF"),
        Chunk::TrailerStart => match b {
            b'\r' => Chunk::EndLf,
            b' ' | b'\t' => return bad("folded trailer line"),
            _ if is_tchar(b) => Chunk::TrailerName { len: 1 },
            _ => return bad("bad trailer line"),
        },
        Chunk::TrailerName { len } => match b {
            b':' => Chunk::TrailerValue { len: len + 1 },
            _ if is_tchar(b) && len < MAX_CHUNK_LINE => Chunk::TrailerName { len: len + 1 },
            _ => return bad("bad trailer name"),
        },
        Chunk::TrailerValue { len } => match b {
            b'\r' => Chunk::TrailerLf,
            _ if visible(b) && len < MAX_CHUNK_LINE => Chunk::TrailerValue { len: len + 1 },
            _ => return bad("bad trailer value"),
        },
        Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
        Chunk::TrailerLf => return bad("trailer line not ended by CRLF"),
        Chunk::EndLf if b == b'\n' => return Ok(None),
        Chunk::EndLf => return bad("chunked body not ended by CRLF"),
    };
    Ok(Some(next))
}

/// Index of the first `needle` in `hay`, eight bytes at a time: head lines are found without
/// a per-byte branch.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let (words, tail) = hay.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let x = u64::from_ne_bytes(*word) ^ pattern;
        // Nonzero iff some byte of x is zero, i.e. some byte equals `needle`.
        if x.wrapping_sub(LO) & !x & HI != 0
            && let Some(p) = word.iter().position(|&b| b == needle)
        {
            return Some(i * 8 + p);
        }
    }
    tail.iter()
        .position(|&b| b == needle)
        .map(|p| words.len() * 8 + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLIENT: &str = "203.0.113.7";

    fn cfg(trusted: bool) -> XffConfig {
        XffConfig {
            client: CLIENT.parse().unwrap(),
            trusted,
            proto: "https",
        }
    }

    /// Feed `input` cut at `cuts` (sizes, cycled); returns the output and the first error.
    fn feed_cut(cfg: XffConfig, input: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<(), HttpError>) {
        let mut rw = RequestRewriter::new(cfg);
        let mut out = Vec::new();
        let mut rest = input;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts
                .get(i % cuts.len().max(1))
                .copied()
                .unwrap_or(rest.len());
            let (now, later) = rest.split_at(n.clamp(1, rest.len()));
            if let Err(e) = rw.feed(now, &mut out) {
                return (out, Err(e));
            }
            rest = later;
            i += 1;
        }
        (out, Ok(()))
    }

    /// Feed all at once, one byte at a time and in a few other cuts; all must agree. Returns
    /// the whole-feed rewriter and output.
    fn check(cfg: XffConfig, input: &[u8]) -> (RequestRewriter, Vec<u8>, Result<(), HttpError>) {
        let mut rw = RequestRewriter::new(cfg.clone());
        let mut out = Vec::new();
        let r = rw.feed(input, &mut out);
        for cuts in [&[1][..], &[2], &[3, 7], &[5, 1, 11], &[64]] {
            let (o, r2) = feed_cut(cfg.clone(), input, cuts);
            assert_eq!(r2, r, "cuts {cuts:?}");
            if r.is_ok() {
                assert_eq!(
                    String::from_utf8_lossy(&o),
                    String::from_utf8_lossy(&out),
                    "cuts {cuts:?}"
                );
            }
        }
        (rw, out, r)
    }

    fn ok(cfg: XffConfig, input: &[u8]) -> (RequestRewriter, String) {
        let (rw, out, r) = check(cfg, input);
        assert_eq!(r, Ok(()));
        (rw, String::from_utf8(out).unwrap())
    }

    fn refused(trusted: bool, input: &[u8]) -> HttpError {
        let (_, _, r) = check(cfg(trusted), input);
        r.unwrap_err()
    }

    const XFF: &str = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n";

    #[test]
    fn keep_alive_three_requests() {
        let input = "GET / HTTP/1.1\r\nHost: a\r\n\r\n\
                     GET /two?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n\
                     HEAD /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let want = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{XFF}\r\n\
             GET /two?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n{XFF}\r\n\
             HEAD /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{XFF}\r\n"
        );
        let (mut rw, out) = ok(cfg(false), input.as_bytes());
        assert_eq!(out, want);
        assert_eq!(rw.requests(), 3);
        assert!(!rw.passthrough());
        assert_eq!(
            rw.take_request_lines(),
            [
                "GET / HTTP/1.1",
                "GET /two?x=1 HTTP/1.1",
                "HEAD /three HTTP/1.1"
            ]
        );
        assert!(rw.take_request_lines().is_empty());
    }

    #[test]
    fn incomplete_head_is_held() {
        let mut rw = RequestRewriter::new(cfg(false));
        let mut out = Vec::new();
        rw.feed(b"GE", &mut out).unwrap();
        rw.feed(b"T / HTTP/1.1\r\nHost: a\r\n", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(!rw.passthrough());
        rw.feed(b"\r\n", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("GET / HTTP/1.1\r\nHost: a\r\n{XFF}\r\n")
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers_then_pipelined() {
        let body = "5;name=value;x=\"q d\"\r\nhello\r\n\
                    a ; ext\r\n0123456789\r\n\
                    0;last\r\nExpires: never\r\nX-Checksum: abc\r\n\r\n";
        let input = format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{body}\
             GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let want = format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n{XFF}\r\n{body}\
             GET /next HTTP/1.1\r\nHost: a\r\n{XFF}\r\n"
        );
        let (rw, out) = ok(cfg(false), input.as_bytes());
        assert_eq!(out, want);
        assert_eq!(rw.requests(), 2);

        // Chunk data that looks like a head is data.
        let sneaky = "POST / HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n\
                      19\r\nGET /x HTTP/1.1\r\nA: b\r\n\r\n\r\n0\r\n\r\n";
        let (rw, out) = ok(cfg(false), sneaky.as_bytes());
        assert_eq!(rw.requests(), 1);
        assert!(out.ends_with("19\r\nGET /x HTTP/1.1\r\nA: b\r\n\r\n\r\n0\r\n\r\n"));
    }

    #[test]
    fn bad_chunked_bodies() {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "x\r\n",
            "5\nhello\r\n",
            "5\r\nhelloX",
            "5 x\r\n",
            "5;a\nb\r\n",
            "0\r\n folded: x\r\n\r\n",
            "0\r\nbad line\r\n\r\n",
            "0\r\n\rx",
            "11111111111111111\r\n",
        ] {
            let e = refused(false, format!("{head}{body}").as_bytes());
            assert!(matches!(e, HttpError::Malformed(_)), "{body:?}");
        }
        // The largest size is accepted (and waits for its data).
        let (_, out) = ok(
            cfg(false),
            format!("{head}ffffffffffffffff\r\nab").as_bytes(),
        );
        assert!(out.ends_with("ffffffffffffffff\r\nab"));
    }

    #[test]
    fn content_length_body_is_relayed_untouched() {
        let body = "GET /evil HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
        let input = format!(
            "POST /form HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}\
             GET /after HTTP/1.1\r\n\r\n",
            body.len()
        );
        let want = format!(
            "POST /form HTTP/1.1\r\nContent-Length: {}\r\n{XFF}\r\n{body}\
             GET /after HTTP/1.1\r\n{XFF}\r\n",
            body.len()
        );
        let (rw, out) = ok(cfg(false), input.as_bytes());
        assert_eq!(out, want);
        assert_eq!(rw.requests(), 2);
        // The same length twice, also as a list, is one length.
        let twice = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-length: 3, 3\r\n\r\nabc";
        let (rw, out) = ok(cfg(false), twice.as_bytes());
        assert!(out.ends_with("\r\n\r\nabc"));
        assert_eq!(rw.requests(), 1);
        // A zero length: the next bytes are a request.
        let zero = "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(ok(cfg(false), zero.as_bytes()).0.requests(), 2);
    }

    #[test]
    fn forged_forwarded_for_is_replaced() {
        let input = "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\n\
                     x-forwarded-FOR: 2.2.2.2\r\nX-Forwarded-Proto: http\r\n\r\n";
        let (_, out) = ok(cfg(false), input.as_bytes());
        assert_eq!(out, format!("GET / HTTP/1.1\r\nHost: a\r\n{XFF}\r\n"));
    }

    #[test]
    fn trusted_proxy_forwarded_for_is_appended() {
        let input = "GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nHost: a\r\n\
                     x-forwarded-for:10.0.0.2, 10.0.0.3  \r\nX-Forwarded-Proto: http\r\n\r\n";
        let (_, out) = ok(cfg(true), input.as_bytes());
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 203.0.113.7\r\n\r\n"
        );
        // Trusted but nothing forwarded yet: both are set.
        let (_, out) = ok(cfg(true), b"GET / HTTP/1.1\r\nX-Forwarded-For:\r\n\r\n");
        assert_eq!(out, format!("GET / HTTP/1.1\r\n{XFF}\r\n"));
    }

    #[test]
    fn forwarded_proto() {
        let input = b"GET / HTTP/1.1\r\nx-forwarded-proto: http\r\nA: b\r\n\r\n";
        let (_, out) = ok(cfg(false), input);
        assert_eq!(out, format!("GET / HTTP/1.1\r\nA: b\r\n{XFF}\r\n"));
        let mut c = cfg(false);
        c.proto = "http";
        let (_, out) = ok(c, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
    }

    #[test]
    fn client_address_forms() {
        let mut c = cfg(false);
        c.client = "2001:db8::7".parse().unwrap();
        let (_, out) = ok(c.clone(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(out.contains("X-Forwarded-For: 2001:db8::7\r\n"));
        c.client = "::ffff:198.51.100.1".parse().unwrap();
        let (_, out) = ok(c, b"GET / HTTP/1.1\r\n\r\n");
        assert!(out.contains("X-Forwarded-For: 198.51.100.1\r\n"));
    }

    #[test]
    fn non_http_passes_untouched() {
        let ssh = b"SSH-2.0-OpenSSH_9.6\r\nmore binary \x00\xff";
        let ssh_comment = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\nGET / HTTP/1.1\r\n";
        let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n";
        let inputs: [&[u8]; 6] = [
            ssh,
            ssh_comment,
            tls,
            b" GET /",
            b"\r\n\x16\x03\x01",
            b"GET /\r\nA: b\r\n\r\n",
        ];
        for input in inputs {
            let (rw, out, r) = check(cfg(false), input);
            assert_eq!(r, Ok(()));
            assert_eq!(out, input);
            assert!(rw.passthrough(), "{input:?}");
            assert_eq!(rw.requests(), 0);
        }
        // Undecided until a byte settles it.
        let mut rw = RequestRewriter::new(cfg(false));
        let mut out = Vec::new();
        rw.feed(b"SSH-2.", &mut out).unwrap();
        rw.feed(b"0", &mut out).unwrap();
        assert!(out.is_empty() && !rw.passthrough());
        rw.feed(b"\r\nGET / HTTP/1.1\r\n\r\n", &mut out).unwrap();
        assert_eq!(out, b"SSH-2.0\r\nGET / HTTP/1.1\r\n\r\n");
        assert!(rw.passthrough());
        rw.feed(b"X-Forwarded-For: 1.1.1.1\r\n", &mut out).unwrap();
        assert!(out.ends_with(b"X-Forwarded-For: 1.1.1.1\r\n"));
        // Twenty letters is still a method.
        let (rw, _) = ok(cfg(false), b"ABCDEFGHIJKLMNOPQRST / HTTP/1.1\r\n\r\n");
        assert_eq!(rw.requests(), 1);
    }

    #[test]
    fn lenient_server_lookalikes_are_not_passed_through() {
        // Lines some server would take as a request (with the forged header after them) are
        // HTTP here, and refused by the strict request-line rules.
        for input in [
            "get / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
            "GET_X / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
            "ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\n\r\n",
            "GET / http/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert!(
                matches!(refused(false, input.as_bytes()), HttpError::Malformed(_)),
                "{input:?}"
            );
        }
        // Leading empty lines (nginx and node skip them) are dropped and the request rewritten.
        let (rw, out) = ok(
            cfg(false),
            b"\r\n\n\r\nGET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
        );
        assert_eq!(out, format!("GET / HTTP/1.1\r\n{XFF}\r\n"));
        assert_eq!(rw.requests(), 1);
        // An endless first line is refused, not passed on.
        let mut long = b"GET /".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        assert_eq!(refused(false, &long), HttpError::HeadTooLarge);
        let mut token = vec![b'A'; MAX_HEAD + 1];
        assert_eq!(refused(false, &token), HttpError::HeadTooLarge);
        // ... but a decision within the limit stands.
        token.truncate(MAX_HEAD - 1);
        token.push(b'\r');
        let (rw, out, r) = check(cfg(false), &token);
        assert_eq!(r, Ok(()));
        assert_eq!(out, token);
        assert!(rw.passthrough());
    }

    #[test]
    fn oversized_head() {
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.resize(MAX_HEAD + 1, b'a');
        assert_eq!(refused(false, &input), HttpError::HeadTooLarge);
        // Exactly MAX_HEAD with its blank line is fine.
        let mut exact = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        exact.resize(MAX_HEAD - 4, b'a');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(ok(cfg(false), &exact).0.requests(), 1);
        exact.insert(20, b'a');
        assert_eq!(refused(false, &exact), HttpError::HeadTooLarge);
        // Many small lines count too.
        let many = format!("GET / HTTP/1.1\r\n{}", "A: b\r\n".repeat(MAX_HEAD / 6 + 1));
        assert_eq!(refused(false, many.as_bytes()), HttpError::HeadTooLarge);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                matches!(refused(false, head.as_bytes()), HttpError::Malformed(_)),
                "{head:?}"
            );
        }
    }

    #[test]
    fn malformed_heads() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\tfolded\r\n\r\n",
            "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
            "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
            "GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET /  HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 x\r\n\r\n",
            // A later request on the connection must be HTTP too.
            "GET / HTTP/1.1\r\n\r\nnot http at all\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\nget / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(refused(false, head.as_bytes()), HttpError::Malformed(_)),
                "{head:?}"
            );
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut rw = RequestRewriter::new(cfg(false));
        let mut out = Vec::new();
        let e = rw.feed(b"GET / HTTP/9\r\n", &mut out).unwrap_err();
        assert_eq!(rw.feed(b"GET / HTTP/1.1\r\n\r\n", &mut out), Err(e));
        assert!(out.is_empty());
    }

    #[test]
    fn lf_only_heads() {
        let input = "GET / HTTP/1.1\nHost: a\nX-Forwarded-For: 9.9.9.9\n\n\
                     POST / HTTP/1.1\nContent-Length: 2\r\n\nhiGET /3 HTTP/1.0\n\n";
        let (rw, out) = ok(cfg(false), input.as_bytes());
        assert_eq!(
            out,
            format!(
                "GET / HTTP/1.1\nHost: a\n{XFF}\n\
                 POST / HTTP/1.1\nContent-Length: 2\r\n{XFF}\nhiGET /3 HTTP/1.0\n{XFF}\n"
            )
        );
        assert_eq!(rw.requests(), 3);
    }

    #[test]
    fn empty_lines_between_requests_are_dropped() {
        let input = "POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (rw, out) = ok(cfg(false), input.as_bytes());
        assert_eq!(
            out,
            format!(
                "POST / HTTP/1.1\r\nContent-Length: 1\r\n{XFF}\r\nx\
                 GET / HTTP/1.1\r\n{XFF}\r\n"
            )
        );
        assert_eq!(rw.requests(), 2);
    }

    #[test]
    fn connect_and_upgrade_switch_to_passthrough() {
        let connect = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\
                       \x16\x03\x01GET / HTTP/1.1\r\n\r\n";
        let (rw, out) = ok(cfg(false), connect.as_bytes());
        assert_eq!(
            out,
            format!(
                "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n{XFF}\r\n\
                 \x16\x03\x01GET / HTTP/1.1\r\n\r\n"
            )
        );
        assert!(rw.passthrough());
        assert_eq!(rw.requests(), 1);

        let ws = "GET /chat HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n\
                  \x01\x05frame GET / HTTP/1.1\r\n\r\n";
        let (rw, out) = ok(cfg(false), ws.as_bytes());
        assert!(rw.passthrough());
        assert!(out.ends_with(&format!("{XFF}\r\n\x01\x05frame GET / HTTP/1.1\r\n\r\n")));

        // An Upgrade the server must ignore (no Connection: upgrade, or HTTP/1.0) does not
        // switch: the next request is still rewritten.
        for first in [
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        ] {
            let input = format!("{first}GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n");
            let (rw, out) = ok(cfg(false), input.as_bytes());
            assert!(!rw.passthrough());
            assert_eq!(rw.requests(), 2);
            assert!(!out.contains("6.6.6.6"));
        }
    }

    #[test]
    fn http10_request() {
        let (mut rw, out) = ok(cfg(false), b"GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n");
        assert_eq!(
            out,
            format!("GET /old HTTP/1.0\r\nUser-Agent: x\r\n{XFF}\r\n")
        );
        assert_eq!(rw.take_request_lines(), ["GET /old HTTP/1.0"]);
    }

    #[test]
    fn request_lines_are_bounded() {
        let mut rw = RequestRewriter::new(cfg(false));
        let mut out = Vec::new();
        for i in 0..20 {
            rw.feed(format!("GET /{i} HTTP/1.1\r\n\r\n").as_bytes(), &mut out)
                .unwrap();
        }
        let lines = rw.take_request_lines();
        assert_eq!(lines.len(), MAX_LOGGED);
        assert_eq!(lines.first().unwrap(), "GET /4 HTTP/1.1");
        assert_eq!(rw.requests(), 20);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "é".repeat(800));
        rw.feed(long.as_bytes(), &mut out).unwrap();
        assert!(rw.take_request_lines()[0].len() <= MAX_LOGGED_LINE);
    }

    /// Requests the split proptest strings together.
    const CORPUS: &[&str] = &[
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        "POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nGET / HTTP/",
        "PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: v\r\n\r\n",
        "GET /lf HTTP/1.0\nA: b\n\n",
        "\r\n",
        "DELETE /x HTTP/1.1\r\nx-forwarded-proto: http\r\n\r\n",
    ];

    proptest! {
        #[test]
        fn any_split_gives_the_same_output(
            picks in prop::collection::vec(0..CORPUS.len(), 1..8),
            cuts in prop::collection::vec(1usize..40, 1..20),
            trusted in any::<bool>(),
            lead in any::<bool>(),
        ) {
            // The connection must start with a request (blank lines before it are dropped).
            let mut input = if lead { "\r\n" } else { "" }.to_string();
            input.push_str(CORPUS[0]);
            for &i in &picks {
                input.push_str(CORPUS[i]);
            }
            let mut rw = RequestRewriter::new(cfg(trusted));
            let mut whole = Vec::new();
            prop_assert_eq!(rw.feed(input.as_bytes(), &mut whole), Ok(()));
            let (split, r) = feed_cut(cfg(trusted), input.as_bytes(), &cuts);
            prop_assert_eq!(r, Ok(()));
            prop_assert_eq!(String::from_utf8_lossy(&split), String::from_utf8_lossy(&whole));
            let heads = 1 + picks.iter().filter(|&&i| CORPUS[i] != "\r\n").count();
            prop_assert_eq!(rw.requests(), heads as u64);
        }

        #[test]
        fn never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..3000),
            cuts in prop::collection::vec(1usize..600, 1..8),
            http in any::<bool>(),
        ) {
            // Half the cases start like HTTP to get past the sniffing.
            let mut input = if http { b"POST / HTTP/1.1\r\n".to_vec() } else { Vec::new() };
            input.extend_from_slice(&bytes);
            let _ = feed_cut(cfg(false), &input, &cuts);
            let _ = feed_cut(cfg(true), &input, &[input.len().max(1)]);
        }

        #[test]
        fn never_panics_in_bodies(
            bytes in prop::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b';'), Just(b':'), any::<u8>()],
                0..500,
            ),
        ) {
            let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(&bytes);
            let _ = feed_cut(cfg(false), &input, &[3]);
        }

        #[test]
        fn find_byte_is_position(hay in prop::collection::vec(any::<u8>(), 0..100), needle in any::<u8>()) {
            prop_assert_eq!(find_byte(&hay, needle), hay.iter().position(|&b| b == needle));
        }
    }
}
