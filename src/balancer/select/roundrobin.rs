//! Round robin: each new connection goes to the next usable server.

use super::{Pick, Select};

#[derive(Default)]
pub struct RoundRobin {
    next: usize,
}

impl Select for RoundRobin {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        let n = p.servers.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if p.usable(i) {
                self.next = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn even_and_skips_blacklisted() {
        let mut s = servers(3);
        assert_eq!(
            spread(&mut RoundRobin::default(), &s, 300),
            vec![100, 100, 100]
        );
        s[1].blacklist(Instant::now(), Duration::from_secs(60));
        assert_eq!(
            spread(&mut RoundRobin::default(), &s, 300),
            vec![150, 0, 150]
        );
    }
}
