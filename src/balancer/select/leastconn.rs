//! Least connections: the usable server with the fewest open connections; ties take turns.

use super::{Pick, Select, min_rotating};

#[derive(Default)]
pub struct LeastConn {
    cursor: usize,
}

impl Select for LeastConn {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        min_rotating(p, &mut self.cursor, |s| Some(s.conns))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn fewest_connections() {
        let mut s = servers(3);
        s[0].conns = 5;
        s[1].conns = 2;
        s[2].conns = 7;
        let picks = connected_picks(&mut LeastConn::default(), &mut s, 6);
        // 2 -> 3 -> 4 -> 5 on server 1, then 0 and 1 alternate at 5, 6...
        assert_eq!(picks, vec![1, 1, 1, 0, 1, 0]);
    }

    #[test]
    fn ties_spread_evenly() {
        let s = servers(4);
        assert_eq!(spread(&mut LeastConn::default(), &s, 400), vec![100; 4]);
    }
}
