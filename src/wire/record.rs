//! The fixed-size record every hot-path call writes, and the chunk records that carry a call's
//! payload after its head.
//!
//! A record is 32 bytes, two to a cache line. Calls that carry more than fits (a string, a
//! propagated context) follow their head record with `Chunk` records; the head's `len` says how
//! many payload bytes the chunks hold. Chunks name themselves (`kind == Chunk`), so a reader that
//! walks the ring backwards can skip them.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};

/// One ring slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Record {
    /// Raw clock ticks (`quanta::Clock::raw`), or Unix nanoseconds when `flags` has `TS_UNIX`.
    pub ts: u64,
    /// The request's hashed id.
    pub rid: u64,
    /// Kind-specific: bootstrap room, attribute value, span id.
    pub value: u64,
    /// Interned name or attribute key (0: none / anonymous).
    pub name: u32,
    pub kind: u8,
    pub flags: u8,
    /// Payload bytes carried by the chunk records that follow.
    pub len: u16,
}

/// Bytes of one record.
pub const RECORD_BYTES: usize = size_of::<Record>();

/// Payload bytes one chunk record carries: every byte before `kind`, which a chunk keeps to
/// name itself (with `flags` and `len` zero).
pub const CHUNK_BYTES: usize = offset_of!(Record, kind);

const _: () = {
    assert!(RECORD_BYTES == 32);
    // `kind`, `flags` and `len` are the record's last bytes, so the payload is one run before them.
    assert!(offset_of!(Record, flags) == CHUNK_BYTES + 1);
    assert!(offset_of!(Record, len) == CHUNK_BYTES + 2);
    assert!(offset_of!(Record, len) + size_of::<u16>() == RECORD_BYTES);
};

/// Longest string payload a record may carry; longer strings are cut at a char boundary.
pub const MAX_STR_BYTES: usize = 256;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Chunk = 0,
    ReqStart = 1,
    ReqFinish = 2,
    SliceStart = 3,
    SliceEnd = 4,
    Event = 5,
    Attr = 6,
    SetPropagate = 7,
    Propagate = 8,
    ThreadInfo = 9,
    /// `slice_batch`: `len` items packed three to a chunk (see `batch`).
    Batch = 10,
    /// Ends this request's open slices on the thread, then its thread span.
    ThreadEnd = 11,
    /// Opens an async slice (`AsyncSlice`): its span id derives from this record's position,
    /// `value` holds its parent's (0: the request's span).
    TaskStart = 12,
    /// Ends the async slice whose span id `value` holds, from any thread.
    TaskEnd = 13,
    /// Gives the attributes before it (flagged `TASK`) to the async slice `value` names.
    TaskAttrs = 14,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::Chunk,
            1 => Kind::ReqStart,
            2 => Kind::ReqFinish,
            3 => Kind::SliceStart,
            4 => Kind::SliceEnd,
            5 => Kind::Event,
            6 => Kind::Attr,
            7 => Kind::SetPropagate,
            8 => Kind::Propagate,
            9 => Kind::ThreadInfo,
            10 => Kind::Batch,
            11 => Kind::ThreadEnd,
            12 => Kind::TaskStart,
            13 => Kind::TaskEnd,
            14 => Kind::TaskAttrs,
            _ => return None,
        })
    }
}

