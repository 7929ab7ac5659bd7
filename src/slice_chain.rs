//! The nesting rule for one request's slices on one thread, by span id.
//!
//! Both sides run it over the same records: the drainer to rebuild the tree, and the traced
//! thread (in `propagate_context`) to name the slice a receiver links to. Sharing the rule keeps
//! the two from disagreeing.

use crate::ids::{derive_span_id, Salt};

pub use slicetrace_spans::schema::MAX_DEPTH;

#[derive(Clone, Debug)]
pub struct SliceChain {
    open: [u64; MAX_DEPTH],
    depth: usize,
    /// Starts beyond `MAX_DEPTH` not yet matched by an end.
    overflow: u32,
    last_top: u64,
}

/// What an end did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Closed the slice with this id; `top` when it was top-level.
    Closed { id: u64, top: bool },
    /// Matched a start that was dropped for depth.
    Overflowed,
    /// Nothing was open.
    Nothing,
}

impl Default for SliceChain {
    fn default() -> Self {
        SliceChain {
            open: [0; MAX_DEPTH],
            depth: 0,
            overflow: 0,
            last_top: 0,
        }
    }
}

impl SliceChain {
    /// Opens the slice started by the record at `pos`; `None` when too deep (dropped).
    pub fn start(&mut self, seed: u64, pos: u64, salt: Salt) -> Option<u64> {
        if self.depth == MAX_DEPTH {
            self.overflow += 1;
            return None;
        }
        let id = derive_span_id(seed, pos, salt);
        self.open[self.depth] = id;
        self.depth += 1;
        Some(id)
    }

    /// Ends the innermost open slice.
    pub fn end(&mut self) -> Ended {
        if self.overflow > 0 {
            self.overflow -= 1;
            return Ended::Overflowed;
        }
        if self.depth == 0 {
            return Ended::Nothing;
        }
        self.depth -= 1;
        let id = self.open[self.depth];
        let top = self.depth == 0;
        if top {
            self.last_top = id;
        }
        Ended::Closed { id, top }
    }

    /// The thread span ends: every open slice closes (innermost first, as unfinished).
    pub fn finish_thread(&mut self, mut closed: impl FnMut(u64)) {
        self.overflow = 0;
        while self.depth > 0 {
            if let Ended::Closed { id, .. } = self.end() {
                closed(id);
            }
        }
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The innermost open slice.
    pub fn current(&self) -> Option<u64> {
        self.depth.checked_sub(1).map(|i| self.open[i])
    }

    /// The previous top-level slice, the link target of the next top-level one.
    pub fn last_top(&self) -> Option<u64> {
        (self.last_top != 0).then_some(self.last_top)
    }

    /// What a receiver links to: the outermost open slice, else the last top-level one.
    pub fn handoff_target(&self) -> Option<u64> {
        if self.depth > 0 {
            Some(self.open[0])
        } else {
            self.last_top()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_links_and_overflow() {
        let mut c = SliceChain::default();
        assert_eq!(c.end(), Ended::Nothing);
        let a = c.start(1, 0, Salt::SLICE).unwrap();
        let b = c.start(1, 1, Salt::SLICE).unwrap();
        assert_eq!(c.handoff_target(), Some(a));
        assert_eq!(c.end(), Ended::Closed { id: b, top: false });
        assert_eq!(c.end(), Ended::Closed { id: a, top: true });
        assert_eq!(c.handoff_target(), Some(a));
        for p in 0..MAX_DEPTH as u64 + 2 {
            c.start(1, 10 + p, Salt::SLICE);
        }
        assert_eq!(c.depth(), MAX_DEPTH);
        assert_eq!(c.end(), Ended::Overflowed);
        assert_eq!(c.end(), Ended::Overflowed);
        assert!(matches!(c.end(), Ended::Closed { top: false, .. }));
        let mut n = 0;
        c.finish_thread(|_| n += 1);
        assert_eq!(n, MAX_DEPTH - 1);
        assert_eq!(c.depth(), 0);
    }
}
