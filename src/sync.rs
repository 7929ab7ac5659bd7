//! The atomics, locks and cells of the ring and its ownership, swapped for loom's under
//! `--cfg slicetrace_loom` so their protocols can be model-checked
//! (`RUSTFLAGS="--cfg slicetrace_loom" cargo test --release --no-default-features --lib loom`).

#[cfg(slicetrace_loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(slicetrace_loom)]
pub use loom::sync::{Mutex, MutexGuard};
#[cfg(not(slicetrace_loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(slicetrace_loom))]
pub use std::sync::{Mutex, MutexGuard};

#[cfg(slicetrace_loom)]
pub use loom::cell::UnsafeCell as SlotCell;

/// `UnsafeCell` with loom's closure-style access, so ring code is the same in both builds.
#[cfg(not(slicetrace_loom))]
#[repr(transparent)]
pub struct SlotCell<T>(std::cell::UnsafeCell<T>);

/// `n` cells of all-zero `T` from zeroed memory: the allocator hands out pages the kernel makes
/// resident only as slots are first written, so a ring costs memory as it is used, not as it is
/// made (a burst of short-lived threads each touch a few pages of theirs).
#[cfg(not(slicetrace_loom))]
pub fn zeroed_cells<T: bytemuck::Zeroable>(n: usize) -> Box<[SlotCell<T>]> {
    let b: Box<[T]> = bytemuck::zeroed_slice_box(n);
    // SAFETY: `SlotCell<T>` is `repr(transparent)` over `UnsafeCell<T>`, which has the same
    // layout as `T`, so `[T]` and `[SlotCell<T>]` of one length have one layout; the box is
    // rebuilt from the pointer and length `into_raw` gave, for the same global allocator.
    unsafe { Box::from_raw(Box::into_raw(b) as *mut [SlotCell<T>]) }
}

#[cfg(slicetrace_loom)]
pub fn zeroed_cells<T: bytemuck::Zeroable>(n: usize) -> Box<[SlotCell<T>]> {
    (0..n).map(|_| SlotCell::new(T::zeroed())).collect()
}

#[cfg(not(slicetrace_loom))]
impl<T> SlotCell<T> {
    pub fn new(v: T) -> SlotCell<T> {
        SlotCell(std::cell::UnsafeCell::new(v))
    }

    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Lets another thread run before a retry: a short sleep, or under loom a yield, so that a
/// model explores the other threads' steps instead of a clock.
pub fn pause() {
    #[cfg(slicetrace_loom)]
    loom::thread::yield_now();
    #[cfg(not(slicetrace_loom))]
    std::thread::sleep(std::time::Duration::from_micros(20));
}

/// Locks `m`; a lock a panicking thread held is taken as it was left.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
