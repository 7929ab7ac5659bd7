//! Where the tree puts finished spans: a batch for the export queue, up to the room the queue
//! has left; past it (a collector down or too slow) only a count. Spans the queue would drop
//! are not built, so a dead collector does not make the drainer allocate, fill and free them by
//! the million.

use super::finished::Finished;
use opentelemetry::Value as OtelValue;

pub struct SpanOut {
    pub spans: Vec<Finished>,
    /// The `rid` values the slices in `spans` name by index: one reference per request and
    /// batch, instead of one per slice counted up here and down on the export thread.
    rids: Vec<OtelValue>,
    /// Which batch is being filled, so a request knows whether its rid is in `rids` yet.
    epoch: u64,
    /// Spans the export queue can still take.
    room: usize,
    shed: u64,
    /// Set while a request the sampler left out is applied: its spans are not built.
    pub muted: bool,
}

/// Finished spans with the table of request ids their slices name.
pub struct Batch {
    pub spans: Vec<Finished>,
    pub rids: Vec<OtelValue>,
}

/// A request's `rid` attribute, and where it sits in the table of the batch being filled.
pub struct RidAttr {
    value: OtelValue,
    epoch: u64,
    index: u32,
}

impl RidAttr {
    pub fn new(value: OtelValue) -> RidAttr {
        RidAttr {
            value,
            epoch: 0,
            index: 0,
        }
    }
}

impl Default for SpanOut {
    fn default() -> SpanOut {
        SpanOut {
            spans: Vec::new(),
            rids: Vec::new(),
            epoch: 1,
            room: usize::MAX,
            shed: 0,
            muted: false,
        }
    }
}

impl SpanOut {
    pub fn push(&mut self, make: impl FnOnce() -> Finished) {
        if self.muted {
            return;
        }
        if self.spans.len() >= self.room {
            self.shed += 1;
        } else {
            self.spans.push(make());
        }
    }

    /// Where `rid` sits in this batch's table, put there if it is not yet.
    pub fn rid(&mut self, rid: &mut RidAttr) -> u32 {
        if rid.epoch != self.epoch {
            rid.epoch = self.epoch;
            rid.index = self.rids.len() as u32;
            self.rids.push(rid.value.clone());
        }
        rid.index
    }

    /// The spans so far, with their table; the next batch starts a table of its own, with
    /// room for as many (grown from nothing, it would be copied over ten times on the way).
    pub fn take(&mut self) -> Batch {
        self.epoch += 1;
        let (n, r) = (self.spans.len(), self.rids.len());
        Batch {
            spans: std::mem::replace(&mut self.spans, Vec::with_capacity(n)),
            rids: std::mem::replace(&mut self.rids, Vec::with_capacity(r)),
        }
    }

    /// How many spans the export queue can take now: more are counted instead of built.
    pub fn set_room(&mut self, room: usize) {
        self.room = room;
    }

    /// Spans counted instead of built since the last call.
    pub fn take_shed(&mut self) -> u64 {
        std::mem::take(&mut self.shed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shed_spans_are_counted_not_built() {
        let mut out = SpanOut::default();
        let built = std::cell::Cell::new(0);
        let make = || {
            built.set(built.get() + 1);
            Finished::Span(Box::new(opentelemetry_sdk::trace::SpanData {
                span_context: opentelemetry::trace::SpanContext::empty_context(),
                parent_span_id: opentelemetry::trace::SpanId::INVALID,
                parent_span_is_remote: false,
                span_kind: opentelemetry::trace::SpanKind::Internal,
                name: "s".into(),
                start_time: std::time::UNIX_EPOCH,
                end_time: std::time::UNIX_EPOCH,
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                events: Default::default(),
                links: Default::default(),
                status: opentelemetry::trace::Status::Unset,
                instrumentation_scope: Default::default(),
            }))
        };
        out.push(make);
        out.set_room(2);
        out.push(make);
        out.push(make);
        out.push(make);
        assert_eq!(built.get(), 2);
        assert_eq!(out.spans.len(), 2);
        assert_eq!(out.take_shed(), 2);
        assert_eq!(out.take_shed(), 0);
        out.spans.clear();
        out.set_room(usize::MAX);
        out.push(make);
        assert_eq!(built.get(), 3);
    }

    #[test]
    fn a_request_id_enters_each_batch_table_once() {
        let mut out = SpanOut::default();
        let mut a = RidAttr::new(OtelValue::from("a"));
        let mut b = RidAttr::new(OtelValue::from("b"));
        assert_eq!(
            [out.rid(&mut a), out.rid(&mut b), out.rid(&mut a)],
            [0, 1, 0]
        );
        let first = out.take();
        assert_eq!(first.rids, [OtelValue::from("a"), OtelValue::from("b")]);
        // The next batch has a table of its own.
        assert_eq!([out.rid(&mut b), out.rid(&mut b)], [0, 0]);
        assert_eq!(out.take().rids, [OtelValue::from("b")]);
    }
}
