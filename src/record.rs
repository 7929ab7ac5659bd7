//! The fixed-size record every hot-path call writes, and the safe decoder the drainer reads it with.
//!
//! A record is 32 bytes, two to a cache line. Calls that carry more than fits (a string, a
//! propagated context) follow their head record with `Chunk` records; the head's `len` says how
//! many payload bytes the chunks hold. Chunks name themselves (`kind == Chunk`), so a reader that
//! walks the ring backwards can skip them.

use bytemuck::{Pod, Zeroable};

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

const _: () = assert!(std::mem::size_of::<Record>() == 32);

/// Payload bytes one chunk record carries: every field but `kind`, `flags` and `len`.
pub const CHUNK_BYTES: usize = 28;

/// Longest string payload a record may carry; longer strings are cut at a char boundary.
pub const MAX_STR_BYTES: usize = 256;

/// Longest W3C tracestate kept (the length W3C asks every vendor to propagate).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The largest payload one call carries: a `ReqStart` with an upstream context (32 bytes), a
/// tracestate with its length, and the rid text.
pub const MAX_PAYLOAD: usize = 32 + 2 + MAX_TRACESTATE_BYTES + MAX_STR_BYTES;

/// The most chunk records one call writes.
pub const MAX_CHUNKS: usize = MAX_PAYLOAD.div_ceil(CHUNK_BYTES);

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
    /// `slice_batch`: `len` items packed three to a chunk (see [`pack_batch_chunk`]).
    Batch = 10,
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
    /// ReqStart: `value` holds a bootstrap room.
    pub const HAS_ROOM: u8 = 1 << 0;
    /// ReqStart: a 32-byte upstream context precedes the rid string in the chunks.
    pub const UPSTREAM: u8 = 1 << 1;
    /// ReqStart / SetPropagate: the upstream or sender asked for this request to be sampled.
    pub const SAMPLED: u8 = 1 << 2;
    /// ReqStart: a W3C tracestate (u16 length, then the text) follows the upstream context.
    pub const TRACESTATE: u8 = 1 << 3;
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
}

/// Requests one batch chunk carries.
pub const BATCH_PER_CHUNK: usize = 3;

/// Requests one batch record carries at most; longer batches are split.
pub const MAX_BATCH_ITEMS: usize = 255 * BATCH_PER_CHUNK;

/// Packs up to three `(rid, finished)` items into one chunk: the rids in `ts`, `rid` and
/// `value`, the finished bits in `name`.
#[inline(always)]
pub fn pack_batch_chunk(items: &[(u64, bool)]) -> Record {
    let get = |i: usize| items.get(i).copied().unwrap_or((0, false));
    let (a, b, c) = (get(0), get(1), get(2));
    Record {
        ts: a.0,
        rid: b.0,
        value: c.0,
        name: a.1 as u32 | (b.1 as u32) << 1 | (c.1 as u32) << 2,
        kind: Kind::Chunk as u8,
        flags: 0,
        len: 0,
    }
}

/// The items of one batch chunk, `n` of them (1 to 3).
#[inline]
pub fn unpack_batch_chunk(c: &Record, n: usize) -> impl Iterator<Item = (u64, bool)> + '_ {
    [c.ts, c.rid, c.value]
        .into_iter()
        .enumerate()
        .take(n.min(BATCH_PER_CHUNK))
        .map(move |(i, rid)| (rid, c.name & (1 << i) != 0))
}

/// The per-request record a batch item stands for: an end of `rid`'s current slice named by
/// the batch, then `auto_next_anon`, or `thread_finish` for a finished request.
pub fn batch_item_record(head: &Record, rid: u64, finished: bool) -> Record {
    Record {
        ts: head.ts,
        rid,
        value: 0,
        name: head.name,
        kind: Kind::SliceEnd as u8,
        flags: (head.flags & flag::TS_UNIX)
            | if finished {
                flag::THREAD_FINISH
            } else {
                flag::AUTO_NEXT_ANON
            },
        len: 0,
    }
}

/// Number of chunk records needed for `len` payload bytes.
#[inline]
pub const fn chunks_for(len: usize) -> usize {
    len.div_ceil(CHUNK_BYTES)
}

/// Packs `bytes` into chunk records, appending them to `out` (a fixed array filled from index
/// `at`). Returns the next free index.
#[inline]
pub fn write_chunks(bytes: &[u8], out: &mut [Record], mut at: usize) -> usize {
    for part in bytes.chunks(CHUNK_BYTES) {
        let mut raw = [0u8; 32];
        raw[..part.len()].copy_from_slice(part);
        let mut rec: Record = bytemuck::cast(raw);
        rec.kind = Kind::Chunk as u8;
        rec.flags = 0;
        rec.len = 0;
        out[at] = rec;
        at += 1;
    }
    at
}

