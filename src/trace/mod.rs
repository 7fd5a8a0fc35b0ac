//! `fwlb trace`: find, in a capture taken behind the balancer, the TCP conversations whose
//! HTTP requests carry one client address in `X-Forwarded-For`, and print each with its
//! endpoints, first and last packet time and request lines.
//!
//! One pass, constant memory: the capture is streamed (`capture`), each packet decoded in
//! place (`decode`), its flow found in a bounded table (`flows`) and only the request
//! direction's payload scanned (`xff`). A matching conversation is printed when it closes
//! (after a short grace period for its last packets), when the table must evict it, or at
//! the end of the capture.
//!
//! Limits, by design: request lines are recognised at segment starts (and pipelined right
//! after a header block in the same segment); of out-of-order data only the last gap per
//! direction is tracked (bytes filling it are scanned on their own, bytes seen before are
//! dropped); a flow with no request line in sight is scanned for its first 16 KiB per side.

mod capture;
mod decode;
mod flows;
mod xff;

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use decode::{Segment, Skip, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use flows::{Flow, Key, Table, UNKNOWN};
use xff::{Needle, Pending};

/// Flows tracked at once (only open ones: closed flows leave at once); beyond this the least
/// recently active goes first. ~400 bytes each with the map, so ~200 MiB when full.
const MAX_FLOWS: usize = 1 << 19;
/// Request lines kept per flow until it matches (the most recent ones).
const PRE_LINES: u32 = 4;
/// Request lines kept per matching flow, after which they are only counted.
const MAX_LINES: u32 = 1000;
/// Bytes kept of one request line.
const LINE_MAX: usize = 256;
/// All request lines kept, over all flows (allocated capacity), before new ones are only
/// counted: the hard bound on memory besides the table itself.
const LINES_BUDGET: usize = 128 << 20;
/// How long a closed matching conversation waits for its trailing ACKs before printing.
const CLOSE_GRACE_NS: u64 = 2_000_000_000;
/// Bytes of each side scanned for the header before any request was seen in the flow.
const UNKNOWN_SCAN_MAX: u32 = 16 << 10;
/// A segment this far behind the expected sequence number is not a retransmission but a new
/// connection we missed the handshake of: take it as a fresh start.
const RESYNC_WINDOW: u32 = 64 << 20;

/// What to look for and how to print it.
pub struct Options {
    /// The client address to find in `X-Forwarded-For`.
    pub client: IpAddr,
    /// One JSON object per conversation per line instead of text.
    pub json: bool,
}

/// What a pass over a capture saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Matching conversations printed.
    pub conversations: usize,
    /// Capture bytes read.
    pub bytes: u64,
    pub packets: u64,
    /// TCP segments among them.
    pub tcp: u64,
    /// Not IP, or IP but not TCP.
    pub non_tcp: u64,
    /// IP fragments after the first (skipped: no TCP header).
    pub fragments: u64,
    /// Packets whose headers do not parse, or that name an undescribed pcapng interface.
    pub malformed: u64,
    /// Unknown link types, IPv6 headers that cannot be walked (ESP).
    pub unsupported: u64,
    /// Segments whose payload was cut by the capture's snaplen.
    pub snapped: u64,
    /// Segments with only bytes already seen (retransmissions).
    pub retransmitted: u64,
    /// Flows pushed out of the full table (printed early if they matched).
    pub evicted: u64,
    /// Request lines counted but not kept because of the memory budget.
    pub lines_dropped: u64,
    /// The capture ends inside a record.
    pub truncated_tail: bool,
}

