//! Finished spans on their way from the drainer to the export thread.
//!
//! Slices, nearly every span, travel as `SliceSpan`: plain fields, no allocation of their own.
//! The export thread turns them into `SpanData` just before the sink takes them, so the
//! attribute and link vectors are allocated and freed on one thread, and the drainer and the
//! export thread do not contend on the allocator's lock for every span.

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value as OtelValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use slicetrace_spans::schema;
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// Slices, the common case, stay unboxed: a box each would be the allocation this type avoids.
#[allow(clippy::large_enum_variant)]
pub enum Finished {
    Slice(SliceSpan),
    /// A thread or request span: a few per request, built whole on the drainer.
    Span(Box<SpanData>),
}

/// A link to the span before: in this request's trace, or the sender's in another process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTo {
    pub trace: u128,
    pub span: u64,
    pub remote: bool,
}

impl LinkTo {
    pub fn new(trace: u128, span: u64, remote: bool) -> LinkTo {
        LinkTo {
            trace,
            span,
            remote,
        }
    }

    fn context(self) -> SpanContext {
        span_context(self.trace, self.span, self.remote, TraceState::NONE)
    }
}

/// A closed slice, everything its `SpanData` needs. What most slices lack waits in `extras`,
/// so the common slice is 128 bytes: both threads move every slice through memory once.
pub struct SliceSpan {
    pub trace: u128,
    pub id: u64,
    pub parent: u64,
    pub name: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub tid: u64,
    pub link: Option<LinkTo>,
    /// Index of the request's `rid` in its batch's table (see `SpanOut::rid`).
    pub rid: u32,
    pub extras: Option<Box<SliceExtras>>,
}

/// What a slice has only now and then: the user's attributes and events, a tracestate from
/// upstream, an error status, the unfinished mark.
#[derive(Default)]
pub struct SliceExtras {
    /// The user's attributes; `rid`, `thread.id` and the unfinished mark are added on export.
    pub attrs: Vec<KeyValue>,
    pub dropped_attrs: u32,
    pub events: Vec<Event>,
    pub dropped_events: u32,
    pub state: TraceState,
    pub status: Status,
    pub unfinished: bool,
}

impl SliceExtras {
    /// Whether anything differs from the default.
    pub fn any(&self) -> bool {
        !self.attrs.is_empty()
            || !self.events.is_empty()
            || self.dropped_attrs != 0
            || self.dropped_events != 0
            || self.state != TraceState::NONE
            || self.status != Status::Unset
            || self.unfinished
    }

    /// Kept only when something differs from the default.
    pub fn keep_if_any(x: Box<SliceExtras>) -> Option<Box<SliceExtras>> {
        x.any().then_some(x)
    }
}

impl Finished {
    /// `rids`: the table of the batch the span came in.
    #[inline(always)]
    pub fn into_span_data(self, scope: &InstrumentationScope, rids: &[OtelValue]) -> SpanData {
        match self {
            Finished::Slice(s) => s.into_span_data(scope, rids),
            Finished::Span(d) => *d,
        }
    }
}

