//! The propagated context in SGLang 0.5.9's shape, and the contexts a cross-node header brought
//! in, waiting for their request.
//!
//! SGLang's in-node context is a dict: `{"root_span": {"traceparent": …}, "prev_span":
//! {"span_id": int, "trace_id": int}}` (`"prev_span": "None"` when the sender had no slice).
//! Ours adds `"slicetrace"`: the core's 48-byte context in hex, which also tells a hand-over
//! within this process from one between processes. A dict without it (from SGLang's own module)
//! is read from the SGLang fields alone.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyString};
use slicetrace::limits::CONTEXT_LEN;
use slicetrace::PropagateContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Contexts refused: not in SGLang's shape, a bad `traceparent`, or a corrupt `slicetrace` key.
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// The key of our own encoding of the context.
const OWN_KEY: &str = "slicetrace";

pub struct Incoming {
    pub ctx: PropagateContext,
    pub tracestate: Option<String>,
}

fn refuse() -> Option<Incoming> {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    None
}

fn to_hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Option<[u8; CONTEXT_LEN]> {
    let s = s.as_bytes();
    if s.len() != 2 * CONTEXT_LEN {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; CONTEXT_LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(s[2 * i])? << 4 | digit(s[2 * i + 1])?;
    }
    Some(out)
}

/// The dict SGLang sends with a request, for `ctx` (and the request's tracestate, if any).
pub fn to_dict<'py>(
    py: Python<'py>,
    ctx: &PropagateContext,
    tracestate: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let root = PyDict::new(py);
    root.set_item("traceparent", ctx.to_traceparent())?;
    if let Some(ts) = tracestate.filter(|s| !s.is_empty()) {
        root.set_item("tracestate", ts)?;
    }
    let d = PyDict::new(py);
    d.set_item("root_span", root)?;
    match ctx.link_span_id() {
        Some(link) => {
            let prev = PyDict::new(py);
            prev.set_item("span_id", link)?;
            prev.set_item("trace_id", ctx.trace_id())?;
            d.set_item("prev_span", prev)?;
        }
        None => d.set_item("prev_span", "None")?,
    }
    d.set_item(OWN_KEY, to_hex(&ctx.to_bytes()))?;
    Ok(d)
}

/// Reads a context dict, ours or SGLang's. `None` (counted) when it is not one.
pub fn from_dict(d: &Bound<'_, PyDict>) -> PyResult<Option<Incoming>> {
    let (Some(root), Some(prev)) = (d.get_item("root_span")?, d.get_item("prev_span")?) else {
        return Ok(refuse());
    };
    let Ok(root) = root.cast::<PyDict>() else {
        return Ok(refuse());
    };
    let traceparent = match root.get_item("traceparent")? {
        Some(tp) => match tp.cast::<PyString>() {
            Ok(s) => s.to_str()?.to_owned(),
            Err(_) => return Ok(refuse()),
        },
        None => return Ok(refuse()),
    };
    let Ok(from_header) = PropagateContext::from_traceparent(&traceparent) else {
        return Ok(refuse());
    };
    let tracestate = match root.get_item("tracestate")? {
        Some(s) => s.cast::<PyString>().ok().map(|s| s.to_string()),
        None => None,
    };
    if let Some(own) = d.get_item(OWN_KEY)? {
        let own = own
            .cast::<PyString>()
            .ok()
            .and_then(|s| from_hex(s.to_str().ok()?))
            .and_then(|b| PropagateContext::from_bytes(&b).ok());
        match own {
            // The SGLang fields win over ours when they disagree: a process along the way
            // may have rewritten them.
            Some(ctx)
                if ctx.trace_id() == from_header.trace_id()
                    && ctx.parent_span_id() == from_header.parent_span_id() =>
            {
                return Ok(Some(Incoming { ctx, tracestate }));
            }
            Some(_) => {}
            None => return Ok(refuse()),
        }
    }
    let link = if let Ok(p) = prev.cast::<PyDict>() {
        match p.get_item("span_id")? {
            Some(id) if id.is_instance_of::<PyInt>() => match id.extract::<u64>() {
                Ok(id) => id,
                Err(_) => return Ok(refuse()),
            },
            _ => return Ok(refuse()),
        }
    } else if prev
        .cast::<PyString>()
        .is_ok_and(|s| s.to_str().is_ok_and(|t| t == "None"))
    {
        0
    } else {
        return Ok(refuse());
    };
    Ok(Some(Incoming {
        ctx: from_header.with_link(Some(link)),
        tracestate,
    }))
}

/// Contexts a cross-node header brought, by bootstrap room, until `trace_req_start` with that
/// room takes them. Bounded: past `MAX_ROOMS` the oldest half is forgotten.
static ROOMS: Mutex<Option<Rooms>> = Mutex::new(None);
static ROOMS_LEN: AtomicUsize = AtomicUsize::new(0);
const MAX_ROOMS: usize = 1 << 16;

#[derive(Default)]
struct Rooms {
    by_room: HashMap<String, (u64, Incoming)>,
    next: u64,
}

/// Keeps `ctx` for `room` unless one is kept already (as SGLang, the first header wins). A
/// cross-node context names the sender's room span, whatever made it: the `trace_req_start`
/// that takes it hangs its request span there and opens no room span of its own, as SGLang's.
pub fn keep_room(room: String, mut ctx: Incoming) {
    ctx.ctx = ctx.ctx.for_room();
    let mut g = ROOMS.lock().unwrap_or_else(|e| e.into_inner());
    let rooms = g.get_or_insert_with(Rooms::default);
    if rooms.by_room.contains_key(&room) {
        return;
    }
    if rooms.by_room.len() >= MAX_ROOMS {
        let cut = rooms.next - (MAX_ROOMS as u64) / 2;
        rooms.by_room.retain(|_, (n, _)| *n >= cut);
    }
    let n = rooms.next;
    rooms.next += 1;
    rooms.by_room.insert(room, (n, ctx));
    ROOMS_LEN.store(rooms.by_room.len(), Ordering::Relaxed);
}

/// Takes the context kept for `room`, if any.
pub fn take_room(room: u64) -> Option<Incoming> {
    if ROOMS_LEN.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut g = ROOMS.lock().unwrap_or_else(|e| e.into_inner());
    let rooms = g.as_mut()?;
    let got = rooms.by_room.remove(&room.to_string()).map(|(_, c)| c);
    ROOMS_LEN.store(rooms.by_room.len(), Ordering::Relaxed);
    got
}

/// In a forked child starting its own session: the contexts kept are the parent's requests'.
pub fn forget_rooms() {
    if let Ok(mut g) = ROOMS.try_lock() {
        *g = None;
        ROOMS_LEN.store(0, Ordering::Relaxed);
    }
}

/// Whether a context is kept for `room`.
pub fn has_room(room: &str) -> bool {
    if ROOMS_LEN.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let g = ROOMS.lock().unwrap_or_else(|e| e.into_inner());
    g.as_ref().is_some_and(|r| r.by_room.contains_key(room))
}

pub fn bad_header(why: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!("trace_context header: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_refusals() {
        let b: Vec<u8> = (0..CONTEXT_LEN as u8).collect();
        let h = to_hex(&b);
        assert_eq!(from_hex(&h).unwrap().to_vec(), b);
        assert!(from_hex(&h[1..]).is_none());
        assert!(from_hex(&h.replace('0', "g")).is_none());
    }
}
