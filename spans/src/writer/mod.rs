//! Streaming Chrome trace-event JSON (the format Perfetto UI and `chrome://tracing` open) from
//! finished spans, in bounded memory.
//!
//! Layout: a process track per recording process, a thread track per traced thread, slices as
//! complete (`X`) events nested by time, span events as thread-scoped instants, each slice link
//! as a flow arrow from the linked slice to the linking one, and each request as an async slice
//! on its process. Spans arrive in the order they end; a reorder window puts the events of each
//! track in timestamp order, and a slice that overlaps another on its thread without nesting
//! (two requests' slices interleaved) goes to an overlap lane of that thread instead of
//! breaking the nesting.
//!
//! [`TraceEventWriter`] composes the parts, each of which owns its state: `processes` gives
//! pids, `placement` decides a slice's track, `flows` turns links into arrows, `queue` holds
//! events for the reorder window, `tracks` and its `lanes` give each written slice its lane,
//! and `emit` writes the lines.

mod decimal;
mod emit;
mod flows;
mod held;
mod hex;
mod lanes;
mod placement;
mod prefetch;
mod processes;
mod queue;
mod reorder;
mod rids;
mod tracks;
mod two_gen;
mod waiting;

use crate::model::{AttrValue, ProcessKey, Role, Span, SpanEvent};
use crate::schema;
use emit::{attrs_args, Emitter, Ids};
use flows::{ArrowEnd, Flows};
use held::{HeldSlice, Names};
use placement::{Placed, Placement, UNPLACED_TID};
use prefetch::{prefetch, prefetch_value};
use processes::Processes;
use queue::{Class, EventQueue, Held};
use rids::Rids;
use std::io::{self, Write};
use tracks::{ThreadFields, TrackName, Tracks};
use waiting::Taken;

/// Bounds of the writer's memory, and how long it waits for late spans.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Events are held until spans that ended this much later (in trace time) have arrived, so
    /// that each track is written in timestamp order.
    pub reorder_window_ns: u64,
    /// Events held for reordering; past this the oldest are written at once.
    pub max_buffered: usize,
    /// Slices held because neither they nor their ancestors name their thread yet; past this
    /// the oldest go to the process's "unplaced" track, counted.
    pub max_pending: usize,
    /// Recent slices remembered for links and children (two generations of this many).
    pub index_window: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            reorder_window_ns: 2_000_000_000,
            max_buffered: 1 << 20,
            max_pending: 1 << 18,
            // The most a hash table of 2^18 slots holds before it doubles (seven eighths
            // full): a window of 2^18 would double the tables' memory for an eighth more.
            index_window: 7 << 15,
        }
    }
}

/// What the writer did, including what it could not place exactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Files finished by rotation before the current one.
    pub files_rotated: u64,
    pub spans: u64,
    pub slices: u64,
    pub requests: u64,
    pub instants: u64,
    pub flows: u64,
    /// Links whose target slice never appeared (another process's file, or past the window).
    pub links_unresolved: u64,
    /// Slices whose thread could not be found, written on the "unplaced" track.
    pub spans_unplaced: u64,
    /// Events that arrived after later events of the trace had been written.
    pub late: u64,
    /// Overlap lanes opened for slices that did not nest.
    pub overlap_lanes: u64,
    pub bytes: u64,
}

impl WriterStats {
    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &WriterStats) {
        self.files_rotated += other.files_rotated;
        self.spans += other.spans;
        self.slices += other.slices;
        self.requests += other.requests;
        self.instants += other.instants;
        self.flows += other.flows;
        self.links_unresolved += other.links_unresolved;
        self.spans_unplaced += other.spans_unplaced;
        self.late += other.late;
        self.overlap_lanes += other.overlap_lanes;
        self.bytes += other.bytes;
    }
}

/// An event held for the reorder window.
enum Item {
    Slice {
        pid: u32,
        tid: u64,
        slice: HeldSlice,
        /// The arrow end for the first of its links whose target was placed before it,
        /// written right after the slice (where a queued end would sort): one event fewer to
        /// hold and order. Other links' ends are queued.
        flow_in: Option<u64>,
    },
    Instant {
        pid: u32,
        tid: u64,
        ev: SpanEvent,
    },
    Flow {
        pid: u32,
        tid: u64,
        /// The slice the flow end binds to, whose lane decides the track.
        bind: u64,
        id: u64,
        start: bool,
    },
    Async {
        pid: u32,
        id: u64,
        ph: char,
        name: String,
        args: String,
    },
}

impl Held for Item {
    #[inline]
    fn prefetch_parts(&self) {
        if let Item::Slice { slice, .. } = self {
            prefetch(slice.rest_ptr());
        }
    }
}

/// What a writer hands to the one that continues its trace in a new file: the processes and
/// thread names it knew, and its time base, so the new file names its tracks the same way.
pub struct Carry {
    limits: Limits,
    epoch_ns: u64,
    processes: Vec<(ProcessKey, u32)>,
    names: Vec<((u32, u64), TrackName)>,
    next_synthetic_pid: u32,
    next_synthetic_tid: u64,
}

