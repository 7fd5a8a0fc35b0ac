//! Client identity through the balancer: PROXY protocol v1/v2 and X-Forwarded-For, checked
//! against the real `fwlb echo` backend, and the connection log.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `fwlb echo` (it says "listening" once it does), killed when dropped.
struct Echo {
    _daemon: Fwlb,
    addr: SocketAddr,
}

impl Echo {
    fn start(name: &str) -> Echo {
        let addr = free_addr();
        let args = ["echo", &addr.to_string(), "--name", name].map(String::from);
        Echo {
            _daemon: Fwlb::start_args(&args, addr),
            addr,
        }
    }
}

/// A new echo and a balancer in front of it with `extra` keys.
fn echo_behind(extra: &str) -> (Echo, Fwlb, SocketAddr) {
    let echo = Echo::start("e");
    let (f, l) = start(&echo, extra);
    (echo, f, l)
}

fn start(echo: &Echo, extra: &str) -> (Fwlb, SocketAddr) {
    let l = free_addr();
    (Fwlb::balancing(l, &[echo.addr], extra), l)
}

/// Read `n` HTTP responses from `s` and return their JSON bodies.
async fn responses(s: &mut TcpStream, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    while out.len() < n {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                out.push(serde_json::from_slice(&body).unwrap_or_else(|_| {
                    Value::String(format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body)))
                }));
                continue;
            }
        }
        let k = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        if k == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..k]);
    }
    out
}

/// The X-Forwarded-For values the echo saw in one `request` from `src`, and the response.
async fn forwarded_for(l: SocketAddr, src: u32, request: &[u8]) -> (Vec<String>, Value) {
    let mut s = send_from(src, l, request).await;
    let r = responses(&mut s, 1)
        .await
        .into_iter()
        .next()
        .expect("a response");
    (header(&r, "X-Forwarded-For"), r)
}

/// What the balancer answers within 5 s, as text.
async fn reply(s: &mut TcpStream) -> String {
    String::from_utf8_lossy(&read_within(s, Duration::from_secs(5)).await).into_owned()
}

