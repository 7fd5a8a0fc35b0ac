//! The VRRP/ARP/NA fuzz target and its seed corpus, run as an ordinary test.
//!
//! `fuzz_one` has libFuzzer's shape (arbitrary bytes in, must not panic) and feeds every parser
//! in `wire::{vrrp, arp, ndisc, ipv4}`. There is no cargo-fuzz directory: cargo-fuzz needs
//! nightly, which this project does not use. Instead the seeds in `tests/fuzz_corpus/vrrp/`
//! run here, each with the outcome its name promises (`SEEDS`), then every truncation and
//! single-byte change of every seed, then proptest's random mutations of them.
//!
//! Seeds are whole IPv4/IPv6 packets (VRRP) or Ethernet frames (ARP, NA). `keepalived-*` carry
//! the bytes keepalived 2.2.7 sent in the lab (design/vrrp-reference.md §1.5, §1.8); where the
//! reference kept only the VRRP part, the IPv4 header around it is rebuilt (TOS 0xc0, TTL 255,
//! IP ID counting up). The others are hand-built variants, checksums computed independently of
//! this crate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::LazyLock;

use fwlb::wire::vrrp::{self, Drop, Version};
use fwlb::wire::{arp, ipv4, ndisc};
use proptest::prelude::*;

/// What a seed must give.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `vrrp::parse_ip_packet` accepts it: version, VRID, priority, address count.
    Vrrp(Version, u8, u8, usize),
    VrrpDrop(Drop),
    /// `arp::parse_frame` accepts it: operation, gratuitous.
    Arp(arp::Operation, bool),
    ArpErr(arp::Error),
    /// `ndisc::parse_frame` accepts it (an unsolicited NA with a link-layer address).
    Na,
    NaErr(ndisc::Error),
}

use Version::{V2, V3};
use Want::*;

const SEEDS: &[(&str, Want)] = &[
    // Accepted adverts.
    ("keepalived-v2-pass-vrid51.bin", Vrrp(V2, 51, 150, 1)),
    ("keepalived-v2-pass-prio0.bin", Vrrp(V2, 51, 0, 1)),
    ("keepalived-v3-vrid51.bin", Vrrp(V3, 51, 150, 1)),
    ("keepalived-v3-vrid51-10cs.bin", Vrrp(V3, 51, 150, 1)),
    ("keepalived-v3-prio0.bin", Vrrp(V3, 51, 0, 1)),
    ("keepalived-v3-ipv6-vrid52.bin", Vrrp(V3, 52, 150, 1)),
    ("keepalived-v3-ipv6-prio0.bin", Vrrp(V3, 52, 0, 1)),
    // Ethernet pads a 32-byte packet to 46: total length bounds the payload.
    ("keepalived-v3-vrid51-eth-padding.bin", Vrrp(V3, 51, 150, 1)),
    // Cisco/Juniper (keepalived v3_checksum_as_v2) form.
    ("v3-ipv4-no-pseudo-header.bin", Vrrp(V3, 51, 150, 1)),
    ("v2-auth-none-2addrs.bin", Vrrp(V2, 7, 100, 2)),
    ("v2-short-password.bin", Vrrp(V2, 1, 254, 1)),
    ("v3-ipv6-2addrs.bin", Vrrp(V3, 9, 200, 2)),
    // Unicast mode: the pseudo-header has the real destination.
    ("unicast-v3.bin", Vrrp(V3, 51, 150, 1)),
    // Router alert option: skipped.
    ("ipv4-options-v2.bin", Vrrp(V2, 51, 150, 1)),
    // Dropped adverts, one or more per reason.
    ("empty.bin", VrrpDrop(Drop::TooShort)),
    ("truncated-ip-header.bin", VrrpDrop(Drop::TooShort)),
    ("truncated-v2.bin", VrrpDrop(Drop::TooShort)),
    ("truncated-v3-ipv6.bin", VrrpDrop(Drop::TooShort)),
    ("short-v2-no-auth-data.bin", VrrpDrop(Drop::Length)),
    ("trailing-byte-v3.bin", VrrpDrop(Drop::Length)),
    ("count-mismatch-v2.bin", VrrpDrop(Drop::Length)),
    ("count-255-v2.bin", VrrpDrop(Drop::Length)),
    // ucarp: proto 112, 224.0.0.18, first byte 0x21, but 36 bytes for "count" 7 (§1.9).
    ("ucarp-carp-vhid51.bin", VrrpDrop(Drop::Length)),
    ("v3-ipv4-addrs-over-ipv6.bin", VrrpDrop(Drop::Length)),
    ("ipv4-fragment.bin", VrrpDrop(Drop::Length)),
    ("bad-checksum-v2.bin", VrrpDrop(Drop::Checksum)),
    ("bad-checksum-v2-password.bin", VrrpDrop(Drop::Checksum)),
    ("bad-checksum-v3.bin", VrrpDrop(Drop::Checksum)),
    ("bad-checksum-v3-ipv6.bin", VrrpDrop(Drop::Checksum)),
    ("bad-ip-header-checksum.bin", VrrpDrop(Drop::Checksum)),
    // keepalived <= 1.3.5 put 224.0.0.18 in the pseudo-header of unicast adverts: not accepted.
    ("old-unicast-checksum-v3.bin", VrrpDrop(Drop::Checksum)),
    ("wrong-ttl-v2.bin", VrrpDrop(Drop::Ttl)),
    ("wrong-ttl-v3.bin", VrrpDrop(Drop::Ttl)),
    ("wrong-hop-limit-v3-ipv6.bin", VrrpDrop(Drop::Ttl)),
    ("vrrp-version-1.bin", VrrpDrop(Drop::Version)),
    ("vrrp-version-4.bin", VrrpDrop(Drop::Version)),
    ("type-2.bin", VrrpDrop(Drop::Type)),
    ("not-vrrp-udp.bin", VrrpDrop(Drop::Type)),
    ("v2-auth-ah.bin", VrrpDrop(Drop::Auth)),
    ("v2-over-ipv6.bin", VrrpDrop(Drop::Family)),
    ("ip-version-5.bin", VrrpDrop(Drop::Family)),
    // ARP frames.
    ("keepalived-garp.bin", Arp(arp::Operation::Request, true)),
    ("garp-reply-padded.bin", Arp(arp::Operation::Reply, true)),
    ("arp-who-has.bin", Arp(arp::Operation::Request, false)),
    ("truncated-garp.bin", ArpErr(arp::Error::Truncated)),
    ("vlan-tagged-garp.bin", ArpErr(arp::Error::NotArp)),
    // Neighbour advertisements.
    ("keepalived-unsolicited-na.bin", Na),
    ("na-bad-checksum.bin", NaErr(ndisc::Error::Checksum)),
    ("na-hop-limit-64.bin", NaErr(ndisc::Error::HopLimit)),
];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/vrrp")
}

