//! A request's async slices (`TaskStart`, `TaskEnd`, `TaskAttrs`, and `FOR_TASK` events): open
//! by span id, whichever threads' records name them. Rings are swept one after another, so a
//! slice's end, attributes or events written on one thread can arrive before its start written
//! on another: they wait for it, within bounds, until the request closes. For the same reason
//! an ended slice is exported only after one more whole sweep of every ring, so that what its
//! future recorded on another thread just before the end reaches it.

use super::request::{OpenSlice, Request};
use super::slices::push_capped;
use super::spans::{self, error_status};
use super::{Rec, MAX_ATTRS_PER_SPAN, MAX_EVENTS_PER_SPAN};
use crate::collector::finished::{ns_to_time, SliceExtras};
use crate::collector::span_out::SpanOut;
use crate::collector::stats::Counters;
use crate::ids::{derive_span_id, Salt};
use crate::wire::record::flag;
use opentelemetry::trace::{Event, Status};
use opentelemetry::KeyValue;
use slicetrace_spans::schema;
use slicetrace_spans::util::MixHash;
use std::collections::{HashMap, VecDeque};

/// Async slices open at once in one request; starts past it are dropped and counted.
pub const MAX_OPEN_TASKS: usize = 4096;
/// Async slices of one request with an end, attributes or events waiting for their start.
const MAX_EARLY: usize = 1024;

struct OpenTask {
    slice: OpenSlice,
    /// The thread the slice started on.
    tid: u64,
}

/// What came for a slice before its start did.
#[derive(Default)]
struct Early {
    /// Its end: time, cancelled, thread.
    end: Option<(u64, bool, u64)>,
    extras: SliceExtras,
}

/// An ended slice waiting for its export, and the sweep that saw its end.
struct Closed {
    task: OpenTask,
    end: (u64, bool, u64),
    sweep: u64,
}

#[derive(Default)]
pub struct Tasks {
    open: HashMap<u64, OpenTask, MixHash>,
    closed: HashMap<u64, Closed, MixHash>,
    /// The closed slices' ids in the order they closed, so in sweep order.
    closed_order: VecDeque<u64>,
    /// The last sweep this request was queued for export in (`Tree::closing_tasks`).
    queued: u64,
    early: HashMap<u64, Early, MixHash>,
    /// `TASK` attributes waiting for the task record that ends their unit, by the thread
    /// tenure that wrote them: a unit pushed in two parts can have another ring's records
    /// applied between them.
    pending: Vec<(u64, KeyValue)>,
    /// Per thread tenure, the slice of its last `FOR_TASK` event, for the event's attributes.
    last_event: Vec<(u64, u64)>,
}

impl Tasks {
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// What a slice's records may add to: the open slice, else its waiting entry (made if
    /// there is room).
    fn extras_of(&mut self, c: &Counters, id: u64) -> Option<&mut SliceExtras> {
        if self.open.contains_key(&id) {
            return self.open.get_mut(&id).map(|t| t.slice.extras());
        }
        if self.closed.contains_key(&id) {
            return self.closed.get_mut(&id).map(|t| t.task.slice.extras());
        }
        self.early_of(c, id).map(|e| &mut e.extras)
    }

    fn early_of(&mut self, c: &Counters, id: u64) -> Option<&mut Early> {
        if self.early.len() >= MAX_EARLY && !self.early.contains_key(&id) {
            Counters::add(&c.annotations_dropped, 1);
            return None;
        }
        Some(self.early.entry(id).or_default())
    }

    /// Keeps an ended slice for its export after the next sweep; true when the request must
    /// be queued for it (once per sweep).
    fn close(&mut self, id: u64, task: OpenTask, end: (u64, bool, u64), sweep: u64) -> bool {
        self.closed.insert(id, Closed { task, end, sweep });
        self.closed_order.push_back(id);
        std::mem::replace(&mut self.queued, sweep) != sweep
    }

    /// Moves what tenure `from` left pending onto `x`.
    fn take_pending(&mut self, from: u64, x: &mut SliceExtras) {
        if self.pending.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 == from {
                let (_, kv) = self.pending.remove(i);
                push_capped(&mut x.attrs, &mut x.dropped_attrs, kv, MAX_ATTRS_PER_SPAN);
            } else {
                i += 1;
            }
        }
    }

    /// A record of tenure `from` other than a task's: what it left pending lost its head (a
    /// unit whose second part met a full ring), and is dropped, counted.
    pub fn orphan_pending(&mut self, c: &Counters, from: u64) {
        let before = self.pending.len();
        self.pending.retain(|(t, _)| *t != from);
        Counters::add(&c.annotations_dropped, (before - self.pending.len()) as u64);
        self.last_event.retain(|(t, _)| *t != from);
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.last_event.is_empty()
    }
}

