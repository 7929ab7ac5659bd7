//! Overlap lanes of one thread: viewers nest the slices of a track by time, so a slice that
//! overlaps another without nesting (two requests' slices interleaved) goes to a lane of its
//! own, where it nests. Slices come to a thread in start order.

struct Lane {
    tid: u64,
    /// End times of the slices open at the current write position, outermost first.
    open: Vec<u64>,
}

/// The lanes of one thread, the thread's own track first.
#[derive(Default)]
pub(super) struct Lanes {
    lanes: Vec<Lane>,
}

/// Where a slice went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LaneOf {
    pub tid: u64,
    /// The lane's number (from 1), when the slice opened it.
    pub opened: Option<u64>,
}

impl Lanes {
    /// The lane of thread `tid` where a slice `start..end` nests: the first where it does, or
    /// a new one with the tid `new_tid` gives.
    #[inline]
    pub fn place(
        &mut self,
        tid: u64,
        start: u64,
        end: u64,
        new_tid: impl FnOnce() -> u64,
    ) -> LaneOf {
        if self.lanes.is_empty() {
            self.lanes.push(Lane {
                tid,
                open: Vec::new(),
            });
        }
        for lane in &mut self.lanes {
            while lane.open.last().is_some_and(|&e| e <= start) {
                lane.open.pop();
            }
            if lane.open.last().is_none_or(|&e| end <= e) {
                lane.open.push(end);
                return LaneOf {
                    tid: lane.tid,
                    opened: None,
                };
            }
        }
        let n = self.lanes.len() as u64;
        let tid = new_tid();
        self.lanes.push(Lane {
            tid,
            open: vec![end],
        });
        LaneOf {
            tid,
            opened: Some(n),
        }
    }

    /// The tids of the overlap lanes, by number.
    pub fn overlap_tids(&self) -> impl Iterator<Item = u64> + '_ {
        self.lanes.iter().skip(1).map(|l| l.tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(slices: &[(u64, u64)]) -> (Vec<LaneOf>, Vec<u64>) {
        let mut lanes = Lanes::default();
        let mut next = 100;
        let out = slices
            .iter()
            .map(|&(s, e)| {
                lanes.place(5, s, e, || {
                    next += 1;
                    next
                })
            })
            .collect();
        (out, lanes.overlap_tids().collect())
    }

    fn own(tid: u64) -> LaneOf {
        LaneOf { tid, opened: None }
    }

    #[test]
    fn nested_and_sequential_slices_stay_on_the_thread() {
        let (out, overlap) = run(&[(0, 100), (10, 20), (20, 30), (30, 100), (100, 200)]);
        assert_eq!(out, [own(5); 5]);
        assert!(overlap.is_empty());
    }

    #[test]
    fn an_overlapping_slice_opens_a_lane_and_later_ones_reuse_it() {
        let (out, overlap) = run(&[
            (0, 100),
            (50, 150),  // overlaps the first: lane 1
            (60, 160),  // overlaps both: lane 2
            (160, 170), // after everything: the thread's own track
            (165, 300), // overlaps the one before: lane 1, free by then
            (200, 300), // the thread's own track is free again
        ]);
        assert_eq!(
            out,
            [
                own(5),
                LaneOf {
                    tid: 101,
                    opened: Some(1)
                },
                LaneOf {
                    tid: 102,
                    opened: Some(2)
                },
                own(5),
                own(101),
                own(5),
            ]
        );
        assert_eq!(overlap, [101, 102]);
    }
}
