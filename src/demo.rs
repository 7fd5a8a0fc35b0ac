//! `fwlb demo`: the balancer doing its job on loopback with nothing else installed. Three
//! built-in HTTP backends, a sticky balancer in front, clients from several source addresses;
//! then one backend dies mid-way and its clients move on without a failed request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

use crate::balancer::Balancer;
use crate::balancer::engine::DataPath;
use crate::config::{self, Algorithm};
use crate::sys;

const CLIENTS: u8 = 6;

pub fn run() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(demo())
}

/// A tiny HTTP backend that names itself and the peer it saw.
async fn backend(name: &'static str) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let h = tokio::spawn(async move {
        while let Ok((mut s, peer)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = format!("answered by {name} (connection from the balancer at {peer})\n");
                let resp = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok((addr, h))
}

/// One request from source address 127.0.0.`src`; returns the body.
async fn request(lb: SocketAddr, src: u8) -> Result<String> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, src)),
        0,
    ))?;
    let mut s = sock.connect(lb).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    match text.split_once("\r\n\r\n") {
        Some((_, body)) if !body.is_empty() => Ok(body.trim().to_string()),
        _ => bail!("no response"),
    }
}

async fn round(lb: SocketAddr, label: &str) -> Result<usize> {
    println!("\n{label}");
    let mut failed = 0;
    for src in 1..=CLIENTS {
        for _ in 0..2 {
            match request(lb, src).await {
                Ok(body) => println!("  client 127.0.0.{src:<3} -> {body}"),
                Err(e) => {
                    failed += 1;
                    println!("  client 127.0.0.{src:<3} -> FAILED: {e}")
                }
            }
        }
    }
    Ok(failed)
}

async fn demo() -> Result<()> {
    let (a1, _h1) = backend("web1").await?;
    let (a2, h2) = backend("web2").await?;
    let (a3, _h3) = backend("web3").await?;
    let cfg = config::Balancer {
        name: "demo".into(),
        listen: vec!["127.0.0.1:0".parse()?],
        servers: [a1, a2, a3]
            .into_iter()
            .map(|addr| config::Server {
                addr,
                name: None,
                max: 0,
                hard: 0,
                weight: 1,
                prio: 0,
                health: None,
            })
            .collect(),
        servers_srv: None,
        algorithm: Algorithm::Sticky,
        emergency: None,
        blacklist: Duration::from_secs(30),
        tracking: Duration::ZERO,
        connect_timeout: Duration::from_secs(3),
        idle_timeout: Duration::ZERO,
        max_clients: 2048,
        max_connections: 1000,
        backlog: 128,
        proxy_protocol: config::ProxyProtocol::None,
        accept_proxy: false,
        http_forwarded_for: false,
        trusted_proxies: Vec::new(),
        connection_log: false,
        resolve_prefer: Default::default(),
        // pen has no active checks.
        health: config::Health::with(config::Check::None),
        slowstart: Duration::ZERO,
        on_down: config::OnDown::Keep,
        head_timeout: config::defaults::HEAD_TIMEOUT,
        keepalive_timeout: config::defaults::KEEPALIVE_TIMEOUT,
    };
    let std_l = sys::socket::listener(cfg.listen[0], cfg.backlog).context("listen")?;
    let lb = Balancer::new(cfg);
    let dp = DataPath::start(1).context("data path")?;
    let listening = dp.listen(&lb, std_l).context("listen")?;
    let addr = listening.addr();
    println!("fwlb demo: balancer {addr} -> web1 {a1}, web2 {a2}, web3 {a3} (algorithm sticky)");
    let mut failed = round(
        addr,
        "Each client sends two requests; new clients go round robin, known ones stick:",
    )
    .await?;
    h2.abort();
    // Let the aborted listener close its socket so connects are refused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    failed += round(
        addr,
        "web2 is now dead. Its clients are moved on (web2 blacklisted), nobody sees an error:",
    )
    .await?;
    println!("\nServers:");
    {
        let now = std::time::Instant::now();
        let st = lb.lock();
        for (i, s) in st.servers.iter().enumerate() {
            let state = match s.blacklist_left(now) {
                Some(d) => format!("blacklisted for {}s more", d.as_secs() + 1),
                None => "up".into(),
            };
            println!(
                "  {i} {} connections {} failures {} {state}",
                s.cfg.addr, s.total, s.failures
            );
        }
    }
    listening.close().await;
    drop(dp);
    if failed > 0 {
        bail!("{failed} request(s) failed");
    }
    println!("\nAll {} requests were served.", 4 * CLIENTS as usize);
    Ok(())
}
