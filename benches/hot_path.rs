//! What a traced thread pays per call, against the floor: two raw clock reads.
//!
//! Run: `cargo bench --bench hot_path`. Ratios, not absolute times, are what to compare: the
//! machine is shared, so only figures from the same run mean anything together. The peers doing
//! the same job — a child span started and ended on the calling thread — run in the same
//! process: fastrace `LocalSpan`, the OpenTelemetry SDK with a batch processor, `tracing` with
//! its `Registry`, and `tracing` with `tracing-opentelemetry` on top. `scripts/bench-gate`
//! turns the figures into ratios and checks them against `benches/gate.toml`.
//!
//! The enabled benchmarks run with the drainer live and a sink that discards spans. They time
//! blocks of calls small enough to fit the ring, and flush between blocks (untimed), so every
//! timed call takes the normal path (no record is dropped for a full ring) and the timed thread
//! has the machine to itself, as fastrace's has: on two cores, a drainer and an export thread
//! still busy with the last block would take turns on the timed thread's core, and the figure
//! would be the scheduler's rather than the call's.

mod common;

use common::Discard;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use slicetrace::{name, Config, End, Guard, InSlice, Rid};
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Records per timed block: a quarter of the ring, so a block never meets a full ring.
const RING: usize = 1 << 16;
const BLOCK_RECORDS: u64 = (RING / 4) as u64;

/// The drainer's sweep interval: longer than any block, so it sweeps when nudged between
/// blocks and not amid one.
const QUIET: Duration = Duration::from_millis(200);
/// How long the timed thread spins between its wait and a block.
const WAKE: Duration = Duration::from_micros(30);

/// Every session here: a thread keeps the ring it claimed in the first session the benchmarks
/// ran, and a ring's size is fixed when it is made, so all of them ask for the same size.
fn config() -> Config {
    let mut c = Config::new("bench");
    c.ring_capacity = RING;
    c.announce = false;
    c.report_losses_every = None;
    c.sweep_interval = QUIET;
    c
}

fn start() -> Guard {
    slicetrace::init(config().exporter(Discard)).expect("init")
}

/// What a block waits for (untimed) before it starts.
#[derive(Clone, Copy)]
enum Settle {
    /// The drainer has read every record and the export thread has handed every ended span
    /// to the sink: nothing of the last block is left running beside the next.
    Exported,
    /// The drainer has read every record. With the collector down, an export only ends after
    /// the exporter's retries, so waiting for it would leave the timed core idle and cold for
    /// a second at a time; the failing export runs on beside the block, as it would in service.
    Read,
}

