//! The drainer's reading of ring contents: head records with their payloads, a batch expanded
//! into the ends it stands for. Total on arbitrary input, since the drainer trusts no ring.

use super::array::MAX_ARRAY_BYTES;
use super::batch;
use super::origin::MAX_ORIGIN_PAYLOAD;
use super::record::{chunks_for, read_chunks, Kind, Record};

/// The most chunk records one head record has: an array attribute's or an origin record's,
/// the two longest payloads.
const MAX_CHUNKS: usize = if MAX_ARRAY_BYTES > MAX_ORIGIN_PAYLOAD {
    chunks_for(MAX_ARRAY_BYTES)
} else {
    chunks_for(MAX_ORIGIN_PAYLOAD)
};

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
        let (n, limit) = if kind == Kind::Batch {
            (batch::chunks_for(len), batch::MAX_CHUNKS)
        } else {
            (chunks_for(len), MAX_CHUNKS)
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
            for item in batch::items(head, chunks.iter().copied()) {
                on_record(&Decoded {
                    pos: at + 1 + item.chunk as u64,
                    sub: item.sub,
                    head: item.end,
                    kind: Kind::SliceEnd,
                    payload: Vec::new(),
                });
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
    use crate::wire::record::{flag, write_chunks};

    #[test]
    fn a_head_decodes_with_its_payload() {
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
            batch::pack_chunk(&items[..3]),
            batch::pack_chunk(&items[3..]),
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
        recs.push(batch::pack_chunk(&items[..3]));
        recs.push(batch::pack_chunk(&items[3..]));
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
}
