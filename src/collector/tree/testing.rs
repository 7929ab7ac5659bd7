//! For the tree's unit tests: records made as the calling threads write them, decoded as the
//! drainer decodes them, applied to a tree whose clock moves only when told to; and the spans
//! it exports, each written as one line of text a table can list.

use super::{Clock, ProcessInfo, Tenure, Tree, TreeLimits};
use crate::collector::stats::{Counters, Stats};
use crate::ids::Rid;
use crate::name::Name;
use crate::wire::batch;
use crate::wire::decode::{decode, Decoded};
use crate::wire::origin::{encode_origin, MAX_ORIGIN_PAYLOAD};
use crate::wire::ownership::ThreadMeta;
use crate::wire::record::{flag, write_chunks, Kind, Record};
use opentelemetry::trace::Status;
use opentelemetry::{InstrumentationScope, Value};
use opentelemetry_sdk::trace::SpanData;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The process tag of the harness's process.
pub const TAG: u64 = 0x7a6;

/// A flag of `Harness::start_with` only, stripped before the record is written (the timestamp
/// flag, which the harness never sets): the upstream asked for the request not to be sampled.
pub const NOT_SAMPLED: u8 = flag::TS_UNIX;

pub(crate) use crate::wire::origin::Upstream;

/// A clock that moves when `advance` says.
#[derive(Clone)]
pub struct HandClock(Arc<Mutex<Instant>>);

impl HandClock {
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for HandClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

/// `records` (a head and its chunks) as the drainer decodes them, the head at `pos`.
pub fn decoded(records: &[Record], pos: u64) -> Vec<Decoded> {
    let mut out = Vec::new();
    let used = decode(
        records,
        pos,
        false,
        |d| out.push(d.clone()),
        |at, e| panic!("{e:?} at {at}"),
    );
    assert_eq!(used, records.len());
    out
}

/// A head record followed by chunks holding `payload`.
fn with_payload(mut head: Record, payload: &[u8]) -> Vec<Record> {
    head.len = payload.len() as u16;
    let mut recs = vec![Record::default(); 1 + crate::wire::record::chunks_for(payload.len())];
    recs[0] = head;
    write_chunks(payload, &mut recs, 1);
    recs
}

/// The records of an origin call, as `req_start_with` or `set_propagate_context_with` writes
/// them: `UPSTREAM` (for a `ReqStart`) and `TRACESTATE` are set as the payload needs.
#[allow(clippy::too_many_arguments)]
pub fn origin_records(
    kind: Kind,
    rid: u64,
    flags: u8,
    value: u64,
    upstream: Option<Upstream>,
    tracestate: Option<&str>,
    role: Option<&str>,
    text: &str,
) -> Vec<Record> {
    let mut head = Record {
        rid,
        value,
        kind: kind as u8,
        flags,
        ..Record::default()
    };
    let mut payload = [0u8; MAX_ORIGIN_PAYLOAD];
    let n = encode_origin(
        &mut head,
        upstream.as_ref(),
        tracestate,
        role,
        text,
        &mut payload,
    );
    let payload = &payload[..n];
    with_payload(head, payload)
}

/// One origin record, decoded, its head at `pos`.
#[allow(clippy::too_many_arguments)]
pub fn origin_record(
    kind: Kind,
    rid: u64,
    pos: u64,
    flags: u8,
    value: u64,
    upstream: Option<Upstream>,
    tracestate: Option<&str>,
    text: &str,
) -> Decoded {
    let recs = origin_records(kind, rid, flags, value, upstream, tracestate, None, text);
    decoded(&recs, pos).remove(0)
}

pub fn name_id(name: &str) -> u32 {
    if name.is_empty() {
        0
    } else {
        Name::intern(name).id()
    }
}

fn rec(kind: Kind, rid: u64, name: &str, flags: u8, value: u64) -> Record {
    Record {
        rid,
        value,
        name: name_id(name),
        kind: kind as u8,
        flags,
        ..Record::default()
    }
}

pub fn limits() -> TreeLimits {
    TreeLimits {
        max_open_requests: 64,
        idle_timeout: Duration::from_secs(10),
        finish_grace: Duration::from_millis(20),
        joined_linger: Duration::from_millis(500),
        park_timeout: Duration::from_millis(500),
        max_parked: 64,
    }
}

/// A tree, its counters and clock, and threads that write records to it.
pub struct Harness {
    pub tree: Tree,
    pub c: Counters,
    clock: HandClock,
    threads: HashMap<usize, (Arc<Tenure>, u64)>,
    /// The time of the next call's records; each call moves it 1 µs on.
    ns: u64,
    scope: InstrumentationScope,
    spans: Vec<SpanData>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_limits(limits())
    }

