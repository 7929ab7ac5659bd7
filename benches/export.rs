//! The drainer's side: how fast records become spans, and how fast spans reach a collector.
//!
//! Run: `cargo bench --bench export` (the OTLP figure needs the rotel collector:
//! `pip install rotel==0.0.1a15`; without it that benchmark is skipped with a message).
//!
//! - `rebuild`: records written beforehand (untimed) into one thread's ring; the timed part is one
//!   flush, in which the drainer thread decodes them and rebuilds the trees, and the export thread
//!   turns the finished slices into `SpanData` and hands them to a sink that discards them.
//!   Throughput is records per second through both threads (one core each).
//! - `otlp_grpc`, `otlp_http`: spans per second from flush to the collector's acknowledgement,
//!   over loopback, with the collector discarding what it receives; OTLP/gRPC and OTLP/HTTP
//!   (protobuf), over one connection and over two (`OtlpSink::with_connections`).

mod common;
#[path = "../tests/common/rotel.rs"]
mod rotel;

use common::Discard;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slicetrace::{name, Config, End, Guard, OtlpSink, Protocol, Rid};
use std::time::{Duration, Instant};

const PAIRS: u64 = 50_000;

fn config(sink: Box<dyn slicetrace::Sink>, batch: usize) -> Config {
    let mut c = Config::new("bench-export").sink(sink);
    c.announce = false;
    c.report_losses_every = None;
    c.ring_capacity = 1 << 20;
    // The drainer wakes only for the timed flush.
    c.sweep_interval = Duration::from_secs(3600);
    c.max_export_batch = batch;
    c.export_queue_batches = 1 << 16;
    c
}

/// Writes `PAIRS` slice pairs (untimed), then times the flush that turns them into spans.
fn timed_flush(guard: &Guard, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let rid = slicetrace::req_start(Rid(7), None);
        for _ in 0..PAIRS {
            slicetrace::slice_start(name!("step"), rid);
            slicetrace::slice_end(name!("step"), rid, End::PLAIN);
        }
        slicetrace::req_finish(rid);
        let t = Instant::now();
        assert!(guard.flush(Duration::from_secs(600)));
        total += t.elapsed();
    }
    total
}

fn rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("drainer");
    g.sample_size(10);
    g.throughput(Throughput::Elements(2 * PAIRS + 2));
    for batch in [64usize, 512] {
        let guard = slicetrace::init(config(Box::new(Discard), batch)).unwrap();
        let cpu = || {
            (
                thread_cpu_time("slicetrace-drai"),
                thread_cpu_time("slicetrace-expo"),
            )
        };
        // Read once the session's threads are the only ones of their names.
        let mut before = None;
        g.bench_function(format!("rebuild_records/batch_{batch}"), |b| {
            before.get_or_insert_with(cpu);
            b.iter_custom(|iters| timed_flush(&guard, iters))
        });
        let (d0, e0) = before.unwrap_or_default();
        let (d1, e1) = cpu();
        let (drainer, export) = (d1.saturating_sub(d0), e1.saturating_sub(e0));
        let stats = guard.shutdown();
        assert_eq!(stats.records_dropped_ring_full, 0);
        assert_eq!(stats.spans_dropped_export, 0);
        // Each thread's share, as records per second of its own CPU time (warm-up included).
        let per_cpu_second =
            |d: Duration| stats.records_read as f64 / d.as_secs_f64().max(1e-9) / 1e6;
        eprintln!(
            "drainer/rebuild_records/batch_{batch}: per CPU second: drainer thread {:.2} M records, export thread {:.2} M records",
            per_cpu_second(drainer),
            per_cpu_second(export)
        );
    }
    g.finish();
}

fn otlp(c: &mut Criterion) {
    if !rotel::installed() {
        eprintln!("export/otlp skipped: rotel is not installed (pip install rotel==0.0.1a15)");
        return;
    }
    let collector = rotel::Rotel::start_quiet();
    let mut g = c.benchmark_group("export");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PAIRS + 2));
    let grpc = format!("http://{}", collector.grpc);
    let http = format!("http://{}/v1/traces", collector.http);
    for (wire, protocol, endpoint) in [
        ("grpc", Protocol::Grpc, &grpc),
        ("http", Protocol::HttpProtobuf, &http),
    ] {
        // One and two connections at the default batch size and a larger one; then four
        // connections with batches of 1024, the set-up for the most spans per second.
        for (connections, batch) in [(1usize, 64usize), (1, 512), (2, 64), (2, 512), (4, 1024)] {
            let sink = OtlpSink::new(endpoint, protocol, &[], Duration::from_secs(10))
                .and_then(|s| s.with_connections(connections))
                .unwrap();
            let guard = slicetrace::init(config(Box::new(sink), batch)).unwrap();
            let (collector_cpu, our_cpu) = (collector.cpu_time(), slicetrace_cpu_time());
            let name = format!("otlp_{wire}_spans/conn_{connections}/batch_{batch}");
            g.bench_function(&name, |b| b.iter_custom(|iters| timed_flush(&guard, iters)));
            let our_cpu = slicetrace_cpu_time() - our_cpu;
            let stats = guard.shutdown();
            // Where the CPU time per exported span goes: this process (drainer, export
            // threads) and the collector, which share the machine's cores here. (Spans
            // exported count warm-up runs too, as does the CPU time.)
            let per_span = |d: Duration| d.as_secs_f64() * 1e6 / stats.spans_exported.max(1) as f64;
            eprintln!(
                    "export/{name}: CPU per span exported: slicetrace {:.2} us, collector {:.2} us ({} spans)",
                    per_span(our_cpu),
                    per_span(collector.cpu_time() - collector_cpu),
                    stats.spans_exported
                );
            assert_eq!(
                stats.spans_export_failed + stats.spans_dropped_export,
                0,
                "{stats:?}"
            );
            assert!(stats.spans_exported > 0, "{stats:?}");
        }
    }
    g.finish();
}

/// CPU time so far of this process's threads whose name starts with `prefix`, from `/proc`.
fn thread_cpu_time(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| rotel::stat_cpu_time(t.path().join("stat").to_str()?))
        .sum()
}

/// CPU time so far of this process's slicetrace threads (drainer, export, OTLP connections).
fn slicetrace_cpu_time() -> Duration {
    thread_cpu_time("slicetrace-")
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = rebuild, otlp
}
criterion_main!(benches);
