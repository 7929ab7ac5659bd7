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
pub struct SlotCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(slicetrace_loom))]
impl<T> SlotCell<T> {
    pub fn new(v: T) -> Self {
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
