//! A bounded single-producer/single-consumer ring of [`Record`]s.
//!
//! [`ring`] makes the one [`Producer`] and the one [`Consumer`] a ring ever has. Neither can be
//! cloned, and every operation that moves an index takes its half by `&mut`, so one writer and
//! one reader hold by construction; a half changes thread by being moved. [`Gauge`] reads the
//! counters, for anyone. Positions are 64-bit counters that never wrap in practice; a slot is
//! `pos & mask`.
//!
//! - `tail` is written only by the producer: the next position it will fill. It is stored with
//!   `Release` after the slots are written, and the consumer loads it with `Acquire`, so the
//!   consumer sees every slot below the tail it loaded.
//! - `head` is written only by the consumer: the next position it will read. It is stored with
//!   `Release` after the slots are copied out, and the producer loads it with `Acquire` before it
//!   reuses a slot, so it never overwrites a slot the consumer is still reading.
//! - The producer keeps a cached head and reloads the shared one only when the cache says the ring
//!   looks full, so the common push touches no line the consumer writes.
//! - A push of several records (a head and its chunks) is all or nothing: the tail moves once,
//!   after the last slot is written. A push that does not fit is dropped and counted in `dropped`.
//!
//! Slots the consumer has passed keep their contents until the producer reuses them. The producer
//! may read them back (see `local::history`): both sides only read such a slot, and only the
//! producer ever writes one.

use super::record::Record;
use crate::sync::{zeroed_cells, AtomicU64, Ordering, SlotCell};
use crossbeam_utils::CachePadded;
use std::sync::Arc;

/// What the two halves share.
struct Shared {
    tail: CachePadded<AtomicU64>,
    head: CachePadded<AtomicU64>,
    /// Records the producer could not push. Written only by the producer.
    dropped: CachePadded<AtomicU64>,
    slots: Box<[SlotCell<Record>]>,
    mask: u64,
}

// SAFETY: a slot is written only through the ring's one `Producer` (by `&mut`) and read through it
// or its one `Consumer`; the head/tail protocol above orders every write to a slot after the
// consumer's last read of its previous contents and before any read of the new ones.
unsafe impl Sync for Shared {}
// SAFETY: the ring owns its slots; moving it between threads moves plain data.
unsafe impl Send for Shared {}

/// A ring of `capacity` records, rounded up to a power of two (at least 2): its only producer
/// and its only consumer.
pub fn ring(capacity: usize) -> (Producer, Consumer) {
    let cap = capacity.max(2).next_power_of_two();
    let shared = Arc::new(Shared {
        tail: CachePadded::new(AtomicU64::new(0)),
        head: CachePadded::new(AtomicU64::new(0)),
        dropped: CachePadded::new(AtomicU64::new(0)),
        slots: zeroed_cells::<Record>(cap),
        mask: cap as u64 - 1,
    });
    let producer = Producer {
        ring: shared.clone(),
        tail: 0,
        head_cache: 0,
        start: 0,
    };
    (producer, Consumer { ring: shared })
}

/// The counters of a ring, for any thread: they publish nothing.
#[derive(Clone)]
pub struct Gauge(Arc<Shared>);

impl Gauge {
    pub fn capacity(&self) -> u64 {
        self.0.mask + 1
    }

    /// Records dropped because the ring was full, since it was made.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Records pushed, since it was made.
    pub fn written(&self) -> u64 {
        self.0.tail.load(Ordering::Acquire)
    }

    fn is_of(&self, ring: &Arc<Shared>) -> bool {
        Arc::ptr_eq(&self.0, ring)
    }
}

/// The reading half, held by the drainer.
pub struct Consumer {
    ring: Arc<Shared>,
}

impl Consumer {
    #[cfg(test)]
    pub fn gauge(&self) -> Gauge {
        Gauge(self.ring.clone())
    }

    /// Records published and not yet drained.
    pub fn pending(&self) -> u64 {
        self.ring.tail.load(Ordering::Acquire) - self.ring.head.load(Ordering::Relaxed)
    }

    /// Appends up to `max` published records past the head to `out`, then releases their slots.
    /// Returns the position of the first copied record.
    pub fn drain_into(&mut self, out: &mut Vec<Record>, max: usize) -> u64 {
        let ring = &*self.ring;
        let head = ring.head.load(Ordering::Relaxed);
        let tail = ring
            .tail
            .load(Ordering::Acquire)
            .min(head.saturating_add(max as u64));
        out.reserve((tail - head) as usize);
        ring.copy_out(head, tail, out);
        ring.head.store(tail, Ordering::Release);
        head
    }

    /// Releases every published record unread; returns how many. For records written before
    /// the current session.
    pub fn skip_published(&mut self) -> u64 {
        let ring = &*self.ring;
        let head = ring.head.load(Ordering::Relaxed);
        let tail = ring.tail.load(Ordering::Acquire);
        ring.head.store(tail, Ordering::Release);
        tail - head
    }
}

