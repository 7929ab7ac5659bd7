//! Fork: a process forked after `init` (a pre-forking server, Python's multiprocessing `fork`)
//! traces as a process of its own once it calls [`reinit_after_fork`]: its own rings, drainer
//! and exporter, the parent's configuration, new ids. Until then, or when that cannot be done
//! safely, its calls are dropped and counted (`Stats::calls_dropped_after_fork`, with one line
//! on stderr the first time). A child never waits on, frees or exports the parent's state.
//!
//! Why it is done this way:
//!
//! - The child has the parent's memory but only the thread that forked. Whatever another
//!   thread was doing at that instant is frozen: a lock it held stays held, a ring it was
//!   pushing into stays half-written, the drainer's tree and the exporter's runtimes and
//!   connections sit in memory with no thread to run them. So the child leaves all of it as it
//!   is. It never joins the parent's drainer or drops its exporter (either could wait forever,
//!   or flush the parent's spans a second time): the parent's session, and the copy of its
//!   `Guard`, are leaked. Their memory stays mapped, shared copy-on-write with the parent.
//! - What runs in the child right after the fork (the `pthread_atfork` handler) may do only
//!   async-signal-safe work, so it only stores atomics and moves a value: it switches the calls
//!   to "dropped and counted", forgets the pointers to the parent's ring registry and request
//!   directory (the child's first use makes new ones; they are made without a `OnceLock` so
//!   that none can be inherited half-made), and takes the forking thread's own ring out of its
//!   thread-local without giving it back, since giving back would touch the parent's registry.
//! - Starting again needs threads, allocation and an exporter, which only a safe point allows:
//!   Python's `os.register_at_fork(after_in_child=…)` hook (the binding's), or this module's
//!   [`reinit_after_fork`], which a Rust server calls in the child. Not lazily from a traced
//!   call: that may run anywhere, holding the program's own locks.
//! - Every lock the new session takes is tried, never waited for: the session slot, and the
//!   name table (the drainer resolves names through it; a new name registers through it). In
//!   the child a held lock has no thread left to release it, so a busy lock refuses the start
//!   (`InitError::Forked(ForkError::LockHeld)`) and the child stays "dropped and counted"; a
//!   free one can only be taken by the child's own threads from then on. Until the child
//!   starts, everything else that would take those locks (`stats`, `Name::intern`) tries them
//!   too, or stays away.
//! - The configuration is the parent's, kept by the session (without its exporter, which
//!   cannot be copied: it is made again from the environment's settings or
//!   `Config::exporter_factory`). A local trace file named with `{pid}` becomes the child's
//!   own; a fixed name gets the child's pid inserted before its extension, since two writers
//!   on one file would corrupt it.
//! - Span and trace ids derive from a per-process seed and ring positions (`ids`); the child's
//!   rings start again at the first positions, so it draws a new seed before it claims any.
//!   Its process tag changes with it: a context the parent made is a remote one to the child.
//! - The child's counters start from zero; `forks_reinitialised` says the session is a child's.
//! - slicetrace writes its own stderr lines with `write(2)`, not through `std::io::stderr`,
//!   whose lock a parent's thread may have held at the fork.
//!
//! Not covered: locks inside the exporter's own libraries (a new exporter makes new clients and
//! runtimes, but a process-wide lock of such a library that a parent's thread held at the fork
//! is beyond what can be tried from here), and a fork while slicetrace is first being set up
//! in the parent, before its handler is in place.

use crate::collector::stats::Stats;
use crate::error::{ForkError, InitError};
use crate::local::handle::{self, OFF, ORPHANED, STATE};
use crate::session::Guard;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

/// Set in a child forked from a process where slicetrace was set up, until it starts a session
/// of its own: its locks may be held by threads that do not exist.
static FORKED: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);
/// 1 once this process, a forked child, has started a session of its own.
static STARTED_IN_CHILD: AtomicU64 = AtomicU64::new(0);

