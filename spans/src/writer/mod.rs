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

mod decimal;
mod held;
mod hex;
mod prefetch;
mod reorder;
mod rids;
mod two_gen;
mod waiting;

use crate::model::{AttrValue, ProcessKey, Role, Span, SpanEvent};
use crate::schema::{self, member};
use crate::util::{json_str, MixHash};
use decimal::{push_u64, push_us};
use held::{HeldSlice, Names};
use hex::{push_hex128, push_hex64};
use prefetch::{prefetch, prefetch_value};
use reorder::{ReorderQueue, Timed};
use rids::Rids;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Write};
use two_gen::TwoGen;
use waiting::Waiting;

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

/// Overlap lanes, and threads whose id is unknown, get tids from here up: above every Linux
/// thread id (below 2^22), within the 32 bits viewers keep.
const FIRST_SYNTHETIC_TID: u64 = 1 << 31;
/// The track of slices whose thread is unknown.
const UNPLACED_TID: u64 = 0;

#[derive(Clone, Copy)]
struct Placed {
    pid: u32,
    /// A thread span: its children go on `tid`, but it is no slice for links to start from.
    thread: bool,
    tid: u64,
    start: u64,
    end: u64,
}

/// A placed slice whose link waits for its target to be placed.
struct PendingLink {
    span: u64,
    at: Placed,
}

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

/// A count on a cache line of its own. Side by side, the sequence and flow counters had their
/// increments fused into one 16-byte load and store; that load straddled the 8-byte store of
/// the sequence just before it, and waited for it to reach the cache (a failed store forward)
/// at every link.
#[repr(align(64))]
struct Counter(u64);

/// The reorder queue orders these small keys; the items they stand for wait in a slab.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Queued {
    ts: u64,
    /// Among equal timestamps: async and slices first (longest first), then what binds to them.
    class: u8,
    /// `!duration`: longer first.
    rdur: u64,
    seq: u64,
    slot: u32,
}

impl Timed for Queued {
    fn ts(&self) -> u64 {
        self.ts
    }
}

struct Lane {
    tid: u64,
    /// End times of the slices open at the current write position, outermost first.
    open: Vec<u64>,
}

#[derive(Default)]
struct Track {
    name: Option<String>,
    lanes: Vec<Lane>,
}

/// What a writer hands to the one that continues its trace in a new file: the processes and
/// thread names it knew, and its time base, so the new file names its tracks the same way.
pub struct Carry {
    limits: Limits,
    epoch_ns: u64,
    processes: Vec<(ProcessKey, u32)>,
    names: Vec<((u32, u64), String)>,
    next_synthetic_pid: u32,
    next_synthetic_tid: u64,
}

/// Writes trace-event JSON to `out` as spans are pushed. Call [`TraceEventWriter::finish`] to
/// write what is held and close the array; a file cut short before that still opens (the
/// format allows a missing `]`), and `slicetrace repair` closes it.
pub struct TraceEventWriter<W: Write> {
    out: W,
    limits: Limits,
    stats: WriterStats,
    wrote_any: bool,
    /// Whole lines not yet handed to `out`: written a chunk at a time, each event formatted
    /// in place, not copied again per line into a buffer of the output's.
    buf: String,
    /// Where the line being formatted starts in `buf`.
    line_start: usize,
    processes: HashMap<ProcessKey, u32>,
    last_process: Option<(ProcessKey, u32)>,
    pids_used: HashMap<u32, ()>,
    next_synthetic_pid: u32,
    tracks: HashMap<(u32, u64), Track, MixHash>,
    /// Tracks made for thread spans that name no thread, oldest first: one per such span, so
    /// they are forgotten once no slice can be placed on them any more.
    minted_tracks: VecDeque<(u32, u64)>,
    /// `,"pid":…,"tid":…` of the tracks written to lately.
    track_text: HashMap<(u32, u64), Box<str>, MixHash>,
    /// Thread spans and slices by span id: one lookup finds where a parent went.
    placed: TwoGen<u64, Placed>,
    lane_of: TwoGen<u64, u64>,
    rids: Rids,
    names: Names,
    /// Slices waiting for their parent, with their process's pid.
    pending: Waiting<(u32, HeldSlice)>,
    /// Slices being placed with their descendants: kept for its room.
    placing: Vec<HeldSlice>,
    pending_links: TwoGen<u64, Vec<PendingLink>>,
    queue: ReorderQueue<Queued>,
    items: Vec<Option<Item>>,
    free_slots: Vec<u32>,
    seq: Counter,
    next_flow: Counter,
    latest_end: u64,
    written_to: u64,
    next_synthetic_tid: u64,
    /// Timestamps are written relative to this Unix time, so that a double (what viewers parse
    /// `ts` into) keeps nanoseconds; every process_name event carries it.
    epoch_ns: u64,
    /// Processes seen before the epoch was known: named once it is.
    unnamed_processes: Vec<(ProcessKey, u32)>,
}