/// Read once: the proptest below draws from them thousands of times.
static SEEDS_READ: LazyLock<Vec<(String, Vec<u8>)>> = LazyLock::new(read_seeds);

fn seeds() -> &'static [(String, Vec<u8>)] {
    &SEEDS_READ
}

fn read_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, std::fs::read(&path).unwrap()));
    }
    out.sort();
    out
}

/// The fuzz target: every parser on the same bytes, results ignored; only a panic fails.
fn fuzz_one(data: &[u8]) {
    let _ = vrrp::parse_ip_packet(data);
    let _ = arp::parse_frame(data);
    let _ = ndisc::parse_frame(data);
    // The payload parsers, on the bytes as if they were a payload.
    let (s4, g4) = (
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)),
        IpAddr::V4(vrrp::GROUP_V4),
    );
    let s6 = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    let g6 = IpAddr::V6(vrrp::GROUP_V6);
    for (s, d) in [(s4, g4), (s6, g6), (s4, g6)] {
        let _ = vrrp::parse(data, s, d, 255);
    }
    if let Ok(p) = ipv4::Ipv4Packet::new_checked(data) {
        let _ = ipv4::Ipv4Repr::parse(&p);
    }
    if let Ok(p) = arp::ArpPacket::new_checked(data) {
        let _ = arp::ArpRepr::parse(&p);
    }
    let _ = ndisc::parse(data, Ipv6Addr::LOCALHOST, ndisc::ALL_NODES);
}

#[test]
fn every_seed_is_named_and_there() {
    let names: Vec<&String> = seeds().iter().map(|(n, _)| n).collect();
    for (name, _) in SEEDS {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from the corpus"
        );
    }
    for name in &names {
        assert!(
            SEEDS.iter().any(|(n, _)| n == name),
            "{name} has no expected outcome in SEEDS"
        );
    }
    // One seed at least per drop reason parse can give.
    for d in Drop::ALL {
        let from_check = matches!(d, Drop::Vrid | Drop::Interval | Drop::AddrMismatch);
        let seeded = SEEDS
            .iter()
            .any(|(_, w)| matches!(w, VrrpDrop(x) if *x == d));
        assert!(from_check || seeded, "no seed for {d}");
    }
}

