//! What an origin record — a `ReqStart`, or a `SetPropagate` — says about where a request's spans
//! in this process hang. Starting and joining a request both read it through [`Origin`].

use super::super::finished::LinkTo;
use super::super::stats::Counters;
use crate::ids::Rid;
use crate::wire::decode::Decoded;
use crate::wire::origin::{decode_origin, origin_ids};
use crate::wire::record::{flag, Kind};
use opentelemetry::trace::TraceState;

/// How the request came to this thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// `req_start`: the request begins here (under an upstream parent, if it has one).
    Started,
    /// `set_propagate_context` with another process's context: this process's thread spans
    /// hang under the sender's request span; it opens no request span of its own.
    Joined,
    /// `set_propagate_context` with this process's context: the sender's request span is ours.
    HandedOver,
}

/// An origin record, decoded.
#[derive(Debug)]
pub struct Origin<'a> {
    pub arrival: Arrival,
    pub trace_id: u128,
    /// The request span this record's thread hangs under.
    pub request_span: u64,
    /// A start's bootstrap room span: this process's own (`room_parent` above it), or another
    /// node's that the request span hangs under (`joins_room`). 0 for a join.
    pub room_span: u64,
    /// A start whose upstream names another node's room span: the request span hangs there,
    /// and this process opens no room span.
    pub joins_room: bool,
    /// A start that opens no room span: the request span hangs under `room_parent`, if any.
    pub no_room_span: bool,
    /// The remote parent of this process's own room span (a gateway's `traceparent`).
    pub room_parent: Option<u64>,
    /// For a join: the sender's request span, which this thread continues.
    pub parent: Option<u64>,
    /// Where the thread's first slice links to (the upstream's or the sender's slice).
    pub link: Option<LinkTo>,
    /// The session's sampler keeps the request: by the upstream's or sender's decision under a
    /// parent-based sampler, else by its root sampler.
    pub sampled: bool,
    /// `req_start`'s bootstrap room.
    pub room: Option<u64>,
    tracestate: Option<&'a [u8]>,
    role: Option<&'a [u8]>,
    rid_text: &'a [u8],
}

impl Origin<'_> {
    /// Decodes `rec`, written by a thread whose span ids derive from `seed`, in the process
    /// tagged `process_tag`. `None` when it is no origin record, or its context is cut short.
    pub fn decode(rec: &Decoded, seed: u64, process_tag: u64) -> Option<Origin<'_>> {
        let head = &rec.head;
        let parts = decode_origin(head, &rec.payload).ok()?;
        let upstream = parts.upstream;
        let ids = origin_ids(seed, rec.pos, head, upstream.as_ref())?;
        let flagged = upstream.as_ref().map(|_| head.flags & flag::SAMPLED != 0);
        let sampled = crate::sampling::decide(Rid(head.rid), flagged);
        let joins_room =
            rec.kind == Kind::ReqStart && upstream.is_some() && head.flags & flag::JOINS_ROOM != 0;
        let (arrival, parent, room_parent, link) = match (rec.kind, &upstream) {
            (Kind::SetPropagate, Some(u)) => {
                let same_process = u.extra == process_tag;
                let link = (u.link != 0).then(|| LinkTo::new(u.trace_id, u.link, !same_process));
                let arrival = if same_process {
                    Arrival::HandedOver
                } else {
                    Arrival::Joined
                };
                (arrival, Some(head.value), None, link)
            }
            (_, Some(u)) => {
                let link = (u.link != 0).then(|| LinkTo::new(u.trace_id, u.link, true));
                let room_parent = (!joins_room).then_some(u.extra);
                (Arrival::Started, None, room_parent, link)
            }
            (_, None) => (Arrival::Started, None, None, None),
        };
        let room =
            (rec.kind == Kind::ReqStart && head.flags & flag::HAS_ROOM != 0).then_some(head.value);
        Some(Origin {
            arrival,
            trace_id: ids.trace_id,
            request_span: ids.request_span,
            room_span: ids.room_span,
            joins_room,
            no_room_span: rec.kind == Kind::ReqStart && head.flags & flag::NO_ROOM_SPAN != 0,
            room_parent,
            parent,
            link,
            sampled,
            room,
            tracestate: parts.tracestate,
            role: parts.role,
            rid_text: parts.text,
        })
    }

    /// The role `req_start` gave, when it gave one that is not empty.
    pub fn role(&self) -> Option<String> {
        self.role
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into_owned())
    }

    /// The rid as the caller spelled it, when it gave a text.
    pub fn rid_text(&self) -> Option<String> {
        (!self.rid_text.is_empty()).then(|| String::from_utf8_lossy(self.rid_text).into_owned())
    }

    /// The W3C tracestate the record carries; an invalid one is counted and left out. Parsed
    /// only by the record that opens the request: a later hand-over keeps the request's own.
    pub fn trace_state(&self, c: &Counters) -> TraceState {
        parse_trace_state(c, self.tracestate)
    }
}