const DAY_NS: u64 = 86_400_000_000_000;
/// Bytes of whole lines gathered before they are written: a fraction of the L2 cache.
const OUT_CHUNK: usize = 64 << 10;
/// Tracks whose `pid` and `tid` text is kept; past this many, the text is made anew.
const TRACK_TEXTS: usize = 1 << 12;
/// How far ahead [`TraceEventWriter::push_all`] asks for a span; its strings, half as far.
const PUSH_AHEAD: usize = 6;


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

impl<W: Write> TraceEventWriter<W> {
    pub fn new(out: W, limits: Limits) -> io::Result<TraceEventWriter<W>> {
        let mut w = TraceEventWriter {
            out,
            stats: WriterStats::default(),
            wrote_any: false,
            buf: String::with_capacity(OUT_CHUNK + 4096),
            line_start: 0,
            processes: HashMap::new(),
            last_process: None,
            pids_used: HashMap::new(),
            next_synthetic_pid: 1 << 30,
            tracks: HashMap::default(),
            minted_tracks: VecDeque::new(),
            track_text: HashMap::default(),
            placed: TwoGen::new(limits.index_window),
            lane_of: TwoGen::new(limits.index_window),
            rids: Rids::new(limits.index_window),
            names: Names::default(),
            pending: Waiting::new(),
            placing: Vec::new(),
            pending_links: TwoGen::new(limits.index_window),
            queue: ReorderQueue::new(),
            items: Vec::new(),
            free_slots: Vec::new(),
            seq: Counter(0),
            next_flow: Counter(1),
            latest_end: 0,
            written_to: 0,
            next_synthetic_tid: FIRST_SYNTHETIC_TID,
            epoch_ns: u64::MAX,
            unnamed_processes: Vec::new(),
            limits,
        };
        w.out.write_all(b"[\n")?;
        w.stats.bytes += 2;
        Ok(w)
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// What a successor needs to go on in a new file (call before [`finish`](Self::finish)).
    pub fn carry(&self) -> Carry {
        Carry {
            limits: self.limits.clone(),
            epoch_ns: self.epoch_ns,
            processes: self
                .processes
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            names: self
                .tracks
                .iter()
                .filter_map(|(k, t)| t.name.clone().map(|n| (*k, n)))
                .collect(),
            next_synthetic_pid: self.next_synthetic_pid,
            next_synthetic_tid: self.next_synthetic_tid,
        }
    }

    /// A writer that continues a trace in a new file: its processes and threads are named at
    /// once, with the same pids, tids and time base as before.
    pub fn resume(out: W, carry: Carry) -> io::Result<TraceEventWriter<W>> {
        let mut w = TraceEventWriter::new(out, carry.limits)?;
        w.next_synthetic_pid = carry.next_synthetic_pid;
        w.next_synthetic_tid = carry.next_synthetic_tid;
        for (p, pid) in carry.processes {
            w.pids_used.insert(pid, ());
            w.processes.insert(p.clone(), pid);
            w.unnamed_processes.push((p, pid));
        }
        if carry.epoch_ns != u64::MAX {
            w.epoch_ns = carry.epoch_ns;
            for (p, pid) in std::mem::take(&mut w.unnamed_processes) {
                w.write_process_name(&p, pid)?;
            }
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

    /// Sets the file's time origin from the first span with a start time.
    fn take_epoch(&mut self, span: &Span) -> io::Result<()> {
        if self.epoch_ns == u64::MAX && span.start_ns > 0 {
            // A day's margin before the first span's day: earlier spans would be clamped.
            self.epoch_ns = (span.start_ns / DAY_NS).saturating_sub(1) * DAY_NS;
            for (p, pid) in std::mem::take(&mut self.unnamed_processes) {
                self.write_process_name(&p, pid)?;
            }
        }
        Ok(())
    }

    /// [`push`](Self::push) of a span of the process given `pid`.
    fn push_of(&mut self, pid: u32, span: Span) -> io::Result<()> {
        self.stats.spans += 1;
        self.latest_end = self.latest_end.max(span.end_ns);
        match span.role {
            Role::Request => self.push_request(pid, span),
            Role::Thread => self.push_thread(pid, span)?,
            Role::Slice => {
                // A parent that slices already wait for is not placed: the small table of
                // waiting slices answers that, where the index would take two cold probes.
                let known = span.thread_id().map(|tid| (pid, tid)).or_else(|| {
                    if self.pending.waits_for(span.parent) {
                        return None;
                    }
                    self.placed.get(&span.parent).map(|p| (p.pid, p.tid))
                });
                let slice = HeldSlice::new(span, &mut self.names);
                match known {
                    Some((pid, tid)) => self.place(pid, tid, slice),
                    None => self.hold(pid, slice)?,
                }
            }
        }
        self.write_ready(false)
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

    /// Writes everything held and closes the JSON array.
    pub fn finish(mut self) -> io::Result<(W, WriterStats)> {
        if self.epoch_ns == u64::MAX {
            self.epoch_ns = 0;
            for (p, pid) in std::mem::take(&mut self.unnamed_processes) {
                self.write_process_name(&p, pid)?;
            }
        }
        while let Some(parent) = self.pending.oldest() {
            self.evict_pending(parent)?;
        }
        self.write_ready(true)?;
        let unnamed: Vec<(u32, u64)> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.name.is_none())
            .map(|(k, _)| *k)
            .collect();
        for (pid, tid) in unnamed {
            let name = if tid == UNPLACED_TID {
                schema::UNPLACED_TRACK.to_owned()
            } else {
                schema::unlabelled_thread_title(tid)
            };
            self.name_track(pid, tid, name)?;
        }
        self.write_buf()?;
        self.out.write_all(b"\n]\n")?;
        self.stats.bytes += 3;
        self.out.flush()?;
        let unresolved: usize = self.pending_links.values().map(Vec::len).sum();
        self.stats.links_unresolved += unresolved as u64;
        Ok((self.out, self.stats))
    }

    /// Writes out what the reorder window lets go and flushes the output.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_ready(false)?;
        self.write_buf()?;
        self.out.flush()
    }

    fn pid_for(&mut self, p: &ProcessKey) -> io::Result<u32> {
        // Spans come in runs of one process: most lookups are the one before.
        if let Some((last, pid)) = &self.last_process {
            if last == p {
                return Ok(*pid);
            }
        }
        let pid = self.pid_lookup(p)?;
        self.last_process = Some((p.clone(), pid));
        Ok(pid)
    }

    fn pid_lookup(&mut self, p: &ProcessKey) -> io::Result<u32> {
        if let Some(pid) = self.processes.get(p) {
            return Ok(*pid);
        }
        let wanted = u32::try_from(p.pid).ok().filter(|pid| *pid != 0);
        let pid = match wanted {
            Some(pid) if !self.pids_used.contains_key(&pid) => pid,
            _ => {
                self.next_synthetic_pid += 1;
                self.next_synthetic_pid
            }
        };
        self.pids_used.insert(pid, ());
        self.processes.insert(p.clone(), pid);
        if self.epoch_ns == u64::MAX {
            self.unnamed_processes.push((p.clone(), pid));
        } else {
            self.write_process_name(p, pid)?;
        }
        Ok(pid)
    }

    fn write_process_name(&mut self, p: &ProcessKey, pid: u32) -> io::Result<()> {
        let name = schema::process_title(&p.service, p.pid, &p.host);
        self.start_line();
        let _ = write!(
            self.buf,
            "{{\"ph\":\"M\",\"pid\":{pid},\"name\":\"process_name\",\"args\":{{\"name\":"
        );
        json_str(&mut self.buf, &name);
        self.buf.push_str(member::EPOCH_ARG);
        let _ = write!(self.buf, "{}}}}}", self.epoch_ns);
        self.emit_line()
    }

    fn push_request(&mut self, pid: u32, span: Span) {
        self.stats.requests += 1;
        if let Some(rid) = span.attr(schema::RID).map(attr_text) {
            self.rids.insert(span.trace_id, &rid);
        }
        let mut args = String::with_capacity(128);
        args.push('{');
        Ids::of(&span).push(&mut args);
        attrs_args(&mut args, &span.attrs, false);
        args.push('}');
        let id = span.span_id;
        let (start, end) = (span.start_ns, span.end_ns.max(span.start_ns));
        for ev in span.events {
            let mut ev_args = String::from("{");
            attrs_args(&mut ev_args, &ev.attrs, true);
            ev_args.push('}');
            self.queue(
                ev.time_ns.clamp(start, end),
                2,
                0,
                Item::Async {
                    pid,
                    id,
                    ph: 'n',
                    name: ev.name,
                    args: ev_args,
                },
            );
        }
        self.queue(
            start,
            0,
            end - start,
            Item::Async {
                pid,
                id,
                ph: 'b',
                name: span.name.clone(),
                args,
            },
        );
        self.queue(
            end,
            0,
            0,
            Item::Async {
                pid,
                id,
                ph: 'e',
                name: span.name,
                args: String::from("{}"),
            },
        );
    }

    fn push_thread(&mut self, pid: u32, span: Span) -> io::Result<()> {
        // No thread id: a track of its own.
        let tid = match span.thread_id() {
            Some(t) => t,
            None => self.synthetic_tid(),
        };
        self.placed.insert(
            span.span_id,
            Placed {
                pid,
                thread: true,
                tid,
                start: span.start_ns,
                end: span.end_ns.max(span.start_ns),
            },
        );
        let named = self
            .tracks
            .get(&(pid, tid))
            .is_some_and(|t| t.name.is_some());
        if !named {
            let label = span
                .attr(schema::THREAD_LABEL)
                .map(attr_text)
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| schema::unlabelled_thread_title(tid));
            let name = schema::thread_title(
                &label,
                span.attr(schema::TP_RANK).and_then(AttrValue::as_i64),
                span.attr(schema::DP_RANK).and_then(AttrValue::as_i64),
            );
            self.name_track(pid, tid, name)?;
        }
        if let Some(mut children) = self.pending.take(span.span_id) {
            while let Some((_, child)) = self.pending.next(&mut children) {
                self.place(pid, tid, child);
            }
        }
        Ok(())
    }

    fn hold(&mut self, pid: u32, span: HeldSlice) -> io::Result<()> {
        self.pending.hold(span.parent, (pid, span));
        while self.pending.len() > self.limits.max_pending {
            let Some(oldest) = self.pending.oldest() else {
                break;
            };
            self.evict_pending(oldest)?;
        }
        Ok(())
    }

    /// Places the slices waiting for `parent` on their process's unplaced track.
    fn evict_pending(&mut self, parent: u64) -> io::Result<()> {
        if let Some(mut children) = self.pending.take(parent) {
            while let Some((pid, child)) = self.pending.next(&mut children) {
                self.stats.spans_unplaced += 1;
                self.place(pid, UNPLACED_TID, child);
            }
        }
        Ok(())
    }

    /// Queues `span` (and, transitively, the slices that were waiting for it) on `pid`/`tid`.
    fn place(&mut self, pid: u32, tid: u64, span: HeldSlice) {
        let mut work = std::mem::take(&mut self.placing);
        let mut next = Some(span);
        while let Some(span) = next.take().or_else(|| work.pop()) {
            let end = span.end_ns.max(span.start_ns);
            let here = Placed {
                pid,
                thread: false,
                tid,
                start: span.start_ns,
                end,
            };
            self.placed.insert(span.span_id, here);
            let (span_id, start) = (span.span_id, span.start_ns);
            // The slice goes before its flows: at equal times a flow binds to what is already
            // open. Its place in the queue is taken now; it is queued once its links are read.
            let seq = self.next_seq();
            let mut flow_in = None;
            for &(_, target) in span.links() {
                match self.placed.get(&target).copied().filter(|p| !p.thread) {
                    Some(from) => {
                        let id = self.queue_flow_start(from, target, here);
                        match flow_in {
                            None => flow_in = Some(id),
                            Some(_) => self.queue_flow_end(id, here, span_id),
                        }
                    }
                    None => {
                        let waiting = PendingLink {
                            span: span_id,
                            at: here,
                        };
                        let mut v = self.pending_links.remove(&target).unwrap_or_default();
                        v.push(waiting);
                        // Links that waited a whole window for their target give up, counted.
                        let mut gave_up = 0;
                        self.pending_links
                            .insert_with(target, v, |w| gave_up += w.len() as u64);
                        self.stats.links_unresolved += gave_up;
                    }
                }
            }
            if let Some(waiting) = self.pending_links.remove(&span_id) {
                for l in waiting {
                    self.queue_flow(here, span_id, l.at, l.span);
                }
            }
            let slice = Item::Slice {
                pid,
                tid,
                slice: span,
                flow_in,
            };
            self.queue_at(seq, start, 1, end - start, slice);
            if let Some(mut children) = self.pending.take(span_id) {
                while let Some((_, child)) = self.pending.next(&mut children) {
                    work.push(child);
                }
            }
        }
        self.placing = work;
    }

    /// A flow arrow from slice `from_id` (placed at `from`) to the slice `to_id` starting at
    /// `to.start`.
    fn queue_flow(&mut self, from: Placed, from_id: u64, to: Placed, to_id: u64) {
        let id = self.queue_flow_start(from, from_id, to);
        self.queue_flow_end(id, to, to_id);
    }

    /// The start of a flow arrow from slice `from_id` (placed at `from`) to a slice placed at
    /// `to`; returns the arrow's id.
    fn queue_flow_start(&mut self, from: Placed, from_id: u64, to: Placed) -> u64 {
        let id = self.next_flow.0;
        self.next_flow.0 += 1;
        // The arrow leaves the linked slice at its end, or where the linking slice starts if
        // that is earlier; either way inside the linked slice, which the start binds to.
        let leave = to.start.min(from.end.saturating_sub(1)).max(from.start);
        self.queue(
            leave,
            2,
            0,
            Item::Flow {
                pid: from.pid,
                tid: from.tid,
                bind: from_id,
                id,
                start: true,
            },
        );
        id
    }

    /// The end of flow arrow `id` at slice `to_id`, placed at `to`.
    fn queue_flow_end(&mut self, id: u64, to: Placed, to_id: u64) {
        // Right after the linking slice, before any child starting with it, so it binds there.
        self.queue(
            to.start,
            1,
            to.end - to.start,
            Item::Flow {
                pid: to.pid,
                tid: to.tid,
                bind: to_id,
                id,
                start: false,
            },
        );
    }

    fn next_seq(&mut self) -> u64 {
        self.seq.0 += 1;
        self.seq.0
    }

    fn queue(&mut self, ts: u64, class: u8, dur: u64, item: Item) {
        let seq = self.next_seq();
        self.queue_at(seq, ts, class, dur, item);
    }

    /// Queues `item` as the `seq`th, which orders it among equal times and classes.
    fn queue_at(&mut self, seq: u64, ts: u64, class: u8, dur: u64, item: Item) {
        if ts < self.written_to {
            self.stats.late += 1;
        }
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.items[s as usize] = Some(item);
                s
            }
            None => {
                self.items.push(Some(item));
                (self.items.len() - 1) as u32
            }
        };
        self.queue.push(Queued {
            ts,
            class,
            rdur: !dur,
            seq,
            slot,
        });
    }

    fn write_ready(&mut self, all: bool) -> io::Result<()> {
        let watermark = self
            .latest_end
            .saturating_sub(self.limits.reorder_window_ns);
        let max_buffered = self.limits.max_buffered;
        while let Some(top) = self.queue.peek() {
            let due = all || top.ts < watermark || self.queue.len() > max_buffered;
            if !due {
                break;
            }
            self.prefetch_ahead();
            let Some(q) = self.queue.pop() else {
                break;
            };
            self.written_to = self.written_to.max(q.ts);
            let item = self.items[q.slot as usize].take();
            self.free_slots.push(q.slot);
            if let Some(item) = item {
                self.write_item(q.ts, item)?;
            }
        }
        Ok(())
    }

    /// Asks for the memory of the events a few places behind the next one: their slab entries,
    /// then the spans those hold, then the spans' strings; each stage reads only what an
    /// earlier one asked for.
    fn prefetch_ahead(&self) {
        let held = |n| {
            self.queue
                .ahead(n)
                .and_then(|k| self.items[k.slot as usize].as_ref())
        };
        if let Some(k) = self.queue.ahead(12) {
            prefetch_value(&self.items[k.slot as usize]);
        }
        if let Some(Item::Slice { slice, .. }) = held(8) {
            prefetch(slice.rest_ptr());
        }
    }

    fn write_item(&mut self, ts: u64, item: Item) -> io::Result<()> {
        match item {
            Item::Slice {
                pid,
                tid,
                slice,
                flow_in,
            } => self.write_slice(pid, tid, slice, flow_in),
            Item::Instant { pid, tid, ev } => {
                self.stats.instants += 1;
                self.start_line();
                self.buf.push_str("{\"ph\":\"i\",\"s\":\"t\",\"pid\":");
                push_u64(&mut self.buf, u64::from(pid));
                self.buf.push_str(",\"tid\":");
                push_u64(&mut self.buf, tid);
                self.buf.push_str(",\"ts\":");
                push_us(&mut self.buf, ev.time_ns.saturating_sub(self.epoch_ns));
                self.buf.push_str(",\"name\":");
                json_str(&mut self.buf, &ev.name);
                self.buf.push_str(",\"args\":{");
                attrs_args(&mut self.buf, &ev.attrs, true);
                self.buf.push_str("}}");
                self.emit_line()
            }
            Item::Flow {
                pid,
                tid,
                bind,
                id,
                start,
            } => {
                let tid = self.lane_of.get(&bind).copied().unwrap_or(tid);
                self.write_flow(id, start, pid, tid, ts)
            }
            Item::Async {
                pid,
                id,
                ph,
                name,
                args,
            } => {
                self.start_line();
                self.buf.push_str("{\"ph\":\"");
                self.buf.push(ph);
                self.buf.push_str("\",\"cat\":\"request\",\"id\":\"0x");
                push_hex64(&mut self.buf, id);
                self.buf.push_str("\",\"pid\":");
                push_u64(&mut self.buf, u64::from(pid));
                self.buf.push_str(",\"ts\":");
                push_us(&mut self.buf, ts.saturating_sub(self.epoch_ns));
                self.buf.push_str(",\"name\":");
                json_str(&mut self.buf, &name);
                self.buf.push_str(",\"args\":");
                self.buf.push_str(&args);
                self.buf.push('}');
                self.emit_line()
            }
        }
    }

    /// One end of flow arrow `id`, bound to the slice open on `pid`/`tid` at `ts`.
    fn write_flow(&mut self, id: u64, start: bool, pid: u32, tid: u64, ts: u64) -> io::Result<()> {
        if start {
            self.stats.flows += 1;
        }
        self.start_line();
        self.buf.push_str(if start {
            "{\"ph\":\"s\",\"id\":"
        } else {
            "{\"ph\":\"f\",\"bp\":\"e\",\"id\":"
        });
        push_u64(&mut self.buf, id);
        self.push_track(pid, tid);
        self.buf.push_str(",\"ts\":");
        push_us(&mut self.buf, ts.saturating_sub(self.epoch_ns));
        self.buf
            .push_str(",\"name\":\"link\",\"cat\":\"slicetrace.link\"}");
        self.emit_line()
    }

    fn write_slice(
        &mut self,
        pid: u32,
        tid: u64,
        mut span: HeldSlice,
        flow_in: Option<u64>,
    ) -> io::Result<()> {
        self.stats.slices += 1;
        let end = span.end_ns.max(span.start_ns);
        let out_tid = self.lane_for(pid, tid, span.start_ns, end)?;
        if out_tid != tid {
            self.lane_of.insert(span.span_id, out_tid);
        }
        self.start_line();
        self.buf.push_str("{\"ph\":\"X\"");
        self.push_track(pid, out_tid);
        self.buf.push_str(",\"ts\":");
        push_us(&mut self.buf, span.start_ns.saturating_sub(self.epoch_ns));
        self.buf.push_str(",\"dur\":");
        push_us(&mut self.buf, end - span.start_ns);
        self.buf.push_str(",\"name\":");
        span.push_name(&mut self.buf, &self.names);
        self.buf.push_str(",\"cat\":\"slice\",\"args\":{");
        let ids = Ids {
            trace: span.trace_id,
            span: span.span_id,
            parent: span.parent,
            links: span.links(),
            error: span.error(),
        };
        ids.push(&mut self.buf);
        if span.attr(schema::THREAD_ID).is_none() && tid != UNPLACED_TID {
            self.buf.push_str(member::THREAD_ID);
            push_u64(&mut self.buf, tid);
        }
        if span.attr(schema::RID).is_none() {
            if let Some(rid) = self.rids.get(span.trace_id) {
                self.buf.push_str(member::RID);
                self.buf.push_str(rid);
            }
        }
        attrs_args(&mut self.buf, span.attrs(), false);
        self.buf.push_str("}}");
        self.emit_line()?;
        if let Some(id) = flow_in {
            self.write_flow(id, false, pid, out_tid, span.start_ns)?;
        }
        for ev in span.take_events() {
            let ts = ev.time_ns.clamp(span.start_ns, end);
            self.queue(
                ts,
                3,
                0,
                Item::Instant {
                    pid,
                    tid: out_tid,
                    ev,
                },
            );
        }
        Ok(())
    }

    /// Appends `,"pid":…,"tid":…` for a track: made once per track, and copied after that.
    fn push_track(&mut self, pid: u32, tid: u64) {
        if let Some(text) = self.track_text.get(&(pid, tid)) {
            self.buf.push_str(text);
            return;
        }
        if self.track_text.len() >= TRACK_TEXTS {
            // Tracks of threads with no id are made one per thread span: forgotten in a
            // while, so that they cannot pile up.
            self.track_text.clear();
        }
        let mut text = String::from(",\"pid\":");
        push_u64(&mut text, u64::from(pid));
        text.push_str(",\"tid\":");
        push_u64(&mut text, tid);
        self.buf.push_str(&text);
        self.track_text.insert((pid, tid), text.into_boxed_str());
    }

    fn synthetic_tid(&mut self) -> u64 {
        self.next_synthetic_tid += 1;
        self.next_synthetic_tid
    }

    /// The track of `pid`/`tid` where a slice `start..end` nests: the thread's own, or the
    /// first overlap lane where it does.
    fn lane_for(&mut self, pid: u32, tid: u64, start: u64, end: u64) -> io::Result<u64> {
        let track = self.track(pid, tid);
        if track.lanes.is_empty() {
            track.lanes.push(Lane {
                tid,
                open: Vec::new(),
            });
        }
        for lane in &mut track.lanes {
            while lane.open.last().is_some_and(|&e| e <= start) {
                lane.open.pop();
            }
            if lane.open.last().is_none_or(|&e| end <= e) {
                lane.open.push(end);
                return Ok(lane.tid);
            }
        }
        let lane_tid = self.synthetic_tid();
        let track = self.track(pid, tid);
        let n = track.lanes.len() as u64;
        track.lanes.push(Lane {
            tid: lane_tid,
            open: vec![end],
        });
        let name = track.name.clone();
        self.stats.overlap_lanes += 1;
        if let Some(name) = name {
            self.write_thread_name(pid, lane_tid, tid, &schema::overlap_lane_title(&name, n), n)?;
        }
        Ok(lane_tid)
    }

    /// The state of track `pid`/`tid`, made if new. A track of a thread with no id is kept
    /// while the index of placed spans may still place a slice on it: each came with its
    /// thread span's entry there, which is gone once as many newer ones came. A slice already
    /// queued for a forgotten track makes it anew; its name was written when it was given.
    fn track(&mut self, pid: u32, tid: u64) -> &mut Track {
        let minted = (FIRST_SYNTHETIC_TID..=self.next_synthetic_tid).contains(&tid);
        if minted && !self.tracks.contains_key(&(pid, tid)) {
            self.minted_tracks.push_back((pid, tid));
            if self.minted_tracks.len() > self.placed.most() {
                if let Some(old) = self.minted_tracks.pop_front() {
                    self.tracks.remove(&old);
                }
            }
        }
        self.tracks.entry((pid, tid)).or_default()
    }

    fn name_track(&mut self, pid: u32, tid: u64, name: String) -> io::Result<()> {
        let track = self.track(pid, tid);
        track.name = Some(name.clone());
        let lanes: Vec<u64> = track.lanes.iter().skip(1).map(|l| l.tid).collect();
        self.write_thread_name(pid, tid, tid, &name, 0)?;
        for (i, lane_tid) in lanes.into_iter().enumerate() {
            let n = i as u64 + 1;
            self.write_thread_name(pid, lane_tid, tid, &schema::overlap_lane_title(&name, n), n)?;
        }
        Ok(())
    }

    /// Names track `tid`, lane `lane` of thread `base` (0: the thread's own track).
    fn write_thread_name(
        &mut self,
        pid: u32,
        tid: u64,
        base: u64,
        name: &str,
        lane: u64,
    ) -> io::Result<()> {
        self.start_line();
        let _ = write!(
            self.buf,
            "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_name\",\"args\":{{\"name\":"
        );
        json_str(&mut self.buf, name);
        self.buf.push_str("}}");
        self.emit_line()?;
        // Keeps a thread's overlap lanes right under it: sorted by the thread id, then lane.
        let index = base.min(1 << 32) * 64 + lane.min(63);
        self.start_line();
        let _ = write!(
            self.buf,
            "{{\"ph\":\"M\",\"pid\":{pid},\"tid\":{tid},\"name\":\"thread_sort_index\",\"args\":{{\"sort_index\":{index}}}}}"
        );
        self.emit_line()
    }

    /// Begins a line with the separator from the one before: one event per line, the
    /// separator before it, so a file cut short after any whole line is a valid array but for
    /// its closing bracket.
    fn start_line(&mut self) {
        self.line_start = self.buf.len();
        if self.wrote_any {
            self.buf.push_str(",\n");
        }
    }

    fn emit_line(&mut self) -> io::Result<()> {
        self.wrote_any = true;
        self.stats.bytes += (self.buf.len() - self.line_start) as u64;
        if self.buf.len() >= OUT_CHUNK {
            self.write_buf()?;
        }
        Ok(())
    }

    /// Hands the gathered lines to `out`.
    fn write_buf(&mut self) -> io::Result<()> {
        let r = self.out.write_all(self.buf.as_bytes());
        self.buf.clear();
        r
    }
}