fn settle(guard: &Guard, how: Settle) {
    match how {
        Settle::Exported => assert!(
            guard.flush(Duration::from_secs(30)),
            "a flush between blocks timed out"
        ),
        Settle::Read => {
            // A zero-timeout flush wakes the drainer without waiting for the export.
            guard.flush(Duration::ZERO);
            loop {
                let s = slicetrace::stats();
                if s.records_read >= s.records_written {
                    return;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// Times `iters` runs of `f` (each writing `records_per_iter` records) in blocks of a quarter
/// ring, settled as `how` says between blocks.
fn blocks(
    guard: &Guard,
    how: Settle,
    iters: u64,
    records_per_iter: u64,
    mut f: impl FnMut(),
) -> Duration {
    let per_block = (BLOCK_RECORDS / records_per_iter).max(1);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(per_block);
        settle(guard, how);
        // The wait slept: the core is woken with a spin before the block, not by its first calls.
        let w = Instant::now();
        while w.elapsed() < WAKE {
            std::hint::spin_loop();
        }
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        total += t.elapsed();
        left -= n;
    }
    total
}

fn hot_path(c: &mut Criterion) {
    let clock = quanta::Clock::new();
    let mut g = c.benchmark_group("hot_path");

    g.bench_function("floor/two_raw_clock_reads", |b| {
        b.iter(|| {
            black_box(clock.raw());
            black_box(clock.raw());
        })
    });
    g.bench_function("floor/instant_now", |b| {
        b.iter(|| black_box(Instant::now()))
    });

    // Tracing off: what every call costs in a process that does not trace.
    assert!(!slicetrace::is_enabled());
    let rid = Rid(1);
    g.bench_function("disabled/slice_start", |b| {
        b.iter(|| slicetrace::slice_start(name!("decode"), black_box(rid)))
    });
    g.bench_function("disabled/slice_pair", |b| {
        b.iter(|| {
            slicetrace::slice_start(name!("decode"), black_box(rid));
            slicetrace::slice_end(name!("decode"), black_box(rid), End::PLAIN);
        })
    });

    let guard = start();
    let rid = slicetrace::req_start("bench-request", None);
    g.bench_function("enabled/slice_pair", |b| {
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Exported, iters, 2, || {
                slicetrace::slice_start(name!("decode"), black_box(rid));
                slicetrace::slice_end(name!("decode"), black_box(rid), End::PLAIN);
            })
        })
    });
    g.bench_function("enabled/anon_auto_next", |b| {
        slicetrace::slice_start_anon(rid);
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Exported, iters, 1, || {
                slicetrace::slice_end(name!("step"), black_box(rid), End::AUTO_NEXT_ANON)
            })
        })
    });
    g.bench_function("enabled/event", |b| {
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Exported, iters, 1, || {
                slicetrace::event(name!("token"), black_box(rid))
            })
        })
    });

    // A slice of async work, which may end on another thread: its handle, and a future that
    // completes at its first poll, made and polled inside the slice adapter.
    g.bench_function("enabled/async_slice", |b| {
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Exported, iters, 2, || {
                drop(slicetrace::AsyncSlice::start(
                    name!("route"),
                    black_box(rid),
                ))
            })
        })
    });
    g.bench_function("enabled/in_slice_future", |b| {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Exported, iters, 2, || {
                let fut = std::future::ready(black_box(7u32)).in_slice(name!("route"), rid);
                let mut fut = std::pin::pin!(fut);
                assert!(black_box(fut.as_mut().poll(&mut cx)).is_ready());
            })
        })
    });
    g.bench_function("enabled/slice_guard", |b| {
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Exported, iters, 2, || {
                let _slice = slicetrace::slice(name!("decode"), black_box(rid));
            })
        })
    });

    // A tokenizer's hand-off: a request starts, its first slice opens, its context is taken
    // for the next thread, and the request ends here. `propagate_context` walks back over this
    // thread's records since the request's start: a few here.
    let mut n = 1u64 << 40;
    g.bench_function("enabled/request_handoff", |b| {
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Exported, iters, 8, || {
                n += 1;
                let r = slicetrace::req_start(black_box(n), None);
                slicetrace::slice_start(name!("tokenize"), r);
                black_box(slicetrace::propagate_context(r).expect("started here"));
                slicetrace::slice_end(name!("tokenize"), r, End::PLAIN);
                slicetrace::req_finish(r);
            })
        })
    });

    const BATCH: usize = 256;
    let batch: Vec<(Rid, bool)> = (0..BATCH as u64)
        .map(|i| {
            let r = slicetrace::req_start(1000 + i, None);
            slicetrace::slice_start_anon(r);
            (r, false)
        })
        .collect();
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_with_input(
        BenchmarkId::new("enabled/slice_batch", BATCH),
        &batch,
        |b, batch| {
            b.iter_custom(|iters| {
                blocks(&guard, Settle::Exported, iters, BATCH as u64, || {
                    slicetrace::slice_batch(name!("decode"), black_box(batch))
                })
            })
        },
    );
    g.finish();

    let stats = guard.shutdown();
    assert_eq!(
        stats.records_dropped_ring_full, 0,
        "a timed block met a full ring: the figures above include drops"
    );

    // The same pair while every export fails: an OTLP exporter pointed at a port nobody
    // listens on. The traced thread must not notice.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = slicetrace::export::OtlpSink::new(
        &format!("http://127.0.0.1:{dead}"),
        slicetrace::export::Protocol::Grpc,
        &[],
        Duration::from_millis(200),
    )
    .unwrap();
    let guard = slicetrace::init(config().sink(Box::new(sink))).expect("init");
    let rid = slicetrace::req_start("bench-request", None);
    let mut g = c.benchmark_group("hot_path");
    g.bench_function("collector_down/slice_pair", |b| {
        b.iter_custom(|iters| {
            blocks(&guard, Settle::Read, iters, 2, || {
                slicetrace::slice_start(name!("decode"), black_box(rid));
                slicetrace::slice_end(name!("decode"), black_box(rid), End::PLAIN);
            })
        })
    });
    g.finish();
    let stats = guard.shutdown();
    assert_eq!(stats.records_dropped_ring_full, 0);
    assert_eq!(stats.spans_exported, 0, "nothing listens there");

    // A request a ratio sampler leaves out: every call for it returns on the traced thread.
    let tenth = slicetrace::sampling::Ratio::new(0.1).unwrap();
    let cfg = config()
        .exporter(Discard)
        .sampler(slicetrace::sampling::Sampler::TraceIdRatio(tenth));
    let guard = slicetrace::init(cfg).expect("init");
    let left_out = (0u64..)
        .map(Rid)
        .find(|r| !tenth.admits(*r))
        .expect("nine in ten are left out");
    let mut g = c.benchmark_group("hot_path");
    g.bench_function("sampled_out/slice_start", |b| {
        b.iter(|| slicetrace::slice_start(name!("decode"), black_box(left_out)))
    });
    // Eight pairs an iteration: a figure of the calls, not of criterion's loop around them.
    g.bench_function("sampled_out/calls_16", |b| {
        b.iter(|| {
            for _ in 0..8 {
                slicetrace::slice_start(name!("decode"), black_box(left_out));
                slicetrace::slice_end(name!("decode"), black_box(left_out), End::PLAIN);
            }
        })
    });
    g.finish();
    let stats = guard.shutdown();
    assert_eq!(
        stats.records_written, 0,
        "a request left out records nothing"
    );
}

