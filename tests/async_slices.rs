//! Async slices on tokio's multi-thread runtime: futures that move between worker threads at
//! their awaits, nested, cancelled, and mixed with thread-bound slices; and the scoped
//! thread-bound slice.

mod common;

use common::*;
use opentelemetry::Value;
use slicetrace::{name, AsyncSlice, Attr, InSlice, Name, Rid};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn gettid() -> i64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() as i64 }
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_time()
        .build()
        .unwrap()
}

fn int(s: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(Value::I64(v)) => Some(v),
        _ => None,
    }
}

/// Where one task's futures ran: the OS thread of the handler's first and last poll.
type Seen = Arc<Mutex<HashMap<String, (i64, i64)>>>;

async fn handler(rid: Rid, i: usize, text: String, seen: Seen) {
    let first = gettid();
    // A thread-bound slice with no await inside it stays on the worker's thread span.
    {
        let _s = slicetrace::slice(name!("parse"), rid);
    }
    tokio::task::yield_now().await;
    async {
        tokio::time::sleep(Duration::from_millis(1 + (i % 3) as u64)).await;
        if i % 2 == 0 {
            // Keeps this worker busy, so that the other one takes the woken tasks.
            std::thread::sleep(Duration::from_millis(2));
        }
        tokio::task::yield_now().await;
    }
    .in_slice(name!("pick_worker"), rid)
    .await;
    let held = AsyncSlice::start(name!("forward"), rid);
    held.add_attrs(&[Attr::new(name!("attempt"), 1i64)]);
    tokio::time::sleep(Duration::from_millis(1)).await;
    held.event(name!("first_byte"));
    tokio::task::yield_now().await;
    drop(held);
    seen.lock().unwrap().insert(text, (first, gettid()));
}

/// Runs `tasks` handlers at once, each its own request `async-{round}-{i}`.
fn run_round(rt: &tokio::runtime::Runtime, round: usize, tasks: usize, seen: &Seen) {
    rt.block_on(async {
        let mut joins = Vec::new();
        for i in 0..tasks {
            let seen = seen.clone();
            joins.push(tokio::spawn(async move {
                let text = format!("async-{round}-{i}");
                let rid = slicetrace::req_start(text.as_str(), None);
                handler(rid, i, text, seen)
                    .in_slice(name!("handle"), rid)
                    .await;
                slicetrace::req_finish(rid);
            }));
        }
        for j in joins {
            j.await.unwrap();
        }
    });
}

#[test]
fn async_slices_follow_their_futures_across_worker_threads() {
    let mut s = session();
    let seen: Seen = Arc::default();
    let tasks = 24;
    let rt = runtime(2);
    // Whether a task moves is the scheduler's choice: rounds until some did (one, nearly
    // always), each checked alike.
    let mut rounds = 0;
    while rounds < 10 {
        run_round(&rt, rounds, tasks, &seen);
        rounds += 1;
        if seen.lock().unwrap().values().any(|(a, b)| a != b) {
            break;
        }
    }
    drop(rt);
    let (trace, stats) = s.finish();
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
    assert_eq!(stats.slices_unfinished, 0, "{stats:?}");
    assert_eq!(stats.records_dropped_ring_full, 0, "{stats:?}");
    let seen = seen.lock().unwrap();
    let mut migrated = 0;
    for req in trace.starting_with(" Req async-") {
        let rid = attr(req, "rid").unwrap().to_string();
        let kids = trace.children(req);
        let handle: Vec<_> = kids.iter().filter(|k| k.name == "handle").collect();
        assert_eq!(handle.len(), 1, "{rid}: one handle slice under the request");
        let handle = handle[0];
        assert!(!unfinished(handle) && !is_error(handle), "{rid}");
        assert_eq!(
            trace.child_names(handle),
            ["pick_worker", "forward"],
            "{rid}: the handler's async slices nest under its own"
        );
        let forward = trace.children(handle)[1];
        assert_eq!(int(forward, "attempt"), Some(1));
        assert_eq!(forward.events.events[0].name, "first_byte");
        // The handler's slice starts where its first poll ran and names where it ended.
        let (first, last) = seen[&rid];
        assert_eq!(int(handle, "thread.id"), Some(first), "{rid}");
        let ended = int(handle, "slicetrace.end_thread.id").unwrap_or(first);
        assert_eq!(ended, last, "{rid}");
        migrated += (first != last) as usize;
        // The thread-bound slice sits on the thread span of the worker it ran on.
        let parse = trace
            .named("parse")
            .into_iter()
            .find(|p| attr(p, "rid").map(|r| r.to_string()) == Some(rid.clone()))
            .expect("a parse slice of the request");
        let thread = trace.find(parent(parse)).expect("parse's parent exported");
        assert!(attr(thread, "thread_label").is_some(), "{}", thread.name);
        assert_eq!(int(thread, "thread.id"), Some(first));
    }
    assert_eq!(seen.len(), tasks * rounds);
    assert_eq!(trace.named("handle").len(), tasks * rounds);
    assert_eq!(trace.named("pick_worker").len(), tasks * rounds);
    assert_eq!(trace.named("forward").len(), tasks * rounds);
    assert!(
        migrated > 0,
        "no handler ended on another thread than it started on"
    );
}

