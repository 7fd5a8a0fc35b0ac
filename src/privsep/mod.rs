//! Privilege separation (architecture.md, "Process model"): the typed messages between the
//! root parent and the chrooted, unprivileged child, and the child's side of the channel.
//!
//! Two socketpairs: `requests` carries the child's requests and the parent's replies (one
//! message each, a listener's descriptor attached to a `Bind` reply); `pushes` carries the
//! parent's own messages to the child (reload, stop). Messages are JSON: small, rare, and easy
//! to read in a trace. The parent checks every request against the loaded configuration and
//! refuses anything else.

pub mod parent;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::sys::privsep::{Channel, MAX_MESSAGE};

/// What the child may ask of the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Add (`up`) or remove the addresses of one configured VRRP instance.
    Vips {
        vrid: u8,
        interface: String,
        up: bool,
    },
    /// Run the instance's configured notify script for `state` (master, backup, fault).
    Notify {
        vrid: u8,
        interface: String,
        state: String,
    },
    /// Put `ip` in the firewall's ban set, for `secs` or for good.
    Ban {
        ip: IpAddr,
        secs: Option<u64>,
    },
    Unban {
        ip: IpAddr,
    },
    /// The ban sets' contents.
    ListBans,
    /// A listening socket for one of a balancer's configured `listen` addresses (reload).
    Bind {
        balancer: String,
        addr: SocketAddr,
    },
    /// A request this version does not know (kept so a garbled one gets a clear refusal).
    #[serde(other)]
    Unknown,
}

/// The parent's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    /// Refused or failed, with the reason (also logged by the parent).
    Error(String),
    /// `ListBans`: (address, seconds left or None for permanent).
    Bans(Vec<(IpAddr, Option<u64>)>),
}

/// What the parent tells the child without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Push {
    /// A new configuration, already validated by the parent: apply the difference.
    Reload { path: String, text: String },
    /// Stop accepting and drain (the parent got SIGTERM/SIGINT).
    Stop,
    /// Close what is still open and exit (a second signal).
    StopNow,
    #[serde(other)]
    Unknown,
}

/// Encode one message.
pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    // Serializing these plain enums cannot fail; an empty message would be refused anyway.
    serde_json::to_vec(m).unwrap_or_default()
}

/// Decode one message (the peer is another process: bad bytes are an error, not a panic).
pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| format!("malformed message: {e}"))
}

/// The child's end of the request channel. Requests are rare (VRRP transitions, bans,
/// reloads) and the parent answers in microseconds to milliseconds, so a blocking call under a
/// lock is simpler than a second runtime-aware protocol.
#[derive(Debug)]
pub struct Client {
    chan: Mutex<Channel>,
}

impl Client {
    pub fn new(chan: Channel) -> Self {
        Client {
            chan: Mutex::new(chan),
        }
    }

    /// Send `req` and wait for its reply (and descriptors).
    pub fn call(&self, req: &Request) -> Result<(Reply, Vec<OwnedFd>), String> {
        let chan = self.chan.lock().unwrap_or_else(|e| e.into_inner());
        chan.send(&encode(req), &[])
            .map_err(|e| format!("privileged parent unreachable: {e}"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let (n, fds) = chan
            .recv(&mut buf)
            .map_err(|e| format!("privileged parent: {e}"))?;
        if n == 0 {
            return Err("the privileged parent is gone".into());
        }
        Ok((decode(&buf[..n])?, fds))
    }

    /// A request whose only answer is done or not.
    pub fn call_ok(&self, req: &Request) -> Result<(), String> {
        match self.call(req)?.0 {
            Reply::Ok => Ok(()),
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
}

/// Read one push (blocking); None when the parent is gone.
pub fn read_push(chan: &Channel) -> std::io::Result<Option<Push>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, _) = chan.recv(&mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(decode(&buf[..n]).unwrap_or(Push::Unknown)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let r = Request::Vips {
            vrid: 7,
            interface: "eth0".into(),
            up: true,
        };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        let p = Push::Reload {
            path: "/etc/fwlb/fwlb.toml".into(),
            text: "[daemon]\n".into(),
        };
        assert_eq!(decode::<Push>(&encode(&p)).unwrap(), p);
        assert!(decode::<Request>(b"\xff\x00garbage").is_err());
        assert_eq!(
            decode::<Request>(br#""SetUid""#).unwrap(),
            Request::Unknown,
            "an unknown request is recognised as such, then refused"
        );
    }
}
