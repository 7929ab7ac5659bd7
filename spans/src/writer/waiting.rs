//! Slices waiting for their parent to be placed, listed by parent in one slab.
//!
//! Nearly every slice waits: spans are exported as they end, so a slice comes before the
//! thread span that places it. Each waiting slice takes a slot of a slab that is reused,
//! linked to the next slice of its parent: no vector per parent to allocate, grow and free.

use crate::util::MixHash;
use std::collections::{HashMap, VecDeque};

/// No slot: the end of a list.
const END: u32 = u32::MAX;

struct Slot<T> {
    item: Option<T>,
    next: u32,
}

/// The first and last slot of a parent's list, and when the list was started.
#[derive(Clone, Copy)]
struct List {
    first: u32,
    last: u32,
    serial: u64,
}

pub(super) struct Waiting<T> {
    lists: HashMap<u64, List, MixHash>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    /// Lists in the order they were started, as (parent, serial), for eviction; one taken
    /// since is skipped when it comes up.
    order: VecDeque<(u64, u64)>,
    serial: u64,
    len: usize,
}

/// The slices taken for one parent, in the order they came: hand it to [`Waiting::next`].
#[must_use]
pub(super) struct Taken(u32);

impl<T> Waiting<T> {
    pub fn new() -> Waiting<T> {
        Waiting {
            lists: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            order: VecDeque::new(),
            serial: 0,
            len: 0,
        }
    }

    /// Slices waiting, over all parents.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn waits_for(&self, parent: u64) -> bool {
        self.lists.contains_key(&parent)
    }

    /// Adds `item` at the end of `parent`'s list.
    pub fn hold(&mut self, parent: u64, item: T) {
        let slot = Slot {
            item: Some(item),
            next: END,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = slot;
                at
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.len += 1;
        match self.lists.get_mut(&parent) {
            Some(list) => {
                self.slots[list.last as usize].next = at;
                list.last = at;
            }
            None => {
                self.serial += 1;
                let serial = self.serial;
                self.lists.insert(
                    parent,
                    List {
                        first: at,
                        last: at,
                        serial,
                    },
                );
                self.order.push_back((parent, serial));
                if self.order.len() > 2 * self.lists.len() + 64 {
                    // The lists taken since they were started: their entries would pile up
                    // over a long input.
                    let lists = &self.lists;
                    self.order.retain(|&(p, serial)| is_live(lists, p, serial));
                }
            }
        }
    }

    /// Takes `parent`'s list, if it has one. Its slots are freed as [`next`](Self::next)
    /// hands out their slices: every caller takes the list to its end.
    pub fn take(&mut self, parent: u64) -> Option<Taken> {
        self.lists.remove(&parent).map(|l| Taken(l.first))
    }

    /// The next slice of a taken list, its slot freed.
    pub fn next(&mut self, taken: &mut Taken) -> Option<T> {
        let slot = self.slots.get_mut(taken.0 as usize)?;
        let item = slot.item.take();
        self.free.push(taken.0);
        taken.0 = slot.next;
        self.len -= 1;
        item
    }

    /// The parent whose list was started first of those waiting.
    pub fn oldest(&mut self) -> Option<u64> {
        while let Some((parent, serial)) = self.order.pop_front() {
            if is_live(&self.lists, parent, serial) {
                return Some(parent);
            }
        }
        None
    }
}

fn is_live(lists: &HashMap<u64, List, MixHash>, parent: u64, serial: u64) -> bool {
    lists.get(&parent).is_some_and(|l| l.serial == serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filed, taken and evicted at random, it answers as a map of vectors does.
    #[test]
    fn lists_come_back_whole_and_in_order() {
        let mut w = Waiting::new();
        let mut model: HashMap<u64, Vec<u64>> = HashMap::new();
        // Parents by when their list was started, a parent again for each new list.
        let mut firsts: Vec<u64> = Vec::new();
        let mut next = crate::util::xorshift(0x2545_f491_4f6c_dd1d);
        for step in 0..50_000u64 {
            let parent = next() % 300;
            match next() % 10 {
                0..=5 => {
                    w.hold(parent, step);
                    let list = model.entry(parent).or_default();
                    if list.is_empty() {
                        firsts.retain(|p| *p != parent);
                        firsts.push(parent);
                    }
                    list.push(step);
                }
                6..=8 => {
                    let want = model.remove(&parent);
                    let got = w
                        .take(parent)
                        .map(|mut t| std::iter::from_fn(|| w.next(&mut t)).collect::<Vec<_>>());
                    assert_eq!(got, want);
                }
                _ => {
                    firsts.retain(|p| model.contains_key(p));
                    let want = firsts.first().copied();
                    let got = w.oldest();
                    assert_eq!(got, want);
                    if let Some(p) = got {
                        let mut t = w.take(p).unwrap();
                        while w.next(&mut t).is_some() {}
                        model.remove(&p);
                    }
                }
            }
            assert_eq!(w.len(), model.values().map(Vec::len).sum::<usize>());
            assert_eq!(w.waits_for(parent), model.contains_key(&parent));
        }
        // Slots are reused, and the eviction order keeps no more than twice the lists.
        assert_eq!(w.slots.len(), w.len() + w.free.len());
        assert!(w.slots.len() < 2_000, "{}", w.slots.len());
        assert!(w.order.len() <= 2 * w.lists.len() + 64);
    }
}