/// Flag bits. Their meaning depends on the kind; the names say for which.
pub mod flag {
    /// Any kind: `ts` is Unix nanoseconds given by the caller, not clock ticks.
    pub const TS_UNIX: u8 = 1 << 7;
    /// SliceStart: anonymous (named at its end).
    pub const ANON: u8 = 1 << 0;
    /// SliceEnd: open an anonymous slice at the same instant.
    pub const AUTO_NEXT_ANON: u8 = 1 << 0;
    /// SliceEnd: end this request's thread span after the slice.
    pub const THREAD_FINISH: u8 = 1 << 1;
    /// SliceEnd, Batch: recorded across a change of the trace level, so its start may not have
    /// been: it ends only a slice of its level and name (`value` holds its level).
    pub const MAYBE_UNSTARTED: u8 = 1 << 2;
    /// Batch: end each request's slice and open no next one (a batch above the trace level).
    pub const CLOSE_ONLY: u8 = 1 << 3;
    /// ReqStart: `value` holds a bootstrap room.
    pub const HAS_ROOM: u8 = 1 << 0;
    /// ReqStart: an upstream context (`origin::UPSTREAM_BYTES`) begins the payload.
    pub const UPSTREAM: u8 = 1 << 1;
    /// ReqStart / SetPropagate: the upstream or sender asked for this request to be sampled.
    pub const SAMPLED: u8 = 1 << 2;
    /// ReqStart / SetPropagate: a W3C tracestate (length, then the text) follows the upstream
    /// context.
    pub const TRACESTATE: u8 = 1 << 3;
    /// ReqStart: the upstream context names a bootstrap room span of another node, which the
    /// request span hangs under; this process opens no room span of its own.
    pub const JOINS_ROOM: u8 = 1 << 4;
    /// ReqStart: a role (its length, then the text) follows the tracestate.
    pub const ROLE: u8 = 1 << 5;
    /// ReqStart: no bootstrap room span; the request span hangs under the upstream's parent
    /// span, if any (SGLang 0.5.10 and later).
    pub const NO_ROOM_SPAN: u8 = 1 << 6;
    /// ThreadEnd: the thread span's status is an error.
    pub const THREAD_ERROR: u8 = 1 << 0;
    /// Event: for the thread span, whether or not a slice is open.
    pub const ON_THREAD: u8 = 1 << 0;
    /// Event: for the next slice of the request to end on this thread whose interval holds the
    /// event's time; else the thread span's, when it ends.
    pub const FOR_SLICE: u8 = 1 << 1;
    /// Event: for the async slice whose span id `value` holds.
    pub const FOR_TASK: u8 = 1 << 2;
    /// TaskEnd: the slice's future was dropped before it completed.
    pub const CANCELLED: u8 = 1 << 0;
    /// Attr: for an async slice: the task record that ends the unit (`TaskStart`, `TaskEnd`,
    /// `TaskAttrs`), or with `TARGET_EVENT` the `FOR_TASK` event before it.
    pub const TASK: u8 = 1 << 5;
    /// Attr: the value type, in the low two bits.
    pub const VALUE_MASK: u8 = 0b11;
    pub const VALUE_I64: u8 = 0;
    pub const VALUE_F64: u8 = 1;
    pub const VALUE_BOOL: u8 = 2;
    pub const VALUE_STR: u8 = 3;
    /// Attr: the target, in bits 2-3.
    pub const TARGET_MASK: u8 = 0b1100;
    pub const TARGET_SLICE: u8 = 0;
    pub const TARGET_EVENT: u8 = 1 << 2;
    pub const TARGET_REQUEST: u8 = 2 << 2;
    pub const TARGET_THREAD: u8 = 3 << 2;
    /// Attr: an array of the value type; the payload packs its elements (`array`), `value`
    /// holds how many.
    pub const ARRAY: u8 = 1 << 4;
}

/// Number of chunk records needed for `len` payload bytes.
#[inline]
pub const fn chunks_for(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES)
}

/// Packs `bytes` into chunk records, appending them to `out` (a fixed array filled from index
/// `at`). Returns the next free index.
#[inline]
#[cfg(test)]
pub fn write_chunks(bytes: &[u8], out: &mut [Record], mut at: usize) -> usize {
    for part in bytes.chunks(CHUNK_BYTES) {
        out[at] = chunk(part);
        at += 1;
    }
    at
}

/// The chunk record holding `part` (at most `CHUNK_BYTES`).
#[inline]
pub fn chunk(part: &[u8]) -> Record {
    let mut raw = [0u8; RECORD_BYTES];
    raw[..part.len()].copy_from_slice(part);
    let mut rec: Record = bytemuck::cast(raw);
    rec.kind = Kind::Chunk as u8;
    rec.flags = 0;
    rec.len = 0;
    rec
}

/// Appends the payload bytes of `chunks` to `out`, `len` bytes in all (fewer if `chunks` hold
/// fewer).
pub fn read_chunks(chunks: &[Record], len: usize, out: &mut Vec<u8>) {
    let mut left = len;
    for c in chunks {
        let raw: [u8; RECORD_BYTES] = bytemuck::cast(*c);
        let take = left.min(CHUNK_BYTES);
        out.extend_from_slice(&raw[..take]);
        left -= take;
    }
}

pub use slicetrace_spans::util::truncate_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_mark_themselves() {
        let text = "0123456789abcdef0123456789abcdef-tail";
        let mut recs = [Record::default(); 4];
        let end = write_chunks(text.as_bytes(), &mut recs, 0);
        assert_eq!(end, chunks_for(text.len()));
        assert_eq!(end, 2);
        assert!(recs[..end]
            .iter()
            .all(|r| r.kind == Kind::Chunk as u8 && r.flags == 0 && r.len == 0));
        let mut got = Vec::new();
        read_chunks(&recs[..end], text.len(), &mut got);
        assert_eq!(got, text.as_bytes());
        // A reader given fewer chunks than the length asks for gets what they hold.
        got.clear();
        read_chunks(&recs[..1], text.len(), &mut got);
        assert_eq!(got, &text.as_bytes()[..CHUNK_BYTES]);
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("abc", 10), "abc");
    }
}
