//! What the lab (and `fwlb drill`) measure with: client requests through a VIP, and the
//! VRRP state of a host polled through its control port. Both run on their own thread, in the
//! network namespace of the client or host when in the lab.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// What a mock server (`fwlb echo`) reported about one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The server address the request reached (`local` of fwlb echo).
    pub server: String,
    /// The TCP peer the server saw: the balancer host's address.
    pub peer: Option<IpAddr>,
    pub forwarded_for: Option<String>,
    /// The client address of a PROXY header.
    pub proxy_src: Option<IpAddr>,
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fail {
    /// The SYN was answered with a reset (nobody listens there).
    Refused,
    /// ICMP unreachable, or no route.
    Unreachable,
    /// No answer to the SYN in time.
    ConnectTimeout,
    /// Reset after the connection was set up.
    Reset,
    /// Connected, no complete answer in time.
    Timeout,
    /// Connected, closed without an answer (no server could take it).
    Closed,
    /// An answer that is not fwlb echo's.
    BadAnswer,
}

impl Fail {
    /// Failures of a new connection (the handshake never completed), as opposed to failures
    /// of a connection already set up.
    pub fn is_connect(self) -> bool {
        matches!(
            self,
            Fail::Refused | Fail::Unreachable | Fail::ConnectTimeout
        )
    }
}

#[derive(Debug, Clone)]
pub struct Req {
    pub target: usize,
    pub src: Ipv4Addr,
    pub start: Instant,
    /// When the TCP handshake completed.
    pub connected: Option<Instant>,
    pub end: Instant,
    pub result: std::result::Result<Seen, Fail>,
}

/// A request's target: where, and how to speak to it.
#[derive(Debug, Clone)]
pub struct Aim {
    pub addr: SocketAddrV4,
    /// Start with a PROXY v1 header (the balancer has `accept_proxy`).
    pub send_proxy: bool,
    /// Send an HTTP request and expect fwlb echo's JSON; else a bare TCP connect is enough.
    pub http: bool,
}

fn classify(e: &std::io::Error) -> Fail {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Fail::Refused,
        std::io::ErrorKind::TimedOut => Fail::ConnectTimeout,
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => Fail::Reset,
        _ if matches!(
            e.raw_os_error(),
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN)
        ) =>
        {
            Fail::Unreachable
        }
        _ => Fail::Refused,
    }
}

/// One request: connect from `src` (unspecified: any), send an HTTP GET, read fwlb echo's
/// answer. The whole of it within `timeout`.
pub async fn request(aim: &Aim, src: Ipv4Addr, timeout: Duration) -> Req {
    let start = Instant::now();
    let mut connected = None;
    let result = tokio::time::timeout(timeout, exchange(aim, src, &mut connected)).await;
    let result = match result {
        Ok(r) => r,
        Err(_) if connected.is_none() => Err(Fail::ConnectTimeout),
        Err(_) => Err(Fail::Timeout),
    };
    Req {
        target: 0,
        src,
        start,
        connected,
        end: Instant::now(),
        result,
    }
}

async fn exchange(
    aim: &Aim,
    src: Ipv4Addr,
    connected: &mut Option<Instant>,
) -> std::result::Result<Seen, Fail> {
    let sock = TcpSocket::new_v4().map_err(|_| Fail::Unreachable)?;
    if !src.is_unspecified() {
        sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
            .map_err(|_| Fail::Unreachable)?;
    }
    let mut s = sock
        .connect(SocketAddr::V4(aim.addr))
        .await
        .map_err(|e| classify(&e))?;
    *connected = Some(Instant::now());
    if !aim.http {
        return Ok(Seen {
            server: String::new(),
            peer: None,
            forwarded_for: None,
            proxy_src: None,
        });
    }
    let local = s.local_addr().map_err(|_| Fail::Reset)?;
    let mut msg = String::new();
    if aim.send_proxy {
        msg.push_str(&format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            local.ip(),
            aim.addr.ip(),
            local.port(),
            aim.addr.port()
        ));
    }
    msg.push_str(&format!(
        "GET /lab HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        aim.addr
    ));
    s.write_all(msg.as_bytes())
        .await
        .map_err(|e| after_connect(&e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 256 * 1024 {
                    return Err(Fail::BadAnswer);
                }
            }
            Err(e) => return Err(after_connect(&e)),
        }
    }
    if buf.is_empty() {
        return Err(Fail::Closed);
    }
    parse_echo(&buf).ok_or(Fail::BadAnswer)
}

