//! Priority: the usable server with the lowest `prio` value wins; servers sharing the lowest
//! value take turns.

use super::{Pick, Select, min_rotating};

#[derive(Default)]
pub struct Prio {
    cursor: usize,
}

impl Select for Prio {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        min_rotating(p, &mut self.cursor, |s| Some(s.cfg.prio))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn lowest_value_wins_then_next() {
        let mut s = servers(3);
        s[0].cfg.prio = 5;
        s[1].cfg.prio = 1;
        s[2].cfg.prio = 1;
        assert_eq!(spread(&mut Prio::default(), &s, 100), vec![0, 50, 50]);
        s[1].blacklist(Instant::now(), Duration::from_secs(9));
        s[2].draining = true;
        assert_eq!(spread(&mut Prio::default(), &s, 10), vec![10, 0, 0]);
    }
}
