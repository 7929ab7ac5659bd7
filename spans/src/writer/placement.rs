//! Which track a slice goes on: its own thread id, or the one its parent went to. A slice whose
//! parent has not been placed waits for it; placing a span then places every slice waiting for
//! it, and theirs in turn. Past the bound on waiting slices, the oldest parent's are given up
//! on and go to the unplaced track.

use super::held::HeldSlice;
use super::two_gen::TwoGen;
use super::waiting::{Taken, Waiting};

/// The track of slices whose thread is unknown.
pub(super) const UNPLACED_TID: u64 = 0;

/// Where a thread span or a slice went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placed {
    pub pid: u32,
    /// A thread span: its children go on `tid`, but it is no slice for links to start from.
    pub thread: bool,
    pub tid: u64,
    pub start: u64,
    pub end: u64,
}

/// Thread spans and slices placed lately, and slices waiting for their parent.
pub(super) struct Placement {
    /// Thread spans and slices by span id: one lookup finds where a parent went.
    placed: TwoGen<u64, Placed>,
    /// Slices waiting for their parent, with their process's pid.
    pending: Waiting<(u32, HeldSlice)>,
    /// The work list of a [`Placing`], kept for its room.
    spare: Vec<HeldSlice>,
    max_pending: usize,
}

/// Slices being placed: one, then those that waited for it, and theirs. Each is taken off
/// with [`Placing::next`] and filed with [`Placement::file`], which adds its waiting children.
pub(super) struct Placing {
    pid: u32,
    tid: u64,
    work: Vec<HeldSlice>,
}

impl Placing {
    /// The next slice to file; `first` before the rest.
    #[inline]
    pub fn next(&mut self, first: &mut Option<HeldSlice>) -> Option<HeldSlice> {
        first.take().or_else(|| self.work.pop())
    }
}

impl Placement {
    pub fn new(index_window: usize, max_pending: usize) -> Placement {
        Placement {
            placed: TwoGen::new(index_window),
            pending: Waiting::new(),
            spare: Vec::new(),
            max_pending,
        }
    }

    /// Where span `id` went, while the index remembers it.
    #[inline]
    pub fn get(&self, id: u64) -> Option<&Placed> {
        self.placed.get(&id)
    }

    /// How many placed spans the index remembers at most.
    #[inline]
    pub fn most(&self) -> usize {
        self.placed.most()
    }

    /// The track (pid, tid) where `parent`'s children go, if it was placed.
    #[inline]
    pub fn track_of_parent(&self, parent: u64) -> Option<(u32, u64)> {
        // A parent that slices already wait for is not placed: the small table of waiting
        // slices answers that, where the index would take two cold probes.
        if self.pending.waits_for(parent) {
            return None;
        }
        self.placed.get(&parent).map(|p| (p.pid, p.tid))
    }

    /// Files thread span `id` at `at`; returns the slices that waited for it, to be placed on
    /// its track with [`next_taken`](Self::next_taken).
    #[inline]
    pub fn place_thread(&mut self, id: u64, at: Placed) -> Option<Taken> {
        self.placed.insert(id, at);
        self.pending.take(id)
    }

    /// Holds `slice` of process `pid` until its parent is placed.
    #[inline]
    pub fn hold(&mut self, pid: u32, slice: HeldSlice) {
        self.pending.hold(slice.parent, (pid, slice));
    }

    /// Whether more slices wait than the bound allows: then the oldest parent's are given up.
    #[inline]
    pub fn over_bound(&self) -> bool {
        self.pending.len() > self.max_pending
    }

    /// The slices of the oldest parent still waited for, given up on: each goes to the
    /// unplaced track.
    #[inline]
    pub fn give_up(&mut self) -> Option<Taken> {
        let parent = self.pending.oldest()?;
        self.pending.take(parent)
    }

    /// The next of a list of taken slices, with its process's pid.
    #[inline]
    pub fn next_taken(&mut self, taken: &mut Taken) -> Option<(u32, HeldSlice)> {
        self.pending.next(taken)
    }

    /// Starts placing slices on `pid`/`tid`.
    #[inline]
    pub fn start(&mut self, pid: u32, tid: u64) -> Placing {
        Placing {
            pid,
            tid,
            work: std::mem::take(&mut self.spare),
        }
    }

