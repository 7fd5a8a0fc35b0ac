//! Weighted least-connections, as pen's `-W`: the usable server with weight > 0 and the lowest
//! connections/weight wins. pen broke ties by the lowest index, which sends every sequential
//! client to server 0; here ties go by smooth weighted round robin, so short sequential
//! connections also split in proportion to the weights. A server back from a health-check
//! failure counts with its weight ramped up over `slowstart`.

use super::{Pick, Select};

#[derive(Default)]
pub struct Weight {
    /// Smooth weighted round-robin credit per server (nginx's algorithm), for tie-breaks.
    credit: Vec<i64>,
}

impl Select for Weight {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        let n = p.servers.len();
        self.credit.resize(n, 0);
        // Load as a fraction conns/weight, compared exactly by cross-multiplication.
        let load = |i: usize| {
            (
                u64::from(p.servers[i].conns),
                u64::from(p.servers[i].weight_now(p.now)),
            )
        };
        let mut best: Option<(u64, u64)> = None;
        for i in 0..n {
            let (c, w) = load(i);
            if w == 0 || !p.usable(i) {
                continue;
            }
            if best.is_none_or(|(bc, bw)| c * bw < bc * w) {
                best = Some((c, w));
            }
        }
        let (bc, bw) = best?;
        let tied: Vec<usize> = (0..n)
            .filter(|&i| {
                let (c, w) = load(i);
                w != 0 && p.usable(i) && c * bw == bc * w
            })
            .collect();
        let total: i64 = tied
            .iter()
            .map(|&i| i64::from(p.servers[i].weight_now(p.now)))
            .sum();
        for &i in &tied {
            self.credit[i] += i64::from(p.servers[i].weight_now(p.now));
        }
        let &win = tied
            .iter()
            .max_by_key(|&&i| (self.credit[i], std::cmp::Reverse(i)))?;
        self.credit[win] -= total;
        Some(win)
    }

    fn servers_changed(&mut self, _servers: &[super::ServerState]) {
        self.credit.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn sequential_clients_split_by_weight() {
        let mut s = servers(3);
        s[0].cfg.weight = 1;
        s[1].cfg.weight = 2;
        s[2].cfg.weight = 0; // never chosen by weight (pen)
        assert_eq!(spread(&mut Weight::default(), &s, 300), vec![100, 200, 0]);
    }

    #[test]
    fn a_server_in_slowstart_gets_a_growing_share() {
        let mut s = servers(2);
        s[0].cfg.weight = 10;
        s[1].cfg.weight = 10;
        let now = std::time::Instant::now();
        s[1].health.ramp = Some((now, std::time::Duration::from_secs(10)));
        // spread() picks at the testutil's clock; a ramp that just began gives weight 1.
        let got = spread(&mut Weight::default(), &s, 110);
        assert!(got[1] <= 15 && got[1] >= 5, "{got:?}");
    }

    #[test]
    fn least_connections_per_weight() {
        let mut s = servers(2);
        s[0].cfg.weight = 1;
        s[1].cfg.weight = 3;
        s[0].conns = 2; // 2/1 = 2
        s[1].conns = 3; // 3/3 = 1
        let picks = connected_picks(&mut Weight::default(), &mut s, 4);
        // 1: 3/3 -> 4/3, 5/3, then 6/3 = 2/1 tie ...
        assert_eq!(picks[..3], [1, 1, 1]);
        assert_eq!(s[0].conns + s[1].conns, 9);
    }
}
