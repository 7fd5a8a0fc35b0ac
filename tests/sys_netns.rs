#![cfg(target_os = "linux")]
//! The VRRP speaker's system layer in a network namespace of this test: link events over
//! netlink, adding and removing addresses, raw protocol-112 sockets over a veth pair, and
//! gratuitous ARP through a packet socket. Needs root and `ip` (iproute2).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use fwlb::sys::netlink::{Link, Netlink, enter_netns};
use fwlb::sys::raw::{GROUP_V4, PacketSocket, VrrpSocket};

/// Two namespaces joined by a veth pair `va` (in the first) <-> `vb` (in the second), deleted
/// when dropped (even on failure). Two namespaces, because a packet from an address of the
/// receiving host itself is dropped as a martian.
struct Ns(String, String);

fn ip_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Ns {
    fn new(tag: &str) -> Ns {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v ip"])
                .output()
                .is_ok_and(|o| o.status.success()),
            "this test needs `ip`: apt-get install iproute2"
        );
        let one = format!("fwlb-{tag}1-{}", std::process::id());
        let two = format!("fwlb-{tag}2-{}", std::process::id());
        for n in [&one, &two] {
            let ok = Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot create network namespace {n}: this test needs root"
            );
        }
        let ns = Ns(one, two);
        ip_in(
            &ns.0,
            &[
                "link", "add", "name", "va", "type", "veth", "peer", "name", "vb", "netns", &ns.1,
            ],
        );
        ip_in(&ns.0, &["addr", "add", "192.0.2.1/24", "dev", "va"]);
        ip_in(&ns.1, &["addr", "add", "192.0.2.2/24", "dev", "vb"]);
        for (n, dev) in [(&ns.0, "va"), (&ns.1, "vb"), (&ns.0, "lo"), (&ns.1, "lo")] {
            ip_in(n, &["link", "set", dev, "up"]);
        }
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        ip_in(&self.0, args)
    }

    /// Run `f` on a thread that has entered namespace `which` (0 or 1).
    fn within<T: Send + 'static>(&self, which: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = if which == 0 { &self.0 } else { &self.1 };
        let path = format!("/var/run/netns/{name}");
        std::thread::spawn(move || {
            enter_netns(std::path::Path::new(&path)).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.1]).status();
    }
}

fn by_name(links: &[Link], name: &str) -> Link {
    links
        .iter()
        .find(|l| l.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no link {name} in {links:?}"))
}

#[test]
fn link_events_arrive_at_once_and_addresses_come_and_go() {
    let ns = Ns::new("nl");
    let (a, events) =
        {
            let name = ns.1.clone();
            ns.within(0, move || {
                let mut nl = Netlink::requests().expect("netlink");
                let links = nl.dump_links().expect("dump");
                let a = by_name(&links, "va");
                assert!(a.up, "{links:?}");
                assert!(a.mac.is_some());
                // Watch while someone else pulls the cable of the peer.
                let ev = Netlink::link_events().expect("events");
                let t0 = Instant::now();
                let st = Command::new("ip")
                    .args(["-n", &name, "link", "set", "vb", "down"])
                    .status()
                    .expect("ip");
                assert!(st.success());
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 65536];
                while t0.elapsed() < Duration::from_secs(3) {
                    match ev.recv(&mut buf) {
                        Ok(n) => seen.extend(fwlb::sys::netlink::links(&buf[..n])),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if seen.iter().any(|l: &Link| l.name == "va" && !l.up) {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("recv: {e}"),
                    }
                }
                let took = t0.elapsed();
                // The kernel's linkwatch batches carrier changes up to once a second; netlink then
                // delivers them at once.
                assert!(
                    took < Duration::from_millis(1500),
                    "carrier loss seen after {took:?}"
                );
                // Addresses through netlink.
                nl.add_addr(a.index, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), 24)
                    .expect("add");
                nl.add_addr(a.index, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), 24)
                    .expect("add twice is fine");
                let addrs = nl.dump_addrs().expect("dump addrs");
                let mine: Vec<_> = addrs
                    .iter()
                    .filter(|x| x.index == a.index && x.addr.is_ipv4())
                    .collect();
                assert_eq!(
                    mine[0].addr,
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                    "primary first: {mine:?}"
                );
                assert!(mine.iter().any(
                    |x| x.addr == IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)) && x.prefix == 24
                ));
                (a, seen)
            })
        };
    assert!(events.iter().any(|l| l.name == "va" && !l.up), "{events:?}");
    assert!(
        ns.ip(&["-o", "addr", "show", "dev", "va"])
            .contains("198.51.100.10/24")
    );
    let idx = a.index;
    ns.within(0, move || {
        let mut nl = Netlink::requests().expect("netlink");
        nl.del_addr(idx, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), 24)
            .expect("del");
        nl.del_addr(idx, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), 24)
            .expect("del twice is fine");
    });
    assert!(
        !ns.ip(&["-o", "addr", "show", "dev", "va"])
            .contains("198.51.100.10")
    );
}

