//! `propagate_context` without shared state: the calling thread reads back its own ring.
//!
//! The hot calls keep no per-request state, so to name the request span and the current slice
//! the thread walks back through the records it wrote (they stay in the ring until it reuses the
//! slots) to the request's origin on this thread (its `ReqStart` or `SetPropagate`), then replays
//! the slice records after it with the same [`SliceChain`] rule the drainer uses. The cost is a
//! walk over this thread's records since that origin, paid only by the propagating call.

use crate::ids::Salt;
use crate::propagate::PropagateContext;
use crate::slice_chain::{self, SliceChain};
use crate::wire::batch;
use crate::wire::origin::{decode_origin, has_upstream, origin_ids, UPSTREAM_BYTES};
use crate::wire::record::{flag, read_chunks, Kind, Record};
use crate::wire::ring::Producer;

/// The outcome of a look-up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(PropagateContext),
    /// Neither started nor joined on this thread within the history the ring still holds.
    Unknown,
    /// Finished on this thread.
    Finished,
}

/// An end record (or batch item at `sub`) replayed the drainer's way.
fn end(chain: &mut SliceChain, seed: u64, pos: u64, sub: u8, r: &Record) {
    let flags = r.flags;
    if slice_chain::end_applies(chain, r) {
        chain.end();
    }
    if flags & flag::THREAD_FINISH != 0 {
        chain.finish_thread(|_| {});
    } else if flags & flag::AUTO_NEXT_ANON != 0 {
        chain.start(seed, pos, Salt::next_anon(sub));
    }
}

/// The request's origin on this thread (its `ReqStart` or latest `SetPropagate`), walking back
/// from the newest record: `Err(Finished)` if it ended here first, `Ok(None)` if the history
/// the ring holds does not reach it.
fn find_origin(p: &Producer, rid: u64) -> Result<Option<(u64, Record)>, Lookup> {
    let start = p.history_start();
    let mut pos = p.tail();
    loop {
        if pos == start {
            return Ok(None);
        }
        pos -= 1;
        let r = p.read_back(pos);
        if r.rid != rid || r.kind == Kind::Chunk as u8 {
            continue;
        }
        match Kind::from_u8(r.kind) {
            Some(Kind::ReqFinish) => return Err(Lookup::Finished),
            Some(Kind::ReqStart) | Some(Kind::SetPropagate) => return Ok(Some((pos, r))),
            _ => {}
        }
    }
}

/// The first `upto` payload bytes of the record `head` at `pos`, as far as this thread's
/// history holds them.
fn origin_payload(p: &Producer, pos: u64, head: &Record, upto: usize) -> Vec<u8> {
    let len = (head.len as usize).min(upto);
    let tail = p.tail();
    let mut out = Vec::with_capacity(len);
    let mut at = pos + 1;
    while out.len() < len && at < tail {
        read_chunks(&[p.read_back(at)], len - out.len(), &mut out);
        at += 1;
    }
    out
}

/// The W3C tracestate the request carries on this thread, from its origin record: the one an
/// upstream gateway sent to `req_start`, or a sender passed to `set_propagate_context_with`.
pub(crate) fn origin_tracestate(p: &Producer, rid: u64) -> Option<String> {
    let (opos, head) = find_origin(p, rid).ok()??;
    if head.flags & flag::TRACESTATE == 0 {
        return None;
    }
    let payload = origin_payload(p, opos, &head, usize::MAX);
    let text = decode_origin(&head, &payload).ok()?.tracestate?;
    std::str::from_utf8(text)
        .ok()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// What `propagate_context` sends: the request span as the parent, or with `for_room`, the
/// bootstrap room span above it when this process knows it (a request it started).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Request,
    Room,
}

fn context(
    trace_id: u128,
    request_span: u64,
    room_span: u64,
    link: u64,
    process_tag: u64,
    sampled: bool,
    target: Target,
) -> PropagateContext {
    match target {
        Target::Room if room_span != 0 => {
            PropagateContext::new(trace_id, room_span, link, process_tag, sampled).for_room()
        }
        _ => PropagateContext::new(trace_id, request_span, link, process_tag, sampled),
    }
}

pub(crate) fn lookup(
    p: &Producer,
    seed: u64,
    rid: u64,
    process_tag: u64,
    target: Target,
) -> Lookup {
    let origin = match find_origin(p, rid) {
        Err(finished) => return finished,
        Ok(None) => return lookup_elsewhere(p, seed, rid, process_tag, target),
        Ok(Some(o)) => o,
    };
    let (opos, head) = origin;
    // Only the context is needed here: the rid text and tracestate stay unread.
    let upto = if has_upstream(&head) {
        UPSTREAM_BYTES
    } else {
        0
    };
    let payload = origin_payload(p, opos, &head, upto);
    let Ok(origin) = decode_origin(&head, &payload) else {
        return Lookup::Unknown;
    };
    let Some(ids) = origin_ids(seed, opos, &head, origin.upstream.as_ref()) else {
        return Lookup::Unknown;
    };
    let chain = replay(p, seed, rid, opos + 1);
    let flagged = origin
        .upstream
        .as_ref()
        .map(|_| head.flags & flag::SAMPLED != 0);
    let sampled = crate::sampling::decide(crate::ids::Rid(rid), flagged);
    // A thread that joined the request knows no room span; another thread of this process
    // that started it may have published one.
    let room_span = match ids.room_span {
        0 => super::directory::directory()
            .get(rid)
            .filter(|e| e.trace_id == ids.trace_id)
            .map_or(0, |e| e.room_span),
        r => r,
    };
    Lookup::Found(context(
        ids.trace_id,
        ids.request_span,
        room_span,
        chain.handoff_target().unwrap_or(0),
        process_tag,
        sampled,
        target,
    ))
}

/// A request this thread only sliced: its identity comes from the process directory, and its
/// slices from this thread's history, when that history is whole (else no link).
fn lookup_elsewhere(p: &Producer, seed: u64, rid: u64, process_tag: u64, target: Target) -> Lookup {
    let Some(e) = super::directory::directory().get(rid) else {
        return Lookup::Unknown;
    };
    let link = if p.history_start() == p.owner_start() {
        replay(p, seed, rid, p.history_start())
            .handoff_target()
            .unwrap_or(0)
    } else {
        0
    };
    Lookup::Found(context(
        e.trace_id,
        e.request_span,
        e.room_span,
        link,
        process_tag,
        e.sampled,
        target,
    ))
}

/// This thread's slices of `rid` from `from` to now, by the drainer's rule.
fn replay(p: &Producer, seed: u64, rid: u64, from: u64) -> SliceChain {
    let tail = p.tail();
    let mut chain = SliceChain::default();
    let mut at = from;
    while at < tail {
        let r = p.read_back(at);
        match Kind::from_u8(r.kind) {
            Some(Kind::SliceStart) if r.rid == rid => {
                chain.start_keyed(seed, at, Salt::SLICE, slice_chain::start_key(&r));
            }
            Some(Kind::SliceEnd) if r.rid == rid => end(&mut chain, seed, at, 0, &r),
            Some(Kind::ThreadEnd) if r.rid == rid => chain.finish_thread(|_| {}),
            Some(Kind::Batch) => {
                let n = batch::chunks_for(r.len as usize) as u64;
                let chunks = (at + 1..tail.min(at + 1 + n)).map(|c| p.read_back(c));
                for item in batch::items(&r, chunks) {
                    if item.end.rid == rid {
                        let pos = at + 1 + item.chunk as u64;
                        end(&mut chain, seed, pos, item.sub, &item.end);
                    }
                }
                at += 1 + n;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    chain
}
