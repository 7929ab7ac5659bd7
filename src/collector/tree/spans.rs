//! Turning closed state into finished spans: slices as `SliceSpan`, thread and request spans as
//! whole `SpanData`; their error statuses; attribute values as records carry them.

use super::request::{OpenSlice, Request, RoomSpan, ThreadSpan};
use super::ProcessInfo;
use crate::collector::finished::{ns_to_time, own_ctx, Finished, SliceExtras, SliceSpan};
use crate::wire::array;
use crate::wire::decode::Decoded;
use crate::wire::record::flag;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceState};
use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use slicetrace_spans::schema;
use std::borrow::Cow;

/// The status of a slice closed because its thread span or request ended first.
pub const UNFINISHED_SLICE: &str = "unfinished: still open when its thread span or request ended";
/// The status of a request closed by a `req_start` of the same rid.
pub const RESTARTED: &str = "request started again before it finished";
/// The status of a request closed for want of records.
pub const EVICTED: &str = "evicted: no activity within the idle timeout";

pub fn error_status(msg: impl Into<Cow<'static, str>>) -> Status {
    Status::Error {
        description: msg.into(),
    }
}

/// Unset when the end names the slice as its start did (or either has no name), else an error
/// naming both.
pub fn end_status(started: Option<&'static str>, ended: Option<&'static str>) -> Status {
    match (started, ended) {
        // Names are interned: one text, one pointer (the texts compared only for a name
        // registered twice).
        (Some(s), Some(e)) if !std::ptr::eq(s, e) && s != e => error_status(format!(
            "slice_end name mismatch: started as {s:?}, ended as {e:?}"
        )),
        _ => Status::Unset,
    }
}

/// An `Attr` record's key and value; `None` when the key did not decode.
pub fn decode_attr(rec: &Decoded, key: Option<&'static str>) -> Option<KeyValue> {
    let key = key?;
    let v = rec.head.value;
    let vt = rec.head.flags & flag::VALUE_MASK;
    if rec.head.flags & flag::ARRAY != 0 {
        let list = array::decode(vt, v, &rec.payload);
        return Some(KeyValue::new(key, OtelValue::Array(list)));
    }
    let value = match vt {
        flag::VALUE_I64 => OtelValue::I64(v as i64),
        flag::VALUE_F64 => OtelValue::F64(f64::from_bits(v)),
        flag::VALUE_BOOL => OtelValue::Bool(v != 0),
        _ => OtelValue::String(String::from_utf8_lossy(&rec.payload).into_owned().into()),
    };
    Some(KeyValue::new(key, value))
}

/// A slice ended at `end_ns`; `rid` is its request's index in the batch's table.
#[allow(clippy::too_many_arguments)]
pub fn slice(
    trace: u128,
    state: &TraceState,
    s: OpenSlice,
    name: &'static str,
    end_ns: u64,
    status: Status,
    unfinished: bool,
    tid: u64,
    rid: u32,
) -> Finished {
    let plain = s.extras.is_none() && *state == TraceState::NONE && status == Status::Unset;
    let extras = if plain && !unfinished {
        None
    } else {
        let mut x = s.extras.unwrap_or_default();
        x.state = state.clone();
        x.status = status;
        x.unfinished = unfinished;
        SliceExtras::keep_if_any(x)
    };
    Finished::Slice(SliceSpan {
        trace,
        id: s.id,
        parent: s.parent,
        name,
        start_ns: s.start_ns,
        end_ns,
        tid,
        link: s.link,
        rid,
        extras,
    })
}

/// The span a thread span hangs under: its request span, which is another process's for a
/// request this process joined.
#[derive(Clone, Copy, Debug)]
pub struct Parent {
    pub span: u64,
    pub remote: bool,
}

