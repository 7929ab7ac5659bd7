//! `slicetrace._native`: the Python extension. The calls of SGLang 0.5.9's tracing module on the
//! slicetrace core, plus the session functions (`shutdown`, `flush`, `stats`).
//!
//! No call can panic across the boundary on Python input: conversions return errors, caches
//! and locks are taken with fallible borrows or recover from poisoning.

mod cache;
mod calls;
mod context;
mod convert;
mod fast;
mod observability;
mod session;

use pyo3::prelude::*;

/// Entries in the calling thread's (name, rid) caches; for tests of their bound.
#[pyfunction]
fn _cache_sizes() -> (usize, usize) {
    cache::sizes()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    session::install_fork_handler();
    m.add("InitError", m.py().get_type::<session::InitError>())?;
    m.add_function(wrap_pyfunction!(session::process_tracing_init, m)?)?;
    m.add_function(wrap_pyfunction!(session::is_tracing_enabled, m)?)?;
    m.add_function(wrap_pyfunction!(session::shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(session::flush, m)?)?;
    m.add_function(wrap_pyfunction!(session::stats, m)?)?;
    m.add_function(wrap_pyfunction!(session::set_level, m)?)?;
    m.add_function(wrap_pyfunction!(session::level, m)?)?;
    m.add_function(wrap_pyfunction!(session::_at_exit, m)?)?;
    m.add_function(wrap_pyfunction!(session::_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(session::_hold_lock, m)?)?;
    m.add_function(wrap_pyfunction!(calls::trace_set_thread_info, m)?)?;
    m.add_function(wrap_pyfunction!(calls::trace_req_start, m)?)?;
    m.add_function(wrap_pyfunction!(calls::trace_req_finish, m)?)?;
    fast::add(m)?;
    observability::add(m)?;
    m.add_function(wrap_pyfunction!(calls::trace_slice_add_attr, m)?)?;
    m.add_function(wrap_pyfunction!(calls::_slice_batch, m)?)?;
    m.add_function(wrap_pyfunction!(
        calls::trace_get_proc_propagate_context,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(
        calls::trace_set_proc_propagate_context,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(calls::_keep_remote_context, m)?)?;
    m.add_function(wrap_pyfunction!(_cache_sizes, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
