//! `fwlb ctl`: the control client. It speaks the same line protocol as penctl, and reports an
//! error reply or an unreachable daemon through its exit status with a one-line reason.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Send `line` to the control port at `addr` (`HOST:PORT` or a unix socket path) and return
/// the whole reply.
pub fn request(addr: &str, line: &str) -> Result<String, String> {
    request_within(addr, line, TIMEOUT)
}

/// As `request`, giving up after `timeout` (to connect, and for each read): the lab and
/// `fwlb drill` poll every few milliseconds and must not hang on a dead host.
pub fn request_within(addr: &str, line: &str, timeout: Duration) -> Result<String, String> {
    let msg = format!("{line}\n");
    let reply = if addr.contains('/') {
        let s = UnixStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        exchange(s, addr, &msg)?
    } else {
        let target: SocketAddr = addr
            .to_socket_addrs()
            .map_err(|e| format!("bad control address {addr:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("control address {addr:?} has no address"))?;
        let s = TcpStream::connect_timeout(&target, timeout).map_err(|e| {
            format!("cannot connect to {addr}: {e} (is fwlb running with this control port?)")
        })?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        exchange(s, addr, &msg)?
    };
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// One line out, the reply until the daemon closes.
fn exchange<S: Read + Write>(mut s: S, addr: &str, msg: &str) -> Result<Vec<u8>, String> {
    let mut reply = Vec::new();
    s.write_all(msg.as_bytes())
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    s.read_to_end(&mut reply)
        .map_err(|e| format!("no reply from {addr}: {e}"))?;
    Ok(reply)
}

/// Whether a reply is an error (fwlb's `error:` lines, pen's unknown-command line, a JSON
/// error object, pen's refusal of `exit`).
pub fn is_error(reply: &str) -> bool {
    reply.starts_with("error: ")
        || reply.starts_with("do_cmd: ignoring")
        || reply.starts_with("{\"error\"")
        || reply.starts_with("Exit is not enabled")
}

/// Pretty-print a JSON reply; other replies pass through.
pub fn pretty(reply: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(reply.trim()) {
        Ok(v) => serde_json::to_string_pretty(&v).map_or(reply.to_string(), |s| s + "\n"),
        Err(_) => reply.to_string(),
    }
}
