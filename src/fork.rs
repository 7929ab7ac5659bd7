//! Whether this process is a forked child that has not started tracing again, and what it
//! counts meanwhile. Shared by every room; why the child does what it does is in `process`.
//!
//! Each room resets its own state in the child with a `pthread_atfork` handler of its own
//! (the ring registry, the request directory, the calling thread's handle), so that none of
//! them reaches up into another; this one marks the process as forked.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Once;

/// A process-wide value made on first use, and made anew on first use in a forked child: the
/// parent's copy is left as it is there (its threads do not exist, so whatever they held in it
/// stays held, and nothing in the child may touch it). Lock-free on purpose: a `OnceLock` that
/// a parent's thread was initialising at the fork would stay "being initialised" in the child
/// forever, and every later use would wait on it. Two threads racing to make it each make one;
/// the loser's is dropped unused. A value is never freed, so the reference lives for the process.
pub(crate) struct PerProcess<T> {
    ptr: AtomicPtr<T>,
    handler: Once,
}

impl<T> PerProcess<T> {
    pub const fn new() -> Self {
        PerProcess {
            ptr: AtomicPtr::new(std::ptr::null_mut()),
            handler: Once::new(),
        }
    }

    /// The value, made by `make` if this process has none yet. `forget` is the fork handler
    /// that calls [`forget`](Self::forget) on this value (one `extern "C" fn` per value, as
    /// `pthread_atfork` takes no argument).
    #[inline]
    pub fn get(&'static self, make: fn() -> T, forget: unsafe extern "C" fn()) -> &'static T {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a non-null pointer here came from `Box::into_raw` in `make` and is never
            // freed.
            return unsafe { &*p };
        }
        self.make(make, forget)
    }

    #[cold]
    fn make(&'static self, make: fn() -> T, forget: unsafe extern "C" fn()) -> &'static T {
        let value = make_once(&self.ptr, make);
        self.handler.call_once(|| {
            install();
            at_fork_in_child(forget);
        });
        value
    }

    /// In a forked child, right after the fork (an atomic store): its first use makes a new one.
    pub fn forget(&self) {
        self.ptr.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// The value `slot` points to, made by `make` and published there if it points nowhere yet;
/// without a lock, for the reason [`PerProcess`] gives. Two threads racing each make one; the
/// loser's is dropped unused. A published value is never freed.
pub(crate) fn make_once<T>(slot: &'static AtomicPtr<T>, make: fn() -> T) -> &'static T {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: a non-null pointer in `slot` came from `Box::into_raw` below, never freed.
        return unsafe { &*p };
    }
    let mine = Box::into_raw(Box::new(make()));
    let p = match slot.compare_exchange(
        std::ptr::null_mut(),
        mine,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => mine,
        Err(theirs) => {
            // SAFETY: `mine` came from `Box::into_raw` just above and was never shared.
            drop(unsafe { Box::from_raw(mine) });
            theirs
        }
    };
    // SAFETY: `p` is the pointer `slot` holds, from `Box::into_raw`, never freed.
    unsafe { &*p }
}

/// Set in a child forked from a process where slicetrace was set up, until it starts a session
/// of its own: its locks may be held by threads that do not exist.
static FORKED: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);
/// 1 once this process, a forked child, has started a session of its own.
static STARTED_IN_CHILD: AtomicU64 = AtomicU64::new(0);

#[inline]
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Acquire)
}

/// Installs the handler that marks a child as forked (once per process; a child inherits it).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| at_fork_in_child(in_child));
}

/// Registers `handler` to run in every child forked from now on.
pub(crate) fn at_fork_in_child(handler: unsafe extern "C" fn()) {
    // SAFETY: handlers are `extern "C" fn`s of this library, which is never unloaded, and each
    // does only what a child may do right after fork (atomic stores and moves).
    let rc = unsafe { libc::pthread_atfork(None, None, Some(handler)) };
    if rc != 0 {
        stderr_line("slicetrace: cannot install a fork handler; a forked child must not trace");
    }
}

extern "C" fn in_child() {
    // The child right after fork: only atomic stores (and the seed's two system calls), no
    // allocation, no lock.
    FORKED.store(true, Ordering::Release);
    crate::ids::reseed_in_child();
    DROPPED.store(0, Ordering::Relaxed);
    WARNED.store(false, Ordering::Relaxed);
    STARTED_IN_CHILD.store(0, Ordering::Relaxed);
}

/// The child's own session has started: its locks are its own from now on.
pub(crate) fn started_in_child() {
    STARTED_IN_CHILD.store(1, Ordering::Relaxed);
    FORKED.store(false, Ordering::Release);
}

/// Calls dropped since the fork, and whether this child started a session of its own (0 or 1).
pub(crate) fn counts() -> (u64, u64) {
    (
        DROPPED.load(Ordering::Relaxed),
        STARTED_IN_CHILD.load(Ordering::Relaxed),
    )
}

/// A call made in a forked child that has not started tracing again.
#[cold]
#[inline(never)]
pub(crate) fn dropped_call() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
    if !WARNED.swap(true, Ordering::Relaxed) {
        stderr_line(&format!(
            "slicetrace: process {} was forked from a traced one and does not trace until it \
             starts again (slicetrace::process::reinit_after_fork); its calls are dropped and \
             counted in Stats::calls_dropped_after_fork",
            std::process::id()
        ));
    }
}

/// One line on stderr, written straight to the descriptor: `std::io::stderr` has a lock, which
/// one of the parent's threads may have held at the fork.
pub(crate) fn stderr_line(text: &str) {
    let mut line = Vec::with_capacity(text.len() + 1);
    line.extend_from_slice(text.as_bytes());
    line.push(b'\n');
    let mut rest = &line[..];
    while !rest.is_empty() {
        // SAFETY: `rest` is a live byte slice, and `write` reads at most its length from it.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {
            continue;
        } else {
            return;
        }
    }
}