impl Summary {
    /// Anything a user should hear about: packets that could not be read fully or at all.
    pub fn has_anomalies(&self) -> bool {
        self.fragments + self.malformed + self.unsupported + self.snapped + self.evicted > 0
            || self.lines_dropped > 0
            || self.truncated_tail
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} conversations, {} packets ({} TCP, {} other)",
            self.conversations, self.packets, self.tcp, self.non_tcp
        )?;
        let counts = [
            (self.fragments, "non-first IP fragments skipped"),
            (self.malformed, "malformed packets skipped"),
            (
                self.unsupported,
                "packets of unsupported link or IPv6 header skipped",
            ),
            (self.snapped, "segments cut by the snaplen"),
            (self.retransmitted, "retransmissions"),
            (self.evicted, "flows evicted from the full table"),
            (self.lines_dropped, "request lines not kept (memory budget)"),
        ];
        for (n, what) in counts {
            if n > 0 {
                write!(f, ", {n} {what}")?;
            }
        }
        if self.truncated_tail {
            write!(f, ", capture ends inside a record")?;
        }
        Ok(())
    }
}

/// Read the capture at `path` ("-" = stdin), write the report to `out`; returns the number
/// of matching conversations. Anomalies (malformed packets, a cut capture) go to stderr.
pub fn run(path: &Path, opts: &Options, out: &mut dyn Write) -> Result<usize> {
    let input = capture::open(path)?;
    let s = trace(input, opts, out).with_context(|| format!("tracing {}", path.display()))?;
    if s.has_anomalies() {
        eprintln!("fwlb trace: {}: {s}", path.display());
    }
    Ok(s.conversations)
}

/// As [`run`], from any reader, returning everything counted on the way.
pub fn trace(input: impl Read, opts: &Options, out: &mut dyn Write) -> Result<Summary> {
    let mut t = Tracer {
        needle: Needle::new(opts.client),
        json: opts.json,
        out,
        table: Table::new(MAX_FLOWS),
        closing: VecDeque::new(),
        now: 0,
        lines_bytes: 0,
        s: Summary::default(),
        text: Vec::new(),
    };
    let fs = capture::read(input, &mut |ts, link, data| {
        t.packet(ts, link, data).context("writing the report")
    })?;
    t.finish_all().context("writing the report")?;
    t.s.bytes = fs.bytes;
    t.s.truncated_tail = fs.truncated_tail;
    t.s.malformed += fs.bad_interface;
    Ok(t.s)
}

struct Tracer<'o> {
    needle: Needle,
    json: bool,
    out: &'o mut dyn Write,
    table: Table,
    /// Closed matching flows waiting out [`CLOSE_GRACE_NS`]: (slot, generation, closed at).
    closing: VecDeque<(u32, u32, u64)>,
    /// The latest packet time seen.
    now: u64,
    /// Capacity of all flows' line buffers.
    lines_bytes: usize,
    s: Summary,
    /// Reused output buffer.
    text: Vec<u8>,
}