static WAITS: Name = Name::new("waits");
static HOLDS: Name = Name::new("holds");

#[test]
fn a_future_dropped_before_it_completes_ends_its_slices_there_marked_cancelled() {
    let mut s = session();
    let rt = runtime(2);
    rt.block_on(async {
        let rid = slicetrace::req_start("cancelled-1", None);
        let never = async {
            let _inner = AsyncSlice::start(&HOLDS, rid);
            std::future::pending::<()>().await
        }
        .in_slice(&WAITS, rid);
        let r = tokio::time::timeout(Duration::from_millis(5), never).await;
        assert!(r.is_err());
        slicetrace::req_finish(rid);
    });
    drop(rt);
    let (trace, stats) = s.finish();
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
    assert_eq!(stats.slices_unfinished, 0, "{stats:?}");
    let waits = trace.one("waits");
    let holds = trace.one("holds");
    assert_eq!(attr(waits, "slicetrace.cancelled"), Some(Value::Bool(true)));
    assert_eq!(parent(holds), sid(waits));
    // The held slice is dropped with the future, not cancelled itself: ended inside its parent.
    assert_eq!(attr(holds, "slicetrace.cancelled"), None);
    assert!(holds.end_time <= waits.end_time);
    let elapsed = waits.end_time.duration_since(waits.start_time).unwrap();
    assert!(elapsed >= Duration::from_millis(5), "{elapsed:?}");
}

#[test]
fn an_async_slice_is_decided_at_its_start_whatever_the_level_does() {
    static DETAIL: Name = Name::with_level("detail", 4);
    static STEP: Name = Name::with_level("step", 3);
    let mut s = session();
    let rid = slicetrace::req_start("levels-1", None);
    // Started at the level, ended above it: recorded whole.
    let step = AsyncSlice::start(&STEP, rid);
    slicetrace::set_level(2);
    drop(step);
    // Started above the level, ended at it: not recorded at all.
    let detail = AsyncSlice::start(&DETAIL, rid);
    assert_eq!(detail.span_id(), None);
    slicetrace::set_level(4);
    drop(detail);
    slicetrace::set_level(slicetrace::limits::DEFAULT_PROCESS_LEVEL);
    slicetrace::req_finish(rid);
    let (trace, stats) = s.finish();
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
    assert!(!unfinished(trace.one("step")));
    assert!(trace.named("detail").is_empty(), "{}", trace.names());
}

#[test]
fn a_sampled_out_request_records_no_async_slice() {
    let mut s = session_with(|c| c.sampler(slicetrace::sampling::Sampler::AlwaysOff));
    let rid = slicetrace::req_start("off-1", None);
    let a = AsyncSlice::start(name!("handle"), rid);
    assert_eq!(a.span_id(), None);
    drop(a);
    slicetrace::req_finish(rid);
    let (trace, stats) = s.finish();
    assert!(trace.spans.is_empty(), "{}", trace.names());
    assert_eq!(stats.records_written, 0, "{stats:?}");
}

