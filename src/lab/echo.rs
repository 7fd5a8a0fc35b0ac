//! `fwlb echo LISTEN...`: a mock backend that answers every connection with what it saw, so an
//! operator (or a test, or the lab) can check that the right server got the right client
//! address and headers: the TCP peer, a PROXY header if one came, and for HTTP the request
//! line and headers, as JSON (in an HTTP response when the request was HTTP).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::wire::proxy;

/// Longest request head answered (a larger one gets 431).
const MAX_HEAD: usize = 64 * 1024;
/// A raw (non-HTTP) client gets its answer after this long without a complete line.
const RAW_WAIT: Duration = Duration::from_millis(300);

/// How the mock server behaves.
#[derive(Debug, Clone, Default)]
pub struct Mode {
    /// A name to put in every answer.
    pub name: Option<String>,
    /// Accept and read, never answer (a hung application).
    pub hang: bool,
    /// Answer HTTP requests for this path with 503 (a failing health endpoint).
    pub fail_health: Option<String>,
    /// An agent (HAProxy's agent check) on this port of each listening address, answering
    /// this text and a newline to every connection.
    pub agent: Option<(u16, String)>,
}

pub fn run(listen: &[SocketAddr], mode: Mode) -> Result<()> {
    let mode = std::sync::Arc::new(mode);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for a in listen {
            let l = TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a}"))?;
            info!(target: "lb", listen = %l.local_addr()?, "echo listening");
            let mode = mode.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((s, peer)) = l.accept().await {
                    let mode = mode.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(s, peer, &mode).await {
                            debug!(target: "lb", %peer, "echo: {e}");
                        }
                    });
                }
            }));
        }
        if let Some((port, text)) = &mode.agent {
            agents(listen, *port, text, &mut tasks).await?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        for t in tasks {
            t.abort();
        }
        Ok(())
    })
}

/// Listen on `port` of each address's IP and answer `text` and a newline, then close.
async fn agents(
    listen: &[SocketAddr],
    port: u16,
    text: &str,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<()> {
    let mut ips: Vec<std::net::IpAddr> = listen.iter().map(|a| a.ip()).collect();
    ips.dedup();
    for ip in ips {
        let a = SocketAddr::new(ip, port);
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("cannot listen on {a} (agent)"))?;
        info!(target: "lb", listen = %a, "echo agent listening");
        let line = format!("{text}\n").into_bytes();
        tasks.push(tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let line = line.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(&line).await;
                    let _ = s.shutdown().await;
                });
            }
        }));
    }
    Ok(())
}

fn proxy_json(p: &Option<(u8, Option<proxy::Addrs>)>) -> Value {
    match p {
        None => Value::Null,
        Some((v, None)) => json!({ "version": v, "command": "local" }),
        Some((v, Some(a))) => {
            json!({ "version": v, "src": a.src.to_string(), "dst": a.dst.to_string() })
        }
    }
}