/// `t`'s thread span, under `parent`, ended at `end_ns`; takes the span's own attributes and
/// events.
pub fn thread(
    info: &ProcessInfo,
    trace: u128,
    state: &TraceState,
    parent: Parent,
    t: &mut ThreadSpan,
    end_ns: u64,
) -> Finished {
    let m = &t.tenure.meta;
    let label = m.label();
    let mut attrs = vec![
        KeyValue::new(schema::THREAD_LABEL, label.to_owned()),
        KeyValue::new(schema::HOST_ID, info.host_id.clone()),
        KeyValue::new(schema::PID, m.tid as i64),
        KeyValue::new(schema::THREAD_ID, m.tid as i64),
        KeyValue::new(schema::THREAD_NAME, m.name.clone()),
    ];
    if let Some(tp) = m.tp_rank {
        attrs.push(KeyValue::new(schema::TP_RANK, tp as i64));
    }
    if let Some(pp) = m.pp_rank {
        attrs.push(KeyValue::new(schema::PP_RANK, pp as i64));
    }
    if let Some(dp) = m.dp_rank {
        attrs.push(KeyValue::new(schema::DP_RANK, dp as i64));
    }
    attrs.append(&mut t.own_attrs);
    let mut events = SpanEvents::default();
    events.events = std::mem::take(&mut t.own_events);
    events.dropped_count = std::mem::take(&mut t.dropped_events);
    Finished::Span(Box::new(SpanData {
        span_context: own_ctx(trace, t.id, state.clone()),
        parent_span_id: SpanId::from_bytes(parent.span.to_be_bytes()),
        parent_span_is_remote: parent.remote,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(schema::thread_span_name(
            label,
            m.name_ranks(),
            &info.host_id,
            m.tid,
        )),
        start_time: ns_to_time(t.start_ns),
        end_time: ns_to_time(end_ns.max(t.start_ns)),
        attributes: attrs,
        dropped_attributes_count: std::mem::take(&mut t.dropped_attrs),
        events,
        links: SpanLinks::default(),
        status: if t.error {
            error_status("")
        } else {
            Status::Unset
        },
        instrumentation_scope: info.scope.clone(),
    }))
}

/// The request span, ended at `end_ns`; `why` marks it unfinished with that reason. Its name
/// and attributes are the reference's: `"{role} Req {rid[:8]}"`, and the whole rid.
pub fn request(
    info: &ProcessInfo,
    req: Request,
    end_ns: u64,
    why: Option<&'static str>,
) -> Finished {
    let rid = req.rid_text.unwrap_or_else(|| req.rid.0.to_string());
    let name = schema::request_span_name(req.role.as_deref(), &rid);
    let mut attrs = Vec::with_capacity(req.attrs.len() + 2);
    attrs.push(KeyValue::new(schema::RID, rid));
    let status = unfinished(&mut attrs, why);
    attrs.extend(req.attrs);
    let mut events = SpanEvents::default();
    events.events = req.events;
    Finished::Span(Box::new(SpanData {
        span_context: own_ctx(req.trace_id, req.span_id, req.trace_state),
        parent_span_id: SpanId::from_bytes(req.parent.to_be_bytes()),
        parent_span_is_remote: req.parent_remote,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(name),
        start_time: ns_to_time(req.start_ns),
        end_time: ns_to_time(end_ns.max(req.start_ns)),
        attributes: attrs,
        dropped_attributes_count: req.dropped_attrs,
        events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: info.scope.clone(),
    }))
}

/// The bootstrap room span `room` of `req`, above its request span, over the same time; `why`
/// marks it unfinished with the request.
pub fn room(
    info: &ProcessInfo,
    req: &Request,
    room: RoomSpan,
    end_ns: u64,
    why: Option<&'static str>,
) -> Finished {
    let number = req.bootstrap_room.unwrap_or(0);
    let mut attrs = vec![KeyValue::new(
        schema::BOOTSTRAP_ROOM,
        schema::room_text(number),
    )];
    let status = unfinished(&mut attrs, why);
    Finished::Span(Box::new(SpanData {
        span_context: own_ctx(req.trace_id, room.id, req.trace_state.clone()),
        parent_span_id: SpanId::from_bytes(room.parent.unwrap_or(0).to_be_bytes()),
        parent_span_is_remote: room.parent.is_some(),
        span_kind: SpanKind::Internal,
        name: Cow::Owned(schema::room_span_name(number)),
        start_time: ns_to_time(req.start_ns),
        end_time: ns_to_time(end_ns.max(req.start_ns)),
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: info.scope.clone(),
    }))
}

