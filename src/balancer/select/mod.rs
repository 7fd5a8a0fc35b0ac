//! Server selection: one file per algorithm behind the [`Select`] trait. No I/O, no clock: the
//! caller passes `now`, so every algorithm is tested with simulated time.
//!
//! A pick is only the first choice. The caller walks on from it (pen's failover order) past
//! servers that are unusable or fail to connect, then to the emergency server.

mod consistent;
mod hash;
mod leastconn;
mod prio;
mod roundrobin;
mod sticky;
mod weight;

use std::net::IpAddr;
use std::time::{Duration, Instant};

pub use consistent::Consistent;
pub use hash::Hash;
pub use leastconn::LeastConn;
pub use prio::Prio;
pub use roundrobin::RoundRobin;
pub use sticky::{ClientTable, Sticky};
pub use weight::Weight;

use super::pool::ServerState;
use crate::config::Algorithm;

/// What a selection looks at.
pub struct Pick<'a> {
    pub client: IpAddr,
    pub port: u16,
    pub now: Instant,
    pub servers: &'a [ServerState],
}

impl Pick<'_> {
    /// Usable for a new (non-sticky) client.
    pub fn usable(&self, i: usize) -> bool {
        self.servers[i].usable(self.now, false)
    }
}

pub trait Select: Send {
    /// The first server to try, or None when no server is usable.
    fn pick(&mut self, p: &Pick) -> Option<usize>;
    /// A connection of `client` to server `i` succeeded.
    fn connected(&mut self, _client: IpAddr, _i: usize, _now: Instant) {}
    /// The server this client is remembered on (for pen's hard limit).
    fn remembered(&self, _client: IpAddr, _now: Instant) -> Option<usize> {
        None
    }
    /// The server list changed (added, removed or reordered): rebuild derived state.
    fn servers_changed(&mut self, _servers: &[ServerState]) {}
}

/// Build the selector for an algorithm.
pub fn new(
    alg: Algorithm,
    servers: &[ServerState],
    max_clients: usize,
    tracking: Duration,
) -> Box<dyn Select> {
    match alg {
        Algorithm::Sticky => Box::new(Sticky::new(
            max_clients,
            tracking,
            Box::new(RoundRobin::default()),
        )),
        Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::Hash => Box::new(Hash),
        Algorithm::Weight => Box::new(Weight::default()),
        Algorithm::Prio => Box::new(Prio::default()),
        Algorithm::LeastConn => Box::new(LeastConn::default()),
        Algorithm::Consistent => Box::new(Consistent::new(servers)),
    }
}

/// FNV-1a followed by a 64-bit finalizer: fast, stable across runs and platforms.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

pub(crate) fn ip_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => hash(&a.octets()),
        IpAddr::V6(a) => hash(&a.octets()),
    }
}

/// Among usable servers whose key is minimal, the first at or after `cursor` (so ties rotate).
pub(crate) fn min_rotating<K: Ord>(
    p: &Pick,
    cursor: &mut usize,
    key: impl Fn(&ServerState) -> Option<K>,
) -> Option<usize> {
    let n = p.servers.len();
    let mut best: Option<(K, usize)> = None;
    for k in 0..n {
        let i = (*cursor + k) % n;
        if !p.usable(i) {
            continue;
        }
        let Some(v) = key(&p.servers[i]) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| v < *b) {
            best = Some((v, i));
        }
    }
    let (_, i) = best?;
    *cursor = (i + 1) % n;
    Some(i)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::config::Server;

    pub fn servers(n: usize) -> Vec<ServerState> {
        (0..n)
            .map(|i| {
                ServerState::new(Server {
                    addr: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                    max: 0,
                    hard: 0,
                    weight: 1,
                    prio: 0,
                })
            })
            .collect()
    }

    pub fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 + i))
    }

    /// Pick for `n` distinct clients and count per server.
    pub fn spread(sel: &mut dyn Select, servers: &[ServerState], clients: u32) -> Vec<usize> {
        let now = Instant::now();
        let mut counts = vec![0; servers.len()];
        for c in 0..clients {
            let p = Pick {
                client: ip(c + 1),
                port: 1000,
                now,
                servers,
            };
            if let Some(i) = sel.pick(&p) {
                counts[i] += 1;
                sel.connected(ip(c + 1), i, now);
            }
        }
        counts
    }
}
