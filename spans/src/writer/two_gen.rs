//! A map that forgets its oldest entries: two generations, the older dropped whole when the
//! newer fills. Bounded memory with a recency window, at one hash lookup or two per access.
//!
//! New entries wait in a small table first and move to the young generation a thousand at a
//! time: each lands in a cold slot of a table sized for the whole window, and moved in a run,
//! the misses of neighbouring inserts overlap instead of stalling the writer one by one.

use crate::util::MixHash;
use std::collections::HashMap;
use std::hash::Hash;

type Map<K, V> = HashMap<K, V, MixHash>;

/// Entries filed before they move to the young generation.
const STAGED: usize = 1 << 10;

pub struct TwoGen<K, V> {
    /// The newest entries, not yet in `young`.
    staged: Map<K, V>,
    young: Map<K, V>,
    old: Map<K, V>,
    cap: usize,
}

impl<K: Hash + Eq, V> TwoGen<K, V> {
    /// Keeps at least the last `cap` inserted keys and at most `2 * cap` and a run of staged
    /// ones (fewer than `cap` and than a thousand).
    pub fn new(cap: usize) -> TwoGen<K, V> {
        TwoGen {
            staged: Map::default(),
            young: Map::default(),
            old: Map::default(),
            cap: cap.max(1),
        }
    }

    pub fn insert(&mut self, k: K, v: V) {
        self.insert_with(k, v, drop);
    }

    /// Inserts; `forgotten` takes each value of the generation dropped to make room.
    pub fn insert_with(&mut self, k: K, v: V, mut forgotten: impl FnMut(V)) {
        // A key filed again shadows its older value: lookups go newest first.
        if self.staged.insert(k, v).is_none() && self.staged.len() >= STAGED.min(self.cap) {
            let mut staged = std::mem::take(&mut self.staged);
            for (k, v) in staged.drain() {
                self.file(k, v, &mut forgotten);
            }
            // The emptied table, kept: no allocation for the next run.
            self.staged = staged;
        }
    }

    fn file(&mut self, k: K, v: V, forgotten: &mut impl FnMut(V)) {
        if self.young.len() >= self.cap {
            // The dropped generation's table, emptied, takes the next one: no allocation and
            // no regrowth, once both have grown.
            for (_, v) in self.old.drain() {
                forgotten(v);
            }
            std::mem::swap(&mut self.old, &mut self.young);
        }
        self.young.insert(k, v);
    }

    /// The most entries held at once: an entry is gone once this many keys not held were
    /// inserted after it, at the latest.
    pub fn most(&self) -> usize {
        2 * self.cap + STAGED.min(self.cap)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.staged
            .values()
            .chain(self.young.values())
            .chain(self.old.values())
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.staged
            .get(k)
            .or_else(|| self.young.get(k))
            .or_else(|| self.old.get(k))
    }

    /// Removes the newest value of `k`. A key filed again without a remove in between keeps
    /// its older value too, which a later lookup then finds: the writer removes before it
    /// files a key again.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.staged
            .remove(k)
            .or_else(|| self.young.remove(k))
            .or_else(|| self.old.remove(k))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.staged.len() + self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_cap_keys_and_no_more_than_twice_that() {
        let mut m = TwoGen::new(4);
        for i in 0..100u32 {
            m.insert(i, i * 2);
            assert!(m.len() < 8 + 4);
            for j in i.saturating_sub(3)..=i {
                assert_eq!(m.get(&j), Some(&(j * 2)));
            }
        }
        assert_eq!(m.get(&0), None);
        // What is dropped to make room is handed out, each value once: every key held before
        // or inserted since is either still there or was handed out.
        let before: Vec<u32> = (0..100u32).filter(|k| m.get(k).is_some()).collect();
        let mut forgotten = Vec::new();
        for i in 100..110u32 {
            m.insert_with(i, i * 2, |v| forgotten.push(v / 2));
        }
        assert!(!forgotten.is_empty() && forgotten.len() % 4 == 0);
        let mut all: Vec<u32> = (0..110u32).filter(|k| m.get(k).is_some()).collect();
        all.extend(&forgotten);
        all.sort_unstable();
        let expected: Vec<u32> = before.into_iter().chain(100..110).collect();
        assert_eq!(all, expected);
        assert_eq!(m.remove(&109), Some(218));
        assert_eq!(m.get(&109), None);
    }

    #[test]
    fn an_entry_is_gone_after_most_newer_inserts() {
        for cap in [1, 3, 4, 100, 5000] {
            for before in [0, 1, 7, 2 * cap + 3] {
                let mut m = TwoGen::new(cap);
                // Entries already there put the generations anywhere in their cycle.
                for k in 0..before {
                    m.insert(1_000_000 + k, 0);
                }
                m.insert(0, 1);
                for k in 1..=m.most() {
                    assert!(m.len() <= m.most());
                    m.insert(k, 0);
                }
                assert_eq!(m.get(&0), None, "cap {cap}, {before} before");
            }
        }
    }
}
