//! The calling thread's handle: its ring's producer, its id seed and the clock.

use crate::wire::ownership::{self, RingSlot};
use crate::wire::ring::Producer;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The one switch the hot path reads.
pub(crate) static ENABLED: AtomicBool = AtomicBool::new(false);

/// Records per thread ring unless configured: 512 KiB of 32-byte records.
pub const DEFAULT_RING_CAPACITY: usize = 16 * 1024;

/// Records per ring for rings made from now on.
pub(crate) static RING_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_RING_CAPACITY);

/// Calls made while the thread's handle was already destroyed (during thread teardown).
pub(crate) static LOST_NO_HANDLE: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

pub(crate) struct Local {
    pub producer: Producer,
    pub slot: Arc<RingSlot>,
    /// Seed of the span ids this tenure derives (see `ids`).
    pub seed: u64,
    pub clock: quanta::Clock,
}

impl Local {
    #[cold]
    fn claim() -> Local {
        let c = ownership::global().claim(RING_CAPACITY.load(Ordering::Relaxed));
        Local {
            seed: crate::ids::owner_seed(c.slot.index, c.owner),
            producer: c.producer,
            slot: c.slot,
            clock: clock().clone(),
        }
    }
}

struct Handle(UnsafeCell<Option<Local>>);

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(local) = self.0.get_mut().take() {
            ownership::global().detach(&local.slot, local.producer);
        }
    }
}

thread_local! {
    static HANDLE: Handle = const { Handle(UnsafeCell::new(None)) };
}

/// Runs `f` with this thread's handle, claiming a ring on first use. `None` (and a counted loss)
/// when the thread is being torn down and its handle is gone.
#[inline(always)]
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    let r = HANDLE.try_with(|h| {
        // SAFETY: the handle is reachable only from its own thread, and nothing called inside
        // `f` reaches `with_local` again, so this is the only reference to it.
        let slot = unsafe { &mut *h.0.get() };
        let local = match slot {
            Some(l) => l,
            None => slot.insert(Local::claim()),
        };
        f(local)
    });
    match r {
        Ok(v) => Some(v),
        Err(_) => {
            LOST_NO_HANDLE.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