/// An IPv4 header (TTL 255, protocol 112, to 224.0.0.18) and a VRRPv2 advert for VRID 7.
fn advert(src: Ipv4Addr) -> Vec<u8> {
    let vrrp = [
        0x21, 7, 100, 1, 0, 1, 0, 0, 192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let mut p = vec![0x45, 0xc0, 0, 40, 0, 0, 0, 0, 255, 112, 0, 0];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&GROUP_V4.octets());
    p.extend_from_slice(&vrrp);
    p
}

#[test]
fn vrrp_adverts_cross_the_veth_and_garp_goes_out() {
    let ns = Ns::new("raw");
    let (a_index, a_mac) = ns.within(0, || {
        let links = Netlink::requests()
            .expect("netlink")
            .dump_links()
            .expect("dump");
        let a = by_name(&links, "va");
        (a.index, a.mac.expect("mac"))
    });
    // The receiver listens first, in the other namespace.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name = format!("/var/run/netns/{}", ns.1);
    let receiver = std::thread::spawn(move || {
        enter_netns(std::path::Path::new(&name)).expect("setns");
        let links = Netlink::requests()
            .expect("netlink")
            .dump_links()
            .expect("dump");
        let b = by_name(&links, "vb");
        let rx = VrrpSocket::open_v4("vb", b.index).expect("raw socket vb");
        let arp_rx = PacketSocket::open(b.index, 0x0806).expect("packet socket vb");
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + Duration::from_secs(3);
        let (mut vrrp, mut arp) = (None, None);
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline && (vrrp.is_none() || arp.is_none()) {
            if vrrp.is_none()
                && let Ok(n) = rx.recv(&mut buf)
            {
                vrrp = Some(buf[..n].to_vec());
            }
            if arp.is_none()
                && let Ok(n) = arp_rx.recv(&mut buf)
                && buf[..n].get(12..14) == Some(&[0x08, 0x06])
            {
                arp = Some(buf[..n].to_vec());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (vrrp, arp)
    });
    ready_rx.recv().expect("receiver ready");
    // A gratuitous ARP for 192.0.2.10 from va's MAC, broadcast.
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&a_mac);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&a_mac);
    frame.extend_from_slice(&[192, 0, 2, 10]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&[192, 0, 2, 10]);
    let f2 = frame.clone();
    ns.within(0, move || {
        let tx = VrrpSocket::open_v4("va", a_index).expect("raw socket va");
        tx.send(&advert(Ipv4Addr::new(192, 0, 2, 1)), GROUP_V4)
            .expect("send advert");
        let arp_tx = PacketSocket::open(a_index, 0x0806).expect("packet socket va");
        arp_tx.send(&f2).expect("send garp");
    });
    let (vrrp, arp) = receiver.join().expect("receiver");
    let got = (vrrp, arp, frame);
    let (vrrp, arp, frame) = got;
    let vrrp = vrrp.expect("advert received on b");
    assert_eq!(vrrp[8], 255, "TTL 255 as sent");
    assert_eq!(vrrp[9], 112);
    assert_eq!(
        &vrrp[20..],
        &advert(Ipv4Addr::new(192, 0, 2, 1))[20..],
        "VRRP bytes intact"
    );
    let arp = arp.expect("gratuitous ARP received on b");
    assert_eq!(&arp[..frame.len()], &frame[..]);
}

