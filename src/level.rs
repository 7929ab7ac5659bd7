//! Trace levels: how much detail the process records.
//!
//! A [`Name`](crate::Name) carries a level ([`Name::with_level`](crate::Name::with_level);
//! [`DEFAULT_NAME_LEVEL`] otherwise), and a slice or event of that name is recorded while the
//! process level ([`set_level`], `SLICETRACE_LEVEL`, [`DEFAULT_PROCESS_LEVEL`]) is at least
//! that. The level rides on the name rather than on each call because it is a property of the
//! stage (a per-step `decode_loop` is detailed wherever it is written), so a start and its end
//! agree on it by construction, every existing call keeps its signature, and the check is one
//! compare of a byte that sits beside the name's id, which the call loads anyway.
//!
//! ## A level change while slices are open
//!
//! A slice is recorded whole or not at all, whatever the level does between its start and its
//! end. The calling thread counts, per level, the slices it started and has not ended, and of
//! those at most how many it recorded and how many it skipped (a thread-local, no lock):
//! - an end above the level is still recorded while the thread may have a recorded slice of
//!   that level open (or an anonymous one, which takes its level from its end), so a slice
//!   started before the level went down ends where it should;
//! - an end recorded while its start may have been skipped (at or below the level with a
//!   skipped start of its level open, or above the level) is marked uncertain: the drainer
//!   applies it only to a slice of the same level and name (or an anonymous one) open innermost
//!   for its request on the thread, and otherwise discards it, counted in
//!   `Stats::level_ends_discarded`, not as a loss.
//!
//! The one case the counts cannot tell apart: inside one request on one thread, a slice nested
//! in another of the same name and level, started while the level was below theirs and ended
//! after it rose again; its end then closes the outer one. The counts only ever err towards
//! recording: an end recorded for nothing costs its record and is discarded. Slices left to a
//! thread or request end to close keep their level's counts up, and so do ends of anonymous
//! slices on a thread with slices of the end's level open: after the level goes down, such a
//! thread keeps recording that level's ends (not its starts) until its counts fall to nothing.
//!
//! Calls with no name of their own (`slice_add_attr`, the request and thread calls) are not
//! levelled; an attribute key's level is not used.

use crate::wire::record::flag;
use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// The level of a name made without one: recorded unless the process level is 0.
pub const DEFAULT_NAME_LEVEL: u8 = 1;

/// The process level unless set: SGLang's default trace level, 3.
pub const DEFAULT_PROCESS_LEVEL: u8 = 3;

/// The highest level a name or the process may have.
pub const MAX_LEVEL: u8 = 7;

static LEVEL: AtomicU8 = AtomicU8::new(DEFAULT_PROCESS_LEVEL);

/// Sets the process level (at most [`MAX_LEVEL`]; higher values mean `MAX_LEVEL`): from the
/// next call on, on every thread, slices and events of names above it are not recorded. A slice
/// open across the change is recorded whole or not at all (see the module docs).
pub fn set_level(level: u8) {
    LEVEL.store(level.min(MAX_LEVEL), Ordering::Relaxed);
}

/// The process level now.
pub fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

/// Whether a call of a name at `level` records now.
#[inline(always)]
pub(crate) fn records(level: u8) -> bool {
    level <= LEVEL.load(Ordering::Relaxed)
}

const LEVELS: usize = MAX_LEVEL as usize + 1;

/// What one thread knows of its open slices of one level. Every count is an upper bound of the
/// truth and is lowered only when an end certainly closed what it counts, so that a recorded
/// start never misses its end. A count that reaches its maximum stays there (it is no longer
/// known); one that runs high only records ends that the drainer then discards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Open {
    /// Slices started and not ended, recorded or not.
    started: u16,
    /// Of those, the recorded ones, at most.
    recorded: u16,
    /// Of those, the skipped ones, at most.
    skipped: u16,
    /// Of the recorded ones, the anonymous ones, at most: counted at the level of the call that
    /// opened them, and found by an end of another level when that level has nothing open.
    anon: u16,
}

