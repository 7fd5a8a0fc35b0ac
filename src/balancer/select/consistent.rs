//! Consistent hashing of the client IP on a ring of virtual nodes keyed by server address, so
//! adding or removing one server moves only about 1/n of the clients. An unusable server's
//! clients walk on along the ring; everyone else stays put.

use std::net::SocketAddr;

use super::{Pick, Select, ServerState, hash, ip_hash};

/// Virtual nodes per unit of weight: enough to keep the spread within a few percent.
const POINTS: u32 = 160;

pub struct Consistent {
    /// (point, server index), sorted by point.
    ring: Vec<(u64, usize)>,
}

fn point(addr: SocketAddr, k: u32) -> u64 {
    hash(format!("{addr}#{k}").as_bytes())
}

impl Consistent {
    pub fn new(servers: &[ServerState]) -> Self {
        let mut c = Consistent { ring: Vec::new() };
        c.servers_changed(servers);
        c
    }
}

impl Select for Consistent {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let h = ip_hash(p.client);
        let start = self.ring.partition_point(|(pt, _)| *pt < h);
        let n = self.ring.len();
        (0..n)
            .map(|k| self.ring[(start + k) % n].1)
            .find(|&i| i < p.servers.len() && p.usable(i))
    }

    fn servers_changed(&mut self, servers: &[ServerState]) {
        self.ring.clear();
        for (i, s) in servers.iter().enumerate() {
            let pts = POINTS * s.cfg.weight.clamp(1, 100);
            self.ring
                .extend((0..pts).map(|k| (point(s.cfg.addr, k), i)));
        }
        self.ring.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::time::{Duration, Instant};

    fn assign(c: &mut Consistent, s: &[ServerState], clients: u32) -> Vec<SocketAddr> {
        let now = Instant::now();
        (0..clients)
            .map(|k| {
                let i = c
                    .pick(&Pick {
                        client: ip(k * 7919 + 1),
                        port: 1,
                        now,
                        servers: s,
                        remembered: None,
                        srv_tier: None,
                    })
                    .unwrap();
                s[i].cfg.addr
            })
            .collect()
    }

    #[test]
    fn balanced_and_minimal_movement_on_removal() {
        let s = servers(5);
        let mut c = Consistent::new(&s);
        let before = assign(&mut c, &s, 10_000);
        for srv in &s {
            let n = before.iter().filter(|a| **a == srv.cfg.addr).count();
            assert!(
                (1400..=2600).contains(&n),
                "{n} clients on {}",
                srv.cfg.addr
            );
        }
        let removed = s[2].cfg.addr;
        let s4: Vec<ServerState> = s
            .iter()
            .filter(|x| x.cfg.addr != removed)
            .cloned()
            .collect();
        c.servers_changed(&s4);
        let after = assign(&mut c, &s4, 10_000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let on_removed = before.iter().filter(|a| **a == removed).count();
        assert_eq!(moved, on_removed, "only the removed server's clients move");
    }

    #[test]
    fn blacklisted_server_clients_walk_on_others_stay() {
        let mut s = servers(4);
        let mut c = Consistent::new(&s);
        let before = assign(&mut c, &s, 2000);
        s[1].blacklist(Instant::now(), Duration::from_secs(30));
        let after = assign(&mut c, &s, 2000);
        for (b, a) in before.iter().zip(&after) {
            if *b != s[1].cfg.addr {
                assert_eq!(a, b);
            } else {
                assert_ne!(*a, s[1].cfg.addr);
            }
        }
    }
}
