//! A request's life in the tree: started or joined by its origin record, finished, closed after
//! its grace or linger, or evicted; and what closing a thread span or a request exports.

use super::origin::{Arrival, Origin};
use super::request::{EventAt, Request, ThreadSpan};
use super::spans::{self, error_status, Parent};
use super::{ProcessInfo, Tenure, Tree};
use crate::collector::span_out::{RidAttr, SpanOut};
use crate::collector::stats::Counters;
use crate::ids::Rid;
use crate::slice_chain::SliceChain;
use crate::wire::decode::Decoded;
use opentelemetry::trace::TraceState;
use slicetrace_spans::schema;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests to close at a moment, in that moment's order: every entry's delay is one constant,
/// so arrival order is deadline order. An entry whose request has since moved on is stale and
/// skipped when it comes up.
#[derive(Default)]
pub struct Deadlines(VecDeque<(Instant, Rid)>);

impl Deadlines {
    pub fn push(&mut self, due: Instant, rid: Rid) {
        self.0.push_back((due, rid));
    }

    /// The next entry due by `now` (any entry, when `force`).
    fn pop_due(&mut self, now: Instant, force: bool) -> Option<(Instant, Rid)> {
        let &(due, _) = self.0.front()?;
        if !force && due > now {
            return None;
        }
        self.0.pop_front()
    }
}

impl Tree {
    /// `ReqStart`: a new request and the calling thread's span of it. An open request of the
    /// same rid is closed first (as unfinished unless it was finishing).
    pub(super) fn start(&mut self, c: &Counters, tenure: &Arc<Tenure>, rec: &Decoded, ns: u64) {
        let rid = Rid(rec.head.rid);
        if let Some(old) = self.requests.remove(&rid) {
            if old.finishing.is_some() {
                self.close_request(c, old, None);
            } else {
                Counters::add(&c.requests_restarted, 1);
                self.close_request(c, old, Some(spans::RESTARTED));
            }
        }
        if self.requests.len() >= self.limits.max_open_requests {
            Counters::add(&c.requests_rejected, 1);
            return;
        }
        let Some(origin) = Origin::decode(rec, tenure.seed, self.info.process_tag) else {
            Counters::add(&c.records_undecodable, 1);
            return;
        };
        Counters::add(&c.requests_started, 1);
        if !origin.sampled {
            Counters::add(&c.requests_sampled_out, 1);
        }
        let mut req = Request::open(c, rid, &origin, ns, self.now);
        req.thread_span(tenure, rec.pos, ns).pending_link = origin.link;
        self.requests.insert(rid, req);
    }

    /// `SetPropagate`: the calling thread continues the request, whose span this process opens
    /// now if the sender was another process. The thread's chain starts afresh, as
    /// `propagate_context` reads it, and its next top-level slice links to the sender's.
    /// Returns false when the record must wait: a hand-over inside this process of a request
    /// not seen to start yet.
    pub(super) fn join(
        &mut self,
        c: &Counters,
        tenure: &Arc<Tenure>,
        rec: &Decoded,
        ns: u64,
    ) -> bool {
        let rid = Rid(rec.head.rid);
        let Some(origin) = Origin::decode(rec, tenure.seed, self.info.process_tag) else {
            Counters::add(&c.records_undecodable, 1);
            return true;
        };
        if !self.requests.contains_key(&rid) {
            if origin.arrival == Arrival::HandedOver {
                return false;
            }
            if self.requests.len() >= self.limits.max_open_requests {
                Counters::add(&c.requests_rejected, 1);
                return true;
            }
            Counters::add(&c.requests_joined, 1);
            if !origin.sampled {
                Counters::add(&c.requests_sampled_out, 1);
            }
            let req = Request::open(c, rid, &origin, ns, self.now);
            self.requests.insert(rid, req);
        }
        let Some(req) = self.requests.get_mut(&rid) else {
            return true;
        };
        if req.trace_id != origin.trace_id {
            Counters::add(&c.context_conflicts, 1);
        }
        if req.rid_text.is_none() {
            if let Some(text) = origin.rid_text() {
                req.set_rid_text(Some(text));
            }
        }
        req.last_activity = self.now;
        req.linger_until = None;
        let (trace, state) = (req.trace_id, req.trace_state.clone());
        let rid = self.out.rid(&mut req.rid_attr);
        self.out.muted = !req.sampled;
        let t = req.thread_span(tenure, rec.pos, ns);
        close_unfinished(c, trace, &state, rid, t, ns, &mut self.out);
        self.out.muted = false;
        t.chain = SliceChain::default();
        t.pending_link = origin.link;
        true
    }