impl Shared {
    /// Appends the records at `from..to` to `out`, which has room for them.
    #[cfg(not(slicetrace_loom))]
    fn copy_out(&self, from: u64, to: u64, out: &mut Vec<Record>) {
        let cap = self.mask + 1;
        let mut pos = from;
        while pos < to {
            // A run up to `to` or the ring's end, whichever comes first.
            let start = (pos & self.mask) as usize;
            let n = (to - pos).min(cap - start as u64) as usize;
            let run = &self.slots[start..start + n];
            let len = out.len();
            // SAFETY: every slot of `run` lies in head..tail: the producer published it (Acquire
            // on tail) and will not write it again until head passes it, after this copy. A
            // `SlotCell<Record>` has the layout of a `Record`, so the run is `n` records; `out`
            // has room for them (reserved by the caller) and does not overlap the ring.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    run.as_ptr() as *const Record,
                    out.as_mut_ptr().add(len),
                    n,
                );
                out.set_len(len + n);
            }
            pos += n as u64;
        }
    }

    /// Loom tracks each cell's accesses: one record at a time.
    #[cfg(slicetrace_loom)]
    fn copy_out(&self, from: u64, to: u64, out: &mut Vec<Record>) {
        for pos in from..to {
            let slot = &self.slots[(pos & self.mask) as usize];
            // SAFETY: as above, one slot at a time.
            out.push(slot.with(|p| unsafe { *p }));
        }
    }
}

/// The writing half, kept by the owning thread, and passed on with the ring to the next.
pub struct Producer {
    ring: Arc<Shared>,
    tail: u64,
    head_cache: u64,
    /// Where the current owner's records begin: history before it belongs to another owner.
    start: u64,
}

impl Producer {
    /// Position the next record will take.
    #[inline]
    pub fn tail(&self) -> u64 {
        self.tail
    }

    pub fn gauge(&self) -> Gauge {
        Gauge(self.ring.clone())
    }

    /// True when this is the producer of the ring `g` reads.
    pub fn feeds(&self, g: &Gauge) -> bool {
        g.is_of(&self.ring)
    }

    /// Starts a new owner's history at the current tail.
    pub(super) fn begin_tenure(&mut self) {
        self.start = self.tail;
    }

    /// True when `n` more records fit now.
    #[inline]
    pub fn has_room(&mut self, n: u64) -> bool {
        let cap = self.ring.mask + 1;
        if self.tail + n - self.head_cache <= cap {
            return true;
        }
        self.head_cache = self.ring.head.load(Ordering::Acquire);
        self.tail + n - self.head_cache <= cap
    }

    /// Pushes one record. On a full ring it is dropped and counted.
    #[inline]
    pub fn push(&mut self, rec: Record) -> bool {
        if !self.has_room(1) {
            self.count_dropped(1);
            return false;
        }
        self.write(self.tail, rec);
        self.tail += 1;
        self.ring.tail.store(self.tail, Ordering::Release);
        true
    }

    /// Pushes `recs` as one unit: all of them or, on a full ring, none (counted as dropped).
    #[inline]
    pub fn push_all(&mut self, recs: &[Record]) -> bool {
        self.push_unit(recs.len(), |i| recs[i])
    }

    /// Pushes the `n` records `make(0..n)` as one unit, written straight into the slots: all of
    /// them or, on a full ring, none (counted as dropped).
    #[inline]
    pub fn push_unit(&mut self, n: usize, mut make: impl FnMut(usize) -> Record) -> bool {
        if !self.has_room(n as u64) {
            self.count_dropped(n as u64);
            return false;
        }
        for i in 0..n {
            self.write(self.tail + i as u64, make(i));
        }
        self.tail += n as u64;
        self.ring.tail.store(self.tail, Ordering::Release);
        true
    }