/// What an exported async slice needs of its request.
struct Of<'a> {
    trace: u128,
    state: &'a opentelemetry::trace::TraceState,
    rid: u32,
}

fn export(
    of: &Of<'_>,
    mut t: OpenTask,
    end: (u64, bool, u64),
    unfinished: bool,
    out: &mut SpanOut,
) {
    let (ns, cancelled, end_tid) = end;
    if cancelled {
        let x = t.slice.extras();
        x.attrs.push(KeyValue::new(schema::CANCELLED, true));
    }
    if end_tid != t.tid {
        let x = t.slice.extras();
        x.attrs
            .push(KeyValue::new(schema::END_THREAD_ID, end_tid as i64));
    }
    let name = t.slice.name.unwrap_or(schema::ANONYMOUS);
    let status = if unfinished {
        error_status(spans::UNFINISHED_SLICE)
    } else {
        Status::Unset
    };
    let end_ns = ns.max(t.slice.start_ns);
    let (trace, state, rid, tid, s) = (of.trace, of.state, of.rid, t.tid, t.slice);
    out.push(|| spans::slice(trace, state, s, name, end_ns, status, unfinished, tid, rid));
}

impl Request {
    fn tasks(&mut self) -> &mut Tasks {
        self.tasks.get_or_insert_with(Box::default)
    }

    /// Async slices open now.
    pub fn tasks_open(&self) -> usize {
        self.tasks.as_ref().map_or(0, |t| t.open_count())
    }

    /// `TaskStart`: opens the slice under its parent (the request's span when it names none),
    /// and applies what came for it before. True when that included its end: the slice is
    /// closed, to export after the next sweep (`sweep` is this one).
    pub(super) fn task_start(&mut self, r: &Rec<'_>, sweep: u64) -> bool {
        let id = derive_span_id(r.tenure.seed, r.rec.pos, Salt::TASK);
        let parent = match r.rec.head.value {
            0 => self.thread_parent().span,
            p => p,
        };
        let tid = r.tenure.meta.tid;
        let mut t = OpenTask {
            slice: OpenSlice {
                id,
                parent,
                name: r.name,
                start_ns: r.ns,
                link: None,
                extras: None,
            },
            tid,
        };
        let tasks = self.tasks();
        tasks.take_pending(r.tenure.key(), t.slice.extras());
        if let Some(e) = tasks.early.remove(&id) {
            // What waited for the start is moved onto it, not copied.
            let x = t.slice.extras();
            for kv in e.extras.attrs {
                push_capped(&mut x.attrs, &mut x.dropped_attrs, kv, MAX_ATTRS_PER_SPAN);
            }
            for ev in e.extras.events {
                push_capped(
                    &mut x.events,
                    &mut x.dropped_events,
                    ev,
                    MAX_EVENTS_PER_SPAN,
                );
            }
            x.dropped_attrs += e.extras.dropped_attrs;
            x.dropped_events += e.extras.dropped_events;
            if let Some(end) = e.end {
                return tasks.close(id, t, end, sweep);
            }
        }
        if tasks.open.len() >= MAX_OPEN_TASKS {
            Counters::add(&r.c.async_slices_dropped, 1);
            return false;
        }
        tasks.open.insert(id, t);
        // A joined request does not close while it has async work open.
        self.linger_until = None;
        false
    }

    /// `TaskEnd`: closes the slice it names (true: to export after the next sweep), or keeps
    /// the end for a start still to come.
    pub(super) fn task_end(&mut self, r: &Rec<'_>, sweep: u64) -> bool {
        let id = r.rec.head.value;
        let end = (
            r.ns,
            r.rec.head.flags & flag::CANCELLED != 0,
            r.tenure.meta.tid,
        );
        let (c, from) = (r.c, r.tenure.key());
        let tasks = self.tasks();
        match tasks.open.remove(&id) {
            Some(mut task) => {
                tasks.take_pending(from, task.slice.extras());
                tasks.close(id, task, end, sweep)
            }
            None => {
                let mut x = SliceExtras::default();
                tasks.take_pending(from, &mut x);
                if let Some(e) = tasks.early_of(c, id) {
                    e.end = Some(end);
                    for kv in x.attrs {
                        let x = &mut e.extras;
                        push_capped(&mut x.attrs, &mut x.dropped_attrs, kv, MAX_ATTRS_PER_SPAN);
                    }
                } else {
                    Counters::add(&c.end_without_start, 1);
                }
                false
            }
        }
    }

