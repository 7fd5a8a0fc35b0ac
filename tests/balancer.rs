//! Process tests of the balancer: the real binary, real backends and clients on loopback.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `n` backends s0, s1, ... and a balancer over them with `extra` keys in its section.
async fn balancer(n: usize, extra: &str) -> (Vec<Backend>, SocketAddr, Fwlb) {
    balancer_with(&vec![""; n], extra).await
}

/// As `balancer`, a backend for each of `suffixes`, its server entry the address followed by
/// the suffix (pen's `:max:hard:weight:prio`).
async fn balancer_with(suffixes: &[&str], extra: &str) -> (Vec<Backend>, SocketAddr, Fwlb) {
    let b = backends(suffixes.len()).await;
    let servers: Vec<String> = b
        .iter()
        .zip(suffixes)
        .map(|(b, suffix)| format!("{}{suffix}", b.addr))
        .collect();
    let l = free_addr();
    let f = Fwlb::balancing(l, &servers, extra);
    (b, l, f)
}

/// Count where `clients` sequential new connections land, each from its own source address.
async fn spread(lb: SocketAddr, clients: u32, first_src: u32) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for c in 0..clients {
        *m.entry(which(first_src + c, lb).await).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_spreads_exactly() {
    let (_b, l, _f) = balancer(3, "algorithm = \"roundrobin\"").await;
    // Every connection from one client address: round robin ignores who the client is.
    let mut m = HashMap::new();
    for _ in 0..300 {
        *m.entry(which(1, l).await).or_insert(0) += 1;
    }
    assert_eq!(m.len(), 3, "{m:?}");
    assert!(m.values().all(|&n| n == 100), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_new_clients_round_robin_and_stay() {
    let (_b, l, _f) = balancer(3, "").await; // sticky is the default
    let mut first = HashMap::new();
    for c in 1..=90u32 {
        first.insert(c, which(c, l).await);
    }
    let mut per = HashMap::new();
    for s in first.values() {
        *per.entry(s.clone()).or_insert(0) += 1;
    }
    assert!(
        per.values().all(|&n| n == 30),
        "new clients round robin: {per:?}"
    );
    for c in 1..=90u32 {
        for _ in 0..3 {
            assert_eq!(which(c, l).await, first[&c], "client {c} must stick");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_entries_expire_after_tracking() {
    let (_b, l, _f) = balancer(2, "tracking = \"1s\"").await;
    let a = which(7, l).await;
    assert_eq!(which(7, l).await, a, "remembered within tracking time");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Forgotten: the client is new again and round robin gives it the other server.
    assert_ne!(which(7, l).await, a, "entry must expire after tracking");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_is_stable_per_client_and_spreads() {
    let (_b, l, _f) = balancer(4, "algorithm = \"hash\"").await;
    let mut per = HashMap::new();
    for c in 1..=400u32 {
        let s = which(c * 3, l).await;
        assert_eq!(which(c * 3, l).await, s, "same client, same server");
        *per.entry(s).or_insert(0) += 1;
    }
    assert_eq!(per.len(), 4, "{per:?}");
    assert!(per.values().all(|&n| (60..=140).contains(&n)), "{per:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_splits_by_weight() {
    let weights = [":0:0:1", ":0:0:2", ":0:0:3"];
    let (_b, l, _f) = balancer_with(&weights, "algorithm = \"weight\"").await;
    // Weighted least-connections, as pen: held connections fill servers in proportion to
    // their weights, exactly.
    let mut held = Vec::new();
    for _ in 0..60 {
        let (s, who) = greeted(1, l).await;
        held.push((who, s));
    }
    let mut counts = HashMap::new();
    for (w, _) in &held {
        *counts.entry(w.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        (counts["s0"], counts["s1"], counts["s2"]),
        (10, 20, 30),
        "{counts:?}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Short sequential connections (ties at zero load) also split by weight, not all to s0
    // as pen's lowest-index tie-break did. Each one is closed and done with before the next,
    // so every pick sees idle servers.
    let mut m: HashMap<String, usize> = HashMap::new();
    for c in 0..300u32 {
        let (mut s, who) = greeted(1 + c, l).await;
        s.shutdown().await.expect("fin");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
        *m.entry(who).or_insert(0) += 1;
    }
    assert!((40..=60).contains(&m["s0"]), "{m:?}");
    assert!((85..=115).contains(&m["s1"]), "{m:?}");
    assert!((130..=170).contains(&m["s2"]), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prio_lowest_value_wins_and_falls_back() {
    let prios = [":0:0:1:5", ":0:0:1:1", ":0:0:1:3"];
    let (b, l, _f) = balancer_with(&prios, "algorithm = \"prio\"").await;
    let m = spread(l, 50, 1).await;
    assert_eq!(m.get("s1"), Some(&50), "{m:?}");
    b[1].stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = spread(l, 50, 100).await;
    assert_eq!(
        m.get("s2"),
        Some(&50),
        "prio 3 takes over from the dead prio 1: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_prefers_the_idle_server() {
    let (_b, l, _f) = balancer(2, "algorithm = \"leastconn\"").await;
    // Hold 3 connections; they must spread 2/1 or 1/2, then new ones go to the lighter one.
    let mut held = Vec::new();
    for _ in 0..4 {
        let (s, who) = greeted(1, l).await;
        held.push((who, s));
    }
    let on_s0 = held.iter().filter(|(w, _)| w == "s0").count();
    assert_eq!(on_s0, 2, "4 held connections spread 2/2");
    // Close both of s1's: the next two new connections must go to s1.
    held.retain(|(w, _)| w == "s0");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from(1, l).await.expect("connect");
        next.push(read_line(&mut s).await.expect("greeting"));
        held.push(("x".into(), s));
    }
    assert_eq!(next, vec!["s1", "s1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_moves_only_removed_servers_clients() {
    let b = backends(4).await;
    let l = free_addr();
    let all = addrs(&b);
    let mut before = HashMap::new();
    {
        let _f = Fwlb::balancing(l, &all, "algorithm = \"consistent\"");
        for c in 1..=400u32 {
            before.insert(c, which(c * 13, l).await);
        }
    }
    let per: HashMap<&String, usize> = before.values().fold(HashMap::new(), |mut m, s| {
        *m.entry(s).or_insert(0) += 1;
        m
    });
    assert_eq!(per.len(), 4, "{per:?}");
    // Remove s2 from the config (restart): only its clients may move.
    let three = [all[0], all[1], all[3]];
    let l2 = free_addr();
    let _f = Fwlb::balancing(l2, &three, "algorithm = \"consistent\"");
    let mut moved = 0;
    for c in 1..=400u32 {
        let now = which(c * 13, l2).await;
        if before[&c] == "s2" {
            assert_ne!(now, "s2");
            moved += 1;
        } else {
            assert_eq!(
                now, before[&c],
                "client {c} moved although its server stayed"
            );
        }
    }
    assert!(moved > 40 && moved < 160, "about 1/4 moved: {moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_server_is_blacklisted_and_client_still_served() {
    let live = Backend::start("live").await;
    let dead = free_addr();
    let l = free_addr();
    let f = Fwlb::balancing(
        l,
        &[dead, live.addr],
        // Passive failure handling alone (pen's), without active checks.
        "algorithm = \"roundrobin\"\nblacklist = \"2s\"\nhealth = { check = \"none\" }",
    );
    for c in 0..10 {
        assert_eq!(which(1, l).await, "live", "request {c} must be served");
    }
    let log = f.log();
    assert_eq!(
        log.matches("blacklisted for 2s").count(),
        1,
        "logged once per episode: {log}"
    );
    // The dead port comes alive: it stays skipped while blacklisted, then gets traffic again.
    let revived = Backend::start_on(dead, "revived").await;
    for _ in 0..6 {
        assert_eq!(which(1, l).await, "live");
    }
    assert_eq!(revived.count(), 0, "skipped for the blacklist time");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let m = spread(l, 6, 1).await;
    assert_eq!(
        m.get("revived"),
        Some(&3),
        "back in rotation after the blacklist: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_server_times_out_and_fails_over() {
    // A listener whose accept queue is full drops further SYNs: a blackhole on loopback.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_addr = hole.local_addr().expect("addr");
    let sock = socket2::SockRef::from(&hole);
    sock.listen(0).expect("listen 0");
    let mut fillers = Vec::new();
    for _ in 0..3 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_nonblocking(true).expect("nb");
        let _ = s.connect(&hole_addr.into());
        fillers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = Backend::start("live").await;
    let l = free_addr();
    let f = Fwlb::balancing(
        l,
        &[hole_addr, live.addr],
        "algorithm = \"roundrobin\"\nconnect_timeout = \"700ms\"",
    );
    let t = Instant::now();
    assert_eq!(which(1, l).await, "live");
    let first = t.elapsed();
    assert!(
        first >= Duration::from_millis(650),
        "waited for the connect timeout: {first:?}"
    );
    assert!(first < Duration::from_secs(3), "{first:?}");
    // Blacklisted now: the next clients are not delayed.
    let t = Instant::now();
    for _ in 0..4 {
        assert_eq!(which(1, l).await, "live");
    }
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    f.assert_logged("connect timed out");
    drop(hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_server_takes_clients_when_all_fail() {
    let em = Backend::start("emergency").await;
    let d1 = free_addr();
    let d2 = free_addr();
    let l = free_addr();
    let _f = Fwlb::balancing(l, &[d1, d2], &format!("emergency = \"{}\"", em.addr));
    for c in 1..=5 {
        assert_eq!(which(c, l).await, "emergency");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_closed_only_when_nothing_can_take_it() {
    let d1 = free_addr();
    let l = free_addr();
    let f = Fwlb::balancing(l, &[d1], "");
    let mut s = connect_from(1, l).await.expect("accepted");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(n, Ok(0) | Err(_)), "closed without data");
    f.assert_logged("no server could take the client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_propagated_both_ways() {
    let b = Backend::start("hc").await;
    let l = free_addr();
    let _f = Fwlb::balancing(l, &[b.addr], "");
    let mut s = connect_from(1, l).await.expect("connect");
    s.write_all(b"hello through the balancer")
        .await
        .expect("write");
    // FIN to the balancer: the backend must see EOF, and may still answer afterwards.
    s.shutdown().await.expect("shutdown");
    let out = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(out, "hc\nhello through the balancerBYE hc\n");
}

/// A backend that sends `n` bytes of a known stream after reading a request, then closes,
/// or on "PUT" reads to EOF and answers with the digest of what came.
async fn bulk_backend() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 24];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let h = String::from_utf8_lossy(&head).to_string();
                let n: u64 = h[4..].trim().parse().unwrap_or(0);
                if h.starts_with("GET ") {
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 256 * 1024];
                    while sent < n {
                        let k = (n - sent).min(buf.len() as u64) as usize;
                        fill(&mut buf[..k], sent);
                        if s.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                        sent += k as u64;
                    }
                } else {
                    let mut d = Digest::default();
                    let mut buf = vec![0u8; 256 * 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(k) => d.update(&buf[..k]),
                            Err(_) => return,
                        }
                    }
                    let _ = s
                        .write_all(format!("{} {:016x}", d.len, d.h).as_bytes())
                        .await;
                }
            });
        }
    });
    a
}

/// Deterministic stream content at an offset.
fn fill(buf: &mut [u8], off: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = off + i as u64;
        *b = (x.wrapping_mul(2654435761) >> 13) as u8;
    }
}

/// FNV-1a over the stream (order-sensitive, so reordering or loss shows).
#[derive(Default)]
struct Digest {
    h: u64,
    len: u64,
}

impl Digest {
    fn update(&mut self, b: &[u8]) {
        if self.len == 0 && self.h == 0 {
            self.h = 0xcbf2_9ce4_8422_2325;
        }
        for x in b {
            self.h ^= u64::from(*x);
            self.h = self.h.wrapping_mul(0x0100_0000_01b3);
        }
        self.len += b.len() as u64;
    }
}

async fn transfer(l: SocketAddr, n: u64) {
    // Download.
    let mut s = connect_from(1, l).await.expect("connect");
    s.write_all(format!("GET {n:<20}").as_bytes())
        .await
        .expect("req");
    let mut got = Digest::default();
    let mut want = Digest::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = s.read(&mut buf).await.expect("read");
        if k == 0 {
            break;
        }
        let mut exp = vec![0u8; k];
        fill(&mut exp, got.len);
        want.update(&exp);
        got.update(&buf[..k]);
    }
    assert_eq!(got.len, n, "download length");
    assert_eq!(got.h, want.h, "download content");
    // Upload, with the answer after our FIN (half-close).
    let mut s = connect_from(1, l).await.expect("connect");
    s.write_all(format!("PUT {n:<20}").as_bytes())
        .await
        .expect("req");
    let mut d = Digest::default();
    let mut off = 0u64;
    while off < n {
        let k = (n - off).min(buf.len() as u64) as usize;
        fill(&mut buf[..k], off);
        d.update(&buf[..k]);
        s.write_all(&buf[..k]).await.expect("upload");
        off += k as u64;
    }
    s.shutdown().await.expect("fin");
    let mut ans = String::new();
    s.read_to_string(&mut ans).await.expect("answer");
    assert_eq!(ans, format!("{} {:016x}", n, d.h), "upload digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_and_hundred_mib_transfers_are_exact() {
    let be = bulk_backend().await;
    let l = free_addr();
    let _f = Fwlb::balancing(l, &[be], "");
    transfer(l, 1 << 20).await;
    transfer(l, 100 << 20).await;
    transfer(l, 12_345).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections() {
    let (_b, l, _f) = balancer(2, "algorithm = \"roundrobin\"").await;
    let mut conns = Vec::new();
    for i in 0..1000u32 {
        let (s, who) = greeted(1 + i % 200, l).await;
        conns.push((i, who, s));
    }
    // All 1000 open at once; each one still relays its own bytes.
    let mut tasks = Vec::new();
    for (i, who, mut s) in conns {
        tasks.push(tokio::spawn(async move {
            let msg = format!("message {i}\n");
            s.write_all(msg.as_bytes()).await.expect("write");
            s.shutdown().await.expect("fin");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            assert_eq!(out, format!("{msg}BYE {who}\n"));
            who
        }));
    }
    let mut per = HashMap::new();
    for t in tasks {
        *per.entry(t.await.expect("task")).or_insert(0) += 1;
    }
    assert_eq!(
        per.values()
            .copied()
            .collect::<Vec<_>>()
            .iter()
            .sum::<usize>(),
        1000
    );
    assert!(per.values().all(|&n| n == 500), "{per:?}");
}

/// `threads = 2`: two data-path threads accepting from one listener; every
/// connection still relays its own bytes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_threads_relay_exactly() {
    let b = backends(2).await;
    let l = free_addr();
    let cfg = config(l, &addrs(&b), "algorithm = \"roundrobin\"").replacen(
        "[daemon]\n",
        "[daemon]\nthreads = 2\n",
        1,
    );
    let _f = Fwlb::start(&cfg, l);
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        tasks.push(tokio::spawn(async move {
            let (s, who) = greeted(1 + i % 50, l).await;
            // 64 KiB per connection, distinct per connection.
            let msg: Vec<u8> = (0..65536u32).map(|k| b'a' + ((k + i) % 26) as u8).collect();
            let (mut r, mut w) = s.into_split();
            let send = tokio::spawn(async move {
                w.write_all(&msg).await.expect("write");
                w.shutdown().await.expect("fin");
                msg
            });
            let mut out = Vec::new();
            r.read_to_end(&mut out).await.expect("read");
            let mut want = send.await.expect("send");
            want.extend_from_slice(format!("BYE {who}\n").as_bytes());
            assert!(out == want, "connection {i}: {} bytes back", out.len());
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a connection stalled")
            .expect("task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_backs_off_and_recovers() {
    let b = Backend::start("s").await;
    let l = free_addr();
    // 40 descriptors: a handful for the runtime, two per relayed connection.
    let f = Fwlb::start_with(&config(l, &[b.addr], ""), l, Some(40));
    let mut held = Vec::new();
    for _ in 0..40 {
        // The kernel completes the handshake (backlog) even when fwlb cannot accept.
        held.push(connect_from(1, l).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = f.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = f.cpu_seconds() - cpu0;
    assert!(
        busy < 0.5,
        "must not spin while out of descriptors: {busy} s of CPU in 2 s"
    );
    let log = f.log();
    assert_eq!(
        log.matches("cannot accept").count(),
        1,
        "one line per episode: {log}"
    );
    // Free descriptors: the waiting clients are served, and new ones too.
    let mut served = 0;
    for mut s in held.drain(..30) {
        drop(s.shutdown().await);
        served += 1;
    }
    assert_eq!(served, 30);
    let mut ok = 0;
    for mut s in held.drain(..) {
        if read_line(&mut s).await.is_ok_and(|line| line == "s") {
            ok += 1;
        }
    }
    assert_eq!(
        ok,
        10,
        "clients queued during the episode were served: {}",
        f.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(which(2, l).await, "s");
    f.assert_logged("accepting again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_connections_then_exits_zero() {
    let b = Backend::start("s").await;
    let l = free_addr();
    let mut f = Fwlb::balancing(l, &[b.addr], "");
    let mut s = greeted_by("s", 1, l).await;
    f.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        f.child.try_wait().expect("wait").is_none(),
        "still draining"
    );
    // No new clients ...
    assert!(
        connect_from(2, l).await.is_err(),
        "listener closed on SIGTERM"
    );
    // ... while the open one still works end to end.
    s.write_all(b"still here\n").await.expect("write");
    assert_eq!(read_line(&mut s).await.expect("echo"), "still here");
    s.shutdown().await.expect("fin");
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.expect("read");
    assert_eq!(rest, "BYE s\n");
    let code = f.wait_exit(Duration::from_secs(3));
    assert_eq!(code, Some(0), "{}", f.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deadline_closes_stuck_connections() {
    let b = Backend::start("s").await;
    let l = free_addr();
    let cfg =
        config(l, &[b.addr], "").replace("shutdown_timeout = \"5s\"", "shutdown_timeout = \"1s\"");
    let mut f = Fwlb::start(&cfg, l);
    let _stuck = greeted_by("s", 1, l).await;
    let t = Instant::now();
    f.signal("TERM");
    let code = f.wait_exit(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", f.log());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    f.assert_logged("deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_and_freebind_on_an_address_not_held() {
    let b = Backend::start("s").await;
    let port = free_port();
    let v6: SocketAddr = format!("[::1]:{port}").parse().expect("v6");
    // 192.0.2.0/24 (TEST-NET-1) is on no interface here: the bind works like a VIP not yet held.
    let absent: SocketAddr = format!("192.0.2.10:{port}").parse().expect("v4");
    let cfg = format!(
        "[daemon]\ncontrol = \"none\"\n[[balancer]]\nname = \"six\"\nlisten = [\"{v6}\", \"{absent}\"]\nservers = [\"{}\"]\n",
        b.addr
    );
    let f = Fwlb::start(&cfg, v6);
    let mut s = tokio::net::TcpStream::connect(v6)
        .await
        .expect("connect over IPv6");
    assert_eq!(read_line(&mut s).await.expect("greeting"), "s");
    f.assert_logged("192.0.2.10");
}

#[test]
fn port_in_use_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let l = taken.local_addr().expect("addr");
    let out = fwlb_on_config("run", &config(l, &["127.0.0.1:9"], ""));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {l}")) && err.contains("in use"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_quiet_connections_only() {
    let b = Backend::start("s").await;
    let l = free_addr();
    let _f = Fwlb::balancing(l, &[b.addr], "idle_timeout = \"1s\"");
    let mut quiet = greeted_by("s", 1, l).await;
    let mut busy = greeted_by("s", 2, l).await;
    let t = Instant::now();
    // The busy one talks every 300 ms for 2.4 s and must stay open.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        busy.write_all(format!("ping {i}\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(
            read_line(&mut busy).await.expect("echo"),
            format!("ping {i}")
        );
    }
    // The quiet one was closed after 1 to 1.25 s.
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_millis(100), quiet.read(&mut buf))
        .await
        .expect("already closed");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "quiet connection still open after {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_max_and_hard_limits() {
    // s0: soft limit 2, hard 3; sticky algorithm.
    let (_b, l, _f) = balancer_with(&[":2:3", ""], "").await;
    let mut held = Vec::new();
    let mut on_s0 = Vec::new();
    // New clients alternate; collect two on s0 (its soft limit).
    for c in 1..=4u32 {
        let (s, who) = greeted(c, l).await;
        if who == "s0" {
            on_s0.push(c);
        }
        held.push(s);
    }
    assert_eq!(on_s0.len(), 2, "{on_s0:?}");
    // s0 is at max: a new client goes to s1 ...
    assert_eq!(which(50, l).await, "s1");
    // ... but a client remembered on s0 may go up to hard (3) ...
    let _extra = greeted_by("s0", on_s0[0], l).await;
    // ... and no further.
    assert_eq!(which(on_s0[1], l).await, "s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_makes_clients_wait_not_fail() {
    let b = Backend::start("s").await;
    let l = free_addr();
    let _f = Fwlb::balancing(l, &[b.addr], "max_connections = 2");
    let a = greeted_by("s", 1, l).await;
    let _c = greeted_by("s", 2, l).await;
    // The third waits in the backlog: connected, but nothing relayed yet.
    let mut third = connect_from(3, l).await.expect("connect");
    let mut buf = [0u8; 8];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "served beyond max_connections"
    );
    assert_eq!(b.count(), 2);
    drop(a);
    assert_eq!(
        read_line(&mut third)
            .await
            .expect("served once a slot freed"),
        "s"
    );
}
