//! Calls in the wrong order, unknown ids and abandoned requests: each has a defined, documented
//! outcome (docs/api.md, "Defined outcomes"), asserted here.

mod common;

use common::*;
use opentelemetry::Value;
use slicetrace::options::{Opts, UnixNanos};
use slicetrace::{name, Attr, End, Rid};
use std::time::Duration;

#[test]
fn end_with_nothing_open_is_counted_and_thread_finish_still_applies() {
    let mut s = session();
    let rid = slicetrace::req_start("r-end", None);
    slicetrace::slice_end(name!("ghost"), rid, End::THREAD_FINISH);
    std::thread::sleep(Duration::from_millis(2));
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(stats.end_without_start, 1);
    assert!(t.named("ghost").is_empty());
    let req = t.one(" Req r-end");
    let th = &t.children(req)[0];
    assert!(
        th.end_time < req.end_time,
        "thread_finish ended the thread span early"
    );
}

#[test]
fn name_mismatch_keeps_the_start_name_with_error_status() {
    let mut s = session();
    let rid = slicetrace::req_start("r-mis", None);
    slicetrace::slice_start(name!("prefill"), rid);
    slicetrace::slice_end(name!("decode"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    let p = t.one("prefill");
    assert!(is_error(p));
    assert!(t.named("decode").is_empty());
    assert_eq!(stats.name_mismatches, 1);
}

#[test]
fn nested_anonymous_slices_are_named_innermost_first() {
    let mut s = session();
    let rid = slicetrace::req_start("r-anon", None);
    slicetrace::slice_start_anon(rid);
    slicetrace::slice_start_anon(rid);
    slicetrace::slice_end(name!("inner"), rid, End::PLAIN);
    slicetrace::slice_end(name!("outer"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();
    let outer = t.one("outer");
    let inner = t.one("inner");
    assert_eq!(parent(inner), sid(outer));
    assert!(!is_error(inner) && !is_error(outer));
}

#[test]
fn records_of_an_unknown_rid_are_dropped_and_counted() {
    let mut s = session();
    let ghost = Rid::from("never-started");
    slicetrace::slice_start(name!("orphan"), ghost);
    slicetrace::slice_end(name!("orphan"), ghost, End::PLAIN);
    slicetrace::event(name!("orphan-event"), ghost);
    assert_eq!(slicetrace::propagate_context(ghost), None);
    std::thread::sleep(Duration::from_millis(250));
    let t = s.trace();
    assert!(t.spans.is_empty(), "{}", t.names());
    let stats = slicetrace::stats();
    assert_eq!(stats.unknown_rid_records, 3);
    assert_eq!(stats.propagate_unknown, 1);
    s.finish();
}

#[test]
fn records_that_arrive_before_their_request_wait_for_it() {
    // Another thread slices the request before the drainer has seen its start: the drainer
    // keeps those records until the start arrives.
    let mut s = session();
    let rid = Rid::from("r-early");
    std::thread::spawn(move || {
        slicetrace::slice_start(name!("early"), rid);
        slicetrace::slice_end(name!("early"), rid, End::THREAD_FINISH);
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    slicetrace::req_start("r-early", None);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(stats.unknown_rid_records, 0);
    let early = t.one("early");
    let th = t.find(parent(early)).unwrap();
    assert_eq!(parent(th), sid(t.one(" Req r-early")));
}

#[test]
fn req_start_twice_closes_the_first_as_unfinished() {
    let mut s = session();
    let rid = slicetrace::req_start("r-twice", None);
    slicetrace::slice_start(name!("first"), rid);
    slicetrace::req_start("r-twice", None);
    slicetrace::slice_start(name!("second"), rid);
    slicetrace::slice_end(name!("second"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(stats.requests_restarted, 1);
    let reqs = t.named(" Req r-twice");
    assert_eq!(reqs.len(), 2);
    assert!(is_error(reqs[0]) && unfinished(reqs[0]));
    assert!(!is_error(reqs[1]));
    assert_ne!(tid(reqs[0]), tid(reqs[1]), "each start is its own trace");
    let first = t.one("first");
    assert!(unfinished(first) && is_error(first));
    assert_eq!(tid(first), tid(reqs[0]));
    assert_eq!(tid(t.one("second")), tid(reqs[1]));
}

#[test]
fn req_finish_closes_open_slices_as_unfinished() {
    let mut s = session();
    let rid = slicetrace::req_start("r-open", None);
    slicetrace::slice_start(name!("outer"), rid);
    slicetrace::slice_start(name!("inner"), rid);
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(stats.slices_unfinished, 2);
    let req = t.one(" Req r-open");
    for n in ["outer", "inner"] {
        let sl = t.one(n);
        assert!(unfinished(sl) && is_error(sl), "{n}");
        assert_eq!(sl.end_time, req.end_time);
    }
    assert_eq!(parent(t.one("inner")), sid(t.one("outer")));
    assert!(!is_error(req));
}

#[test]
fn idle_requests_are_evicted_as_unfinished() {
    let mut s = session_with(|mut c| {
        c.idle_timeout = Duration::from_millis(50);
        c
    });
    let rid = slicetrace::req_start("r-idle", None);
    slicetrace::slice_start(name!("stuck"), rid);
    std::thread::sleep(Duration::from_millis(200));
    let t = s.trace();
    let req = t.one(" Req r-idle");
    assert!(is_error(req) && unfinished(req));
    assert!(unfinished(t.one("stuck")));
    let stats = slicetrace::stats();
    assert_eq!(stats.requests_evicted, 1);
    assert_eq!(stats.requests_open, 0);
    s.finish();
}

#[test]
fn open_request_cap_refuses_and_counts() {
    let mut s = session_with(|mut c| {
        c.max_open_requests = 2;
        c
    });
    for i in 0..4u64 {
        slicetrace::req_start(i, None);
    }
    let (t, stats) = s.finish();
    assert_eq!(stats.requests_rejected, 2);
    assert_eq!(t.starting_with(" Req ").len(), 2);
}

#[test]
fn shutdown_exports_open_requests_as_unfinished() {
    let mut s = session();
    let rid = slicetrace::req_start("r-shut", None);
    slicetrace::slice_start(name!("running"), rid);
    let (t, _) = s.finish();
    assert!(unfinished(t.one(" Req r-shut")));
    assert!(unfinished(t.one("running")));
}

#[test]
fn events_and_attributes_land_where_recorded() {
    static TOKENS: slicetrace::Name = slicetrace::Name::new("tokens");
    static RATIO: slicetrace::Name = slicetrace::Name::new("ratio");
    static CACHED: slicetrace::Name = slicetrace::Name::new("cached");
    static MODEL: slicetrace::Name = slicetrace::Name::new("model");
    static STATUS: slicetrace::Name = slicetrace::Name::new("status");
    let mut s = session();
    let rid = slicetrace::req_start("r-attrs", None);
    slicetrace::slice_start(name!("prefill"), rid);
    slicetrace::slice_add_attr(rid, &[Attr::new(&TOKENS, 512i64)]);
    slicetrace::options::event_with(
        name!("cache hit"),
        rid,
        Opts::attrs(&[Attr::new(&CACHED, true), Attr::new(&MODEL, "llama-3-8b")]),
    );
    slicetrace::options::slice_end_with(
        name!("prefill"),
        rid,
        End::PLAIN,
        Opts::attrs(&[Attr::new(&RATIO, 0.25)]),
    );
    slicetrace::event(name!("outside"), rid);
    let long = "x".repeat(1000);
    slicetrace::options::req_finish_with(rid, Opts::attrs(&[Attr::new(&STATUS, long.as_str())]));
    let (t, _) = s.finish();
    let p = t.one("prefill");
    assert_eq!(attr(p, "tokens"), Some(Value::I64(512)));
    assert_eq!(attr(p, "ratio"), Some(Value::F64(0.25)));
    assert_eq!(p.events.len(), 1);
    let ev = &p.events[0];
    assert_eq!(ev.name, "cache hit");
    assert!(p.start_time <= ev.timestamp && ev.timestamp <= p.end_time);
    let evattr: Vec<_> = ev
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str().to_owned(), kv.value.clone()))
        .collect();
    assert_eq!(
        evattr,
        [
            ("cached".to_owned(), Value::Bool(true)),
            ("model".to_owned(), Value::from("llama-3-8b"))
        ]
    );
    let req = t.one(" Req r-attrs");
    let th = t.children(req)[0];
    assert_eq!(
        th.events.len(),
        1,
        "an event outside any slice goes to the thread span"
    );
    assert_eq!(th.events[0].name, "outside");
    match attr(req, "status") {
        Some(Value::String(v)) => assert_eq!(v.as_str().len(), slicetrace::limits::MAX_STR_BYTES),
        other => panic!("{other:?}"),
    }
}

#[test]
fn array_attributes_arrive_as_arrays_on_every_target() {
    use opentelemetry::{Array, StringValue};
    static REASONS: slicetrace::Name = slicetrace::Name::new("gen_ai.response.finish_reasons");
    static STEPS: slicetrace::Name = slicetrace::Name::new("steps");
    static SCORES: slicetrace::Name = slicetrace::Name::new("scores");
    static HITS: slicetrace::Name = slicetrace::Name::new("hits");
    static WORDS: slicetrace::Name = slicetrace::Name::new("words");
    let mut s = session();
    let rid = slicetrace::req_start("r-arrays", None);
    slicetrace::options::thread_add_attr(rid, &[Attr::new(&HITS, &[true, false][..])]);
    slicetrace::slice_start(name!("decode"), rid);
    slicetrace::options::event_with(
        name!("scored"),
        rid,
        Opts::attrs(&[Attr::new(&SCORES, &[0.5, -1.25][..])]),
    );
    slicetrace::slice_add_attr(rid, &[Attr::new(&STEPS, &[1i64, 2, 3][..])]);
    slicetrace::slice_end(name!("decode"), rid, End::PLAIN);
    // More than an array may carry: its leading elements that fit whole.
    let many = vec!["0123456789"; 200];
    slicetrace::options::req_finish_with(
        rid,
        Opts::attrs(&[
            Attr::new(&REASONS, &["stop"][..]),
            Attr::new(&WORDS, many.as_slice()),
        ]),
    );
    let (t, _) = s.finish();
    let d = t.one("decode");
    assert_eq!(
        attr(d, "steps"),
        Some(Value::Array(Array::I64(vec![1, 2, 3])))
    );
    assert_eq!(
        d.events[0].attributes[0].value,
        Value::Array(Array::F64(vec![0.5, -1.25]))
    );
    let req = t.one(" Req r-arrays");
    assert_eq!(
        attr(req, "gen_ai.response.finish_reasons"),
        Some(Value::Array(Array::String(vec!["stop".into()])))
    );
    let fit = slicetrace::limits::MAX_ARRAY_BYTES / (2 + 10);
    let want: Vec<StringValue> = vec!["0123456789".into(); fit];
    assert_eq!(attr(req, "words"), Some(Value::Array(Array::String(want))));
    let th = t.children(req)[0];
    assert_eq!(
        attr(th, "hits"),
        Some(Value::Array(Array::Bool(vec![true, false])))
    );
}

#[test]
fn explicit_timestamps_are_kept_exactly() {
    let mut s = session();
    let base = UnixNanos::now().0 - 1_000_000_000;
    let rid = slicetrace::options::req_start_with(
        "r-ts",
        slicetrace::options::ReqStart {
            ts: Some(UnixNanos(base)),
            ..Default::default()
        },
    );
    slicetrace::options::slice_start_at(Some(name!("timed")), rid, UnixNanos(base + 100));
    slicetrace::options::slice_end_with(
        name!("timed"),
        rid,
        End::PLAIN,
        Opts::at(UnixNanos(base + 350)),
    );
    slicetrace::options::req_finish_with(rid, Opts::at(UnixNanos(base + 1000)));
    let (t, _) = s.finish();
    let sl = t.one("timed");
    assert_eq!(nanos(sl.start_time), base as u128 + 100);
    assert_eq!(nanos(sl.end_time), base as u128 + 350);
    let req = t.one(" Req r-ts");
    assert_eq!(nanos(req.start_time), base as u128);
    assert_eq!(nanos(req.end_time), base as u128 + 1000);
}

#[test]
fn unregistered_threads_are_traced_under_their_thread_name() {
    let mut s = session();
    let rid = slicetrace::req_start("r-anon-thread", None);
    let ctx = slicetrace::propagate_context(rid).unwrap();
    std::thread::Builder::new()
        .name("worker-7".into())
        .spawn(move || {
            slicetrace::set_propagate_context(rid, &ctx);
            slicetrace::slice_start(name!("work"), rid);
            slicetrace::slice_end(name!("work"), rid, End::PLAIN);
        })
        .unwrap()
        .join()
        .unwrap();
    slicetrace::req_finish(rid);
    let (t, _) = s.finish();
    let th = t.find(parent(t.one("work"))).unwrap();
    assert!(th.name.starts_with("worker-7(host:"), "{}", th.name);
    assert_eq!(attr(th, "thread.name"), Some(Value::from("worker-7")));
}

#[test]
fn disabled_calls_record_nothing() {
    let mut s = session();
    s.guard.take().unwrap().shutdown();
    assert!(!slicetrace::is_enabled());
    let rid = slicetrace::req_start("off", None);
    slicetrace::slice_start(name!("off"), rid);
    assert_eq!(slicetrace::propagate_context(rid), None);
    s.guard = Some(slicetrace::init(config().exporter(s.exporter.clone())).unwrap());
    let (t, stats) = s.finish();
    assert!(t.spans.is_empty());
    assert_eq!(stats.records_written, 0);
    assert_eq!(stats.records_stale, 0);
}

#[test]
fn a_second_init_is_refused() {
    let mut s = session();
    let again = slicetrace::init(config().exporter(Collect::default()));
    assert!(matches!(again, Err(slicetrace::InitError::AlreadyRunning)));
    s.finish();
    assert!(matches!(
        slicetrace::init(config()),
        Err(slicetrace::InitError::NoExporter)
    ));
}

#[test]
fn a_full_ring_drops_whole_calls_and_counts_every_record() {
    let mut s = session_with(|mut c| {
        c.ring_capacity = 64;
        c.sweep_interval = Duration::from_millis(50);
        c
    });
    const PAIRS: u64 = 20_000;
    let (written, dropped) = std::thread::spawn(|| {
        let rid = slicetrace::req_start(7u64, None);
        for _ in 0..PAIRS {
            slicetrace::slice_start(name!("tight"), rid);
            slicetrace::slice_end(name!("tight"), rid, End::PLAIN);
        }
        slicetrace::req_finish(rid);
        let st = slicetrace::stats();
        (st.records_written, st.records_dropped_ring_full)
    })
    .join()
    .unwrap();
    let (t, stats) = s.finish();
    let attempted = 2 * PAIRS + 2;
    assert!(
        dropped > 0,
        "a 64-record ring cannot hold {attempted} records"
    );
    assert_eq!(written + dropped, attempted);
    assert_eq!(stats.records_read, stats.records_written);
    assert_eq!(
        stats.records_written + stats.records_dropped_ring_full,
        attempted
    );
    // Whatever was kept still forms a well-formed tree (checked by Trace::new), and a slice is
    // exported for each start kept: a dropped start or end leaves a counted outcome, never a
    // phantom slice nor a lost one.
    let tight = t.named("tight");
    let unfinished = tight.iter().filter(|s| unfinished(s)).count() as u64;
    assert_slice_records_accounted(&stats, 1, tight.len() as u64, unfinished);
}

#[test]
fn shutdown_while_threads_still_trace_neither_hangs_nor_panics() {
    let mut s = session();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let rid = slicetrace::req_start((t << 40) | n, None);
                    slicetrace::slice_start(name!("busy"), rid);
                    let _ = slicetrace::propagate_context(rid);
                    slicetrace::slice_end(name!("busy"), rid, End::PLAIN);
                    slicetrace::req_finish(rid);
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let t = std::time::Instant::now();
    let (_, stats) = s.finish();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(!slicetrace::is_enabled());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(done > 0);
    assert!(stats.spans_exported > 0);
}

/// Calls made before their request's start wait for it, then land in its spans with their own
/// times: the thread span reaches back to cover them (found by the API-sequence fuzzer).
#[test]
fn calls_before_the_requests_start_land_inside_its_spans() {
    let mut s = session();
    let rid = slicetrace::Rid(0xEA21);
    slicetrace::slice_start_anon(rid);
    std::thread::sleep(Duration::from_millis(2));
    slicetrace::req_start(rid, None);
    slicetrace::slice_end(name!("early"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
    // Trace::new checks every span lies inside its parent.
    let (t, stats) = s.finish();
    let early = t.one("early");
    let thread = t.find(parent(early)).unwrap();
    assert!(thread.start_time <= early.start_time);
    assert_eq!(stats.unknown_rid_records, 0);
}

/// What the late-answering sink below was handed and failed.
#[derive(Default)]
struct Handed {
    spans: u64,
    failed_spans: u64,
    failed_batches: u64,
    held_at_flush: usize,
}

/// A sink with batches in flight: it answers each batch only once two newer ones are waiting,
/// or when told to settle, or (with `answers_when_polled`) when polled; every third batch fails.
struct LateSink {
    held: std::collections::VecDeque<slicetrace::export::Outcome>,
    handed: std::sync::Arc<std::sync::Mutex<Handed>>,
    batches: u64,
    answers_when_polled: bool,
}

impl slicetrace::export::Sink for LateSink {
    fn export(&mut self, _: Vec<opentelemetry_sdk::trace::SpanData>) -> Result<(), String> {
        Err("batches come through submit".into())
    }
    fn set_resource(&mut self, _: &opentelemetry_sdk::Resource) {}
    fn shutdown(&mut self, _: Duration) -> Result<(), String> {
        self.handed.lock().unwrap().held_at_flush = self.held.len();
        Ok(())
    }
    fn submit(
        &mut self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> Vec<slicetrace::export::Outcome> {
        let n = batch.len() as u64;
        self.batches += 1;
        let fails = self.batches % 3 == 0;
        {
            let mut h = self.handed.lock().unwrap();
            h.spans += n;
            if fails {
                h.failed_spans += n;
                h.failed_batches += 1;
            }
        }
        self.held
            .push_back((n, if fails { Err("refused".into()) } else { Ok(()) }));
        let mut answered = Vec::new();
        while self.held.len() > 2 {
            answered.extend(self.held.pop_front());
        }
        answered
    }
    fn settle(&mut self) -> Vec<slicetrace::export::Outcome> {
        self.held.drain(..).collect()
    }
    fn poll(&mut self) -> Vec<slicetrace::export::Outcome> {
        if self.answers_when_polled {
            self.held.drain(..).collect()
        } else {
            Vec::new()
        }
    }
}

fn late_sink(handed: &std::sync::Arc<std::sync::Mutex<Handed>>, polled: bool) -> LateSink {
    LateSink {
        held: Default::default(),
        handed: handed.clone(),
        batches: 0,
        answers_when_polled: polled,
    }
}

/// Ten requests of five slices each: 80 spans (with a thread, a request and a room span each).
fn ten_requests(first: u64) {
    for r in 0..10 {
        let rid = slicetrace::req_start(Rid(first + r), None);
        for _ in 0..5 {
            slicetrace::slice_start(name!("step"), rid);
            slicetrace::slice_end(name!("step"), rid, End::PLAIN);
        }
        slicetrace::req_finish(rid);
    }
}

#[test]
fn batches_answered_late_are_counted_exactly_by_each_flush() {
    let handed = std::sync::Arc::new(std::sync::Mutex::new(Handed::default()));
    let mut cfg = config().sink(Box::new(late_sink(&handed, false)));
    cfg.max_export_batch = 4;
    let mut s = session_using(cfg);
    ten_requests(900);
    // A flush counts as done only once the sink has answered for every batch before it.
    assert!(s.guard.as_ref().unwrap().flush(Duration::from_secs(10)));
    let stats = s.guard.as_ref().unwrap().stats();
    {
        let h = handed.lock().unwrap();
        // Five slices, a thread span, a request span and a room span per request.
        assert_eq!(h.spans, 80);
        assert!(h.failed_batches > 0);
        assert_eq!(stats.spans_exported, h.spans - h.failed_spans);
        assert_eq!(stats.spans_export_failed, h.failed_spans);
        assert_eq!(stats.export_errors, h.failed_batches);
    }
    let (_, stats) = s.finish();
    assert_eq!(stats.spans_exported + stats.spans_export_failed, 80);
    assert_eq!(handed.lock().unwrap().held_at_flush, 0);
}

/// Answers that come while no more spans do are counted without a flush: the idle export
/// thread polls the sink.
#[test]
fn batches_answered_while_idle_are_counted_without_a_flush() {
    let handed = std::sync::Arc::new(std::sync::Mutex::new(Handed::default()));
    let mut cfg = config().sink(Box::new(late_sink(&handed, true)));
    cfg.max_export_batch = 4;
    let mut s = session_using(cfg);
    ten_requests(950);
    let t = std::time::Instant::now();
    let stats = loop {
        let stats = s.guard.as_ref().unwrap().stats();
        if stats.spans_exported + stats.spans_export_failed == 80
            || t.elapsed() > Duration::from_secs(10)
        {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    {
        let h = handed.lock().unwrap();
        assert_eq!(h.spans, 80);
        assert_eq!(stats.spans_exported, h.spans - h.failed_spans);
        assert_eq!(stats.spans_export_failed, h.failed_spans);
        assert_eq!(stats.export_errors, h.failed_batches);
    }
    let (_, stats) = s.finish();
    assert_eq!(stats.spans_exported + stats.spans_export_failed, 80);
}

/// `UnixNanos(0)`, the reference's `ts=0`, means now: the call reads the clock.
#[test]
fn a_zero_timestamp_means_now() {
    let mut s = session();
    let before = UnixNanos::now().0 as u128;
    let rid = slicetrace::options::req_start_with(
        "r-ts-zero",
        slicetrace::options::ReqStart {
            ts: Some(UnixNanos(0)),
            ..Default::default()
        },
    );
    slicetrace::options::slice_start_at(Some(name!("zero")), rid, UnixNanos(0));
    slicetrace::options::slice_end_with(name!("zero"), rid, End::PLAIN, Opts::at(UnixNanos(0)));
    slicetrace::options::req_finish_with(rid, Opts::at(UnixNanos(0)));
    let after = UnixNanos::now().0 as u128;
    let (t, _) = s.finish();
    for name in [" Req r-ts-zer", "zero"] {
        let sp = t.one(name);
        let (start, end) = (nanos(sp.start_time), nanos(sp.end_time));
        // Clock ticks become wall time by a calibration that may be off by a few microseconds.
        let slack = 1_000_000;
        assert!(start + slack >= before && end <= after + slack, "{name}");
        assert!(start <= end, "{name}");
    }
}

#[test]
fn a_thread_end_closes_the_threads_slices_and_marks_its_span_as_asked() {
    use slicetrace::options::{self, ThreadEnd, ThreadInfo};
    let mut s = session();
    options::set_thread_info_with(ThreadInfo {
        label: "Scheduler",
        tp_rank: Some(0),
        dp_rank: Some(1),
        pp_rank: Some(2),
        all_ranks_in_name: true,
    });
    let up = slicetrace::PropagateContext::from_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .unwrap();
    let rid = options::req_start_with(
        "r-abort",
        options::ReqStart {
            parent: Some(&up),
            no_room_span: true,
            ..options::ReqStart::default()
        },
    );
    options::req_add_attr(rid, &[Attr::new(name!("module"), "sglang::request")]);
    slicetrace::slice_start(name!("outer"), rid);
    slicetrace::slice_start(name!("inner"), rid);
    options::thread_event_with(name!("retract"), rid, Opts::default());
    options::thread_add_attr(rid, &[Attr::new(name!("batch"), 4i64)]);
    let at = UnixNanos(UnixNanos::now().0 + 1_000);
    options::thread_end_with(
        rid,
        ThreadEnd {
            ts: Some(at),
            error: true,
            attrs: &[Attr::new(name!("reason"), "client left")],
        },
    );
    // Nothing of this thread is open now: counted, not applied to the next thread span.
    options::thread_end_with(rid, ThreadEnd::default());
    slicetrace::req_finish(rid);
    let (t, stats) = s.finish();
    assert_eq!(stats.end_without_start, 1);
    assert_eq!(stats.slices_unfinished, 0);
    assert!(
        t.starting_with("Bootstrap Room").is_empty(),
        "{}",
        t.names()
    );
    let req = t.one(" Req r-abort");
    assert_eq!(parent(req), 0x00f0_67aa_0ba9_02b7);
    assert_eq!(attr(req, "module"), Some(Value::from("sglang::request")));
    let only = t.children(req)[0];
    let th = t.one(&format!(
        "Scheduler [TP 0]  [PP 2]  [DP 1] (host:{} | pid:{})",
        &attr(only, "host_id").unwrap().as_str()[..8],
        attr(only, "pid").unwrap()
    ));
    assert!(is_error(th));
    assert_eq!(attr(th, "reason"), Some(Value::from("client left")));
    assert_eq!(attr(th, "batch"), Some(Value::I64(4)));
    assert_eq!(attr(th, "pp_rank"), Some(Value::I64(2)));
    assert_eq!(th.events.events[0].name, "retract");
    for name in ["outer", "inner"] {
        let sl = t.one(name);
        assert!(
            !is_error(sl) && !unfinished(sl),
            "{name} ended, not unfinished"
        );
        assert_eq!(sl.end_time, th.end_time);
    }
    assert_eq!(nanos(th.end_time), at.0 as u128);
}