/// Starts tracing again in a process forked from a traced one, with the configuration the
/// parent's session started with: the child's own rings, drainer and exporter; spans with the
/// child's `process.pid`; its own trace file. Call it in the child soon after the fork (before
/// the child's threads trace; their calls are dropped and counted until then), and keep the
/// `Guard` it returns, as `init`'s. The parent's guard, which the child holds a copy of, does
/// nothing there when dropped.
///
/// Refused, with the child left dropping and counting its calls: `ForkError::LockHeld` when a
/// lock the session needs was held by another thread at the fork, `ForkError::NoRecipe` when
/// the parent's exporter was given as a value, `ForkError::NoParentSession` when no session ran
/// at the fork (or this process already traces on its own); an exporter that cannot be made is
/// `InitError::Exporter` as at `init`. Never blocks.
pub fn reinit_after_fork() -> Result<Guard, InitError> {
    if !forked() {
        return Err(InitError::Forked(ForkError::NoParentSession));
    }
    crate::session::start_in_child(None)
}

#[inline]
pub(crate) fn forked() -> bool {
    FORKED.load(Ordering::Acquire)
}

/// Makes what is otherwise made lazily behind a `OnceLock`, then installs the fork handler: a
/// child must never inherit one of those half-made (it would wait on it forever).
pub(crate) fn prepare() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = handle::clock();
        let _ = crate::ids::process_seed();
        crate::name::prepare_table();
        // SAFETY: `in_child` is an `extern "C" fn` of this library, which is never unloaded,
        // and does only what a child may do right after fork (see its comment).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        if rc != 0 {
            stderr_line(
                "slicetrace: cannot install the fork handler; a forked child must not trace",
            );
        }
    });
}

extern "C" fn in_child() {
    // The child right after fork: only atomic stores and moves, no allocation, no lock.
    FORKED.store(true, Ordering::Release);
    DROPPED.store(0, Ordering::Relaxed);
    WARNED.store(false, Ordering::Relaxed);
    STARTED_IN_CHILD.store(0, Ordering::Relaxed);
    let was = STATE.load(Ordering::Relaxed);
    STATE.store(if was == OFF { OFF } else { ORPHANED }, Ordering::Release);
    crate::wire::ownership::forget_global();
    crate::local::directory::forget_directory();
    handle::forget_parent_ring();
}

/// The child's own session has started: its locks are its own from now on.
pub(crate) fn started_in_child() {
    STARTED_IN_CHILD.store(1, Ordering::Relaxed);
    FORKED.store(false, Ordering::Release);
}

pub(crate) fn fork_counts(s: &mut Stats) {
    s.calls_dropped_after_fork = DROPPED.load(Ordering::Relaxed);
    s.forks_reinitialised = STARTED_IN_CHILD.load(Ordering::Relaxed);
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

/// One line on stderr, written straight to the descriptor (see the module's notes).
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

/// For tests of a fork while another thread holds a lock that starting a session needs:
/// a thread takes `which` (`"names"`, `"session"`) and holds it for `hold`; returns once it is
/// held, false for an unknown name or a thread that could not start.
pub(crate) fn hold_lock(which: &str, hold: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let held = move || {
        let _ = tx.send(());
        std::thread::sleep(hold);
    };
    let spawned = match which {
        "names" => std::thread::Builder::new()
            .name("slicetrace-test-lock".into())
            .spawn(move || crate::name::while_table_locked(held)),
        "session" => std::thread::Builder::new()
            .name("slicetrace-test-lock".into())
            .spawn(move || crate::session::while_session_locked(held)),
        _ => return false,
    };
    spawned.is_ok() && rx.recv().is_ok()
}

#[cfg(test)]
mod tests {
    use crate::session::file_path;

    #[test]
    fn a_child_gets_a_trace_file_of_its_own() {
        // `{pid}` is each process's own pid; in the process that configured it too.
        assert_eq!(file_path("/t/run-{pid}.jsonl", 10, 10), "/t/run-10.jsonl");
        assert_eq!(file_path("/t/run-{pid}.jsonl", 10, 42), "/t/run-42.jsonl");
        // A fixed name is the configuring process's; a child's pid goes before the extension.
        assert_eq!(file_path("/t/spans.jsonl", 10, 10), "/t/spans.jsonl");
        assert_eq!(file_path("/t/spans.jsonl", 10, 42), "/t/spans.42.jsonl");
        assert_eq!(file_path("a.b/x.trace.json", 1, 7), "a.b/x.7.trace.json");
        assert_eq!(file_path("a.b/trace", 1, 7), "a.b/trace.7");
        assert_eq!(file_path(".hidden", 1, 7), ".hidden.7");
    }
}