    /// Exports the closed slices whose end an earlier sweep than `sweep` saw (all, `force`).
    pub(super) fn export_closed_tasks(&mut self, sweep: u64, force: bool, out: &mut SpanOut) {
        let Some(tasks) = self.tasks.as_mut() else {
            return;
        };
        let mut of = None;
        while let Some(&id) = tasks.closed_order.front() {
            let ready = match tasks.closed.get(&id) {
                Some(t) => force || t.sweep < sweep,
                // Closed twice (a repeated record): exported the first time.
                None => true,
            };
            if !ready {
                break;
            }
            tasks.closed_order.pop_front();
            let Some(t) = tasks.closed.remove(&id) else {
                continue;
            };
            let of = of.get_or_insert_with(|| Of {
                trace: self.trace_id,
                state: &self.trace_state,
                rid: out.rid(&mut self.rid_attr),
            });
            export(of, t.task, t.end, false, out);
        }
    }

    /// `TaskAttrs`: the attributes before it go to the slice it names.
    pub(super) fn task_attrs(&mut self, r: &Rec<'_>) {
        let tasks = self.tasks();
        let mut mine = SliceExtras::default();
        tasks.take_pending(r.tenure.key(), &mut mine);
        if let Some(x) = tasks.extras_of(r.c, r.rec.head.value) {
            for kv in mine.attrs {
                push_capped(&mut x.attrs, &mut x.dropped_attrs, kv, MAX_ATTRS_PER_SPAN);
            }
        }
    }

    /// A `FOR_TASK` event: on the slice it names.
    pub(super) fn task_event(&mut self, r: &Rec<'_>) {
        let id = r.rec.head.value;
        let name = r.name.unwrap_or(schema::EVENT);
        let ev = Event::new(name, ns_to_time(r.ns), Vec::new(), 0);
        let from = r.tenure.key();
        let tasks = self.tasks();
        tasks.last_event.retain(|(t, _)| *t != from);
        if let Some(x) = tasks.extras_of(r.c, id) {
            push_capped(
                &mut x.events,
                &mut x.dropped_events,
                ev,
                MAX_EVENTS_PER_SPAN,
            );
            tasks.last_event.push((from, id));
        }
    }

    /// An `Attr` flagged `TASK`: for the last task event (`TARGET_EVENT`), else for the task
    /// record that ends its unit.
    pub(super) fn task_attr(&mut self, r: &Rec<'_>, kv: KeyValue) {
        let (c, from) = (r.c, r.tenure.key());
        let tasks = self.tasks();
        if r.rec.head.flags & flag::TARGET_MASK != flag::TARGET_EVENT {
            // A call gives at most a span's worth of attributes before its head; past that
            // many pending, their heads never came (a corrupt ring).
            if tasks.pending.len() < MAX_ATTRS_PER_SPAN * 4 {
                tasks.pending.push((from, kv));
            } else {
                Counters::add(&c.annotations_dropped, 1);
            }
            return;
        }
        let last = tasks
            .last_event
            .iter()
            .find(|(t, _)| *t == from)
            .map(|e| e.1);
        let ev = last.and_then(|id| {
            let x = tasks.extras_of(c, id)?;
            x.events.last_mut()
        });
        match ev {
            Some(ev) if ev.attributes.len() < MAX_ATTRS_PER_SPAN => ev.attributes.push(kv),
            Some(ev) => ev.dropped_attributes_count += 1,
            None => Counters::add(&c.annotations_dropped, 1),
        }
    }

