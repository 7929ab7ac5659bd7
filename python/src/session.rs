//! The process's tracing session as Python sees it: `process_tracing_init`, `shutdown`,
//! `flush`, `stats`, and what a process forked from a traced one does.
//!
//! Every lock here is taken with the interpreter released (`Python::detach`), so a thread that
//! waits for one never holds the GIL that the holder may need.
//!
//! Fork: the child has the parent's memory but only the thread that forked, so the session it
//! holds is the parent's, with no drainer behind it. A `pthread_atfork` handler stops the calls
//! at once (only atomic stores: nothing else is allowed there); then the package's
//! `os.register_at_fork(after_in_child=…)` hook, which runs in the child before any other
//! Python code, with the GIL and no other thread, starts the child's own session from the
//! parent's configuration (the core's `process::reinit_after_fork`). Nothing can wait there,
//! and nothing does: this module's own lock is tried, and the core tries its own. Refused (a
//! lock held by one of the parent's threads at the fork, which stays held), the child keeps
//! the calls off, warns once, and counts each in `calls_dropped_after_fork`. Either way the
//! parent's guard is forgotten, never shut down: its drainer does not exist in the child, and
//! its spans are the parent's to export.

use crate::context;
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use slicetrace::{Config, Guard, Stats};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once, TryLockError};
use std::time::Duration;

create_exception!(
    _native,
    InitError,
    PyRuntimeError,
    "Tracing could not start: a bad endpoint or OTEL_* value, or an exporter that cannot be made."
);

/// The hot calls record while this is set: from a successful init to the start of shutdown,
/// and never in a process forked from a traced one.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// A core session exists in this process (set before `ACTIVE`, cleared after shutdown).
static LIVE: AtomicBool = AtomicBool::new(false);
/// This process was forked while a session was live, and has not started its own.
static FORKED: AtomicBool = AtomicBool::new(false);
/// The session was started by the fork hook, and `process_tracing_init` has not been called
/// since: the first call is the one a worker makes at start-up, and keeps it quietly.
static INHERITED: AtomicBool = AtomicBool::new(false);
static FORK_WARNED: AtomicBool = AtomicBool::new(false);
static DROPPED_AFTER_FORK: AtomicU64 = AtomicU64::new(0);
static GUARD: Mutex<Option<Guard>> = Mutex::new(None);
/// Why a forked child could not start its own session (read with the GIL held, as it is set).
static REFUSAL: Mutex<String> = Mutex::new(String::new());
/// `context::REFUSED` when the session started: the counters are the session's, as the core's.
static REFUSED_BASE: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// What a traced call does while tracing is off: nothing, except in a forked child, where it
/// is counted (and the first one warns).
#[cold]
pub fn off(py: Python<'_>) {
    if FORKED.load(Ordering::Relaxed) {
        DROPPED_AFTER_FORK.fetch_add(1, Ordering::Relaxed);
        warn_forked(py);
    }
}

fn warn_forked(py: Python<'_>) {
    if !FORK_WARNED.swap(true, Ordering::Relaxed) {
        let why = match REFUSAL.try_lock() {
            Ok(r) if !r.is_empty() => r.clone(),
            _ => "it could not start tracing again".to_owned(),
        };
        let msg = format!(
            "slicetrace: this process was forked from a traced one and does not trace ({why}); \
             its tracing calls are dropped (counted in stats()['calls_dropped_after_fork'])"
        );
        let Ok(msg) = std::ffi::CString::new(msg) else {
            return;
        };
        // A warnings filter set to "error" must not turn a tracing call into a failure.
        let _ = PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &msg, 1);
    }
}

extern "C" fn after_fork_in_child() {
    // Only atomic stores: this runs in the child right after fork, where just
    // async-signal-safe work is allowed. The child starts again later, in `_after_fork`.
    if LIVE.load(Ordering::Relaxed) {
        ACTIVE.store(false, Ordering::Relaxed);
        FORKED.store(true, Ordering::Relaxed);
        INHERITED.store(false, Ordering::Relaxed);
        FORK_WARNED.store(false, Ordering::Relaxed);
        DROPPED_AFTER_FORK.store(0, Ordering::Relaxed);
    }
}

/// The package's `after_in_child` fork hook: starts the child's own session from the parent's
/// configuration; true if it did. Runs with the GIL as the child's only thread, so nothing is
/// waited for: every lock is tried.
#[pyfunction]
pub fn _after_fork() -> bool {
    if !FORKED.load(Ordering::Relaxed) {
        return false;
    }
    let refuse = |why: String| {
        if let Ok(mut r) = REFUSAL.try_lock() {
            *r = why;
        }
        false
    };
    let mut g = match GUARD.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return refuse(GUARD_HELD.to_owned()),
    };
    // The parent's: its drainer is not in this process.
    if let Some(parent) = g.take() {
        std::mem::forget(parent);
    }
    match slicetrace::process::reinit_after_fork() {
        Ok(guard) => {
            *g = Some(guard);
            REFUSED_BASE.store(context::REFUSED.load(Ordering::Relaxed), Ordering::Relaxed);
            context::forget_rooms();
            INHERITED.store(true, Ordering::Relaxed);
            FORKED.store(false, Ordering::Relaxed);
            ACTIVE.store(true, Ordering::Release);
            true
        }
        Err(e) => refuse(error_text(&e)),
    }
}

