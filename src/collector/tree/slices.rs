//! Records inside an open request: slices opening and closing on a thread, events, attributes.

use super::lifecycle::finish_thread;
use super::request::{EventAt, OpenSlice, Request, ThreadSpan};
use super::spans::{self, decode_attr, end_status};
use super::{ProcessInfo, Rec, MAX_ATTRS_PER_SPAN, MAX_EVENTS_PER_SPAN};
use crate::collector::finished::{ns_to_time, LinkTo};
use crate::collector::span_out::SpanOut;
use crate::collector::stats::Counters;
use crate::ids::Salt;
use crate::slice_chain::{self, Ended};
use crate::wire::record::flag;
use opentelemetry::trace::{Event, Status};
use slicetrace_spans::schema;

impl Request {
    /// `SliceStart`: a slice under the innermost open one, else under the thread span.
    pub(super) fn slice_start(&mut self, r: &Rec<'_>) {
        let anon = r.rec.head.flags & flag::ANON != 0;
        let trace = self.trace_id;
        let t = self.thread_span(r.tenure, r.rec.pos, r.ns);
        let name = if anon { None } else { r.name };
        let key = slice_chain::start_key(&r.rec.head);
        open_slice(r.c, t, trace, r.rec.pos, (Salt::SLICE, key), name, r.ns);
    }

    /// `SliceEnd`, or a batch item: closes the innermost slice, then ends the thread span
    /// (`THREAD_FINISH`) or opens the next anonymous slice (`AUTO_NEXT_ANON`). False when the
    /// slice data was out of step with the chain (counted; nothing more done).
    pub(super) fn slice_end(&mut self, r: &Rec<'_>, info: &ProcessInfo, out: &mut SpanOut) -> bool {
        let (c, ns) = (r.c, r.ns);
        let trace = self.trace_id;
        let ti = self.thread_entry(r.tenure);
        let t = &mut self.threads[ti];
        t.last_ns = t.last_ns.max(ns);
        let ended = if slice_chain::end_applies(&t.chain, &r.rec.head) {
            t.chain.end()
        } else {
            Counters::add(&c.level_ends_discarded, 1);
            Ended::Discarded
        };
        match ended {
            Ended::Closed { id, .. } => {
                // The chain and the slice data move together; a gap would be a bug here, which
                // must not take the drainer down.
                let Some(mut s) = t.slices.pop().filter(|s| s.id == id) else {
                    debug_assert!(false, "slice data out of step with the chain");
                    Counters::add(&c.records_undecodable, 1);
                    return false;
                };
                if !t.waiting.is_empty() {
                    take_waiting(&mut t.waiting, &mut s, ns);
                }
                let status = end_status(s.name, r.name);
                if matches!(status, Status::Error { .. }) {
                    Counters::add(&c.name_mismatches, 1);
                }
                let name = s.name.or(r.name).unwrap_or(schema::ANONYMOUS);
                let rid = out.rid(&mut self.rid_attr);
                let (state, tid) = (&self.trace_state, t.tenure.meta.tid);
                out.push(|| spans::slice(trace, state, s, name, ns, status, false, tid, rid));
            }
            Ended::Overflowed | Ended::Discarded => {}
            Ended::Nothing => Counters::add(&c.end_without_start, 1),
        }
        let flags = r.rec.head.flags;
        if flags & flag::THREAD_FINISH != 0 {
            let parent = self.thread_parent();
            let (state, rid, span) = (&self.trace_state, &mut self.rid_attr, parent);
            finish_thread(
                c,
                info,
                trace,
                state,
                rid,
                span,
                &mut self.threads[ti],
                ns,
                out,
            );
        } else if flags & flag::AUTO_NEXT_ANON != 0 {
            let pos = r.rec.pos;
            let t = self.threads[ti].open(pos, ns);
            let salt = (Salt::next_anon(r.rec.sub), slice_chain::ANY);
            open_slice(c, t, trace, pos, salt, None, ns);
        }
        true
    }