/// Read what comes next onto `buf`; false at the end of the stream.
async fn more(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Result<bool> {
    let n = s.read(chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// `more`, waiting at most RAW_WAIT: false at the end of the stream or when nothing came.
async fn more_soon(s: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Result<bool> {
    match tokio::time::timeout(RAW_WAIT, more(s, buf, chunk)).await {
        Ok(r) => r,
        Err(_) => Ok(false),
    }
}

async fn answer(mut s: TcpStream, peer: SocketAddr, mode: &Mode) -> Result<()> {
    let local = s.local_addr()?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    if mode.hang {
        // Read (so the peer's writes complete) and never answer, until the peer goes.
        while more(&mut s, &mut buf, &mut chunk).await? {
            buf.clear();
        }
        return Ok(());
    }
    let name = mode.name.as_deref();
    let proxied = proxy_header(&mut s, &mut buf, &mut chunk).await?;
    // The first bytes after a PROXY header may come in a later segment (a balancer writes the
    // header as soon as it connects, the client's bytes when they arrive): read until the
    // start says whether this is HTTP.
    while undecided(&buf) && more_soon(&mut s, &mut buf, &mut chunk).await? {}
    let base = json!({
        "server": name,
        "peer": peer.to_string(),
        "local": local.to_string(),
        "proxy": proxy_json(&proxied),
    });
    if looks_like_http(&buf) {
        answer_http(s, buf, chunk, base, mode.fail_health.as_deref()).await
    } else {
        // Raw TCP: one JSON line with what came (up to a short wait), then close.
        if buf.is_empty() {
            // A read error here still gets the answer (the write reports the connection).
            let _ = more_soon(&mut s, &mut buf, &mut chunk).await;
        }
        let mut v = base;
        v["data"] = Value::String(String::from_utf8_lossy(&buf).into_owned());
        s.write_all(format!("{v}\n").as_bytes()).await?;
        s.shutdown().await?;
        Ok(())
    }
}

/// A PROXY header, if the first bytes are one (taken off `buf`).
async fn proxy_header(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> Result<Option<(u8, Option<proxy::Addrs>)>> {
    loop {
        match proxy::decode(buf) {
            Ok(proxy::Decoded::Header {
                len,
                version,
                addrs,
            }) => {
                buf.drain(..len);
                return Ok(Some((version, addrs)));
            }
            Ok(proxy::Decoded::Incomplete) => {}
            Err(_) => return Ok(None),
        }
        if !more_soon(s, buf, chunk).await? {
            return Ok(None);
        }
    }
}

/// What the echo needs of a request head.
struct Head {
    request_line: String,
    headers: Vec<Value>,
    body_len: usize,
    chunked: bool,
    close: bool,
}

impl Head {
    fn parse(head: &[u8]) -> Head {
        let head = String::from_utf8_lossy(head);
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or("").to_string();
        let headers: Vec<Value> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| json!([k.trim(), v.trim()]))
            .collect();
        let header = |name: &str| {
            headers.iter().find_map(|h| {
                let k = h[0].as_str()?;
                k.eq_ignore_ascii_case(name)
                    .then(|| h[1].as_str().unwrap_or("").to_string())
            })
        };
        let body_len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let chunked =
            header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || request_line.ends_with("HTTP/1.0");
        Head {
            request_line,
            headers,
            body_len,
            chunked,
            close,
        }
    }
}

/// HTTP/1.x: answer every request of the connection (keep-alive, pipelining).
async fn answer_http(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    mut chunk: Vec<u8>,
    base: Value,
    fail_health: Option<&str>,
) -> Result<()> {
    loop {
        let Some(end) = head_end(&buf) else {
            if buf.len() > MAX_HEAD {
                s.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
                return Ok(());
            }
            if !more(&mut s, &mut buf, &mut chunk).await? {
                return Ok(());
            }
            continue;
        };
        let head = Head::parse(&buf[..end]);
        buf.drain(..end);
        // Read the request body (so the next pipelined request lines up) and report its size.
        let body = if head.chunked {
            read_chunked(&mut s, &mut buf, &mut chunk).await?
        } else {
            read_body(&mut s, &mut buf, &mut chunk, head.body_len).await?
        };
        let Some(body) = body else {
            return Ok(());
        };
        if fail_health.is_some() && head.request_line.split(' ').nth(1) == fail_health {
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
            s.shutdown().await?;
            return Ok(());
        }
        let mut v = base.clone();
        v["request"] = Value::String(head.request_line);
        v["headers"] = Value::Array(head.headers);
        v["body_bytes"] = json!(body.len());
        let body = format!("{v}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if head.close {
                "Connection: close\r\n"
            } else {
                ""
            }
        );
        s.write_all(resp.as_bytes()).await?;
        if head.close {
            s.shutdown().await?;
            return Ok(());
        }
    }
}

/// A body of `len` bytes; None if the client went away first.
async fn read_body(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    len: usize,
) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while body.len() < len {
        if buf.is_empty() && !more(s, buf, chunk).await? {
            return Ok(None);
        }
        let k = (len - body.len()).min(buf.len());
        body.extend(buf.drain(..k));
    }
    Ok(Some(body))
}

/// Read a chunked body; None if the client went away first. Bounded by MAX_BODY.
async fn read_chunked(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
) -> Result<Option<Vec<u8>>> {
    const MAX_BODY: usize = 64 * 1024 * 1024;
    let mut body = Vec::new();
    loop {
        // The size line.
        let line_end = loop {
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                break i;
            }
            if !more(s, buf, chunk).await? {
                return Ok(None);
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        buf.drain(..=line_end);
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).context("bad chunk size")?;
        if size == 0 {
            // Trailers up to the blank line.
            loop {
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let blank = buf[..i].iter().all(|&b| b == b'\r');
                    buf.drain(..=i);
                    if blank {
                        return Ok(Some(body));
                    }
                    continue;
                }
                if !more(s, buf, chunk).await? {
                    return Ok(None);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            anyhow::bail!("chunked body over {MAX_BODY} bytes");
        }
        // The data and its CRLF.
        while buf.len() < size + 2 {
            if !more(s, buf, chunk).await? {
                return Ok(None);
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Whether the bytes so far could still become an HTTP request line: nothing yet, or only
/// upper-case letters short of the longest method.
fn undecided(b: &[u8]) -> bool {
    b.len() < 21 && b.iter().all(|c| c.is_ascii_uppercase())
}

/// An HTTP method token and a space at the start.
fn looks_like_http(b: &[u8]) -> bool {
    let n = b
        .iter()
        .take(21)
        .take_while(|c| c.is_ascii_uppercase())
        .count();
    n > 0 && b.get(n) == Some(&b' ')
}

/// The end of the request head (after its blank line).
fn head_end(b: &[u8]) -> Option<usize> {
    if let Some(i) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_and_head_end() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_http(b"SSH-2.0-x"));
        assert!(!looks_like_http(b"\x16\x03\x01"));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\nA: b\n\nrest"), Some(21));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert!(undecided(b"") && undecided(b"GE") && undecided(b"OPTIONS"));
        assert!(!undecided(b"GET ") && !undecided(b"\x16\x03") && !undecided(b"hello"));
    }
}
