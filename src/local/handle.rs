//! The calling thread's handle: its ring's producer, its id seed and the clock.

use crate::ids::Rid;
use crate::wire::ownership::{self, Registry, RingSlot};
use crate::wire::ring::Producer;
use crossbeam_utils::CachePadded;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The one word every call reads. `OFF` (0) while tracing is off. Else bit 0 is set; bits 1 to
/// 7 have a bit per trace level above the process level (level 0 never is, so bit 0 is free);
/// and bits 8 to 63 hold the sampler's bound on request keys, shifted up by 8: 2^63 (the sign
/// bit) for every request, or a ratio's bound below it (see `sampling`). One word, so that a
/// call for a request left out, or of a name above the level, costs one load of it as a call
/// with tracing off does; on a cache line of its own, so that no counter written beside it
/// makes every thread's call miss.
pub(crate) static GATE: CachePadded<AtomicU64> = CachePadded::new(AtomicU64::new(OFF));
pub(crate) const OFF: u64 = 0;
const ON: u64 = 1;
const LEVELS_ABOVE: u64 = 0xfe;

/// The gate for a sampler's bound (`sampling::install`) and the levels above the process level.
pub(crate) fn gate(bound: u64, levels_above: u8) -> u64 {
    debug_assert!(bound <= crate::sampling::EVERY);
    bound << 8 | (levels_above as u64 & LEVELS_ABOVE) | ON
}

/// Puts new levels above the process level into the gate, if tracing is on.
pub(crate) fn set_levels_above(levels_above: u8) {
    let _ = GATE.fetch_update(Ordering::Release, Ordering::Relaxed, |g| {
        (g != OFF).then_some(g & !LEVELS_ABOVE | (levels_above as u64 & LEVELS_ABOVE))
    });
}

/// Whether a gate lets every request through: its bound is `sampling::EVERY`.
#[inline(always)]
pub(crate) fn every(gate: u64) -> bool {
    (gate as i64) < 0
}

/// Whether a gate that is on lets `rid` through. The key's low byte is all ones, so it is
/// below the gate exactly when the key is below the bound, whatever bits 0 to 7 hold.
#[inline(always)]
pub(crate) fn passes(gate: u64, rid: Rid) -> bool {
    every(gate) || (crate::sampling::key(rid) << 8 | 0xff) < gate
}

/// Set in a child forked while a session ran, until it starts its own. The switch stays on
/// there, so that a call with tracing off still costs one load and a branch: every thread of
/// the child is without a ring (the forking thread's is let go of at the fork), and the claim
/// a call then makes refuses, counting the call as dropped. Only that cold path reads this.
pub(crate) static ORPHANED: AtomicBool = AtomicBool::new(false);

/// Records per thread ring unless configured: 512 KiB of 32-byte records.
pub const DEFAULT_RING_CAPACITY: usize = 16 * 1024;

/// Records per ring for rings made from now on.
pub(crate) static RING_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_RING_CAPACITY);

/// Calls made while the thread's handle was already destroyed (during thread teardown).
pub(crate) static LOST_NO_HANDLE: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
pub(crate) fn enabled() -> bool {
    GATE.load(Ordering::Relaxed) != OFF
}

/// Whether a call for `rid` records: tracing is on and the sampler keeps the request. Off
/// returns before the key is made, and so does a gate for every request, which saves the
/// multiply on every call of a process that keeps them all.
#[inline(always)]
pub(crate) fn admits(rid: Rid) -> bool {
    let gate = GATE.load(Ordering::Relaxed);
    gate != OFF && passes(gate, rid)
}

/// [`admits`] for a call of `name`: also not above the level with nothing to count on this
/// thread (`level::skips_quietly`), from the same load of the gate.
#[inline(always)]
pub(crate) fn admits_at(rid: Rid, name: &crate::Name) -> bool {
    let gate = GATE.load(Ordering::Relaxed);
    gate != OFF && passes(gate, rid) && !crate::level::skips_quietly(gate as u8, name)
}

/// A ratio sampler decides on the traced threads.
pub(crate) fn filtering() -> bool {
    let gate = GATE.load(Ordering::Relaxed);
    gate != OFF && !every(gate)
}

pub(crate) fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

pub(crate) struct Local {
    pub producer: Producer,
    pub slot: Arc<RingSlot>,
    /// The registry the ring came from, to give it back to (the process's registry is
    /// replaced in a forked child).
    registry: &'static Registry,
    /// Seed of the span ids this tenure derives (see `ids`).
    pub seed: u64,
    clock: quanta::Clock,
    /// quanta reads the TSC for this clock: read it here, inlined, instead of through
    /// `quanta::Clock::raw`, a call and a match on the clock's kind per record.
    tsc: bool,
}