    /// The request closes at `end_ns`: its open async slices end there, unfinished; ends that
    /// never met their start are counted.
    pub(super) fn close_tasks(&mut self, c: &Counters, end_ns: u64, out: &mut SpanOut) {
        let Some(mut tasks) = self.tasks.take() else {
            return;
        };
        Counters::add(&c.annotations_dropped, tasks.pending.len() as u64);
        for e in tasks.early.values() {
            if e.end.is_some() {
                Counters::add(&c.end_without_start, 1);
            } else {
                Counters::add(&c.annotations_dropped, 1);
            }
        }
        if tasks.open.is_empty() && tasks.closed.is_empty() {
            return;
        }
        let rid = out.rid(&mut self.rid_attr);
        let of = Of {
            trace: self.trace_id,
            state: &self.trace_state,
            rid,
        };
        for id in tasks.closed_order.drain(..) {
            if let Some(t) = tasks.closed.remove(&id) {
                export(&of, t.task, t.end, false, out);
            }
        }
        let mut open: Vec<OpenTask> = tasks.open.drain().map(|(_, t)| t).collect();
        // Children (started later) first, as the thread spans' slices close innermost first.
        open.sort_by_key(|t| std::cmp::Reverse(t.slice.start_ns));
        for t in open {
            Counters::add(&c.slices_unfinished, 1);
            let tid = t.tid;
            export(&of, t, (end_ns, false, tid), true, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{sorted, Harness};
    use crate::wire::record::flag;

    /// Request 1 finishes on thread 0, and its grace passes.
    fn finish(h: &mut Harness) {
        h.finish(0, 1);
        h.advance(50);
        h.housekeeping(false);
    }

    #[test]
    fn an_async_slice_ends_on_another_thread_under_its_request() {
        let mut h = Harness::new();
        h.start(0, 1);
        let outer = h.task_start(0, 1, "handle", 0);
        let inner = h.task_start(0, 1, "pick", outer);
        h.task_attr(1, 1, inner, "worker", 3);
        h.task_event(1, 1, inner, "picked");
        h.task_end(1, 1, "pick", inner, 0);
        h.task_end(0, 1, "handle", outer, 0);
        finish(&mut h);
        assert_eq!(
            h.shape(),
            sorted(&[
                "Bootstrap Room 0x0 <-",
                " Req 1 <Bootstrap Room 0x0",
                "t0 < Req 1",
                "handle < Req 1",
                "pick <handle {worker=3,slicetrace.end_thread.id=101} [picked]",
            ])
        );
        assert_eq!(
            h.counted(),
            [("requests_started", 1), ("requests_finished", 1)]
        );
    }

    #[test]
    fn what_comes_before_the_start_waits_for_it() {
        let mut h = Harness::new();
        h.start(0, 1);
        // Thread 0 writes the start, then thread 1 its attributes, event and end; the drainer
        // sweeps thread 1's ring first.
        let id = h.next_task_id(0);
        h.task_attr(1, 1, id, "early", 1);
        h.task_event(1, 1, id, "seen");
        h.task_end(1, 1, "route", id, 0);
        assert_eq!(h.task_start(0, 1, "route", 0), id);
        // A cancelled one, and one whose start never comes.
        let gone = h.task_start(0, 1, "wait", 0);
        h.task_end(0, 1, "wait", gone, flag::CANCELLED);
        h.task_end(1, 1, "lost", 0xdead, 0);
        finish(&mut h);
        assert_eq!(
            h.shape(),
            sorted(&[
                "Bootstrap Room 0x0 <-",
                " Req 1 <Bootstrap Room 0x0",
                "t0 < Req 1",
                "route < Req 1 {early=1,slicetrace.end_thread.id=101} [seen]",
                "wait < Req 1 {slicetrace.cancelled=true}",
            ])
        );
        assert_eq!(
            h.counted(),
            [
                ("requests_started", 1),
                ("requests_finished", 1),
                ("end_without_start", 1)
            ]
        );
    }

    #[test]
    fn slices_open_when_their_request_closes_end_unfinished_with_it() {
        let mut h = Harness::new();
        h.start(0, 1);
        let outer = h.task_start(0, 1, "stream", 0);
        h.task_start(1, 1, "chunk", outer);
        finish(&mut h);
        assert_eq!(
            h.shape(),
            sorted(&[
                "Bootstrap Room 0x0 <-",
                " Req 1 <Bootstrap Room 0x0",
                "t0 < Req 1",
                "stream < Req 1 ! unfinished",
                "chunk <stream ! unfinished",
            ])
        );
        let stream = h.span("stream");
        let chunk = h.span("chunk");
        assert!(chunk.end_time <= stream.end_time && stream.start_time <= chunk.start_time);
        assert_eq!(
            h.counted(),
            [
                ("requests_started", 1),
                ("requests_finished", 1),
                ("slices_unfinished", 2)
            ]
        );
    }

    #[test]
    fn a_joined_request_stays_open_while_its_async_slices_are() {
        use super::super::testing::{Upstream, TAG};
        let mut h = Harness::new();
        // From another process: a request this one only joined, which lingers after its
        // threads end.
        let up = Upstream {
            trace_id: 0xabc,
            link: 0,
            extra: TAG + 1,
        };
        h.join(0, 1, 0x51, up, "joined");
        h.thread_end(0, 1, 0);
        let id = h.task_start(1, 1, "stream", 0);
        // Past the linger (500 ms): still open, its async slice running.
        h.advance(600);
        h.housekeeping(false);
        assert!(h.spans().iter().all(|s| s.name != "stream"));
        h.task_end(1, 1, "stream", id, 0);
        h.advance(600);
        h.housekeeping(false);
        h.advance(600);
        h.housekeeping(false);
        let stream = h.span("stream");
        assert_eq!(
            super::super::testing::attr(&stream, "slicetrace.unfinished"),
            None
        );
        assert_eq!(h.counted(), [("requests_joined", 1)]);
    }
}