/// Writes trace-event JSON to `out` as spans are pushed. Call [`TraceEventWriter::finish`] to
/// write what is held and close the array; a file cut short before that still opens (the
/// format allows a missing `]`), and `slicetrace repair` closes it.
pub struct TraceEventWriter<W: Write> {
    limits: Limits,
    /// Counts of what the parts do not count themselves.
    stats: WriterStats,
    processes: Processes,
    placement: Placement,
    flows: Flows,
    queue: EventQueue<Item>,
    tracks: Tracks,
    rids: Rids,
    names: Names,
    emit: Emitter<W>,
    /// The Unix time timestamps count from; `u64::MAX` until the first span with a start.
    epoch_ns: u64,
    /// The latest time origin another source's events allow ([`cap_epoch`](Self::cap_epoch));
    /// `u64::MAX` when none was given.
    epoch_cap: u64,
}

const DAY_NS: u64 = 86_400_000_000_000;
/// How far ahead [`TraceEventWriter::push_all`] asks for a span; its strings, half as far.
const PUSH_AHEAD: usize = 6;

impl<W: Write> TraceEventWriter<W> {
    pub fn new(out: W, limits: Limits) -> io::Result<TraceEventWriter<W>> {
        let placement = Placement::new(limits.index_window, limits.max_pending);
        Ok(TraceEventWriter {
            stats: WriterStats::default(),
            processes: Processes::new(),
            tracks: Tracks::new(limits.index_window, placement.most()),
            placement,
            flows: Flows::new(limits.index_window),
            queue: EventQueue::new(limits.reorder_window_ns, limits.max_buffered),
            rids: Rids::new(limits.index_window),
            names: Names::default(),
            emit: Emitter::new(out)?,
            epoch_ns: u64::MAX,
            epoch_cap: u64::MAX,
            limits,
        })
    }

    /// What the writer did so far.
    pub fn stats(&self) -> WriterStats {
        let w = self.emit.written();
        WriterStats {
            slices: w.slices,
            instants: w.instants,
            flows: w.flows,
            bytes: w.bytes,
            ..self.stats.clone()
        }
    }

    /// What a successor needs to go on in a new file (call before [`finish`](Self::finish)).
    pub fn carry(&self) -> Carry {
        Carry {
            limits: self.limits.clone(),
            epoch_ns: self.epoch_ns,
            processes: self.processes.all(),
            names: self.tracks.names(),
            next_synthetic_pid: self.processes.last_synthetic(),
            next_synthetic_tid: self.tracks.last_synthetic_tid(),
        }
    }

    /// A writer that continues a trace in a new file: its processes and threads are named at
    /// once, with the same pids, tids and time base as before.
    pub fn resume(out: W, carry: Carry) -> io::Result<TraceEventWriter<W>> {
        let mut w = TraceEventWriter::new(out, carry.limits)?;
        w.processes = Processes::resume(carry.processes, carry.next_synthetic_pid);
        w.tracks.resume_synthetic_tids(carry.next_synthetic_tid);
        if carry.epoch_ns != u64::MAX {
            w.set_epoch(carry.epoch_ns)?;
        }
        for ((pid, tid), name) in carry.names {
            w.name_track(pid, tid, name)?;
        }
        Ok(w)
    }

    /// Takes one finished span of `process`. Writes whatever the reorder window lets go.
    pub fn push(&mut self, process: &ProcessKey, span: Span) -> io::Result<()> {
        self.take_epoch(&span)?;
        let pid = self.pid_for(process)?;
        self.push_of(pid, span)
    }

    /// Takes a run of spans of `process`, as [`push`](Self::push) does one by one, leaving
    /// `spans` empty for reuse. Spans read on another thread arrive cold: each is asked for a
    /// few places ahead, so that those misses overlap.
    pub fn push_all(&mut self, process: &ProcessKey, spans: &mut Vec<Span>) -> io::Result<()> {
        // Looked up once for the run, not compared again for each span.
        let mut pid = None;
        let mut spans = spans.drain(..);
        while let Some(span) = spans.next() {
            let ahead = spans.as_slice();
            if let Some(s) = ahead.get(PUSH_AHEAD) {
                prefetch_value(s);
            }
            if let Some(s) = ahead.get(PUSH_AHEAD / 2) {
                prefetch(s.name.as_ptr());
                prefetch(s.attrs.as_ptr());
                prefetch(s.links.as_ptr());
            }
            self.take_epoch(&span)?;
            let pid = match pid {
                Some(pid) => pid,
                None => *pid.insert(self.pid_for(process)?),
            };
            self.push_of(pid, span)?;
        }
        Ok(())
    }

    /// Keeps `pids` from this writer's processes: another source's events in the same file use
    /// them. A process whose own pid is among them gets a made-up one (its title still names
    /// its own). Call before the first span.
    pub fn reserve_pids(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.processes.reserve(pids);
    }

    /// Makes the time origin no later than `at_most_ns` (Unix time), so that another source's
    /// events from then on can be written relative to it ([`time_origin`](Self::time_origin))
    /// with no negative timestamp. Call before the first span; the origin is otherwise chosen
    /// as usual, from the first span, when that is earlier.
    pub fn cap_epoch(&mut self, at_most_ns: u64) {
        self.epoch_cap = self.epoch_cap.min(at_most_ns);
    }

    /// The Unix time (ns) this file's timestamps count from. When no span has set it yet it is
    /// set now: to the cap if one was given, else to 0.
    pub fn time_origin(&mut self) -> io::Result<u64> {
        if self.epoch_ns == u64::MAX {
            let origin = if self.epoch_cap == u64::MAX {
                0
            } else {
                self.epoch_cap
            };
            self.set_epoch(origin)?;
        }
        Ok(self.epoch_ns)
    }