    /// Closes what is due: finished requests past their grace, joined requests past their
    /// linger, idle requests, and parked records nobody claimed. `force` closes every finished
    /// and lingering request now (flush). Costs what is due, plus a scan of all requests once a
    /// second for idleness.
    pub fn housekeeping(&mut self, c: &Counters, force: bool) {
        let now = self.clock.now();
        while let Some(&(sweep, rid)) = self.closing_tasks.front() {
            if !force && sweep >= self.sweep {
                break;
            }
            self.closing_tasks.pop_front();
            if let Some(req) = self.requests.get_mut(&rid) {
                self.out.muted = !req.sampled;
                req.export_closed_tasks(self.sweep, force, &mut self.out);
                self.out.muted = false;
            }
        }
        while let Some((due, rid)) = self.finishing.pop_due(now, force) {
            let current = self.requests.get(&rid).and_then(|r| r.finishing);
            if current.is_some_and(|(_, d)| d == due) {
                self.close(c, rid, None);
            }
        }
        while let Some((due, rid)) = self.lingering.pop_due(now, force) {
            let current = self.requests.get(&rid).and_then(|r| r.linger_until);
            if current == Some(due) {
                self.close(c, rid, None);
            }
        }
        if now.duration_since(self.last_idle_scan)
            >= Duration::from_secs(1).min(self.limits.idle_timeout / 2)
        {
            self.last_idle_scan = now;
            self.evict_idle(c, now);
        }
        if self.parking.len() > 0
            && now.duration_since(self.last_park_scan) >= self.limits.park_timeout / 4
        {
            self.last_park_scan = now;
            self.parking.expire(c, now, self.limits.park_timeout);
        }
    }

