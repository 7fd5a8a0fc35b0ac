//! Hash of the client IP: the same client always starts on the same server. The choice ignores
//! availability; the failover walk handles a dead hashed server, so other clients never move.
//!
//! pen's formula (`s_addr % n` read little-endian) depends only on the first octet when n is a
//! power of two, so every client of one /8 lands on one server; a real hash replaces it.

use std::net::IpAddr;

use super::{Pick, Select};

pub struct Hash;

pub fn index(ip: IpAddr, n: usize) -> usize {
    (super::ip_hash(ip) % n as u64) as usize
}

impl Select for Hash {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        (!p.servers.is_empty()).then(|| index(p.client, p.servers.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn one_slash8_spreads_over_a_power_of_two() {
        let s = servers(4);
        let c = spread(&mut Hash, &s, 4000);
        assert!(c.iter().all(|&n| (800..=1200).contains(&n)), "{c:?}");
    }

    #[test]
    fn same_client_same_server() {
        for k in 0..100 {
            let a = index(ip(k), 5);
            assert_eq!(index(ip(k), 5), a);
        }
    }
}
