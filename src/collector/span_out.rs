//! Where the tree puts finished spans: a batch for the export queue, up to the room the queue
//! has left; past it (a collector down or too slow) only a count. Spans the queue would drop
//! are not built, so a dead collector does not make the drainer allocate, fill and free them by
//! the million.

use super::finished::Finished;

pub struct SpanOut {
    pub spans: Vec<Finished>,
    /// Spans the export queue can still take.
    room: usize,
    shed: u64,
}

impl Default for SpanOut {
    fn default() -> SpanOut {
        SpanOut {
            spans: Vec::new(),
            room: usize::MAX,
            shed: 0,
        }
    }
}

impl SpanOut {
    pub fn push(&mut self, make: impl FnOnce() -> Finished) {
        if self.spans.len() >= self.room {
            self.shed += 1;
        } else {
            self.spans.push(make());
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
}