/// Calls above the trace level.
fn above_level(c: &mut Criterion) {
    // A name above the process level, in the steady state: the thread has no slice of that
    // level recorded and no anonymous slice open (this runs first, on a thread whose counts
    // no other benchmark has moved), so a call reads the level and its counts and records
    // nothing.
    let guard = slicetrace::init(config().exporter(Discard).level(2)).expect("init");
    let rid = slicetrace::req_start(7u64, None);
    let mut g = c.benchmark_group("hot_path");
    g.bench_function("above_level/slice_start", |b| {
        b.iter(|| slicetrace::slice_start(name!("decode_loop", level = 3), black_box(rid)))
    });
    // Each start ended, so the counts stay as a server's do.
    let pairs = |b: &mut criterion::Bencher| {
        b.iter(|| {
            for _ in 0..8 {
                let n = name!("decode_loop", level = 3);
                slicetrace::slice_start(n, black_box(rid));
                slicetrace::slice_end(n, black_box(rid), End::PLAIN);
            }
        })
    };
    g.bench_function("above_level/calls_16", pairs);
    // With an anonymous slice open on the thread (a `prefill` that opened the next one), an
    // end above the level may be that slice's, so the thread counts the slices it skips.
    slicetrace::slice_end(name!("prefill"), rid, End::AUTO_NEXT_ANON);
    g.bench_function("above_level/calls_16_anon_open", pairs);
    g.finish();
    slicetrace::req_finish(rid);
    let stats = guard.shutdown();
    slicetrace::set_level(slicetrace::limits::DEFAULT_PROCESS_LEVEL);
    assert_eq!(
        stats.records_written, 3,
        "above the level, only the request's start, `prefill` and finish are recorded"
    );
}

