//! Shared helpers for process tests: the real `fwlb` binary on loopback, real backends, real
//! clients from chosen 127.0.0.0/8 source addresses; in the modules, the host's tools and
//! processes (`host`), waits with a deadline (`wait`), network namespaces (`netns`) and VRRP
//! peers (`vrrp`). Each test binary uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod host;
#[cfg(target_os = "linux")]
pub mod netns;
#[cfg(target_os = "linux")]
pub mod vrrp;
pub mod wait;

pub use host::*;
#[cfg(target_os = "linux")]
pub use netns::{Net, Ns, NsDaemon};
pub use wait::*;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

pub const BIN: &str = env!("CARGO_BIN_EXE_fwlb");

/// A Python function for clients run in namespaces: `echo(host, port, timeout)` sends a line
/// to an `fwlb echo` (directly or through fwlb) and returns its JSON answer.
pub const PY_ECHO: &str = r#"
import json, socket
def echo(host, port, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(b"hello\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    s.close()
    return json.loads(data)
"#;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    // Below the ephemeral range (32768 and up): a port the kernel hands out for port 0 may be
    // taken as the source port of some test's outgoing connection between this check and the
    // daemon's bind. Each test process starts at its own offset and counts up.
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 120) as u16 * 100;
    for _ in 0..12_000 {
        let port = 20_000 + (base - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = StdListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// A daemon whose output goes to a log file, and what tests ask of that log.
pub trait Logged {
    fn log_file(&self) -> &Path;

    /// What it wrote so far.
    fn log(&self) -> String {
        read_log(self.log_file())
    }

    /// Its log must say `needle` by now; fails showing the log.
    fn assert_logged(&self, needle: &str) {
        let log = self.log();
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }

    /// Wait until its log says `needle` (a ready line); fails showing the log after `limit`.
    fn wait_log(&self, needle: &str, limit: Duration) {
        wait_for_lines(self.log_file(), needle, 1, limit);
    }

    /// Wait until its log says `needle` `times` times (once a reload).
    fn wait_log_count(&self, needle: &str, times: usize, limit: Duration) {
        wait_for_lines(self.log_file(), needle, times, limit);
    }
}

/// 127.0.0.1 with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// An address the test wrote itself.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A firewall ban of `addr` for `secs` seconds, or for good.
pub fn ban(addr: &str, secs: Option<u64>) -> fwlb::firewall::Ban {
    fwlb::firewall::Ban {
        ip: ip(addr),
        timeout: secs.map(Duration::from_secs),
    }
}

/// A running `fwlb run`, killed when dropped; its stderr goes to a file for assertions.
pub struct Fwlb {
    pub child: Child,
    pub listen: SocketAddr,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Fwlb {
    /// Start fwlb with `config` (which must listen on `listen`) and wait until it accepts.
    pub fn start(config: &str, listen: SocketAddr) -> Fwlb {
        Self::start_with(config, listen, None)
    }

    /// One balancer from `listen` to `servers` with `extra` keys (`config`), started.
    pub fn balancing(listen: SocketAddr, servers: &[impl std::fmt::Display], extra: &str) -> Fwlb {
        Self::start(&config(listen, servers, extra), listen)
    }

    /// As `start`, with RLIMIT_NOFILE set to `nofile` for the daemon.
    pub fn start_with(config: &str, listen: SocketAddr, nofile: Option<u64>) -> Fwlb {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("fwlb.toml");
        std::fs::write(&cfg, config).expect("write config");
        let cmd = if let Some(n) = nofile {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" run -c \"$1\""))
                .arg(BIN)
                .arg(&cfg);
            c
        } else {
            let mut c = Command::new(BIN);
            c.arg("run").arg("-c").arg(&cfg);
            c
        };
        Self::spawn(cmd, dir, listen)
    }

    /// Start `fwlb ARGS...` (e.g. `pen -f ...`) and wait until it listens on `listen`.
    pub fn start_args(args: &[String], listen: SocketAddr) -> Fwlb {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Self::spawn(cmd, tempfile::tempdir().expect("tempdir"), listen)
    }

    /// Run `cmd` with its stderr in `dir`, and wait until it says it listens.
    fn spawn(mut cmd: Command, dir: tempfile::TempDir, listen: SocketAddr) -> Fwlb {
        let log = dir.path().join("stderr.log");
        let logf = std::fs::File::create(&log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(logf);
        let child = cmd.spawn().expect("spawn fwlb");
        let mut f = Fwlb {
            child,
            listen,
            log,
            dir,
        };
        f.wait_listening();
        f
    }

    fn wait_listening(&mut self) {
        // The line is logged after listen(2), so connects succeed from here on. (Probing with
        // a connect would reach a backend and skew the distribution tests.)
        let (log, listen) = (self.log.clone(), self.listen);
        let up = || match self.child.try_wait() {
            Ok(Some(st)) => panic!("fwlb exited early with {st}: {}", read_log(&log)),
            _ => read_log(&log).contains("listening").then_some(()),
        };
        let why = || format!("fwlb did not listen on {listen}: {}", read_log(&log));
        wait_with(Duration::from_secs(10), up, why);
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        signal(sig, self.pid());
    }

    /// Wait for exit up to `limit`; returns the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let mut code = None;
        settles(limit, Duration::from_millis(10), || {
            let status = self.child.try_wait().ok().flatten();
            code = status.and_then(|st| st.code());
            status.is_some()
        });
        code
    }

    /// The unprivileged child of the daemon (the parent is `pid()`), once it exists.
    pub fn child_pid(&self) -> Option<i32> {
        child_of(self.pid())
    }

    /// utime + stime of the daemon (parent and child), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let mut pids = vec![self.pid()];
        pids.extend(self.child_pid());
        pids.iter().map(|p| cpu_of(*p)).sum()
    }
}

impl Logged for Fwlb {
    fn log_file(&self) -> &Path {
        &self.log
    }
}

impl Drop for Fwlb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one balancer; `servers` are addresses, or server entries as text.
pub fn config(listen: SocketAddr, servers: &[impl std::fmt::Display], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[daemon]\ncontrol = \"none\"\nshutdown_timeout = \"5s\"\n[[balancer]]\nname = \"t\"\nlisten = \"{listen}\"\nservers = [{}]\n{extra}\n",
        list.join(", ")
    )
}

