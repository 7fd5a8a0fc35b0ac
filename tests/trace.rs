//! `fwlb trace` (through `fwlb::trace`): synthetic captures in every supported container, byte
//! order and link type with exact expected output; corrupt captures; and real captures made
//! with tcpdump between two network namespaces.

mod common;

use std::net::IpAddr;

use fwlb::trace::{Options, Summary, run, trace};
use proptest::prelude::*;

// ---- building packets ---------------------------------------------------------------------

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// 2024-05-01T12:00:00Z.
const T0: u64 = 1_714_564_800;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tcp,
    Udp,
    /// An IP fragment other than the first.
    Fragment,
}

#[derive(Clone)]
struct Pkt {
    /// Microseconds after T0.
    us: u64,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    seq: u32,
    flags: u8,
    data: Vec<u8>,
    vlan: bool,
    kind: Kind,
    /// Written as a pcapng simple packet block (no timestamp).
    simple: bool,
}

/// One TCP connection, handing out its packets with running sequence numbers.
struct Conn {
    c: (IpAddr, u16),
    s: (IpAddr, u16),
    cseq: u32,
    sseq: u32,
    vlan: bool,
}

impl Conn {
    fn new(c: &str, cport: u16, s: &str, sport: u16) -> Conn {
        Conn {
            c: (c.parse().expect("ip"), cport),
            s: (s.parse().expect("ip"), sport),
            cseq: 1000 * u32::from(cport % 97),
            sseq: 5_000_000,
            vlan: false,
        }
    }