/// The status of a request-level span closed for `why`, marking it unfinished in `attrs`.
fn unfinished(attrs: &mut Vec<KeyValue>, why: Option<&'static str>) -> Status {
    match why {
        Some(w) => {
            attrs.push(KeyValue::new(schema::UNFINISHED, true));
            error_status(w)
        }
        None => Status::Unset,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{attr, decoded, name_id, Harness, Upstream};
    use super::*;
    use crate::wire::record::{Kind, Record};
    use opentelemetry::trace::TraceId;

    #[test]
    fn request_and_thread_spans_carry_their_names_and_attributes() {
        let mut h = Harness::new();
        h.ranks(0, Some(2), Some(1));
        let up = Upstream {
            trace_id: 0xfeed,
            link: 0,
            extra: 0x66,
        };
        let text = "chat_0123456789ab";
        h.start_with(0, 5, flag::HAS_ROOM, 9, Some(up), Some("k=v"), text);
        h.slice(0, 5, "a");
        h.end(0, 5, "a", 0);
        h.finish(0, 5);
        h.housekeeping(true);

        // The room span under the gateway's span, the request span under the room span.
        let room = h.span("Bootstrap Room 0x9");
        assert_eq!(room.span_kind, SpanKind::Internal);
        assert_eq!(room.span_context.trace_id(), TraceId::from(0xfeedu128));
        assert_eq!(room.parent_span_id, SpanId::from(0x66u64));
        assert!(room.parent_span_is_remote);
        let keys: Vec<_> = room.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, [schema::BOOTSTRAP_ROOM]);
        assert_eq!(
            attr(&room, schema::BOOTSTRAP_ROOM),
            Some(&OtelValue::from("0x9"))
        );

        let req = h.span(" Req 01234567");
        assert_eq!(req.span_kind, SpanKind::Internal);
        assert_eq!(req.span_context.trace_id(), TraceId::from(0xfeedu128));
        assert_eq!(req.parent_span_id, room.span_context.span_id());
        assert!(!req.parent_span_is_remote);
        let keys: Vec<_> = req.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, [schema::RID]);
        assert_eq!(attr(&req, schema::RID), Some(&OtelValue::from(text)));
        assert_eq!(req.status, Status::Unset);
        assert_eq!(
            (req.start_time, req.end_time),
            (room.start_time, room.end_time)
        );

        let thread = h.span("t0 [TP 2] (host:host-012 | pid:100)");
        assert!(!thread.parent_span_is_remote);
        assert_eq!(thread.span_kind, SpanKind::Internal);
        assert_eq!(thread.parent_span_id, req.span_context.span_id());
        let want = [
            (schema::THREAD_LABEL, OtelValue::from("t0")),
            (schema::HOST_ID, OtelValue::from("host-0123456789")),
            (schema::PID, OtelValue::I64(100)),
            (schema::THREAD_ID, OtelValue::I64(100)),
            (schema::THREAD_NAME, OtelValue::from("thread-0")),
            (schema::TP_RANK, OtelValue::I64(2)),
            (schema::DP_RANK, OtelValue::I64(1)),
        ];
        let got: Vec<_> = thread
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone()))
            .collect();
        assert_eq!(got, want);

        // The upstream's tracestate goes with every span of the request.
        let a = h.span("a");
        for s in [&room, &req, &thread, &a] {
            assert_eq!(s.span_context.trace_state().header(), "k=v", "{}", s.name);
        }
        assert_eq!(attr(&a, schema::RID), Some(&OtelValue::from(text)));
        assert_eq!(attr(&a, schema::THREAD_ID), Some(&OtelValue::I64(100)));
    }

    #[test]
    fn attribute_values_decode_by_their_type() {
        let cases = [
            (flag::VALUE_I64, (-5i64) as u64, "", OtelValue::I64(-5)),
            (flag::VALUE_F64, 1.5f64.to_bits(), "", OtelValue::F64(1.5)),
            (flag::VALUE_BOOL, 1, "", OtelValue::Bool(true)),
            (flag::VALUE_STR, 0, "text", OtelValue::from("text")),
        ];
        for (ty, value, text, want) in cases {
            let mut recs = vec![Record::default(); 1 + crate::wire::record::chunks_for(text.len())];
            recs[0] = Record {
                value,
                name: name_id("key"),
                kind: Kind::Attr as u8,
                flags: ty,
                len: text.len() as u16,
                ..Record::default()
            };
            crate::wire::record::write_chunks(text.as_bytes(), &mut recs, 1);
            let d = &decoded(&recs, 0)[0];
            assert_eq!(
                decode_attr(d, Some("key")),
                Some(KeyValue::new("key", want))
            );
            assert_eq!(decode_attr(d, None), None);
        }
    }

    #[test]
    fn an_end_errs_only_when_both_names_differ() {
        let error = |s: &str| error_status(s.to_owned());
        let cases = [
            (Some("a"), Some("a"), Status::Unset),
            (None, Some("a"), Status::Unset),
            (Some("a"), None, Status::Unset),
            (None, None, Status::Unset),
            (
                Some("a"),
                Some("b"),
                error("slice_end name mismatch: started as \"a\", ended as \"b\""),
            ),
        ];
        for (started, ended, want) in cases {
            assert_eq!(end_status(started, ended), want, "{started:?} {ended:?}");
        }
    }
}