/// The real penctl (Debian's pen package); the test fails without it.
pub fn penctl_path() -> &'static str {
    let p = "/usr/bin/penctl";
    assert!(
        std::path::Path::new(p).exists(),
        "this test needs the real penctl: apt-get install pen"
    );
    p
}

/// The real penctl: `penctl CONTROL WORDS...`; returns (stdout, exit code).
pub fn penctl_raw(ctl: impl std::fmt::Display, cmd: &str) -> (String, i32) {
    let out = host::output(
        Command::new(penctl_path())
            .arg(ctl.to_string())
            .args(cmd.split(' ')),
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// As `penctl_raw`; penctl must exit 0. Returns its stdout.
pub fn penctl(ctl: impl std::fmt::Display, cmd: &str) -> String {
    let (out, code) = penctl_raw(ctl, cmd);
    assert_eq!(code, 0, "penctl {cmd}: {out}");
    out
}

/// A backend that greets with `NAME\n`, echoes what it reads, and on the client's EOF writes
/// `BYE NAME\n` and closes (so half-close is visible end to end).
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    task: JoinHandle<()>,
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> Backend {
        let l = TcpListener::bind(addr).await.expect("backend bind");
        let addr = l.local_addr().expect("addr");
        let n = name.to_string();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acc = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                acc.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let n = n.clone();
                tokio::spawn(async move {
                    if s.write_all(format!("{n}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 65536];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(k) => {
                                if s.write_all(&buf[..k]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                    let _ = s.write_all(format!("BYE {n}\n").as_bytes()).await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            task,
            accepted,
        }
    }

    pub fn count(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Backends s0, s1, ... s(n-1).
pub async fn backends(n: usize) -> Vec<Backend> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(Backend::start(&format!("s{i}")).await);
    }
    all
}

/// Their addresses.
pub fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// Connect to `to` from source address 127.0.0.`src`-based: src is the host part within
/// 127.0.0.0/8 (1 ..= 2^24 - 2).
pub async fn connect_from(src: u32, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    let ip = Ipv4Addr::from(0x7f00_0000u32 + src);
    sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    sock.connect(to).await
}

/// A new connection from `src` to `to` that has sent `bytes`.
pub async fn send_from(src: u32, to: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = connect_from(src, to).await.expect("connect");
    s.write_all(bytes).await.expect("send");
    s
}

/// Read one line (the backend's greeting) with a timeout.
pub async fn read_line(s: &mut TcpStream) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    let fut = async {
        loop {
            let n = s.read(&mut b).await?;
            if n == 0 || b[0] == b'\n' {
                return Ok::<_, std::io::Error>(());
            }
            out.push(b[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timeout"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A new connection from `src` to `lb`, and the greeting of the backend it reached.
pub async fn greeted(src: u32, lb: SocketAddr) -> (TcpStream, String) {
    let mut s = connect_from(src, lb).await.expect("connect to fwlb");
    let name = read_line(&mut s).await.expect("greeting");
    (s, name)
}

/// A new connection from `src` to `lb`, which must reach backend `name`.
pub async fn greeted_by(name: &str, src: u32, lb: SocketAddr) -> TcpStream {
    let (s, got) = greeted(src, lb).await;
    assert_eq!(
        got, name,
        "the connection from {src} reached another backend"
    );
    s
}

/// Which backend a new connection from `src` lands on (then closes it).
pub async fn which(src: u32, lb: SocketAddr) -> String {
    greeted(src, lb).await.1
}

/// `which` for each source in turn, one connection after the other.
pub async fn which_each(srcs: impl IntoIterator<Item = u32>, lb: SocketAddr) -> Vec<String> {
    let mut seen = Vec::new();
    for src in srcs {
        seen.push(which(src, lb).await);
    }
    seen
}

/// `fwlb CMD -c FILE` with `config` in a temporary FILE; its output, whatever the status.
pub fn fwlb_on_config(cmd: &str, config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fwlb.toml");
    std::fs::write(&path, config).expect("write the config");
    host::output(Command::new(BIN).args([cmd, "-c"]).arg(&path))
}

/// Everything `s` receives until the peer closes; the test fails if that takes over `limit`.
pub async fn read_to_close(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("the peer did not close within {limit:?}"))
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// What `s` receives within `limit`: up to the peer's close, a read error, or the deadline.
pub async fn read_within(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    out
}

/// Blocking helper: read everything until EOF with a timeout.
pub fn read_all_blocking(s: &mut std::net::TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

pub fn write_blocking(s: &mut std::net::TcpStream, b: &[u8]) {
    s.write_all(b).expect("write");
}

/// Run `body`; if it fails, fail again with its message followed by the logs of `daemons`
/// (each with its name), as they are after the failure.
pub fn showing_logs(daemons: &[(&str, &dyn Logged)], body: impl FnOnce()) {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    if let Err(e) = r {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let logs: Vec<String> = daemons
            .iter()
            .map(|(name, d)| format!("== {name} log:\n{}", d.log()))
            .collect();
        panic!("{msg}\n{}", logs.join("\n"));
    }
}