/// Holds a lock that starting a session needs, from another thread, for `seconds`: for the
/// tests of a fork at such a moment. Returns once it is held.
#[pyfunction]
pub fn _hold_lock(py: Python<'_>, which: &str, seconds: f64) -> bool {
    if !seconds.is_finite() || seconds < 0.0 {
        return false;
    }
    if which == "guard" {
        let hold = Duration::from_secs_f64(seconds);
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().spawn(move || {
            let _g = GUARD.lock().unwrap_or_else(|e| e.into_inner());
            let _ = tx.send(());
            std::thread::sleep(hold);
        });
        return spawned.is_ok() && py.detach(move || rx.recv().is_ok());
    }
    let which = which.to_owned();
    py.detach(|| slicetrace::__private::hold_lock(&which, Duration::from_secs_f64(seconds)))
}

pub fn install_fork_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the handler is an `extern "C" fn` that lives for the whole process (this
        // library is never unloaded once imported) and does only atomic stores.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

fn env_millis(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{name}={v:?}: expected a whole number")),
    }
}

/// An error and its sources, one line: what failed, then why.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// The instrumentation scope of SGLang's tracer (`trace.get_tracer("sglang server")`).
const SGLANG_SCOPE: &str = "sglang server";

/// The configuration `process_tracing_init` starts: the endpoint argument as if it were
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else the `OTEL_*` variables, else the local file.
fn config(endpoint: Option<&str>, server_name: &str) -> Result<Config, String> {
    let endpoint = endpoint
        .map(str::trim)
        .filter(|e| !e.is_empty() && *e != "None");
    let mut cfg = Config::from_vars(server_name, |k| match endpoint {
        Some(e) if k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some(e.to_owned()),
        _ => std::env::var(k).ok(),
    })
    .map_err(|e| error_text(&e))?;
    // The scope SGLang's tracer is made with: queries and dashboards built on SGLang's spans
    // keep matching these.
    cfg.scope_name = SGLANG_SCOPE.to_owned();
    // SGLang's own batch settings, read as its module reads them.
    if let Some(ms) = env_millis("SGLANG_OTLP_EXPORTER_SCHEDULE_DELAY_MILLIS")? {
        cfg.export_interval = Duration::from_millis(ms);
    }
    if let Some(n) = env_millis("SGLANG_OTLP_EXPORTER_MAX_EXPORT_BATCH_SIZE")? {
        let queue_spans = cfg.export_queue_batches * cfg.max_export_batch;
        cfg.max_export_batch = (n as usize).max(1);
        cfg.export_queue_batches = queue_spans.div_ceil(cfg.max_export_batch).max(1);
    }
    Ok(cfg)
}

/// Starts tracing in this process (SGLang: once per process). The endpoint (`host:port`,
/// `http(s)://…`) or the standard `OTEL_EXPORTER_OTLP_*` variables choose OTLP; with neither,
/// spans go to the local file `SLICETRACE_FILE` (default `slicetrace-{pid}.trace.json`).
/// A second call while tracing runs keeps the running session. In a forked child the first
/// call keeps, quietly, the session started at the fork from the parent's configuration; in
/// one that could not start one then, it tries again with its own.
#[pyfunction]
#[pyo3(signature = (otlp_endpoint, server_name))]
pub fn process_tracing_init(
    py: Python<'_>,
    otlp_endpoint: Option<&str>,
    server_name: &str,
) -> PyResult<()> {
    if FORKED.load(Ordering::Relaxed) {
        return start_again_in_child(py, otlp_endpoint, server_name);
    }
    if INHERITED.swap(false, Ordering::Relaxed) {
        // A forked worker's start-up call: its session already runs, from the parent's
        // configuration.
        return Ok(());
    }
    let cfg = config(otlp_endpoint, server_name)
        .map_err(|e| InitError::new_err(format!("process_tracing_init: {e}")))?;
    let started = py.detach(|| {
        let mut g = GUARD.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_some() {
            return Ok(false);
        }
        LIVE.store(true, Ordering::Relaxed);
        match slicetrace::init(cfg) {
            Ok(guard) => {
                *g = Some(guard);
                REFUSED_BASE.store(context::REFUSED.load(Ordering::Relaxed), Ordering::Relaxed);
                ACTIVE.store(true, Ordering::Release);
                Ok(true)
            }
            Err(e) => {
                LIVE.store(false, Ordering::Relaxed);
                Err(error_text(&e))
            }
        }
    });
    match started {
        Ok(true) => Ok(()),
        Ok(false) => PyErr::warn(
            py,
            &py.get_type::<PyRuntimeWarning>(),
            c"slicetrace: process_tracing_init called again while tracing runs; the running session is kept",
            1,
        ),
        Err(e) => Err(InitError::new_err(format!("process_tracing_init: {e}"))),
    }
}

enum Again {
    Refused(String),
    Failed(String),
}

