//! Sticky by client IP, pen's default: a client the client table remembers goes back to its
//! server; new clients are placed by an inner algorithm (round robin for `sticky`, the hash,
//! weight or prio choice in pen's combined modes).

use super::{Pick, Select, ServerState};

pub struct Sticky {
    inner: Box<dyn Select>,
}

impl Sticky {
    pub fn new(inner: Box<dyn Select>) -> Self {
        Sticky { inner }
    }
}

impl Select for Sticky {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        // pen returns the remembered server even when it is now unusable; the failover walk
        // then moves the client on, and the table follows where it lands.
        match p.remembered {
            Some(i) if i < p.servers.len() => Some(i),
            _ => self.inner.pick(p),
        }
    }

    fn servers_changed(&mut self, servers: &[ServerState]) {
        self.inner.servers_changed(servers);
    }
}

#[cfg(test)]
mod tests {
    use super::super::roundrobin::RoundRobin;
    use super::super::testutil::*;
    use super::*;
    use std::time::Instant;

    #[test]
    fn remembered_clients_stay_new_ones_round_robin() {
        let s = servers(3);
        let mut st = Sticky::new(Box::new(RoundRobin::default()));
        let now = Instant::now();
        let p = |r| Pick {
            client: ip(1),
            port: 1,
            now,
            servers: &s,
            remembered: r,
            srv_tier: None,
        };
        assert_eq!(st.pick(&p(Some(2))), Some(2));
        assert_eq!(st.pick(&p(Some(2))), Some(2));
        assert_eq!(st.pick(&p(None)), Some(0));
        assert_eq!(st.pick(&p(None)), Some(1));
        // A remembered index beyond the list (server removed) counts as new.
        assert_eq!(st.pick(&p(Some(7))), Some(2));
    }
}
