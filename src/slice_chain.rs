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
    /// Per open slice, what an uncertain end must name to close it (see `key`).
    keys: [u64; MAX_DEPTH],
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
    /// Closed nothing: an end recorded across a change of the trace level whose start was not
    /// recorded (see `end_applies`).
    Discarded,
}

impl Default for SliceChain {
    fn default() -> Self {
        SliceChain {
            open: [0; MAX_DEPTH],
            keys: [ANY; MAX_DEPTH],
            depth: 0,
            overflow: 0,
            last_top: 0,
        }
    }
}

/// The key of a slice that any end closes: an anonymous one, named by its end.
pub const ANY: u64 = u64::MAX;

/// The key of a named slice: an end recorded across a change of the trace level closes it only
/// if it names the same name at the same level.
pub fn key(level: u64, name: u32) -> u64 {
    (level.min(u32::MAX as u64 - 1) << 32) | name as u64
}

/// The key of the slice a `SliceStart` record opens.
pub fn start_key(r: &crate::wire::record::Record) -> u64 {
    if r.flags & crate::wire::record::flag::ANON != 0 {
        ANY
    } else {
        key(r.value, r.name)
    }
}

/// Whether a `SliceEnd` record (or a batch item's) closes the innermost slice of `chain`: an
/// end recorded across a change of the trace level only closes one it names.
pub fn end_applies(chain: &SliceChain, r: &crate::wire::record::Record) -> bool {
    r.flags & crate::wire::record::flag::MAYBE_UNSTARTED == 0 || chain.closes(key(r.value, r.name))
}

impl SliceChain {
    /// Opens the slice started by the record at `pos`, anonymous; `None` when too deep
    /// (dropped).
    pub fn start(&mut self, seed: u64, pos: u64, salt: Salt) -> Option<u64> {
        self.start_keyed(seed, pos, salt, ANY)
    }

    /// [`SliceChain::start`] for a slice with a [`key`].
    pub fn start_keyed(&mut self, seed: u64, pos: u64, salt: Salt, key: u64) -> Option<u64> {
        if self.depth == MAX_DEPTH {
            self.overflow += 1;
            return None;
        }
        let id = derive_span_id(seed, pos, salt);
        self.open[self.depth] = id;
        self.keys[self.depth] = key;
        self.depth += 1;
        Some(id)
    }

    /// Whether an end whose start may not have been recorded (`flag::MAYBE_UNSTARTED`) closes
    /// the innermost open slice: only one of its `key`, or an anonymous one. Past the depth
    /// limit the keys are not kept, and such an end is taken as the plain end it may be.
    pub fn closes(&self, key: u64) -> bool {
        if self.overflow > 0 {
            return true;
        }
        self.depth
            .checked_sub(1)
            .is_some_and(|i| self.keys[i] == ANY || self.keys[i] == key)
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