    /// Writes another source's event as it is: `event` is one whole trace-event JSON object with
    /// no line break, its `ts` counted from [`time_origin`](Self::time_origin) and its `pid`
    /// one of those [reserved](Self::reserve_pids). The caller answers for all three; the
    /// writer only keeps the file one event per line.
    pub fn raw_event(&mut self, event: &str) -> io::Result<()> {
        self.emit.raw(event)
    }

    /// Writes everything held and closes the JSON array.
    pub fn finish(mut self) -> io::Result<(W, WriterStats)> {
        self.time_origin()?;
        while let Some(given_up) = self.placement.give_up() {
            self.unplace(given_up);
        }
        self.write_ready(true)?;
        for (pid, tid) in self.tracks.unnamed() {
            let title = if tid == UNPLACED_TID {
                schema::UNPLACED_TRACK.to_owned()
            } else {
                schema::unlabelled_thread_title(tid)
            };
            self.name_track(
                pid,
                tid,
                TrackName {
                    title,
                    thread: None,
                },
            )?;
        }
        self.stats.links_unresolved += self.flows.unresolved();
        let mut stats = self.stats();
        let (out, written) = self.emit.finish()?;
        stats.bytes = written.bytes;
        Ok((out, stats))
    }

    /// Writes out what the reorder window lets go and flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_ready(false)?;
        self.emit.flush()
    }

    /// Sets the file's time origin from the first span with a start time.
    fn take_epoch(&mut self, span: &Span) -> io::Result<()> {
        if self.epoch_ns == u64::MAX && span.start_ns > 0 {
            // A day's margin before the first span's day: earlier spans would be clamped.
            let day = (span.start_ns / DAY_NS).saturating_sub(1) * DAY_NS;
            self.set_epoch(day.min(self.epoch_cap))?;
        }
        Ok(())
    }

    /// Sets the time origin, and names the processes that waited for it.
    fn set_epoch(&mut self, epoch_ns: u64) -> io::Result<()> {
        self.epoch_ns = epoch_ns;
        self.emit.set_epoch(epoch_ns);
        for (p, pid) in self.processes.take_unnamed() {
            self.emit.process_name(pid, &process_title(&p))?;
        }
        Ok(())
    }

    fn pid_for(&mut self, p: &ProcessKey) -> io::Result<u32> {
        let (pid, new) = self.processes.pid_for(p);
        if new {
            if self.epoch_ns == u64::MAX {
                self.processes.name_later(p, pid);
            } else {
                self.emit.process_name(pid, &process_title(p))?;
            }
        }
        Ok(pid)
    }

    /// [`push`](Self::push) of a span of the process given `pid`.
    fn push_of(&mut self, pid: u32, span: Span) -> io::Result<()> {
        self.stats.spans += 1;
        self.queue.saw_end(span.end_ns);
        match span.role {
            Role::Request => self.push_request(pid, span),
            Role::Thread => self.push_thread(pid, span)?,
            Role::Slice => {
                let known = span
                    .thread_id()
                    .map(|tid| (pid, tid))
                    .or_else(|| self.placement.track_of_parent(span.parent));
                let slice = HeldSlice::new(span, &mut self.names);
                match known {
                    Some((pid, tid)) => self.place(pid, tid, slice),
                    None => self.hold(pid, slice),
                }
            }
        }
        self.write_ready(false)
    }

    /// A request span, or the bootstrap room span above one (which names no rid, and is not
    /// counted as a request): an async slice of the process.
    fn push_request(&mut self, pid: u32, span: Span) {
        if let Some(rid) = span.attr(schema::RID).map(attr_text) {
            self.stats.requests += 1;
            self.rids.insert(span.trace_id, &rid);
        }
        let mut args = String::with_capacity(128);
        args.push('{');
        Ids {
            trace: span.trace_id,
            span: span.span_id,
            parent: span.parent,
            links: &span.links,
            error: span.error.as_deref(),
        }
        .push(&mut args);
        attrs_args(&mut args, &span.attrs, false);
        args.push('}');
        let id = span.span_id;
        let (start, end) = (span.start_ns, span.end_ns.max(span.start_ns));
        for ev in span.events {
            let mut ev_args = String::from("{");
            attrs_args(&mut ev_args, &ev.attrs, true);
            ev_args.push('}');
            let item = Item::Async {
                pid,
                id,
                ph: 'n',
                name: ev.name,
                args: ev_args,
            };
            self.queue_item(ev.time_ns.clamp(start, end), Class::Inside, 0, item);
        }
        let begin = Item::Async {
            pid,
            id,
            ph: 'b',
            name: span.name.clone(),
            args,
        };
        self.queue_item(start, Class::Request, end - start, begin);
        let end_item = Item::Async {
            pid,
            id,
            ph: 'e',
            name: span.name,
            args: String::from("{}"),
        };
        self.queue_item(end, Class::Request, 0, end_item);
    }

    fn push_thread(&mut self, pid: u32, span: Span) -> io::Result<()> {
        // No thread id: a track of its own.
        let tid = match span.thread_id() {
            Some(t) => t,
            None => self.tracks.synthetic_tid(),
        };
        let at = Placed {
            pid,
            thread: true,
            tid,
            start: span.start_ns,
            end: span.end_ns.max(span.start_ns),
        };
        if !self.tracks.is_named(pid, tid) {
            let label = span
                .attr(schema::THREAD_LABEL)
                .map(attr_text)
                .filter(|l| !l.is_empty());
            let tp_rank = span.attr(schema::TP_RANK).and_then(AttrValue::as_i64);
            let dp_rank = span.attr(schema::DP_RANK).and_then(AttrValue::as_i64);
            let shown = label
                .clone()
                .unwrap_or_else(|| schema::unlabelled_thread_title(tid));
            let title = schema::thread_title(&shown, tp_rank, dp_rank);
            let thread = label.map(|label| ThreadFields {
                label,
                tp_rank,
                dp_rank,
            });
            self.name_track(pid, tid, TrackName { title, thread })?;
        }
        if let Some(mut children) = self.placement.place_thread(span.span_id, at) {
            while let Some((_, child)) = self.placement.next_taken(&mut children) {
                self.place(pid, tid, child);
            }
        }
        Ok(())
    }

    fn hold(&mut self, pid: u32, slice: HeldSlice) {
        self.placement.hold(pid, slice);
        while self.placement.over_bound() {
            let Some(given_up) = self.placement.give_up() else {
                break;
            };
            self.unplace(given_up);
        }
    }

    /// Places the slices given up on, on their process's unplaced track.
    fn unplace(&mut self, mut given_up: Taken) {
        while let Some((pid, child)) = self.placement.next_taken(&mut given_up) {
            self.stats.spans_unplaced += 1;
            self.place(pid, UNPLACED_TID, child);
        }
    }

    /// Queues `slice` (and, transitively, the slices that were waiting for it) on `pid`/`tid`,
    /// with the arrows of their links.
    fn place(&mut self, pid: u32, tid: u64, slice: HeldSlice) {
        let mut placing = self.placement.start(pid, tid);
        let mut first = Some(slice);
        while let Some(slice) = placing.next(&mut first) {
            let here = self.placement.file(&mut placing, &slice);
            // The slice goes before its flows: at equal times a flow binds to what is already
            // open. Its place in the queue is taken now; it is queued once its links are read.
            let seq = self.queue.next_seq();
            let (placement, queue, late) = (&self.placement, &mut self.queue, &mut self.stats.late);
            let linked = self.flows.link(
                slice.span_id,
                here,
                slice.links(),
                |target| placement.get(target).copied(),
                |end| *late += u64::from(queue_arrow_end(queue, end)),
            );
            self.stats.links_unresolved += linked.gave_up;
            let (start, dur) = (here.start, here.end - here.start);
            let item = Item::Slice {
                pid,
                tid,
                slice,
                flow_in: linked.flow_in,
            };
            self.stats.late += u64::from(self.queue.push_at(seq, start, Class::Slice, dur, item));
        }
        self.placement.finish(placing);
    }

    #[inline]
    fn queue_item(&mut self, ts: u64, class: Class, dur: u64, item: Item) {
        self.stats.late += u64::from(self.queue.push(ts, class, dur, item));
    }

    fn write_ready(&mut self, all: bool) -> io::Result<()> {
        while let Some((ts, item)) = self.queue.pop_due(all) {
            self.write_item(ts, item)?;
        }
        Ok(())
    }

    #[inline]
    fn write_item(&mut self, ts: u64, item: Item) -> io::Result<()> {
        match item {
            Item::Slice {
                pid,
                tid,
                slice,
                flow_in,
            } => self.write_slice(pid, tid, slice, flow_in),
            Item::Instant { pid, tid, ev } => self.emit.instant(pid, tid, &ev),
            Item::Flow {
                pid,
                tid,
                bind,
                id,
                start,
            } => {
                let tid = self.tracks.lane_of(bind).unwrap_or(tid);
                self.emit.flow(id, start, pid, tid, ts)
            }
            Item::Async {
                pid,
                id,
                ph,
                name,
                args,
            } => self.emit.request(ph, pid, id, ts, &name, &args),
        }
    }

    #[inline]
    fn write_slice(
        &mut self,
        pid: u32,
        tid: u64,
        mut slice: HeldSlice,
        flow_in: Option<u64>,
    ) -> io::Result<()> {
        let end = slice.end_ns.max(slice.start_ns);
        let lane = self
            .tracks
            .lane_for(pid, tid, slice.span_id, slice.start_ns, end);
        if lane.opened {
            self.stats.overlap_lanes += 1;
        }
        if let Some((n, name)) = lane.name_lane {
            let title = schema::overlap_lane_title(&name, n);
            self.emit.thread_name(pid, lane.tid, tid, &title, n, None)?;
        }
        let thread_id =
            (slice.attr(schema::THREAD_ID).is_none() && tid != UNPLACED_TID).then_some(tid);
        let rid = match slice.attr(schema::RID) {
            None => self.rids.get(slice.trace_id),
            Some(_) => None,
        };
        self.emit
            .slice(pid, lane.tid, &slice, &self.names, thread_id, rid)?;
        if let Some(id) = flow_in {
            self.emit.flow(id, false, pid, lane.tid, slice.start_ns)?;
        }
        for ev in slice.take_events() {
            let ts = ev.time_ns.clamp(slice.start_ns, end);
            let item = Item::Instant {
                pid,
                tid: lane.tid,
                ev,
            };
            self.queue_item(ts, Class::Instant, 0, item);
        }
        Ok(())
    }

    /// Names track `pid`/`tid` and its overlap lanes; only the thread's own track carries the
    /// thread span's fields, as a lane is no thread of its own.
    fn name_track(&mut self, pid: u32, tid: u64, name: TrackName) -> io::Result<()> {
        let lanes = self.tracks.name(pid, tid, name.clone());
        self.emit
            .thread_name(pid, tid, tid, &name.title, 0, name.thread.as_ref())?;
        for (i, lane_tid) in lanes.into_iter().enumerate() {
            let n = i as u64 + 1;
            let title = schema::overlap_lane_title(&name.title, n);
            self.emit.thread_name(pid, lane_tid, tid, &title, n, None)?;
        }
        Ok(())
    }
}