/// `process_tracing_init` in a forked child that could not start its own session at the fork:
/// one more try, with this call's configuration. Every lock is tried, never waited for; one
/// held at the fork is still held and refuses it again, with no more than the one warning.
fn start_again_in_child(
    py: Python<'_>,
    otlp_endpoint: Option<&str>,
    server_name: &str,
) -> PyResult<()> {
    let cfg = config(otlp_endpoint, server_name)
        .map_err(|e| InitError::new_err(format!("process_tracing_init: {e}")))?;
    let started = py.detach(|| {
        let mut g = match GUARD.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(Again::Refused(GUARD_HELD.to_owned())),
        };
        match slicetrace::init(cfg) {
            Ok(guard) => {
                if let Some(parent) = g.replace(guard) {
                    std::mem::forget(parent);
                }
                Ok(())
            }
            Err(slicetrace::InitError::Forked(e)) => Err(Again::Refused(e.to_string())),
            Err(e) => Err(Again::Failed(error_text(&e))),
        }
    });
    match started {
        Ok(()) => {
            REFUSED_BASE.store(context::REFUSED.load(Ordering::Relaxed), Ordering::Relaxed);
            context::forget_rooms();
            FORKED.store(false, Ordering::Relaxed);
            ACTIVE.store(true, Ordering::Release);
            Ok(())
        }
        Err(Again::Refused(why)) => {
            if let Ok(mut r) = REFUSAL.try_lock() {
                *r = why;
            }
            warn_forked(py);
            Ok(())
        }
        Err(Again::Failed(e)) => Err(InitError::new_err(format!("process_tracing_init: {e}"))),
    }
}

const GUARD_HELD: &str = "the session lock was held by another thread at the fork";

/// Sets the process's trace level, 0 to 7, from any thread, for every thread at once: slices
/// and events of names above it record nothing. The rid-keyed calls' names are at level 1, so
/// level 0 stops their slices and events (requests and threads are still marked) and any other
/// records them. `SLICETRACE_LEVEL` sets it at start-up.
#[pyfunction]
pub fn set_level(level: i64) -> PyResult<()> {
    let max = slicetrace::limits::MAX_LEVEL;
    match u8::try_from(level) {
        Ok(l) if l <= max => {
            slicetrace::set_level(l);
            Ok(())
        }
        _ => Err(PyValueError::new_err(format!(
            "level must be 0 to {max}, got {level}"
        ))),
    }
}

/// The process's trace level now.
#[pyfunction]
pub fn level() -> u8 {
    slicetrace::level()
}

/// Whether the calls record now (SGLang's `is_tracing_enabled`).
#[pyfunction]
pub fn is_tracing_enabled() -> bool {
    active()
}

/// Ends tracing: stops recording, exports every span recorded before (within the shutdown
/// timeout, 5 s) and returns the final counters. Without a session: the counters, all zero.
#[pyfunction]
pub fn shutdown(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    if FORKED.load(Ordering::Relaxed) {
        // The guard is the parent's; the core answers without waiting for anything.
        let s = py.detach(slicetrace::stats);
        return stats_dict(py, &s);
    }
    ACTIVE.store(false, Ordering::Release);
    let final_stats = py.detach(|| {
        let guard = GUARD.lock().unwrap_or_else(|e| e.into_inner()).take();
        let s = guard.map(Guard::shutdown);
        LIVE.store(false, Ordering::Relaxed);
        s
    });
    stats_dict(py, &final_stats.unwrap_or_default())
}

/// Waits until every span ended before this call is exported; false on timeout or without a
/// session.
#[pyfunction]
#[pyo3(signature = (timeout = 5.0))]
pub fn flush(py: Python<'_>, timeout: f64) -> bool {
    if FORKED.load(Ordering::Relaxed) || !timeout.is_finite() || timeout < 0.0 {
        return false;
    }
    py.detach(|| {
        let g = GUARD.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .is_some_and(|g| g.flush(Duration::from_secs_f64(timeout)))
    })
}

/// The counters of the running session, as a dict (all zero when none runs), with this
/// module's own `contexts_refused`; `calls_dropped_after_fork` counts the calls of both layers.
#[pyfunction]
pub fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    // In a forked child that did not start again the core answers without its lock.
    let s = py.detach(slicetrace::stats);
    stats_dict(py, &s)
}

fn stats_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, value) in s.fields() {
        d.set_item(name, value)?;
    }
    d.set_item(
        "calls_dropped_after_fork",
        s.calls_dropped_after_fork + DROPPED_AFTER_FORK.load(Ordering::Relaxed),
    )?;
    let refused = context::REFUSED.load(Ordering::Relaxed) - REFUSED_BASE.load(Ordering::Relaxed);
    d.set_item("contexts_refused", refused)?;
    Ok(d)
}

/// For the interpreter's exit (and a forked child's, through multiprocessing's finalizers):
/// shutdown if a session of this process runs; nothing in a forked child that does not trace.
#[pyfunction]
pub fn _at_exit(py: Python<'_>) -> PyResult<()> {
    if !FORKED.load(Ordering::Relaxed) && LIVE.load(Ordering::Relaxed) {
        shutdown(py)?;
    }
    Ok(())
}
