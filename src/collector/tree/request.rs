//! What the tree keeps of an open request: its identity, its span on each thread that worked on
//! it, the slices open there; and the records that wait for a request not yet open.

use super::origin::{Arrival, Origin};
use super::spans::Parent;
use super::Tenure;
use crate::collector::finished::{LinkTo, SliceExtras};
use crate::collector::span_out::RidAttr;
use crate::collector::stats::Counters;
use crate::ids::{derive_span_id, Rid, Salt};
use crate::slice_chain::SliceChain;
use crate::wire::decode::Decoded;
use opentelemetry::trace::{Event, TraceState};
use opentelemetry::{KeyValue, Value as OtelValue};
use slicetrace_spans::util::MixHash;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct OpenSlice {
    pub id: u64,
    pub parent: u64,
    pub name: Option<&'static str>,
    pub start_ns: u64,
    pub link: Option<LinkTo>,
    /// Made on the slice's first attribute or event.
    pub extras: Option<Box<SliceExtras>>,
}

impl OpenSlice {
    pub fn extras(&mut self) -> &mut SliceExtras {
        self.extras.get_or_insert_with(Box::default)
    }
}

/// One request's span on one thread tenure.
pub struct ThreadSpan {
    /// The tenure's ring and owner, compared without reaching into the tenure.
    pub key: u64,
    pub tenure: Arc<Tenure>,
    /// 0 while no thread span is open (after thread_finish; the chain keeps the last slice).
    pub id: u64,
    pub start_ns: u64,
    pub last_ns: u64,
    pub chain: SliceChain,
    pub slices: Vec<OpenSlice>,
    /// The first slice after a propagation links here instead of to the chain.
    pub pending_link: Option<LinkTo>,
    /// Where the last event went, for the event's attributes.
    pub last_event: EventAt,
    pub own_events: Vec<Event>,
    /// `FOR_SLICE` events waiting for the slice whose interval holds them.
    pub waiting: Vec<Event>,
    pub own_attrs: Vec<KeyValue>,
    pub dropped_events: u32,
    pub dropped_attrs: u32,
    /// The thread span ends with an error status (a `ThreadEnd` that said so).
    pub error: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EventAt {
    None,
    Slice(usize),
    Thread,
    Waiting,
    Request,
}

impl ThreadSpan {
    fn new(tenure: &Arc<Tenure>) -> ThreadSpan {
        ThreadSpan {
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
            waiting: Vec::new(),
            own_attrs: Vec::new(),
            dropped_events: 0,
            dropped_attrs: 0,
            error: false,
        }
    }

    /// Opens the thread span (at `pos`, `ns`) unless one is open.
    pub fn open(&mut self, pos: u64, ns: u64) -> &mut ThreadSpan {
        if self.id == 0 {
            self.id = derive_span_id(self.tenure.seed, pos, Salt::THREAD);
            self.start_ns = ns;
        } else {
            // A record that waited for its request (written before the request's start) is
            // older than the span it lands in: the span reaches back to cover it.
            self.start_ns = self.start_ns.min(ns);
        }
        self.last_ns = self.last_ns.max(ns);
        self
    }

    pub fn is_open(&self) -> bool {
        self.id != 0
    }
}

pub struct Request {
    pub rid: Rid,
    pub rid_text: Option<String>,
    /// The `rid` attribute every slice carries, shared rather than copied per slice.
    pub rid_attr: RidAttr,
    pub trace_id: u128,
    /// W3C tracestate from an upstream gateway, carried by every span of the request here.
    pub trace_state: TraceState,
    /// The request span: this process's own, or for a joined request the sender's, which its
    /// thread spans hang under.
    pub span_id: u64,
    /// The request span's parent: this process's room span, or another node's it joined.
    pub parent: u64,
    pub parent_remote: bool,
    /// The bootstrap room span this process opened above the request span, if it did.
    pub room_span: Option<RoomSpan>,
    pub bootstrap_room: Option<u64>,
    /// `req_start`'s role, naming the request span.
    pub role: Option<String>,
    pub start_ns: u64,
    pub last_ns: u64,
    pub attrs: Vec<KeyValue>,
    pub events: Vec<Event>,
    pub dropped_attrs: u32,
    pub threads: Vec<ThreadSpan>,
    pub last_activity: Instant,
    /// Set by ReqFinish: (finish time, close after).
    pub finishing: Option<(u64, Instant)>,
    /// Joined requests close once no thread span is open and this moment has passed.
    pub linger_until: Option<Instant>,
    /// Started here (`req_start`), not joined: only then does this process export a request
    /// span (and a room span) for it.
    pub local: bool,
    /// The sampler keeps it; else its records are applied (so that it closes as any request
    /// does) and nothing of it is exported.
    pub sampled: bool,
    /// Its async slices, made at the first.
    pub tasks: Option<Box<super::tasks::Tasks>>,
}

/// A bootstrap room span this process opened: its id, and its remote parent (a gateway's span).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomSpan {
    pub id: u64,
    pub parent: Option<u64>,
}

fn shared_str(s: String) -> OtelValue {
    OtelValue::String(opentelemetry::StringValue::from(Arc::<str>::from(s)))
}

