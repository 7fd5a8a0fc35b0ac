//! The control port: pen's wire protocol (one command line per connection, a plain-text reply,
//! then the server closes) so the real `penctl` works unchanged, plus fwlb's own commands.
//!
//! Unlike pen, a control client can never stall anything: each connection is its own task,
//! reads have a deadline, and bad input (overlong, binary, half-sent) gets an error reply.

pub mod client;
pub mod commands;
pub mod state;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::balancer::Balancer;
use crate::config::{self, Control};
use crate::wire::penctl;

/// How long a control client may take to send its line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// After a first chunk without a line end, how long to wait for the rest before taking what
/// came as the whole line (pen took one recv; penctl sends its line in one write).
const REST_OF_LINE: Duration = Duration::from_millis(200);

/// Sets the log level at run time (`debug N`).
pub type SetLevel = Box<dyn Fn(u8) + Send + Sync>;

/// What the commands act on.
pub struct Ctl {
    pub balancers: Vec<Arc<Balancer>>,
    /// The control address as configured (pen's `control` reply).
    pub control: String,
    /// pen -X: whether `exit` may stop the daemon.
    pub exit_enabled: bool,
    pub debug: AtomicU8,
    pub set_level: SetLevel,
    pub state_file: Option<PathBuf>,
    /// pen -F: the default file of `write`.
    pub pen_file: Option<PathBuf>,
    /// Woken by `exit`.
    pub exit: Arc<Notify>,
    pub started: Instant,
    /// The VRRP instances' state, when the speaker runs.
    pub vrrp: Option<crate::vrrp::status::Status>,
    /// Where `vrrp standby` / `vrrp resume` go, when the speaker runs.
    pub vrrp_operator: Option<crate::vrrp::status::OperatorTx>,
    /// The nftables firewall is installed: `ban`, `unban` and `show bans` work.
    pub firewall: bool,
    /// The privileged parent, which changes the firewall's sets (None in tests and tools that
    /// run a balancer in-process).
    pub privileged: Option<Arc<crate::privsep::Client>>,
    /// Held while the state file is written, so saves land in the order of their commands.
    pub saving: tokio::sync::Mutex<()>,
}

impl Ctl {
    /// Persist runtime changes, if a state file is configured. A failure is logged, not fatal:
    /// the change itself took effect. The state is taken here; the file is written on a
    /// blocking-pool thread (a slow disk must not hold the control-plane thread).
    pub async fn save_state(&self) {
        let Some(p) = &self.state_file else { return };
        let _in_order = self.saving.lock().await;
        let text = state::snapshot(&self.balancers);
        let path = p.clone();
        let written = tokio::task::spawn_blocking(move || state::write(&path, &text)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(target: "ctl", "cannot save state to {}: {e}", p.display()),
            Err(e) => warn!(target: "ctl", "cannot save state to {}: {e}", p.display()),
        }
    }

    /// The daemon's pid as the operator sees it: the privileged parent's (the one a
    /// supervisor started and signals), or ours when there is no parent.
    pub fn pid(&self) -> u32 {
        if self.privileged.is_some() {
            crate::sys::privsep::parent_pid() as u32
        } else {
            std::process::id()
        }
    }

    pub fn set_debug(&self, level: u8) {
        self.debug.store(level, Ordering::Relaxed);
        (self.set_level)(level);
    }
}

/// Who may connect: loopback always, plus the configured `control_allow` networks.
#[derive(Clone, Debug)]
pub struct Allow(pub Vec<(IpAddr, u8)>);

impl Allow {
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_loopback()
            || self
                .0
                .iter()
                .any(|(net, len)| config::in_network(ip, *net, *len))
    }
}

/// Serve the control port until `stop`.
pub async fn serve(
    ctl: Arc<Ctl>,
    listener: Listener,
    allow: Allow,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        match accepted {
            Ok(Conn::Tcp(s, peer)) => {
                if !allow.permits(peer.ip()) {
                    // Refused without reading, as pen's control ACL does.
                    warn!(target: "ctl", peer = %peer, "control connection refused (not in control_allow)");
                    drop(s);
                    continue;
                }
                let ctl = ctl.clone();
                tokio::spawn(async move { handle(&ctl, s, &peer.to_string()).await });
            }
            Ok(Conn::Unix(s)) => {
                let ctl = ctl.clone();
                tokio::spawn(async move { handle(&ctl, s, "unix").await });
            }
            Err(e) => {
                warn!(target: "ctl", "control accept: {e}");
                // Descriptor exhaustion and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One control connection: read a line (bounded in size and time), run it, reply, close.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(ctl: &Ctl, mut s: S, peer: &str) {
    let mut buf = Vec::with_capacity(256);
    let read = read_line(&mut s, &mut buf);
    let reply = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) if buf.is_empty() => {
            debug!(target: "ctl", peer, "control client sent nothing, dropped");
            return;
        }
        Err(_) | Ok(Ok(())) => match penctl::parse(&buf) {
            Ok(words) => {
                let r = commands::execute(ctl, &words).await;
                if !words.is_empty() {
                    info!(target: "ctl", peer, command = %words.join(" "), error = r.error, "control command");
                }
                r.text
            }
            Err(e) => {
                warn!(target: "ctl", peer, "bad control line: {e}");
                format!("error: {e}\n")
            }
        },
        Ok(Err(e)) => {
            debug!(target: "ctl", peer, "control read: {e}");
            return;
        }
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        s.write_all(reply.as_bytes()).await?;
        s.shutdown().await
    })
    .await;
}

/// Read until a line end, the end of stream, the size limit, or a quiet pause after a chunk
/// without a line end.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    loop {
        let n = if buf.is_empty() {
            s.read(&mut chunk).await?
        } else {
            match tokio::time::timeout(REST_OF_LINE, s.read(&mut chunk)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            }
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if penctl::has_line_end(buf) || buf.len() > penctl::MAX_LINE {
            return Ok(());
        }
    }
}

pub enum Conn {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, p)| Conn::Tcp(s, p)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        }
    }

    /// Open the control listener (inside the runtime).
    pub fn open(c: &Control) -> std::io::Result<Listener> {
        match c {
            Control::Tcp(a) => {
                let l = crate::sys::socket::listener(*a, 128)?;
                Ok(Listener::Tcp(tokio::net::TcpListener::from_std(l)?))
            }
            Control::Unix(p) => {
                // pen removes a stale socket file first.
                let _ = std::fs::remove_file(p);
                Ok(Listener::Unix(tokio::net::UnixListener::bind(p)?))
            }
        }
    }
}

/// The control address as pen prints it.
pub fn describe(c: &Control) -> String {
    match c {
        Control::Tcp(a) => a.to_string(),
        Control::Unix(p) => p.display().to_string(),
    }
}
