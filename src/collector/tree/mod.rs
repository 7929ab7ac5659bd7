//! Rebuilding Request → Thread → Slice span trees from decoded records.
//!
//! The drainer feeds records in ring order per thread (threads interleaved in sweep order) with
//! their times already in Unix nanoseconds. Finished spans go to `out` (see `Finished`).
//!
//! - `origin`: what a `ReqStart` or `SetPropagate` says about where the request's spans hang;
//! - `request`: what is kept of an open request, and records waiting for one;
//! - `lifecycle`: starting, joining, finishing, closing and evicting requests;
//! - `slices`: slice, event and attribute records of an open request;
//! - `spans`: the finished spans made of closed state;
//! - `schema`: span names and attribute keys.

mod lifecycle;
mod origin;
mod request;
mod slices;
mod spans;
mod tasks;
#[cfg(test)]
mod testing;

use super::span_out::SpanOut;
use super::stats::Counters;
use crate::ids::Rid;
use crate::name::NameCache;
use crate::wire::decode::Decoded;
use crate::wire::ownership::ThreadMeta;
use crate::wire::record::{flag, Kind};
use lifecycle::{update_linger, Deadlines};
use opentelemetry::InstrumentationScope;
use request::{Parking, Request};
use slicetrace_spans::util::MixHash;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use origin::parse_trace_state;
pub use tasks::MAX_OPEN_TASKS;

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

/// Where the tree reads the time its grace, linger, idle and parking deadlines are measured in.
pub trait Clock: Send {
    fn now(&self) -> Instant;
}

/// The OS monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

pub struct Tree {
    limits: TreeLimits,
    info: ProcessInfo,
    clock: Box<dyn Clock>,
    names: NameCache,
    requests: HashMap<Rid, Request, MixHash>,
    parking: Parking,
    /// Requests to close once their `req_finish` grace has passed.
    finishing: Deadlines,
    /// Joined requests to close once their linger has passed.
    lingering: Deadlines,
    /// Requests with async slices ended in the sweep given, to export after the next.
    closing_tasks: std::collections::VecDeque<(u64, Rid)>,
    /// Sweeps begun (`read_clock`).
    sweep: u64,
    last_idle_scan: Instant,
    last_park_scan: Instant,
    /// The clock read once per sweep rather than once per record.
    now: Instant,
    pub out: SpanOut,
}

/// A record of an open request, with what applying it needs.
struct Rec<'a> {
    c: &'a Counters,
    tenure: &'a Arc<Tenure>,
    rec: &'a Decoded,
    ns: u64,
    /// The record's name or attribute key; `None` when it has none or it did not decode.
    name: Option<&'static str>,
}

impl Tree {
    pub fn new(limits: TreeLimits, info: ProcessInfo, clock: Box<dyn Clock>) -> Tree {
        let now = clock.now();
        Tree {
            parking: Parking::new(limits.max_parked),
            limits,
            info,
            clock,
            names: NameCache::default(),
            requests: HashMap::default(),
            finishing: Deadlines::default(),
            lingering: Deadlines::default(),
            closing_tasks: Default::default(),
            sweep: 0,
            last_idle_scan: now,
            last_park_scan: now,
            now,
            out: SpanOut::default(),
        }
    }

    /// Reads the clock: records applied from now on count as seen at this moment.
    pub fn read_clock(&mut self) {
        self.now = self.clock.now();
        self.sweep += 1;
    }

    pub fn open_requests(&self) -> usize {
        self.requests.len()
    }

    pub fn parked(&self) -> usize {
        self.parking.len()
    }

    /// Applies one record written by `tenure`, at `ns` Unix nanoseconds.
    pub fn apply(&mut self, c: &Counters, tenure: &Arc<Tenure>, rec: &Decoded, ns: u64) {
        let rid = Rid(rec.head.rid);
        match rec.kind {
            Kind::ThreadInfo | Kind::Chunk => {}
            Kind::ReqStart => {
                self.start(c, tenure, rec, ns);
                self.unpark(c, rid);
            }
            Kind::SetPropagate => {
                if self.join(c, tenure, rec, ns) {
                    self.unpark(c, rid);
                } else {
                    self.parking.park(c, tenure, rec, ns, self.now);
                }
            }
            _ => {
                if !self.apply_known(c, tenure, rec, ns) {
                    self.parking.park(c, tenure, rec, ns, self.now);
                }
            }
        }
    }

    fn unpark(&mut self, c: &Counters, rid: Rid) {
        if let Some(q) = self.parking.take(rid) {
            for p in q {
                self.apply(c, &p.tenure, &p.rec, p.ns);
            }
        }
    }

    /// Applies a record of a request already open; false (nothing done) when it is not.
    fn apply_known(&mut self, c: &Counters, tenure: &Arc<Tenure>, rec: &Decoded, ns: u64) -> bool {
        let Some(req) = self.requests.get_mut(&Rid(rec.head.rid)) else {
            return false;
        };
        let name = self.names.get(rec.head.name);
        if rec.head.name != 0 && name.is_none() {
            Counters::add(&c.records_undecodable, 1);
        }
        req.touch(self.now, ns);
        self.out.muted = !req.sampled;
        let r = Rec {
            c,
            tenure,
            rec,
            ns,
            name,
        };
        if let Some(tasks) = req.tasks.as_mut().filter(|t| t.has_pending()) {
            let for_task = match rec.kind {
                Kind::TaskStart | Kind::TaskEnd | Kind::TaskAttrs => true,
                Kind::Attr => rec.head.flags & flag::TASK != 0,
                Kind::Event => rec.head.flags & flag::FOR_TASK != 0,
                _ => false,
            };
            if !for_task {
                tasks.orphan_pending(c, tenure.key());
            }
        }
        match rec.kind {
            Kind::ReqFinish => {
                let due = self.now + self.limits.finish_grace;
                lifecycle::finish(req, ns, due, &mut self.finishing);
            }
            Kind::SliceStart => req.slice_start(&r),
            Kind::SliceEnd => {
                if req.slice_end(&r, &self.info, &mut self.out) {
                    let linger = self.limits.joined_linger;
                    update_linger(req, linger, self.now, &mut self.lingering);
                }
            }
            Kind::ThreadEnd => {
                if req.thread_end(&r, &self.info, &mut self.out) {
                    let linger = self.limits.joined_linger;
                    update_linger(req, linger, self.now, &mut self.lingering);
                }
            }
            Kind::TaskStart => {
                if req.task_start(&r, self.sweep) {
                    self.closing_tasks.push_back((self.sweep, req.rid));
                }
            }
            Kind::TaskEnd => {
                if req.task_end(&r, self.sweep) {
                    self.closing_tasks.push_back((self.sweep, req.rid));
                }
                let linger = self.limits.joined_linger;
                update_linger(req, linger, self.now, &mut self.lingering);
            }
            Kind::TaskAttrs => req.task_attrs(&r),
            Kind::Event => req.event(&r),
            Kind::Attr => req.attr(&r),
            Kind::Propagate => Counters::add(&c.propagations, 1),
            Kind::ReqStart | Kind::SetPropagate | Kind::ThreadInfo | Kind::Chunk | Kind::Batch => {}
        }
        self.out.muted = false;
        true
    }
}
