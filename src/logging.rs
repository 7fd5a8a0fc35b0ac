//! Where log lines go: stderr (the default, for runit, daemontools and systemd), or syslog
//! (`[daemon] log = "syslog"`, and `fwlb pen` without -f as pen does).
//!
//! Both carry the same text, `LEVEL TARGET: message key=value`. For syslog each tracing event
//! becomes one RFC 3164 datagram, facility daemon, ident `fwlb[PID]`, its severity taken from
//! the level. The socket is connected when `fwlb run` starts, before any fork or chroot: inside
//! the chroot `/dev/log` does not exist.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use syslog::{Facility, Formatter3164, LogFormat, Logger, LoggerBackend, Severity};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Where local syslog daemons listen: Linux, macOS, FreeBSD.
pub const SOCKETS: &[&str] = &["/dev/log", "/var/run/syslog", "/var/run/log"];

/// Overrides `SOCKETS` (tests stand a socket of their own in for /dev/log).
pub const SOCKET_ENV: &str = "FWLB_SYSLOG_SOCKET";

/// A reconnect is tried at most this often while the syslog daemon is away.
const RETRY: Duration = Duration::from_secs(1);

/// A connection to the local syslog daemon.
pub struct Syslog {
    conn: Mutex<Conn>,
}

struct Conn {
    path: PathBuf,
    /// None while the syslog daemon is away.
    logger: Option<Logger<LoggerBackend, Formatter3164>>,
    retry_at: Instant,
    /// Messages dropped since the last one that went through.
    lost: u64,
}

fn connect_path(path: &Path) -> io::Result<Logger<LoggerBackend, Formatter3164>> {
    let fmt = Formatter3164 {
        facility: Facility::LOG_DAEMON,
        // Local messages carry no hostname; syslogd adds its own.
        hostname: None,
        process: "fwlb".into(),
        pid: std::process::id(),
    };
    let logger = syslog::unix_custom(fmt, path)
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    // A syslog daemon that stops reading must not stall the data path: drop the message
    // instead (counted, and reported once it reads again).
    if let LoggerBackend::Unix(s) = &logger.backend {
        s.set_nonblocking(true)?;
    }
    Ok(logger)
}

fn severity(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::LOG_ERR,
        Level::WARN => Severity::LOG_WARNING,
        Level::INFO => Severity::LOG_INFO,
        _ => Severity::LOG_DEBUG,
    }
}

impl Syslog {
    /// Connect to `path`.
    pub fn connect_to(path: &Path) -> io::Result<Syslog> {
        let logger = connect_path(path)?;
        Ok(Syslog {
            conn: Mutex::new(Conn {
                path: path.to_path_buf(),
                logger: Some(logger),
                retry_at: Instant::now(),
                lost: 0,
            }),
        })
    }

