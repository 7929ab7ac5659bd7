//! SGLang 0.5.9's rid-keyed tracing calls (`sglang/srt/tracing/trace.py`), same names,
//! parameters and defaults, on the core's calls. Arguments are borrowed; names and rids are
//! looked up in per-thread caches, so a call on known strings allocates nothing.

use crate::cache;
use crate::context::{self, Incoming};
use crate::convert::{self, type_error, Attrs};
use crate::session::{self, active};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use slicetrace::options::{Opts, ReqStart};
use slicetrace::{End, PropagateContext, Rid};
use std::cell::Cell;

/// Names the calling thread in traces. The core keeps it even before init (SGLang drops it),
/// and the latest call applies to thread spans opened after it (SGLang keeps the first).
#[pyfunction]
#[pyo3(signature = (thread_label, tp_rank = None, dp_rank = None))]
pub fn trace_set_thread_info(thread_label: &str, tp_rank: Option<u32>, dp_rank: Option<u32>) {
    slicetrace::set_thread_info(thread_label, tp_rank, dp_rank);
}

/// Opens the request: its `Bootstrap Room 0x…` span, the request span `"{role} Req
/// {rid[:8]}"` under it, and this thread's span. With a `bootstrap_room` whose context came in
/// by `trace_set_remote_propagate_context`, the request span hangs under that node's room span
/// instead (no room span here); else a W3C `traceparent` in `external_trace_header` becomes the
/// room span's parent.
#[pyfunction]
#[pyo3(signature = (rid, bootstrap_room = None, ts = None, role = "null", external_trace_header = None))]
pub fn trace_req_start(
    py: Python<'_>,
    rid: &Bound<'_, PyAny>,
    bootstrap_room: Option<u64>,
    ts: Option<u64>,
    role: Option<&str>,
    external_trace_header: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    const F: &str = "trace_req_start";
    let text = convert::rid_text(F, rid)?;
    // SGLang's default role, "null", stands for none.
    let role = role.filter(|r| !r.is_empty() && *r != "null");
    if !active() {
        session::off(py);
        return Ok(());
    }
    let remote: Option<Incoming> = bootstrap_room.and_then(context::take_room);
    let (header_ctx, header_state) = match external_trace_header {
        Some(h) if remote.is_none() => header_parent(F, h)?,
        _ => (None, None),
    };
    let (parent, tracestate) = match &remote {
        Some(r) => (Some(&r.ctx), r.tracestate.as_deref()),
        None => (header_ctx.as_ref(), header_state.as_deref()),
    };
    slicetrace::options::req_start_with(
        &*text,
        ReqStart {
            bootstrap_room,
            ts: convert::ts(ts),
            parent,
            tracestate,
            role,
            ..ReqStart::default()
        },
    );
    Ok(())
}

/// The upstream context and tracestate of a gateway's W3C headers (`traceparent`,
/// `tracestate`). As SGLang: a `traceparent` that does not parse starts a new trace.
pub fn header_parent(
    func: &str,
    h: &Bound<'_, PyDict>,
) -> PyResult<(Option<PropagateContext>, Option<String>)> {
    let Some(tp) = h.get_item("traceparent")? else {
        return Ok((None, None));
    };
    let tp = tp
        .cast::<PyString>()
        .map_err(|_| type_error(func, "external_trace_header['traceparent']", "str", &tp))?;
    let Ok(ctx) = PropagateContext::from_traceparent(tp.to_str()?) else {
        return Ok((None, None));
    };
    let state = match h.get_item("tracestate")? {
        Some(st) => st.cast::<PyString>().ok().map(|s| s.to_string()),
        None => None,
    };
    Ok((Some(ctx), state))
}

