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
//!   skipped start of its level open or uncounted, or above the level) is marked uncertain: the
//!   drainer applies it only to a slice of the same level and name (or an anonymous one) open
//!   innermost for its request on the thread, and otherwise discards it, counted in
//!   `Stats::level_ends_discarded`, not as a loss.
//!
//! A skipped start is counted only while its end could be mistaken for another's: while the
//! thread may have a recorded slice of that level, or any anonymous slice, open. Otherwise,
//! the steady state above the level, it is not counted, the thread marks once that the level
//! has uncounted skips (so its ends at or below the level are marked uncertain from then on),
//! and calls above the level only read: the gate's bits of the levels above the process level
//! (see `local::handle`), and the thread's bit of levels with nothing to count
//! (`Counts::quiet`).
//!
//! What the counts cannot tell apart:
//! - inside one request on one thread, a slice nested in another of the same name and level,
//!   started while the level was below theirs and ended after it rose again: its end closes
//!   the outer one;
//! - a skipped slice still open when the level rose, whose end comes while slices of its level
//!   recorded since are open: the end lowers their count, and if the level goes below theirs
//!   again before all of them have ended, one of them loses its end; the drainer closes it
//!   with its request, unfinished (`slices_unfinished`). Both changes must fall within two
//!   overlapping slices' lives: with the level moving every twelve calls, 0.3 % of the ends in
//!   the randomised test here.
//!
//! The counts otherwise err towards recording: an end recorded for nothing costs its record
//! and is discarded. Slices left to a thread or request end to close keep their level's counts
//! up, and so do ends of anonymous slices on a thread with slices of the end's level open:
//! after the level goes down, such a thread keeps recording that level's ends (not its starts)
//! until its counts fall to nothing.
//!
//! Calls with no name of their own (`slice_add_attr`, the request and thread calls) are not
//! levelled; an attribute key's level is not used.

use crate::wire::record::flag;
use crate::Name;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The level of a name made without one: recorded unless the process level is 0.
pub const DEFAULT_NAME_LEVEL: u8 = 1;

/// The process level unless set: SGLang's default trace level, 3.
pub const DEFAULT_PROCESS_LEVEL: u8 = 3;

/// The highest level a name or the process may have.
pub const MAX_LEVEL: u8 = 7;

/// The process level (the low byte) and the session's epoch (the rest, counting session
/// starts): one word, so that a call reads both in one load. A thread's counts describe the
/// slices it opened in one session; its first counting call in a later session finds another
/// epoch and starts them afresh, so that slices left open in one session (an anonymous one a
/// request's last end opened, say) do not keep the next one's calls counting.
static LEVEL: AtomicU32 = AtomicU32::new(DEFAULT_PROCESS_LEVEL as u32);

/// Held while the level and the traced threads' copy of the levels above it (in the gate, see
/// `local::handle`) are written, so that the last level set is the one both hold.
static CHANGING: Mutex<()> = Mutex::new(());

/// A bit per level above `level`.
const fn above(level: u8) -> u8 {
    !((2u16 << level) - 1) as u8
}

/// Sets the process level (at most [`MAX_LEVEL`]; higher values mean `MAX_LEVEL`): from the
/// next call on, on every thread, slices and events of names above it are not recorded. A slice
/// open across the change is recorded whole or not at all (see the module docs).
pub fn set_level(level: u8) {
    let level = level.min(MAX_LEVEL);
    let _changing = CHANGING.lock().unwrap_or_else(|e| e.into_inner());
    let word = LEVEL.load(Ordering::Relaxed);
    LEVEL.store(word & !0xff | level as u32, Ordering::Relaxed);
    crate::local::handle::set_levels_above(above(level));
}

/// Runs `f`, which opens the gate of a new session, with the levels above the process level,
/// which no level change moves meanwhile; the session gets an epoch of its own.
pub(crate) fn with_levels_above<R>(f: impl FnOnce(u8) -> R) -> R {
    let _changing = CHANGING.lock().unwrap_or_else(|e| e.into_inner());
    let word = LEVEL.load(Ordering::Relaxed);
    let epoch = (word >> 8).wrapping_add(1) & EPOCHS;
    LEVEL.store(epoch << 8 | word & 0xff, Ordering::Relaxed);
    f(above(now()))
}

/// The epochs a word holds (24 bits).
const EPOCHS: u32 = 0x00ff_ffff;

