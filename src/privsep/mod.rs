//! Privilege separation (architecture.md, "Process model"): the typed messages between the
//! root parent and the chrooted, unprivileged child, and the child's side of the channel.
//!
//! One SEQPACKET socketpair carries everything: the child's requests, each with an id, the
//! parent's replies with the id they answer (in any order: the parent serves VIP changes
//! before bans and reloads), and the parent's own pushes (reload, stop). A listener's
//! descriptor rides on a `Bind` reply. Messages are JSON (small, and easy to read in a trace),
//! cut into datagrams by [`frame`] with one size limit for both sides. The parent checks every
//! request against the loaded configuration and refuses anything else.
//!
//! - `frame`: the datagram framing, pure.
//! - `client`: the child's side, asynchronous: a call is a future, nothing waits on the thread.
//! - `parent`: the privileged parent's loop; `worker`: its firewall thread (bans, reloads,
//!   the back side's openings for servers given by name, checked by `openings`).

pub mod client;
pub mod frame;
pub mod openings;
pub mod parent;
mod worker;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use client::{Answer, Client, Event};

/// What the child may ask of the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Add (`up`) or remove the addresses of one configured VRRP instance.
    Vips {
        vrid: u8,
        interface: String,
        up: bool,
    },
    /// Run the instance's configured notify script for the state it entered.
    Notify {
        vrid: u8,
        interface: String,
        state: Transition,
    },
    /// Put each address in the firewall's ban set, for `secs` or for good (one batch).
    Ban {
        ips: Vec<IpAddr>,
        secs: Option<u64>,
    },
    Unban {
        ips: Vec<IpAddr>,
    },
    /// The ban sets' contents.
    ListBans,
    /// A listening socket for one of a balancer's configured `listen` addresses (reload).
    Bind {
        balancer: String,
        addr: SocketAddr,
    },
    /// The addresses `balancer`'s servers given by name (SRV targets and a named emergency
    /// server included) resolved to, by server label (`name:port`): the parent opens the
    /// firewall's `back` to them, replacing what it was told for this balancer before.
    ServerAddrs {
        balancer: String,
        servers: Vec<(String, Vec<IpAddr>)>,
    },
    /// A request this version does not know (kept so a garbled one gets a clear refusal).
    #[serde(other)]
    Unknown,
}

/// The state a VRRP instance entered, for its notify script (`FWLB_STATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    Master,
    Backup,
    Fault,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Master => "master",
            Transition::Backup => "backup",
            Transition::Fault => "fault",
        }
    }
}

/// The parent's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    /// Refused or failed, with the reason (also logged by the parent).
    Error(String),
    /// `ListBans`: (address, milliseconds left or None for permanent).
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