impl Tracer<'_> {
    fn packet(&mut self, ts: u64, link: u32, data: &[u8]) -> io::Result<()> {
        self.s.packets += 1;
        let seg = match decode::decode(link, data) {
            Ok(seg) => seg,
            Err(skip) => {
                *match skip {
                    Skip::NotTcp => &mut self.s.non_tcp,
                    Skip::Fragment => &mut self.s.fragments,
                    Skip::Malformed => &mut self.s.malformed,
                    Skip::Unsupported => &mut self.s.unsupported,
                } += 1;
                return Ok(());
            }
        };
        self.s.tcp += 1;
        if ts > self.now {
            self.now = ts;
            self.expire()?;
        }
        let (key, side) = Key::of(seg.src, seg.sport, seg.dst, seg.dport);
        let syn = seg.flags & TCP_SYN != 0;
        let i = match self.table.get(&key) {
            Some(i) if syn && seg.flags & TCP_ACK == 0 && self.reopened(i, side, seg.seq) => {
                self.finish(i)?;
                self.create(key, ts)?
            }
            Some(i) => i,
            // Bare ACKs, FINs and RSTs of unknown flows (often the last packets of one just
            // closed) would only fill the table.
            None if syn || seg.len > 0 => self.create(key, ts)?,
            None => return Ok(()),
        };
        let f = &mut self.table.flows[i as usize];
        f.last_ns = f.last_ns.max(ts);
        f.first_ns = f.first_ns.min(ts);
        let d = &mut f.dirs[side];
        if syn && !d.seq_known {
            d.next_seq = seg.seq.wrapping_add(1);
            d.seq_known = true;
        }
        // The server's side is never scanned once the client's is known: most bytes skipped.
        if seg.len > 0 && (f.client == UNKNOWN || usize::from(f.client) == side) {
            let seq = seg.seq.wrapping_add(u32::from(syn));
            self.payload(i, side, seq, &seg);
        }
        let f = &mut self.table.flows[i as usize];
        if seg.flags & TCP_FIN != 0 {
            f.dirs[side].fin = true;
        }
        if seg.flags & TCP_RST != 0 || (f.dirs[0].fin && f.dirs[1].fin) {
            self.close(i);
        }
        Ok(())
    }

    /// Is a SYN on a known flow the start of a new connection on the same 5-tuple?
    fn reopened(&self, i: u32, side: usize, seq: u32) -> bool {
        let f = &self.table.flows[i as usize];
        let d = &f.dirs[side];
        f.closing || (d.seq_known && d.next_seq != seq.wrapping_add(1))
    }

    /// New payload bytes of one side: drop what was seen already, then look for request
    /// lines and the header.
    fn payload(&mut self, i: u32, side: usize, seq: u32, seg: &Segment<'_>) {
        let Tracer {
            table,
            s,
            needle,
            lines_bytes,
            ..
        } = self;
        let f = &mut table.flows[i as usize];
        let d = &mut f.dirs[side];
        let mut skip = 0;
        if seg.payload.len() < seg.len as usize {
            s.snapped += 1;
        }
        if d.seq_known {
            let delta = seq.wrapping_sub(d.next_seq) as i32;
            let behind = delta.unsigned_abs();
            if delta < 0 && behind <= RESYNC_WINDOW {
                if let Some((start, end)) = d.hole
                    && seq.wrapping_sub(start) < end.wrapping_sub(start)
                {
                    // Fills (part of) the last gap: new bytes, out of order. Scanned on their
                    // own, as the line state at that point is not known.
                    let n = seg.len.min(end.wrapping_sub(seq));
                    d.hole = if seq == start && n == end.wrapping_sub(start) {
                        None
                    } else if seq == start {
                        Some((start.wrapping_add(n), end))
                    } else {
                        Some((start, seq))
                    };
                    let b = seg.payload.get(..n as usize).unwrap_or(seg.payload);
                    scan(f, side, b, &mut Pending::None, needle, lines_bytes, s);
                    return;
                }
                if behind >= seg.len {
                    s.retransmitted += 1;
                    return;
                }
                skip = behind as usize;
            } else if delta != 0 {
                // A gap (lost or reordered segments) or a resync: the line state is unknown.
                d.hole = (delta > 0 && behind <= RESYNC_WINDOW).then_some((d.next_seq, seq));
                d.pending = Pending::None;
            }
        }
        d.next_seq = seq.wrapping_add(seg.len);
        d.seq_known = true;
        let b = seg.payload.get(skip..).unwrap_or(&[]);
        let mut pending = std::mem::take(&mut d.pending);
        scan(f, side, b, &mut pending, needle, lines_bytes, s);
        // Bytes cut by the snaplen break the stream: the line state after them is unknown.
        if seg.payload.len() >= seg.len as usize {
            f.dirs[side].pending = pending;
        }
    }

    fn create(&mut self, key: Key, ts: u64) -> io::Result<u32> {
        if self.table.is_full()
            && let Some(old) = self.table.oldest()
        {
            self.s.evicted += 1;
            self.finish(old)?;
        }
        Ok(self.table.insert(key, ts))
    }

    /// Both FINs or a RST: forget a flow that did not match, give a matching one its grace.
    fn close(&mut self, i: u32) {
        let f = &mut self.table.flows[i as usize];
        if f.closing {
            return;
        }
        if f.matched {
            f.closing = true;
            self.closing.push_back((i, f.generation, self.now));
        } else {
            self.table.remove(i);
        }
    }

    /// Print the closed flows whose grace has passed.
    fn expire(&mut self) -> io::Result<()> {
        while let Some(&(i, generation, at)) = self.closing.front() {
            if self.now < at.saturating_add(CLOSE_GRACE_NS) {
                break;
            }
            self.closing.pop_front();
            let f = &self.table.flows[i as usize];
            if f.generation == generation && f.closing {
                self.finish(i)?;
            }
        }
        Ok(())
    }

    /// A flow ends: print it if it matched, free its slot.
    fn finish(&mut self, i: u32) -> io::Result<()> {
        if self.table.flows[i as usize].matched {
            self.emit(i)?;
        }
        let f = &mut self.table.flows[i as usize];
        // Keep small line buffers for the slot's next flow, give big ones back.
        if f.lines.capacity() > 4096 {
            self.lines_bytes -= f.lines.capacity().min(self.lines_bytes);
            f.lines = Vec::new();
        }
        self.table.remove(i);
        Ok(())
    }

    /// End of the capture: print the matching flows still open, oldest first.
    fn finish_all(&mut self) -> io::Result<()> {
        let flows = &self.table.flows;
        let mut open: Vec<u32> = self
            .table
            .live()
            .filter(|&i| flows[i as usize].matched)
            .collect();
        open.sort_by_key(|&i| {
            let f = &flows[i as usize];
            (f.first_ns, f.key.a, f.key.a_port, f.key.b, f.key.b_port)
        });
        for i in open {
            self.emit(i)?;
        }
        self.out.flush()
    }

    fn emit(&mut self, i: u32) -> io::Result<()> {
        let f = &self.table.flows[i as usize];
        let c = if f.client == UNKNOWN {
            0
        } else {
            usize::from(f.client)
        };
        let client = socket_addr(f.key.side(c));
        let server = socket_addr(f.key.side(1 - c));
        self.text.clear();
        if self.json {
            let lines = f
                .lines()
                .map(|(l, cut)| {
                    let mut s = String::from_utf8_lossy(l).into_owned();
                    if cut {
                        s.push_str("...");
                    }
                    s
                })
                .collect();
            let conv = JsonConversation {
                client: client.to_string(),
                server: server.to_string(),
                first: rfc3339(f.first_ns),
                last: rfc3339(f.last_ns),
                requests: f.requests,
                earlier: f.earlier,
                lines,
                more: f.more,
            };
            serde_json::to_writer(&mut self.text, &conv).map_err(io::Error::other)?;
            self.text.push(b'\n');
        } else {
            writeln!(
                self.text,
                "{client} -> {server} first {} last {} requests {}",
                rfc3339(f.first_ns),
                rfc3339(f.last_ns),
                f.requests
            )?;
            if f.earlier > 0 {
                writeln!(self.text, "  ... {} earlier", f.earlier)?;
            }
            for (line, cut) in f.lines() {
                self.text.extend_from_slice(b"  ");
                escape_into(&mut self.text, line);
                if cut {
                    self.text.extend_from_slice(b"...");
                }
                self.text.push(b'\n');
            }
            if f.more > 0 {
                writeln!(self.text, "  ... {} more", f.more)?;
            }
        }
        self.s.conversations += 1;
        // One write per conversation, flushed: output follows the capture as it is read.
        self.out.write_all(&self.text)?;
        self.out.flush()
    }
}