fn header(v: &Value, name: &str) -> Vec<String> {
    v["headers"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|p| p[0].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
                .filter_map(|p| p[1].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One raw (non-HTTP) exchange; the echo answers with one JSON line.
async fn raw_line(l: SocketAddr, src: u32, send: &[u8]) -> (Value, SocketAddr) {
    let mut s = send_from(src, l, send).await;
    let me = s.local_addr().expect("addr");
    let out = read_to_close(&mut s, Duration::from_secs(10)).await;
    (serde_json::from_str(out.trim()).expect("json line"), me)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_and_v2_carry_the_client_address() {
    let echo = Echo::start("e");
    for v in ["v1", "v2"] {
        let (_f, l) = start(&echo, &format!("proxy_protocol = \"{v}\""));
        let (j, me) = raw_line(l, 7, b"hello").await;
        assert_eq!(j["proxy"]["version"], if v == "v1" { 1 } else { 2 }, "{j}");
        assert_eq!(j["proxy"]["src"], me.to_string(), "{j}");
        assert_eq!(j["proxy"]["dst"], l.to_string(), "{j}");
        assert_eq!(
            j["data"], "hello",
            "the client's bytes follow the header untouched"
        );
    }
    // Without the option the backend sees no header, and the balancer as the peer.
    let (_f, l) = start(&echo, "");
    let (j, _) = raw_line(l, 7, b"hi").await;
    assert_eq!(j["proxy"], Value::Null);
    assert!(
        j["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
}

/// A balancer writes the PROXY header when it connects and the client's request when it
/// arrives: the echo must still see an HTTP request after a header that came alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_reads_http_after_a_proxy_header_that_came_alone() {
    let echo = Echo::start("e");
    let v1 = b"PROXY TCP4 192.0.2.7 192.0.2.10 40000 8000\r\n".to_vec();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[192, 0, 2, 7, 192, 0, 2, 10, 0x9c, 0x40, 0x1f, 0x40]);
    for (version, head) in [(1, v1), (2, v2)] {
        let mut s = TcpStream::connect(echo.addr).await.expect("connect");
        s.write_all(&head).await.expect("header");
        s.flush().await.expect("flush");
        // Separate segments: the request comes well after the header.
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"GE").await.expect("part");
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.write_all(b"T /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let r = responses(&mut s, 1).await;
        let j = &r[0];
        assert_eq!(j["request"], "GET /x HTTP/1.1", "PROXY v{version}: {j}");
        assert_eq!(j["proxy"]["version"], version, "{j}");
        assert_eq!(j["proxy"]["src"], "192.0.2.7:40000", "{j}");
        assert_eq!(header(j, "host"), ["h"], "{j}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_on_every_keep_alive_request_with_chunked_and_pipelined_bodies() {
    let (_echo, _f, l) = echo_behind("http_forwarded_for = true");
    let mut s = connect_from(5, l).await.expect("connect");
    // Three requests in one write: a chunked body, a Content-Length body that looks like a
    // request, and a plain GET.
    let reqs = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 27\r\n\r\nGET /evil HTTP/1.1\r\nX: y\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(reqs).await.expect("send");
    let r = responses(&mut s, 3).await;
    assert_eq!(r.len(), 3, "{r:?}");
    let lines: Vec<&str> = r
        .iter()
        .map(|v| v["request"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        lines,
        ["POST /a HTTP/1.1", "POST /b HTTP/1.1", "GET /c HTTP/1.1"]
    );
    assert_eq!(r[0]["body_bytes"], 5);
    assert_eq!(r[1]["body_bytes"], 27);
    for v in &r {
        assert_eq!(
            header(v, "X-Forwarded-For"),
            vec!["127.0.0.5".to_string()],
            "{v}"
        );
        assert_eq!(
            header(v, "X-Forwarded-Proto"),
            vec!["http".to_string()],
            "{v}"
        );
    }
    // A fourth request on the same connection, split across writes.
    s.write_all(b"GET /d HTTP/1.1\r\nHo").await.expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"st: x\r\n\r\n").await.expect("send");
    let r = responses(&mut s, 1).await;
    assert_eq!(
        header(&r[0], "X-Forwarded-For"),
        vec!["127.0.0.5".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_xff_is_replaced_unless_the_client_is_a_trusted_proxy() {
    let (_echo, _f, l) =
        echo_behind("http_forwarded_for = true\ntrusted_proxies = [\"127.0.0.9\"]");
    let forged = b"GET / HTTP/1.1\r\nHost: x\r\nx-forwarded-FOR: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n";
    let (untrusted, _) = forwarded_for(l, 6, forged).await;
    assert_eq!(untrusted, ["127.0.0.6"], "untrusted: replaced");
    let (trusted, _) = forwarded_for(l, 9, forged).await;
    assert_eq!(
        trusted,
        ["10.0.0.1, 10.0.0.2, 127.0.0.9"],
        "trusted: appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_proxy_takes_the_client_from_the_header() {
    let (_echo, f, l) = echo_behind("accept_proxy = true\nhttp_forwarded_for = true");
    let request =
        b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (xff, r) = forwarded_for(l, 3, request).await;
    assert_eq!(xff, ["203.0.113.9"], "{r:?}");
    // No header: refused and counted, and the balancer goes on serving.
    let mut bad = send_from(4, l, b"GET / HTTP/1.1\r\n\r\n").await;
    let out = read_within(&mut bad, Duration::from_secs(5)).await;
    assert!(out.is_empty());
    f.assert_logged("no valid PROXY header");
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.assert_logged("conn 203.0.113.9:40000 -> 198.51.100.1:443");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_head_gets_400_and_non_http_passes_untouched() {
    let (_echo, f, l) = echo_behind("http_forwarded_for = true");
    let both =
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut s = send_from(2, l, both).await;
    let out = reply(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request"), "{out:?}");
    drop(s);
    f.wait_log("400 bad request", Duration::from_secs(3));
    // An oversized head.
    let mut s = connect_from(2, l).await.expect("connect");
    let mut big = b"GET / HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70_000));
    let _ = s.write_all(&big).await;
    let out = reply(&mut s).await;
    assert!(out.starts_with("HTTP/1.1 400 Bad Request"), "{out:?}");
    // Non-HTTP is relayed as is.
    let (j, _) = raw_line(l, 2, b"SSH-2.0-OpenSSH_9.2\r\n").await;
    assert_eq!(j["data"], "SSH-2.0-OpenSSH_9.2\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_log_has_both_five_tuples() {
    let (echo, f, l) = echo_behind("");
    let (j, me) = raw_line(l, 8, b"x").await;
    // The echo saw the balancer's local address as its peer: that is the second 5-tuple.
    let local = j["peer"].as_str().expect("peer").to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = f.log();
    let want = format!("conn {me} -> {l} {local} -> {}", echo.addr);
    assert!(log.contains(&want), "want {want:?} in {log}");
    assert!(
        log.contains("server=#0") && log.contains("end=\"closed\""),
        "{log}"
    );
}
