//! The tracing calls. Each writes records into the calling thread's ring and returns; when
//! tracing is off each is one relaxed load and a branch.

use super::directory::{directory, Entry};
use super::handle::{
    admits, admits_at, enabled, every, filtering, passes, with_local, Local, GATE, OFF,
};
use super::history::{self, Lookup, Target};
use crate::args::{Attr, End, Opts, UnixNanos, Value};
use crate::ids::{process_tag, Rid};
use crate::level::{self, DEFAULT_NAME_LEVEL};
use crate::name::Name;
use crate::propagate::PropagateContext;
use crate::wire::array::{self, MAX_ARRAY_BYTES};
use crate::wire::batch;
use crate::wire::origin::{encode_origin, origin_ids, Upstream, MAX_ORIGIN_PAYLOAD};
use crate::wire::record::{
    chunk, chunks_for, flag, truncate_str, Kind, Record, CHUNK_BYTES, MAX_STR_BYTES,
};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

/// A request id as `req_start` and `set_propagate_context` take it: a string (hashed, and kept
/// whole for the `rid` attribute), an integer, or a [`Rid`] made earlier.
pub trait RequestKey {
    fn rid(&self) -> Rid;
    fn text(&self) -> Option<&str> {
        None
    }
}

impl RequestKey for &str {
    fn rid(&self) -> Rid {
        Rid::from_str_id(self)
    }
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl RequestKey for &String {
    fn rid(&self) -> Rid {
        Rid::from_str_id(self)
    }
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl RequestKey for u64 {
    fn rid(&self) -> Rid {
        Rid(*self)
    }
}

impl RequestKey for Rid {
    fn rid(&self) -> Rid {
        *self
    }
}

/// `propagate_context` calls that found no request (not started or joined on this thread).
pub(crate) static PROPAGATE_UNKNOWN: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
pub(super) fn stamp(l: &Local, ts: Option<UnixNanos>) -> (u64, u8) {
    match ts {
        // 0 means now, as the reference's `ts=0`.
        Some(t) if t.0 != 0 => (t.0, flag::TS_UNIX),
        _ => (l.now(), 0),
    }
}

#[inline(always)]
fn record_one(kind: Kind, flags: u8, rid: Rid, name: u32, value: u64, ts: Option<UnixNanos>) {
    with_local(|l| {
        let (t, tf) = stamp(l, ts);
        l.producer.push(Record {
            ts: t,
            rid: rid.0,
            value,
            name,
            kind: kind as u8,
            flags: flags | tf,
            len: 0,
        });
    });
}

/// Records of one call that carries more than a head record, gathered on the stack and pushed
/// as whole units. The buffer is left uninitialised: filling 2 KiB on every call that carries
/// an attribute would cost more than the records it holds.
pub(super) struct Gather {
    buf: [MaybeUninit<Record>; Gather::CAP],
    n: usize,
}

impl Gather {
    const CAP: usize = 64;

    pub(super) fn new() -> Gather {
        Gather {
            buf: [const { MaybeUninit::uninit() }; Gather::CAP],
            n: 0,
        }
    }

    /// Adds a head record followed by chunks holding `payload`.
    pub(super) fn add(&mut self, l: &mut Local, head: Record, payload: &[u8]) {
        if self.n + 1 + chunks_for(payload.len()) > Gather::CAP {
            self.flush(l);
        }
        self.put(head, payload);
    }

    /// `add` with room known: a payload is at most about a kilobyte (an array attribute's
    /// 1024, a string's 256, an origin's context, tracestate, role and rid), 37 chunks at most,
    /// fewer records than `CAP`.
    fn put(&mut self, mut head: Record, payload: &[u8]) {
        head.len = payload.len() as u16;
        self.buf[self.n].write(head);
        self.n += 1;
        for part in payload.chunks(CHUNK_BYTES) {
            self.buf[self.n].write(chunk(part));
            self.n += 1;
        }
    }

    /// How many records are gathered and not yet pushed.
    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// The records gathered so far.
    fn records(&self) -> &[Record] {
        // SAFETY: `put` writes each of the first `n` slots before it counts it, and
        // `MaybeUninit<Record>` has the layout of `Record`, so they are `n` initialised records.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast::<Record>(), self.n) }
    }

    pub(super) fn add_attrs(&mut self, l: &mut Local, rid: Rid, target: u8, attrs: &[Attr<'_>]) {
        for a in attrs {
            let head = |vt: u8, value: u64| Record {
                rid: rid.0,
                value,
                name: a.key.id(),
                kind: Kind::Attr as u8,
                flags: vt | target,
                ..Record::default()
            };
            match a.value {
                Value::I64(v) => self.add(l, head(flag::VALUE_I64, v as u64), &[]),
                Value::F64(v) => self.add(l, head(flag::VALUE_F64, v.to_bits()), &[]),
                Value::Bool(v) => self.add(l, head(flag::VALUE_BOOL, v as u64), &[]),
                Value::Str(s) => {
                    let text = truncate_str(s, MAX_STR_BYTES);
                    self.add(l, head(flag::VALUE_STR, 0), text.as_bytes())
                }
                ref list => {
                    let mut packed = [0u8; MAX_ARRAY_BYTES];
                    if let Some((vt, n, len)) = array::encode(list, &mut packed) {
                        self.add(l, head(vt | flag::ARRAY, n), &packed[..len]);
                    }
                }
            }
        }
    }

    /// Pushes what is gathered; false if the ring had no room for it (dropped, counted).
    pub(super) fn flush(&mut self, l: &mut Local) -> bool {
        let pushed = self.n == 0 || l.producer.push_all(self.records());
        self.n = 0;
        pushed
    }
}

/// Names the calling thread in traces: its spans read `"{label} [TP n] (host:… | pid:…)"` and
/// carry `thread_label`, `tp_rank` and `dp_rank`. Works before `init`; the latest call applies to
/// thread spans opened after it. A thread that never calls it is traced under its thread name.
pub fn set_thread_info(label: &str, tp_rank: Option<u32>, dp_rank: Option<u32>) {
    set_thread_info_with(ThreadInfo {
        label,
        tp_rank,
        dp_rank,
        ..ThreadInfo::default()
    })
}

/// What [`set_thread_info_with`] says of the calling thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadInfo<'a> {
    pub label: &'a str,
    pub tp_rank: Option<u32>,
    pub dp_rank: Option<u32>,
    /// Pipeline-parallel rank: a `pp_rank` attribute on thread spans.
    pub pp_rank: Option<u32>,
    /// Thread span names show every rank given, as SGLang 0.5.11 and later write them:
    /// `"{label} [TP n]  [PP n]  [DP n] (host:… | pid:…)"`. Else the TP rank only, as 0.5.9.
    pub all_ranks_in_name: bool,
}

/// [`set_thread_info`] with a pipeline-parallel rank and the newer naming.
pub fn set_thread_info_with(info: ThreadInfo<'_>) {
    with_local(|l| {
        l.slot.update_meta(|m| {
            m.label = Some(info.label.to_owned());
            m.tp_rank = info.tp_rank;
            m.dp_rank = info.dp_rank;
            m.pp_rank = info.pp_rank;
            m.all_ranks_in_name = info.all_ranks_in_name;
        });
        if enabled() {
            let (ts, tf) = stamp(l, None);
            l.producer.push(Record {
                ts,
                kind: Kind::ThreadInfo as u8,
                flags: tf,
                ..Record::default()
            });
        }
    });
}

/// Options of [`req_start_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ReqStart<'a> {
    pub bootstrap_room: Option<u64>,
    pub ts: Option<UnixNanos>,
    /// Join an upstream trace: the first slice links to its link span, and the bootstrap room
    /// span becomes a child of its parent span (an HTTP gateway's `traceparent`, say); or, for
    /// a context that [names a room](PropagateContext::names_room) (another node's, from
    /// [`propagate_context_for_room`]), the request span hangs under that room span and this
    /// process opens no room span.
    pub parent: Option<&'a PropagateContext>,
    /// The upstream W3C `tracestate` header value, kept on every span of the request in this
    /// process. Values over 512 bytes, or not valid W3C tracestate, are not kept (counted in
    /// `Stats::tracestate_refused`).
    pub tracestate: Option<&'a str>,
    /// The server's part in the request (`prefill`, `decode`, …): the request span is named
    /// `"{role} Req {rid}"`. Cut to `limits::MAX_ROLE_BYTES`.
    pub role: Option<&'a str>,
    /// Open no bootstrap room span: the request span is the top of this process's tree, under
    /// the upstream's parent span when there is one (SGLang 0.5.10 and later).
    pub no_room_span: bool,
}

/// Opens the request in this process: its bootstrap room span (`Bootstrap Room 0x{room:x}`,
/// `0x0` without a room), the request span under it, and this thread's span of it.
pub fn req_start(rid: impl RequestKey, bootstrap_room: Option<u64>) -> Rid {
    req_start_with(
        rid,
        ReqStart {
            bootstrap_room,
            ..ReqStart::default()
        },
    )
}

pub fn req_start_with(rid: impl RequestKey, opts: ReqStart<'_>) -> Rid {
    let id = rid.rid();
    if !admits(id) {
        left_out(id);
        return id;
    }
    with_local(|l| {
        let (ts, tf) = stamp(l, opts.ts);
        let mut flags = tf;
        if opts.bootstrap_room.is_some() {
            flags |= flag::HAS_ROOM;
        }
        if opts.no_room_span {
            flags |= flag::NO_ROOM_SPAN;
        }
        let up = opts.parent.map(|p| {
            if p.is_sampled() {
                flags |= flag::SAMPLED;
            }
            if p.names_room() {
                flags |= flag::JOINS_ROOM;
            }
            Upstream {
                trace_id: p.trace_id,
                link: p.link_span_id,
                extra: p.parent_span_id,
            }
        });
        let head = Record {
            ts,
            rid: id.0,
            value: opts.bootstrap_room.unwrap_or(0),
            kind: Kind::ReqStart as u8,
            flags,
            ..Record::default()
        };
        start_origin(l, id, head, up, opts.tracestate, opts.role, rid.text());
    });
    id
}

/// Counts a request the session's ratio sampler left out where it entered this process.
#[cold]
fn left_out(_rid: Rid) {
    if filtering() {
        crate::sampling::LEFT_OUT_AT_ORIGIN.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes the origin record `head` (a `ReqStart` or `SetPropagate`) with its payload, then
/// publishes it.
fn start_origin(
    l: &mut Local,
    rid: Rid,
    mut head: Record,
    up: Option<Upstream>,
    tracestate: Option<&str>,
    role: Option<&str>,
    text: Option<&str>,
) {
    let mut payload = [0u8; MAX_ORIGIN_PAYLOAD];
    let n = encode_origin(
        &mut head,
        up.as_ref(),
        tracestate,
        role,
        text.unwrap_or(""),
        &mut payload,
    );
    let pos = l.producer.tail();
    let mut g = Gather::new();
    g.add(l, head, &payload[..n]);
    if g.flush(l) {
        publish(l, rid, pos, &head, up.as_ref());
    }
}

/// Makes the request findable by `propagate_context` on this process's other threads.
fn publish(l: &Local, rid: Rid, pos: u64, head: &Record, up: Option<&Upstream>) {
    if let Some(ids) = origin_ids(l.seed, pos, head, up) {
        let flagged = up.map(|_| head.flags & flag::SAMPLED != 0);
        directory().insert(
            rid.0,
            Entry {
                trace_id: ids.trace_id,
                request_span: ids.request_span,
                room_span: ids.room_span,
                sampled: crate::sampling::decide(rid, flagged),
            },
        );
    }
}

/// Ends the request in this process: its open slices close as unfinished, its thread spans end,
/// then its request span.
#[inline]
pub fn req_finish(rid: Rid) {
    if admits(rid) {
        record_one(Kind::ReqFinish, 0, rid, 0, 0, None);
        directory().remove(rid.0);
    }
}

/// [`req_finish`] with a timestamp and attributes for the request span.
pub fn req_finish_with(rid: Rid, opts: Opts<'_>) {
    if !admits(rid) {
        return;
    }
    let head = Head {
        kind: Kind::ReqFinish,
        name: 0,
        value: 0,
        flags: 0,
        ts: opts.ts,
    };
    attrs_then_head(rid, flag::TARGET_REQUEST, opts.attrs, head);
    directory().remove(rid.0);
}

/// Opens a slice: a child of this request's innermost open slice on this thread, else of the
/// thread span (then linked to the previous top-level slice).
/// A name above the process level ([`set_level`](crate::set_level)) records nothing.
#[inline(always)]
pub fn slice_start(name: &'static Name, rid: Rid) {
    if admits_at(rid, name) && level::start(name.level()) {
        let lv = name.level() as u64;
        record_one(Kind::SliceStart, 0, rid, name.id(), lv, None);
    }
}

/// Opens an anonymous slice, named by the `slice_end` that closes it. Its level is the default
/// name level (see [`set_level`](crate::set_level)).
#[inline(always)]
pub fn slice_start_anon(rid: Rid) {
    if admits(rid) && level::start_anon(DEFAULT_NAME_LEVEL) {
        let lv = DEFAULT_NAME_LEVEL as u64;
        record_one(Kind::SliceStart, flag::ANON, rid, 0, lv, None);
    }
}

/// [`slice_start`] (or, with `name: None`, [`slice_start_anon`]) at a given time.
pub fn slice_start_at(name: Option<&'static Name>, rid: Rid, ts: UnixNanos) {
    if !admits(rid) {
        return;
    }
    let (id, f, lv) = match name {
        Some(n) if level::start(n.level()) => (n.id(), 0, n.level()),
        Some(_) => return,
        None if level::start_anon(DEFAULT_NAME_LEVEL) => (0, flag::ANON, DEFAULT_NAME_LEVEL),
        None => return,
    };
    record_one(Kind::SliceStart, f, rid, id, lv as u64, Some(ts));
}

/// Ends the innermost open slice of this request on this thread. Of a name above the process
/// level, recorded only if this thread may have recorded its start (see
/// [`set_level`](crate::set_level)).
#[inline(always)]
pub fn slice_end(name: &'static Name, rid: Rid, end: End) {
    if admits_at(rid, name) {
        if let Some((f, at)) = level::end(name.level()) {
            let lv = name.level() as u64;
            let end = ended(name, end, at);
            record_one(Kind::SliceEnd, end.0 | f, rid, name.id(), lv, None);
        }
    }
}

/// The flags an end of `name` is recorded with: above the level (`at` false) it opens no next
/// slice; at or below it, the next slice it opens is counted.
#[inline(always)]
fn ended(name: &Name, end: End, at: bool) -> End {
    if end.0 & (flag::AUTO_NEXT_ANON | flag::THREAD_FINISH) != flag::AUTO_NEXT_ANON {
        return end;
    }
    if at {
        level::anon_opened(name.level());
        end
    } else {
        End(end.0 & !flag::AUTO_NEXT_ANON)
    }
}

/// [`slice_end`] with a timestamp and attributes for the ending slice.
pub fn slice_end_with(name: &'static Name, rid: Rid, end: End, opts: Opts<'_>) {
    if !admits(rid) {
        return;
    }
    let Some((f, at)) = level::end(name.level()) else {
        return;
    };
    let end = ended(name, end, at);
    let (target, attrs) = (flag::TARGET_SLICE, opts.attrs);
    let head = Head {
        kind: Kind::SliceEnd,
        name: name.id(),
        value: name.level() as u64,
        flags: end.0 | f,
        ts: opts.ts,
    };
    attrs_then_head(rid, target, attrs, head);
}

/// The head record `attrs_then_head` writes after the attributes.
struct Head {
    kind: Kind,
    name: u32,
    value: u64,
    flags: u8,
    ts: Option<UnixNanos>,
}

/// Records `attrs` for `target`, then the head record, as one unit where they fit.
fn attrs_then_head(rid: Rid, target: u8, attrs: &[Attr<'_>], h: Head) {
    with_local(|l| {
        let mut g = Gather::new();
        g.add_attrs(l, rid, target, attrs);
        let (ts, tf) = stamp(l, h.ts);
        let head = Record {
            ts,
            rid: rid.0,
            value: h.value,
            name: h.name,
            kind: h.kind as u8,
            flags: h.flags | tf,
            ..Record::default()
        };
        g.add(l, head, &[]);
        g.flush(l);
    });
}

/// The decode-loop call: for every request of the batch, ends its current slice as `name`, then
/// opens the next anonymous slice, or, for a finished request, ends its thread span. One clock
/// read for the whole batch.
pub fn slice_batch(name: &'static Name, reqs: &[(Rid, bool)]) {
    if reqs.is_empty() {
        return;
    }
    let gate = GATE.load(Ordering::Relaxed);
    if gate == OFF {
        return;
    }
    let kept = |item: &&(Rid, bool)| passes(gate, item.0);
    let (mut items, mut unfinished) = (0u32, 0u32);
    for item in reqs.iter().filter(kept) {
        items += 1;
        unfinished += !item.1 as u32;
    }
    let Some(flags) = level::batch(name.level(), items, unfinished) else {
        return;
    };
    let head = BatchHead {
        id: name.id(),
        level: name.level(),
        flags,
    };
    with_local(|l| {
        let ts = l.now();
        if every(gate) {
            return batch_records(l, ts, &head, reqs);
        }
        // Only the requests the sampler keeps, gathered a record's worth at a time.
        let mut buf = [(Rid(0), false); batch::MAX_ITEMS];
        let mut n = 0;
        for &item in reqs.iter().filter(kept) {
            buf[n] = item;
            n += 1;
            if n == buf.len() {
                batch_records(l, ts, &head, &buf);
                n = 0;
            }
        }
        batch_records(l, ts, &head, &buf[..n]);
    });
}

/// What every record of one `slice_batch` call's head says.
struct BatchHead {
    id: u32,
    level: u8,
    flags: u8,
}

fn batch_records(l: &mut Local, ts: u64, h: &BatchHead, reqs: &[(Rid, bool)]) {
    // Three requests to a record: a third of the memory traffic of one record each.
    for part in reqs.chunks(batch::MAX_ITEMS) {
        let chunks = batch::chunks_for(part.len());
        l.producer.push_unit(1 + chunks, |i| {
            if i == 0 {
                return batch::head(ts, h.id, h.level, h.flags, part.len());
            }
            let at = (i - 1) * batch::PER_CHUNK;
            let items = &part[at..(at + batch::PER_CHUNK).min(part.len())];
            let get = |k: usize| items.get(k).map_or((0, false), |(r, f)| (r.0, *f));
            batch::pack_chunk(&[get(0), get(1), get(2)][..items.len()])
        });
    }
}

/// A span event on the innermost open slice of this request on this thread.
#[inline(always)]
pub fn event(name: &'static Name, rid: Rid) {
    if admits(rid) && level::records(name.level()) {
        record_one(Kind::Event, 0, rid, name.id(), 0, None);
    }
}

/// [`event`] with a timestamp and event attributes.
pub fn event_with(name: &'static Name, rid: Rid, opts: Opts<'_>) {
    event_record(name, rid, 0, opts)
}

fn event_record(name: &'static Name, rid: Rid, flags: u8, opts: Opts<'_>) {
    if !admits(rid) || !level::records(name.level()) {
        return;
    }
    with_local(|l| {
        let (ts, tf) = stamp(l, opts.ts);
        let mut g = Gather::new();
        let head = Record {
            ts,
            rid: rid.0,
            name: name.id(),
            kind: Kind::Event as u8,
            flags: tf | flags,
            ..Record::default()
        };
        g.add(l, head, &[]);
        g.add_attrs(l, rid, flag::TARGET_EVENT, opts.attrs);
        g.flush(l);
    });
}

/// Attributes on the innermost open slice of this request on this thread.
pub fn slice_add_attr(rid: Rid, attrs: &[Attr<'_>]) {
    add_attrs(rid, flag::TARGET_SLICE, attrs)
}

/// Attributes on this request's span on this thread (dropped, counted, when none is open).
pub fn thread_add_attr(rid: Rid, attrs: &[Attr<'_>]) {
    add_attrs(rid, flag::TARGET_THREAD, attrs)
}

/// Attributes on the request span; on the thread span in a process that joined the request,
/// where the request span is another's.
pub fn req_add_attr(rid: Rid, attrs: &[Attr<'_>]) {
    add_attrs(rid, flag::TARGET_REQUEST, attrs)
}

fn add_attrs(rid: Rid, target: u8, attrs: &[Attr<'_>]) {
    if !admits(rid) || attrs.is_empty() {
        return;
    }
    with_local(|l| {
        let mut g = Gather::new();
        g.add_attrs(l, rid, target, attrs);
        g.flush(l);
    });
}

/// An event for the next slice of this request to end on this thread whose interval holds the
/// event's time (`opts.ts`, else now), as SGLang's cached events; one that no slice holds goes
/// to the thread span when it ends.
pub fn event_for_slice_with(name: &'static Name, rid: Rid, opts: Opts<'_>) {
    event_record(name, rid, flag::FOR_SLICE, opts)
}

/// [`event_with`] for this request's span on this thread, even while a slice is open.
pub fn thread_event_with(name: &'static Name, rid: Rid, opts: Opts<'_>) {
    event_record(name, rid, flag::ON_THREAD, opts)
}

/// Options of [`thread_end_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadEnd<'a> {
    pub ts: Option<UnixNanos>,
    /// The thread span's status is an error (SGLang's `abort` with its reason).
    pub error: bool,
    /// Attributes for the thread span.
    pub attrs: &'a [Attr<'a>],
}

/// Ends this request's span on this thread: its open slices end at the same instant (ended,
/// not marked unfinished), then the thread span. A later call on this thread opens a new one.
pub fn thread_end_with(rid: Rid, opts: ThreadEnd<'_>) {
    if !admits(rid) {
        return;
    }
    let head = Head {
        kind: Kind::ThreadEnd,
        name: 0,
        value: 0,
        flags: if opts.error { flag::THREAD_ERROR } else { 0 },
        ts: opts.ts,
    };
    attrs_then_head(rid, flag::TARGET_THREAD, opts.attrs, head);
}

/// The context to send with the request to another thread or process. `None` when tracing is
/// off, or this thread neither started nor joined `rid` (counted), or finished it here.
pub fn propagate_context(rid: Rid) -> Option<PropagateContext> {
    propagate(rid, Target::Request)
}

/// The context to send with the request to another node (prefill to decode, say): as
/// [`propagate_context`], but naming the request's bootstrap room span, so that the other
/// node's `req_start` under it hangs its request span beside this one. A process that did not
/// start the request knows no room span: its context names the request span, as
/// `propagate_context`'s.
pub fn propagate_context_for_room(rid: Rid) -> Option<PropagateContext> {
    propagate(rid, Target::Room)
}

fn propagate(rid: Rid, target: Target) -> Option<PropagateContext> {
    if !admits(rid) {
        return None;
    }
    with_local(|l| {
        let tag = process_tag();
        match history::lookup(&l.producer, l.seed, rid.0, tag, target) {
            Lookup::Found(ctx) => {
                let (ts, tf) = stamp(l, None);
                l.producer.push(Record {
                    ts,
                    rid: rid.0,
                    value: ctx.link_span_id,
                    kind: Kind::Propagate as u8,
                    flags: tf,
                    ..Record::default()
                });
                Some(ctx)
            }
            Lookup::Unknown | Lookup::Finished => {
                PROPAGATE_UNKNOWN.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    })
    .flatten()
}

/// Continues a request received from another thread or process on this thread: its thread span
/// hangs under the sender's request span, and its first slice links to the sender's slice.
pub fn set_propagate_context(rid: impl RequestKey, ctx: &PropagateContext) {
    set_propagate_context_with(rid, ctx, None)
}

/// As [`set_propagate_context`], with the W3C `tracestate` the sender passed along (what
/// [`propagate_tracestate`] gave it): every span of the request in this process carries it.
/// Over 512 bytes, or not valid tracestate: not kept, counted in `Stats::tracestate_refused`.
pub fn set_propagate_context_with(
    rid: impl RequestKey,
    ctx: &PropagateContext,
    tracestate: Option<&str>,
) {
    let id = rid.rid();
    if !admits(id) {
        left_out(id);
        return;
    }
    with_local(|l| {
        let (ts, tf) = stamp(l, None);
        let up = Upstream {
            trace_id: ctx.trace_id,
            link: ctx.link_span_id,
            extra: ctx.process,
        };
        let head = Record {
            ts,
            rid: id.0,
            value: ctx.parent_span_id,
            kind: Kind::SetPropagate as u8,
            flags: tf | if ctx.sampled { flag::SAMPLED } else { 0 },
            ..Record::default()
        };
        start_origin(l, id, head, Some(up), tracestate, None, rid.text());
    });
}

/// The W3C `tracestate` of a request as this thread knows it (from the gateway's header given to
/// `req_start`, or a sender's given to `set_propagate_context_with`), to send along with
/// [`propagate_context`]'s fixed-size context to another process. `None` when the request has
/// none, or its origin is no longer in this thread's history. Allocates: for hand-offs, not for
/// the hot path.
pub fn propagate_tracestate(rid: Rid) -> Option<String> {
    if !admits(rid) {
        return None;
    }
    with_local(|l| history::origin_tracestate(&l.producer, rid.0)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::read_chunks;

    #[test]
    fn gathered_records_are_the_heads_and_chunks_added() {
        let mut g = Gather::new();
        assert!(g.records().is_empty());
        let text = "a string attribute, longer than one chunk of twenty-eight bytes";
        let head = |name| Record {
            rid: 7,
            name,
            kind: Kind::Attr as u8,
            ..Record::default()
        };
        g.put(head(1), text.as_bytes());
        g.put(head(2), &[]);
        let recs = g.records();
        let chunks = chunks_for(text.len());
        assert_eq!(recs.len(), 1 + chunks + 1);
        assert_eq!((recs[0].name, recs[0].len as usize), (1, text.len()));
        assert!(recs[1..=chunks].iter().all(|r| r.kind == Kind::Chunk as u8));
        let mut back = Vec::new();
        read_chunks(&recs[1..=chunks], text.len(), &mut back);
        assert_eq!(back, text.as_bytes());
        assert_eq!((recs[chunks + 1].name, recs[chunks + 1].len), (2, 0));
    }
}
