//! Shared helpers for process tests: the real `fwlb` binary on loopback, real backends, real
//! clients from chosen 127.0.0.0/8 source addresses.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

pub const BIN: &str = env!("CARGO_BIN_EXE_fwlb");

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

    /// As `start`, with RLIMIT_NOFILE set to `nofile` for the daemon.
    pub fn start_with(config: &str, listen: SocketAddr, nofile: Option<u64>) -> Fwlb {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("fwlb.toml");
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.path().join("stderr.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = if let Some(n) = nofile {
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

    /// Start `fwlb ARGS...` (e.g. `pen -f ...`) and wait until it listens on `listen`.
    pub fn start_args(args: &[String], listen: SocketAddr) -> Fwlb {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("stderr.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn fwlb");
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("fwlb exited early with {st}: {}", self.log_text());
            }
            // The line is logged after listen(2), so connects succeed from here on. (Probing
            // with a connect would reach a backend and skew the distribution tests.)
            if self.log_text().contains("listening") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "fwlb did not listen on {}: {}",
            self.listen,
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Wait for exit up to `limit`; returns the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
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

/// The first child process of `pid` (fwlb's parent has exactly one).
pub fn child_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime of one process, in seconds.
pub fn cpu_of(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(") ").map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|x| !x.1.starts_with('Z')))
        .unwrap_or(false)
}

impl Drop for Fwlb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one balancer.
pub fn config(listen: SocketAddr, servers: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[daemon]\ncontrol = \"none\"\nshutdown_timeout = \"5s\"\n[[balancer]]\nname = \"t\"\nlisten = \"{listen}\"\nservers = [{}]\n{extra}\n",
        list.join(", ")
    )
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

/// Connect to `to` from source address 127.0.0.`src`-based: src is the host part within
/// 127.0.0.0/8 (1 ..= 2^24 - 2).
pub async fn connect_from(src: u32, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    let ip = Ipv4Addr::from(0x7f00_0000u32 + src);
    sock.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    sock.connect(to).await
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

/// Which backend a new connection from `src` lands on (then closes it).
pub async fn which(src: u32, lb: SocketAddr) -> String {
    let mut s = connect_from(src, lb).await.expect("connect to fwlb");
    read_line(&mut s).await.expect("greeting")
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

/// `fwlb run` inside network namespace `ns` (as `ip netns exec` execs it, the pid is the
/// privileged parent's), killed with its child when dropped.
pub struct NsDaemon {
    pub child: Child,
    _dir: tempfile::TempDir,
    pub log: std::path::PathBuf,
}

impl NsDaemon {
    pub fn with_config(ns: &str, config: &str) -> NsDaemon {
        let dir = tempfile::tempdir().expect("dir");
        let cfg = dir.path().join("fwlb.toml");
        std::fs::write(&cfg, config).expect("config");
        let log = dir.path().join("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BIN, "run", "-c"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn fwlb");
        NsDaemon {
            child,
            _dir: dir,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        // `ip netns exec` execs the program: the child pid is fwlb's.
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    /// The pids of fwlb's own children (the unprivileged child).
    pub fn kids(&self) -> Vec<String> {
        let pid = self.child.id();
        let mut kids = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                kids.extend(list.split_whitespace().map(str::to_string));
            }
        }
        kids
    }

    /// A crash: SIGKILL the unprivileged child (the speaker) first, then the parent. Killing
    /// only the parent is a planned handover: the child sees it go, sends priority 0, exits.
    pub fn crash(&self) {
        let kids = self.kids();
        assert!(
            !kids.is_empty(),
            "fwlb {} has no child process to crash",
            self.child.id()
        );
        for k in kids.iter().chain([&self.child.id().to_string()]) {
            let _ = Command::new("kill").args(["-KILL", k]).status();
        }
    }
}

impl Drop for NsDaemon {
    /// Both processes, and wait until the child is gone too: it holds the control port, which
    /// the next daemon started in this namespace needs.
    fn drop(&mut self) {
        let kids = self.kids();
        for k in &kids {
            let _ = Command::new("kill").args(["-KILL", k]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let t0 = Instant::now();
        // Any thread not yet a zombie: the data-path threads close their sockets after the
        // main thread already shows as one.
        let alive = |k: &String| {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{k}/task")) else {
                return false;
            };
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                    !st.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            })
        };
        while kids.iter().any(alive) && t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
