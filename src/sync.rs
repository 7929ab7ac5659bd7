//! Atomics and cells the ring uses, swapped for loom's under `--cfg slicetrace_loom` so its protocol can be
//! model-checked (`RUSTFLAGS="--cfg slicetrace_loom" cargo test --release --lib loom`).

#[cfg(slicetrace_loom)]
pub use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(slicetrace_loom))]
pub use std::sync::atomic::{fence, AtomicU64, Ordering};

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
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
