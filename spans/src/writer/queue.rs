//! The writer's event queue: events wait in a slab, their small keys in the reorder queue,
//! until the reorder window lets them go, smallest time first.

use super::prefetch::prefetch_value;
use super::reorder::{ReorderQueue, Timed};

/// Which events come first among those at one time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum Class {
    /// A request's begin and end.
    Request,
    /// A slice (longer ones first), and an arrow end right after the slice it binds to,
    /// before any child starting with it.
    Slice,
    /// What binds to a slice already open: an arrow's start, a request's instant.
    Inside,
    /// A slice's instant, queued when its slice is written.
    Instant,
}

/// What the queue asks of the events it holds.
pub(super) trait Held {
    /// Starts loading the memory the event points to, which writing it will read.
    fn prefetch_parts(&self);
}

/// A count on a cache line of its own. Side by side, the sequence and flow counters had their
/// increments fused into one 16-byte load and store; that load straddled the 8-byte store of
/// the sequence just before it, and waited for it to reach the cache (a failed store forward)
/// at every link.
#[repr(align(64))]
pub(super) struct Counter(pub u64);

/// The reorder queue orders these small keys; the events they stand for wait in a slab.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    ts: u64,
    class: Class,
    /// `!duration`: longer first.
    rdur: u64,
    seq: u64,
    slot: u32,
}

impl Timed for Queued {
    fn ts(&self) -> u64 {
        self.ts
    }
}

/// A place in the queue's order, taken before the event it is for is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seq(u64);

/// Events held for the reorder window, and how far the written output has got.
pub(super) struct EventQueue<I> {
    queue: ReorderQueue<Queued>,
    items: Vec<Option<I>>,
    free_slots: Vec<u32>,
    seq: Counter,
    /// The latest end time of the spans pushed: the window counts back from it.
    latest_end: u64,
    /// A window before `latest_end`: events before it are due.
    watermark: u64,
    /// The latest time written.
    written_to: u64,
    window_ns: u64,
    max_buffered: usize,
}

/// How far ahead of the write position the slab entries are asked for; the parts they point
/// to, a few places nearer.
const SLOTS_AHEAD: usize = 12;
const PARTS_AHEAD: usize = 8;

impl<I: Held> EventQueue<I> {
    pub fn new(window_ns: u64, max_buffered: usize) -> EventQueue<I> {
        EventQueue {
            queue: ReorderQueue::new(),
            items: Vec::new(),
            free_slots: Vec::new(),
            seq: Counter(0),
            latest_end: 0,
            watermark: 0,
            written_to: 0,
            window_ns,
            max_buffered,
        }
    }

    /// Moves the window on to a span ending at `end_ns`.
    #[inline]
    pub fn saw_end(&mut self, end_ns: u64) {
        self.latest_end = self.latest_end.max(end_ns);
        self.watermark = self.latest_end.saturating_sub(self.window_ns);
    }

    /// Takes the next place in the order, for an event queued later with
    /// [`push_at`](Self::push_at).
    #[inline]
    pub fn next_seq(&mut self) -> Seq {
        self.seq.0 += 1;
        Seq(self.seq.0)
    }

    /// Queues `item` at `ts`; returns whether it came late (after a later time was written).
    #[inline]
    pub fn push(&mut self, ts: u64, class: Class, dur: u64, item: I) -> bool {
        let seq = self.next_seq();
        self.push_at(seq, ts, class, dur, item)
    }