    fn pkt(&mut self, us: u64, from_client: bool, flags: u8, data: &[u8]) -> Pkt {
        let (src, dst, seq) = if from_client {
            (self.c, self.s, &mut self.cseq)
        } else {
            (self.s, self.c, &mut self.sseq)
        };
        let p = Pkt {
            us,
            src: src.0,
            sport: src.1,
            dst: dst.0,
            dport: dst.1,
            seq: *seq,
            flags,
            data: data.to_vec(),
            vlan: self.vlan,
            kind: Kind::Tcp,
            simple: false,
        };
        *seq = seq.wrapping_add(data.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
        p
    }

    fn handshake(&mut self, us: u64) -> Vec<Pkt> {
        vec![
            self.pkt(us, true, SYN, b""),
            self.pkt(us + 100, false, SYN | ACK, b""),
            self.pkt(us + 200, true, ACK, b""),
        ]
    }

    fn c(&mut self, us: u64, data: &[u8]) -> Pkt {
        self.pkt(us, true, PSH | ACK, data)
    }

    fn s(&mut self, us: u64, data: &[u8]) -> Pkt {
        self.pkt(us, false, PSH | ACK, data)
    }

    fn close(&mut self, us: u64) -> Vec<Pkt> {
        vec![
            self.pkt(us, true, FIN | ACK, b""),
            self.pkt(us + 100, false, FIN | ACK, b""),
            self.pkt(us + 200, true, ACK, b""),
        ]
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The scenario: what each conversation is for is said next to it.
fn scenario() -> Vec<Pkt> {
    let mut v = Vec::new();
    // A: a request before the match, the match in a list, a retransmission of it (as a
    // pcapng simple packet block), a request after; closes early, so it is printed first,
    // once the capture is 2 s past its close.
    let mut a = Conn::new("10.0.0.1", 40001, "10.0.0.9", 80);
    v.extend(a.handshake(100));
    v.push(a.c(1000, b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"));
    v.push(a.s(2000, OK));
    let two = a.c(
        3000,
        b"GET /two HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 10.1.2.3\r\n\r\n",
    );
    let mut again = two.clone();
    again.us = 3500;
    again.simple = true;
    v.extend([two, again]);
    v.push(a.s(4000, OK));
    v.push(a.c(
        5000,
        b"GET /three HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n",
    ));
    v.push(a.s(6000, OK));
    v.extend(a.close(7000));
    // B: never matches: 10.1.2.30 (once whole, once split after "10.1.2.3"), and the address
    // in a response header (the server's side does not count).
    let mut b = Conn::new("10.0.0.2", 40002, "10.0.0.9", 80);
    v.extend(b.handshake(8000));
    v.push(b.c(
        9000,
        b"GET /b HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.30\r\n\r\n",
    ));
    v.push(b.s(
        9500,
        b"HTTP/1.1 200 OK\r\nX-Forwarded-For: 10.1.2.3\r\nContent-Length: 0\r\n\r\n",
    ));
    v.push(b.c(9600, b"GET /b2 HTTP/1.1\r\nX-Forwarded-For: 10.1.2.3"));
    v.push(b.c(9700, b"0\r\n\r\n"));
    // C: no handshake in the capture; the header name split across two segments.
    let mut c = Conn::new("10.0.0.3", 40003, "10.0.0.9", 80);
    v.push(c.c(10_000, b"GET /split-name HTTP/1.1\r\nHost: a\r\nX-Forwar"));
    v.push(c.c(10_500, b"ded-For: 10.1.2.3\r\n\r\n"));
    v.push(c.s(11_000, b"HTTP/1.1 204 No Content\r\n\r\n"));
    // D: the value split in the middle of the address.
    let mut d = Conn::new("10.0.0.4", 40004, "10.0.0.9", 80);
    v.extend(d.handshake(12_000));
    v.push(d.c(
        13_000,
        b"GET /split-value HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1, 10.1.",
    ));
    v.push(d.c(13_500, b"2.3\r\n\r\n"));
    v.push(d.s(14_000, OK));
    // E: two requests reordered (the match in the one arriving second), then a
    // retransmission: both counted once, in arrival order.
    let mut e = Conn::new("10.0.0.5", 40005, "10.0.0.9", 80);
    v.extend(e.handshake(15_000));
    let mut e1 = e.c(
        0,
        b"GET /e1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n",
    );
    let mut e2 = e.c(0, b"GET /e2 HTTP/1.1\r\nHost: a\r\n\r\n");
    e2.us = 16_000;
    e1.us = 16_100;
    let mut e1_again = e1.clone();
    e1_again.us = 16_200;
    v.extend([e2, e1, e1_again]);
    v.push(e.s(17_000, OK));
    // F: IPv6 (with a hop-by-hop header), a non-first fragment in the middle.
    let mut f = Conn::new("2001:db8::1", 40006, "2001:db8::9", 80);
    v.extend(f.handshake(18_000));
    v.push(f.c(
        19_000,
        b"GET /v6 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 2001:db8::77, 10.1.2.3\r\n\r\n",
    ));
    let mut frag = f.c(19_500, b"fragment");
    frag.kind = Kind::Fragment;
    v.push(frag);
    v.push(f.s(20_000, OK));
    // G: 802.1Q-tagged on Ethernet links; lower-case name, no space after the colon.
    let mut g = Conn::new("10.0.0.7", 40007, "10.0.0.9", 80);
    g.vlan = true;
    v.push(g.c(
        21_000,
        b"GET /vlan HTTP/1.1\r\nx-forwarded-for:10.1.2.3\r\n\r\n",
    ));
    v.push(g.s(21_500, OK));
    // Not TCP, and an IPv4 fragment.
    let mut h = Conn::new("10.0.0.8", 5353, "10.0.0.9", 53);
    let mut udp = h.c(22_000, b"dns?");
    udp.kind = Kind::Udp;
    let mut frag4 = h.c(22_100, b"fragment");
    frag4.kind = Kind::Fragment;
    v.extend([udp, frag4]);
    // B closes 3 s in: A's grace has passed by then.
    v.extend(b.close(3_000_000));
    v
}

const EXPECTED: &str = "\
10.0.0.1:40001 -> 10.0.0.9:80 first 2024-05-01T12:00:00.000100Z last 2024-05-01T12:00:00.007200Z requests 3
  GET /one HTTP/1.1
  GET /two HTTP/1.1
  GET /three HTTP/1.1
10.0.0.3:40003 -> 10.0.0.9:80 first 2024-05-01T12:00:00.010000Z last 2024-05-01T12:00:00.011000Z requests 1
  GET /split-name HTTP/1.1
10.0.0.4:40004 -> 10.0.0.9:80 first 2024-05-01T12:00:00.012000Z last 2024-05-01T12:00:00.014000Z requests 1
  GET /split-value HTTP/1.1
10.0.0.5:40005 -> 10.0.0.9:80 first 2024-05-01T12:00:00.015000Z last 2024-05-01T12:00:00.017000Z requests 2
  GET /e2 HTTP/1.1
  GET /e1 HTTP/1.1
[2001:db8::1]:40006 -> [2001:db8::9]:80 first 2024-05-01T12:00:00.018000Z last 2024-05-01T12:00:00.020000Z requests 1
  GET /v6 HTTP/1.1
10.0.0.7:40007 -> 10.0.0.9:80 first 2024-05-01T12:00:00.021000Z last 2024-05-01T12:00:00.021500Z requests 1
  GET /vlan HTTP/1.1
";

fn ip_packet(p: &Pkt) -> Vec<u8> {
    let mut l4 = Vec::new();
    if p.kind == Kind::Udp {
        l4.extend_from_slice(&p.sport.to_be_bytes());
        l4.extend_from_slice(&p.dport.to_be_bytes());
        l4.extend_from_slice(&((8 + p.data.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    } else {
        l4.extend_from_slice(&p.sport.to_be_bytes());
        l4.extend_from_slice(&p.dport.to_be_bytes());
        l4.extend_from_slice(&p.seq.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 1, 0x50, p.flags, 0xff, 0xff, 0, 0, 0, 0]);
    }
    l4.extend_from_slice(&p.data);
    let proto = if p.kind == Kind::Udp { 17 } else { 6 };
    match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let frag: u16 = if p.kind == Kind::Fragment {
                100
            } else {
                0x4000
            };
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 1]);
            h.extend_from_slice(&frag.to_be_bytes());
            h.extend_from_slice(&[64, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend(l4);
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // Hop-by-hop options (PadN) first; a fragment header for fragments.
            let mut ext = vec![0, 0, 1, 4, 0, 0, 0, 0];
            if p.kind == Kind::Fragment {
                ext[0] = 44;
                ext.extend_from_slice(&[proto, 0, 0, 100 << 3, 0, 0, 0, 9]);
            } else {
                ext[0] = proto;
            }
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend(ext);
            h.extend(l4);
            h
        }
        _ => panic!("mixed address families"),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Link {
    Ethernet = 1,
    Raw = 101,
    Sll = 113,
    Sll2 = 276,
}

fn frame(p: &Pkt, link: Link) -> Vec<u8> {
    let ip = ip_packet(p);
    let et: [u8; 2] = if p.src.is_ipv4() {
        [0x08, 0]
    } else {
        [0x86, 0xdd]
    };
    let mut f = Vec::new();
    match link {
        Link::Ethernet => {
            f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
            if p.vlan {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
            }
            f.extend_from_slice(&et);
        }
        Link::Sll => {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            f.extend_from_slice(&et);
        }
        Link::Sll2 => {
            f.extend_from_slice(&et);
            f.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        }
        Link::Raw => {}
    }
    f.extend(ip);
    f
}

fn put32(v: &mut Vec<u8>, x: u32, be: bool) {
    v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
}

fn put16(v: &mut Vec<u8>, x: u16, be: bool) {
    v.extend_from_slice(&if be { x.to_be_bytes() } else { x.to_le_bytes() });
}

fn pcap(pkts: &[Pkt], link: Link, be: bool, nano: bool) -> Vec<u8> {
    let mut v = Vec::new();
    put32(&mut v, if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }, be);
    put16(&mut v, 2, be);
    put16(&mut v, 4, be);
    put32(&mut v, 0, be);
    put32(&mut v, 0, be);
    put32(&mut v, 65535, be);
    put32(&mut v, link as u32, be);
    for p in pkts {
        let f = frame(p, link);
        put32(&mut v, (T0 + p.us / 1_000_000) as u32, be);
        let frac = p.us % 1_000_000;
        put32(&mut v, if nano { frac * 1000 } else { frac } as u32, be);
        put32(&mut v, f.len() as u32, be);
        put32(&mut v, f.len() as u32, be);
        v.extend(f);
    }
    v
}

fn block(v: &mut Vec<u8>, btype: u32, body: &[u8], be: bool) {
    let padded = body.len().next_multiple_of(4);
    let total = (12 + padded) as u32;
    put32(v, btype, be);
    put32(v, total, be);
    v.extend_from_slice(body);
    v.resize(v.len() + padded - body.len(), 0);
    put32(v, total, be);
}

/// A section: header, interface 0 = Ethernet in microseconds, interface 1 = raw IP in
/// nanoseconds, blocks to skip, then the packets (VLAN-tagged and simple ones on interface 0,
/// the others alternating).
fn pcapng_section(v: &mut Vec<u8>, pkts: &[Pkt], be: bool) {
    let mut shb = Vec::new();
    put32(&mut shb, 0x1a2b_3c4d, be);
    put16(&mut shb, 1, be);
    put16(&mut shb, 0, be);
    shb.extend_from_slice(&[0xff; 8]);
    block(v, 0x0a0d_0d0a, &shb, be);
    for (link, res) in [(Link::Ethernet, None), (Link::Raw, Some(9u8))] {
        let mut idb = Vec::new();
        put16(&mut idb, link as u16, be);
        put16(&mut idb, 0, be);
        put32(&mut idb, 0, be);
        if let Some(r) = res {
            put16(&mut idb, 9, be);
            put16(&mut idb, 1, be);
            idb.extend_from_slice(&[r, 0, 0, 0]);
        }
        put16(&mut idb, 0, be);
        put16(&mut idb, 0, be);
        block(v, 1, &idb, be);
    }
    // Name resolution (empty) and a custom block: skipped.
    block(v, 4, &[0, 0, 0, 0], be);
    block(v, 0x0000_0bad, b"custom stuff", be);
    for (n, p) in pkts.iter().enumerate() {
        let iface = if p.vlan || p.simple { 0 } else { n % 2 };
        let link = if iface == 0 {
            Link::Ethernet
        } else {
            Link::Raw
        };
        let f = frame(p, link);
        let mut b = Vec::new();
        if p.simple {
            put32(&mut b, f.len() as u32, be);
            b.extend(f);
            block(v, 3, &b, be);
            continue;
        }
        let t = if iface == 0 {
            T0 * 1_000_000 + p.us
        } else {
            (T0 * 1_000_000 + p.us) * 1000
        };
        put32(&mut b, iface as u32, be);
        put32(&mut b, (t >> 32) as u32, be);
        put32(&mut b, t as u32, be);
        put32(&mut b, f.len() as u32, be);
        put32(&mut b, f.len() as u32, be);
        b.extend(f);
        block(v, 6, &b, be);
    }
}

fn pcapng(pkts: &[Pkt], be: bool) -> Vec<u8> {
    let mut v = Vec::new();
    pcapng_section(&mut v, pkts, be);
    v
}

// ---- running ------------------------------------------------------------------------------

fn opts(ip: &str, json: bool) -> Options {
    Options {
        client: ip.parse().expect("ip"),
        json,
    }
}

fn trace_bytes(cap: &[u8], ip: &str, json: bool) -> (String, Summary) {
    let mut out = Vec::new();
    let s = trace(cap, &opts(ip, json), &mut out).expect("trace");
    (String::from_utf8(out).expect("utf-8"), s)
}

fn all_formats() -> Vec<(String, Vec<u8>)> {
    let pk = scenario();
    let mut v = Vec::new();
    for (be, nano) in [(false, false), (true, false), (false, true), (true, true)] {
        v.push((
            format!("pcap ethernet be={be} nano={nano}"),
            pcap(&pk, Link::Ethernet, be, nano),
        ));
    }
    for link in [Link::Raw, Link::Sll, Link::Sll2] {
        v.push((format!("pcap {link:?}"), pcap(&pk, link, false, false)));
        v.push((format!("pcap {link:?} be"), pcap(&pk, link, true, true)));
    }
    v.push(("pcapng le".into(), pcapng(&pk, false)));
    v.push(("pcapng be".into(), pcapng(&pk, true)));
    // Two sections of opposite byte order, the split falling inside conversation A.
    let mut two = Vec::new();
    pcapng_section(&mut two, &pk[..6], false);
    pcapng_section(&mut two, &pk[6..], true);
    v.push(("pcapng two sections".into(), two));
    v
}

#[test]
fn every_format_gives_the_same_exact_report() {
    for (name, cap) in all_formats() {
        let (out, s) = trace_bytes(&cap, "10.1.2.3", false);
        assert_eq!(out, EXPECTED, "{name}");
        assert_eq!(s.conversations, 6, "{name}");
        assert_eq!(s.fragments, 2, "{name}: one IPv4, one IPv6 fragment");
        assert_eq!(s.non_tcp, 1, "{name}: the UDP packet");
        assert_eq!(s.retransmitted, 2, "{name}: A's and E's");
        assert_eq!(
            s.malformed + s.unsupported + s.snapped + s.evicted,
            0,
            "{name}"
        );
        assert!(!s.truncated_tail, "{name}");
        assert_eq!(s.bytes, cap.len() as u64, "{name}");
    }
}

#[test]
fn json_lines() {
    let cap = pcap(&scenario(), Link::Ethernet, false, false);
    let (out, _) = trace_bytes(&cap, "10.1.2.3", true);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(
        lines[0],
        serde_json::json!({
            "client": "10.0.0.1:40001",
            "server": "10.0.0.9:80",
            "first": "2024-05-01T12:00:00.000100Z",
            "last": "2024-05-01T12:00:00.007200Z",
            "requests": 3,
            "earlier": 0,
            "lines": ["GET /one HTTP/1.1", "GET /two HTTP/1.1", "GET /three HTTP/1.1"],
            "more": 0
        })
    );
    assert_eq!(lines[4]["client"], "[2001:db8::1]:40006");
}

#[test]
fn other_addresses() {
    let cap = pcap(&scenario(), Link::Ethernet, false, false);
    // Only B's requests carry 10.1.2.30.
    let (out, _) = trace_bytes(&cap, "10.1.2.30", false);
    assert_eq!(
        out,
        "10.0.0.2:40002 -> 10.0.0.9:80 first 2024-05-01T12:00:00.008000Z \
         last 2024-05-01T12:00:03.000200Z requests 2\n  GET /b HTTP/1.1\n  GET /b2 HTTP/1.1\n"
    );
    // IPv6 in the list, written differently.
    let (out, _) = trace_bytes(&cap, "2001:db8:0:0::77", false);
    assert!(out.starts_with("[2001:db8::1]:40006 -> "), "{out}");
    assert_eq!(out.lines().count(), 2);
    let (out, s) = trace_bytes(&cap, "10.1.2.4", false);
    assert_eq!((out.as_str(), s.conversations), ("", 0));
}

#[test]
fn history_is_bounded() {
    let mut c = Conn::new("10.0.0.1", 40001, "10.0.0.9", 80);
    let mut pk = c.handshake(0);
    let mut us = 1000;
    for n in 1..=1016 {
        let xff = if n == 11 {
            "X-Forwarded-For: 10.1.2.3\r\n"
        } else {
            ""
        };
        pk.push(c.c(us, format!("GET /{n} HTTP/1.1\r\n{xff}\r\n").as_bytes()));
        pk.push(c.s(us + 1, OK));
        us += 10;
    }
    let (out, s) = trace_bytes(&pcap(&pk, Link::Raw, false, false), "10.1.2.3", false);
    assert_eq!(s.conversations, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with(" requests 1016"), "{}", lines[0]);
    // The last 4 before the match (7..=10 and the match itself, 11, minus the oldest), then
    // up to 1000 kept lines in all.
    assert_eq!(lines[1], "  ... 7 earlier");
    assert_eq!(lines[2], "  GET /8 HTTP/1.1");
    assert_eq!(lines[1001], "  GET /1007 HTTP/1.1");
    assert_eq!(lines[1002], "  ... 9 more");
    assert_eq!(lines.len(), 1003);
}

#[test]
fn run_reads_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.pcapng");
    std::fs::write(&path, pcapng(&scenario(), true)).expect("write");
    let mut out = Vec::new();
    let n = run(&path, &opts("10.1.2.3", false), &mut out).expect("run");
    assert_eq!(n, 6);
    assert_eq!(String::from_utf8_lossy(&out), EXPECTED);
    let err = run(
        &dir.path().join("missing"),
        &opts("10.1.2.3", false),
        &mut out,
    )
    .expect_err("missing file");
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

// ---- corrupt captures ---------------------------------------------------------------------

fn trace_err(cap: &[u8]) -> String {
    let mut out = Vec::new();
    match trace(cap, &opts("10.1.2.3", false), &mut out) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn corrupt_captures_give_clear_errors() {
    assert!(trace_err(b"").contains("too short"));
    assert!(trace_err(b"GET / HTTP/1.1\r\n").contains("not a pcap or pcapng capture"));
    let mut cap = pcap(&scenario(), Link::Ethernet, false, false);
    // Second record's captured length made absurd.
    let second = 24 + 16 + frame(&scenario()[0], Link::Ethernet).len();
    cap[second + 8..second + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let e = trace_err(&cap);
    assert!(
        e.contains(&format!("corrupt pcap record at offset {second}")),
        "{e}"
    );
    let mut ng = pcapng(&scenario(), false);
    ng[4..8].copy_from_slice(&13u32.to_le_bytes());
    assert!(trace_err(&ng).contains("corrupt pcapng block at offset 0"));
    let mut ng = pcapng(&scenario(), false);
    ng[8..12].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    assert!(trace_err(&ng).contains("byte-order magic"));
}

#[test]
fn a_capture_cut_short_is_read_up_to_the_cut() {
    let cap = pcap(&scenario(), Link::Ethernet, false, false);
    // Cut inside the last packet: B's final ACK is lost, the rest is intact.
    let (out, s) = trace_bytes(&cap[..cap.len() - 10], "10.1.2.3", false);
    assert!(s.truncated_tail);
    assert_eq!(out, EXPECTED);
    // A snaplen of 70 bytes: headers and the start of each payload only.
    let mut short = pcap(&scenario(), Link::Ethernet, false, false);
    short.truncate(24);
    for p in scenario() {
        let f = frame(&p, Link::Ethernet);
        let keep = f.len().min(70);
        short.extend_from_slice(&((T0 + p.us / 1_000_000) as u32).to_le_bytes());
        short.extend_from_slice(&((p.us % 1_000_000) as u32).to_le_bytes());
        short.extend_from_slice(&(keep as u32).to_le_bytes());
        short.extend_from_slice(&(f.len() as u32).to_le_bytes());
        short.extend_from_slice(&f[..keep]);
    }
    let (out, s) = trace_bytes(&short, "10.1.2.3", false);
    assert!(s.snapped > 0);
    assert_eq!(out, "");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Corrupted bytes anywhere: an error or a report, never a panic.
    #[test]
    fn corruption_never_panics(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut cap = match which {
            0 => pcap(&scenario(), Link::Ethernet, false, false),
            1 => pcapng(&scenario(), true),
            _ => pcap(&scenario(), Link::Sll2, true, true),
        };
        for (at, byte) in edits {
            let i = at.index(cap.len());
            cap[i] = byte;
        }
        cap.truncate(cut.index(cap.len() + 1).max(1));
        let mut out = Vec::new();
        let _ = trace(&cap[..], &opts("10.1.2.3", false), &mut out);
    }

    /// Random packet bytes behind valid record headers, on every link type.
    #[test]
    fn random_packets_never_panic(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..40),
        link in prop::sample::select(vec![0u32, 1, 101, 108, 113, 228, 229, 276, 12345]),
    ) {
        let mut cap = Vec::new();
        for w in [0xa1b2_c3d4u32, 2 | 4 << 16, 0, 0, 65535, link] {
            cap.extend_from_slice(&w.to_le_bytes());
        }
        for (n, f) in frames.iter().enumerate() {
            for w in [n as u32, 0, f.len() as u32, f.len() as u32] {
                cap.extend_from_slice(&w.to_le_bytes());
            }
            cap.extend_from_slice(f);
        }
        let mut out = Vec::new();
        let s = trace(&cap[..], &opts("10.1.2.3", false), &mut out).expect("valid container");
        prop_assert_eq!(s.packets, frames.len() as u64);
    }
}

// ---- real captures: tcpdump between two network namespaces --------------------------------

#[cfg(target_os = "linux")]
const SERVER_PY: &str = r#"
import socket, threading
srv = socket.socket(socket.AF_INET6)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(("::", 8080))
srv.listen(16)
print("ready", flush=True)
def serve(c):
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                c.close()
                return
            buf += d
        _, buf = buf.split(b"\r\n\r\n", 1)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Conversations from fixed source ports; a request given in several parts is sent in several
/// segments (TCP_NODELAY, a pause between them).
#[cfg(target_os = "linux")]
const CLIENT_PY: &str = r#"
import socket, time
def conv(family, src, port, dst, requests):
    s = socket.socket(family)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(5)
    s.bind((src, port))
    s.connect((dst, 8080))
    for parts in requests:
        for i, p in enumerate(parts):
            if i:
                time.sleep(0.2)
            s.sendall(p)
        buf = b""
        while not buf.endswith(b"ok\n"):
            d = s.recv(4096)
            if not d:
                raise SystemExit("server closed early")
            buf += d
    s.close()
v4 = (socket.AF_INET, "10.99.0.1", "10.99.0.2")
v6 = (socket.AF_INET6, "fd00:99::1", "fd00:99::2")
def conn(af, port, requests):
    conv(af[0], af[1], port, af[2], requests)
conn(v4, 41001, [
    [b"GET /before HTTP/1.1\r\nHost: c1\r\n\r\n"],
    [b"GET /hit HTTP/1.1\r\nHost: c1\r\nX-Forwarded-For: 203.0.113.9, 10.1.2.3\r\n\r\n"],
    [b"GET /after HTTP/1.1\r\nHost: c1\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n"],
])
conn(v4, 41002, [[b"GET /decoy HTTP/1.1\r\nHost: c2\r\nX-Forwarded-For: 10.1.2.30\r\n\r\n"]])
conn(v4, 41003, [[b"GET /split-name HTTP/1.1\r\nHost: c3\r\nX-Forwa",
                  b"rded-For: 10.1.2.3\r\n\r\n"]])
conn(v4, 41004, [[b"GET /split-value HTTP/1.1\r\nHost: c4\r\nX-Forwarded-For: 198.51.100.4, 10.1.",
                  b"2.3\r\n\r\n"]])
conn(v6, 41005, [[b"GET /v6 HTTP/1.1\r\nHost: c5\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"]])
conn(v4, 41006, [[b"GET /split-decoy HTTP/1.1\r\nHost: c6\r\nX-Forwarded-For: 10.1.2.3",
                  b"0\r\n\r\n"]])
"#;

#[cfg(target_os = "linux")]
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(target_os = "linux")]
#[test]
fn tcpdump_captures_between_namespaces() {
    use common::{Logged, Net, NsDaemon, require_tool};
    use std::time::Duration;
    require_tool("tcpdump", "tcpdump");
    require_tool("python3", "python3");
    let mut net = Net::new("trace");
    let (client, server) = (net.host("c"), net.host("s"));
    net.cable(&client, "eth0", &server, "eth0");
    for (ns, v4, v6) in [
        (&client, "10.99.0.1/24", "fd00:99::1/64"),
        (&server, "10.99.0.2/24", "fd00:99::2/64"),
    ] {
        ns.addr("eth0", v4);
        ns.ip(&["-6", "addr", "add", v6, "dev", "eth0", "nodad"]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let caps = [
        (dir.path().join("eth.pcap"), vec!["-i", "eth0"]),
        (
            dir.path().join("eth-nano.pcap"),
            vec!["-i", "eth0", "--time-stamp-precision=nano"],
        ),
        // The "any" device: Linux cooked v2 headers.
        (dir.path().join("any.pcap"), vec!["-i", "any"]),
    ];
    let mut dumps: Vec<NsDaemon> = Vec::new();
    for (path, args) in &caps {
        let path = path.to_str().expect("utf-8 path");
        // Immediate mode: without it the last packets can still sit in the kernel's ring
        // block when tcpdump is stopped. A 16 MiB buffer: with the default one the "any"
        // device was seen dropping packets even at this rate.
        let mut cmd = vec![
            "tcpdump",
            "--immediate-mode",
            "-B",
            "16384",
            "-n",
            "-U",
            "-Z",
            "root",
            "-s",
            "0",
            "-w",
            path,
        ];
        cmd.extend(args.iter().copied());
        cmd.extend(["tcp", "port", "8080"]);
        let dump = server.spawn(&cmd);
        dump.wait_log("listening on", Duration::from_secs(10));
        dumps.push(dump);
    }
    let http = server.spawn(&["python3", "-c", SERVER_PY]);
    http.wait_log("ready", Duration::from_secs(10));
    let out = client.exec(&["python3", "-c", CLIENT_PY]);
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Let the last FIN/ACKs reach tcpdump, then stop it cleanly so the files are complete.
    std::thread::sleep(Duration::from_millis(300));
    for dump in &mut dumps {
        dump.signal("TERM");
        assert!(
            dump.wait_exit(Duration::from_secs(5)).is_some(),
            "tcpdump did not stop"
        );
        // A capture with holes would make the checks below fail for the wrong reason.
        let stats = dump.log();
        assert!(
            stats.lines().any(|l| l == "0 packets dropped by kernel"),
            "tcpdump dropped packets: {stats}"
        );
    }

    for (path, _) in &caps {
        let raw = std::fs::read(path).expect("read capture");
        let name = path.display();
        // The splits really are in the capture: the halves were not coalesced.
        assert!(contains(&raw, b"Host: c3\r\nX-Forwa"), "{name}");
        assert!(
            !contains(&raw, b"Host: c3\r\nX-Forwarded"),
            "{name}: name not split"
        );
        assert!(contains(&raw, b"198.51.100.4, 10.1."), "{name}");
        assert!(
            !contains(&raw, b"198.51.100.4, 10.1.2.3"),
            "{name}: value not split"
        );
        assert!(
            contains(&raw, b"Host: c6\r\nX-Forwarded-For: 10.1.2.3"),
            "{name}"
        );
        let c6 = b"Host: c6\r\nX-Forwarded-For: 10.1.2.30";
        assert!(!contains(&raw, c6), "{name}: decoy not split");
        assert!(
            contains(&raw, b"Host: c2\r\nX-Forwarded-For: 10.1.2.30"),
            "{name}"
        );

        let mut out = Vec::new();
        let n = run(path, &opts("10.1.2.3", true), &mut out).expect("trace the capture");
        let text = String::from_utf8(out).expect("utf-8");
        let mut got: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(n, 4, "{name}:\n{text}");
        got.sort_by_key(|c| c["client"].as_str().unwrap_or_default().to_string());
        let want = [
            (
                "10.99.0.1:41001",
                "10.99.0.2:8080",
                vec!["/before", "/hit", "/after"],
            ),
            ("10.99.0.1:41003", "10.99.0.2:8080", vec!["/split-name"]),
            ("10.99.0.1:41004", "10.99.0.2:8080", vec!["/split-value"]),
            ("[fd00:99::1]:41005", "[fd00:99::2]:8080", vec!["/v6"]),
        ];
        for (c, (client, server, paths)) in got.iter().zip(want) {
            assert_eq!(c["client"], client, "{name}: {c}");
            assert_eq!(c["server"], server, "{name}: {c}");
            assert_eq!(c["requests"], paths.len(), "{name}: {c}");
            let lines: Vec<String> = paths.iter().map(|p| format!("GET {p} HTTP/1.1")).collect();
            assert_eq!(c["lines"], serde_json::json!(lines), "{name}: {c}");
            let (first, last) = (
                c["first"].as_str().unwrap_or_default(),
                c["last"].as_str().unwrap_or_default(),
            );
            assert!(
                first.len() == 27 && first.ends_with('Z') && first <= last,
                "{name}: {c}"
            );
        }
        // Every real conversation ends with FIN, FIN, ACK: text mode agrees with JSON.
        let mut out = Vec::new();
        run(path, &opts("10.1.2.3", false), &mut out).expect("text report");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text.lines().filter(|l| l.contains(" -> ")).count(),
            4,
            "{text}"
        );
        // Nothing from the decoys.
        assert!(!text.contains("decoy"), "{text}");
    }
    // The decoys' address: whole, and split after "10.1.2.3".
    let mut out = Vec::new();
    let n = run(&caps[0].0, &opts("10.1.2.30", false), &mut out).expect("trace");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(n, 2, "the two decoy conversations carry 10.1.2.30:\n{text}");
}

#[test]
fn request_line_split_across_segments() {
    let mut c = Conn::new("10.0.0.1", 40001, "10.0.0.9", 80);
    let mut pk = c.handshake(0);
    pk.push(c.c(1000, b"GET /a-long-"));
    pk.push(c.c(1001, b"path HTTP/1.1\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"));
    pk.push(c.s(2000, OK));
    let (out, _) = trace_bytes(&pcap(&pk, Link::Raw, false, false), "10.1.2.3", false);
    assert_eq!(
        out,
        "10.0.0.1:40001 -> 10.0.0.9:80 first 2024-05-01T12:00:00.000000Z \
         last 2024-05-01T12:00:00.002000Z requests 1\n  GET /a-long-...\n"
    );
}

#[test]
fn a_failing_output_is_an_error() {
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let cap = pcap(&scenario(), Link::Ethernet, false, false);
    let err = trace(&cap[..], &opts("10.1.2.3", false), &mut Closed).expect_err("broken pipe");
    assert!(
        format!("{err:#}").starts_with("writing the report"),
        "{err:#}"
    );
}