/// Request lines at the start of `b` (and pipelined after it), then the header.
fn scan(
    f: &mut Flow,
    side: usize,
    b: &[u8],
    pending: &mut Pending,
    needle: &Needle,
    lines_bytes: &mut usize,
    s: &mut Summary,
) {
    if let Some((line, whole)) = xff::request_line(b) {
        request(f, side, line, whole, lines_bytes, s);
        let mut rest = b;
        while let Some((at, line, whole)) = xff::next_request(rest) {
            request(f, side, line, whole, lines_bytes, s);
            rest = &rest[at..];
        }
    }
    if f.client == UNKNOWN {
        // No request seen yet (the capture began mid-conversation, or this is not HTTP):
        // look at the first bytes of each side only.
        let d = &mut f.dirs[side];
        if d.unknown_scanned >= UNKNOWN_SCAN_MAX {
            *pending = Pending::None;
            return;
        }
        d.unknown_scanned = d.unknown_scanned.saturating_add(b.len() as u32);
    } else if usize::from(f.client) != side {
        return;
    }
    if xff::feed(pending, b, needle) {
        if f.client == UNKNOWN {
            f.client = side as u8;
        }
        if usize::from(f.client) == side {
            f.matched = true;
        }
    }
}

/// Count one request line of a flow and keep it within the per-flow and global bounds.
fn request(
    f: &mut Flow,
    side: usize,
    line: &[u8],
    whole: bool,
    lines_bytes: &mut usize,
    s: &mut Summary,
) {
    if f.client == UNKNOWN {
        f.client = side as u8;
    } else if usize::from(f.client) != side {
        return;
    }
    f.requests += 1;
    if !f.matched && f.lines_kept >= PRE_LINES {
        f.drop_oldest();
        f.earlier += 1;
    } else if f.matched && f.lines_kept >= MAX_LINES {
        f.more += 1;
        return;
    }
    let need = 2 + line.len().min(LINE_MAX);
    let cap = f.lines.capacity();
    if f.lines.len() + need > cap {
        let grown = (f.lines.len() + need).max(2 * cap);
        if *lines_bytes + grown - cap > LINES_BUDGET {
            s.lines_dropped += 1;
            if f.matched {
                f.more += 1;
            } else {
                f.earlier += 1;
            }
            return;
        }
    }
    f.push_line(line, LINE_MAX, !whole);
    *lines_bytes += f.lines.capacity() - cap;
}