    /// Files `slice` as placed by `p`, and where it goes; the slices that waited for it are
    /// added to `p`, to come after it.
    #[inline]
    pub fn file(&mut self, p: &mut Placing, slice: &HeldSlice) -> Placed {
        let here = Placed {
            pid: p.pid,
            thread: false,
            tid: p.tid,
            start: slice.start_ns,
            end: slice.end_ns.max(slice.start_ns),
        };
        self.placed.insert(slice.span_id, here);
        if let Some(mut children) = self.pending.take(slice.span_id) {
            while let Some((_, child)) = self.pending.next(&mut children) {
                p.work.push(child);
            }
        }
        here
    }

    /// Ends `p`, keeping its room for the next.
    #[inline]
    pub fn finish(&mut self, p: Placing) {
        self.spare = p.work;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, Span};

    fn held(id: u64, parent: u64, names: &mut super::super::held::Names) -> HeldSlice {
        let span = Span {
            trace_id: 1,
            span_id: id,
            parent,
            name: format!("s{id}"),
            start_ns: id * 10,
            end_ns: id * 10 + 5,
            attrs: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            error: None,
            role: Role::Slice,
        };
        HeldSlice::new(span, names)
    }

    fn place_all(p: &mut Placement, pid: u32, tid: u64, slice: HeldSlice) -> Vec<(u64, Placed)> {
        let mut placing = p.start(pid, tid);
        let mut first = Some(slice);
        let mut out = Vec::new();
        while let Some(s) = placing.next(&mut first) {
            out.push((s.span_id, p.file(&mut placing, &s)));
        }
        p.finish(placing);
        out
    }

    /// Slices that arrive before their parents wait; once the thread span comes, they and
    /// their descendants go on its track, each parent before its children, and are filed so
    /// that later children find them directly.
    #[test]
    fn waiting_slices_follow_their_parent_to_its_track() {
        let mut names = Default::default();
        let mut p = Placement::new(1 << 10, 1 << 10);
        // 3 → 2 → thread 1; 4 → 2.
        assert_eq!(p.track_of_parent(2), None);
        p.hold(7, held(3, 2, &mut names));
        p.hold(7, held(4, 2, &mut names));
        p.hold(7, held(2, 1, &mut names));
        assert!(!p.over_bound());
        assert_eq!(p.track_of_parent(2), None, "2 waits, so is not placed");
        let at = Placed {
            pid: 7,
            thread: true,
            tid: 99,
            start: 0,
            end: 100,
        };
        let mut children = p.place_thread(1, at).unwrap();
        assert_eq!(p.track_of_parent(1), Some((7, 99)));
        let mut order = Vec::new();
        while let Some((pid, child)) = p.next_taken(&mut children) {
            for (id, here) in place_all(&mut p, pid, 99, child) {
                assert_eq!((here.pid, here.tid, here.thread), (7, 99, false));
                assert_eq!((here.start, here.end), (id * 10, id * 10 + 5));
                order.push(id);
            }
        }
        assert_eq!(order[0], 2);
        order[1..].sort_unstable();
        assert_eq!(order, [2, 3, 4]);
        assert_eq!(p.track_of_parent(3), Some((7, 99)));
        assert_eq!(p.get(2).map(|q| q.thread), Some(false));
    }

    /// Past the bound, the oldest parent's slices are given up on, and only those.
    #[test]
    fn past_the_bound_the_oldest_parents_slices_are_given_up() {
        let mut names = Default::default();
        let mut p = Placement::new(1 << 10, 2);
        p.hold(1, held(10, 100, &mut names));
        p.hold(1, held(11, 100, &mut names));
        assert!(!p.over_bound());
        p.hold(1, held(12, 101, &mut names));
        assert!(p.over_bound());
        let mut given_up = p.give_up().unwrap();
        let mut ids = Vec::new();
        while let Some((pid, s)) = p.next_taken(&mut given_up) {
            assert_eq!(pid, 1);
            ids.push(s.span_id);
        }
        ids.sort_unstable();
        assert_eq!(ids, [10, 11]);
        assert!(!p.over_bound());
        let mut last = p.give_up().unwrap();
        assert_eq!(p.next_taken(&mut last).map(|(_, s)| s.span_id), Some(12));
        assert!(p.give_up().is_none());
    }
}