    #[cold]
    fn count_dropped(&self, n: u64) {
        // Single writer: a load and a store, no read-modify-write needed.
        let d = &self.ring.dropped;
        d.store(d.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    #[inline]
    fn write(&mut self, pos: u64, rec: Record) {
        let slot = &self.ring.slots[(pos & self.ring.mask) as usize];
        // SAFETY: has_room saw head > pos - capacity, so the consumer is done with this slot,
        // and this producer, borrowed mutably, is its only writer.
        slot.with_mut(|p| unsafe { p.write(rec) });
    }

    /// Where the current owner's records begin.
    pub fn owner_start(&self) -> u64 {
        self.start
    }

    /// The oldest position whose record the current owner wrote and has not overwritten since.
    pub fn history_start(&self) -> u64 {
        self.start.max(self.tail.saturating_sub(self.ring.mask + 1))
    }

    /// Reads back a record the current owner wrote, at `history_start() <= pos < tail()`.
    pub fn read_back(&self, pos: u64) -> Record {
        debug_assert!(pos >= self.history_start() && pos < self.tail);
        let slot = &self.ring.slots[(pos & self.ring.mask) as usize];
        // SAFETY: only this producer writes slots, and it is not writing now (that takes it by
        // `&mut`); the consumer may be reading the same slot, which is a read alongside a read.
        slot.with(|p| unsafe { *p })
    }
}

/// A record carrying `v`, for the ring's tests.
#[cfg(test)]
pub(crate) fn test_record(v: u64) -> Record {
    Record {
        value: v,
        kind: 3,
        ..Record::default()
    }
}

#[cfg(all(test, not(slicetrace_loom)))]
mod tests {
    use super::test_record as rec;
    use super::*;

    #[test]
    fn fifo_and_full_ring_drops_are_counted() {
        let (mut p, mut c) = ring(4);
        for v in 0..6 {
            p.push(rec(v));
        }
        assert_eq!(c.gauge().dropped(), 2);
        let mut out = Vec::new();
        assert_eq!(c.drain_into(&mut out, usize::MAX), 0);
        assert_eq!(
            out.iter().map(|r| r.value).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(p.push(rec(9)));
        out.clear();
        assert_eq!(c.drain_into(&mut out, usize::MAX), 4);
        assert_eq!(out[0].value, 9);
    }

    #[test]
    fn draining_in_pieces_across_the_ring_end_keeps_order() {
        let (mut p, mut c) = ring(8);
        let mut out = Vec::new();
        for v in 0..6 {
            p.push(rec(v));
        }
        c.drain_into(&mut out, usize::MAX);
        out.clear();
        // Positions 6..11 sit in slots 6, 7, 0, 1, 2.
        for v in 6..11 {
            p.push(rec(v));
        }
        assert_eq!(c.pending(), 5);
        assert_eq!(c.drain_into(&mut out, 4), 6);
        assert_eq!(c.pending(), 1);
        assert_eq!(c.drain_into(&mut out, 4), 10);
        assert_eq!(c.drain_into(&mut out, 4), 11);
        assert_eq!(
            out.iter().map(|r| r.value).collect::<Vec<_>>(),
            [6, 7, 8, 9, 10]
        );
        // The slots came back to the producer: a whole ring fits again.
        assert!(p.push_all(&[rec(0); 8]));
    }

    #[test]
    fn multi_record_push_is_all_or_nothing() {
        let (mut p, c) = ring(4);
        assert!(p.push_all(&[rec(1), rec(2), rec(3)]));
        assert!(!p.push_all(&[rec(4), rec(5)]));
        assert_eq!(c.gauge().dropped(), 2);
        assert_eq!(c.gauge().written(), 3);
        assert!(p.push(rec(6)));
    }

    #[test]
    fn history_survives_draining_until_overwritten() {
        let (mut p, mut c) = ring(4);
        for v in 0..3 {
            p.push(rec(v));
        }
        let mut out = Vec::new();
        c.drain_into(&mut out, usize::MAX);
        assert_eq!(p.history_start(), 0);
        assert_eq!(p.read_back(1).value, 1);
        for v in 3..6 {
            p.push(rec(v));
        }
        assert_eq!(p.history_start(), 2);
        assert_eq!(p.read_back(2).value, 2);
        assert_eq!(p.read_back(5).value, 5);
    }

    #[test]
    fn a_new_tenure_reads_back_only_its_own_records() {
        let (mut p, _c) = ring(8);
        p.push(rec(1));
        p.push(rec(2));
        p.begin_tenure();
        assert_eq!((p.owner_start(), p.history_start()), (2, 2));
        p.push(rec(3));
        assert_eq!(p.history_start(), 2);
        assert_eq!(p.read_back(2).value, 3);
    }

    #[test]
    fn skipping_releases_what_was_published() {
        let (mut p, mut c) = ring(4);
        p.push_all(&[rec(1), rec(2), rec(3), rec(4)]);
        assert!(!p.push(rec(5)));
        assert_eq!(c.skip_published(), 4);
        assert_eq!(c.pending(), 0);
        assert!(p.push_all(&[rec(6); 4]));
        assert_eq!(c.skip_published(), 4);
        assert_eq!(c.skip_published(), 0);
    }

    #[test]
    fn the_gauge_knows_its_ring() {
        let (p, c) = ring(3);
        let (other, _c2) = ring(4);
        assert_eq!(c.gauge().capacity(), 4);
        assert!(p.feeds(&c.gauge()));
        assert!(!other.feeds(&c.gauge()));
    }

    /// Fewer under Miri, which runs the same interleavings far slower.
    const EXCHANGED: u64 = if cfg!(miri) { 5_000 } else { 100_000 };

    #[test]
    fn threads_exchange_every_record_in_order() {
        let (mut p, mut c) = ring(64);
        let gauge = c.gauge();
        let producer = std::thread::spawn(move || {
            let mut sent = 0u64;
            for v in 0..EXCHANGED {
                while !p.has_room(1) {
                    std::hint::spin_loop();
                }
                assert!(p.push(rec(v)));
                sent += 1;
            }
            sent
        });
        let mut next = 0u64;
        let mut out = Vec::new();
        while next < EXCHANGED {
            out.clear();
            c.drain_into(&mut out, usize::MAX);
            for r in &out {
                assert_eq!(r.value, next);
                next += 1;
            }
        }
        assert_eq!(producer.join().unwrap(), EXCHANGED);
        assert_eq!(gauge.dropped(), 0);
    }
}
