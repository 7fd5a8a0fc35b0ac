//! Sticky by client IP, pen's default: a bounded client table remembers each client's server;
//! clients not in it are placed by an inner algorithm (round robin for `sticky`). The table
//! recycles the least recently seen entry when full, and forgets entries older than `tracking`
//! (0 = only when the table is full), as pen's client table does.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Pick, Select, ServerState};

#[derive(Debug, Clone)]
pub struct ClientEntry {
    pub server: usize,
    pub last: Instant,
    pub connects: u64,
    seq: u64,
}

/// Client IP -> remembered server, bounded, LRU-recycled, with time expiry.
pub struct ClientTable {
    cap: usize,
    tracking: Duration,
    map: HashMap<IpAddr, ClientEntry>,
    /// Recency order: sequence number of the last touch -> client.
    lru: BTreeMap<u64, IpAddr>,
    seq: u64,
}

impl ClientTable {
    pub fn new(cap: usize, tracking: Duration) -> Self {
        ClientTable {
            cap: cap.max(1),
            tracking,
            map: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expired(&self, e: &ClientEntry, now: Instant) -> bool {
        !self.tracking.is_zero() && now.saturating_duration_since(e.last) >= self.tracking
    }

    pub fn get(&self, ip: IpAddr, now: Instant) -> Option<&ClientEntry> {
        self.map.get(&ip).filter(|e| !self.expired(e, now))
    }

    /// Remember `ip` on `server`, evicting the least recently seen client when full.
    pub fn record(&mut self, ip: IpAddr, server: usize, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        if let Some(e) = self.map.get_mut(&ip) {
            self.lru.remove(&e.seq);
            e.server = server;
            e.last = now;
            e.connects += 1;
            e.seq = seq;
            self.lru.insert(seq, ip);
            return;
        }
        while self.map.len() >= self.cap {
            let Some((_, old)) = self.lru.pop_first() else {
                break;
            };
            self.map.remove(&old);
        }
        self.map.insert(
            ip,
            ClientEntry {
                server,
                last: now,
                connects: 1,
                seq,
            },
        );
        self.lru.insert(seq, ip);
    }

    /// Drop every entry older than `tracking` (called from time to time to bound memory).
    pub fn expire(&mut self, now: Instant) {
        if self.tracking.is_zero() {
            return;
        }
        while let Some((&seq, &ip)) = self.lru.first_key_value() {
            match self.map.get(&ip) {
                Some(e) if !self.expired(e, now) => break,
                _ => {
                    self.lru.remove(&seq);
                    self.map.remove(&ip);
                }
            }
        }
    }

    /// Forget every client on servers that no longer exist (after a server list change).
    pub fn retain_servers(&mut self, n: usize) {
        let gone: Vec<(IpAddr, u64)> = self
            .map
            .iter()
            .filter(|(_, e)| e.server >= n)
            .map(|(ip, e)| (*ip, e.seq))
            .collect();
        for (ip, seq) in gone {
            self.map.remove(&ip);
            self.lru.remove(&seq);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &ClientEntry)> {
        self.map.iter()
    }
}

pub struct Sticky {
    pub table: ClientTable,
    inner: Box<dyn Select>,
    picks: u64,
}

impl Sticky {
    pub fn new(cap: usize, tracking: Duration, inner: Box<dyn Select>) -> Self {
        Sticky {
            table: ClientTable::new(cap, tracking),
            inner,
            picks: 0,
        }
    }
}

impl Select for Sticky {
    fn pick(&mut self, p: &Pick) -> Option<usize> {
        self.picks += 1;
        if self.picks.is_multiple_of(1024) {
            self.table.expire(p.now);
        }
        // pen returns the remembered server even when it is now unusable; the failover walk
        // then moves the client on, and the table follows where it lands.
        match self.table.get(p.client, p.now) {
            Some(e) if e.server < p.servers.len() => Some(e.server),
            _ => self.inner.pick(p),
        }
    }

    fn connected(&mut self, client: IpAddr, i: usize, now: Instant) {
        self.table.record(client, i, now);
        self.inner.connected(client, i, now);
    }

    fn remembered(&self, client: IpAddr, now: Instant) -> Option<usize> {
        self.table.get(client, now).map(|e| e.server)
    }

    fn servers_changed(&mut self, servers: &[ServerState]) {
        self.table.retain_servers(servers.len());
        self.inner.servers_changed(servers);
    }
}

#[cfg(test)]
mod tests {
    use super::super::roundrobin::RoundRobin;
    use super::super::testutil::*;
    use super::*;

    fn sticky(cap: usize, tracking: Duration) -> Sticky {
        Sticky::new(cap, tracking, Box::new(RoundRobin::default()))
    }

    #[test]
    fn new_clients_round_robin_known_clients_stay() {
        let s = servers(3);
        let mut st = sticky(100, Duration::ZERO);
        assert_eq!(spread(&mut st, &s, 30), vec![10, 10, 10]);
        let now = Instant::now();
        for c in 1..=30 {
            let first = st.pick(&Pick {
                client: ip(c),
                port: 1,
                now,
                servers: &s,
            });
            for port in 2..5 {
                assert_eq!(
                    st.pick(&Pick {
                        client: ip(c),
                        port,
                        now,
                        servers: &s
                    }),
                    first
                );
            }
        }
    }

    #[test]
    fn tracking_expiry() {
        let s = servers(2);
        let mut st = sticky(100, Duration::from_secs(10));
        let t0 = Instant::now();
        let p = |t| Pick {
            client: ip(7),
            port: 1,
            now: t,
            servers: &s,
        };
        let first = st.pick(&p(t0)).unwrap();
        st.connected(ip(7), first, t0);
        assert_eq!(st.pick(&p(t0 + Duration::from_secs(9))), Some(first));
        // Expired: the client is new again, so round robin moves it on.
        assert_ne!(st.pick(&p(t0 + Duration::from_secs(10))), Some(first));
    }

    #[test]
    fn lru_recycling_when_full() {
        let mut t = ClientTable::new(2, Duration::ZERO);
        let now = Instant::now();
        t.record(ip(1), 0, now);
        t.record(ip(2), 1, now);
        t.record(ip(1), 0, now); // 1 is now the most recent
        t.record(ip(3), 1, now); // evicts 2
        assert!(t.get(ip(2), now).is_none());
        assert!(t.get(ip(1), now).is_some() && t.get(ip(3), now).is_some());
        assert_eq!(t.len(), 2);
    }
}
