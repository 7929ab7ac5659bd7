//! The allocator the `slicetrace` command and its benchmarks run on, and its one setting.

/// The global allocator to declare: conversion allocates and frees many small strings across
/// its reading and writing threads.
pub type Allocator = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` (`mimalloc.h`, the same in
/// the v2 and v3 sources the allocator crate builds), which the bindings do not name.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory for reuse instead of handing it back to the OS once it has been free for
/// a while (a second in the mimalloc built here). Converting, the threads free and allocate
/// megabytes a second; handed back and faulted in again, the pages cost a thousand page faults
/// per million spans (157 when kept), each zeroing up to 2 MiB. The peak memory is unchanged;
/// it is only not given back before the end.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` takes any option number and value; it only stores the value
    // (mimalloc reads options racily by design, so setting one while threads run is allowed).
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // The option starts at the purge delay's default (`options.c`: 1000 ms in v3, 10 in
        // v2), which none of its neighbours has: the number names that option.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reading an option has no requirement.
            let start = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
            assert!(start == 1000 || start == 10, "{start}");
        }
        keep_freed_memory();
        // SAFETY: as above.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, -1);
    }
}
