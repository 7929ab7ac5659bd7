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
//! - What runs in the child right after the fork (`pthread_atfork` handlers, one per part that
//!   holds such state, installed as slicetrace is first set up) may do only async-signal-safe
//!   work, so they only store atomics and move a value: the calls switch to "dropped and
//!   counted", the pointers to the parent's ring registry and request directory are forgotten
//!   (the child's first use makes new ones; they are made without a `OnceLock` so that none
//!   can be inherited half-made), and the forking thread's own ring is taken out of its
//!   thread-local without being given back, since giving back would touch the parent's
//!   registry.
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
//!   rings start again at the first positions, so its seed changes at the fork, before any of
//!   its threads claims a ring (the random part stays; the child's pid and the time are mixed
//!   in, which a fork handler may read). Its process tag changes with it: a context the parent
//!   made is a remote one to the child.
//! - The child's counters start from zero; `forks_reinitialised` says the session is a child's.
//! - A thread's label (`set_thread_info`) lives with its ring, and the forking thread's ring
//!   stays the parent's: in the child that thread is traced under its thread name until it
//!   sets a label again, as a new thread would be.
//! - slicetrace writes its own stderr lines with `write(2)`, not through `std::io::stderr`,
//!   whose lock a parent's thread may have held at the fork.
//!
//! Not covered: locks inside the exporter's own libraries (a new exporter makes new clients and
//! runtimes, but a process-wide lock of such a library that a parent's thread held at the fork
//! is beyond what can be tried from here), and a fork while slicetrace is first being set up
//! in the parent, before its handlers are in place.

use crate::error::{ForkError, InitError};
use crate::session::Guard;
use std::time::Duration;

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
    if !crate::fork::forked() {
        return Err(InitError::Forked(ForkError::NoParentSession));
    }
    crate::session::start_in_child(None)
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