/// A tracestate from an origin record; one that is not valid W3C tracestate is counted, not kept.
pub(crate) fn parse_trace_state(c: &Counters, text: Option<&[u8]>) -> TraceState {
    let Some(text) = text else {
        return TraceState::NONE;
    };
    match std::str::from_utf8(text).ok().map(str::parse::<TraceState>) {
        Some(Ok(st)) if !text.is_empty() => st,
        _ => {
            Counters::add(&c.tracestate_refused, 1);
            TraceState::NONE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{origin_record, Upstream as Up};
    use super::*;
    use crate::ids::{derive_span_id, derive_trace_id, Salt};
    use std::sync::atomic::Ordering::Relaxed;

    const SEED: u64 = 0x5eed;
    const TAG: u64 = 0x7a6;

    #[test]
    fn each_kind_of_origin_decodes_to_where_its_spans_hang() {
        struct Case {
            what: &'static str,
            kind: Kind,
            flags: u8,
            value: u64,
            upstream: Option<Up>,
            arrival: Arrival,
            trace_id: u128,
            request_span: u64,
            room_span: u64,
            joins_room: bool,
            room_parent: Option<u64>,
            parent: Option<u64>,
            link: Option<LinkTo>,
            sampled: bool,
            room: Option<u64>,
        }
        let pos = 40;
        let (up_trace, rid) = (0xabcd_u128 << 64 | 0x1234, 9);
        let up = |link, extra| Up {
            trace_id: up_trace,
            link,
            extra,
        };
        let cases = [
            Case {
                what: "local start",
                kind: Kind::ReqStart,
                flags: flag::HAS_ROOM,
                value: 77,
                upstream: None,
                arrival: Arrival::Started,
                trace_id: derive_trace_id(SEED, pos),
                request_span: derive_span_id(SEED, pos, Salt::REQUEST),
                room_span: derive_span_id(SEED, pos, Salt::ROOM),
                joins_room: false,
                room_parent: None,
                parent: None,
                link: None,
                sampled: true,
                room: Some(77),
            },
            Case {
                what: "start under an upstream, not sampled",
                kind: Kind::ReqStart,
                flags: flag::UPSTREAM,
                value: 77,
                upstream: Some(up(5, 6)),
                arrival: Arrival::Started,
                trace_id: up_trace,
                request_span: derive_span_id(SEED, pos, Salt::REQUEST),
                room_span: derive_span_id(SEED, pos, Salt::ROOM),
                joins_room: false,
                room_parent: Some(6),
                parent: None,
                link: Some(LinkTo::new(up_trace, 5, true)),
                sampled: false,
                room: None,
            },
            Case {
                what: "start joining another node's room",
                kind: Kind::ReqStart,
                flags: flag::UPSTREAM | flag::JOINS_ROOM | flag::SAMPLED | flag::HAS_ROOM,
                value: 77,
                upstream: Some(up(5, 6)),
                arrival: Arrival::Started,
                trace_id: up_trace,
                request_span: derive_span_id(SEED, pos, Salt::REQUEST),
                room_span: 6,
                joins_room: true,
                room_parent: None,
                parent: None,
                link: Some(LinkTo::new(up_trace, 5, true)),
                sampled: true,
                room: Some(77),
            },
            Case {
                what: "joined from another process",
                kind: Kind::SetPropagate,
                flags: flag::SAMPLED,
                value: 33,
                upstream: Some(up(5, TAG + 1)),
                arrival: Arrival::Joined,
                trace_id: up_trace,
                request_span: 33,
                room_span: 0,
                joins_room: false,
                room_parent: None,
                parent: Some(33),
                link: Some(LinkTo::new(up_trace, 5, true)),
                sampled: true,
                room: None,
            },
            Case {
                what: "handed over in this process, no slice to link to",
                kind: Kind::SetPropagate,
                flags: flag::HAS_ROOM,
                value: 33,
                upstream: Some(up(0, TAG)),
                arrival: Arrival::HandedOver,
                trace_id: up_trace,
                request_span: 33,
                room_span: 0,
                joins_room: false,
                room_parent: None,
                parent: Some(33),
                link: None,
                sampled: false,
                room: None,
            },
        ];
        for k in cases {
            let rec = origin_record(k.kind, rid, pos, k.flags, k.value, k.upstream, None, "");
            let o = Origin::decode(&rec, SEED, TAG).expect(k.what);
            assert_eq!(o.arrival, k.arrival, "{}", k.what);
            assert_eq!(o.trace_id, k.trace_id, "{}", k.what);
            assert_eq!(o.request_span, k.request_span, "{}", k.what);
            assert_eq!(o.room_span, k.room_span, "{}", k.what);
            assert_eq!(o.joins_room, k.joins_room, "{}", k.what);
            assert_eq!(o.room_parent, k.room_parent, "{}", k.what);
            assert_eq!(o.parent, k.parent, "{}", k.what);
            assert_eq!(o.link, k.link, "{}", k.what);
            assert_eq!(o.sampled, k.sampled, "{}", k.what);
            assert_eq!(o.room, k.room, "{}", k.what);
            assert_eq!(o.rid_text(), None, "{}", k.what);
        }
    }

    #[test]
    fn text_and_tracestate_follow_the_context() {
        let c = Counters::default();
        let up = Some(Up {
            trace_id: 1,
            link: 2,
            extra: 3,
        });
        for (kind, flags, upstream) in [
            (Kind::ReqStart, 0, None),
            (Kind::ReqStart, flag::UPSTREAM, up),
            (Kind::SetPropagate, 0, up),
        ] {
            let rec = origin_record(kind, 9, 0, flags, 0, upstream, Some("k=v"), "chat_42");
            let o = Origin::decode(&rec, SEED, TAG).unwrap();
            assert_eq!(o.rid_text().as_deref(), Some("chat_42"), "{kind:?}");
            assert_eq!(o.trace_state(&c).header(), "k=v", "{kind:?}");
        }
        let rec = origin_record(Kind::ReqStart, 9, 0, 0, 0, None, Some("not valid"), "");
        let o = Origin::decode(&rec, SEED, TAG).unwrap();
        assert_eq!(o.trace_state(&c), TraceState::NONE);
        assert_eq!(c.tracestate_refused.load(Relaxed), 1);
    }

    #[test]
    fn a_context_cut_short_or_another_kind_is_no_origin() {
        // A set_propagate record whose context is missing: no caller writes one.
        let mut rec = origin_record(Kind::ReqStart, 9, 0, 0, 0, None, None, "");
        rec.kind = Kind::SetPropagate;
        rec.head.kind = Kind::SetPropagate as u8;
        assert!(rec.payload.len() < 32);
        assert!(Origin::decode(&rec, SEED, TAG).is_none());
        rec.kind = Kind::ReqStart;
        rec.head.kind = Kind::ReqStart as u8;
        rec.head.flags = flag::UPSTREAM;
        assert!(Origin::decode(&rec, SEED, TAG).is_none());
        rec.head.flags = 0;
        assert!(Origin::decode(&rec, SEED, TAG).is_some());
        rec.kind = Kind::SliceStart;
        rec.head.kind = Kind::SliceStart as u8;
        assert!(Origin::decode(&rec, SEED, TAG).is_none());
    }
}
