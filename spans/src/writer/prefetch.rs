//! A hint to the CPU to start loading memory that is about to be read.
//!
//! The writer takes its held events in time order, but they were filed in arrival order: each
//! one, and the span it holds, is cold by then. Asking for them a few events ahead overlaps
//! those misses instead of paying them one after another.

/// Starts loading the cache line at `p`. Never reads through `p` (any address is allowed) and
/// does nothing on targets without the hint.
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE, which the instruction needs, is part of every x86_64 target; a prefetch
    // does not fault or read through the address, whatever it is.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading every cache line of `*v` (not what it points to). Never reads `*v`.
#[inline(always)]
pub(super) fn prefetch_value<T: ?Sized>(v: &T) {
    let p: *const u8 = (v as *const T).cast();
    for line in 0..std::mem::size_of_val(v).div_ceil(64) {
        prefetch(p.wrapping_add(line * 64));
    }
}