fn parse_step(rid: Rid, fail: bool) -> Result<u32, &'static str> {
    let _s = slicetrace::slice(name!("validate"), rid);
    if fail {
        Err("bad input")?;
    }
    Ok(7)
}

#[test]
fn a_scoped_slice_ends_on_an_early_return() {
    let mut s = session();
    let rid = slicetrace::req_start("guard-1", None);
    assert_eq!(parse_step(rid, true), Err("bad input"));
    assert_eq!(parse_step(rid, false), Ok(7));
    let g = slicetrace::slice(name!("explicit"), rid);
    g.end(slicetrace::End::PLAIN);
    slicetrace::req_finish(rid);
    let (trace, stats) = s.finish();
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
    assert_eq!(stats.slices_unfinished, 0, "{stats:?}");
    let v = trace.named("validate");
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|s| !unfinished(s)));
    // Each a top-level slice of the thread, linked to the one before.
    assert_eq!(links(v[1]), [sid(v[0])]);
    assert_eq!(links(trace.one("explicit")), [sid(v[1])]);
}

/// A future that is pending on its first poll and ready on its second.
struct Twice(bool);

impl std::future::Future for Twice {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}

#[test]
fn a_future_polled_on_one_thread_and_finished_on_another_is_one_slice() {
    let mut s = session();
    let rid = slicetrace::req_start("moved-1", None);
    // The adapter's slice starts where it is made; the inner one at the first poll.
    let made = gettid();
    let mut fut = Box::pin(
        async move {
            let inner = AsyncSlice::start(name!("inner"), rid);
            Twice(false).await;
            drop(inner);
            gettid()
        }
        .in_slice(name!("outer"), rid),
    );
    let (first, fut) = std::thread::spawn(move || {
        assert!(poll_once(&mut fut).is_pending());
        (gettid(), fut)
    })
    .join()
    .unwrap();
    let last = std::thread::spawn(move || {
        let mut fut = fut;
        match poll_once(&mut fut) {
            std::task::Poll::Ready(tid) => tid,
            std::task::Poll::Pending => panic!("pending twice"),
        }
    })
    .join()
    .unwrap();
    assert_ne!(first, last);
    slicetrace::req_finish(rid);
    let (trace, stats) = s.finish();
    assert_eq!(stats.end_without_start, 0, "{stats:?}");
    let (outer, inner) = (trace.one("outer"), trace.one("inner"));
    assert_eq!(parent(inner), sid(outer));
    assert_eq!(parent(outer), sid(trace.starting_with(" Req moved-1")[0]));
    for (s, started) in [(outer, made), (inner, first)] {
        assert!(!unfinished(s), "{}", s.name);
        assert_eq!(int(s, "thread.id"), Some(started), "{}", s.name);
        assert_eq!(int(s, "slicetrace.end_thread.id"), Some(last), "{}", s.name);
    }
}

/// An exporter that takes its time over each batch, as one across a slow network.
#[derive(Clone, Debug)]
struct Slow;

impl opentelemetry_sdk::trace::SpanExporter for Slow {
    async fn export(
        &self,
        _: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}

#[test]
fn a_session_started_and_ended_inside_a_runtime_never_blocks_its_worker() {
    let _turn = common::turn();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (during, took, stats) = rt.block_on(async {
        let guard = slicetrace::init(common::config().exporter(Slow)).expect("init");
        let rid = slicetrace::req_start("inside-1", None);
        async { tokio::task::yield_now().await }
            .in_slice(name!("work"), rid)
            .await;
        slicetrace::req_finish(rid);
        // One worker: the ticker runs only while the shutdown awaits without blocking it.
        let count = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(2)).await;
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.load(std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        let stats = guard.shutdown_async().await;
        let took = started.elapsed();
        let during = ticks.load(std::sync::atomic::Ordering::Relaxed) - before;
        ticker.abort();
        (during, took, stats)
    });
    // The export takes 300 ms; a blocked worker would have ticked not once meanwhile.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(during >= 20, "{during} ticks in {took:?}");
    assert_eq!(stats.requests_finished, 1, "{stats:?}");
    assert!(stats.spans_exported >= 3, "{stats:?}");
    assert!(!slicetrace::is_enabled());
}
