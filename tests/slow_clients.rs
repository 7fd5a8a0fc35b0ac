//! Slow and silent clients in the HTTP modes: the first request head is read before any
//! server is chosen (`head_timeout`, 408), kept-alive connections end after their answer
//! (`keepalive_timeout`), a slow server is not mistaken for an idle client, and slowloris from
//! the real `slowhttptest` holds no server connection while normal clients are served.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HTTP: &str = "http_forwarded_for = true\nhead_timeout = \"1s\"\nkeepalive_timeout = \"1s\"";

/// One balancer to `server` with `extra` keys and a control port: the daemon, its listener,
/// its control address.
fn balancer(server: SocketAddr, extra: &str) -> (Fwlb, SocketAddr, SocketAddr) {
    let (l, ctl) = (free_addr(), free_addr());
    let cfg =
        config(l, &[server], extra).replace("control = \"none\"", &format!("control = \"{ctl}\""));
    (Fwlb::start(&cfg, l), l, ctl)
}

/// `head_timeouts` in `show stats`.
fn head_timeouts(ctl: SocketAddr) -> u64 {
    let out = Command::new(BIN)
        .args(["ctl", "-C", &ctl.to_string(), "--json", "show", "stats"])
        .output()
        .expect("run fwlb ctl");
    assert!(out.status.success(), "fwlb ctl show stats: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["head_timeouts"]
        .as_u64()
        .expect("head_timeouts in show stats")
}

/// One request through the balancer: the time to the backend's echo of it.
async fn request(l: SocketAddr, src: u32) -> Duration {
    let t = Instant::now();
    let mut s = send_from(src, l, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before the echo: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_answered_408_and_never_reaches_a_server() {
    let b = Backend::start("s0").await;
    let (_f, l, ctl) = balancer(b.addr, HTTP);

    // Slowloris by hand: a header byte every 200 ms, never the blank line.
    let mut s = send_from(2, l, b"GET / HTTP/1.1\r\n").await;
    let t = Instant::now();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        assert!(t.elapsed() < Duration::from_secs(4), "still open after 4 s");
        if s.write_all(b"X").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    answer.extend(read_within(&mut s, Duration::from_secs(2)).await);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        t.elapsed()
    );

    // A client that sends nothing (a browser's preconnect) is closed without a word.
    let mut quiet = connect_from(3, l).await.expect("connect");
    let t = Instant::now();
    let said = read_to_close(&mut quiet, Duration::from_secs(3)).await;
    assert_eq!(said, "", "a silent client got an answer");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        t.elapsed()
    );
    assert_eq!(b.count(), 0, "a slow or silent client reached the server");

    // A complete head goes through at once.
    assert!(request(l, 4).await < Duration::from_secs(1));
    assert_eq!(b.count(), 1);
    assert_eq!(head_timeouts(ctl), 2);
}

/// A server that answers each request head after `delay` (Content-Length framed), and keeps
/// the connection open.
async fn slow_server(delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_ends_after_the_answer_but_a_slow_server_is_waited_for() {
    let server = slow_server(Duration::from_millis(2500)).await;
    let l = free_addr();
    let _f = Fwlb::balancing(l, &[server], HTTP);
    let mut s = send_from(2, l, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let t = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    while !got.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the slow answer within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed while the server was working: {:?}",
            t.elapsed()
        );
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "answer too soon: {:?}",
        t.elapsed()
    );
    // Answered and quiet: the balancer closes it after keepalive_timeout (1 s .. 1.25 s).
    let t = Instant::now();
    let rest = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert_eq!(rest, "");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2000),
        "keep-alive close after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowhttptest_slowloris_holds_no_server_while_normal_clients_are_served() {
    host::require_tool("slowhttptest", "slowhttptest");
    let b = Backend::start("s0").await;
    let (_f, l, ctl) = balancer(b.addr, "http_forwarded_for = true\nhead_timeout = \"2s\"");
    // 300 slowloris connections, a header every second, for 8 s.
    let mut attack = Command::new("slowhttptest")
        .args([
            "-H", "-c", "300", "-r", "150", "-i", "1", "-l", "8", "-p", "3",
        ])
        .args(["-u", &format!("http://{l}/")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run slowhttptest");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        worst = worst.max(request(l, 10 + i).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while attack.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = attack.kill();
    let _ = attack.wait();
    assert!(
        worst < Duration::from_millis(100),
        "a normal client waited {worst:?}"
    );
    // Only the 20 normal clients (and the attacker's probes, which are complete requests).
    let reached = b.count();
    assert!(
        (20..=40).contains(&reached),
        "{reached} connections reached the server"
    );
    let timed_out = head_timeouts(ctl);
    assert!(
        timed_out >= 250,
        "only {timed_out} slowloris connections timed out"
    );
}
