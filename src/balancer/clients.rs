//! The client table, pen's: client IP -> the server it used last, connects and bytes. Bounded:
//! when full the least recently seen client is recycled; entries older than `tracking` are
//! forgotten (0 = only by recycling). Stickiness reads it; `recent` and `show` report it.
//! No I/O; time is a parameter.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ClientEntry {
    /// The server it used last; None after the emergency server (treated as new next time).
    pub server: Option<usize>,
    pub last: Instant,
    pub connects: u64,
    /// Bytes sent to / received from this client.
    pub sx: u64,
    pub rx: u64,
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

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Grow the table (pen's clients_max never shrinks it).
    pub fn grow(&mut self, cap: usize) {
        self.cap = self.cap.max(cap);
    }

    pub fn tracking(&self) -> Duration {
        self.tracking
    }

    pub fn set_tracking(&mut self, t: Duration) {
        self.tracking = t;
    }

    /// Count bytes for a client still in the table.
    pub fn add_bytes(&mut self, ip: IpAddr, sx: u64, rx: u64) {
        if let Some(e) = self.map.get_mut(&ip) {
            e.sx += sx;
            e.rx += rx;
        }
    }

    /// Remember `ip` on `server`, evicting the least recently seen client when full.
    pub fn record(&mut self, ip: IpAddr, server: Option<usize>, now: Instant) {
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
                sx: 0,
                rx: 0,
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
            .filter(|(_, e)| e.server.is_some_and(|s| s >= n))
            .map(|(ip, e)| (*ip, e.seq))
            .collect();
        for (ip, seq) in gone {
            self.map.remove(&ip);
            self.lru.remove(&seq);
        }
    }

    /// Renumber remembered servers after the server list was rebuilt (reload); clients whose
    /// server is gone are forgotten, to be placed afresh.
    pub fn remap(&mut self, new_index: impl Fn(usize) -> Option<usize>) {
        let mut gone = Vec::new();
        for (ip, e) in self.map.iter_mut() {
            if let Some(old) = e.server {
                match new_index(old) {
                    Some(n) => e.server = Some(n),
                    None => gone.push((*ip, e.seq)),
                }
            }
        }
        for (ip, seq) in gone {
            self.map.remove(&ip);
            self.lru.remove(&seq);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &ClientEntry)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000u32 + i))
    }

    #[test]
    fn lru_recycling_when_full() {
        let mut t = ClientTable::new(2, Duration::ZERO);
        let now = Instant::now();
        t.record(ip(1), Some(0), now);
        t.record(ip(2), Some(1), now);
        t.record(ip(1), Some(0), now); // 1 is now the most recent
        t.record(ip(3), Some(1), now); // evicts 2
        assert!(t.get(ip(2), now).is_none());
        assert!(t.get(ip(1), now).is_some() && t.get(ip(3), now).is_some());
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(ip(1), now).map(|e| e.connects), Some(2));
    }

    #[test]
    fn tracking_expiry_and_sweep() {
        let mut t = ClientTable::new(10, Duration::from_secs(10));
        let t0 = Instant::now();
        t.record(ip(1), Some(0), t0);
        t.record(ip(2), Some(0), t0 + Duration::from_secs(5));
        assert!(t.get(ip(1), t0 + Duration::from_secs(9)).is_some());
        assert!(t.get(ip(1), t0 + Duration::from_secs(10)).is_none());
        t.expire(t0 + Duration::from_secs(12));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn grows_never_shrinks() {
        let mut t = ClientTable::new(100, Duration::ZERO);
        t.grow(10);
        assert_eq!(t.capacity(), 100);
        t.grow(500);
        assert_eq!(t.capacity(), 500);
    }
}