    /// `ThreadEnd`: ends the thread's open slices at the record's time, innermost first (ended
    /// as asked, not as unfinished), then its thread span, with an error status when flagged.
    /// False when the thread had no span open (counted).
    pub(super) fn thread_end(
        &mut self,
        r: &Rec<'_>,
        info: &ProcessInfo,
        out: &mut SpanOut,
    ) -> bool {
        let (c, ns) = (r.c, r.ns);
        let trace = self.trace_id;
        let Some(ti) = self
            .thread_of(r.tenure)
            .filter(|&i| self.threads[i].is_open())
        else {
            Counters::add(&c.end_without_start, 1);
            return false;
        };
        while !self.threads[ti].slices.is_empty() {
            let t = &mut self.threads[ti];
            let id = match t.chain.end() {
                Ended::Closed { id, .. } => id,
                Ended::Overflowed => continue,
                Ended::Nothing | Ended::Discarded => break,
            };
            let Some(s) = t.slices.pop().filter(|s| s.id == id) else {
                debug_assert!(false, "slice data out of step with the chain");
                Counters::add(&c.records_undecodable, 1);
                break;
            };
            let name = s.name.unwrap_or(schema::ANONYMOUS);
            let rid = out.rid(&mut self.rid_attr);
            let (state, tid) = (&self.trace_state, t.tenure.meta.tid);
            out.push(|| spans::slice(trace, state, s, name, ns, Status::Unset, false, tid, rid));
        }
        let t = &mut self.threads[ti];
        t.last_ns = t.last_ns.max(ns);
        t.error = r.rec.head.flags & flag::THREAD_ERROR != 0;
        let parent = self.thread_parent();
        let (state, rid) = (&self.trace_state, &mut self.rid_attr);
        finish_thread(
            c,
            info,
            trace,
            state,
            rid,
            parent,
            &mut self.threads[ti],
            ns,
            out,
        );
        true
    }