fn attr_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::F64(f) => f.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// A decimal integer of another type than `u64` (attribute values).
fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// A span's ids, links and error: the first of its args.
struct Ids<'a> {
    trace: u128,
    span: u64,
    parent: u64,
    links: &'a [(u128, u64)],
    error: Option<&'a str>,
}

impl Ids<'_> {
    fn of(span: &Span) -> Ids<'_> {
        Ids {
            trace: span.trace_id,
            span: span.span_id,
            parent: span.parent,
            links: &span.links,
            error: span.error.as_deref(),
        }
    }

    fn push(&self, out: &mut String) {
        out.push_str(&member::ARG_TRACE_ID[1..]);
        out.push('"');
        push_hex128(out, self.trace);
        out.push('"');
        out.push_str(member::ARG_SPAN_ID);
        out.push('"');
        push_hex64(out, self.span);
        out.push('"');
        if self.parent != 0 {
            out.push_str(member::ARG_PARENT_SPAN_ID);
            out.push('"');
            push_hex64(out, self.parent);
            out.push('"');
        }
        if !self.links.is_empty() {
            out.push_str(member::ARG_LINKS);
            out.push('[');
            for (i, (t, s)) in self.links.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                push_hex128(out, *t);
                out.push('-');
                push_hex64(out, *s);
                out.push('"');
            }
            out.push(']');
        }
        if let Some(e) = self.error {
            out.push_str(member::ARG_ERROR);
            json_str(out, e);
        }
    }
}

/// `"key":value` for each attribute, comma-separated, with a comma before the first unless
/// `first`.
fn attrs_args(out: &mut String, attrs: &[(String, AttrValue)], first: bool) {
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 || !first {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        match v {
            AttrValue::Str(s) => json_str(out, s),
            AttrValue::Int(i) => push_int(out, *i),
            AttrValue::F64(f) if f.is_finite() => {
                let _ = write!(out, "{f:?}");
            }
            AttrValue::F64(f) => json_str(out, &f.to_string()),
            AttrValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
}

#[cfg(test)]
mod tests {
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
            assert!(w.tracks.len() <= w.placed.most(), "{}", w.tracks.len());
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