/// Spans per fastrace root: its local spans are kept until the root ends, so each timed block
/// gets a root of its own, within the span queue the root allocates (10 240). Ending the root
/// is timed: that is where the calling thread collects the block's spans and hands them to
/// fastrace's collector, work fastrace does on the user's thread (slicetrace does the
/// equivalent on the drainer). Only `fastrace::flush`, the collector's own work, is untimed.
const FASTRACE_BLOCK: u64 = 4096;

struct DiscardReports;

impl fastrace::collector::Reporter for DiscardReports {
    fn report(&mut self, spans: Vec<fastrace::prelude::SpanRecord>) {
        black_box(spans);
    }
}

fn peers(c: &mut Criterion) {
    use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    let mut g = c.benchmark_group("hot_path");

    // fastrace: LocalSpan enter + exit under a root with a reporter set, its recommended path.
    fastrace::set_reporter(DiscardReports, fastrace::collector::Config::default());
    g.bench_function("peer/fastrace_local_span", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(FASTRACE_BLOCK);
                let t = Instant::now();
                let root =
                    fastrace::Span::root("request", fastrace::prelude::SpanContext::random());
                let guard = root.set_local_parent();
                for _ in 0..n {
                    let span = fastrace::local::LocalSpan::enter_with_local_parent("decode");
                    drop(black_box(span));
                }
                drop(guard);
                drop(root);
                total += t.elapsed();
                // Hands the spans to the reporter now, so their memory is reused by the next
                // block instead of fresh pages being faulted in.
                fastrace::flush();
                left -= n;
            }
            total
        })
    });
    fastrace::flush();

    // The OpenTelemetry SDK: a child span started and ended, batch processor, no-op exporter.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(opentelemetry_sdk::trace::BatchSpanProcessor::builder(Discard).build())
        .build();
    let tracer = provider.tracer("bench");
    let root = tracer.start("request");
    let cx = opentelemetry::Context::current_with_span(root);
    g.bench_function("peer/otel_sdk_span", |b| {
        b.iter(|| {
            let mut span = tracer.start_with_context("decode", black_box(&cx));
            opentelemetry::trace::Span::end(&mut span);
        })
    });

    // tracing: a span created, entered, exited and closed, with the Registry subscriber.
    let registry = tracing_subscriber::registry();
    tracing::subscriber::with_default(registry, || {
        let root = tracing::info_span!("request");
        let _in_root = root.enter();
        g.bench_function("peer/tracing_registry", |b| {
            b.iter(|| tracing::info_span!("decode").in_scope(|| black_box(())))
        });
    });

    // The same with tracing-opentelemetry turning each span into an SDK span.
    let otel_layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench-tracing"));
    let subscriber = tracing_subscriber::registry().with(otel_layer);
    tracing::subscriber::with_default(subscriber, || {
        let root = tracing::info_span!("request");
        let _in_root = root.enter();
        g.bench_function("peer/tracing_opentelemetry", |b| {
            b.iter(|| tracing::info_span!("decode").in_scope(|| black_box(())))
        });
    });
    slicetrace_layer(&mut g);
    g.finish();
    let _ = provider.shutdown();
}

/// The same span through `tracing` with slicetrace's layer, inside a request (a root span
/// carrying its rid): an async slice per span.
#[cfg(feature = "tracing")]
fn slicetrace_layer(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use tracing_subscriber::layer::SubscriberExt;
    let guard = start();
    let rid = slicetrace::req_start("bench-layer", None);
    let subscriber = tracing_subscriber::registry().with(slicetrace::layer::SliceLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let root = tracing::info_span!("request", rid = rid.0);
        let _in_root = root.enter();
        g.bench_function("peer/tracing_slicetrace_layer", |b| {
            b.iter_custom(|iters| {
                blocks(&guard, Settle::Exported, iters, 2, || {
                    tracing::info_span!("decode").in_scope(|| black_box(()))
                })
            })
        });
    });
    slicetrace::req_finish(rid);
    guard.shutdown();
}

#[cfg(not(feature = "tracing"))]
fn slicetrace_layer(_: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = above_level, hot_path, peers
}
criterion_main!(benches);
