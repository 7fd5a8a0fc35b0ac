#![cfg(target_os = "linux")]
//! The VRRP speaker's system layer in a network namespace of this test: link events over
//! netlink, adding and removing addresses, raw protocol-112 sockets over a veth pair, and
//! gratuitous ARP through a packet socket. Needs root and `ip` (iproute2).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Net, Ns};
use fwlb::sys::netlink::{Link, Netlink, enter_netns};
use fwlb::sys::raw::{GROUP_V4, PacketSocket, VrrpSocket};

/// Two namespaces joined by a veth pair `va` (in `a`) <-> `vb` (in `b`), 192.0.2.1/24 and
/// 192.0.2.2/24. Two namespaces, because a packet from an address of the receiving host
/// itself is dropped as a martian.
struct Pair {
    a: Ns,
    b: Ns,
    _net: Net,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let mut net = Net::new(tag);
        let (a, b) = (net.host("1"), net.host("2"));
        net.cable(&a, "va", &b, "vb");
        a.addr("va", "192.0.2.1/24");
        b.addr("vb", "192.0.2.2/24");
        Pair { a, b, _net: net }
    }
}

/// Run `f` on a thread that has entered namespace `ns`.
fn within<T: Send + 'static>(ns: &Ns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = ns.path();
    std::thread::spawn(move || {
        enter_netns(&path).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A receiver in namespace `ns`: `open` opens its sockets on the thread (given link `dev`
/// there) and returns the job that then waits for traffic. Returns once the sockets are
/// open, so whatever is sent next reaches them.
fn listening_in<T, J>(
    ns: &Ns,
    dev: &'static str,
    open: impl FnOnce(Link) -> J + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    J: FnOnce() -> T,
{
    let (path, link) = (ns.path(), link(ns, dev));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        enter_netns(&path).expect("setns");
        let job = open(link);
        ready_tx.send(()).expect("ready");
        job()
    });
    ready_rx.recv().expect("receiver ready");
    thread
}

/// Link `name` of namespace `ns`, as netlink dumps it there.
fn link(ns: &Ns, name: &'static str) -> Link {
    within(ns, move || {
        let links = Netlink::requests()
            .expect("netlink")
            .dump_links()
            .expect("dump");
        by_name(&links, name)
    })
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
    let ns = Pair::new("nl");
    let (a, events) =
        {
            let b = ns.b.clone();
            within(&ns.a, move || {
                let mut nl = Netlink::requests().expect("netlink");
                let links = nl.dump_links().expect("dump");
                let a = by_name(&links, "va");
                assert!(a.up, "{links:?}");
                assert!(a.mac.is_some());
                // Watch while someone else pulls the cable of the peer.
                let ev = Netlink::link_events().expect("events");
                let t0 = Instant::now();
                b.link("vb", false);
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
    assert!(ns.a.addrs("va").contains("198.51.100.10/24"));
    let idx = a.index;
    within(&ns.a, move || {
        let mut nl = Netlink::requests().expect("netlink");
        nl.del_addr(idx, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), 24)
            .expect("del");
        nl.del_addr(idx, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), 24)
            .expect("del twice is fine");
    });
    assert!(!ns.a.addrs("va").contains("198.51.100.10"));
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
    let ns = Pair::new("raw");
    let a = link(&ns.a, "va");
    let (a_index, a_mac) = (a.index, a.mac.expect("mac"));
    // The receiver listens first, in the other namespace.
    let receiver = listening_in(&ns.b, "vb", |b| {
        let rx = VrrpSocket::open_v4("vb", b.index).expect("raw socket vb");
        let arp_rx = PacketSocket::open(b.index, 0x0806).expect("packet socket vb");
        move || {
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
        }
    });
    // A gratuitous ARP for 192.0.2.10 from va's MAC, broadcast.
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&a_mac);
    frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&a_mac);
    frame.extend_from_slice(&[192, 0, 2, 10]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&[192, 0, 2, 10]);
    let f2 = frame.clone();
    within(&ns.a, move || {
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

#[test]
fn vrrp_v6_adverts_carry_hop_limit_and_addresses_and_na_goes_out() {
    use fwlb::sys::raw::GROUP_V6;
    use fwlb::wire::{ndisc, vrrp};
    use std::net::Ipv6Addr;
    let ns = Pair::new("r6");
    for n in [&ns.a, &ns.b] {
        n.sysctl("net.ipv6.conf.all.disable_ipv6=0");
    }
    let (ll_a, ll_b) = (ns.a.link_local("va"), ns.b.link_local("vb"));
    let a = link(&ns.a, "va");
    let (a_index, a_mac) = (a.index, a.mac.expect("mac"));
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
    let receiver = listening_in(&ns.b, "vb", |b| {
        let rx = VrrpSocket::open_v6("vb", b.index).expect("raw v6 socket vb");
        let frames = PacketSocket::open(b.index, 0x86dd).expect("packet socket vb");
        let deaf = PacketSocket::open_send_only(b.index, 0x86dd).expect("send-only socket");
        move || {
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
        }
    });
    let (m, u, f) = (multicast.clone(), unicast.clone(), na.clone());
    within(&ns.a, move || {
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
    within(&ns.a, move || {
        Netlink::requests()
            .expect("netlink")
            .add_addr(idx, IpAddr::V6(vip), 64)
            .expect("add v6");
    });
    let shown = ns.a.ip(&[
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
