//! Rebuilding Request → Thread → Slice span trees from decoded records.
//!
//! The drainer feeds records in ring order per thread (threads interleaved in sweep order) with
//! their times already in Unix nanoseconds. Finished spans go to `out` (see `Finished`).

use super::finished::{ns_to_time, own_ctx, Finished, LinkTo, SliceExtras, SliceSpan};
use super::span_out::{RidAttr, SpanOut};
use super::stats::Counters;
use crate::ids::{derive_span_id, Rid, Salt};
use crate::mix_hash::MixHash;
use crate::name::NameCache;
use crate::slice_chain::{Ended, SliceChain};
use crate::wire::decode::Decoded;
use crate::wire::origin::{origin_ids, split_origin_payload, Upstream};
use crate::wire::ownership::ThreadMeta;
use crate::wire::record::{flag, Kind};
use opentelemetry::trace::{Event, SpanId, SpanKind, Status, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue, Value as OtelValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Attributes and events kept per span; more are counted in the span's dropped counts.
pub const MAX_ATTRS_PER_SPAN: usize = 128;
pub const MAX_EVENTS_PER_SPAN: usize = 128;

/// One thread's tenure of a ring: who wrote the records and the seed of their span ids.
#[derive(Debug)]
pub struct Tenure {
    pub ring: u32,
    pub owner: u32,
    pub seed: u64,
    pub meta: ThreadMeta,
}

impl Tenure {
    /// One thread's tenure of one ring, as one number.
    fn key(&self) -> u64 {
        (u64::from(self.ring) << 32) | u64::from(self.owner)
    }
}

/// Limits and timings of the rebuild.
#[derive(Clone, Debug)]
pub struct TreeLimits {
    pub max_open_requests: usize,
    pub idle_timeout: Duration,
    pub finish_grace: Duration,
    pub joined_linger: Duration,
    pub park_timeout: Duration,
    pub max_parked: usize,
}

/// What the span-building side needs to know of this process.
pub struct ProcessInfo {
    pub host_id: String,
    pub process_tag: u64,
    pub scope: InstrumentationScope,
}

struct OpenSlice {
    id: u64,
    parent: u64,
    name: Option<&'static str>,
    start_ns: u64,
    link: Option<LinkTo>,
    /// Made on the slice's first attribute or event.
    extras: Option<Box<SliceExtras>>,
}

impl OpenSlice {
    fn extras(&mut self) -> &mut SliceExtras {
        self.extras.get_or_insert_with(Box::default)
    }
}

struct ThreadSpan {
    /// The tenure's ring and owner, compared without reaching into the tenure.
    key: u64,
    tenure: Arc<Tenure>,
    /// 0 while no thread span is open (after thread_finish; the chain keeps the last slice).
    id: u64,
    start_ns: u64,
    last_ns: u64,
    chain: SliceChain,
    slices: Vec<OpenSlice>,
    /// The first slice after a propagation links here instead of to the chain.
    pending_link: Option<LinkTo>,
    /// Where the last event went, for the event's attributes.
    last_event: EventAt,
    own_events: Vec<Event>,
    own_attrs: Vec<KeyValue>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EventAt {
    None,
    Slice(usize),
    Thread,
    Request,
}

struct Request {
    rid: Rid,
    rid_text: Option<String>,
    /// The `rid` attribute every slice carries, shared rather than copied per slice.
    rid_attr: RidAttr,
    trace_id: u128,
    /// W3C tracestate from an upstream gateway, carried by every span of the request here.
    trace_state: TraceState,
    span_id: u64,
    /// Remote parent (upstream or sender in another process).
    parent: u64,
    parent_remote: bool,
    bootstrap_room: Option<u64>,
    start_ns: u64,
    last_ns: u64,
    attrs: Vec<KeyValue>,
    events: Vec<Event>,
    dropped_attrs: u32,
    threads: Vec<ThreadSpan>,
    last_activity: Instant,
    /// Set by ReqFinish: (finish time, close after).
    finishing: Option<(u64, Instant)>,
    /// Joined requests close once no thread span is open and this moment has passed.
    linger_until: Option<Instant>,
    local: bool,
}

fn shared_str(s: String) -> OtelValue {
    OtelValue::String(opentelemetry::StringValue::from(Arc::<str>::from(s)))
}

impl Request {
    fn set_rid_text(&mut self, text: Option<String>) {
        if let Some(t) = &text {
            self.rid_attr = RidAttr::new(shared_str(t.clone()));
        }
        self.rid_text = text;
    }

    fn new(rid: Rid, trace_id: u128, span_id: u64, ns: u64, local: bool, now: Instant) -> Request {
        Request {
            rid,
            rid_text: None,
            rid_attr: RidAttr::new(shared_str(rid.0.to_string())),
            trace_id,
            trace_state: TraceState::NONE,
            span_id,
            parent: 0,
            parent_remote: false,
            bootstrap_room: None,
            start_ns: ns,
            last_ns: ns,
            attrs: Vec::new(),
            events: Vec::new(),
            dropped_attrs: 0,
            threads: Vec::new(),
            last_activity: now,
            finishing: None,
            linger_until: None,
            local,
        }
    }
}

struct Parked {
    tenure: Arc<Tenure>,
    rec: Decoded,
    ns: u64,
    at: Instant,
}

pub struct Tree {
    limits: TreeLimits,
    info: ProcessInfo,
    names: NameCache,
    requests: HashMap<Rid, Request, MixHash>,
    parked: HashMap<Rid, VecDeque<Parked>, MixHash>,
    parked_count: usize,
    /// Requests to close once their `req_finish` grace has passed, in deadline order (the
    /// grace is one constant, so arrival order is deadline order). Entries may be stale.
    finishing_q: VecDeque<(Instant, Rid)>,
    /// Joined requests to close once their linger has passed, likewise.
    linger_q: VecDeque<(Instant, Rid)>,
    last_idle_scan: Instant,
    last_park_scan: Instant,
    /// The drainer's "now", read once per sweep rather than once per record.
    now: Instant,
    pub out: SpanOut,
}

fn error_status(msg: impl Into<Cow<'static, str>>) -> Status {
    Status::Error {
        description: msg.into(),
    }
}

fn short_rid(text: &str) -> &str {
    let tail = text.rsplit('_').next().unwrap_or(text);
    crate::wire::record::truncate_str(tail, 8)
}

impl Tree {
    pub fn new(limits: TreeLimits, info: ProcessInfo) -> Tree {
        Tree {
            limits,
            info,
            names: NameCache::default(),
            requests: HashMap::default(),
            parked: HashMap::default(),
            parked_count: 0,
            finishing_q: VecDeque::new(),
            linger_q: VecDeque::new(),
            last_idle_scan: Instant::now(),
            last_park_scan: Instant::now(),
            now: Instant::now(),
            out: SpanOut::default(),
        }
    }

    /// Sets the time records applied from now on are stamped with (for idleness and grace).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    pub fn open_requests(&self) -> usize {
        self.requests.len()
    }

    pub fn parked(&self) -> usize {
        self.parked_count
    }

    /// Applies one record written by `tenure`, at `ns` Unix nanoseconds.
    pub fn apply(&mut self, c: &Counters, tenure: &Arc<Tenure>, rec: &Decoded, ns: u64) {
        let rid = Rid(rec.head.rid);
        match rec.kind {
            Kind::ThreadInfo | Kind::Chunk => {}
            Kind::ReqStart => {
                self.req_start(c, tenure, rec, ns);
                self.unpark(c, rid);
            }
            Kind::SetPropagate => {
                if self.set_propagate(c, tenure, rec, ns) {
                    self.unpark(c, rid);
                } else {
                    self.park(c, tenure, rec, ns);
                }
            }
            _ => {
                if !self.apply_known(c, tenure, rec, ns) {
                    self.park(c, tenure, rec, ns);
                }
            }
        }
    }

    fn park(&mut self, c: &Counters, tenure: &Arc<Tenure>, rec: &Decoded, ns: u64) {
        if self.parked_count >= self.limits.max_parked {
            Counters::add(&c.unknown_rid_records, 1);
            return;
        }
        self.parked_count += 1;
        self.parked
            .entry(Rid(rec.head.rid))
            .or_default()
            .push_back(Parked {
                tenure: tenure.clone(),
                rec: rec.clone(),
                ns,
                at: self.now,
            });
    }

    fn unpark(&mut self, c: &Counters, rid: Rid) {
        if let Some(q) = self.parked.remove(&rid) {
            self.parked_count -= q.len();
            for p in q {
                self.apply(c, &p.tenure, &p.rec, p.ns);
            }
        }
    }

    fn req_start(&mut self, c: &Counters, tenure: &Arc<Tenure>, rec: &Decoded, ns: u64) {
        let rid = Rid(rec.head.rid);
        if let Some(old) = self.requests.remove(&rid) {
            if old.finishing.is_some() {
                self.close_request(c, old, None);
            } else {
                Counters::add(&c.requests_restarted, 1);
                self.close_request(c, old, Some("request started again before it finished"));
            }
        }
        if self.requests.len() >= self.limits.max_open_requests {
            Counters::add(&c.requests_rejected, 1);
            return;
        }
        let up_flag = rec.head.flags & flag::UPSTREAM != 0;
        let upstream = if up_flag {
            Upstream::decode(&rec.payload)
        } else {
            None
        };
        if up_flag && upstream.is_none() {
            Counters::add(&c.records_undecodable, 1);
            return;
        }
        let Some(ids) = origin_ids(
            tenure.seed,
            rec.pos,
            &rec.head,
            upstream.as_ref(),
            self.info.process_tag,
        ) else {
            return;
        };
        let parts = split_origin_payload(&rec.head, &rec.payload);
        let trace_state = parse_trace_state(c, parts.tracestate);
        let text_bytes = parts.text;
        let rid_text =
            (!text_bytes.is_empty()).then(|| String::from_utf8_lossy(text_bytes).into_owned());
        Counters::add(&c.requests_started, 1);
        let mut req = Request::new(rid, ids.trace_id, ids.request_span, ns, true, self.now);
        req.set_rid_text(rid_text);
        req.trace_state = trace_state;
        if let Some(u) = &upstream {
            req.parent = u.extra;
            req.parent_remote = true;
        }
        req.bootstrap_room = (rec.head.flags & flag::HAS_ROOM != 0).then_some(rec.head.value);
        let link = upstream
            .filter(|u| u.link != 0)
            .map(|u| LinkTo::new(u.trace_id, u.link, true));
        let t = thread_span(&mut req, tenure, rec.pos, ns);
        if link.is_some() {
            t.pending_link = link;
        }
        self.requests.insert(rid, req);
    }

    /// Returns false when the record must wait (a same-process hand-over of a request this
    /// drainer has not seen start yet).
    fn set_propagate(
        &mut self,
        c: &Counters,
        tenure: &Arc<Tenure>,
        rec: &Decoded,
        ns: u64,
    ) -> bool {
        let rid = Rid(rec.head.rid);
        let Some(up) = Upstream::decode(&rec.payload) else {
            Counters::add(&c.records_undecodable, 1);
            return true;
        };
        let same_process = up.extra == self.info.process_tag;
        if !self.requests.contains_key(&rid) {
            if same_process {
                return false;
            }
            if self.requests.len() >= self.limits.max_open_requests {
                Counters::add(&c.requests_rejected, 1);
                return true;
            }
            let Some(ids) = origin_ids(
                tenure.seed,
                rec.pos,
                &rec.head,
                Some(&up),
                self.info.process_tag,
            ) else {
                return true;
            };
            let parts = split_origin_payload(&rec.head, &rec.payload);
            let text = parts.text;
            Counters::add(&c.requests_joined, 1);
            let mut req = Request::new(rid, up.trace_id, ids.request_span, ns, false, self.now);
            req.set_rid_text(
                (!text.is_empty()).then(|| String::from_utf8_lossy(text).into_owned()),
            );
            req.trace_state = parse_trace_state(c, parts.tracestate);
            req.parent = rec.head.value;
            req.parent_remote = true;
            self.requests.insert(rid, req);
        }
        let Some(req) = self.requests.get_mut(&rid) else {
            return true;
        };
        if req.trace_id != up.trace_id {
            Counters::add(&c.context_conflicts, 1);
        }
        let text = split_origin_payload(&rec.head, &rec.payload).text;
        if req.rid_text.is_none() && !text.is_empty() {
            req.set_rid_text(Some(String::from_utf8_lossy(text).into_owned()));
        }
        req.last_activity = self.now;
        req.linger_until = None;
        let link = (up.link != 0).then(|| LinkTo::new(up.trace_id, up.link, !same_process));
        let trace = req.trace_id;
        let state = req.trace_state.clone();
        let rid = self.out.rid(&mut req.rid_attr);
        let t = thread_span(req, tenure, rec.pos, ns);
        // A hand-over starts this thread's chain afresh, as `propagate_context` reads it.
        close_unfinished(c, trace, &state, rid, t, ns, &mut self.out);
        t.chain = SliceChain::default();
        t.pending_link = link;
        true
    }

    /// Applies a record of a request already open; false (nothing done) when it is not.
    fn apply_known(&mut self, c: &Counters, tenure: &Arc<Tenure>, rec: &Decoded, ns: u64) -> bool {
        let rid = Rid(rec.head.rid);
        let Some(req) = self.requests.get_mut(&rid) else {
            return false;
        };
        let name = self.names.get(rec.head.name);
        if rec.head.name != 0 && name.is_none() {
            Counters::add(&c.records_undecodable, 1);
        }
        req.last_activity = self.now;
        req.last_ns = req.last_ns.max(ns);
        // Records of other threads can predate the start record; the request span encloses them.
        req.start_ns = req.start_ns.min(ns);
        let scope = &self.info;
        let out = &mut self.out;
        match rec.kind {
            Kind::ReqFinish => {
                if req.finishing.is_none() {
                    let due = self.now + self.limits.finish_grace;
                    req.finishing = Some((ns, due));
                    self.finishing_q.push_back((due, rid));
                }
            }
            Kind::SliceStart => {
                let anon = rec.head.flags & flag::ANON != 0;
                let trace = req.trace_id;
                let t = thread_span(req, tenure, rec.pos, ns);
                open_slice(
                    c,
                    t,
                    trace,
                    rec.pos,
                    Salt::SLICE,
                    if anon { None } else { name },
                    ns,
                );
            }
            Kind::SliceEnd => {
                let trace = req.trace_id;
                let ti = thread_entry(req, tenure);
                let t = &mut req.threads[ti];
                t.last_ns = t.last_ns.max(ns);
                match t.chain.end() {
                    Ended::Closed { id, .. } => {
                        // The chain and the slice data move together; a gap would be a bug here,
                        // which must not take the drainer down.
                        let Some(s) = t.slices.pop().filter(|s| s.id == id) else {
                            debug_assert!(false, "slice data out of step with the chain");
                            Counters::add(&c.records_undecodable, 1);
                            return true;
                        };
                        let status = match (s.name, name) {
                            // Names are interned: one text, one pointer (the texts compared
                            // only for a name registered twice).
                            (Some(started), Some(ended))
                                if !std::ptr::eq(started, ended) && started != ended =>
                            {
                                Counters::add(&c.name_mismatches, 1);
                                error_status(format!(
                                    "slice_end name mismatch: started as {started:?}, ended as {ended:?}"
                                ))
                            }
                            _ => Status::Unset,
                        };
                        let final_name = s.name.or(name).unwrap_or("anonymous");
                        let rid = out.rid(&mut req.rid_attr);
                        out.push(|| {
                            slice_span(
                                trace,
                                &req.trace_state,
                                s,
                                final_name,
                                ns,
                                status,
                                false,
                                t.tenure.meta.tid,
                                rid,
                            )
                        });
                    }
                    Ended::Overflowed => {}
                    Ended::Nothing => Counters::add(&c.end_without_start, 1),
                }
                if rec.head.flags & flag::THREAD_FINISH != 0 {
                    finish_thread(
                        c,
                        scope,
                        trace,
                        &req.trace_state,
                        &mut req.rid_attr,
                        req.span_id,
                        &mut req.threads[ti],
                        ns,
                        out,
                    );
                } else if rec.head.flags & flag::AUTO_NEXT_ANON != 0 {
                    let t = open_thread(&mut req.threads[ti], rec.pos, ns);
                    open_slice(c, t, trace, rec.pos, Salt::next_anon(rec.sub), None, ns);
                }
                update_linger(req, &self.limits, self.now, &mut self.linger_q);
            }
            Kind::Event => {
                let ev = Event::new(name.unwrap_or("event"), ns_to_time(ns), Vec::new(), 0);
                let ti = find_thread(req, tenure);
                let at = match ti.map(|i| &mut req.threads[i]) {
                    Some(t) if !t.slices.is_empty() => {
                        let i = t.slices.len() - 1;
                        let x = t.slices[i].extras();
                        push_capped(
                            &mut x.events,
                            &mut x.dropped_events,
                            ev,
                            MAX_EVENTS_PER_SPAN,
                        );
                        EventAt::Slice(i)
                    }
                    Some(t) if t.id != 0 => {
                        t.own_events.push(ev);
                        EventAt::Thread
                    }
                    _ => {
                        req.events.push(ev);
                        EventAt::Request
                    }
                };
                if let Some(i) = ti {
                    req.threads[i].last_event = at;
                }
            }
            Kind::Attr => {
                let Some(kv) = decode_attr(rec, name) else {
                    Counters::add(&c.records_undecodable, 1);
                    return true;
                };
                let target = rec.head.flags & flag::TARGET_MASK;
                let ti = find_thread(req, tenure);
                match (target, ti) {
                    (flag::TARGET_REQUEST, _) | (_, None) => push_capped(
                        &mut req.attrs,
                        &mut req.dropped_attrs,
                        kv,
                        MAX_ATTRS_PER_SPAN,
                    ),
                    (flag::TARGET_EVENT, Some(i)) => {
                        let t = &mut req.threads[i];
                        let ev = match t.last_event {
                            EventAt::Slice(j) => t
                                .slices
                                .get_mut(j)
                                .and_then(|s| s.extras.as_mut()?.events.last_mut()),
                            EventAt::Thread => t.own_events.last_mut(),
                            EventAt::Request => req.events.last_mut(),
                            EventAt::None => None,
                        };
                        match ev {
                            Some(ev) if ev.attributes.len() < MAX_ATTRS_PER_SPAN => {
                                ev.attributes.push(kv)
                            }
                            Some(ev) => ev.dropped_attributes_count += 1,
                            None => Counters::add(&c.records_undecodable, 1),
                        }
                    }
                    (_, Some(i)) => {
                        let t = &mut req.threads[i];
                        match t.slices.last_mut() {
                            Some(s) => {
                                let x = s.extras();
                                push_capped(
                                    &mut x.attrs,
                                    &mut x.dropped_attrs,
                                    kv,
                                    MAX_ATTRS_PER_SPAN,
                                )
                            }
                            None if t.id != 0 => t.own_attrs.push(kv),
                            None => push_capped(
                                &mut req.attrs,
                                &mut req.dropped_attrs,
                                kv,
                                MAX_ATTRS_PER_SPAN,
                            ),
                        }
                    }
                }
            }
            Kind::Propagate => {
                Counters::add(&c.propagations, 1);
            }
            Kind::ReqStart | Kind::SetPropagate | Kind::ThreadInfo | Kind::Chunk | Kind::Batch => {}
        }
        true
    }

    /// Closes what is due: finished requests past their grace, joined requests past their
    /// linger, idle requests, and parked records nobody claimed. `force` closes every finished
    /// and lingering request now (flush). Costs what is due, plus a scan of all requests once a
    /// second for idleness.
    pub fn housekeeping(&mut self, c: &Counters, force: bool) {
        let now = Instant::now();
        while let Some(&(due, rid)) = self.finishing_q.front() {
            if !force && due > now {
                break;
            }
            self.finishing_q.pop_front();
            let current = self.requests.get(&rid).and_then(|r| r.finishing);
            if current.is_some_and(|(_, d)| d == due) {
                if let Some(r) = self.requests.remove(&rid) {
                    self.close_request(c, r, None);
                }
            }
        }
        while let Some(&(due, rid)) = self.linger_q.front() {
            if !force && due > now {
                break;
            }
            self.linger_q.pop_front();
            let current = self.requests.get(&rid).and_then(|r| r.linger_until);
            if current == Some(due) {
                if let Some(r) = self.requests.remove(&rid) {
                    self.close_request(c, r, None);
                }
            }
        }
        if now.duration_since(self.last_idle_scan)
            >= Duration::from_secs(1).min(self.limits.idle_timeout / 2)
        {
            self.last_idle_scan = now;
            let idle = self.limits.idle_timeout;
            let due: Vec<Rid> = self
                .requests
                .iter()
                .filter(|(_, r)| {
                    r.finishing.is_none()
                        && r.linger_until.is_none()
                        && now.duration_since(r.last_activity) >= idle
                })
                .map(|(k, _)| *k)
                .collect();
            for rid in due {
                if let Some(r) = self.requests.remove(&rid) {
                    Counters::add(&c.requests_evicted, 1);
                    self.close_request(c, r, Some("evicted: no activity within the idle timeout"));
                }
            }
        }
        if self.parked_count > 0
            && now.duration_since(self.last_park_scan) >= self.limits.park_timeout / 4
        {
            self.last_park_scan = now;
            let timeout = self.limits.park_timeout;
            let mut dropped = 0;
            self.parked.retain(|_, q| {
                while q
                    .front()
                    .is_some_and(|p| now.duration_since(p.at) >= timeout)
                {
                    q.pop_front();
                    dropped += 1;
                }
                !q.is_empty()
            });
            self.parked_count -= dropped;
            Counters::add(&c.unknown_rid_records, dropped as u64);
        }
    }

    /// Closes every open request as unfinished (shutdown), and drops parked records (counted).
    pub fn close_all(&mut self, c: &Counters, why: &'static str) {
        let all: Vec<Rid> = self.requests.keys().copied().collect();
        for rid in all {
            if let Some(r) = self.requests.remove(&rid) {
                let why = if r.finishing.is_some() {
                    None
                } else {
                    Some(why)
                };
                self.close_request(c, r, why);
            }
        }
        Counters::add(&c.unknown_rid_records, self.parked_count as u64);
        self.parked.clear();
        self.parked_count = 0;
    }

    /// Ends a request: its open slices (unfinished), thread spans, then the request span.
    /// `why` marks the request unfinished with that reason.
    fn close_request(&mut self, c: &Counters, mut req: Request, why: Option<&'static str>) {
        let end_ns = match req.finishing {
            Some((ns, _)) => ns,
            None => req.last_ns,
        };
        let trace = req.trace_id;
        for t in &mut req.threads {
            if t.id != 0 {
                finish_thread(
                    c,
                    &self.info,
                    trace,
                    &req.trace_state,
                    &mut req.rid_attr,
                    req.span_id,
                    t,
                    end_ns.max(t.last_ns),
                    &mut self.out,
                );
            }
        }
        if req.finishing.is_some() {
            Counters::add(&c.requests_finished, 1);
        }
        let name = match &req.rid_text {
            Some(t) => format!("Req {}", short_rid(t)),
            None => format!("Req {}", req.rid.0),
        };
        let mut attrs = Vec::with_capacity(req.attrs.len() + 3);
        attrs.push(KeyValue::new(
            "rid",
            req.rid_text
                .clone()
                .unwrap_or_else(|| req.rid.0.to_string()),
        ));
        if let Some(room) = req.bootstrap_room {
            attrs.push(KeyValue::new("bootstrap_room", room as i64));
        }
        let status = match why {
            Some(w) => {
                attrs.push(KeyValue::new("slicetrace.unfinished", true));
                error_status(w)
            }
            None => Status::Unset,
        };
        attrs.append(&mut req.attrs);
        let mut events = SpanEvents::default();
        events.events = std::mem::take(&mut req.events);
        self.out.push(|| {
            Finished::Span(Box::new(SpanData {
                span_context: own_ctx(trace, req.span_id, req.trace_state),
                parent_span_id: SpanId::from_bytes(req.parent.to_be_bytes()),
                parent_span_is_remote: req.parent_remote,
                span_kind: SpanKind::Server,
                name: Cow::Owned(name),
                start_time: ns_to_time(req.start_ns),
                end_time: ns_to_time(end_ns.max(req.start_ns)),
                attributes: attrs,
                dropped_attributes_count: req.dropped_attrs,
                events,
                links: SpanLinks::default(),
                status,
                instrumentation_scope: self.info.scope.clone(),
            }))
        });
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

fn push_capped<T>(v: &mut Vec<T>, dropped: &mut u32, item: T, cap: usize) {
    if v.len() < cap {
        v.push(item);
    } else {
        *dropped += 1;
    }
}

fn decode_attr(rec: &Decoded, key: Option<&'static str>) -> Option<KeyValue> {
    let key = key?;
    let v = rec.head.value;
    let value = match rec.head.flags & flag::VALUE_MASK {
        flag::VALUE_I64 => OtelValue::I64(v as i64),
        flag::VALUE_F64 => OtelValue::F64(f64::from_bits(v)),
        flag::VALUE_BOOL => OtelValue::Bool(v != 0),
        _ => OtelValue::String(String::from_utf8_lossy(&rec.payload).into_owned().into()),
    };
    Some(KeyValue::new(key, value))
}

fn find_thread(req: &Request, tenure: &Tenure) -> Option<usize> {
    let key = tenure.key();
    req.threads.iter().position(|t| t.key == key)
}

/// This request's entry for `tenure`'s thread, made (with no span open) if missing.
fn thread_entry(req: &mut Request, tenure: &Arc<Tenure>) -> usize {
    if let Some(i) = find_thread(req, tenure) {
        return i;
    }
    req.threads.push(ThreadSpan {
        key: tenure.key(),
        tenure: tenure.clone(),
        id: 0,
        start_ns: 0,
        last_ns: 0,
        chain: SliceChain::default(),
        slices: Vec::new(),
        pending_link: None,
        last_event: EventAt::None,
        own_events: Vec::new(),
        own_attrs: Vec::new(),
    });
    req.threads.len() - 1
}

/// Opens `t`'s thread span (at `pos`, `ns`) unless one is open.
fn open_thread(t: &mut ThreadSpan, pos: u64, ns: u64) -> &mut ThreadSpan {
    if t.id == 0 {
        t.id = derive_span_id(t.tenure.seed, pos, Salt::THREAD);
        t.start_ns = ns;
    } else {
        // A record that waited for its request (written before the request's start) is older
        // than the span it lands in: the span reaches back to cover it.
        t.start_ns = t.start_ns.min(ns);
    }
    t.last_ns = t.last_ns.max(ns);
    t
}

/// This request's open span on `tenure`'s thread, opened at `pos`, `ns` if none is.
fn thread_span<'r>(
    req: &'r mut Request,
    tenure: &Arc<Tenure>,
    pos: u64,
    ns: u64,
) -> &'r mut ThreadSpan {
    let i = thread_entry(req, tenure);
    req.linger_until = None;
    open_thread(&mut req.threads[i], pos, ns)
}

fn open_slice(
    c: &Counters,
    t: &mut ThreadSpan,
    trace: u128,
    pos: u64,
    salt: Salt,
    name: Option<&'static str>,
    ns: u64,
) {
    let top = t.chain.depth() == 0;
    let parent = t.chain.current().unwrap_or(t.id);
    let prev_top = t.chain.last_top();
    let Some(id) = t.chain.start(t.tenure.seed, pos, salt) else {
        Counters::add(&c.slices_dropped_depth, 1);
        return;
    };
    let link = if top {
        t.pending_link
            .take()
            .or_else(|| prev_top.map(|p| LinkTo::new(trace, p, false)))
    } else {
        None
    };
    t.slices.push(OpenSlice {
        id,
        parent,
        name,
        start_ns: ns,
        link,
        extras: None,
    });
}

#[allow(clippy::too_many_arguments)]
fn slice_span(
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

/// Closes `t`'s open slices at `ns`, innermost first, marked unfinished.
#[allow(clippy::too_many_arguments)]
fn close_unfinished(
    c: &Counters,
    trace: u128,
    state: &TraceState,
    rid: u32,
    t: &mut ThreadSpan,
    ns: u64,
    out: &mut SpanOut,
) {
    t.chain.finish_thread(|_| {});
    for s in t.slices.drain(..).rev() {
        Counters::add(&c.slices_unfinished, 1);
        let name = s.name.unwrap_or("anonymous");
        out.push(|| {
            slice_span(
                trace,
                state,
                s,
                name,
                ns,
                error_status("unfinished: still open when its thread span or request ended"),
                true,
                t.tenure.meta.tid,
                rid,
            )
        });
    }
}

/// Ends `t`'s thread span at `ns`, first closing its open slices as unfinished.
#[allow(clippy::too_many_arguments)]
fn finish_thread(
    c: &Counters,
    info: &ProcessInfo,
    trace: u128,
    state: &TraceState,
    rid: &mut RidAttr,
    req_span: u64,
    t: &mut ThreadSpan,
    ns: u64,
    out: &mut SpanOut,
) {
    if t.id == 0 {
        return;
    }
    // Unused when no slice is open: no table entry for it.
    let rid = if t.slices.is_empty() { 0 } else { out.rid(rid) };
    close_unfinished(c, trace, state, rid, t, ns, out);
    // Built only when the export queue has room for it (see `SpanOut`).
    out.push(|| {
        let m = &t.tenure.meta;
        let label = m.label();
        let host8 = crate::wire::record::truncate_str(&info.host_id, 8);
        let name = match m.tp_rank {
            Some(tp) => format!("{label} [TP {tp}] (host:{host8} | pid:{})", m.tid),
            None => format!("{label} (host:{host8} | pid:{})", m.tid),
        };
        let mut attrs = vec![
            KeyValue::new("thread_label", label.to_owned()),
            KeyValue::new("host_id", info.host_id.clone()),
            KeyValue::new("pid", m.tid as i64),
            KeyValue::new("thread.id", m.tid as i64),
            KeyValue::new("thread.name", m.name.clone()),
        ];
        if let Some(tp) = m.tp_rank {
            attrs.push(KeyValue::new("tp_rank", tp as i64));
        }
        if let Some(dp) = m.dp_rank {
            attrs.push(KeyValue::new("dp_rank", dp as i64));
        }
        attrs.append(&mut t.own_attrs);
        let mut events = SpanEvents::default();
        events.events = std::mem::take(&mut t.own_events);
        Finished::Span(Box::new(SpanData {
            span_context: own_ctx(trace, t.id, state.clone()),
            parent_span_id: SpanId::from_bytes(req_span.to_be_bytes()),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(name),
            start_time: ns_to_time(t.start_ns),
            end_time: ns_to_time(ns.max(t.start_ns)),
            attributes: attrs,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: info.scope.clone(),
        }))
    });
    // Left here when the span was not built: a thread span opened later must not inherit them.
    t.own_attrs.clear();
    t.own_events.clear();
    t.id = 0;
    t.last_event = EventAt::None;
}

/// A joined request (no local req_start) ends once none of its thread spans is open.
fn update_linger(
    req: &mut Request,
    limits: &TreeLimits,
    now: Instant,
    q: &mut VecDeque<(Instant, Rid)>,
) {
    if !req.local && req.finishing.is_none() && req.threads.iter().all(|t| t.id == 0) {
        let due = now + limits.joined_linger;
        req.linger_until = Some(due);
        q.push_back((due, req.rid));
    }
}