fn after_connect(e: &std::io::Error) -> Fail {
    match classify(e) {
        Fail::Refused => Fail::Reset,
        f => f,
    }
}

/// fwlb echo's HTTP answer: a 200 whose body is one JSON object.
pub fn parse_echo(buf: &[u8]) -> Option<Seen> {
    let text = std::str::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    let header = |name: &str| -> Option<String> {
        v["headers"].as_array()?.iter().find_map(|h| {
            h[0].as_str()?
                .eq_ignore_ascii_case(name)
                .then(|| h[1].as_str().unwrap_or("").to_string())
        })
    };
    let ip_of = |s: &str| s.parse::<SocketAddr>().ok().map(|a| a.ip());
    Some(Seen {
        server: v["local"].as_str()?.to_string(),
        peer: v["peer"].as_str().and_then(ip_of),
        forwarded_for: header("x-forwarded-for"),
        proxy_src: v["proxy"]["src"].as_str().and_then(ip_of),
    })
}

/// A bounded load loop: a new request every `every`, rotating over targets and source
/// addresses, at most `max` requests and never past `limit`, each within `timeout`.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Req>>>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

pub struct LoadSpec {
    pub aims: Vec<Aim>,
    pub sources: Vec<Ipv4Addr>,
    pub every: Duration,
    pub timeout: Duration,
    pub max: usize,
    pub limit: Duration,
}

