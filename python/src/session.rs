//! The process's tracing session as Python sees it: `process_tracing_init`, `shutdown`,
//! `flush`, `stats`, and what a process forked from a traced one does.
//!
//! Every lock here is taken with the interpreter released (`Python::detach`), so a thread that
//! waits for one never holds the GIL that the holder may need.
//!
//! Fork: the child has the parent's memory but none of its threads, so the core's session in
//! it has no drainer, and the core cannot start another while that one is registered. The
//! child therefore stops recording at once (a `pthread_atfork` handler clears the switch),
//! warns once, and counts each traced call in `calls_dropped_after_fork`; it never touches the
//! parent's rings, drainer or locks.

use crate::context;
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use slicetrace::{Config, Guard, Stats};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Once};
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
/// This process was forked while a session was live.
static FORKED: AtomicBool = AtomicBool::new(false);
static FORK_WARNED: AtomicBool = AtomicBool::new(false);
static DROPPED_AFTER_FORK: AtomicU64 = AtomicU64::new(0);
static GUARD: Mutex<Option<Guard>> = Mutex::new(None);
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
        let msg = c"slicetrace: this process was forked from a traced one; its tracing calls are \
                    dropped (counted in stats()['calls_dropped_after_fork']). Start worker \
                    processes with 'spawn' and call process_tracing_init in each.";
        // A warnings filter set to "error" must not turn a tracing call into a failure.
        let _ = PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), msg, 1);
    }
}

extern "C" fn after_fork_in_child() {
    // Only atomic stores: this runs in the child right after fork, where just
    // async-signal-safe work is allowed.
    if LIVE.load(Ordering::Relaxed) {
        ACTIVE.store(false, Ordering::Relaxed);
        FORKED.store(true, Ordering::Relaxed);
    }
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
/// A second call while tracing runs keeps the running session.
#[pyfunction]
#[pyo3(signature = (otlp_endpoint, server_name))]
pub fn process_tracing_init(
    py: Python<'_>,
    otlp_endpoint: Option<&str>,
    server_name: &str,
) -> PyResult<()> {
    if FORKED.load(Ordering::Relaxed) {
        warn_forked(py);
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
        return stats_dict(py, &Stats::default());
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
/// module's own: `calls_dropped_after_fork` and `contexts_refused`.
#[pyfunction]
pub fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let s = if FORKED.load(Ordering::Relaxed) {
        Stats::default()
    } else {
        py.detach(slicetrace::stats)
    };
    stats_dict(py, &s)
}

fn stats_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, value) in s.fields() {
        d.set_item(name, value)?;
    }
    d.set_item(
        "calls_dropped_after_fork",
        DROPPED_AFTER_FORK.load(Ordering::Relaxed),
    )?;
    let refused = context::REFUSED.load(Ordering::Relaxed) - REFUSED_BASE.load(Ordering::Relaxed);
    d.set_item("contexts_refused", refused)?;
    Ok(d)
}

/// For the interpreter's exit: shutdown if a session runs (not in a forked child).
#[pyfunction]
pub fn _at_exit(py: Python<'_>) -> PyResult<()> {
    if !FORKED.load(Ordering::Relaxed) && LIVE.load(Ordering::Relaxed) {
        shutdown(py)?;
    }
    Ok(())
}
