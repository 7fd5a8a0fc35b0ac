//! The flow table: one small record per TCP conversation, found by 5-tuple, least recently
//! used first out when full. Slots are reused, so a full table allocates nothing more.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use super::xff::Pending;

const NIL: u32 = u32::MAX;
/// No side known yet for [`Flow::client`].
pub(crate) const UNKNOWN: u8 = 2;

/// A conversation key: both endpoints, the smaller (address, port) first, so that both
/// directions find the same flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Key {
    pub a: u128,
    pub b: u128,
    pub a_port: u16,
    pub b_port: u16,
}

impl Key {
    /// The key of a packet from `src` to `dst`, and which side (0 = `a`, 1 = `b`) sent it.
    pub(crate) fn of(src: u128, sport: u16, dst: u128, dport: u16) -> (Key, usize) {
        if (src, sport) <= (dst, dport) {
            (
                Key {
                    a: src,
                    b: dst,
                    a_port: sport,
                    b_port: dport,
                },
                0,
            )
        } else {
            (
                Key {
                    a: dst,
                    b: src,
                    a_port: dport,
                    b_port: sport,
                },
                1,
            )
        }
    }

    /// (address, port) of one side.
    pub(crate) fn side(&self, s: usize) -> (u128, u16) {
        if s == 0 {
            (self.a, self.a_port)
        } else {
            (self.b, self.b_port)
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64((self.a >> 64) as u64 ^ (self.b >> 64) as u64);
        h.write_u64(self.a as u64);
        h.write_u64(self.b as u64);
        h.write_u64(u64::from(self.a_port) << 16 | u64::from(self.b_port));
    }
}

/// A multiply-fold hash: a few cycles per word, good enough spread for SwissTable's high and
/// low bits. (The default SipHash would be a visible part of the per-packet cost.)
#[derive(Default)]
pub(crate) struct FoldHasher(u64);

impl FoldHasher {
    fn mix(&mut self, v: u64) {
        let m = u128::from(self.0 ^ v) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (m as u64) ^ (m >> 64) as u64;
    }
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One direction of a flow.
#[derive(Default)]
pub(crate) struct Dir {
    /// The next sequence number expected, once `seq_known`.
    pub next_seq: u32,
    pub seq_known: bool,
    pub fin: bool,
    /// The last gap in the sequence space, [start, end), while it is not filled: a segment
    /// landing in it was reordered, not retransmitted.
    pub hole: Option<(u32, u32)>,
    /// Bytes scanned while it was not known which side is the client (bounded: a flow that
    /// shows no request soon is not worth scanning).
    pub unknown_scanned: u32,
    pub pending: Pending,
}

/// One conversation.
pub(crate) struct Flow {
    pub key: Key,
    pub first_ns: u64,
    pub last_ns: u64,
    pub dirs: [Dir; 2],
    /// The side that sends the requests: 0, 1 or [`UNKNOWN`].
    pub client: u8,
    pub matched: bool,
    /// Closed (both FINs or a RST) and waiting out a short grace period for trailing packets.
    pub closing: bool,
    /// Bumped on each reuse of the slot, so stale references to it can be told apart.
    pub generation: u32,
    pub requests: u32,
    /// Request lines kept: each as a 2-byte little-endian length (top bit = cut short) then
    /// the bytes.
    pub lines: Vec<u8>,
    pub lines_kept: u32,
    /// Request lines dropped before the match (only the last few are kept until then).
    pub earlier: u32,
    /// Request lines dropped after the match (over the per-flow cap or the memory budget).
    pub more: u32,
    prev: u32,
    next: u32,
}

impl Flow {
    fn new(key: Key, ts: u64) -> Flow {
        Flow {
            key,
            first_ns: ts,
            last_ns: ts,
            dirs: Default::default(),
            client: UNKNOWN,
            matched: false,
            closing: false,
            generation: 0,
            requests: 0,
            lines: Vec::new(),
            lines_kept: 0,
            earlier: 0,
            more: 0,
            prev: NIL,
            next: NIL,
        }
    }

    /// Make a reused slot a fresh flow, keeping the line buffer's allocation.
    fn reset(&mut self, key: Key, ts: u64) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.clear();
        let generation = self.generation.wrapping_add(1);
        *self = Flow::new(key, ts);
        self.lines = lines;
        self.generation = generation;
    }

    /// The stored request lines: (bytes, cut short).
    pub(crate) fn lines(&self) -> impl Iterator<Item = (&[u8], bool)> {
        let mut rest = &self.lines[..];
        std::iter::from_fn(move || {
            let (h, tail) = rest.split_first_chunk::<2>()?;
            let n = u16::from_le_bytes(*h);
            let len = usize::from(n & 0x7fff).min(tail.len());
            let (line, tail) = tail.split_at(len);
            rest = tail;
            Some((line, n & 0x8000 != 0))
        })
    }

