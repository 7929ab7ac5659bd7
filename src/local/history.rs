//! `propagate_context` without shared state: the calling thread reads back its own ring.
//!
//! The hot calls keep no per-request state, so to name the request span and the current slice
//! the thread walks back through the records it wrote (they stay in the ring until it reuses the
//! slots) to the request's origin on this thread (its `ReqStart` or `SetPropagate`), then replays
//! the slice records after it with the same [`SliceChain`] rule the drainer uses. The cost is a
//! walk over this thread's records since that origin, paid only by the propagating call.

use crate::ids::{derive_span_id, derive_trace_id, joined_request_span_id, Rid, Salt};
use crate::propagate::PropagateContext;
use crate::record::{
    batch_item_record, flag, read_chunks, unpack_batch_chunk, Kind, Record, BATCH_PER_CHUNK,
};
use crate::ring::Producer;
use crate::slice_chain::SliceChain;

/// The outcome of a look-up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(PropagateContext),
    /// Neither started nor joined on this thread within the history the ring still holds.
    Unknown,
    /// Finished on this thread.
    Finished,
}

/// Fixed leading payload of `ReqStart` (with `UPSTREAM`) and `SetPropagate` records.
pub(crate) struct Upstream {
    pub trace_id: u128,
    /// `SetPropagate`: the link span; `ReqStart`: the remote link span.
    pub link: u64,
    /// `SetPropagate`: the sender's process tag; `ReqStart`: the remote parent span.
    pub extra: u64,
}

pub(crate) const UPSTREAM_BYTES: usize = 32;

/// A `ReqStart` or `SetPropagate` payload past its upstream context (when the record has one):
/// a W3C tracestate (with `flag::TRACESTATE`: u16 length, then the text), then the rid's text.
pub(crate) struct OriginPayload<'a> {
    pub tracestate: Option<&'a [u8]>,
    pub text: &'a [u8],
}

pub(crate) fn split_origin_payload<'a>(head: &Record, payload: &'a [u8]) -> OriginPayload<'a> {
    let has_upstream = head.kind == Kind::SetPropagate as u8 || head.flags & flag::UPSTREAM != 0;
    let mut rest = if has_upstream {
        &payload[UPSTREAM_BYTES.min(payload.len())..]
    } else {
        payload
    };
    let mut tracestate = None;
    if head.flags & flag::TRACESTATE != 0 {
        let len = rest
            .get(..2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        tracestate = Some(rest.get(2..2 + len).unwrap_or(&[]));
        rest = rest.get((2 + len).min(rest.len())..).unwrap_or(&[]);
    }
    OriginPayload {
        tracestate,
        text: rest,
    }
}