/// Queues one end of an arrow; returns whether it came late.
#[inline]
fn queue_arrow_end(queue: &mut EventQueue<Item>, e: ArrowEnd) -> bool {
    let item = Item::Flow {
        pid: e.at.pid,
        tid: e.at.tid,
        bind: e.bind,
        id: e.id,
        start: e.start,
    };
    if e.start {
        queue.push(e.ts, Class::Inside, 0, item)
    } else {
        // Right after the linking slice, before any child starting with it, so it binds there.
        queue.push(e.ts, Class::Slice, e.at.end - e.at.start, item)
    }
}

fn process_title(p: &ProcessKey) -> String {
    schema::process_title(&p.service, p.pid, &p.host)
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::F64(f) => f.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::decimal::push_us;
    use super::tracks::FIRST_SYNTHETIC_TID;
    use super::*;

    fn slice(id: u64, parent: u64, start: u64, end: u64, tid: Option<u64>) -> Span {
        let mut attrs = Vec::new();
        if let Some(t) = tid {
            attrs.push((schema::THREAD_ID.to_owned(), AttrValue::Int(t as i64)));
        }
        Span {
            trace_id: 7,
            span_id: id,
            parent,
            name: format!("s{id}"),
            start_ns: start,
            end_ns: end,
            attrs,
            events: Vec::new(),
            links: Vec::new(),
            error: None,
            role: Role::Slice,
        }
    }

    fn events(out: Vec<u8>) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v.as_array().unwrap().clone()
    }

    fn xs(ev: &[serde_json::Value]) -> Vec<(String, u64)> {
        ev.iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["tid"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    const T0: u64 = 1_764_300_000_000_000_000;

    #[test]
    fn microseconds_keep_every_nanosecond_digit() {
        for ns in [
            0,
            1,
            9,
            10,
            99,
            100,
            999,
            1_000,
            1_001,
            123_456_789_012,
            u64::MAX,
        ] {
            let mut out = String::new();
            push_us(&mut out, ns);
            assert_eq!(out, format!("{}.{:03}", ns / 1000, ns % 1000));
        }
    }

    #[test]
    fn a_room_span_is_an_async_slice_but_not_a_request() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        let mut room = slice(1, 0, T0, T0 + 100, None);
        room.name = "Bootstrap Room 0x0".into();
        room.attrs = vec![(schema::BOOTSTRAP_ROOM.into(), AttrValue::Str("0x0".into()))];
        room.role = schema::role_of(&room.attrs);
        let mut req = slice(2, 1, T0, T0 + 100, None);
        req.name = " Req r1".into();
        req.attrs = vec![(schema::RID.into(), AttrValue::Str("r1".into()))];
        req.role = schema::role_of(&req.attrs);
        w.push(&p, room).unwrap();
        w.push(&p, req).unwrap();
        let (out, stats) = w.finish().unwrap();
        let begins: Vec<String> = events(out)
            .iter()
            .filter(|e| e["ph"] == "b")
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(begins, ["Bootstrap Room 0x0", " Req r1"]);
        assert_eq!((stats.requests, stats.slices), (1, 0));
    }

    #[test]
    fn a_track_is_written_in_start_order_whatever_the_arrival_order() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        // Inner slices end (and arrive) first.
        w.push(&p, slice(2, 1, T0 + 20, T0 + 30, Some(5))).unwrap();
        w.push(&p, slice(3, 1, T0 + 40, T0 + 50, Some(5))).unwrap();
        w.push(&p, slice(1, 9, T0 + 10, T0 + 60, Some(5))).unwrap();
        let (out, stats) = w.finish().unwrap();
        let ev = events(out);
        let names: Vec<String> = xs(&ev).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["s1", "s2", "s3"]);
        assert_eq!((stats.slices, stats.late, stats.overlap_lanes), (3, 0, 0));
    }

    #[test]
    fn slices_without_a_thread_id_wait_for_their_thread_span() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        w.push(&p, slice(3, 2, T0 + 20, T0 + 30, None)).unwrap();
        w.push(&p, slice(2, 1, T0 + 10, T0 + 40, None)).unwrap();
        let mut thread = slice(1, 0, T0, T0 + 50, None);
        thread.attrs = vec![
            (
                schema::THREAD_LABEL.into(),
                AttrValue::Str("scheduler".into()),
            ),
            (schema::PID.into(), AttrValue::Int(77)),
            (schema::TP_RANK.into(), AttrValue::Int(1)),
        ];
        thread.role = Role::Thread;
        w.push(&p, thread).unwrap();
        let (out, stats) = w.finish().unwrap();
        let ev = events(out);
        assert_eq!(xs(&ev), [("s2".to_owned(), 77), ("s3".to_owned(), 77)]);
        assert!(ev
            .iter()
            .any(|e| e["name"] == "thread_name" && e["args"]["name"] == "scheduler [TP 1]"));
        assert_eq!(stats.spans_unplaced, 0);
    }

    /// The thread span's label and ranks go into the `thread_name` of its own track only: not
    /// into an overlap lane's, the track of a thread that gave no label, or the unplaced track.
    /// A file that goes on from another names the thread's track with them again.
    #[test]
    fn only_a_thread_track_carries_the_label_and_ranks() {
        let thread_span = |id: u64, tid: i64, label: &str| {
            let mut s = slice(id, 0, T0, T0 + 1_000, None);
            s.attrs = vec![
                (schema::THREAD_LABEL.into(), AttrValue::Str(label.into())),
                (schema::THREAD_ID.into(), AttrValue::Int(tid)),
                (schema::TP_RANK.into(), AttrValue::Int(1)),
                (schema::DP_RANK.into(), AttrValue::Int(0)),
            ];
            s.role = Role::Thread;
            s
        };
        let fields = |ev: &[serde_json::Value]| -> Vec<(String, serde_json::Value)> {
            ev.iter()
                .filter(|e| e["name"] == "thread_name")
                .map(|e| {
                    let mut args = e["args"].as_object().unwrap().clone();
                    let name = args.remove("name").unwrap();
                    (name.as_str().unwrap().to_owned(), args.into())
                })
                .collect()
        };
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        w.push(&p, thread_span(1, 5, "sched [TP 9]")).unwrap();
        w.push(&p, thread_span(2, 6, "")).unwrap();
        w.push(&p, slice(3, 1, T0 + 10, T0 + 100, Some(5))).unwrap();
        w.push(&p, slice(4, 1, T0 + 50, T0 + 150, Some(5))).unwrap();
        w.push(&p, slice(5, 999, T0 + 10, T0 + 20, None)).unwrap();
        let carry = w.carry();
        let (out, stats) = w.finish().unwrap();
        assert_eq!((stats.overlap_lanes, stats.spans_unplaced), (1, 1));
        let own = serde_json::json!({"thread_label": "sched [TP 9]", "tp_rank": 1, "dp_rank": 0});
        let none = serde_json::json!({});
        let mut got = fields(&events(out));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("sched [TP 9] [TP 1] [DP 0]".to_owned(), own.clone()),
                (
                    "sched [TP 9] [TP 1] [DP 0] · overlap 1".to_owned(),
                    none.clone()
                ),
                ("thread 6 [TP 1] [DP 0]".to_owned(), none.clone()),
                (schema::UNPLACED_TRACK.to_owned(), none.clone()),
            ]
        );
        // Taken while the slices were held, before the lane was opened: only the two threads.
        let (out, _) = TraceEventWriter::resume(Vec::new(), carry)
            .unwrap()
            .finish()
            .unwrap();
        let mut got = fields(&events(out));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("sched [TP 9] [TP 1] [DP 0]".to_owned(), own),
                ("thread 6 [TP 1] [DP 0]".to_owned(), none),
            ]
        );
    }

    #[test]
    fn tracks_of_threads_with_no_id_are_forgotten_once_unreachable() {
        let p = ProcessKey::default();
        let limits = Limits {
            index_window: 16,
            ..Limits::default()
        };
        let mut w = TraceEventWriter::new(Vec::new(), limits).unwrap();
        let threads = 400;
        for i in 0..threads {
            let t = T0 + i * 100;
            w.push(&p, slice(10_000 + i, i + 1, t + 10, t + 20, None))
                .unwrap();
            let mut thread = slice(i + 1, 0, t, t + 50, None);
            thread.attrs = vec![(schema::THREAD_LABEL.into(), AttrValue::Str("worker".into()))];
            thread.role = Role::Thread;
            w.push(&p, thread).unwrap();
            assert!(w.tracks.len() <= w.placement.most(), "{}", w.tracks.len());
        }
        let (out, stats) = w.finish().unwrap();
        let ev = events(out);
        // Each thread still got a track of its own, named, with its slice on it.
        let mut tids: Vec<u64> = xs(&ev).into_iter().map(|(_, tid)| tid).collect();
        tids.sort_unstable();
        tids.dedup();
        assert_eq!(tids.len(), threads as usize);
        let named = ev
            .iter()
            .filter(|e| e["name"] == "thread_name" && e["args"]["name"] == "worker")
            .count();
        assert_eq!(named, threads as usize);
        assert_eq!(stats.spans_unplaced, 0);
    }

    #[test]
    fn slices_whose_thread_never_comes_are_placed_unplaced_and_counted() {
        let p = ProcessKey::default();
        let limits = Limits {
            max_pending: 2,
            ..Limits::default()
        };
        let mut w = TraceEventWriter::new(Vec::new(), limits).unwrap();
        for i in 0..5 {
            w.push(
                &p,
                slice(10 + i, 100 + i, T0 + i * 100, T0 + i * 100 + 50, None),
            )
            .unwrap();
        }
        let (out, stats) = w.finish().unwrap();
        let ev = events(out);
        assert_eq!(xs(&ev).len(), 5);
        assert!(xs(&ev).iter().all(|(_, tid)| *tid == UNPLACED_TID));
        assert_eq!(stats.spans_unplaced, 5);
        assert!(ev.iter().any(|e| e["name"] == "thread_name"
            && e["args"]["name"] == "unplaced slices (thread unknown)"));
    }

    #[test]
    fn links_resolve_in_either_order_and_missing_targets_are_counted() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        let mut a = slice(2, 1, T0 + 100, T0 + 200, Some(5));
        a.links = vec![(7, 3)]; // target arrives later, on another thread
        w.push(&p, a).unwrap();
        w.push(&p, slice(3, 1, T0 + 10, T0 + 90, Some(6))).unwrap();
        let mut b = slice(4, 1, T0 + 300, T0 + 400, Some(5));
        b.links = vec![(7, 2), (7, 999)]; // one known, one never seen
        w.push(&p, b).unwrap();
        let (out, stats) = w.finish().unwrap();
        let ev = events(out);
        assert_eq!(stats.flows, 2);
        assert_eq!(stats.links_unresolved, 1);
        let starts: Vec<u64> = ev
            .iter()
            .filter(|e| e["ph"] == "s")
            .map(|e| e["tid"].as_u64().unwrap())
            .collect();
        assert_eq!(starts, [6, 5]);
    }

    /// A slice's first resolved link's arrow end is written with the slice, any other is
    /// queued: either way each end comes right after the linking slice and before a child that
    /// starts with it, on its track at its start, and pairs with a start of the same id.
    #[test]
    fn arrow_ends_follow_their_slice_before_its_children() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        w.push(&p, slice(2, 1, T0 + 10, T0 + 50, Some(6))).unwrap();
        w.push(&p, slice(3, 1, T0 + 20, T0 + 60, Some(7))).unwrap();
        let start = T0 + 100;
        // The child ends first, so arrives first, and starts with its parent.
        w.push(&p, slice(5, 4, start, start + 50, Some(8))).unwrap();
        let mut linking = slice(4, 1, start, start + 200, Some(8));
        linking.links = vec![(7, 2), (7, 3)];
        w.push(&p, linking).unwrap();
        let (out, stats) = w.finish().unwrap();
        assert_eq!((stats.flows, stats.links_unresolved), (2, 0));
        let ev = events(out);
        let on_8: Vec<String> = ev
            .iter()
            .filter(|e| e["tid"] == 8 && e["ph"] != "M")
            .map(|e| match e["ph"].as_str().unwrap() {
                "X" => e["name"].as_str().unwrap().to_owned(),
                ph => ph.to_owned(),
            })
            .collect();
        assert_eq!(on_8, ["s4", "f", "f", "s5"]);
        let ends: Vec<&serde_json::Value> = ev.iter().filter(|e| e["ph"] == "f").collect();
        assert!(ends
            .iter()
            .all(|e| e["ts"] == ev.iter().find(|x| x["name"] == "s4").unwrap()["ts"]));
        let mut start_ids: Vec<u64> = ev
            .iter()
            .filter(|e| e["ph"] == "s")
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        let mut end_ids: Vec<u64> = ends.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        start_ids.sort_unstable();
        end_ids.sort_unstable();
        assert_eq!(start_ids.len(), 2);
        assert_eq!(start_ids, end_ids);
    }

    /// Enough held events to fill several queue buckets, so that what is asked for ahead of
    /// the write position crosses from one bucket into the next.
    #[test]
    fn many_held_slices_across_buckets_come_out_in_time_order() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        let n = 120u64;
        // 0.4 ms apart: three or so to a bucket of the queue, pushed newest first, each
        // linked to the one before it.
        for i in (0..n).rev() {
            let start = T0 + i * 400_000;
            let mut s = slice(10 + i, 0, start, start + 300_000, Some(5));
            if i > 0 {
                s.links = vec![(7, 9 + i)];
            }
            w.push(&p, s).unwrap();
        }
        let (out, stats) = w.finish().unwrap();
        let ev = events(out);
        let ts: Vec<f64> = ev
            .iter()
            .filter(|e| e["ph"] == "X")
            .map(|e| e["ts"].as_f64().unwrap())
            .collect();
        assert_eq!(ts.len() as u64, n);
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((stats.flows, stats.links_unresolved), (n - 1, 0));
    }

    /// Thread spans and slices share one index, but only a slice starts a flow: a link to a
    /// thread span stays unresolved, while the thread still places its children.
    #[test]
    fn a_link_to_a_thread_span_draws_no_flow() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        let mut thread = slice(1, 0, T0, T0 + 500, None);
        thread.attrs = vec![
            (
                schema::THREAD_LABEL.into(),
                AttrValue::Str("scheduler".into()),
            ),
            (schema::THREAD_ID.into(), AttrValue::Int(77)),
        ];
        thread.role = Role::Thread;
        w.push(&p, thread).unwrap();
        let mut linking = slice(2, 1, T0 + 100, T0 + 200, None);
        linking.links = vec![(7, 1)];
        w.push(&p, linking).unwrap();
        let (out, stats) = w.finish().unwrap();
        assert_eq!(xs(&events(out)), [("s2".to_owned(), 77)]);
        assert_eq!((stats.flows, stats.links_unresolved), (0, 1));
    }

    #[test]
    fn overlapping_slices_go_to_a_lane_and_identical_ones_nest() {
        let p = ProcessKey::default();
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        w.push(&p, slice(1, 0, T0, T0 + 100, Some(5))).unwrap();
        w.push(&p, slice(2, 0, T0 + 50, T0 + 150, Some(5))).unwrap();
        w.push(&p, slice(3, 0, T0 + 200, T0 + 300, Some(5)))
            .unwrap();
        w.push(&p, slice(4, 0, T0 + 200, T0 + 300, Some(5)))
            .unwrap();
        let (out, stats) = w.finish().unwrap();
        let tids: Vec<u64> = xs(&events(out)).into_iter().map(|(_, t)| t).collect();
        assert_eq!(tids, [5, FIRST_SYNTHETIC_TID + 1, 5, 5]);
        assert_eq!(stats.overlap_lanes, 1);
    }

    #[test]
    fn a_span_older_than_the_window_is_written_and_counted_late() {
        let p = ProcessKey::default();
        let limits = Limits {
            reorder_window_ns: 1_000,
            ..Limits::default()
        };
        let mut w = TraceEventWriter::new(Vec::new(), limits).unwrap();
        w.push(&p, slice(1, 0, T0 + 10_000, T0 + 11_000, Some(5)))
            .unwrap();
        w.push(&p, slice(2, 0, T0 + 20_000, T0 + 21_000, Some(5)))
            .unwrap();
        w.push(&p, slice(3, 0, T0, T0 + 500, Some(5))).unwrap();
        let (out, stats) = w.finish().unwrap();
        assert_eq!(xs(&events(out)).len(), 3);
        assert_eq!(stats.late, 1);
    }

    /// Another source's events go in as they are, one a line; its pids are kept from this
    /// writer's processes, and the time origin is no later than the cap it asked for.
    #[test]
    fn merged_events_share_the_file_its_pids_and_its_time_origin() {
        let p = ProcessKey {
            pid: 222,
            ..ProcessKey::default()
        };
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        w.reserve_pids([222]);
        let cap = T0 - 40 * DAY_NS + 123;
        w.cap_epoch(cap);
        w.push(&p, slice(1, 0, T0 + 10, T0 + 20, Some(5))).unwrap();
        assert_eq!(w.time_origin().unwrap(), cap);
        w.raw_event("{\"ph\":\"i\",\"s\":\"g\",\"pid\":222,\"tid\":1,\"ts\":1.000,\"name\":\"k\"}")
            .unwrap();
        let (out, stats) = w.finish().unwrap();
        assert_eq!(stats.bytes as usize, out.len());
        let ev = events(out);
        let ours = ev.iter().find(|e| e["ph"] == "X").unwrap();
        assert_ne!(ours["pid"], 222);
        assert_eq!(
            ev.iter().find(|e| e["name"] == "process_name").unwrap()["args"][schema::EPOCH_ARG],
            cap
        );
        assert_eq!(ev.iter().filter(|e| e["pid"] == 222).count(), 1);

        // A cap later than the usual origin changes nothing; with no span, the cap is it.
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        w.cap_epoch(T0 + 1);
        w.push(&p, slice(1, 0, T0 + 10, T0 + 20, Some(5))).unwrap();
        assert_eq!(w.time_origin().unwrap(), (T0 / DAY_NS - 1) * DAY_NS);
        let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
        w.cap_epoch(T0);
        assert_eq!(w.time_origin().unwrap(), T0);
    }

    /// Records where each write to it ended.
    #[derive(Default)]
    struct Writes {
        bytes: Vec<u8>,
        ends: Vec<usize>,
    }

    impl Write for &mut Writes {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(b);
            self.ends.push(self.bytes.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Lines are gathered before they are written, but the output only ever receives whole
    /// lines: cut after any write, it is a valid array once closed. `flush` writes every line
    /// formatted so far, and the byte count covers exactly what was written.
    #[test]
    fn the_output_receives_whole_lines_and_a_flush_writes_them_all() {
        let p = ProcessKey::default();
        let limits = Limits {
            reorder_window_ns: 1_000,
            ..Limits::default()
        };
        let mut sink = Writes::default();
        let mut w = TraceEventWriter::new(&mut sink, limits).unwrap();
        let n = 2_000u64;
        for i in 0..n {
            let t = T0 + i * 10_000;
            w.push(&p, slice(i + 1, 0, t, t + 5_000, Some(5))).unwrap();
        }
        w.flush().unwrap();
        let flushed = w.stats().bytes;
        let (_, stats) = w.finish().unwrap();
        assert_eq!(stats.bytes as usize, sink.bytes.len());
        assert!(sink.ends.contains(&(flushed as usize)));
        // More than one chunk, and each write ends with a whole event.
        assert!(sink.ends.len() > 4);
        for &end in &sink.ends[..sink.ends.len() - 1] {
            let mut cut = sink.bytes[..end].to_vec();
            cut.extend_from_slice(b"]");
            let v: serde_json::Value = serde_json::from_slice(&cut).unwrap();
            assert!(v.is_array());
        }
        assert_eq!(xs(&events(sink.bytes)).len(), n as usize);
    }
}