    /// Drop the oldest stored line.
    pub(crate) fn drop_oldest(&mut self) {
        let Some(h) = self.lines.first_chunk::<2>() else {
            return;
        };
        let len = 2 + usize::from(u16::from_le_bytes(*h) & 0x7fff);
        self.lines.drain(..len.min(self.lines.len()));
        self.lines_kept = self.lines_kept.saturating_sub(1);
    }

    /// Store one line, at most `max` bytes of it (`max` < 32 KiB); `cut` if it is known to
    /// be incomplete already.
    pub(crate) fn push_line(&mut self, line: &[u8], max: usize, cut: bool) {
        let keep = &line[..line.len().min(max)];
        let cut = if cut || keep.len() < line.len() {
            0x8000
        } else {
            0
        };
        self.lines
            .extend_from_slice(&(keep.len() as u16 | cut).to_le_bytes());
        self.lines.extend_from_slice(keep);
        self.lines_kept += 1;
    }
}

/// Flows by key, with a least-recently-used list through the slots.
pub(crate) struct Table {
    map: HashMap<Key, u32, BuildHasherDefault<FoldHasher>>,
    pub flows: Vec<Flow>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to go when full.
    tail: u32,
    cap: usize,
}

impl Table {
    pub(crate) fn new(cap: usize) -> Table {
        Table {
            map: HashMap::default(),
            flows: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            cap: cap.clamp(1, NIL as usize - 1),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.map.len() >= self.cap
    }

    /// The least recently used flow.
    pub(crate) fn oldest(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// Look a flow up and mark it used.
    pub(crate) fn get(&mut self, key: &Key) -> Option<u32> {
        let i = *self.map.get(key)?;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(i)
    }

    /// Add a flow; the caller makes room first (`is_full`, `oldest`, `remove`).
    pub(crate) fn insert(&mut self, key: Key, ts: u64) -> u32 {
        let i = match self.free.pop() {
            Some(i) => {
                self.flows[i as usize].reset(key, ts);
                i
            }
            None => {
                self.flows.push(Flow::new(key, ts));
                (self.flows.len() - 1) as u32
            }
        };
        self.map.insert(key, i);
        self.push_front(i);
        i
    }

    pub(crate) fn remove(&mut self, i: u32) {
        let key = self.flows[i as usize].key;
        if self.map.remove(&key).is_some() {
            self.unlink(i);
            let f = &mut self.flows[i as usize];
            f.dirs = Default::default();
            f.generation = f.generation.wrapping_add(1);
            self.free.push(i);
        }
    }

    /// Slots of all live flows.
    pub(crate) fn live(&self) -> impl Iterator<Item = u32> + '_ {
        self.map.values().copied()
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = {
            let f = &self.flows[i as usize];
            (f.prev, f.next)
        };
        if p == NIL {
            self.head = n;
        } else {
            self.flows[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.flows[n as usize].prev = p;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let f = &mut self.flows[i as usize];
            f.prev = NIL;
            f.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.flows[old as usize].prev = i;
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> Key {
        Key::of(1, n, 2, 80).0
    }

    #[test]
    fn lru_order_and_reuse() {
        let mut t = Table::new(3);
        let a = t.insert(key(1), 0);
        let b = t.insert(key(2), 0);
        let c = t.insert(key(3), 0);
        assert!(t.is_full());
        assert_eq!(t.oldest(), Some(a));
        assert_eq!(t.get(&key(1)), Some(a));
        assert_eq!(t.oldest(), Some(b));
        t.remove(b);
        assert_eq!(t.oldest(), Some(c));
        let d = t.insert(key(4), 0);
        assert_eq!(d, b, "slot reused");
        assert_eq!(t.get(&key(2)), None);
        assert_eq!(t.len(), 3);
        t.remove(a);
        t.remove(c);
        t.remove(d);
        assert_eq!(t.oldest(), None);
    }

    #[test]
    fn lines_round_trip() {
        let mut f = Flow::new(key(1), 0);
        f.push_line(b"GET /a HTTP/1.1", 100, false);
        f.push_line(b"GET /bbbbbbbb HTTP/1.1", 6, false);
        let v: Vec<_> = f.lines().collect();
        assert_eq!(
            v,
            vec![(&b"GET /a HTTP/1.1"[..], false), (&b"GET /b"[..], true)]
        );
        f.drop_oldest();
        assert_eq!(f.lines().count(), 1);
        assert_eq!(f.lines_kept, 1);
    }
}