/// Wait until `dev` in `ns` has a link-local address that finished duplicate address
/// detection, and return it.
fn link_local(ns: &str, dev: &str) -> std::net::Ipv6Addr {
    let t0 = Instant::now();
    loop {
        let out = ip_in(
            ns,
            &["-6", "-o", "addr", "show", "dev", dev, "scope", "link"],
        );
        if !out.contains("tentative")
            && let Some(a) = out
                .split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok())
        {
            return a;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no usable link-local address on {dev}: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn vrrp_v6_adverts_carry_hop_limit_and_addresses_and_na_goes_out() {
    use fwlb::sys::raw::GROUP_V6;
    use fwlb::wire::{ndisc, vrrp};
    use std::net::Ipv6Addr;
    let ns = Ns::new("r6");
    for n in [&ns.0, &ns.1] {
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                n,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=0",
            ])
            .status()
            .expect("sysctl");
        assert!(st.success(), "cannot enable IPv6 in {n}");
    }
    let (ll_a, ll_b) = (link_local(&ns.0, "va"), link_local(&ns.1, "vb"));
    let (a_index, a_mac) = ns.within(0, || {
        let links = Netlink::requests()
            .expect("netlink")
            .dump_links()
            .expect("dump");
        let a = by_name(&links, "va");
        (a.index, a.mac.expect("mac"))
    });
    let vip: Ipv6Addr = "fd77::10".parse().unwrap();
    let repr = vrrp::VrrpRepr {
        version: vrrp::Version::V3,
        vrid: 52,
        priority: 150,
        interval_cs: 10,
        auth: vrrp::Auth::None,
        addrs: vec![vip.into()],
    };
    let multicast = vrrp::emit(
        &repr,
        ll_a.into(),
        GROUP_V6.into(),
        vrrp::ChecksumMode::PseudoHeader,
    );
    let unicast = vrrp::emit(
        &repr,
        ll_a.into(),
        ll_b.into(),
        vrrp::ChecksumMode::PseudoHeader,
    );
    let na = ndisc::unsolicited_na_frame(a_mac, vip);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name = format!("/var/run/netns/{}", ns.1);
    let receiver = std::thread::spawn(move || {
        enter_netns(std::path::Path::new(&name)).expect("setns");
        let links = Netlink::requests()
            .expect("netlink")
            .dump_links()
            .expect("dump");
        let b = by_name(&links, "vb");
        let rx = VrrpSocket::open_v6("vb", b.index).expect("raw v6 socket vb");
        let frames = PacketSocket::open(b.index, 0x86dd).expect("packet socket vb");
        let deaf = PacketSocket::open_send_only(b.index, 0x86dd).expect("send-only socket");
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + Duration::from_secs(3);
        let (mut adverts, mut na) = (Vec::new(), None);
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline && (adverts.len() < 2 || na.is_none()) {
            while let Ok(r) = rx.recv_v6(&mut buf) {
                adverts.push((buf[..r.len].to_vec(), r));
            }
            while let Ok(n) = frames.recv(&mut buf) {
                if ndisc::parse_frame(&buf[..n]).is_ok() {
                    na = Some(buf[..n].to_vec());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let deaf_got = deaf.recv(&mut buf);
        (adverts, na, deaf_got.map_err(|e| e.kind()))
    });
    ready_rx.recv().expect("receiver ready");
    let (m, u, f) = (multicast.clone(), unicast.clone(), na.clone());
    ns.within(0, move || {
        let tx = VrrpSocket::open_v6("va", a_index).expect("raw v6 socket va");
        tx.send_v6(&m, ll_a, GROUP_V6).expect("send to ff02::12");
        tx.send_v6(&u, ll_a, ll_b).expect("send to the peer");
        let nd = PacketSocket::open_send_only(a_index, 0x86dd).expect("packet socket va");
        nd.send(&f).expect("send NA");
    });
    let (adverts, got_na, deaf) = receiver.join().expect("receiver");
    assert_eq!(adverts.len(), 2, "both adverts arrive: {adverts:?}");
    for ((payload, r), (sent, dst)) in adverts
        .iter()
        .zip([(&multicast, GROUP_V6), (&unicast, ll_b)])
    {
        assert_eq!(payload, sent, "the VRRP message alone, intact");
        assert_eq!(r.src, ll_a, "sent from the link-local address");
        assert_eq!(r.dst, Some(dst));
        assert_eq!(r.hop_limit, Some(255), "hop limit from ancillary data");
        assert_eq!(
            vrrp::parse(payload, r.src.into(), dst.into(), 255),
            Ok(repr.clone()),
            "the checksum covers the pseudo-header with the real destination"
        );
    }
    assert_eq!(got_na.as_deref(), Some(&na[..]), "the NA frame as sent");
    assert_eq!(
        deaf,
        Err(std::io::ErrorKind::WouldBlock),
        "a send-only packet socket gets no copy of incoming traffic"
    );
    // An IPv6 VIP is added without duplicate address detection: usable at once.
    let idx = a_index;
    ns.within(0, move || {
        Netlink::requests()
            .expect("netlink")
            .add_addr(idx, IpAddr::V6(vip), 64)
            .expect("add v6");
    });
    let shown = ns.ip(&[
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        "va",
        "to",
        "fd77::10/128",
    ]);
    assert!(
        shown.contains("fd77::10/64") && !shown.contains("tentative"),
        "{shown}"
    );
}