impl SliceSpan {
    #[inline(always)]
    fn into_span_data(self, scope: &InstrumentationScope, rids: &[OtelValue]) -> SpanData {
        // Always there: the drainer puts a request's rid in the table before naming it.
        let rid = rids.get(self.rid as usize).cloned();
        debug_assert!(
            rid.is_some(),
            "rid {} outside a table of {}",
            self.rid,
            rids.len()
        );
        let x = self.extras.map(|b| *b).unwrap_or_default();
        let extra = 2 + usize::from(x.unfinished);
        let mut attrs = if x.attrs.is_empty() {
            Vec::with_capacity(extra)
        } else {
            let mut a = x.attrs;
            a.reserve_exact(extra);
            a
        };
        // `rid` and the OpenTelemetry convention `thread.id` on every slice let a reader place a
        // slice on its thread's track, and name its request, without waiting for the thread and
        // request spans, which end last.
        attrs.push(KeyValue::new(
            schema::RID,
            rid.unwrap_or_else(|| OtelValue::from("")),
        ));
        attrs.push(KeyValue::new(schema::THREAD_ID, self.tid as i64));
        if x.unfinished {
            attrs.push(KeyValue::new(schema::UNFINISHED, true));
        }
        let mut events = SpanEvents::default();
        events.events = x.events;
        events.dropped_count = x.dropped_events;
        let mut links = SpanLinks::default();
        if let Some(l) = self.link {
            links.links = vec![Link::new(l.context(), Vec::new(), 0)];
        }
        SpanData {
            span_context: own_ctx(self.trace, self.id, x.state),
            parent_span_id: SpanId::from_bytes(self.parent.to_be_bytes()),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(self.name),
            start_time: ns_to_time(self.start_ns),
            end_time: ns_to_time(self.end_ns.max(self.start_ns)),
            attributes: attrs,
            dropped_attributes_count: x.dropped_attrs,
            events,
            links,
            status: x.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

pub fn ns_to_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The context of a span of this process's request, with its tracestate.
pub fn own_ctx(trace: u128, span: u64, state: TraceState) -> SpanContext {
    span_context(trace, span, false, state)
}

fn span_context(trace: u128, span: u64, remote: bool, state: TraceState) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace.to_be_bytes()),
        SpanId::from_bytes(span.to_be_bytes()),
        // Only requests the sampler keeps are built into spans (see `sampling`).
        TraceFlags::SAMPLED,
        remote,
        state,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(unfinished: bool, link: Option<LinkTo>) -> SliceSpan {
        let extras = SliceExtras {
            attrs: vec![KeyValue::new("batch", 3i64)],
            dropped_attrs: 1,
            dropped_events: 2,
            unfinished,
            ..SliceExtras::default()
        };
        SliceSpan {
            trace: 0x0102,
            id: 7,
            parent: 5,
            name: "prefill",
            start_ns: 2_000,
            end_ns: 1_000,
            tid: 42,
            link,
            rid: 1,
            extras: SliceExtras::keep_if_any(Box::new(extras)),
        }
    }

    #[test]
    fn a_slice_becomes_the_span_it_stands_for() {
        let scope = InstrumentationScope::builder("slicetrace").build();
        let rids = [OtelValue::from("r0"), OtelValue::from("r1")];
        let linked = LinkTo::new(0x0304, 6, true);
        let d = Finished::Slice(slice(true, Some(linked))).into_span_data(&scope, &rids);
        assert_eq!(d.span_context.trace_id(), TraceId::from(0x0102u128));
        assert_eq!(d.span_context.span_id(), SpanId::from(7u64));
        assert_eq!(d.parent_span_id, SpanId::from(5u64));
        assert_eq!(d.name, "prefill");
        // An end before the start (clock re-anchored between them) is clamped, never negative.
        assert_eq!(d.end_time, d.start_time);
        let keys: Vec<_> = d.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["batch", "rid", "thread.id", "slicetrace.unfinished"]);
        assert_eq!(d.attributes[1].value, OtelValue::from("r1"));
        assert_eq!(d.attributes[2].value, OtelValue::I64(42));
        assert_eq!((d.dropped_attributes_count, d.events.dropped_count), (1, 2));
        assert_eq!(d.links.links.len(), 1);
        let l = &d.links.links[0].span_context;
        assert_eq!(l.trace_id(), TraceId::from(0x0304u128));
        assert_eq!(l.span_id(), SpanId::from(6u64));
        assert!(l.is_remote() && l.is_sampled());
        assert_eq!(d.instrumentation_scope.name(), "slicetrace");

        let d = Finished::Slice(slice(false, None)).into_span_data(&scope, &rids);
        assert_eq!(d.attributes.len(), 3);
        assert!(d.links.links.is_empty());

        let mut plain = slice(false, None);
        plain.extras = SliceExtras::keep_if_any(Box::default());
        assert!(plain.extras.is_none());
        let d = Finished::Slice(plain).into_span_data(&scope, &rids);
        let keys: Vec<_> = d.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["rid", "thread.id"]);
        assert_eq!((d.dropped_attributes_count, d.events.dropped_count), (0, 0));
        assert_eq!(d.status, Status::Unset);
    }

    #[test]
    fn the_common_slice_stays_small() {
        assert!(std::mem::size_of::<SliceSpan>() <= 128);
    }
}