/// Ends the request in this process; `attrs` go on the request span.
#[pyfunction]
#[pyo3(signature = (rid, ts = None, attrs = None))]
pub fn trace_req_finish(
    py: Python<'_>,
    rid: &Bound<'_, PyAny>,
    ts: Option<u64>,
    attrs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    const F: &str = "trace_req_finish";
    convert::check_rid(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let rid = convert::rid(F, rid)?;
    let attrs = Attrs::from_dict(F, "attrs", attrs)?;
    let ts = convert::ts(ts);
    if attrs.is_empty() && ts.is_none() {
        slicetrace::req_finish(rid);
    } else {
        attrs.with_core(|attrs| slicetrace::options::req_finish_with(rid, Opts { ts, attrs }));
    }
    Ok(())
}

/// Opens a slice under this request's innermost open slice on this thread (else its thread
/// span); `anonymous=True` leaves the name to the `trace_slice_end` that closes it. Called
/// through `fast.rs`.
pub fn trace_slice_start(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    rid: &Bound<'_, PyAny>,
    ts: Option<u64>,
    anonymous: bool,
) -> PyResult<()> {
    const F: &str = "trace_slice_start";
    let name = convert::name_arg(F, name)?;
    let rid = convert::rid_arg(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    match (anonymous, convert::ts(ts)) {
        (true, None) => slicetrace::slice_start_anon(rid.rid(F)?),
        (true, Some(t)) => slicetrace::options::slice_start_at(None, rid.rid(F)?, t),
        (false, None) => {
            let (name, rid) = rid.with_name(F, name)?;
            slicetrace::slice_start(name, rid)
        }
        (false, Some(t)) => {
            let (name, rid) = rid.with_name(F, name)?;
            slicetrace::options::slice_start_at(Some(name), rid, t)
        }
    }
    Ok(())
}

fn end_flags(auto_next_anon: bool, thread_finish_flag: bool) -> End {
    // As SGLang: a thread finish ends the thread span and opens no next slice.
    if thread_finish_flag {
        End::THREAD_FINISH
    } else if auto_next_anon {
        End::AUTO_NEXT_ANON
    } else {
        End::PLAIN
    }
}

/// Ends this request's innermost open slice on this thread (an anonymous one takes `name`),
/// then opens the next anonymous slice (`auto_next_anon`) or ends the thread span
/// (`thread_finish_flag`). Also exported as `trace_slice`. Called through `fast.rs`.
pub fn trace_slice_end(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    rid: &Bound<'_, PyAny>,
    ts: Option<u64>,
    attrs: Option<&Bound<'_, PyDict>>,
    auto_next_anon: bool,
    thread_finish_flag: bool,
) -> PyResult<()> {
    const F: &str = "trace_slice_end";
    let name = convert::name_arg(F, name)?;
    let rid = convert::rid_arg(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let (name, rid) = rid.with_name(F, name)?;
    let end = end_flags(auto_next_anon, thread_finish_flag);
    let ts = convert::ts(ts);
    match attrs {
        None if ts.is_none() => slicetrace::slice_end(name, rid, end),
        _ => {
            let attrs = Attrs::from_dict(F, "attrs", attrs)?;
            attrs.with_core(|attrs| {
                slicetrace::options::slice_end_with(name, rid, end, Opts { ts, attrs })
            });
        }
    }
    Ok(())
}

/// A span event on this request's innermost open slice on this thread. Called through
/// `fast.rs`.
pub fn trace_event(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    rid: &Bound<'_, PyAny>,
    ts: Option<u64>,
    attrs: Option<&Bound<'_, PyDict>>,
) -> PyResult<()> {
    record_event(py, name, rid, ts, attrs, EventFor::InnermostSlice)
}

/// Where an event goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EventFor {
    /// This request's innermost open slice on this thread.
    InnermostSlice,
    /// Its thread span, even while a slice is open.
    Thread,
    /// The next of its slices to end on this thread whose interval holds the event's time.
    SliceHoldingIt,
}

pub fn record_event(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    rid: &Bound<'_, PyAny>,
    ts: Option<u64>,
    attrs: Option<&Bound<'_, PyDict>>,
    to: EventFor,
) -> PyResult<()> {
    const F: &str = "trace_event";
    convert::check_name(F, name)?;
    convert::check_rid(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let name = convert::name(F, name)?;
    let rid = convert::rid(F, rid)?;
    let ts = convert::ts(ts);
    match attrs {
        None if ts.is_none() && to == EventFor::InnermostSlice => slicetrace::event(name, rid),
        _ => {
            let attrs = Attrs::from_dict(F, "attrs", attrs)?;
            attrs.with_core(|attrs| {
                let opts = Opts { ts, attrs };
                match to {
                    EventFor::InnermostSlice => slicetrace::options::event_with(name, rid, opts),
                    EventFor::Thread => slicetrace::options::thread_event_with(name, rid, opts),
                    EventFor::SliceHoldingIt => {
                        slicetrace::options::event_for_slice_with(name, rid, opts)
                    }
                }
            })
        }
    }
    Ok(())
}

/// Attributes on this request's innermost open slice on this thread.
#[pyfunction]
#[pyo3(signature = (rid, attrs))]
pub fn trace_slice_add_attr(
    py: Python<'_>,
    rid: &Bound<'_, PyAny>,
    attrs: &Bound<'_, PyDict>,
) -> PyResult<()> {
    const F: &str = "trace_slice_add_attr";
    convert::check_rid(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let rid = convert::rid(F, rid)?;
    let attrs = Attrs::from_dict(F, "attrs", Some(attrs))?;
    attrs.with_core(|attrs| slicetrace::slice_add_attr(rid, attrs));
    Ok(())
}

thread_local! {
    // The batch's (rid, finished) pairs, kept between calls. Taken out while in use, so a
    // call re-entered from a rid's destructor gets a vector of its own.
    static BATCH: Cell<Vec<(Rid, bool)>> = const { Cell::new(Vec::new()) };
}

/// The native half of `trace_slice_batch`: one item per request, its rid, or for a finished
/// request the 1-tuple `(rid,)`. The Python half makes the list with one comprehension, at
/// the interpreter's speed and with its attribute and call caches (a native loop pays a full
/// lookup of `.rid` and of `finished` per request).
#[pyfunction]
pub fn _slice_batch(
    py: Python<'_>,
    name: &Bound<'_, PyAny>,
    items: &Bound<'_, PyList>,
) -> PyResult<()> {
    const F: &str = "trace_slice_batch";
    convert::check_name(F, name)?;
    if !active() {
        session::off(py);
        return Ok(());
    }
    let name = convert::name(F, name)?;
    let mut batch = BATCH.try_with(Cell::take).unwrap_or_default();
    batch.clear();
    batch.reserve(items.len());
    let read = cache::with_rid_lookup(|rid_of| {
        for item in items.iter() {
            let entry = if let Ok(s) = item.cast::<PyString>() {
                (rid_of(s)?, false)
            } else if let Ok(t) = item.cast::<PyTuple>() {
                let rid = t.get_item(0)?;
                match rid.cast::<PyString>() {
                    Ok(s) => (rid_of(s)?, true),
                    Err(_) => (convert::rid(F, &rid)?, true),
                }
            } else {
                (convert::rid(F, &item)?, false)
            };
            batch.push(entry);
        }
        Ok(())
    });
    // A batch with a bad rid records nothing: no request of it had its call.
    if read.is_ok() && active() {
        slicetrace::slice_batch(name, &batch);
    }
    let _ = BATCH.try_with(|b| b.set(batch));
    read
}

/// The context to send with the request to another process (SGLang's dict, picklable);
/// `None` when tracing is off or this thread neither started nor joined `rid`. With
/// `remote_propagate` (for another node, as `trace_get_remote_propagate_context` asks), the
/// context names the request's bootstrap room span rather than its request span.
#[pyfunction]
#[pyo3(signature = (rid, remote_propagate = false))]
pub fn trace_get_proc_propagate_context<'py>(
    py: Python<'py>,
    rid: &Bound<'py, PyAny>,
    remote_propagate: bool,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    const F: &str = "trace_get_proc_propagate_context";
    convert::check_rid(F, rid)?;
    if !active() {
        session::off(py);
        return Ok(None);
    }
    let rid = convert::rid(F, rid)?;
    let ctx = if remote_propagate {
        slicetrace::options::propagate_context_for_room(rid)
    } else {
        slicetrace::propagate_context(rid)
    };
    let Some(ctx) = ctx else {
        return Ok(None);
    };
    let state = slicetrace::options::propagate_tracestate(rid);
    context::to_dict(py, &ctx, state.as_deref()).map(Some)
}

/// Continues the request on this thread from a context made by
/// `trace_get_proc_propagate_context`, here or in SGLang's own module. A dict that is not one
/// is ignored and counted (`contexts_refused`); `None` or `{}` is ignored.
#[pyfunction]
#[pyo3(signature = (rid, trace_context))]
pub fn trace_set_proc_propagate_context(
    py: Python<'_>,
    rid: &Bound<'_, PyAny>,
    trace_context: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    const F: &str = "trace_set_proc_propagate_context";
    let text = convert::rid_text(F, rid)?;
    let d = match trace_context {
        None => return Ok(()),
        Some(c) => match c.cast::<PyDict>() {
            Ok(d) => d,
            Err(_) => return Err(type_error(F, "trace_context", "dict or None", c)),
        },
    };
    if !active() {
        session::off(py);
        return Ok(());
    }
    if d.is_empty() {
        return Ok(());
    }
    if let Some(inc) = context::from_dict(d)? {
        slicetrace::options::set_propagate_context_with(
            &*text,
            &inc.ctx,
            inc.tracestate.as_deref(),
        );
    }
    Ok(())
}

/// Keeps the context of one bootstrap room of a cross-node header, for the `trace_req_start`
/// with that room. Returns whether it was kept (false: kept already, or not a context).
#[pyfunction]
pub fn _keep_remote_context(room: String, trace_context: &Bound<'_, PyAny>) -> PyResult<bool> {
    if !active() || context::has_room(&room) {
        return Ok(false);
    }
    let Ok(d) = trace_context.cast::<PyDict>() else {
        return Err(context::bad_header(format!(
            "room {room}: the context is not a dict"
        )));
    };
    match context::from_dict(d)? {
        Some(inc) => {
            context::keep_room(room, inc);
            Ok(true)
        }
        None => Ok(false),
    }
}
