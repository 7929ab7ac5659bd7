//! `slice_batch` on the wire: one `Batch` head (`len` = number of requests, one timestamp, the
//! name) and its requests packed three `(rid, finished)` items to a chunk, the rids in `ts`,
//! `rid` and `value`, the finished bits in `name`. Each item stands for the `SliceEnd` record
//! [`items`] gives back, for the decoder and the traced thread's own replay alike.

use super::record::{flag, Kind, Record};

/// Requests one batch chunk carries.
pub const PER_CHUNK: usize = 3;

/// Most chunks one batch record has; the decoder refuses a head that announces more.
pub const MAX_CHUNKS: usize = 255;

/// Requests one batch record carries at most; longer batches are split.
pub const MAX_ITEMS: usize = MAX_CHUNKS * PER_CHUNK;

/// Chunk records after a batch head of `items` requests.
#[inline]
pub const fn chunks_for(items: usize) -> usize {
    items.div_ceil(PER_CHUNK)
}

/// The head of a batch of `items` requests (at most [`MAX_ITEMS`]) ending slices named `name`
/// of trace level `level`; `flags` may hold `MAYBE_UNSTARTED` and `CLOSE_ONLY`.
#[inline(always)]
pub fn head(ts: u64, name: u32, level: u8, flags: u8, items: usize) -> Record {
    debug_assert!(items <= MAX_ITEMS);
    Record {
        ts,
        rid: 0,
        value: level as u64,
        name,
        kind: Kind::Batch as u8,
        flags,
        len: items as u16,
    }
}

/// Packs up to three `(rid, finished)` items into one chunk.
#[inline(always)]
pub fn pack_chunk(items: &[(u64, bool)]) -> Record {
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

/// One request of a batch, as the record it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Which chunk after the head holds it (0 for the first).
    pub chunk: usize,
    /// 1 + its index within that chunk.
    pub sub: u8,
    /// An end of the request's current slice, named by the batch, with `AUTO_NEXT_ANON`, or
    /// `THREAD_FINISH` for a finished request; the head's time.
    pub end: Record,
}

/// The items of the batch `head` heads, read from `chunks` (the records after it, in order;
/// items past the head's count, or past the chunks given, are none).
pub fn items<'a>(
    head: &'a Record,
    chunks: impl IntoIterator<Item = Record> + 'a,
) -> impl Iterator<Item = Item> + 'a {
    let count = head.len as usize;
    chunks
        .into_iter()
        .take(chunks_for(count))
        .enumerate()
        .flat_map(move |(ci, c)| {
            let n = (count - ci * PER_CHUNK).min(PER_CHUNK);
            [c.ts, c.rid, c.value]
                .into_iter()
                .enumerate()
                .take(n)
                .map(move |(k, rid)| Item {
                    chunk: ci,
                    sub: 1 + k as u8,
                    end: end_record(head, rid, c.name & (1 << k) != 0),
                })
        })
}

#[inline]
fn end_record(head: &Record, rid: u64, finished: bool) -> Record {
    Record {
        ts: head.ts,
        rid,
        value: head.value,
        name: head.name,
        kind: Kind::SliceEnd as u8,
        flags: (head.flags & (flag::TS_UNIX | flag::MAYBE_UNSTARTED))
            | if finished {
                flag::THREAD_FINISH
            } else if head.flags & flag::CLOSE_ONLY != 0 {
                0
            } else {
                flag::AUTO_NEXT_ANON
            },
        len: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_back_as_the_ends_they_stand_for() {
        let reqs: Vec<(u64, bool)> = (1..=4).map(|r| (r * 11, r == 2)).collect();
        let head = head(99, 5, 0, 0, reqs.len());
        let chunks = [pack_chunk(&reqs[..3]), pack_chunk(&reqs[3..])];
        assert_eq!(chunks.len(), chunks_for(reqs.len()));
        let got: Vec<_> = items(&head, chunks)
            .map(|i| (i.chunk, i.sub, i.end.rid, i.end.flags, i.end.ts, i.end.name))
            .collect();
        let (a, f) = (flag::AUTO_NEXT_ANON, flag::THREAD_FINISH);
        assert_eq!(
            got,
            [
                (0, 1, 11, a, 99, 5),
                (0, 2, 22, f, 99, 5),
                (0, 3, 33, a, 99, 5),
                (1, 1, 44, a, 99, 5),
            ]
        );
        let end = items(&head, chunks).next().unwrap().end;
        assert_eq!(end.kind, Kind::SliceEnd as u8);
        assert_eq!((end.value, end.len), (0, 0));
    }

    #[test]
    fn items_stop_at_the_count_and_at_the_chunks_given() {
        let head = head(1, 2, 0, 0, 4);
        let full = pack_chunk(&[(7, false), (8, false), (9, false)]);
        // Chunks past the count are not read; a last chunk's unused places are not items.
        assert_eq!(items(&head, [full, full, full]).count(), 4);
        // Fewer chunks than the count asks for: the items they hold.
        assert_eq!(items(&head, [full]).count(), 3);
        assert_eq!(items(&head, []).count(), 0);
    }

    #[test]
    fn a_timestamp_given_by_the_caller_stays_one() {
        let mut h = head(5, 1, 0, 0, 1);
        h.flags = flag::TS_UNIX;
        let i = items(&h, [pack_chunk(&[(3, true)])]).next().unwrap();
        assert_eq!(i.end.flags, flag::TS_UNIX | flag::THREAD_FINISH);
    }
}