/// Appends the payload bytes of `chunks` to `out`, `len` bytes in all.
pub fn read_chunks(chunks: &[Record], len: usize, out: &mut Vec<u8>) {
    let mut left = len;
    for c in chunks {
        let raw: [u8; 32] = bytemuck::cast(*c);
        let take = left.min(CHUNK_BYTES);
        out.extend_from_slice(&raw[..take]);
        left -= take;
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One head record with the payload of its chunks, as the drainer decodes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// Ring position of the head record (for a batch item, of the chunk holding it).
    pub pos: u64,
    /// 0, or for an item of a batch record, 1 + its index within its chunk.
    pub sub: u8,
    pub head: Record,
    pub kind: Kind,
    pub payload: Vec<u8>,
}

/// Why a slice of ring contents could not be decoded into whole records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A chunk with no head before it.
    StrayChunk,
    /// An unknown kind byte.
    UnknownKind(u8),
    /// The head announces more chunks than follow (or than any call writes).
    Truncated,
}

/// Decodes the records in `recs` (starting at ring position `pos`) into heads with payloads.
/// Returns how many records it used: all of them, unless `more` (the ring holds more records
/// after these) and the last record's chunks are not all here yet; the caller passes those
/// records again with the ones that follow.
///
/// Total on arbitrary input: a bad record is reported through `on_error` and skipped; no input
/// makes it panic or allocate more than the input's size.
pub fn decode(
    recs: &[Record],
    pos: u64,
    more: bool,
    mut on_record: impl FnMut(&Decoded),
    mut on_error: impl FnMut(u64, DecodeError),
) -> usize {
    let mut i = 0;
    while i < recs.len() {
        let head = &recs[i];
        let at = pos.wrapping_add(i as u64);
        let kind = match Kind::from_u8(head.kind) {
            Some(Kind::Chunk) => {
                on_error(at, DecodeError::StrayChunk);
                i += 1;
                continue;
            }
            Some(k) => k,
            None => {
                on_error(at, DecodeError::UnknownKind(head.kind));
                i += 1;
                continue;
            }
        };
        let len = head.len as usize;
        let n = if kind == Kind::Batch {
            len.div_ceil(BATCH_PER_CHUNK)
        } else {
            chunks_for(len)
        };
        let limit = if kind == Kind::Batch {
            MAX_BATCH_ITEMS.div_ceil(BATCH_PER_CHUNK)
        } else {
            MAX_CHUNKS
        };
        if n <= limit && i + 1 + n > recs.len() && more {
            return i;
        }
        if n > limit || i + 1 + n > recs.len() {
            on_error(at, DecodeError::Truncated);
            i += 1;
            continue;
        }
        let chunks = &recs[i + 1..i + 1 + n];
        if chunks.iter().any(|c| c.kind != Kind::Chunk as u8) {
            on_error(at, DecodeError::Truncated);
            i += 1;
            continue;
        }
        if kind == Kind::Batch {
            let mut left = len;
            for (ci, c) in chunks.iter().enumerate() {
                for (k, (rid, finished)) in unpack_batch_chunk(c, left).enumerate() {
                    on_record(&Decoded {
                        pos: at + 1 + ci as u64,
                        sub: 1 + k as u8,
                        head: batch_item_record(head, rid, finished),
                        kind: Kind::SliceEnd,
                        payload: Vec::new(),
                    });
                }
                left = left.saturating_sub(BATCH_PER_CHUNK);
            }
            i += 1 + n;
            continue;
        }
        let mut payload = Vec::new();
        if len > 0 {
            payload.reserve_exact(len);
            read_chunks(chunks, len, &mut payload);
        }
        on_record(&Decoded {
            pos: at,
            sub: 0,
            head: *head,
            kind,
            payload,
        });
        i += 1 + n;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_mark_themselves() {
        let text = "0123456789abcdef0123456789abcdef-tail";
        let mut recs = [Record::default(); 1 + MAX_CHUNKS];
        recs[0] = Record {
            kind: Kind::ReqStart as u8,
            len: text.len() as u16,
            ..Record::default()
        };
        let end = write_chunks(text.as_bytes(), &mut recs, 1);
        assert_eq!(end, 1 + chunks_for(text.len()));
        assert!(recs[1..end].iter().all(|r| r.kind == Kind::Chunk as u8));
        let mut got = Vec::new();
        decode(
            &recs[..end],
            7,
            false,
            |d| got.push(d.clone()),
            |_, e| panic!("{e:?}"),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pos, 7);
        assert_eq!(got[0].payload, text.as_bytes());
    }

    #[test]
    fn decoder_reports_bad_input_and_goes_on() {
        let good = Record {
            kind: Kind::SliceStart as u8,
            ..Record::default()
        };
        let stray = Record::default();
        let unknown = Record {
            kind: 200,
            ..Record::default()
        };
        let truncated = Record {
            kind: Kind::Attr as u8,
            len: 100,
            ..Record::default()
        };
        let recs = [stray, good, unknown, good, truncated];
        let mut ok = 0;
        let mut errs = Vec::new();
        decode(&recs, 0, false, |_| ok += 1, |p, e| errs.push((p, e)));
        assert_eq!(ok, 2);
        assert_eq!(
            errs,
            vec![
                (0, DecodeError::StrayChunk),
                (2, DecodeError::UnknownKind(200)),
                (4, DecodeError::Truncated)
            ]
        );
    }

    #[test]
    fn batch_records_expand_to_one_end_per_request() {
        let items: Vec<(u64, bool)> = (1..=4).map(|r| (r * 11, r == 2)).collect();
        let head = Record {
            ts: 99,
            name: 5,
            kind: Kind::Batch as u8,
            len: 4,
            ..Record::default()
        };
        let recs = [
            head,
            pack_batch_chunk(&items[..3]),
            pack_batch_chunk(&items[3..]),
        ];
        let mut got = Vec::new();
        decode(
            &recs,
            10,
            false,
            |d| got.push(d.clone()),
            |_, e| panic!("{e:?}"),
        );
        let summary: Vec<_> = got
            .iter()
            .map(|d| (d.pos, d.sub, d.head.rid, d.head.flags, d.head.ts, d.kind))
            .collect();
        let (a, f) = (flag::AUTO_NEXT_ANON, flag::THREAD_FINISH);
        assert_eq!(
            summary,
            [
                (11, 1, 11, a, 99, Kind::SliceEnd),
                (11, 2, 22, f, 99, Kind::SliceEnd),
                (11, 3, 33, a, 99, Kind::SliceEnd),
                (12, 1, 44, a, 99, Kind::SliceEnd),
            ]
        );
    }

    #[test]
    fn records_decoded_in_pieces_match_decoded_whole() {
        let text = "a request id long enough for several chunks";
        let mut recs = vec![Record::default(); 1 + chunks_for(text.len())];
        recs[0] = Record {
            kind: Kind::ReqStart as u8,
            len: text.len() as u16,
            ..Record::default()
        };
        write_chunks(text.as_bytes(), &mut recs, 1);
        let items: Vec<(u64, bool)> = (1..=5).map(|r| (r, false)).collect();
        recs.push(Record {
            kind: Kind::Batch as u8,
            len: 5,
            ..Record::default()
        });
        recs.push(pack_batch_chunk(&items[..3]));
        recs.push(pack_batch_chunk(&items[3..]));
        recs.push(Record {
            kind: Kind::SliceStart as u8,
            ..Record::default()
        });
        // A head whose chunks never come: reported once the ring has nothing more.
        recs.push(Record {
            kind: Kind::Attr as u8,
            len: 40,
            ..Record::default()
        });
        let mut whole = Vec::new();
        let mut errs = Vec::new();
        let used = decode(
            &recs,
            3,
            false,
            |d| whole.push(d.clone()),
            |p, e| errs.push((p, e)),
        );
        assert_eq!(used, recs.len());
        assert_eq!(whole.len(), 1 + 5 + 1);
        assert_eq!(errs, [(3 + recs.len() as u64 - 1, DecodeError::Truncated)]);
        for piece in 1..=recs.len() {
            let (mut got, mut got_errs, mut carry, mut pos) =
                (Vec::new(), Vec::new(), Vec::new(), 3);
            for (k, chunk) in recs.chunks(piece).enumerate() {
                carry.extend_from_slice(chunk);
                let more = (k + 1) * piece < recs.len();
                let used = decode(
                    &carry,
                    pos,
                    more,
                    |d| got.push(d.clone()),
                    |p, e| got_errs.push((p, e)),
                );
                carry.drain(..used);
                pos += used as u64;
            }
            assert!(carry.is_empty(), "piece {piece}");
            assert_eq!(got, whole, "piece {piece}");
            assert_eq!(got_errs, errs, "piece {piece}");
        }
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("abc", 10), "abc");
    }
}
