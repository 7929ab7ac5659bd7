//! The calling thread's handle: its ring's producer, its id seed and the clock.

use crate::ids::Rid;
use crate::wire::ownership::{self, Registry, RingSlot};
use crate::wire::ring::Producer;
use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The one switch the hot path reads: `OFF`, `ALL` (every request), or the bound of a ratio
/// sampler's keys (a call records only for a request whose key is below it; see `sampling`).
/// One word, so that a call for a request left out costs one load, as a call with tracing off.
pub(crate) static GATE: AtomicU64 = AtomicU64::new(OFF);
pub(crate) const OFF: u64 = 0;
pub(crate) const ALL: u64 = u64::MAX;

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

/// Whether a call for `rid` records: tracing is on and the sampler keeps the request. Every key
/// is at least 1 and below `ALL`, so one compare answers for on and a ratio alike; off returns
/// before the key is made.
#[inline(always)]
pub(crate) fn admits(rid: Rid) -> bool {
    let gate = GATE.load(Ordering::Relaxed);
    gate != OFF && crate::sampling::key(rid) < gate
}

/// A ratio sampler decides on the traced threads.
pub(crate) fn filtering() -> bool {
    !matches!(GATE.load(Ordering::Relaxed), OFF | ALL)
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
