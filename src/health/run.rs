//! The checks' thin I/O layer: one task per balancer on the child's control-plane runtime
//! takes the checks that are due (`Balancer::health_due`) and runs each as a task of its
//! own, bounded by `timeout` for connect, write and read together, reading at most
//! `probe::MAX_READ`. Nothing here touches the data-path threads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Outcome;
use super::probe::{self, Verdict};
use crate::balancer::Balancer;
use crate::config::{self, Check, Health};
use crate::wire::proxy;

/// The longest the scheduler sleeps, so a reload or an operator's switch is seen soon.
const LOOK_AGAIN: Duration = Duration::from_millis(250);

/// Check `lb`'s servers until `stop` says so.
pub async fn checks(lb: Arc<Balancer>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = Instant::now();
        let due = lb.health_due(now);
        for (index, addr, h) in due.servers {
            let lb = lb.clone();
            tokio::spawn(async move {
                let o = check(&h, addr).await;
                lb.health_result(index, addr, o);
            });
        }
        if stopped(now, due.next, &mut stop).await {
            return;
        }
    }
}

/// Ask `lb`'s servers' agents until `stop` says so.
pub async fn agents(lb: Arc<Balancer>, mut stop: watch::Receiver<bool>) {
    loop {
        let now = Instant::now();
        let due = lb.agent_due(now);
        for (index, addr, a) in due.servers {
            let lb = lb.clone();
            tokio::spawn(async move {
                let target = SocketAddr::new(addr.ip(), a.port);
                let answer = match tokio::time::timeout(a.timeout, agent_line(target)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "timeout after {}",
                        config::duration::format(a.timeout)
                    )),
                };
                lb.agent_result(index, addr, answer);
            });
        }
        if stopped(now, due.next, &mut stop).await {
            return;
        }
    }
}

/// Connect to an agent and read its line: up to a newline or the end of the stream, at most
/// `agent::MAX_LINE` bytes and one more (so that an overlong line is seen as one).
async fn agent_line(target: SocketAddr) -> Result<Vec<u8>, String> {
    let mut s = connect(target).await?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            buf.truncate(end);
            return Ok(buf);
        }
        if n == 0 || buf.len() > super::agent::MAX_LINE {
            return Ok(buf);
        }
    }
}

/// Sleep until `next` (at most LOOK_AGAIN); true when `stop` said so meanwhile.
async fn stopped(now: Instant, next: Option<Instant>, stop: &mut watch::Receiver<bool>) -> bool {
    let wake = next.map_or(now + LOOK_AGAIN, |t| t.min(now + LOOK_AGAIN));
    tokio::select! {
        _ = tokio::time::sleep_until(wake.into()) => false,
        _ = stop.changed() => true,
    }
}

/// Connect, the reason of a failure (`connect refused`).
async fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(target)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect refused".to_string(),
            _ => format!("connect: {e}"),
        })
}

/// One check of `server`.
pub async fn check(h: &Health, server: SocketAddr) -> Outcome {
    let start = Instant::now();
    let target = SocketAddr::new(server.ip(), h.port.unwrap_or(server.port()));
    let (ok, reason) = match tokio::time::timeout(h.timeout, exchange(h, target)).await {
        Ok(Ok(())) => (true, "ok".to_string()),
        Ok(Err(why)) => (false, why),
        Err(_) => (
            false,
            format!("timeout after {}", config::duration::format(h.timeout)),
        ),
    };
    let at = Instant::now();
    Outcome {
        ok,
        reason,
        took: at - start,
        at,
    }
}

/// Connect, send, and judge the reply; the reason of a failure.
async fn exchange(h: &Health, target: SocketAddr) -> Result<(), String> {
    let mut s = connect(target).await?;
    if h.proxy_protocol {
        let local = s.local_addr().map_err(|e| format!("local address: {e}"))?;
        send(&mut s, &proxy::encode_v1(local, target)).await?;
    }
    match h.check {
        Check::None | Check::Tcp => Ok(()),
        Check::Http => {
            send(&mut s, &probe::http_request(h, target)).await?;
            judge(&mut s, |buf, eof| probe::judge_http(h, buf, eof)).await
        }
        Check::SendExpect => {
            send(&mut s, &h.send).await?;
            judge(&mut s, |buf, eof| probe::judge_expect(&h.expect, buf, eof)).await
        }
    }
}

async fn send(s: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    s.write_all(bytes).await.map_err(|e| format!("send: {e}"))
}

/// Read until `verdict` decides (it does at the end of the stream or at `MAX_READ`).
async fn judge(s: &mut TcpStream, verdict: impl Fn(&[u8], bool) -> Verdict) -> Result<(), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let room = probe::MAX_READ.saturating_sub(buf.len()).min(chunk.len());
        let n = s
            .read(&mut chunk[..room])
            .await
            .map_err(|e| format!("read: {e}"))?;
        buf.extend_from_slice(&chunk[..n]);
        match verdict(&buf, n == 0) {
            Verdict::Pass => return Ok(()),
            Verdict::Fail(why) => return Err(why),
            Verdict::More => {}
        }
    }
}