    /// Closes, as unfinished, the requests without a record within the idle timeout.
    fn evict_idle(&mut self, c: &Counters, now: Instant) {
        let idle = self.limits.idle_timeout;
        let due: Vec<Rid> = self
            .requests
            .iter()
            .filter(|(_, r)| r.is_idle(now, idle))
            .map(|(k, _)| *k)
            .collect();
        for rid in due {
            Counters::add(&c.requests_evicted, 1);
            self.close(c, rid, Some(spans::EVICTED));
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
        self.parking.clear(c);
    }

    fn close(&mut self, c: &Counters, rid: Rid, why: Option<&'static str>) {
        if let Some(r) = self.requests.remove(&rid) {
            self.close_request(c, r, why);
        }
    }

    /// Ends a request: its open slices (unfinished), thread spans, then the request span.
    /// `why` marks the request unfinished with that reason.
    fn close_request(&mut self, c: &Counters, req: Request, why: Option<&'static str>) {
        self.out.muted = !req.sampled;
        self.export_request(c, req, why);
        self.out.muted = false;
    }

    fn export_request(&mut self, c: &Counters, mut req: Request, why: Option<&'static str>) {
        let end_ns = match req.finishing {
            Some((ns, _)) => ns,
            None => req.last_ns,
        };
        let (trace, parent) = (req.trace_id, req.thread_parent());
        req.close_tasks(c, end_ns, &mut self.out);
        for t in &mut req.threads {
            if t.is_open() {
                let ns = end_ns.max(t.last_ns);
                let (state, rid) = (&req.trace_state, &mut req.rid_attr);
                finish_thread(
                    c,
                    &self.info,
                    trace,
                    state,
                    rid,
                    parent,
                    t,
                    ns,
                    &mut self.out,
                );
            }
        }
        if req.finishing.is_some() {
            Counters::add(&c.requests_finished, 1);
        }
        if !req.local {
            // A joined request's thread spans hang under the sender's request span: nothing
            // more of it is this process's to export.
            return;
        }
        let info = &self.info;
        if let Some(room) = req.room_span {
            self.out.push(|| spans::room(info, &req, room, end_ns, why));
        }
        self.out.push(|| spans::request(info, req, end_ns, why));
    }
}

/// `ReqFinish`: the request closes at `due`, once other threads' records still on their way
/// have had time to arrive. A second finish changes nothing.
pub(super) fn finish(req: &mut Request, ns: u64, due: Instant, q: &mut Deadlines) {
    if req.finishing.is_none() {
        req.finishing = Some((ns, due));
        q.push(due, req.rid);
    }
}

/// A joined request (no local req_start) ends once none of its thread spans or async slices
/// is open.
pub(super) fn update_linger(req: &mut Request, linger: Duration, now: Instant, q: &mut Deadlines) {
    let idle = req.threads.iter().all(|t| !t.is_open()) && req.tasks_open() == 0;
    if !req.local && req.finishing.is_none() && idle {
        let due = now + linger;
        req.linger_until = Some(due);
        q.push(due, req.rid);
    }
}

/// Closes `t`'s open slices at `ns`, innermost first, marked unfinished.
pub(super) fn close_unfinished(
    c: &Counters,
    trace: u128,
    state: &TraceState,
    rid: u32,
    t: &mut ThreadSpan,
    ns: u64,
    out: &mut SpanOut,
) {
    t.chain.finish_thread(|_| {});
    let tid = t.tenure.meta.tid;
    for s in t.slices.drain(..).rev() {
        Counters::add(&c.slices_unfinished, 1);
        let name = s.name.unwrap_or(schema::ANONYMOUS);
        out.push(|| {
            let status = error_status(spans::UNFINISHED_SLICE);
            spans::slice(trace, state, s, name, ns, status, true, tid, rid)
        });
    }
}

/// Ends `t`'s thread span at `ns`, first closing its open slices as unfinished.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish_thread(
    c: &Counters,
    info: &ProcessInfo,
    trace: u128,
    state: &TraceState,
    rid: &mut RidAttr,
    parent: Parent,
    t: &mut ThreadSpan,
    ns: u64,
    out: &mut SpanOut,
) {
    if !t.is_open() {
        return;
    }
    // Unused when no slice is open: no table entry for it.
    let rid = if t.slices.is_empty() { 0 } else { out.rid(rid) };
    close_unfinished(c, trace, state, rid, t, ns, out);
    // Events no slice's interval held go to the thread span, after its own.
    for ev in std::mem::take(&mut t.waiting) {
        if t.own_events.len() < crate::collector::tree::MAX_EVENTS_PER_SPAN {
            t.own_events.push(ev);
        } else {
            t.dropped_events += 1;
        }
    }
    // Built only when the export queue has room for it (see `SpanOut`).
    out.push(|| spans::thread(info, trace, state, parent, t, ns));
    // Left here when the span was not built: a thread span opened later must not inherit them.
    t.own_attrs.clear();
    t.own_events.clear();
    t.dropped_attrs = 0;
    t.dropped_events = 0;
    t.error = false;
    t.id = 0;
    t.last_event = EventAt::None;
}

#[cfg(test)]
mod tests {
    use super::super::testing::{attr, limits, sorted, Harness, Upstream, TAG};
    use crate::ids::{derive_span_id, derive_trace_id, Salt};
    use crate::wire::record::flag::{self, TARGET_REQUEST, TARGET_SLICE, THREAD_FINISH};
    use opentelemetry::trace::{SpanId, TraceId};