    pub fn with_limits(limits: TreeLimits) -> Harness {
        let clock = HandClock(Arc::new(Mutex::new(Instant::now())));
        let scope = InstrumentationScope::builder("slicetrace").build();
        let info = ProcessInfo {
            host_id: "host-0123456789".into(),
            process_tag: TAG,
            scope: scope.clone(),
        };
        Harness {
            tree: Tree::new(limits, info, Box::new(clock.clone())),
            c: Counters::default(),
            clock,
            threads: HashMap::new(),
            ns: 1_000_000,
            scope,
            spans: Vec::new(),
        }
    }

    /// Thread `th` (ring `th`, label `t{th}`, OS id `100 + th`).
    pub fn tenure(&mut self, th: usize) -> Arc<Tenure> {
        let entry = self.threads.entry(th).or_insert_with(|| {
            let t = Tenure {
                ring: th as u32,
                owner: 1,
                seed: 0x1000 + th as u64,
                meta: ThreadMeta {
                    tid: 100 + th as u64,
                    name: format!("thread-{th}"),
                    label: Some(format!("t{th}")),
                    ..ThreadMeta::default()
                },
            };
            (Arc::new(t), 0)
        });
        entry.0.clone()
    }

    /// Gives thread `th` ranks, before it writes.
    pub fn ranks(&mut self, th: usize, tp_rank: Option<u32>, dp_rank: Option<u32>) {
        let t = self.tenure(th);
        let meta = ThreadMeta {
            tp_rank,
            dp_rank,
            ..t.meta.clone()
        };
        let t = Tenure {
            ring: t.ring,
            owner: t.owner,
            seed: t.seed,
            meta,
        };
        self.threads.get_mut(&th).unwrap().0 = Arc::new(t);
    }

    /// Thread `th` writes `records` (one call's); the tree applies them as decoded.
    pub fn write(&mut self, th: usize, records: &[Record]) {
        let tenure = self.tenure(th);
        let pos = &mut self.threads.get_mut(&th).unwrap().1;
        let at = *pos;
        *pos += records.len() as u64;
        let ns = self.ns;
        self.ns += 1_000;
        for d in decoded(records, at) {
            self.tree.apply(&self.c, &tenure, &d, ns);
        }
    }

