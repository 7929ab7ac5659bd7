//! Links become flow arrows: from the linked slice to the linking one, whichever of the two is
//! placed first. A link whose target is not placed yet waits for it, for as long as the index
//! window; one that waited a whole window gives up, counted.

use super::placement::Placed;
use super::queue::Counter;
use super::two_gen::TwoGen;

/// A placed slice whose link waits for its target to be placed.
struct PendingLink {
    span: u64,
    at: Placed,
}

/// One end of a flow arrow, to be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ArrowEnd {
    pub id: u64,
    /// The arrow's start (at the linked slice) or its end (at the linking one).
    pub start: bool,
    /// When the end is: inside the slice it binds to.
    pub ts: u64,
    /// The slice the end binds to, and where it was placed.
    pub bind: u64,
    pub at: Placed,
}

/// What the links of a slice being placed came to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Linked {
    /// The arrow end of the first link whose target was placed before the slice: written right
    /// after the slice, not queued.
    pub flow_in: Option<u64>,
    /// Links of other slices that waited a whole window for their target, given up on.
    pub gave_up: u64,
}

/// Links waiting for their target, and the arrows' ids.
pub(super) struct Flows {
    pending: TwoGen<u64, Vec<PendingLink>>,
    next_id: Counter,
}

impl Flows {
    pub fn new(index_window: usize) -> Flows {
        Flows {
            pending: TwoGen::new(index_window),
            next_id: Counter(1),
        }
    }

    /// Draws the arrows of slice `id`, just placed at `here` with `links`, through `placed`
    /// (where a span went): one for each link whose target was placed, one for each slice
    /// that waited for this one. Hands each arrow end to `queue`, in the order to queue them.
    #[inline]
    pub fn link(
        &mut self,
        id: u64,
        here: Placed,
        links: &[(u128, u64)],
        placed: impl Fn(u64) -> Option<Placed>,
        mut queue: impl FnMut(ArrowEnd),
    ) -> Linked {
        let mut out = Linked::default();
        for &(_, target) in links {
            match placed(target).filter(|p| !p.thread) {
                Some(from) => {
                    let start = self.arrow(from, target, here);
                    queue(start);
                    match out.flow_in {
                        None => out.flow_in = Some(start.id),
                        Some(_) => queue(arrow_end(start.id, here, id)),
                    }
                }
                None => {
                    let waiting = PendingLink { span: id, at: here };
                    let mut v = self.pending.remove(&target).unwrap_or_default();
                    v.push(waiting);
                    let gave_up = &mut out.gave_up;
                    self.pending
                        .insert_with(target, v, |w| *gave_up += w.len() as u64);
                }
            }
        }
        if let Some(waiting) = self.pending.remove(&id) {
            for l in waiting {
                let start = self.arrow(here, id, l.at);
                queue(start);
                queue(arrow_end(start.id, l.at, l.span));
            }
        }
        out
    }

    /// Links still waiting for their target.
    #[inline]
    pub fn unresolved(&self) -> u64 {
        self.pending.values().map(|v| v.len() as u64).sum()
    }

    /// A new arrow from slice `from_id` (placed at `from`) to a slice placed at `to`: its start.
    #[inline]
    fn arrow(&mut self, from: Placed, from_id: u64, to: Placed) -> ArrowEnd {
        let id = self.next_id.0;
        self.next_id.0 += 1;
        // The arrow leaves the linked slice at its end, or where the linking slice starts if
        // that is earlier; either way inside the linked slice, which the start binds to.
        let leave = to.start.min(from.end.saturating_sub(1)).max(from.start);
        ArrowEnd {
            id,
            start: true,
            ts: leave,
            bind: from_id,
            at: from,
        }
    }
}

