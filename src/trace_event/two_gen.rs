//! A map that forgets its oldest entries: two generations, the older dropped whole when the
//! newer fills. Bounded memory with a recency window, at one hash lookup or two per access.

use crate::mix_hash::MixHash;
use std::collections::HashMap;
use std::hash::Hash;

type Map<K, V> = HashMap<K, V, MixHash>;

pub struct TwoGen<K, V> {
    young: Map<K, V>,
    old: Map<K, V>,
    cap: usize,
}

impl<K: Hash + Eq, V> TwoGen<K, V> {
    /// Keeps at least the last `cap` inserted keys and at most `2 * cap`.
    pub fn new(cap: usize) -> TwoGen<K, V> {
        TwoGen {
            young: Map::default(),
            old: Map::default(),
            cap: cap.max(1),
        }
    }

    /// Inserts; returns the generation forgotten to make room (empty most of the time).
    pub fn insert(&mut self, k: K, v: V) -> Map<K, V> {
        let mut dropped = Map::default();
        if self.young.len() >= self.cap {
            dropped = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
        }
        self.young.insert(k, v);
        dropped
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.young.values().chain(self.old.values())
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.young.remove(k).or_else(|| self.old.remove(k))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
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
            assert!(m.len() <= 8);
            for j in i.saturating_sub(3)..=i {
                assert_eq!(m.get(&j), Some(&(j * 2)));
            }
        }
        assert_eq!(m.get(&0), None);
        assert_eq!(m.remove(&99), Some(198));
        assert_eq!(m.get(&99), None);
    }
}
