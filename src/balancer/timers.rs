//! The data path's deadlines: an indexed binary heap, earliest first, with at most one entry
//! per key (a connection's slot). Setting, moving and clearing are O(log n) and leave nothing
//! behind, so a connection that connects in microseconds does not leave a 3 s connect-timeout
//! entry for the heap to carry (at 20,000 new connections/s a lazily cleaned heap would hold
//! 60,000 dead ones). No clock is read here: time is a parameter.

use std::time::Instant;

const NONE: u32 = u32::MAX;

#[derive(Default)]
pub struct Timers {
    heap: Vec<(Instant, u32)>,
    /// Heap position of each key, NONE when it has no deadline.
    pos: Vec<u32>,
}

impl Timers {
    // len, is_empty and get: for the tests, which check the heap against a model.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.first().map(|e| e.0)
    }

    /// The deadline of `key`, if it has one.
    #[cfg(test)]
    pub fn get(&self, key: u32) -> Option<Instant> {
        let p = *self.pos.get(key as usize)?;
        (p != NONE).then(|| self.heap[p as usize].0)
    }

    /// Give `key` the deadline `at`, replacing the one it had.
    pub fn set(&mut self, key: u32, at: Instant) {
        let k = key as usize;
        if self.pos.len() <= k {
            self.pos.resize(k + 1, NONE);
        }
        let p = self.pos[k];
        if p == NONE {
            self.heap.push((at, key));
            let i = self.heap.len() - 1;
            self.pos[k] = i as u32;
            self.up(i);
        } else {
            let i = p as usize;
            let old = self.heap[i].0;
            self.heap[i].0 = at;
            if at < old {
                self.up(i);
            } else {
                self.down(i);
            }
        }
    }

    /// Remove `key`'s deadline, if any.
    pub fn clear(&mut self, key: u32) {
        let Some(&p) = self.pos.get(key as usize) else {
            return;
        };
        if p != NONE {
            self.remove_at(p as usize);
        }
    }

    /// The key of a deadline at or before `now`, removed from the heap.
    pub fn pop_due(&mut self, now: Instant) -> Option<u32> {
        let &(at, key) = self.heap.first()?;
        if at > now {
            return None;
        }
        self.remove_at(0);
        Some(key)
    }

    fn remove_at(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        self.swap(i, last);
        if let Some((_, key)) = self.heap.pop() {
            self.pos[key as usize] = NONE;
        }
        if i < self.heap.len() {
            self.down(i);
            self.up(i);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a].1 as usize] = a as u32;
        self.pos[self.heap[b].1 as usize] = b as u32;
    }

    fn up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].0 <= self.heap[i].0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < n && self.heap[l].0 < self.heap[least].0 {
                least = l;
            }
            if r < n && self.heap[r].0 < self.heap[least].0 {
                least = r;
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn due_keys_come_out_earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Timers::default();
        t.set(3, at(30));
        t.set(1, at(10));
        t.set(2, at(20));
        assert_eq!(t.next(), Some(at(10)));
        assert_eq!(t.pop_due(at(5)), None);
        assert_eq!(t.pop_due(at(25)), Some(1));
        assert_eq!(t.pop_due(at(25)), Some(2));
        assert_eq!(t.pop_due(at(25)), None);
        // Moving and clearing leave one entry per key at most.
        t.set(3, at(1));
        t.set(3, at(40));
        assert_eq!(t.len(), 1);
        t.clear(3);
        t.clear(3);
        t.clear(99);
        assert!(t.is_empty());
        assert_eq!(t.get(3), None);
    }

    proptest! {
        /// Against a model (key -> deadline): any sequence of set, clear and pop leaves the
        /// same deadlines, and pops come out in deadline order.
        #[test]
        fn matches_a_map_of_deadlines(ops in prop::collection::vec((0u8..3, 0u32..40, 0u64..1000), 1..400)) {
            let t0 = Instant::now();
            let mut t = Timers::default();
            let mut model: BTreeMap<u32, Instant> = BTreeMap::new();
            for (op, key, ms) in ops {
                let now = t0 + Duration::from_millis(ms);
                match op {
                    0 => { t.set(key, now); model.insert(key, now); }
                    1 => { t.clear(key); model.remove(&key); }
                    _ => {
                        let earliest = model.values().min().copied();
                        match t.pop_due(now) {
                            Some(k) => {
                                let at = model.remove(&k).expect("popped a key without a deadline");
                                prop_assert!(at <= now);
                                prop_assert_eq!(Some(at), earliest);
                            }
                            None => prop_assert!(earliest.is_none_or(|e| e > now)),
                        }
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert_eq!(t.next(), model.values().min().copied());
                for (k, at) in &model {
                    prop_assert_eq!(t.get(*k), Some(*at));
                }
            }
        }
    }
}