impl Upstream {
    pub fn encode(&self) -> [u8; UPSTREAM_BYTES] {
        let mut b = [0u8; UPSTREAM_BYTES];
        b[..16].copy_from_slice(&self.trace_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.link.to_le_bytes());
        b[24..32].copy_from_slice(&self.extra.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Upstream> {
        let b: &[u8; UPSTREAM_BYTES] = b.get(..UPSTREAM_BYTES)?.try_into().ok()?;
        Some(Upstream {
            trace_id: u128::from_le_bytes(b[..16].try_into().ok()?),
            link: u64::from_le_bytes(b[16..24].try_into().ok()?),
            extra: u64::from_le_bytes(b[24..32].try_into().ok()?),
        })
    }
}

/// The request ids a process derives from an origin record. Shared with the drainer.
pub(crate) struct OriginIds {
    pub trace_id: u128,
    pub request_span: u64,
}

pub(crate) fn origin_ids(
    seed: u64,
    pos: u64,
    head: &Record,
    upstream: Option<&Upstream>,
    process_tag: u64,
) -> Option<OriginIds> {
    match Kind::from_u8(head.kind)? {
        Kind::ReqStart => Some(OriginIds {
            trace_id: match upstream {
                Some(u) if head.flags & flag::UPSTREAM != 0 => u.trace_id,
                _ => derive_trace_id(seed, pos),
            },
            request_span: derive_span_id(seed, pos, Salt::REQUEST),
        }),
        Kind::SetPropagate => {
            let u = upstream?;
            let request_span = if u.extra == process_tag {
                // Handed over inside this process: the sender's request span is ours too.
                head.value
            } else {
                joined_request_span_id(Rid(head.rid), u.trace_id)
            };
            Some(OriginIds {
                trace_id: u.trace_id,
                request_span,
            })
        }
        _ => None,
    }
}

/// An end record (or batch item at `sub`) replayed the drainer's way.
fn end(chain: &mut SliceChain, seed: u64, pos: u64, sub: u8, flags: u8) {
    chain.end();
    if flags & flag::THREAD_FINISH != 0 {
        chain.finish_thread(|_| {});
    } else if flags & flag::AUTO_NEXT_ANON != 0 {
        chain.start(seed, pos, Salt::next_anon(sub));
    }
}

/// The request's origin on this thread (its `ReqStart` or latest `SetPropagate`), walking back
/// from the newest record: `Err(Finished)` if it ended here first, `Ok(None)` if the history
/// the ring holds does not reach it.
fn find_origin(p: &Producer<'_>, rid: u64) -> Result<Option<(u64, Record)>, Lookup> {
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

/// The W3C tracestate the request carries on this thread, from its origin record: the one an
/// upstream gateway sent to `req_start`, or a sender passed to `set_propagate_context_with`.
pub(crate) fn origin_tracestate(p: &Producer<'_>, rid: u64) -> Option<String> {
    let (opos, head) = find_origin(p, rid).ok()??;
    if head.flags & flag::TRACESTATE == 0 {
        return None;
    }
    let len = head.len as usize;
    let tail = p.tail();
    let chunks: Vec<Record> = (0..len.div_ceil(crate::record::CHUNK_BYTES) as u64)
        .map(|i| opos + 1 + i)
        .take_while(|at| *at < tail)
        .map(|at| p.read_back(at))
        .collect();
    let mut payload = Vec::with_capacity(len);
    read_chunks(&chunks, len, &mut payload);
    let text = split_origin_payload(&head, &payload).tracestate?;
    std::str::from_utf8(text)
        .ok()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

pub(crate) fn lookup(p: &Producer<'_>, seed: u64, rid: u64, process_tag: u64) -> Lookup {
    let tail = p.tail();
    let origin = match find_origin(p, rid) {
        Err(finished) => return finished,
        Ok(None) => return lookup_elsewhere(p, seed, rid, process_tag),
        Ok(Some(o)) => o,
    };
    let (opos, head) = origin;
    let has_upstream = head.kind == Kind::SetPropagate as u8 || head.flags & flag::UPSTREAM != 0;
    let upstream = if has_upstream {
        let mut chunks = [Record::default(); 2];
        for (i, c) in chunks.iter_mut().enumerate() {
            let at = opos + 1 + i as u64;
            if at >= tail {
                return Lookup::Unknown;
            }
            *c = p.read_back(at);
        }
        let mut bytes = Vec::with_capacity(UPSTREAM_BYTES);
        read_chunks(&chunks, UPSTREAM_BYTES, &mut bytes);
        Upstream::decode(&bytes)
    } else {
        None
    };
    let Some(ids) = origin_ids(seed, opos, &head, upstream.as_ref(), process_tag) else {
        return Lookup::Unknown;
    };
    let chain = replay(p, seed, rid, opos + 1);
    let sampled = head.kind == Kind::ReqStart as u8 && head.flags & flag::UPSTREAM == 0
        || head.flags & flag::SAMPLED != 0;
    Lookup::Found(PropagateContext::new(
        ids.trace_id,
        ids.request_span,
        chain.handoff_target().unwrap_or(0),
        process_tag,
        sampled,
    ))
}

/// A request this thread only sliced: its identity comes from the process directory, and its
/// slices from this thread's history, when that history is whole (else no link).
fn lookup_elsewhere(p: &Producer<'_>, seed: u64, rid: u64, process_tag: u64) -> Lookup {
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
    Lookup::Found(PropagateContext::new(
        e.trace_id,
        e.request_span,
        link,
        process_tag,
        true,
    ))
}

/// This thread's slices of `rid` from `from` to now, by the drainer's rule.
fn replay(p: &Producer<'_>, seed: u64, rid: u64, from: u64) -> SliceChain {
    let tail = p.tail();
    let mut chain = SliceChain::default();
    let mut at = from;
    while at < tail {
        let r = p.read_back(at);
        match Kind::from_u8(r.kind) {
            Some(Kind::SliceStart) if r.rid == rid => {
                chain.start(seed, at, Salt::SLICE);
            }
            Some(Kind::SliceEnd) if r.rid == rid => end(&mut chain, seed, at, 0, r.flags),
            Some(Kind::Batch) => {
                let mut left = r.len as usize;
                let mut c = at + 1;
                while left > 0 && c < tail {
                    let chunk = p.read_back(c);
                    for (k, (item, finished)) in unpack_batch_chunk(&chunk, left).enumerate() {
                        if item == rid {
                            let f = batch_item_record(&r, item, finished).flags;
                            end(&mut chain, seed, c, 1 + k as u8, f);
                        }
                    }
                    left = left.saturating_sub(BATCH_PER_CHUNK);
                    c += 1;
                }
                at = c;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    chain
}