    /// A request's life, and the housekeeping after it: `(ms the clock moves on, requests open
    /// after housekeeping)` for each step.
    struct Case {
        what: &'static str,
        script: fn(&mut Harness),
        steps: &'static [(u64, usize)],
        shape: &'static [&'static str],
        counted: &'static [(&'static str, u64)],
    }

    const TRACE: u128 = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;

    const CASES: &[Case] = &[
        Case {
            what: "a finished request waits out its grace",
            script: |h| {
                h.start(0, 1);
                h.finish(0, 1);
            },
            steps: &[(19, 1), (1, 0)],
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "t0 < Req 1",
            ],
            counted: &[("requests_started", 1), ("requests_finished", 1)],
        },
        Case {
            what: "records after the finish, within the grace, still belong to it",
            script: |h| {
                h.start(0, 1);
                h.finish(0, 1);
                h.slice(1, 1, "late");
                h.end(1, 1, "late", 0);
            },
            steps: &[(20, 0)],
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "late <t1",
                "t0 < Req 1",
                "t1 < Req 1",
            ],
            counted: &[("requests_started", 1), ("requests_finished", 1)],
        },
        Case {
            what: "an idle request is evicted as unfinished",
            script: |h| {
                h.start(0, 1);
                h.slice(0, 1, "a");
            },
            // Idleness is looked for once a second.
            steps: &[(9_999, 1), (999, 1), (1, 0)],
            shape: &[
                " Req 1 <Bootstrap Room 0x0 ! unfinished",
                "Bootstrap Room 0x0 <- ! unfinished",
                "a <t0 ! unfinished",
                "t0 < Req 1",
            ],
            counted: &[
                ("requests_started", 1),
                ("requests_evicted", 1),
                ("slices_unfinished", 1),
            ],
        },
        Case {
            what: "a start of an open rid closes the first as unfinished",
            script: |h| {
                h.start(0, 1);
                h.slice(0, 1, "a");
                h.start(0, 1);
                h.finish(0, 1);
            },
            steps: &[(20, 0)],
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                " Req 1 <Bootstrap Room 0x0 ! unfinished",
                "Bootstrap Room 0x0 <- ! unfinished",
                "a <t0 ! unfinished",
                "t0 < Req 1",
                "t0 < Req 1",
            ],
            counted: &[
                ("requests_started", 2),
                ("requests_finished", 1),
                ("requests_restarted", 1),
                ("slices_unfinished", 1),
            ],
        },
        Case {
            what: "records of a request not started yet wait for it",
            script: |h| {
                h.slice(1, 3, "early");
                h.end(1, 3, "early", 0);
                h.start(0, 3);
                h.finish(0, 3);
            },
            steps: &[(20, 0)],
            shape: &[
                " Req 3 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "early <t1",
                "t0 < Req 3",
                "t1 < Req 3",
            ],
            counted: &[("requests_started", 1), ("requests_finished", 1)],
        },
        Case {
            what: "records nobody claims are dropped after the park timeout, counted",
            script: |h| {
                h.slice(1, 4, "orphan");
                h.end(1, 4, "orphan", 0);
            },
            steps: &[(400, 0), (125, 0), (0, 0)],
            shape: &[],
            counted: &[("unknown_rid_records", 2)],
        },
        Case {
            what: "a request joined from another process closes after its linger",
            script: |h| {
                let ctx = Upstream {
                    trace_id: TRACE,
                    link: 0xabc,
                    extra: TAG + 1,
                };
                h.join(0, 7, 0x55, ctx, "chat_7");
                h.slice(0, 7, "a");
                h.end(0, 7, "a", THREAD_FINISH);
            },
            steps: &[(499, 1), (1, 0)],
            shape: &["a <t0 ~?abc", "t0 <?55"],
            counted: &[("requests_joined", 1)],
        },
        Case {
            what: "what a joined request's thread writes with no span of its own open is dropped",
            script: |h| {
                let ctx = Upstream {
                    trace_id: TRACE,
                    link: 0,
                    extra: TAG + 1,
                };
                h.join(0, 7, 0x55, ctx, "");
                h.attr(0, 7, TARGET_REQUEST, "r", 1);
                h.event(0, 7, "on_thread");
                h.end(0, 7, "", THREAD_FINISH);
                h.event(0, 7, "late");
                h.attr(0, 7, TARGET_REQUEST, "r", 2);
                h.attr(0, 7, TARGET_SLICE, "s", 3);
            },
            steps: &[(500, 0)],
            shape: &["t0 <?55 {r=1} [on_thread]"],
            counted: &[
                ("requests_joined", 1),
                ("end_without_start", 1),
                ("events_without_slice", 1),
                ("annotations_dropped", 3),
            ],
        },
        Case {
            what: "a start under another node's room opens no room span; a role names the request",
            script: |h| {
                let ctx = Upstream {
                    trace_id: TRACE,
                    link: 0xabc,
                    extra: 0x66,
                };
                h.start_with(
                    0,
                    1,
                    flag::HAS_ROOM | flag::JOINS_ROOM,
                    9,
                    Some(ctx),
                    None,
                    "",
                );
                h.slice(0, 1, "a");
                h.end(0, 1, "a", 0);
                h.finish(0, 1);
                h.start_as(0, 2, "decode");
                h.finish(0, 2);
            },
            steps: &[(20, 0)],
            shape: &[
                " Req 1 <?66",
                "a <t0 ~?abc",
                "t0 < Req 1",
                "decode Req 2 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "t0 <decode Req 2",
            ],
            counted: &[("requests_started", 2), ("requests_finished", 2)],
        },
        Case {
            what: "a thread joining the request stops its linger",
            script: |h| {
                let ctx = Upstream {
                    trace_id: TRACE,
                    link: 0,
                    extra: TAG + 1,
                };
                h.join(0, 7, 0x55, ctx, "");
                h.end(0, 7, "", THREAD_FINISH);
                h.advance(300);
                h.join(1, 7, 0x55, ctx, "");
            },
            steps: &[(499, 1), (10_000, 0)],
            shape: &["t0 <?55", "t1 <?55"],
            counted: &[
                ("requests_joined", 1),
                ("end_without_start", 1),
                ("requests_evicted", 1),
            ],
        },
        Case {
            what: "a hand-over inside this process waits for the start it names",
            script: |h| {
                let ctx = Upstream {
                    trace_id: derive_trace_id(0x1000, 0),
                    link: 0,
                    extra: TAG,
                };
                h.join(1, 8, derive_span_id(0x1000, 0, Salt::REQUEST), ctx, "");
                h.slice(1, 8, "b");
                h.end(1, 8, "b", 0);
                h.start(0, 8);
                h.finish(0, 8);
            },
            steps: &[(20, 0)],
            shape: &[
                " Req 8 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "b <t1",
                "t0 < Req 8",
                "t1 < Req 8",
            ],
            counted: &[("requests_started", 1), ("requests_finished", 1)],
        },
    ];

    #[test]
    fn requests_close_when_their_time_comes() {
        for k in CASES {
            let mut h = Harness::new();
            (k.script)(&mut h);
            for (i, &(ms, open)) in k.steps.iter().enumerate() {
                h.advance(ms);
                h.housekeeping(false);
                let what = k.what;
                assert_eq!(h.tree.open_requests(), open, "{what}, step {i}");
            }
            assert_eq!(h.tree.parked(), 0, "{}", k.what);
            assert_eq!(h.shape(), sorted(k.shape), "{}", k.what);
            let (mut got, mut want) = (h.counted(), k.counted.to_vec());
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}", k.what);
        }
    }

    #[test]
    fn a_remote_join_and_a_same_process_hand_over_hang_differently() {
        // Another process: its thread spans hang under the sender's request span, and it
        // exports no request span of its own.
        let mut h = Harness::new();
        let ctx = Upstream {
            trace_id: TRACE,
            link: 0xabc,
            extra: TAG + 1,
        };
        h.join(0, 7, 0x55, ctx, "");
        h.slice(0, 7, "a");
        h.end(0, 7, "a", 0);
        h.housekeeping(true);
        h.tree.close_all(&h.c, "shut down");
        assert_eq!(h.shape(), sorted(&["a <t0 ~?abc", "t0 <?55"]));
        let t0 = h.span("t0(host:host-012 | pid:100)");
        assert_eq!(t0.parent_span_id, SpanId::from(0x55u64));
        assert!(t0.parent_span_is_remote);
        let a = h.span("a");
        assert!(a.links.links[0].span_context.is_remote());
        assert!(h
            .spans()
            .iter()
            .all(|s| s.span_context.trace_id() == TraceId::from(TRACE)));

        // This process: the sender's request span is the receiver's; the link is local.
        let mut h = Harness::new();
        h.start_with(0, 7, 0, 0, None, None, "chat_7");
        h.slice(0, 7, "a");
        h.end(0, 7, "a", 0);
        let a = h.span("a");
        let (trace, req_span) = h.ids(7);
        let ctx = Upstream {
            trace_id: trace,
            link: u64::from_be_bytes(a.span_context.span_id().to_bytes()),
            extra: TAG,
        };
        h.join(1, 7, req_span, ctx, "");
        h.slice(1, 7, "b");
        h.end(1, 7, "b", 0);
        h.finish(0, 7);
        h.advance(20);
        h.housekeeping(false);
        assert_eq!(
            h.shape(),
            sorted(&[
                " Req 7 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "a <t0",
                "b <t1 ~a",
                "t0 < Req 7",
                "t1 < Req 7"
            ])
        );
        let b = h.span("b");
        assert!(!b.links.links[0].span_context.is_remote());
        assert_eq!(
            attr(&b, "rid").map(|v| v.to_string()).as_deref(),
            Some("chat_7")
        );
        assert_eq!(h.c.snapshot().requests_joined, 0);
    }

    #[test]
    fn a_hand_over_restarts_the_receiving_threads_chain() {
        let mut h = Harness::new();
        h.start(0, 1);
        h.slice(0, 1, "a");
        let (trace, req_span) = h.ids(1);
        let ctx = Upstream {
            trace_id: trace,
            link: 0,
            extra: TAG,
        };
        // The thread hands the request to itself with a slice open: the slice ends unfinished
        // and the next top-level slice starts a chain of its own.
        h.join(0, 1, req_span, ctx, "");
        h.slice(0, 1, "b");
        h.end(0, 1, "b", 0);
        h.finish(0, 1);
        h.housekeeping(true);
        assert_eq!(
            h.shape(),
            sorted(&[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "a <t0 ! unfinished",
                "b <t0",
                "t0 < Req 1"
            ])
        );
        assert_eq!(h.c.snapshot().slices_unfinished, 1);
    }

    #[test]
    fn a_context_of_another_trace_is_counted_as_a_conflict() {
        let mut h = Harness::new();
        h.start(0, 1);
        let (_, req_span) = h.ids(1);
        let ctx = Upstream {
            trace_id: TRACE,
            link: 0,
            extra: TAG,
        };
        h.join(1, 1, req_span, ctx, "");
        assert_eq!(h.c.snapshot().context_conflicts, 1);
    }

    #[test]
    fn limits_refuse_requests_and_records_beyond_them() {
        let mut h = Harness::with_limits(super::super::TreeLimits {
            max_open_requests: 1,
            max_parked: 1,
            ..limits()
        });
        h.start(0, 1);
        h.start(0, 2);
        h.slice(0, 2, "a");
        h.slice(0, 2, "b");
        assert_eq!((h.tree.open_requests(), h.tree.parked()), (1, 1));
        let s = h.c.snapshot();
        assert_eq!((s.requests_rejected, s.unknown_rid_records), (1, 1));
        h.tree.close_all(&h.c, "shut down");
        assert_eq!(h.c.snapshot().unknown_rid_records, 2);
        let req = h.span(" Req 1");
        assert_eq!(attr(&req, "slicetrace.unfinished"), Some(&true.into()));
        let room = h.span("Bootstrap Room 0x0");
        assert_eq!(attr(&room, "slicetrace.unfinished"), Some(&true.into()));
    }
}