#[test]
fn seeds_give_what_their_names_say() {
    for (name, bytes) in seeds() {
        let bytes = bytes.as_slice();
        fuzz_one(bytes);
        let Some((_, want)) = SEEDS.iter().find(|(n, _)| *n == name) else {
            panic!("{name} has no expected outcome");
        };
        match *want {
            Vrrp(version, vrid, priority, n) => {
                let got = vrrp::parse_ip_packet(bytes).unwrap_or_else(|d| panic!("{name}: {d}"));
                let r = &got.repr;
                assert_eq!(
                    (r.version, r.vrid, r.priority, r.addrs.len(), got.ttl),
                    (version, vrid, priority, n, 255),
                    "{name}"
                );
                // Emitting the parsed advert again gives the seed's VRRP bytes.
                let start = ip_header_len(bytes);
                let payload = &bytes[start..start + r.buffer_len(got.src.is_ipv6())];
                let mode = if name.contains("no-pseudo-header") {
                    vrrp::ChecksumMode::NoPseudoHeader
                } else {
                    vrrp::ChecksumMode::PseudoHeader
                };
                assert_eq!(vrrp::emit(r, got.src, got.dst, mode), payload, "{name}");
            }
            VrrpDrop(d) => assert_eq!(
                vrrp::parse_ip_packet(bytes).map(|g| g.repr),
                Err(d),
                "{name}"
            ),
            Arp(op, gratuitous) => {
                let f = arp::parse_frame(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    (f.arp.operation, f.arp.is_gratuitous()),
                    (op, gratuitous),
                    "{name}"
                );
            }
            ArpErr(e) => assert_eq!(arp::parse_frame(bytes), Err(e), "{name}"),
            Na => {
                let f = ndisc::parse_frame(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(f.na.override_flag && !f.na.solicited, "{name}");
                assert_eq!(f.na.lladdr, Some(f.eth_src), "{name}");
                assert_eq!(
                    ndisc::unsolicited_na_frame(f.eth_src, f.na.target),
                    bytes,
                    "{name}"
                );
            }
            NaErr(e) => assert_eq!(ndisc::parse_frame(bytes), Err(e), "{name}"),
        }
    }
}

/// Where the VRRP message starts in an accepted seed (whose header is sound).
fn ip_header_len(packet: &[u8]) -> usize {
    match packet[0] >> 4 {
        4 => usize::from(packet[0] & 0x0f) * 4,
        _ => 40,
    }
}

#[test]
fn captured_bytes_are_emitted_back() {
    // The one advert captured whole: header and all.
    let bytes = std::fs::read(corpus_dir().join("keepalived-v2-pass-vrid51.bin")).unwrap();
    let got = vrrp::parse_ip_packet(&bytes).unwrap();
    let IpAddr::V4(src) = got.src else {
        panic!("IPv4 seed")
    };
    assert_eq!(
        vrrp::emit_ipv4(&got.repr, src, 1, vrrp::ChecksumMode::PseudoHeader),
        bytes
    );
    let garp = std::fs::read(corpus_dir().join("keepalived-garp.bin")).unwrap();
    let f = arp::parse_frame(&garp).unwrap();
    assert_eq!(arp::gratuitous(f.src, f.arp.source_protocol_addr), garp);
}

#[test]
fn every_truncation_and_byte_change_of_every_seed() {
    for (_, seed) in seeds() {
        for n in 0..seed.len() {
            fuzz_one(&seed[..n]);
        }
        for i in 0..seed.len() {
            for x in [0x01, 0x0f, 0x10, 0x80, 0xff] {
                let mut b = seed.clone();
                b[i] ^= x;
                fuzz_one(&b);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random splices into random seeds: overwrite, insert or cut a run of bytes.
    #[test]
    fn mutated_seeds_never_panic(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        op in 0..3u8,
        bytes in prop::collection::vec(any::<u8>(), 0..24),
    ) {
        let all = seeds();
        let seed = &all[which.index(all.len())].1;
        let i = if seed.is_empty() { 0 } else { at.index(seed.len() + 1) };
        let mut b = seed.clone();
        match op {
            0 => {
                for (k, v) in bytes.iter().enumerate() {
                    if let Some(slot) = b.get_mut(i + k) {
                        *slot = *v;
                    }
                }
            }
            1 => {
                let tail = b.split_off(i);
                b.extend_from_slice(&bytes);
                b.extend_from_slice(&tail);
            }
            _ => {
                let end = (i + bytes.len()).min(b.len());
                b.drain(i..end);
            }
        }
        fuzz_one(&b);
    }
}