impl Open {
    // One word per level, so that a call reads and writes its level's counts at once.
    #[inline(always)]
    fn load(c: &Cell<u64>) -> Open {
        let v = c.get();
        Open {
            started: v as u16,
            recorded: (v >> 16) as u16,
            skipped: (v >> 32) as u16,
            anon: (v >> 48) as u16,
        }
    }

    #[inline(always)]
    fn store(self, c: &Cell<u64>) {
        c.set(
            self.started as u64
                | (self.recorded as u64) << 16
                | (self.skipped as u64) << 32
                | (self.anon as u64) << 48,
        )
    }

    /// Lowers every count to at most `started`, which the others are parts of.
    #[inline(always)]
    fn clamp(&mut self) {
        if self.started != u16::MAX {
            self.recorded = self.recorded.min(self.started);
            self.skipped = self.skipped.min(self.started);
            self.anon = self.anon.min(self.started);
        }
    }
}

#[inline(always)]
fn add(v: &mut u16, n: u32) {
    *v = (*v as u32 + n).min(u16::MAX as u32) as u16;
}

#[inline(always)]
fn sub(v: &mut u16) {
    if *v != u16::MAX {
        *v = v.saturating_sub(1);
    }
}

struct Counts {
    open: [Cell<u64>; LEVELS],
    /// A batch of this level was skipped since the last one recorded: the next one recorded
    /// ends slices that were never opened.
    batch_skipped: [Cell<bool>; LEVELS],
}

impl Counts {
    const fn new() -> Counts {
        Counts {
            open: [const { Cell::new(0) }; LEVELS],
            batch_skipped: [const { Cell::new(false) }; LEVELS],
        }
    }

    #[cfg(test)]
    fn get(&self, level: u8) -> Open {
        Open::load(&self.open[slot(level)])
    }

    #[inline(always)]
    fn start(&self, level: u8, now: u8) -> bool {
        let cell = &self.open[slot(level)];
        let mut o = Open::load(cell);
        let rec = level <= now;
        add(&mut o.started, 1);
        add(if rec { &mut o.recorded } else { &mut o.skipped }, 1);
        o.store(cell);
        rec
    }

    fn start_anon(&self, level: u8, now: u8) -> bool {
        let rec = self.start(level, now);
        if rec {
            let cell = &self.open[slot(level)];
            let mut o = Open::load(cell);
            add(&mut o.anon, 1);
            o.store(cell);
        }
        rec
    }

    /// `n` anonymous slices recorded, opened by a call of `level`.
    fn anon_opened(&self, level: u8, n: u32) {
        let cell = &self.open[slot(level)];
        let mut o = Open::load(cell);
        add(&mut o.started, n);
        add(&mut o.recorded, n);
        add(&mut o.anon, n);
        o.store(cell);
    }

    /// `None`: skip the end; else the flags to record it with, and whether it is at or below
    /// the level (above it, an end opens no next slice).
    #[inline(always)]
    fn end(&self, level: u8, now: u8) -> Option<(u8, bool)> {
        let (cell, at) = (&self.open[slot(level)], level <= now);
        let mut o = Open::load(cell);
        if o.started == 0 {
            return self.end_of_another_level(at);
        }
        let unsure = !at || o.skipped > 0;
        let record = at || o.recorded > 0;
        if !record {
            // Above the level with none recorded open: it ends a skipped one.
            sub(&mut o.skipped);
        }
        sub(&mut o.started);
        o.clamp();
        o.store(cell);
        record.then_some((if unsure { flag::MAYBE_UNSTARTED } else { 0 }, at))
    }

    /// An end of a level with nothing open: only an anonymous slice opened at another level
    /// can be what it ends.
    #[cold]
    fn end_of_another_level(&self, at: bool) -> Option<(u8, bool)> {
        for cell in &self.open {
            let mut o = Open::load(cell);
            if o.anon > 0 {
                sub(&mut o.anon);
                o.store(cell);
                return Some((if at { 0 } else { flag::MAYBE_UNSTARTED }, at));
            }
        }
        at.then_some((0, true))
    }