    pub fn start(&mut self, th: usize, rid: u64) {
        self.start_with(th, rid, 0, 0, None, None, "");
    }

    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        &mut self,
        th: usize,
        rid: u64,
        flags: u8,
        room: u64,
        upstream: Option<Upstream>,
        tracestate: Option<&str>,
        text: &str,
    ) {
        // An upstream here asked for the request to be sampled, unless `flags` say otherwise.
        let flags = if upstream.is_some() && flags & NOT_SAMPLED == 0 {
            flags | flag::SAMPLED
        } else {
            flags & !NOT_SAMPLED
        };
        let recs = origin_records(
            Kind::ReqStart,
            rid,
            flags,
            room,
            upstream,
            tracestate,
            None,
            text,
        );
        self.write(th, &recs);
    }

    /// `req_start` with a role, naming the request span.
    pub fn start_as(&mut self, th: usize, rid: u64, role: &str) {
        let recs = origin_records(Kind::ReqStart, rid, 0, 0, None, None, Some(role), "");
        self.write(th, &recs);
    }

    /// `set_propagate_context` with a context naming `parent` (the sender's request span).
    pub fn join(&mut self, th: usize, rid: u64, parent: u64, ctx: Upstream, text: &str) {
        let recs = origin_records(
            Kind::SetPropagate,
            rid,
            flag::SAMPLED,
            parent,
            Some(ctx),
            None,
            None,
            text,
        );
        self.write(th, &recs);
    }

    pub fn slice(&mut self, th: usize, rid: u64, name: &str) {
        self.write(th, &[rec(Kind::SliceStart, rid, name, 0, 0)]);
    }

    pub fn anon(&mut self, th: usize, rid: u64) {
        self.write(th, &[rec(Kind::SliceStart, rid, "", flag::ANON, 0)]);
    }

    /// `slice_end` (`flags`: `AUTO_NEXT_ANON`, `THREAD_FINISH` or 0).
    pub fn end(&mut self, th: usize, rid: u64, name: &str, flags: u8) {
        self.write(th, &[rec(Kind::SliceEnd, rid, name, flags, 0)]);
    }

    /// `slice_batch`: one end per `(rid, finished)` item.
    pub fn batch(&mut self, th: usize, name: &str, items: &[(u64, bool)]) {
        let mut recs = vec![batch::head(0, name_id(name), 0, 0, items.len())];
        recs.extend(items.chunks(batch::PER_CHUNK).map(batch::pack_chunk));
        self.write(th, &recs);
    }

    pub fn event(&mut self, th: usize, rid: u64, name: &str) {
        self.write(th, &[rec(Kind::Event, rid, name, 0, 0)]);
    }

    /// An integer attribute for `target` (`flag::TARGET_*`).
    pub fn attr(&mut self, th: usize, rid: u64, target: u8, key: &str, v: i64) {
        let flags = target | flag::VALUE_I64;
        self.write(th, &[rec(Kind::Attr, rid, key, flags, v as u64)]);
    }

    pub fn attr_str(&mut self, th: usize, rid: u64, target: u8, key: &str, v: &str) {
        let head = rec(Kind::Attr, rid, key, target | flag::VALUE_STR, 0);
        self.write(th, &with_payload(head, v.as_bytes()));
    }

    /// `thread_end_with` (`flags`: `THREAD_ERROR` or 0).
    pub fn thread_end(&mut self, th: usize, rid: u64, flags: u8) {
        self.write(th, &[rec(Kind::ThreadEnd, rid, "", flags, 0)]);
    }

    /// `event_for_slice_with`: an event for the slice whose interval holds it.
    pub fn event_for_slice(&mut self, th: usize, rid: u64, name: &str) {
        self.write(th, &[rec(Kind::Event, rid, name, flag::FOR_SLICE, 0)]);
    }

    /// `thread_event_with`: an event for the thread span.
    pub fn thread_event(&mut self, th: usize, rid: u64, name: &str) {
        self.write(th, &[rec(Kind::Event, rid, name, flag::ON_THREAD, 0)]);
    }

    /// Where thread `th`'s next record goes.
    pub fn next_pos(&mut self, th: usize) -> u64 {
        self.tenure(th);
        self.threads[&th].1
    }

    /// The span id of the async slice whose start thread `th` writes next.
    pub fn next_task_id(&mut self, th: usize) -> u64 {
        let (seed, pos) = (self.tenure(th).seed, self.next_pos(th));
        crate::ids::derive_span_id(seed, pos, crate::ids::Salt::TASK)
    }

    /// `AsyncSlice::start` under `parent` (0: the request); returns the slice's span id.
    pub fn task_start(&mut self, th: usize, rid: u64, name: &str, parent: u64) -> u64 {
        let id = self.next_task_id(th);
        self.write(th, &[rec(Kind::TaskStart, rid, name, 0, parent)]);
        id
    }

    /// The end of async slice `id` (`flags`: `CANCELLED` or 0).
    pub fn task_end(&mut self, th: usize, rid: u64, name: &str, id: u64, flags: u8) {
        self.write(th, &[rec(Kind::TaskEnd, rid, name, flags, id)]);
    }

    /// `AsyncSlice::add_attrs` of one integer attribute.
    pub fn task_attr(&mut self, th: usize, rid: u64, id: u64, key: &str, v: i64) {
        let attr = rec(Kind::Attr, rid, key, flag::TASK | flag::VALUE_I64, v as u64);
        self.write(th, &[attr, rec(Kind::TaskAttrs, rid, "", 0, id)]);
    }

    /// `AsyncSlice::event`.
    pub fn task_event(&mut self, th: usize, rid: u64, id: u64, name: &str) {
        self.write(th, &[rec(Kind::Event, rid, name, flag::FOR_TASK, id)]);
    }

    pub fn finish(&mut self, th: usize, rid: u64) {
        self.write(th, &[rec(Kind::ReqFinish, rid, "", 0, 0)]);
    }

    pub fn propagate(&mut self, th: usize, rid: u64) {
        self.write(th, &[rec(Kind::Propagate, rid, "", 0, 0)]);
    }

    /// Moves the clock on, as time passes between two sweeps.
    pub fn advance(&mut self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        self.tree.read_clock();
    }

    pub fn housekeeping(&mut self, force: bool) {
        self.tree.housekeeping(&self.c, force);
    }

    /// The open request's trace id and request span id.
    pub fn ids(&self, rid: u64) -> (u128, u64) {
        let r = &self.tree.requests[&Rid(rid)];
        (r.trace_id, r.span_id)
    }

    /// Every span exported so far, as the export thread builds them.
    pub fn spans(&mut self) -> &[SpanData] {
        let batch = self.tree.out.take();
        let (scope, rids) = (&self.scope, &batch.rids);
        self.spans.extend(
            batch
                .spans
                .into_iter()
                .map(|f| f.into_span_data(scope, rids)),
        );
        &self.spans
    }

    /// The one exported span named `name`.
    pub fn span(&mut self, name: &str) -> SpanData {
        let mut found = self.spans().iter().filter(|s| s.name == name);
        let s = found.next().unwrap_or_else(|| panic!("no span {name}"));
        assert!(found.next().is_none(), "more than one span {name}");
        s.clone()
    }

    /// The spans exported so far, one sorted line each (see `line`).
    pub fn shape(&mut self) -> Vec<String> {
        let spans = self.spans();
        let mut lines: Vec<String> = spans.iter().map(|s| line(s, spans)).collect();
        lines.sort();
        lines
    }

    /// The counters of outcomes other than the plain one that are not 0, by name.
    pub fn counted(&self) -> Vec<(&'static str, u64)> {
        outcomes(&self.c.snapshot())
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect()
    }
}

