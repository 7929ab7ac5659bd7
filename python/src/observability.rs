//! The native half of `slicetrace.sglang.observability` (SGLang 0.5.10 and later): the calls its
//! `TraceReqContext` makes that the 0.5.9 calls do not cover. The request context itself is a
//! Python class (SGLang rebuilds it with `object.__new__` and `__setstate__`); these take its
//! rid and record on the calling thread.

use crate::calls::{self, header_parent, EventFor};
use crate::convert::{self, Attrs};
use crate::session::{self, active};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use slicetrace::options::{Opts, ReqStart, ThreadEnd, ThreadInfo, UnixNanos};
use slicetrace::End;

/// Names the calling thread as SGLang 0.5.11 and later do: every rank given shows in its thread
/// span names, `"{label} [TP n]  [PP n]  [DP n] (host:… | pid:…)"`.
#[pyfunction]
#[pyo3(signature = (thread_label, tp_rank = None, dp_rank = None, pp_rank = None))]
pub fn _set_thread_info(
    thread_label: &str,
    tp_rank: Option<u32>,
    dp_rank: Option<u32>,
    pp_rank: Option<u32>,
) {
    slicetrace::options::set_thread_info_with(ThreadInfo {
        label: thread_label,
        tp_rank,
        dp_rank,
        pp_rank,
        all_ranks_in_name: true,
    });
}

/// Opens the request with no bootstrap room span: the request span `"{role} Req {rid[:8]}"`
/// (under the gateway's span when `external_trace_header` holds a `traceparent`) with `attrs`,
/// and this thread's span.
#[pyfunction]
#[pyo3(signature = (rid, role, ts, external_trace_header, attrs))]
pub fn _req_start(
    py: Python<'_>,
    rid: &Bound<'_, PyAny>,
    role: &str,
    ts: Option<u64>,
    external_trace_header: Option<&Bound<'_, PyDict>>,
    attrs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    const F: &str = "trace_req_start";
    let text = convert::rid_text(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let (parent, tracestate) = match external_trace_header {
        Some(h) => header_parent(F, h)?,
        None => (None, None),
    };
    let attrs = Attrs::from_dict(F, "attrs", attrs)?;
    let id = slicetrace::options::req_start_with(
        &*text,
        ReqStart {
            ts: convert::ts(ts),
            parent: parent.as_ref(),
            tracestate: tracestate.as_deref(),
            role: Some(role).filter(|r| !r.is_empty()),
            no_room_span: true,
            ..ReqStart::default()
        },
    );
    attrs.with_core(|attrs| slicetrace::options::req_add_attr(id, attrs));
    Ok(())
}

/// Ends this request's span on this thread: open slices end at `ts`, then the thread span, with
/// `attrs` and an error status when `error`.
#[pyfunction]
#[pyo3(signature = (rid, ts, error, attrs))]
pub fn _thread_end(
    py: Python<'_>,
    rid: &Bound<'_, PyAny>,
    ts: Option<u64>,
    error: bool,
    attrs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    const F: &str = "abort";
    convert::check_rid(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let rid = convert::rid(F, rid)?;
    let attrs = Attrs::from_dict(F, "abort_info", attrs)?;
    let ts = convert::ts(ts);
    attrs.with_core(|attrs| {
        slicetrace::options::thread_end_with(rid, ThreadEnd { ts, error, attrs })
    });
    Ok(())
}

/// Attributes for this request's thread span (`on_thread`) or its request span.
#[pyfunction]
#[pyo3(signature = (rid, attrs, on_thread))]
pub fn _add_attrs(
    py: Python<'_>,
    rid: &Bound<'_, PyAny>,
    attrs: &Bound<'_, PyDict>,
    on_thread: bool,
) -> PyResult<()> {
    const F: &str = "trace_set_attrs";
    convert::check_rid(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let rid = convert::rid(F, rid)?;
    let attrs = Attrs::from_dict(F, "attrs", Some(attrs))?;
    attrs.with_core(|attrs| {
        if on_thread {
            slicetrace::options::thread_add_attr(rid, attrs)
        } else {
            slicetrace::options::req_add_attr(rid, attrs)
        }
    });
    Ok(())
}

/// An event at `ts` for this request's thread span, or (`for_slice`) SGLang's cached event:
/// for the next slice of this request to end on this thread whose interval holds `ts`, else the
/// thread span's when that ends. The drainer holds it meanwhile.
#[pyfunction]
#[pyo3(signature = (name, rid, ts, attrs, for_slice))]
pub fn _event_to(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    rid: &Bound<'_, PyAny>,
    ts: Option<u64>,
    attrs: Option<&Bound<'_, PyDict>>,
    for_slice: bool,
) -> PyResult<()> {
    let to = if for_slice {
        EventFor::SliceHoldingIt
    } else {
        EventFor::Thread
    };
    calls::record_event(py, name, rid, ts, attrs, to)
}

/// A slice recorded after the fact, from `start` to `end`, with `attrs`: one call where the
/// Python side would make two.
#[pyfunction]
#[pyo3(signature = (name, rid, start, end, attrs))]
pub fn _slice_after(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    rid: &Bound<'_, PyAny>,
    start: u64,
    end: u64,
    attrs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    const F: &str = "trace_slice";
    let name = convert::name_arg(F, name)?;
    let rid = convert::rid_arg(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let (name, rid) = rid.with_name(F, name)?;
    let attrs = Attrs::from_dict(F, "attrs", attrs)?;
    slicetrace::options::slice_start_at(Some(name), rid, UnixNanos(start));
    let ts = Some(UnixNanos(end));
    attrs.with_core(|attrs| {
        slicetrace::options::slice_end_with(name, rid, End::PLAIN, Opts { ts, attrs })
    });
    Ok(())
}

pub fn add(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_slice_after, m)?)?;
    m.add_function(wrap_pyfunction!(_set_thread_info, m)?)?;
    m.add_function(wrap_pyfunction!(_req_start, m)?)?;
    m.add_function(wrap_pyfunction!(_thread_end, m)?)?;
    m.add_function(wrap_pyfunction!(_add_attrs, m)?)?;
    m.add_function(wrap_pyfunction!(_event_to, m)?)?;
    Ok(())
}