impl Request {
    /// The request `origin` opens at `ns`; its tracestate counted if refused.
    pub fn open(c: &Counters, rid: Rid, origin: &Origin<'_>, ns: u64, now: Instant) -> Request {
        let local = origin.arrival == Arrival::Started;
        let room_span = (local && !origin.joins_room && !origin.no_room_span).then_some(RoomSpan {
            id: origin.room_span,
            parent: origin.room_parent,
        });
        let (parent, parent_remote) = if local && origin.no_room_span {
            (
                origin.room_parent.unwrap_or(0),
                origin.room_parent.is_some(),
            )
        } else if local {
            (origin.room_span, origin.joins_room)
        } else {
            (origin.parent.unwrap_or(0), true)
        };
        let mut req = Request {
            rid,
            rid_text: None,
            rid_attr: RidAttr::new(shared_str(rid.0.to_string())),
            trace_id: origin.trace_id,
            trace_state: origin.trace_state(c),
            span_id: origin.request_span,
            parent,
            parent_remote,
            room_span,
            bootstrap_room: origin.room,
            role: origin.role(),
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
            sampled: origin.sampled,
            tasks: None,
        };
        req.set_rid_text(origin.rid_text());
        req
    }

    pub fn set_rid_text(&mut self, text: Option<String>) {
        if let Some(t) = &text {
            self.rid_attr = RidAttr::new(shared_str(t.clone()));
        }
        self.rid_text = text;
    }

    /// Where this request's thread spans hang.
    pub fn thread_parent(&self) -> Parent {
        Parent {
            span: self.span_id,
            remote: !self.local,
        }
    }

    /// A record of this request arrived at `ns`, applied at `now`.
    pub fn touch(&mut self, now: Instant, ns: u64) {
        self.last_activity = now;
        self.last_ns = self.last_ns.max(ns);
        // Records of other threads can predate the start record; the request span encloses them.
        self.start_ns = self.start_ns.min(ns);
    }

    /// Where `tenure`'s thread sits in `threads`, if it worked on this request.
    pub fn thread_of(&self, tenure: &Tenure) -> Option<usize> {
        let key = tenure.key();
        self.threads.iter().position(|t| t.key == key)
    }

    /// This request's entry for `tenure`'s thread, made (with no span open) if missing.
    pub fn thread_entry(&mut self, tenure: &Arc<Tenure>) -> usize {
        if let Some(i) = self.thread_of(tenure) {
            return i;
        }
        self.threads.push(ThreadSpan::new(tenure));
        self.threads.len() - 1
    }

    /// This request's open span on `tenure`'s thread, opened at `pos`, `ns` if none is.
    pub fn thread_span(&mut self, tenure: &Arc<Tenure>, pos: u64, ns: u64) -> &mut ThreadSpan {
        let i = self.thread_entry(tenure);
        self.linger_until = None;
        self.threads[i].open(pos, ns)
    }

    /// Neither finishing nor lingering, and no record since `now - idle`.
    pub fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        self.finishing.is_none()
            && self.linger_until.is_none()
            && now.duration_since(self.last_activity) >= idle
    }
}

/// A record that came before its request.
pub struct Parked {
    pub tenure: Arc<Tenure>,
    pub rec: Decoded,
    pub ns: u64,
    at: Instant,
}

/// Records waiting for their request, by rid, at most `max` in all.
pub struct Parking {
    by_rid: HashMap<Rid, VecDeque<Parked>, MixHash>,
    count: usize,
    max: usize,
}

impl Parking {
    pub fn new(max: usize) -> Parking {
        Parking {
            by_rid: HashMap::default(),
            count: 0,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Keeps `rec` until its request opens; counted as unknown when `max` wait already.
    pub fn park(
        &mut self,
        c: &Counters,
        tenure: &Arc<Tenure>,
        rec: &Decoded,
        ns: u64,
        at: Instant,
    ) {
        if self.count >= self.max {
            Counters::add(&c.unknown_rid_records, 1);
            return;
        }
        self.count += 1;
        self.by_rid
            .entry(Rid(rec.head.rid))
            .or_default()
            .push_back(Parked {
                tenure: tenure.clone(),
                rec: rec.clone(),
                ns,
                at,
            });
    }

    /// The records waiting for `rid`, in the order they came.
    pub fn take(&mut self, rid: Rid) -> Option<VecDeque<Parked>> {
        let q = self.by_rid.remove(&rid)?;
        self.count -= q.len();
        Some(q)
    }

    /// Drops (and counts as unknown) the records that have waited `timeout` by `now`.
    pub fn expire(&mut self, c: &Counters, now: Instant, timeout: Duration) {
        let mut dropped = 0;
        self.by_rid.retain(|_, q| {
            while q
                .front()
                .is_some_and(|p| now.duration_since(p.at) >= timeout)
            {
                q.pop_front();
                dropped += 1;
            }
            !q.is_empty()
        });
        self.count -= dropped;
        Counters::add(&c.unknown_rid_records, dropped as u64);
    }

    /// Drops (and counts) every waiting record.
    pub fn clear(&mut self, c: &Counters) {
        Counters::add(&c.unknown_rid_records, self.count as u64);
        self.by_rid.clear();
        self.count = 0;
    }
}