fn outcomes(s: &Stats) -> [(&'static str, u64); 21] {
    [
        ("records_undecodable", s.records_undecodable),
        ("unknown_rid_records", s.unknown_rid_records),
        ("requests_started", s.requests_started),
        ("requests_joined", s.requests_joined),
        ("requests_finished", s.requests_finished),
        ("requests_evicted", s.requests_evicted),
        ("requests_restarted", s.requests_restarted),
        ("requests_rejected", s.requests_rejected),
        ("requests_sampled_out", s.requests_sampled_out),
        ("slices_unfinished", s.slices_unfinished),
        ("slices_dropped_depth", s.slices_dropped_depth),
        ("async_slices_dropped", s.async_slices_dropped),
        ("end_without_start", s.end_without_start),
        ("level_ends_discarded", s.level_ends_discarded),
        ("name_mismatches", s.name_mismatches),
        ("events_without_slice", s.events_without_slice),
        ("attrs_without_slice", s.attrs_without_slice),
        ("annotations_dropped", s.annotations_dropped),
        ("propagations", s.propagations),
        ("context_conflicts", s.context_conflicts),
        ("tracestate_refused", s.tracestate_refused),
    ]
}

fn id(v: opentelemetry::trace::SpanId) -> u64 {
    u64::from_be_bytes(v.to_bytes())
}

/// What a span is called in a line: a thread span by its label, others by their name.
fn short(s: &SpanData) -> String {
    match s
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "thread_label")
    {
        Some(kv) => kv.value.to_string(),
        None => s.name.to_string(),
    }
}

/// The keys every span of a kind carries, left out of the lines.
const ALWAYS: [&str; 10] = [
    "rid",
    "bootstrap_room",
    "thread.id",
    "thread_label",
    "host_id",
    "pid",
    "thread.name",
    "tp_rank",
    "dp_rank",
    "slicetrace.unfinished",
];

/// `name <parent ~link {k=v} [event{k=v}] ! unfinished`: the parent and link targets by their
/// short names (`?hex` for a span not exported here), the user's attributes and events, `!` for
/// status error.
pub fn line(s: &SpanData, all: &[SpanData]) -> String {
    let name_of = |span: u64| match all.iter().find(|o| id(o.span_context.span_id()) == span) {
        Some(o) => short(o),
        None => format!("?{span:x}"),
    };
    let mut out = short(s);
    let parent = id(s.parent_span_id);
    out += &match parent {
        0 => " <-".to_string(),
        p => format!(" <{}", name_of(p)),
    };
    for l in &s.links.links {
        out += &format!(" ~{}", name_of(id(l.span_context.span_id())));
    }
    let kv = |attrs: &[opentelemetry::KeyValue]| {
        attrs
            .iter()
            .filter(|kv| !ALWAYS.contains(&kv.key.as_str()))
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join(",")
    };
    let own = kv(&s.attributes);
    if !own.is_empty() {
        out += &format!(" {{{own}}}");
    }
    if !s.events.events.is_empty() {
        let evs: Vec<String> = s
            .events
            .events
            .iter()
            .map(|e| match kv(&e.attributes) {
                a if a.is_empty() => e.name.to_string(),
                a => format!("{}{{{a}}}", e.name),
            })
            .collect();
        out += &format!(" [{}]", evs.join(","));
    }
    if matches!(s.status, Status::Error { .. }) {
        out += " !";
    }
    if attr(s, "slicetrace.unfinished") == Some(&Value::Bool(true)) {
        out += " unfinished";
    }
    out
}

pub fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// `lines`, sorted, as owned strings: what `Harness::shape` returns.
pub fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    v.sort();
    v
}