    /// A batch ends `items` slices of `level` and opens `unfinished` anonymous ones after
    /// them: `None` to skip it, else the flags of its ends. Above the level it is recorded only
    /// to close what earlier batches opened, and opens nothing (`flag::CLOSE_ONLY`).
    fn batch(&self, level: u8, now: u8, items: u32, unfinished: u32) -> Option<u8> {
        let (i, at) = (slot(level), level <= now);
        let mut o = Open::load(&self.open[i]);
        let mut flags =
            if at && o.skipped == 0 && o.started as u32 >= items && o.started != u16::MAX {
                // The steady state: each item ends the slice the last batch opened.
                o.started -= items as u16;
                o.clamp();
                o.store(&self.open[i]);
                Some(0)
            } else {
                let mut out = None;
                for _ in 0..items {
                    if let Some((f, _)) = self.end(level, now) {
                        out = Some(out.unwrap_or(0) | f);
                    }
                }
                if at {
                    out.or(Some(0))
                } else {
                    out.map(|f| f | flag::CLOSE_ONLY)
                }
            };
        if at {
            if self.batch_skipped[i].replace(false) {
                flags = flags.map(|f| f | flag::MAYBE_UNSTARTED);
            }
            self.anon_opened(level, unfinished);
        } else {
            self.batch_skipped[i].set(true);
        }
        flags
    }
}

thread_local! {
    // Constant-initialised with nothing to drop: a plain thread-local access, no registration.
    static COUNTS: Counts = const { Counts::new() };
}

#[inline(always)]
fn slot(level: u8) -> usize {
    (level as usize).min(LEVELS - 1)
}

/// Runs `f` with this thread's counts and the process level now; on a thread being torn down,
/// which has no counts, `torn_down` decides from the level alone.
#[inline(always)]
fn decide<R>(f: impl FnOnce(&Counts, u8) -> R, torn_down: impl FnOnce(u8) -> R) -> R {
    let now = LEVEL.load(Ordering::Relaxed);
    COUNTS
        .try_with(|c| f(c, now))
        .unwrap_or_else(|_| torn_down(now))
}

/// A named slice of `level` starts: whether to record it.
#[inline(always)]
pub(crate) fn start(level: u8) -> bool {
    decide(|c, now| c.start(level, now), |now| level <= now)
}

/// An anonymous slice opened by a call of `level` starts: whether to record it.
#[inline(always)]
pub(crate) fn start_anon(level: u8) -> bool {
    decide(|c, now| c.start_anon(level, now), |now| level <= now)
}

/// An end of `level` recorded at or below the level opened the next anonymous slice.
#[inline(always)]
pub(crate) fn anon_opened(level: u8) {
    decide(|c, _| c.anon_opened(level, 1), |_| ())
}

/// A slice of `level` ends: `None` to skip the end, else the flags to record it with, and
/// whether it is at or below the level.
#[inline(always)]
pub(crate) fn end(level: u8) -> Option<(u8, bool)> {
    decide(
        |c, now| c.end(level, now),
        |now| (level <= now).then_some((0, true)),
    )
}