impl Local {
    /// `None` (and the call counted as dropped) in a forked child that has not started again.
    #[cold]
    fn claim() -> Option<Local> {
        if ORPHANED.load(Ordering::Acquire) {
            crate::fork::dropped_call();
            return None;
        }
        install_fork_handler();
        let registry = ownership::global();
        let c = registry.claim(RING_CAPACITY.load(Ordering::Relaxed));
        let _ = HAS_LOCAL.try_with(|h| h.set(true));
        Some(Local::of(registry, c))
    }

    fn of(registry: &'static Registry, c: ownership::Claim) -> Local {
        Local {
            seed: crate::ids::owner_seed(c.slot.index, c.owner),
            producer: c.producer,
            slot: c.slot,
            registry,
            clock: clock().clone(),
            tsc: cfg!(target_arch = "x86_64")
                && crate::collector::clock::source(clock())
                    == crate::collector::clock::ClockSource::Tsc,
        }
    }

    /// A raw tick, the same reading `quanta::Clock::raw` gives.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if self.tsc {
            // SAFETY: `rdtsc` exists on every x86_64 processor and has no preconditions.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        self.clock.raw()
    }
}

struct Handle(UnsafeCell<Option<Local>>);

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = HAS_LOCAL.try_with(|h| h.set(false));
        if let Some(local) = self.0.get_mut().take() {
            local.registry.detach(&local.slot, local.producer);
        }
    }
}

thread_local! {
    static HANDLE: Handle = const { Handle(UnsafeCell::new(None)) };
    /// Whether this thread's `HANDLE` holds a ring. Constant-initialised with nothing to drop,
    /// so reading it is a plain thread-local load with no lazy registration: the fork handler,
    /// where nothing may allocate, reads it to know that `HANDLE` is live and safe to touch.
    static HAS_LOCAL: Cell<bool> = const { Cell::new(false) };
}

/// Installs this room's fork handler (once per process; a child inherits it).
pub(crate) fn install_fork_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        crate::fork::install();
        crate::fork::at_fork_in_child(in_child);
    });
}

/// In a forked child, right after the fork, on the thread that forked (the only one there):
/// the calls stop (counted, if a session was running: see `ORPHANED`), and this thread lets go
/// of the ring it had in the parent, so that its next call claims one of the child's own. The
/// old `Local` is forgotten, not dropped: giving its ring back would touch the parent's
/// registry. No allocation and no lock: `HANDLE` is touched only when `HAS_LOCAL` says it is
/// already initialised, and forgetting is a move.
extern "C" fn in_child() {
    if enabled() {
        ORPHANED.store(true, Ordering::Release);
    }
    let had = HAS_LOCAL.try_with(|h| h.replace(false)).unwrap_or(false);
    if had {
        let _ = HANDLE.try_with(|h| {
            // SAFETY: the handle is reachable only from its own thread, which is here in the
            // fork handler and so inside no `with_local` call.
            let old = unsafe { (*h.0.get()).take() };
            std::mem::forget(old);
        });
    }
}

/// Runs `f` with this thread's handle, claiming a ring on first use. `None` (and a counted loss)
/// when the thread is being torn down and its handle is gone, or in a forked child that has
/// not started tracing again (counted as dropped).
#[inline(always)]
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    let r = HANDLE.try_with(|h| {
        // SAFETY: the handle is reachable only from its own thread, and nothing called inside
        // `f` reaches `with_local` again, so this is the only reference to it.
        let slot = unsafe { &mut *h.0.get() };
        let local = match slot {
            Some(l) => l,
            None => slot.insert(Local::claim()?),
        };
        Some(f(local))
    });
    match r {
        Ok(v) => v,
        Err(_) => {
            LOST_NO_HANDLE.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inlined read is quanta's own reading: it falls between two of quanta's on this
    /// thread, so the drainer's calibration applies to it unchanged.
    #[test]
    fn the_inlined_read_is_quantas_raw_reading() {
        let registry = ownership::global();
        let local = Local::of(registry, registry.claim(64));
        for _ in 0..1000 {
            let a = clock().raw();
            let t = local.now();
            let b = clock().raw();
            assert!(a <= t && t <= b, "{a} <= {t} <= {b}");
        }
        let q = clock().raw();
        let t = local.now();
        // The same scale: a second apart would be billions of ticks, not a few thousand.
        assert!(t.wrapping_sub(q) < 10_000_000, "{q} then {t}");
        local.registry.detach(&local.slot, local.producer);
    }
}