impl Load {
    /// Start the loop on a thread; `enter` runs first on that thread (to enter a namespace).
    pub fn start(spec: LoadSpec, enter: impl FnOnce() -> Result<()> + Send + 'static) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let (st, dn) = (stop.clone(), done.clone());
        let handle = std::thread::spawn(move || -> Result<()> {
            enter()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let t0 = Instant::now();
                let mut tasks = Vec::new();
                let mut tick = tokio::time::interval(spec.every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut k = 0usize;
                while !st.load(Ordering::Relaxed) && k < spec.max && t0.elapsed() < spec.limit {
                    tick.tick().await;
                    let ti = k % spec.aims.len().max(1);
                    let Some(aim) = spec.aims.get(ti).cloned() else {
                        break;
                    };
                    let src = spec
                        .sources
                        .get(k % spec.sources.len().max(1))
                        .copied()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED);
                    let (dn, timeout) = (dn.clone(), spec.timeout);
                    tasks.push(tokio::spawn(async move {
                        let mut r = request(&aim, src, timeout).await;
                        r.target = ti;
                        if let Ok(mut d) = dn.lock() {
                            d.push(r);
                        }
                    }));
                    k += 1;
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
            Ok(())
        });
        Load {
            stop,
            done,
            handle: Some(handle),
        }
    }

    /// The requests finished so far.
    pub fn finished(&self) -> Vec<Req> {
        self.done.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// Stop starting requests, wait for those in flight; every request, in start order.
    pub fn stop(mut self) -> Result<Vec<Req>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join()
                .map_err(|_| anyhow!("the load thread panicked"))??;
        }
        let mut v = self.finished();
        v.sort_by_key(|r| r.start);
        Ok(v)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The VRRP state of each VRID of a host (`show vrrp`), or None when its control port did not
/// answer.
pub type States = Option<Vec<(u8, String)>>;

pub fn parse_states(reply: &str) -> States {
    let v: serde_json::Value = serde_json::from_str(reply.trim()).ok()?;
    let rows = v["vrrp"].as_array()?;
    Some(
        rows.iter()
            .filter_map(|r| {
                let vrid = u8::try_from(r["vrid"].as_u64()?).ok()?;
                let mut st = r["state"].as_str()?.to_string();
                if r["standby"].as_bool() == Some(true) {
                    st.push_str("+standby");
                }
                Some((vrid, st))
            })
            .collect(),
    )
}

/// Ask a control port for `show vrrp` once.
pub fn states(control: &str, timeout: Duration) -> States {
    let reply = crate::control::client::request_within(control, "show vrrp json", timeout).ok()?;
    parse_states(&reply)
}

/// The state without the `+standby` mark.
fn base(st: &str) -> &str {
    st.split('+').next().unwrap_or(st)
}

/// Whether every VRID is in `state` (on standby or not).
pub fn all_in(s: &States, state: &str) -> bool {
    s.as_ref()
        .is_some_and(|v| !v.is_empty() && v.iter().all(|(_, st)| base(st) == state))
}

/// Whether any VRID is master (a master on standby still holds its VIPs).
pub fn any_master(s: &States) -> bool {
    s.as_ref()
        .is_some_and(|v| v.iter().any(|(_, st)| base(st) == "master"))
}

/// Whether any VRID is on standby.
pub fn any_standby(s: &States) -> bool {
    s.as_ref()
        .is_some_and(|v| v.iter().any(|(_, st)| st.ends_with("+standby")))
}

/// A thread polling a control port every `every`; keeps each change with its time.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, States)>>>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Watcher {
    pub fn start(
        control: String,
        every: Duration,
        enter: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<(Instant, States)>>> = Arc::new(Mutex::new(Vec::new()));
        let (st, sn) = (stop.clone(), seen.clone());
        let handle = std::thread::spawn(move || -> Result<()> {
            enter()?;
            // Bounded: a lab drill lasts seconds; at most ten minutes of polls.
            let t0 = Instant::now();
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(600) {
                let t = Instant::now();
                let s = states(&control, Duration::from_millis(300));
                if let Ok(mut v) = sn.lock()
                    && v.last().is_none_or(|(_, last)| *last != s)
                {
                    v.push((t, s));
                }
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
            Ok(())
        });
        Watcher {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    /// The latest state seen.
    pub fn latest(&self) -> States {
        self.seen
            .lock()
            .ok()
            .and_then(|v| v.last().map(|(_, s)| s.clone()))
            .flatten()
    }

    /// Stop; every change seen, in order.
    pub fn stop(mut self) -> Vec<(Instant, States)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_answer() {
        let body = r#"{"server":"10.0.0.11","peer":"10.0.0.2:41000","local":"10.0.0.11:80","proxy":null,"request":"GET /lab HTTP/1.1","headers":[["Host","x"],["X-Forwarded-For","192.0.2.254"]],"body_bytes":0}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}\n",
            body.len() + 1
        );
        let s = parse_echo(resp.as_bytes()).expect("parsed");
        assert_eq!(s.server, "10.0.0.11:80");
        assert_eq!(s.peer, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(s.forwarded_for.as_deref(), Some("192.0.2.254"));
        assert_eq!(s.proxy_src, None);
        let p = body.replace(
            "\"proxy\":null",
            r#""proxy":{"version":2,"src":"192.0.2.250:5000","dst":"192.0.2.10:8000"}"#,
        );
        let resp = format!("HTTP/1.1 200 OK\r\n\r\n{p}\n");
        assert_eq!(
            parse_echo(resp.as_bytes()).and_then(|s| s.proxy_src),
            Some("192.0.2.250".parse().unwrap())
        );
        assert!(parse_echo(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").is_none());
    }

    #[test]
    fn vrrp_states() {
        let s = parse_states(
            r#"{"vrrp":[{"vrid":1,"state":"master"},{"vrid":2,"state":"backup","standby":true}]}"#,
        );
        assert_eq!(
            s,
            Some(vec![(1, "master".into()), (2, "backup+standby".into())])
        );
        assert!(any_master(&s) && !all_in(&s, "master") && any_standby(&s));
        let m = parse_states(r#"{"vrrp":[{"vrid":1,"state":"master","standby":true}]}"#);
        assert!(any_master(&m) && all_in(&m, "master"));
        assert!(parse_states("error: show vrrp: no [[vrrp]] configured").is_none());
    }
}