/// See `Counts::batch`.
pub(crate) fn batch(level: u8, items: u32, unfinished: u32) -> Option<u8> {
    decide(
        |c, now| c.batch(level, now, items, unfinished),
        |now| (level <= now).then_some(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// One thread's slices of several requests, named (and anonymous, with `anon`), with the
    /// level moving at random: a recorded start always gets its end recorded, and an end
    /// recorded for a skipped start is always marked uncertain. Returns the ends of skipped
    /// starts that were skipped too, and all ends.
    fn random_run(seed: u64, anon: bool) -> (u32, u32) {
        let c = Counts::new();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut now = DEFAULT_PROCESS_LEVEL;
        // Per request, its open slices innermost last: (level, recorded), named or anonymous
        // alike (an anonymous one is ended by a name of the level that opened it).
        let mut open: Vec<Vec<(u8, bool)>> = vec![Vec::new(); 4];
        let (mut ends, mut skipped_ends) = (0, 0);
        for _ in 0..50_000 {
            let r = rng.below(4) as usize;
            match rng.below(12) {
                0 => now = rng.below(5) as u8,
                1..=3 => {
                    let l = 1 + rng.below(4) as u8;
                    // A slice nested in one of its own level within a request is the case the
                    // counts cannot tell apart (see the module docs).
                    if !open[r].iter().any(|s| s.0 == l) {
                        open[r].push((l, c.start(l, now)));
                    }
                }
                4 if anon => {
                    let l = 1 + rng.below(4) as u8;
                    if !open[r].iter().any(|s| s.0 == l) {
                        open[r].push((l, c.start_anon(l, now)));
                    }
                }
                _ => {
                    let Some((l, recorded)) = open[r].pop() else {
                        continue;
                    };
                    ends += 1;
                    match c.end(l, now).map(|(f, _)| f) {
                        None => {
                            assert!(!recorded, "seed {seed}: a recorded slice lost its end");
                            skipped_ends += 1;
                        }
                        Some(f) if !recorded => {
                            assert_eq!(f, flag::MAYBE_UNSTARTED, "seed {seed}: unmarked")
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        (skipped_ends, ends)
    }

    #[test]
    fn recorded_starts_always_get_their_end_and_skipped_ones_are_marked() {
        for seed in 1..=20u64 {
            random_run(seed, true);
            let (skipped, ends) = random_run(seed, false);
            // The level saves ends too: a good share of all ends are of skipped starts and
            // were not recorded.
            assert!(skipped > ends / 10, "seed {seed}: {skipped} of {ends}");
        }
    }

    #[test]
    fn a_slice_open_across_a_change_is_recorded_whole_or_not_at_all() {
        let c = Counts::new();
        let m = flag::MAYBE_UNSTARTED;
        // Started at level 3, ended after the level went down to 1: still ended, and it opens
        // no next slice.
        assert!(c.start(3, 3));
        assert_eq!(c.end(3, 1), Some((m, false)));
        // Started at level 1, so skipped; ended after the level went up: recorded, marked,
        // for the drainer to discard.
        assert!(!c.start(3, 1));
        assert_eq!(c.end(3, 3), Some((m, true)));
        // Nothing open: the counts are back to nothing, and a slice above the level is neither
        // started nor ended.
        assert!(!c.start(3, 1));
        assert_eq!(c.end(3, 1), None);
        assert!(c.start(3, 3));
        assert_eq!(c.end(3, 3), Some((0, true)));
    }

    #[test]
    fn an_anonymous_slice_ended_by_a_name_of_another_level_is_found() {
        let c = Counts::new();
        // `prefill` (level 1) opens the next slice, which the level-3 decode batch ends.
        c.anon_opened(1, 1);
        assert_eq!(c.end(3, 1), Some((flag::MAYBE_UNSTARTED, false)));
        assert_eq!(c.end(3, 1), None);
        c.anon_opened(1, 1);
        assert_eq!(c.end(3, 3), Some((0, true)));
        // Found, but not known to be what level 1 counted: its other counts stay as they were.
        assert_eq!(c.get(1).anon, 0);
    }

    #[test]
    fn batches_above_the_level_close_what_the_last_one_opened_then_stop() {
        let c = Counts::new();
        c.anon_opened(3, 4);
        assert_eq!(c.batch(3, 3, 4, 4), Some(0));
        assert_eq!(
            c.batch(3, 2, 4, 4),
            Some(flag::MAYBE_UNSTARTED | flag::CLOSE_ONLY)
        );
        assert_eq!(c.batch(3, 2, 4, 4), None);
        // Back at level 3: the first batch ends slices that no batch opened.
        assert_eq!(c.batch(3, 3, 4, 4), Some(flag::MAYBE_UNSTARTED));
        assert_eq!(c.batch(3, 3, 4, 3), Some(0));
        assert_eq!(
            c.get(3),
            Open {
                started: 3,
                recorded: 3,
                skipped: 0,
                anon: 3
            }
        );
    }
}
