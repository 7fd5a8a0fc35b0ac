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
use std::time::Instant;

pub use consistent::Consistent;
pub use hash::Hash;
pub use leastconn::LeastConn;
pub use prio::Prio;
pub use roundrobin::RoundRobin;
pub use sticky::Sticky;
pub use weight::Weight;

use super::pool::ServerState;
use crate::config::Algorithm;

/// What a selection looks at.
pub struct Pick<'a> {
    pub client: IpAddr,
    pub port: u16,
    pub now: Instant,
    pub servers: &'a [ServerState],
    /// The server the client table remembers for this client (sticky modes use it).
    pub remembered: Option<usize>,
    /// The lowest SRV priority with a usable server: servers made from SRV records of a
    /// higher priority are backups, not picked (None: no SRV server is usable).
    pub srv_tier: Option<u16>,
}

impl Pick<'_> {
    /// Usable for a new (non-sticky) client.
    pub fn usable(&self, i: usize) -> bool {
        let s = &self.servers[i];
        s.usable(self.now, false) && in_tier(s, self.srv_tier)
    }
}

/// Whether `s` is outside the SRV backups while `tier` is the lowest usable SRV priority
/// (servers from `servers` always are).
pub fn in_tier(s: &ServerState, tier: Option<u16>) -> bool {
    match (&s.srv, tier) {
        (Some(o), Some(t)) => o.priority <= t,
        _ => true,
    }
}

/// The lowest SRV priority among the servers usable for a new client at `now`.
pub fn srv_tier(servers: &[ServerState], now: Instant) -> Option<u16> {
    servers
        .iter()
        .filter(|s| s.usable(now, false))
        .filter_map(|s| s.srv.as_ref().map(|o| o.priority))
        .min()
}

pub trait Select: Send {
    /// The first server to try, or None when no server is usable.
    fn pick(&mut self, p: &Pick) -> Option<usize>;
    /// The server list changed (added, removed or reordered): rebuild derived state.
    fn servers_changed(&mut self, _servers: &[ServerState]) {}
}

/// Build the selector: `base` places new clients; with `sticky` the clients the table
/// remembers go back to their server first (pen without `-r`).
pub fn new(sticky: bool, base: Algorithm, servers: &[ServerState]) -> Box<dyn Select> {
    let inner: Box<dyn Select> = match base {
        Algorithm::Sticky | Algorithm::RoundRobin => Box::new(RoundRobin::default()),
        Algorithm::Hash => Box::new(Hash),
        Algorithm::Weight => Box::new(Weight::default()),
        Algorithm::Prio => Box::new(Prio::default()),
        Algorithm::LeastConn => Box::new(LeastConn::default()),
        Algorithm::Consistent => Box::new(Consistent::new(servers)),
    };
    if sticky || base == Algorithm::Sticky {
        Box::new(Sticky::new(inner))
    } else {
        inner
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
                    name: None,
                    max: 0,
                    hard: 0,
                    weight: 1,
                    prio: 0,
                    health: None,
                })
            })
            .collect()
    }

    pub fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000u32.wrapping_add(i)))
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
                remembered: None,
                srv_tier: None,
            };
            if let Some(i) = sel.pick(&p) {
                counts[i] += 1;
            }
        }
        counts
    }

    /// Pick for `clients` distinct clients that stay connected (each pick adds a connection
    /// to its server): the servers picked, in order.
    pub fn connected_picks(
        sel: &mut dyn Select,
        s: &mut [ServerState],
        clients: u32,
    ) -> Vec<usize> {
        let now = Instant::now();
        let mut picks = Vec::new();
        for c in 0..clients {
            let p = Pick {
                client: ip(c),
                port: 1,
                now,
                servers: s,
                remembered: None,
                srv_tier: None,
            };
            let Some(i) = sel.pick(&p) else { break };
            s[i].conns += 1;
            picks.push(i);
        }
        picks
    }
}

#[cfg(test)]
mod props {
    use super::testutil::*;
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn arb_state() -> impl Strategy<Value = Vec<(bool, bool, u32, u32, u32, i32)>> {
        // (blacklisted, draining, conns, max, weight, prio) per server
        prop::collection::vec(
            (
                any::<bool>(),
                any::<bool>(),
                0u32..20,
                0u32..10,
                0u32..5,
                -3i32..3,
            ),
            1..8,
        )
    }

    proptest! {
        /// Every algorithm that checks availability returns a usable server, and returns None
        /// only when no server is usable (for `weight`: none usable with weight > 0).
        #[test]
        fn picks_are_usable_and_none_only_when_nothing_is(
            st in arb_state(), client in any::<u32>(), alg in 0usize..7
        ) {
            let now = Instant::now();
            let mut servers = servers(st.len());
            for (s, &(bl, dr, conns, max, weight, prio)) in servers.iter_mut().zip(&st) {
                if bl { s.blacklist(now, Duration::from_secs(5)); }
                s.draining = dr;
                s.conns = conns;
                s.cfg.max = max;
                s.cfg.weight = weight;
                s.cfg.prio = prio;
            }
            let (_, a) = Algorithm::ALL[alg];
            let mut sel = new(false, a, &servers);
            let p = Pick { client: ip(client), port: 1, now, servers: &servers, remembered: None, srv_tier: None };
            let got = sel.pick(&p);
            let usable: Vec<usize> = (0..servers.len())
                .filter(|&i| p.usable(i) && (a != Algorithm::Weight || servers[i].cfg.weight > 0))
                .collect();
            match a {
                // Hash ignores availability by design (the failover walk handles it).
                Algorithm::Hash => prop_assert!(got.is_some_and(|i| i < servers.len())),
                _ => match got {
                    Some(i) => prop_assert!(usable.contains(&i), "{a:?} picked unusable {i}"),
                    None => prop_assert!(usable.is_empty(), "{a:?} gave up with {usable:?} usable"),
                },
            }
        }
    }
}
