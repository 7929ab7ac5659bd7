//! The writer's reorder queue: events wait until the watermark passes them and leave smallest
//! first. Keys are grouped in buckets of 2^20 ns (about 1 ms) of their timestamp; a bucket is
//! sorted once, when its turn comes: a bucket is a few dozen keys that sort in cache, where a
//! heap over every waiting event (tens of thousands in a 2 s window) misses the cache at each
//! level of each push and pop. Buckets are found by hash, and only their numbers are kept in
//! order, so a push searches no ordered map.

use super::prefetch::prefetch_value;
use crate::util::MixHash;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// A key with the timestamp that places it in a bucket; the key's order must begin with it.
pub(crate) trait Timed: Ord + Copy {
    fn ts(&self) -> u64;
}

const SHIFT: u32 = 20;

pub(crate) struct ReorderQueue<K> {
    /// Buckets not yet started, by `ts >> SHIFT`.
    later: HashMap<u64, Vec<K>, MixHash>,
    /// The numbers of the buckets in `later`, smallest first.
    order: BinaryHeap<Reverse<u64>>,
    /// The bucket being taken from, sorted largest first so the smallest pops off the end.
    ready: Vec<K>,
    /// `ts >> SHIFT` of `ready`, while it holds keys.
    ready_bucket: Option<u64>,
    len: usize,
    /// Emptied bucket vectors, reused so buckets do not allocate afresh.
    spare: Vec<Vec<K>>,
}

impl<K: Timed> ReorderQueue<K> {
    pub fn new() -> ReorderQueue<K> {
        ReorderQueue {
            later: HashMap::default(),
            order: BinaryHeap::new(),
            ready: Vec::new(),
            ready_bucket: None,
            len: 0,
            spare: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, key: K) {
        self.len += 1;
        let bucket = key.ts() >> SHIFT;
        match self.ready_bucket {
            // Belongs with (or, arriving late, before) what is being taken: in order there.
            Some(r) if bucket <= r => {
                let at = self.ready.partition_point(|k| *k > key);
                self.ready.insert(at, key);
            }
            _ => {
                let (spare, order) = (&mut self.spare, &mut self.order);
                self.later
                    .entry(bucket)
                    .or_insert_with(|| {
                        order.push(Reverse(bucket));
                        spare.pop().unwrap_or_default()
                    })
                    .push(key);
            }
        }
    }

    /// The smallest key.
    pub fn peek(&mut self) -> Option<&K> {
        if self.ready.is_empty() {
            self.ready_bucket = None;
            let Reverse(bucket) = self.order.pop()?;
            let mut keys = self.later.remove(&bucket)?;
            keys.sort_unstable_by(|a, b| b.cmp(a));
            let emptied = std::mem::replace(&mut self.ready, keys);
            if emptied.capacity() > 0 {
                self.spare.push(emptied);
            }
            self.ready_bucket = Some(bucket);
            // The next bucket's keys were filed long ago and are cold: asked for now, they
            // arrive while this bucket is taken, before `ahead` reads them.
            if let Some(next) = self.next_bucket() {
                prefetch_value(next.as_slice());
            }
        }
        self.ready.last()
    }

    /// After [`peek`](Self::peek), a key about `n` places after the smallest: exactly that one
    /// within the bucket being taken, else one of the next bucket's, not yet sorted.
    pub fn ahead(&self, n: usize) -> Option<&K> {
        match self.ready.len().checked_sub(n + 1) {
            Some(i) => Some(&self.ready[i]),
            None => self.next_bucket()?.get(n - self.ready.len()),
        }
    }

    fn next_bucket(&self) -> Option<&Vec<K>> {
        let Reverse(b) = self.order.peek()?;
        self.later.get(b)
    }

    pub fn pop(&mut self) -> Option<K> {
        self.peek()?;
        self.len -= 1;
        self.ready.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
    struct Key(u64, u64);

    impl Timed for Key {
        fn ts(&self) -> u64 {
            self.0
        }
    }

    /// `ahead` names the keys that pop next in the bucket being taken, then keys of the
    /// bucket after it, then nothing.
    #[test]
    fn ahead_names_the_keys_about_to_pop() {
        let mut q = ReorderQueue::new();
        let bucket = 1u64 << SHIFT;
        for (i, ts) in [5, 1, 3, bucket + 2, bucket + 1, 3 * bucket]
            .into_iter()
            .enumerate()
        {
            q.push(Key(ts, i as u64));
        }
        assert_eq!(q.peek(), Some(&Key(1, 1)));
        assert_eq!(q.ahead(0), Some(&Key(1, 1)));
        assert_eq!(q.ahead(1), Some(&Key(3, 2)));
        assert_eq!(q.ahead(2), Some(&Key(5, 0)));
        let next: Vec<u64> = (3..5).map(|n| q.ahead(n).unwrap().0).collect();
        assert!(next.iter().all(|ts| ts >> SHIFT == 1));
        assert_eq!(q.ahead(5), None);
        q.pop();
        assert_eq!(q.ahead(1), Some(&Key(5, 0)));
    }

    /// Pushes and pops interleaved as the writer does, checked against a sorted model.
    #[test]
    fn pops_in_key_order_whatever_the_arrival_order() {
        let mut q = ReorderQueue::new();
        // The structure the queue replaced, as the model.
        let mut model = BinaryHeap::new();
        let mut next = crate::util::xorshift(0x9e37_79b9_7f4a_7c15);
        for step in 0..20_000u64 {
            // Timestamps around a moving present, some late, some far ahead, some equal.
            let base = step * 50_000;
            let ts = match next() % 10 {
                0 => base.saturating_sub(next() % 5_000_000),
                1 => base + next() % 50_000_000,
                2 => base,
                _ => base + next() % 2_000_000,
            };
            let k = Key(ts, step);
            q.push(k);
            model.push(Reverse(k));
            if next() % 3 == 0 {
                for _ in 0..next() % 4 {
                    assert_eq!(q.pop(), model.pop().map(|r| r.0));
                    assert_eq!(q.len(), model.len());
                }
            }
        }
        while let Some(Reverse(k)) = model.pop() {
            assert_eq!(q.peek(), Some(&k));
            assert_eq!(q.pop(), Some(k));
        }
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 0);
    }
}