#[derive(Serialize)]
struct JsonConversation {
    client: String,
    server: String,
    first: String,
    last: String,
    requests: u32,
    /// Request lines before the kept ones, not kept.
    earlier: u32,
    lines: Vec<String>,
    /// Request lines after the kept ones, not kept.
    more: u32,
}

fn socket_addr((ip, port): (u128, u16)) -> SocketAddr {
    let v6 = Ipv6Addr::from(ip);
    match v6.to_ipv4_mapped() {
        Some(v4) => SocketAddr::from((v4, port)),
        None => SocketAddr::from((v6, port)),
    }
}

/// Printable ASCII as is, anything else as `\xNN`: request lines are outside input and must
/// not drive the terminal.
fn escape_into(out: &mut Vec<u8>, b: &[u8]) {
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            out.push(c);
        } else {
            out.extend_from_slice(format!("\\x{c:02x}").as_bytes());
        }
    }
}

/// `2024-05-01T12:00:00.000000Z` from ns since the epoch.
fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = ns % 1_000_000_000 / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Days to civil date (H. Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(951_782_400_123_456_789),
            "2000-02-29T00:00:00.123456Z"
        );
        assert_eq!(
            rfc3339(1_714_564_800_000_001_000),
            "2024-05-01T12:00:00.000001Z"
        );
        assert_eq!(
            rfc3339(4_102_444_799_999_999_999),
            "2099-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn escaping() {
        let mut v = Vec::new();
        escape_into(&mut v, b"GET /\x1b[2J\\ \xff");
        assert_eq!(v, b"GET /\\x1b[2J\\x5c \\xff");
    }
}