/// The process level now.
pub fn level() -> u8 {
    now()
}

#[inline(always)]
fn now() -> u8 {
    LEVEL.load(Ordering::Relaxed) as u8
}

/// Whether a call of a name at `level` records now.
#[inline(always)]
pub(crate) fn records(level: u8) -> bool {
    level <= now()
}

/// Whether a start or end of `name` is above the process level while this thread has nothing
/// of its level to count (`Counts::quiet`): then it records and changes nothing. The name's
/// level bit against the gate's levels-above bits (`levels_above`, the gate's low byte, which
/// the caller has loaded), and one thread-local byte.
#[inline(always)]
pub(crate) fn skips_quietly(levels_above: u8, name: &Name) -> bool {
    // One branch for the three bytes: the thread-local load cannot fail (constant-initialised,
    // nothing to drop), so it costs less made every time than branched around.
    let quiet = COUNTS.try_with(|c| c.quiet.get()).unwrap_or(0);
    levels_above & name.level_bit() & quiet != 0
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

/// `Counts::marks`: a start of this level was skipped without being counted, so an end of it
/// at or below the level may end a slice that was never recorded. Never cleared: the thread
/// cannot know when that slice ends.
const UNCOUNTED: u8 = 1;
/// `Counts::marks`: a batch of this level was skipped since the last one recorded, so the next
/// one recorded ends slices that were never opened.
const BATCH_SKIPPED: u8 = 2;

/// The `recorded` field of a level's word.
const RECORDED: u64 = 0xffff_0000;

struct Counts {
    open: [Cell<u64>; LEVELS],
    /// Per level, `UNCOUNTED` and `BATCH_SKIPPED`.
    marks: [Cell<u8>; LEVELS],
    /// A bit per level with nothing counted open, `UNCOUNTED` marked, and no anonymous slice
    /// open on the thread: a call above the level need neither count nor mark anything.
    /// Cleared by whatever counts a slice of its level, or opens an anonymous one.
    quiet: Cell<u8>,
    /// The session epoch the counts are of (see `LEVEL`).
    epoch: Cell<u32>,
}

impl Counts {
    const fn new() -> Counts {
        Counts {
            open: [const { Cell::new(0) }; LEVELS],
            marks: [const { Cell::new(0) }; LEVELS],
            quiet: Cell::new(0),
            epoch: Cell::new(0),
        }
    }

    /// The counts of a thread's first counting call in session `epoch`: nothing open. A level
    /// still quiet keeps its `UNCOUNTED` mark: calls above the level that only read may have
    /// skipped starts of this session already.
    #[cold]
    fn renew(&self, epoch: u32) {
        let quiet = self.quiet.get();
        for (i, c) in self.open.iter().enumerate() {
            c.set(0);
            let kept = if quiet & 1 << i != 0 { UNCOUNTED } else { 0 };
            self.marks[i].set(kept);
        }
        self.epoch.set(epoch);
    }

    #[cfg(test)]
    fn get(&self, level: u8) -> Open {
        Open::load(&self.open[slot(level)])
    }

    /// Level slot `i` may be quiet now: nothing counted, nothing anonymous, and marked.
    fn settle(&self, i: usize) {
        if self.open[i].get() == 0 && !self.any_anon() && self.marked(i, UNCOUNTED) {
            self.quiet.set(self.quiet.get() | 1 << i);
        }
    }

    /// A call above the level of slot `i` has nothing to count (see `quiet`).
    #[inline(always)]
    fn quiet_now(&self, i: usize) -> bool {
        self.quiet.get() & 1 << i != 0
    }

    /// Slot `i` has a slice counted: no longer quiet.
    #[inline(always)]
    fn unquiet(&self, i: usize) {
        let q = self.quiet.get();
        if q & 1 << i != 0 {
            self.quiet.set(q & !(1 << i));
        }
    }

    fn any_anon(&self) -> bool {
        self.open.iter().any(|w| w.get() >> 48 != 0)
    }

    #[inline(always)]
    fn mark(&self, i: usize, m: u8) {
        let c = &self.marks[i];
        if c.get() & m == 0 {
            c.set(c.get() | m);
        }
    }

    #[inline(always)]
    fn marked(&self, i: usize, m: u8) -> bool {
        self.marks[i].get() & m != 0
    }

    /// Whether a skipped slice of level slot `i` need not be counted: nothing recorded is open
    /// on this thread that its end could be taken for.
    fn nothing_to_mistake(&self, i: usize) -> bool {
        self.open[i].get() & RECORDED == 0 && !self.any_anon()
    }

    #[inline(always)]
    fn start(&self, level: u8, now: u8) -> bool {
        self.start_slot(slot(level), level > now)
    }

    #[inline(always)]
    fn start_slot(&self, i: usize, above: bool) -> bool {
        if above {
            if !self.quiet_now(i) {
                self.skip(i);
            }
            return false;
        }
        let mut o = Open::load(&self.open[i]);
        add(&mut o.started, 1);
        add(&mut o.recorded, 1);
        o.store(&self.open[i]);
        self.unquiet(i);
        true
    }

    /// A start above the level, kept out of line so that the calls at the level stay small.
    #[inline(never)]
    fn skip(&self, i: usize) {
        if self.nothing_to_mistake(i) {
            self.mark(i, UNCOUNTED);
            self.settle(i);
            return;
        }
        let mut o = Open::load(&self.open[i]);
        add(&mut o.started, 1);
        add(&mut o.skipped, 1);
        o.store(&self.open[i]);
        self.unquiet(i);
    }

    fn start_anon(&self, level: u8, now: u8) -> bool {
        let rec = self.start(level, now);
        if rec {
            self.quiet.set(0);
            let i = slot(level);
            let mut o = Open::load(&self.open[i]);
            add(&mut o.anon, 1);
            o.store(&self.open[i]);
        }
        rec
    }

    /// `n` anonymous slices recorded, opened by a call of `level`.
    fn anon_opened(&self, level: u8, n: u32) {
        if n > 0 {
            self.quiet.set(0);
        }
        let i = slot(level);
        let mut o = Open::load(&self.open[i]);
        add(&mut o.started, n);
        add(&mut o.recorded, n);
        add(&mut o.anon, n);
        o.store(&self.open[i]);
    }

    /// `None`: skip the end; else the flags to record it with, and whether it is at or below
    /// the level (above it, an end opens no next slice).
    #[inline(always)]
    fn end(&self, level: u8, now: u8) -> Option<(u8, bool)> {
        self.end_slot(slot(level), level > now)
    }

    #[inline(always)]
    fn end_slot(&self, i: usize, above: bool) -> Option<(u8, bool)> {
        if above {
            if self.quiet_now(i) {
                return None;
            }
            return self.end_above(i);
        }
        let uncounted = self.marked(i, UNCOUNTED);
        let mut o = Open::load(&self.open[i]);
        if o.started == 0 {
            return self.end_of_another_level(true, uncounted);
        }
        let unsure = o.skipped > 0 || uncounted;
        sub(&mut o.started);
        o.clamp();
        o.store(&self.open[i]);
        Some((if unsure { flag::MAYBE_UNSTARTED } else { 0 }, true))
    }

    /// An end above the level, out of line as `skip`.
    #[inline(never)]
    fn end_above(&self, i: usize) -> Option<(u8, bool)> {
        let mut o = Open::load(&self.open[i]);
        if self.nothing_to_mistake(i) {
            // A skipped slice's end: counted ones are lowered, uncounted ones were never there.
            if self.open[i].get() != 0 {
                sub(&mut o.skipped);
                sub(&mut o.started);
                o.clamp();
                o.store(&self.open[i]);
            }
            self.settle(i);
            return None;
        }
        if o.started == 0 {
            return self.end_of_another_level(false, self.marked(i, UNCOUNTED));
        }
        let record = o.recorded > 0;
        if !record {
            // None recorded open: it ends a skipped one.
            sub(&mut o.skipped);
        }
        sub(&mut o.started);
        o.clamp();
        o.store(&self.open[i]);
        record.then_some((flag::MAYBE_UNSTARTED, false))
    }

    /// An end of a level with nothing counted open: an anonymous slice opened at another level,
    /// or (`uncounted`) a slice of its own level whose start was skipped uncounted, can be what
    /// it ends.
    #[cold]
    fn end_of_another_level(&self, at: bool, uncounted: bool) -> Option<(u8, bool)> {
        let unsure = !at || uncounted;
        for (i, cell) in self.open.iter().enumerate() {
            let mut o = Open::load(cell);
            if o.anon > 0 {
                sub(&mut o.anon);
                o.store(&self.open[i]);
                return Some((if unsure { flag::MAYBE_UNSTARTED } else { 0 }, at));
            }
        }
        at.then_some((if unsure { flag::MAYBE_UNSTARTED } else { 0 }, true))
    }

    /// A batch ends `items` slices of `level` and opens `unfinished` anonymous ones after
    /// them: `None` to skip it, else the flags of its ends. Above the level it is recorded only
    /// to close what earlier batches opened, and opens nothing (`flag::CLOSE_ONLY`).
    fn batch(&self, level: u8, now: u8, items: u32, unfinished: u32) -> Option<u8> {
        let (i, at) = (slot(level), level <= now);
        if !at && self.open[i].get() == 0 && !self.any_anon() {
            self.mark(i, BATCH_SKIPPED);
            return None;
        }
        let mut o = Open::load(&self.open[i]);
        let mut flags =
            if at && o.skipped == 0 && o.started as u32 >= items && o.started != u16::MAX {
                // The steady state: each item ends the slice the last batch opened.
                o.started -= items as u16;
                o.clamp();
                o.store(&self.open[i]);
                Some(if self.marked(i, UNCOUNTED) {
                    flag::MAYBE_UNSTARTED
                } else {
                    0
                })
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
            if self.marked(i, BATCH_SKIPPED) {
                self.marks[i].set(self.marks[i].get() & !BATCH_SKIPPED);
                flags = flags.map(|f| f | flag::MAYBE_UNSTARTED);
            }
            self.anon_opened(level, unfinished);
        } else {
            self.mark(i, BATCH_SKIPPED);
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
    // No level is above `MAX_LEVEL` (`Name::with_level` refuses one).
    (level & MAX_LEVEL) as usize
}

/// Runs `f` with this thread's counts and the process level now; on a thread being torn down,
/// which has no counts, `torn_down` decides from the level alone.
#[inline(always)]
fn decide<R>(f: impl FnOnce(&Counts, u8) -> R, torn_down: impl FnOnce(u8) -> R) -> R {
    let word = LEVEL.load(Ordering::Relaxed);
    let now = word as u8;
    COUNTS
        .try_with(|c| {
            if c.epoch.get() != word >> 8 {
                c.renew(word >> 8);
            }
            f(c, now)
        })
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

    /// What a random run saw: ends of skipped starts that were skipped too, all ends, and
    /// recorded starts whose end was lost in the one case the module docs name.
    struct Run {
        skipped_ends: u32,
        ends: u32,
        excused_losses: u32,
    }

    /// One thread's slices of several requests, named (and anonymous, with `anon`), with the
    /// level moving at random: an end recorded for a skipped start is always marked uncertain,
    /// and a recorded start gets its end recorded except in the case the module docs name: a
    /// skipped slice's end recorded while recorded slices of its level are open leaves the
    /// count short until none of them is open.
    fn random_run(seed: u64, anon: bool) -> Run {
        let c = Counts::new();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut now = DEFAULT_PROCESS_LEVEL;
        // Per request, its open slices innermost last, named or anonymous alike (an anonymous
        // one is ended by a name of the level that opened it).
        struct Slice {
            level: u8,
            recorded: bool,
        }
        let mut open: Vec<Vec<Slice>> = (0..4).map(|_| Vec::new()).collect();
        // Per level: a skipped slice's end was recorded while recorded ones were open.
        let mut short = [false; LEVELS];
        let mut run = Run {
            skipped_ends: 0,
            ends: 0,
            excused_losses: 0,
        };
        for _ in 0..50_000 {
            let r = rng.below(4) as usize;
            match rng.below(12) {
                0 => now = rng.below(5) as u8,
                k @ 1..=4 if k < 4 || anon => {
                    let l = 1 + rng.below(4) as u8;
                    // A slice nested in one of its own level within a request is a case the
                    // counts cannot tell apart (see the module docs).
                    if !open[r].iter().any(|s| s.level == l) {
                        let recorded = if k == 4 {
                            c.start_anon(l, now)
                        } else {
                            c.start(l, now)
                        };
                        open[r].push(Slice { level: l, recorded });
                    }
                }
                _ => {
                    let Some(s) = open[r].pop() else {
                        continue;
                    };
                    run.ends += 1;
                    let got = c.end(s.level, now);
                    let l = s.level as usize;
                    let recorded_open = |open: &[Vec<Slice>]| {
                        open.iter()
                            .flatten()
                            .any(|o| o.level == s.level && o.recorded)
                    };
                    if !s.recorded && got.is_some() && recorded_open(&open) {
                        short[l] = true;
                    }
                    match got.map(|(f, _)| f) {
                        None if s.recorded => {
                            assert!(short[l], "seed {seed}: a recorded slice lost its end");
                            run.excused_losses += 1;
                        }
                        None => run.skipped_ends += 1,
                        Some(f) if !s.recorded => {
                            assert_eq!(f, flag::MAYBE_UNSTARTED, "seed {seed}: unmarked")
                        }
                        Some(_) => {}
                    }
                    if !recorded_open(&open) {
                        short[l] = false;
                    }
                }
            }
        }
        run
    }

    #[test]
    fn recorded_starts_get_their_end_and_skipped_ones_are_marked() {
        let (mut losses, mut ends) = (0, 0);
        for seed in 1..=20u64 {
            for anon in [true, false] {
                let run = random_run(seed, anon);
                losses += run.excused_losses;
                ends += run.ends;
                if !anon {
                    // The level saves ends too: a good share of all ends are of skipped
                    // starts and were not recorded.
                    assert!(
                        run.skipped_ends > run.ends / 10,
                        "seed {seed}: {} of {}",
                        run.skipped_ends,
                        run.ends
                    );
                }
            }
        }
        // The level changes every twelve calls here; the named case needs two changes within
        // two slices' lives, and stays rare even so.
        assert!(losses * 200 < ends, "{losses} lost of {ends}");
    }

    /// The case the module docs name, step by step: the skipped slice ends after a rise, while
    /// a slice recorded after the rise is open, and the level then goes down again.
    #[test]
    fn the_levels_above_a_level_are_a_bit_each() {
        assert_eq!(above(0), 0xfe);
        assert_eq!(above(3), 0xf0);
        assert_eq!(above(MAX_LEVEL), 0);
        for level in 0..=MAX_LEVEL {
            for n in 0..=MAX_LEVEL {
                let name = Name::with_level("n", n);
                assert_eq!(
                    above(level) & name.level_bit() != 0,
                    n > level,
                    "{n} {level}"
                );
            }
        }
    }

    #[test]
    fn the_one_loss_named_in_the_docs() {
        let c = Counts::new();
        assert!(!c.start(3, 2)); // request A, skipped, not counted
        assert!(c.start(3, 3)); // request B, recorded after the rise
        assert_eq!(c.end(3, 3), Some((flag::MAYBE_UNSTARTED, true))); // A's end
        assert_eq!(c.end(3, 2), None); // B's end, after the level went down: lost
    }

    #[test]
    fn above_the_level_with_nothing_recorded_open_a_call_only_reads() {
        let c = Counts::new();
        assert!(!c.start(3, 2));
        let before = (
            c.open.each_ref().map(|x| x.get()),
            c.marks.each_ref().map(|x| x.get()),
        );
        for _ in 0..4 {
            assert!(!c.start(3, 2));
            assert_eq!(c.end(3, 2), None);
        }
        assert_eq!(c.batch(3, 2, 4, 4), None);
        assert!(!c.start(3, 2));
        let after = (
            c.open.each_ref().map(|x| x.get()),
            c.marks.each_ref().map(|x| x.get()),
        );
        assert_eq!(before.0, after.0);
        assert_eq!(after.1[3], UNCOUNTED | BATCH_SKIPPED);
        // So the calls skip it before the counts: the thread is quiet at level 3 only.
        assert_eq!(c.quiet.get(), 1 << 3);
        assert!(!c.start(3, 2) && c.end(3, 2).is_none());
        assert_eq!(c.quiet.get(), 1 << 3);
        // With an anonymous slice open on the thread, skips are counted again: an end of any
        // level may be the anonymous slice's.
        c.anon_opened(1, 1);
        assert_eq!(c.quiet.get(), 0);
        assert!(!c.start(3, 2));
        assert_eq!(c.get(3).skipped, 1);
        assert_eq!(c.end(3, 2), None);
        assert_eq!(c.end(3, 2), Some((flag::MAYBE_UNSTARTED, false)));
        assert!(!c.any_anon());
        // Nothing counted or anonymous open again: quiet once more after the next skip.
        assert_eq!(c.end(3, 2), None);
        assert_eq!(c.quiet.get(), 1 << 3);
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
        // A start was skipped uncounted above: an end at the level may be such a slice's.
        assert_eq!(c.end(3, 3), Some((m, true)));
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