    /// Queues `item` at `ts` in the place `seq` took, which orders it among equal times and
    /// classes; returns whether it came late.
    #[inline]
    pub fn push_at(&mut self, seq: Seq, ts: u64, class: Class, dur: u64, item: I) -> bool {
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.items[s as usize] = Some(item);
                s
            }
            None => {
                self.items.push(Some(item));
                (self.items.len() - 1) as u32
            }
        };
        self.queue.push(Queued {
            ts,
            class,
            rdur: !dur,
            seq: seq.0,
            slot,
        });
        ts < self.written_to
    }

    /// The next event the window lets go (every one when `all`), with its time.
    #[inline]
    pub fn pop_due(&mut self, all: bool) -> Option<(u64, I)> {
        loop {
            let top = self.queue.peek()?;
            let due = all || top.ts < self.watermark || self.queue.len() > self.max_buffered;
            if !due {
                return None;
            }
            self.prefetch_ahead();
            let q = self.queue.pop()?;
            self.written_to = self.written_to.max(q.ts);
            let item = self.items[q.slot as usize].take();
            self.free_slots.push(q.slot);
            if let Some(item) = item {
                return Some((q.ts, item));
            }
        }
    }

    /// Asks for the memory of the events a few places behind the next one: their slab entries,
    /// then what those point to; each stage reads only what an earlier one asked for.
    #[inline]
    fn prefetch_ahead(&self) {
        if let Some(k) = self.queue.ahead(SLOTS_AHEAD) {
            prefetch_value(&self.items[k.slot as usize]);
        }
        if let Some(item) = self
            .queue
            .ahead(PARTS_AHEAD)
            .and_then(|k| self.items[k.slot as usize].as_ref())
        {
            item.prefetch_parts();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Held for &'static str {
        fn prefetch_parts(&self) {}
    }

    fn drain(q: &mut EventQueue<&'static str>, all: bool) -> Vec<(u64, &'static str)> {
        std::iter::from_fn(|| q.pop_due(all)).collect()
    }

    /// At one time: requests, then slices longest first (a place taken earlier goes first
    /// among equals), then what binds inside them, then slices' instants; whatever order they
    /// were queued in.
    #[test]
    fn equal_times_come_out_by_class_then_length_then_place() {
        let mut q = EventQueue::new(0, usize::MAX);
        let early = q.next_seq();
        assert!(!q.push(10, Class::Instant, 0, "instant"));
        q.push(10, Class::Inside, 0, "flow start");
        q.push(10, Class::Slice, 5, "short slice");
        q.push(10, Class::Slice, 5, "arrow end");
        q.push_at(early, 10, Class::Slice, 5, "short slice placed first");
        q.push(10, Class::Slice, 50, "long slice");
        q.push(10, Class::Request, 0, "request");
        q.push(9, Class::Instant, 0, "earlier");
        let order: Vec<&str> = drain(&mut q, true).into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            order,
            [
                "earlier",
                "request",
                "long slice",
                "short slice placed first",
                "short slice",
                "arrow end",
                "flow start",
                "instant"
            ]
        );
    }

    /// Events leave once the latest end is a window past them, or when too many are held; one
    /// queued before a time already written counts as late.
    #[test]
    fn the_window_and_the_bound_let_events_go() {
        let mut q = EventQueue::new(100, 3);
        q.push(1_000, Class::Slice, 0, "a");
        q.push(1_050, Class::Slice, 0, "b");
        q.saw_end(1_100);
        assert_eq!(drain(&mut q, false), []);
        q.saw_end(1_101);
        assert_eq!(drain(&mut q, false), [(1_000, "a")]);
        q.saw_end(1_140);
        assert_eq!(drain(&mut q, false), []);
        assert!(q.push(900, Class::Slice, 0, "late"));
        assert!(!q.push(1_000, Class::Slice, 0, "on time"));
        assert_eq!(drain(&mut q, false), [(900, "late"), (1_000, "on time")]);
        q.push(5_000, Class::Slice, 0, "c");
        q.push(6_000, Class::Slice, 0, "d");
        assert_eq!(drain(&mut q, false), []);
        // Four held, three allowed: the oldest goes.
        q.push(7_000, Class::Slice, 0, "e");
        assert_eq!(drain(&mut q, false), [(1_050, "b")]);
        assert_eq!(
            drain(&mut q, true),
            [(5_000, "c"), (6_000, "d"), (7_000, "e")]
        );
        assert!(q.pop_due(true).is_none());
    }

    /// Slab slots are reused: a queue that stays small keeps a small slab however many events
    /// pass through it.
    #[test]
    fn slots_are_reused() {
        let mut q = EventQueue::new(0, usize::MAX);
        for t in 0..1_000u64 {
            q.push(t, Class::Slice, 0, "x");
            q.saw_end(t + 1);
            assert_eq!(drain(&mut q, false), [(t, "x")]);
        }
        assert_eq!(q.items.len(), 1);
    }
}