/// The end of arrow `id` at slice `to_id`, placed at `to`: where the slice starts.
#[inline]
pub(super) fn arrow_end(id: u64, to: Placed, to_id: u64) -> ArrowEnd {
    ArrowEnd {
        id,
        start: false,
        ts: to.start,
        bind: to_id,
        at: to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn at(tid: u64, start: u64, end: u64) -> Placed {
        Placed {
            pid: 1,
            thread: false,
            tid,
            start,
            end,
        }
    }

    struct Run {
        flows: Flows,
        placed: HashMap<u64, Placed>,
        ends: Vec<ArrowEnd>,
    }

    impl Run {
        fn new(window: usize) -> Run {
            Run {
                flows: Flows::new(window),
                placed: HashMap::new(),
                ends: Vec::new(),
            }
        }

        fn place(&mut self, id: u64, here: Placed, links: &[u64]) -> Linked {
            self.placed.insert(id, here);
            let links: Vec<(u128, u64)> = links.iter().map(|&t| (7, t)).collect();
            let placed = &self.placed;
            let ends = &mut self.ends;
            self.flows.link(
                id,
                here,
                &links,
                |t| placed.get(&t).copied(),
                |e| ends.push(e),
            )
        }
    }

    /// A link to a slice placed before draws its arrow at once, its first end left to go with
    /// the slice; a link to one placed after waits and is drawn when the target comes. Each
    /// arrow starts inside the linked slice and ends where the linking one starts.
    #[test]
    fn links_are_drawn_in_either_order() {
        let mut r = Run::new(1 << 10);
        let a = at(5, 100, 200);
        assert_eq!(r.place(2, a, &[3]), Linked::default());
        assert!(r.ends.is_empty());
        assert_eq!(r.flows.unresolved(), 1);
        let target = at(6, 10, 90);
        assert_eq!(r.place(3, target, &[]), Linked::default());
        assert_eq!(
            r.ends,
            [
                ArrowEnd {
                    id: 1,
                    start: true,
                    ts: 89,
                    bind: 3,
                    at: target
                },
                arrow_end(1, a, 2)
            ]
        );
        assert_eq!(r.flows.unresolved(), 0);
        r.ends.clear();
        let b = at(5, 300, 400);
        let linked = r.place(4, b, &[2, 3]);
        assert_eq!(linked.flow_in, Some(2));
        assert_eq!(r.ends.len(), 3);
        assert_eq!(
            (r.ends[0].id, r.ends[0].start, r.ends[0].bind),
            (2, true, 2)
        );
        assert_eq!(
            (r.ends[1].id, r.ends[1].start, r.ends[1].bind),
            (3, true, 3)
        );
        assert_eq!(r.ends[2], arrow_end(3, b, 4));
        // Both leave their linked slice before it ends.
        assert_eq!((r.ends[0].ts, r.ends[1].ts), (199, 89));
    }

    /// An arrow leaves where the linking slice starts when that is inside the linked one.
    #[test]
    fn an_arrow_leaves_no_later_than_the_linking_slice_starts() {
        let mut r = Run::new(1 << 10);
        r.place(1, at(5, 0, 1_000), &[]);
        let linked = r.place(2, at(6, 300, 400), &[9, 1]);
        assert_eq!(linked.flow_in, Some(1));
        assert_eq!(r.ends.len(), 1);
        assert_eq!(
            (r.ends[0].ts, r.ends[0].bind, r.ends[0].start),
            (300, 1, true)
        );
        assert_eq!(r.flows.unresolved(), 1);
    }

    /// A thread span is placed but starts no arrow; links left waiting a whole window give up,
    /// counted.
    #[test]
    fn links_to_thread_spans_wait_and_old_waits_give_up() {
        let mut r = Run::new(2);
        let mut thread = at(5, 0, 1_000);
        thread.thread = true;
        r.placed.insert(1, thread);
        let mut gave_up = 0;
        gave_up += r.place(10, at(5, 10, 20), &[1]).gave_up;
        for i in 0..8 {
            gave_up += r.place(20 + i, at(5, 30, 40), &[100 + i]).gave_up;
        }
        assert!(r.ends.is_empty());
        assert!(gave_up > 0);
        assert_eq!(gave_up + r.flows.unresolved(), 9);
    }
}