    /// Connect to $FWLB_SYSLOG_SOCKET, else to the first of `SOCKETS` that exists.
    pub fn connect() -> io::Result<Syslog> {
        if let Some(p) = std::env::var_os(SOCKET_ENV) {
            return Self::connect_to(Path::new(&p));
        }
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("no syslog socket ({})", SOCKETS.join(", ")),
        );
        for p in SOCKETS {
            if Path::new(p).exists() {
                match Self::connect_to(Path::new(p)) {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    /// The socket this connection uses.
    pub fn path(&self) -> PathBuf {
        self.lock().path.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        // A panic while logging leaves nothing half-done worth refusing the lock for.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send one message. Never blocks and never fails: logging must not stop the daemon.
    pub fn send(&self, level: &Level, text: &str) {
        let mut c = self.lock();
        if c.logger.is_none() && Instant::now() >= c.retry_at {
            // The syslog daemon restarted. By the same path, which inside the chroot is the
            // chroot's own dev/log (or var/run/log): an extra socket syslogd can be told to
            // open there (FreeBSD syslogd -l, rsyslog imuxsock).
            c.retry_at = Instant::now() + RETRY;
            c.logger = connect_path(&c.path.clone()).ok();
        }
        let lost = c.lost;
        if lost > 0
            && c.send_one(
                &Level::WARN,
                &format!("WARN fwlb: {lost} log messages lost (syslog not reading)"),
            )
        {
            c.lost = 0;
        }
        if !c.send_one(level, text) {
            c.lost += 1;
        }
    }
}

impl Conn {
    fn send_one(&mut self, level: &Level, text: &str) -> bool {
        let Some(logger) = self.logger.as_mut() else {
            return false;
        };
        // After the fork the child logs through the same socket: each message carries the
        // pid of the process that sent it.
        logger.formatter.pid = std::process::id();
        let mut msg = Vec::with_capacity(text.len() + 48);
        if logger
            .formatter
            .format(&mut msg, severity(level), text)
            .is_err()
        {
            return false;
        }
        // One datagram: sent whole or not at all.
        match logger.backend.write_all(&msg) {
            Ok(_) => true,
            Err(e) => {
                let gone = matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::EPIPE | libc::ECONNRESET)
                );
                if gone {
                    self.logger = None;
                    self.retry_at = Instant::now();
                }
                false
            }
        }
    }
}

static SYSLOG: OnceLock<Syslog> = OnceLock::new();

/// From now on every process of this daemon logs to syslog. Call before any fork or chroot.
/// Returns the socket used.
pub fn to_syslog() -> io::Result<PathBuf> {
    let s = Syslog::connect()?;
    let path = s.path();
    // A second call keeps the first connection.
    let _ = SYSLOG.set(s);
    Ok(path)
}

/// The subscriber's writer: syslog once `to_syslog` was called (or the one given), else
/// stderr. Each event is written whole in one call, so lines never interleave.
#[derive(Clone, Default)]
pub struct Writer {
    to: Option<Arc<Syslog>>,
}

impl Writer {
    /// Always to this connection (tests).
    pub fn to(s: Arc<Syslog>) -> Writer {
        Writer { to: Some(s) }
    }
}

/// One event being formatted.
pub struct Event<'a> {
    writer: &'a Writer,
    level: Level,
    buf: Vec<u8>,
}

impl Write for Event<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.writer.to.as_deref().or_else(|| SYSLOG.get()) {
            Some(s) => {
                let text = String::from_utf8_lossy(&self.buf);
                // The stderr format pads the level to five columns; syslog has no columns.
                s.send(&self.level, text.trim_start().trim_end_matches('\n'));
            }
            None => {
                let _ = io::stderr().write_all(&self.buf);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for Writer {
    type Writer = Event<'a>;
    fn make_writer(&'a self) -> Event<'a> {
        Event {
            writer: self,
            level: Level::INFO,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Event<'a> {
        Event {
            writer: self,
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn recv(s: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 8192];
        let n = s.recv(&mut buf).expect("a datagram within the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A socket standing in for /dev/log at `path`.
    fn dev_log(path: &std::path::Path) -> UnixDatagram {
        let server = UnixDatagram::bind(path).expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        server
    }

    /// A datagram socket stands in for /dev/log; events sent through a real subscriber arrive
    /// one per datagram, with the daemon facility, the level's severity and the stderr text.
    #[test]
    fn events_become_rfc3164_datagrams() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let server = dev_log(&path);
        let sys = Arc::new(Syslog::connect_to(&path).expect("connect"));
        let sub = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_target(true)
            .with_max_level(Level::DEBUG)
            .with_writer(Writer::to(sys))
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "lb", balancer = "www", "listening");
            tracing::warn!(target: "vrrp", vrid = 7, "became master");
            tracing::error!(target: "fw", "cannot install");
            tracing::debug!(target: "ctl", "detail");
            tracing::trace!(target: "ctl", "not sent: above the level");
        });
        let pid = std::process::id();
        // facility daemon = 3: <3*8 + severity>.
        for (pri, text) in [
            (30, "INFO lb: listening balancer=\"www\""),
            (28, "WARN vrrp: became master vrid=7"),
            (27, "ERROR fw: cannot install"),
            (31, "DEBUG ctl: detail"),
        ] {
            let m = recv(&server);
            let (head, body) = m
                .split_once(&format!(" fwlb[{pid}]: "))
                .unwrap_or_else(|| panic!("no `fwlb[{pid}]: ` in {m:?}"));
            assert!(head.starts_with(&format!("<{pri}>")), "{m:?}");
            // <PRI>Mmm dd hh:mm:ss
            assert_eq!(head.len(), format!("<{pri}>").len() + 15, "{m:?}");
            assert_eq!(body, text);
        }
        server.set_nonblocking(true).expect("nonblocking");
        assert!(
            server.recv(&mut [0u8; 64]).is_err(),
            "the trace event was sent"
        );
    }

    /// The syslog daemon restarts (its socket is re-created): messages resume after the retry
    /// interval, and the gap is reported.
    #[test]
    fn reconnects_after_syslogd_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let server = dev_log(&path);
        let sys = Syslog::connect_to(&path).expect("connect");
        sys.send(&Level::INFO, "INFO lb: one");
        assert!(recv(&server).ends_with("]: INFO lb: one"));
        drop(server);
        std::fs::remove_file(&path).expect("rm");
        sys.send(&Level::INFO, "INFO lb: lost");
        let server = dev_log(&path);
        std::thread::sleep(RETRY + Duration::from_millis(100));
        sys.send(&Level::INFO, "INFO lb: two");
        let m = recv(&server);
        assert!(
            m.ends_with("]: WARN fwlb: 1 log messages lost (syslog not reading)"),
            "{m:?}"
        );
        assert!(m.starts_with("<28>"), "{m:?}");
        assert!(recv(&server).ends_with("]: INFO lb: two"));
    }
}