    /// `Event`: on the thread's innermost open slice, else (counted) its thread span, else the
    /// request span; in a joined request, which has no request span here, dropped (counted).
    /// One flagged `ON_THREAD` goes to the thread span, uncounted, as its writer asked.
    pub(super) fn event(&mut self, r: &Rec<'_>) {
        if r.rec.head.flags & flag::FOR_TASK != 0 {
            return self.task_event(r);
        }
        let ev = Event::new(
            r.name.unwrap_or(schema::EVENT),
            ns_to_time(r.ns),
            Vec::new(),
            0,
        );
        let on_thread = r.rec.head.flags & flag::ON_THREAD != 0;
        let for_slice = r.rec.head.flags & flag::FOR_SLICE != 0;
        let ti = self.thread_of(r.tenure);
        let at = match ti.map(|i| &mut self.threads[i]) {
            Some(t) if for_slice && t.is_open() => {
                push_capped(
                    &mut t.waiting,
                    &mut t.dropped_events,
                    ev,
                    MAX_EVENTS_PER_SPAN,
                );
                EventAt::Waiting
            }
            Some(t) if !on_thread && !t.slices.is_empty() => {
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
            Some(t) if t.is_open() => {
                if !on_thread {
                    Counters::add(&r.c.events_without_slice, 1);
                }
                push_capped(
                    &mut t.own_events,
                    &mut t.dropped_events,
                    ev,
                    MAX_EVENTS_PER_SPAN,
                );
                EventAt::Thread
            }
            _ if self.local => {
                Counters::add(&r.c.events_without_slice, 1);
                self.events.push(ev);
                EventAt::Request
            }
            _ => {
                Counters::add(&r.c.annotations_dropped, 1);
                EventAt::None
            }
        };
        if let Some(i) = ti {
            self.threads[i].last_event = at;
        }
    }

    /// `Attr`: on the request, on the thread's last event, or on its innermost open slice
    /// (else its thread span, else the request), as the record's target says.
    pub(super) fn attr(&mut self, r: &Rec<'_>) {
        let c = r.c;
        let Some(kv) = decode_attr(r.rec, r.name) else {
            Counters::add(&c.records_undecodable, 1);
            return;
        };
        if r.rec.head.flags & flag::TASK != 0 {
            return self.task_attr(r, kv);
        }
        let target = r.rec.head.flags & flag::TARGET_MASK;
        let ti = self.thread_of(r.tenure);
        if !self.local && (target == flag::TARGET_REQUEST || ti.is_none()) {
            // No request span here: the writing thread's span takes what was meant for it.
            match ti.map(|i| &mut self.threads[i]).filter(|t| t.is_open()) {
                Some(t) => push_capped(
                    &mut t.own_attrs,
                    &mut t.dropped_attrs,
                    kv,
                    MAX_ATTRS_PER_SPAN,
                ),
                None => Counters::add(&c.annotations_dropped, 1),
            }
            return;
        }
        let (attrs, dropped) = (&mut self.attrs, &mut self.dropped_attrs);
        match (target, ti) {
            (flag::TARGET_THREAD, Some(i)) if self.threads[i].is_open() => {
                let t = &mut self.threads[i];
                push_capped(
                    &mut t.own_attrs,
                    &mut t.dropped_attrs,
                    kv,
                    MAX_ATTRS_PER_SPAN,
                )
            }
            (flag::TARGET_THREAD, _) => Counters::add(&c.annotations_dropped, 1),
            (flag::TARGET_REQUEST, _) | (_, None) => {
                push_capped(attrs, dropped, kv, MAX_ATTRS_PER_SPAN)
            }
            (flag::TARGET_EVENT, Some(i)) => {
                let t = &mut self.threads[i];
                let ev = match t.last_event {
                    EventAt::Slice(j) => t
                        .slices
                        .get_mut(j)
                        .and_then(|s| s.extras.as_mut()?.events.last_mut()),
                    EventAt::Thread => t.own_events.last_mut(),
                    EventAt::Waiting => t.waiting.last_mut(),
                    EventAt::Request => self.events.last_mut(),
                    EventAt::None => None,
                };
                match ev {
                    Some(ev) if ev.attributes.len() < MAX_ATTRS_PER_SPAN => ev.attributes.push(kv),
                    Some(ev) => ev.dropped_attributes_count += 1,
                    None => Counters::add(&c.records_undecodable, 1),
                }
            }
            (_, Some(i)) => {
                let t = &mut self.threads[i];
                match t.slices.last_mut() {
                    Some(s) => {
                        let x = s.extras();
                        push_capped(&mut x.attrs, &mut x.dropped_attrs, kv, MAX_ATTRS_PER_SPAN)
                    }
                    None if t.id != 0 => {
                        Counters::add(&c.attrs_without_slice, 1);
                        push_capped(
                            &mut t.own_attrs,
                            &mut t.dropped_attrs,
                            kv,
                            MAX_ATTRS_PER_SPAN,
                        )
                    }
                    None if self.local => {
                        Counters::add(&c.attrs_without_slice, 1);
                        push_capped(attrs, dropped, kv, MAX_ATTRS_PER_SPAN)
                    }
                    None => Counters::add(&c.annotations_dropped, 1),
                }
            }
        }
    }
}

/// Opens a slice on `t` under its innermost open slice (else its thread span). A top-level
/// slice links to the pending propagated link, else to the previous top-level slice.
fn open_slice(
    c: &Counters,
    t: &mut ThreadSpan,
    trace: u128,
    pos: u64,
    (salt, key): (Salt, u64),
    name: Option<&'static str>,
    ns: u64,
) {
    let top = t.chain.depth() == 0;
    let parent = t.chain.current().unwrap_or(t.id);
    let prev_top = t.chain.last_top();
    let Some(id) = t.chain.start_keyed(t.tenure.seed, pos, salt, key) else {
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

/// Moves the waiting events whose time falls in `s`'s interval, up to `end_ns`, onto `s`.
fn take_waiting(waiting: &mut Vec<Event>, s: &mut OpenSlice, end_ns: u64) {
    let (start, end) = (ns_to_time(s.start_ns), ns_to_time(end_ns));
    let mut i = 0;
    while i < waiting.len() {
        let t = waiting[i].timestamp;
        if start <= t && t < end {
            let ev = waiting.remove(i);
            let x = s.extras();
            push_capped(
                &mut x.events,
                &mut x.dropped_events,
                ev,
                MAX_EVENTS_PER_SPAN,
            );
        } else {
            i += 1;
        }
    }
}

pub(super) fn push_capped<T>(v: &mut Vec<T>, dropped: &mut u32, item: T, cap: usize) {
    if v.len() < cap {
        v.push(item);
    } else {
        *dropped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{sorted, Harness};
    use crate::wire::record::flag::{AUTO_NEXT_ANON, THREAD_ERROR, THREAD_FINISH};
    use crate::wire::record::flag::{TARGET_EVENT, TARGET_REQUEST, TARGET_SLICE, TARGET_THREAD};

    struct Case {
        what: &'static str,
        /// Started on thread 0 before the script, finished after it.
        rids: &'static [u64],
        script: fn(&mut Harness),
        shape: &'static [&'static str],
        /// Besides the starts and finishes.
        counted: &'static [(&'static str, u64)],
    }

    const CASES: &[Case] = &[
        Case {
            what: "events for a slice wait for the one whose interval holds them",
            rids: &[1],
            script: |h| {
                h.event_for_slice(0, 1, "early");
                h.slice(0, 1, "a");
                h.event_for_slice(0, 1, "inside");
                h.attr(0, 1, TARGET_EVENT, "n", 1);
                h.slice(0, 1, "b");
                h.end(0, 1, "b", 0);
                h.end(0, 1, "a", 0);
                h.slice(0, 1, "c");
                h.end(0, 1, "c", THREAD_FINISH);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                // `b` ends first, but "inside" came before it started.
                "a <t0 [inside{n=1}]",
                "b <a",
                "c <t0 ~a",
                "t0 < Req 1 [early]",
            ],
            counted: &[],
        },
        Case {
            what: "a thread end ends the open slices, then the thread span, in error as asked",
            rids: &[1],
            script: |h| {
                h.slice(0, 1, "a");
                h.slice(0, 1, "b");
                h.thread_event(0, 1, "queued");
                h.attr(0, 1, TARGET_THREAD, "reason", 7);
                h.thread_end(0, 1, THREAD_ERROR);
                // A later slice opens a new thread span; the chain goes on from `a`.
                h.slice(0, 1, "c");
                h.end(0, 1, "c", 0);
                h.thread_end(0, 1, 0);
                h.thread_end(0, 1, 0);
                h.attr(0, 1, TARGET_THREAD, "late", 1);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "a <t0",
                "b <a",
                "c <t0 ~a",
                "t0 < Req 1",
                "t0 < Req 1 {reason=7} [queued] !",
            ],
            counted: &[("end_without_start", 1), ("annotations_dropped", 1)],
        },
        Case {
            what: "plain slice",
            rids: &[1],
            script: |h| {
                h.slice(0, 1, "prefill");
                h.end(0, 1, "prefill", 0);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "prefill <t0",
                "t0 < Req 1",
            ],
            counted: &[],
        },
        Case {
            what: "nested, then a top-level slice linked to the one before",
            rids: &[1],
            script: |h| {
                h.slice(0, 1, "a");
                h.slice(0, 1, "b");
                h.end(0, 1, "b", 0);
                h.end(0, 1, "a", 0);
                h.slice(0, 1, "c");
                h.end(0, 1, "c", 0);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "a <t0",
                "b <a",
                "c <t0 ~a",
                "t0 < Req 1",
            ],
            counted: &[],
        },
        Case {
            what: "anonymous slices named at their end, innermost first",
            rids: &[1],
            script: |h| {
                h.anon(0, 1);
                h.anon(0, 1);
                h.end(0, 1, "inner", 0);
                h.end(0, 1, "outer", 0);
                h.anon(0, 1);
                h.end(0, 1, "", 0);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "anonymous <t0 ~outer",
                "inner <outer",
                "outer <t0",
                "t0 < Req 1",
            ],
            counted: &[],
        },
        Case {
            what: "an end that opens the next anonymous slice",
            rids: &[1],
            script: |h| {
                h.slice(0, 1, "prefill");
                h.end(0, 1, "prefill", AUTO_NEXT_ANON);
                h.end(0, 1, "decode", AUTO_NEXT_ANON);
                h.end(0, 1, "decode", 0);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "decode <t0 ~decode",
                "decode <t0 ~prefill",
                "prefill <t0",
                "t0 < Req 1",
            ],
            counted: &[],
        },
        Case {
            what: "batch items: one ends its thread span, the other goes on anonymously",
            rids: &[1, 2],
            script: |h| {
                h.anon(0, 1);
                h.anon(0, 2);
                h.batch(0, "step", &[(1, false), (2, true)]);
                h.end(0, 1, "next", 0);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                " Req 2 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "next <t0 ~step",
                "step <t0",
                "step <t0",
                "t0 < Req 1",
                "t0 < Req 2",
            ],
            counted: &[],
        },
        Case {
            what: "thread finish closes what is open; a later slice opens a new thread span",
            rids: &[1],
            script: |h| {
                h.slice(0, 1, "a");
                h.slice(0, 1, "b");
                h.end(0, 1, "b", THREAD_FINISH);
                h.slice(0, 1, "c");
                h.end(0, 1, "c", 0);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "a <t0 ! unfinished",
                "b <a",
                "c <t0 ~a",
                "t0 < Req 1",
                "t0 < Req 1",
            ],
            counted: &[("slices_unfinished", 1)],
        },
        Case {
            what: "events and attributes land where their target says",
            rids: &[1],
            script: |h| {
                h.event(0, 1, "e0");
                h.attr(0, 1, TARGET_EVENT, "k", 1);
                h.slice(0, 1, "a");
                h.event(0, 1, "e1");
                h.attr(0, 1, TARGET_EVENT, "k", 2);
                h.attr(0, 1, TARGET_SLICE, "s", 3);
                h.attr(0, 1, TARGET_REQUEST, "r", 4);
                h.end(0, 1, "a", 0);
                h.attr(0, 1, TARGET_SLICE, "t", 5);
                // A thread with no span of the request puts both on the request.
                h.event(1, 1, "e2");
                h.attr_str(1, 1, TARGET_EVENT, "q", "x");
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0 {r=4,q=x} [e2]",
                "Bootstrap Room 0x0 <-",
                "a <t0 {s=3} [e1{k=2}]",
                "t0 < Req 1 {t=5} [e0{k=1}]",
            ],
            counted: &[("events_without_slice", 2), ("attrs_without_slice", 1)],
        },
        Case {
            what: "an end named otherwise than its start keeps the start's name, with an error",
            rids: &[1],
            script: |h| {
                h.slice(0, 1, "prefill");
                h.end(0, 1, "decode", 0);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "prefill <t0 !",
                "t0 < Req 1",
            ],
            counted: &[("name_mismatches", 1)],
        },
        Case {
            what: "an end with nothing open is counted; its thread finish still applies",
            rids: &[1],
            script: |h| {
                h.end(0, 1, "ghost", THREAD_FINISH);
                h.event(0, 1, "after");
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0 [after]",
                "Bootstrap Room 0x0 <-",
                "t0 < Req 1",
            ],
            counted: &[("end_without_start", 1), ("events_without_slice", 1)],
        },
        Case {
            what: "a slice left open when the request ends",
            rids: &[1],
            script: |h| {
                h.slice(0, 1, "a");
                h.propagate(0, 1);
            },
            shape: &[
                " Req 1 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "a <t0 ! unfinished",
                "t0 < Req 1",
            ],
            counted: &[("slices_unfinished", 1), ("propagations", 1)],
        },
    ];

    #[test]
    fn slice_records_rebuild_their_tree() {
        for k in CASES {
            let mut h = Harness::new();
            for &rid in k.rids {
                h.start(0, rid);
            }
            (k.script)(&mut h);
            for &rid in k.rids {
                h.finish(0, rid);
            }
            h.advance(20);
            h.housekeeping(false);
            assert_eq!(h.tree.open_requests(), 0, "{}", k.what);
            assert_eq!(h.shape(), sorted(k.shape), "{}", k.what);
            let n = k.rids.len() as u64;
            let mut counted = vec![("requests_started", n), ("requests_finished", n)];
            counted.extend_from_slice(k.counted);
            let mut got = h.counted();
            got.sort();
            counted.sort();
            assert_eq!(got, counted, "{}", k.what);
        }
    }

    #[test]
    fn a_request_without_a_room_span_hangs_under_its_upstream_or_is_a_root() {
        use super::super::testing::Upstream;
        use crate::wire::record::flag::{NO_ROOM_SPAN, UPSTREAM};
        let mut h = Harness::new();
        h.start_with(0, 1, NO_ROOM_SPAN, 0, None, None, "");
        let up = Upstream {
            trace_id: 0xfeed,
            link: 0,
            extra: 0x66,
        };
        h.start_with(1, 2, NO_ROOM_SPAN | UPSTREAM, 0, Some(up), None, "");
        for (th, rid) in [(0, 1), (1, 2)] {
            h.slice(th, rid, "s");
            h.end(th, rid, "s", 0);
            h.finish(th, rid);
        }
        h.advance(20);
        h.housekeeping(false);
        assert_eq!(
            h.shape(),
            sorted(&[
                " Req 1 <-",
                " Req 2 <?66",
                "s <t0",
                "s <t1",
                "t0 < Req 1",
                "t1 < Req 2"
            ])
        );
        let trace = h.span(" Req 2").span_context.trace_id();
        assert_eq!(trace, opentelemetry::trace::TraceId::from(0xfeed_u128));
    }

    #[test]
    fn a_request_its_upstream_did_not_sample_closes_and_exports_nothing() {
        use super::super::testing::{Upstream, NOT_SAMPLED};
        use crate::wire::record::flag::UPSTREAM;
        let mut h = Harness::new();
        let up = Upstream {
            trace_id: 0xfeed,
            link: 0,
            extra: 0x66,
        };
        h.start_with(0, 1, UPSTREAM | NOT_SAMPLED, 0, Some(up), None, "");
        h.start(0, 2);
        for rid in [1, 2] {
            h.slice(0, rid, "s");
            h.event(0, rid, "e");
            h.end(0, rid, "s", THREAD_FINISH);
            h.finish(0, rid);
        }
        h.advance(20);
        h.housekeeping(false);
        assert_eq!(h.tree.open_requests(), 0);
        assert_eq!(
            h.shape(),
            sorted(&[
                " Req 2 <Bootstrap Room 0x0",
                "Bootstrap Room 0x0 <-",
                "s <t0 [e]",
                "t0 < Req 2"
            ])
        );
        let mut got = h.counted();
        got.sort();
        assert_eq!(
            got,
            [
                ("requests_finished", 2),
                ("requests_sampled_out", 1),
                ("requests_started", 2)
            ]
        );
    }

    #[test]
    fn slices_nested_past_the_limit_are_dropped_and_counted() {
        let mut h = Harness::new();
        h.start(0, 1);
        let deep = crate::slice_chain::MAX_DEPTH + 2;
        for _ in 0..deep {
            h.slice(0, 1, "deep");
        }
        for _ in 0..deep {
            h.end(0, 1, "deep", 0);
        }
        h.finish(0, 1);
        h.housekeeping(true);
        let kept = h.spans().iter().filter(|s| s.name == "deep").count();
        assert_eq!(kept, crate::slice_chain::MAX_DEPTH);
        assert_eq!(h.c.snapshot().slices_dropped_depth, 2);
        assert_eq!(h.c.snapshot().end_without_start, 0);
    }
}
