//! The process's requests by id, for `propagate_context` on a thread that never started or
//! joined the request itself (it only sliced it, after another thread handed it over).
//!
//! A fixed table of slots, each a small seqlock, written by `req_start` and
//! `set_propagate_context` and cleared by `req_finish`. It is a cache, not a record: a writer that
//! finds its slot busy, or a slot taken by another request, overwrites or skips, and a reader
//! that finds no consistent entry for its rid answers "unknown" (counted). No lock, no
//! allocation, bounded memory.
//!
//! Slot protocol: `seq` even = stable, odd = being written. A writer moves it from even `s` to
//! `s + 1` with a compare-exchange, issues a `Release` fence (so no reader sees a new field
//! without then seeing the odd number), stores the fields (`Relaxed`), then stores `s + 2` with
//! `Release`. A reader loads `seq` (`Acquire`), the
//! fields (`Relaxed`), an `Acquire` fence, and `seq` again: equal and even means the fields are
//! one writer's.

use crate::sync::{fence, AtomicBool, AtomicU64, Ordering};

const SLOTS: usize = 4096;

struct Slot {
    seq: AtomicU64,
    rid: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    span: AtomicU64,
    room: AtomicU64,
    sampled: AtomicBool,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            rid: AtomicU64::new(0),
            trace_hi: AtomicU64::new(0),
            trace_lo: AtomicU64::new(0),
            span: AtomicU64::new(0),
            room: AtomicU64::new(0),
            sampled: AtomicBool::new(false),
        }
    }
}

/// A request's identity in this process: its trace, its request span and (for a request
/// started here) the bootstrap room span above it, 0 when not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub trace_id: u128,
    pub request_span: u64,
    pub room_span: u64,
    /// The sampler's decision for the request.
    pub sampled: bool,
}

pub(crate) struct Directory {
    slots: Box<[Slot]>,
}

impl Directory {
    pub fn new(slots: usize) -> Directory {
        Directory {
            slots: (0..slots.next_power_of_two())
                .map(|_| Slot::new())
                .collect(),
        }
    }

    fn slot(&self, rid: u64) -> &Slot {
        // Rids are well mixed (hashes, or integers mixed here), so the low bits spread.
        &self.slots[(crate::ids::mix64(rid) as usize) & (self.slots.len() - 1)]
    }

    /// Runs `write` with the slot of `rid` held; skips when another writer holds it.
    fn with_slot(&self, rid: u64, write: impl FnOnce(&Slot)) {
        let slot = self.slot(rid);
        let s = slot.seq.load(Ordering::Relaxed);
        if s & 1 == 1
            || slot
                .seq
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // Field stores stay after the odd sequence number for readers, too.
        fence(Ordering::Release);
        write(slot);
        slot.seq.store(s + 2, Ordering::Release);
    }

    pub fn insert(&self, rid: u64, e: Entry) {
        self.with_slot(rid, |slot| {
            slot.rid.store(rid, Ordering::Relaxed);
            slot.trace_hi
                .store((e.trace_id >> 64) as u64, Ordering::Relaxed);
            slot.trace_lo.store(e.trace_id as u64, Ordering::Relaxed);
            slot.span.store(e.request_span, Ordering::Relaxed);
            slot.room.store(e.room_span, Ordering::Relaxed);
            slot.sampled.store(e.sampled, Ordering::Relaxed);
        });
    }

    pub fn remove(&self, rid: u64) {
        self.with_slot(rid, |slot| {
            if slot.rid.load(Ordering::Relaxed) == rid {
                slot.span.store(0, Ordering::Relaxed);
            }
        });
    }

    pub fn get(&self, rid: u64) -> Option<Entry> {
        let slot = self.slot(rid);
        let s1 = slot.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let r = slot.rid.load(Ordering::Relaxed);
        let hi = slot.trace_hi.load(Ordering::Relaxed);
        let lo = slot.trace_lo.load(Ordering::Relaxed);
        let span = slot.span.load(Ordering::Relaxed);
        let room = slot.room.load(Ordering::Relaxed);
        let sampled = slot.sampled.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let s2 = slot.seq.load(Ordering::Relaxed);
        if s1 != s2 || r != rid || span == 0 {
            return None;
        }
        Some(Entry {
            trace_id: ((hi as u128) << 64) | lo as u128,
            request_span: span,
            room_span: room,
            sampled,
        })
    }
}

/// The process's directory. Made on first use like the ring registry, and for the same reason
/// (see `ownership::global`) without a `OnceLock`: a forked child drops the parent's (its
/// entries are the parent's requests, and a slot the parent was writing stays odd forever) and
/// makes its own.
pub(crate) fn directory() -> &'static Directory {
    DIRECTORY.get(|| Directory::new(SLOTS), forget_in_child)
}

static DIRECTORY: crate::fork::PerProcess<Directory> = crate::fork::PerProcess::new();

/// In a forked child, right after the fork: the parent's entries are not the child's.
extern "C" fn forget_in_child() {
    DIRECTORY.forget();
}

#[cfg(all(test, not(slicetrace_loom)))]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_and_collisions() {
        let d = Directory::new(4);
        let e = |n: u64| Entry {
            trace_id: (n as u128) << 64 | 1,
            request_span: n,
            room_span: n ^ 1,
            sampled: n % 2 == 0,
        };
        d.insert(10, e(10));
        assert_eq!(d.get(10), Some(e(10)));
        assert_eq!(d.get(11), None);
        // Fill every slot: the last rid written to a slot reads back, every other reads as
        // unknown, never as another's entry.
        let mut last = std::collections::HashMap::new();
        for r in 100..200 {
            d.insert(r, e(r));
            last.insert(d.slot(r) as *const Slot, r);
        }
        assert_eq!(
            last.len(),
            4,
            "a hundred rids reach every one of four slots"
        );
        for r in 100..200 {
            let kept = last[&(d.slot(r) as *const Slot)] == r;
            assert_eq!(d.get(r), kept.then(|| e(r)), "rid {r}");
        }
        // Removing a rid whose slot another holds leaves that entry.
        let (&held, &holder) = last.iter().next().unwrap();
        let other = (200..).find(|&r| std::ptr::eq(d.slot(r), held)).unwrap();
        d.remove(other);
        assert_eq!(d.get(holder), Some(e(holder)));
        d.insert(7, e(7));
        d.remove(7);
        assert_eq!(d.get(7), None);
    }
}

#[cfg(all(test, slicetrace_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_readers_never_see_a_torn_entry() {
        // Two writers racing for one slot and a reader: bounded preemptions keep the search to
        // minutes while still covering a writer pre-empted mid-entry.
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let d = Arc::new(Directory::new(1));
            let e = |n: u64| Entry {
                trace_id: ((n as u128) << 64) | n as u128,
                request_span: n,
                room_span: n + 7,
                sampled: n == 1,
            };
            let writers: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|r| {
                    let d = d.clone();
                    loom::thread::spawn(move || d.insert(r, e(r)))
                })
                .collect();
            for r in [1u64, 2] {
                if let Some(got) = d.get(r) {
                    assert_eq!(got, e(r));
                }
            }
            for w in writers {
                w.join().unwrap();
            }
        });
    }
}
