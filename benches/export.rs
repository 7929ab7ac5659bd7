//! The drainer's side: how fast records become spans, and how fast spans reach a collector.
//!
//! Run: `cargo bench --bench export` (the OTLP figure needs the rotel collector:
//! `pip install rotel==0.0.1a15`; without it that benchmark is skipped with a message).
//!
//! - `rebuild_records`: records written beforehand (untimed) into one thread's ring; each flush
//!   is timed by the drainer thread's CPU clock: how long it took one core to decode the records
//!   and rebuild the span trees (records per second of the drainer's CPU).
//! - `pipeline_records`: the same flushes timed on the wall clock: the drainer rebuilds while
//!   the export thread turns the finished slices into `SpanData` and hands them to a sink that
//!   discards them (one core each); records per second through both.
//! - `otlp_grpc`, `otlp_http`: spans per second from flush to the collector's acknowledgement,
//!   over loopback, with the collector discarding what it receives; OTLP/gRPC and OTLP/HTTP
//!   (protobuf), over one connection and over two (`OtlpSink::with_connections`).

mod common;
#[path = "../tests/common/rotel.rs"]
mod rotel;

use common::Discard;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slicetrace::export::{OtlpSink, Protocol};
use slicetrace::{name, Config, End, Guard, Rid};
use std::time::{Duration, Instant};

const PAIRS: u64 = 50_000;

fn config(sink: Box<dyn slicetrace::export::Sink>, batch: usize) -> Config {
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
        let drainer = ThreadClock::named("slicetrace-drai").expect("the drainer thread");
        let export = ThreadClock::named("slicetrace-expo").expect("the export thread");
        // The rebuild on one core: the time each flush took of the drainer thread's CPU.
        g.bench_function(format!("rebuild_records/batch_{batch}"), |b| {
            b.iter_custom(|iters| {
                let before = drainer.now();
                timed_flush(&guard, iters);
                drainer.now().saturating_sub(before)
            })
        });
        // Both threads at once: wall time from flush to the sink, with the export thread's
        // conversion into `SpanData` overlapping the rebuild.
        let (d0, e0, r0) = (drainer.now(), export.now(), guard.stats().records_read);
        g.bench_function(format!("pipeline_records/batch_{batch}"), |b| {
            b.iter_custom(|iters| timed_flush(&guard, iters))
        });
        let (d, e, r) = (
            drainer.now() - d0,
            export.now() - e0,
            guard.stats().records_read - r0,
        );
        let stats = guard.shutdown();
        assert_eq!(stats.records_dropped_ring_full, 0);
        assert_eq!(stats.spans_dropped_export, 0);
        if r == 0 {
            // Left out by the command line's filter.
            continue;
        }
        // Each thread's share in the pipeline runs (warm-up included), as records per second
        // of its own CPU time.
        let per_cpu_second = |t: Duration| r as f64 / t.as_secs_f64().max(1e-9) / 1e6;
        eprintln!(
            "drainer/pipeline_records/batch_{batch}: per CPU second: drainer thread {:.2} M records, export thread {:.2} M records",
            per_cpu_second(d),
            per_cpu_second(e)
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
            if stats.records_written == 0 {
                // Left out by the command line's filter.
                continue;
            }
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

/// One thread's CPU clock, read from any thread of the process (nanosecond resolution).
struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    /// The clock of this process's first thread whose name starts with `prefix`; waits a
    /// little for a thread just spawned to name itself.
    fn named(prefix: &str) -> Option<ThreadClock> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Self::find(prefix) {
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                found => return found,
            }
        }
    }

    fn find(prefix: &str) -> Option<ThreadClock> {
        let tid = threads_named(prefix)
            .next()?
            .file_name()
            .to_str()?
            .parse::<libc::pid_t>()
            .ok()?;
        // Linux names a thread's CPU clock by its tid: `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`.
        Some(ThreadClock((!tid << 3) | 6))
    }

    fn now(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write; a clock id the kernel refuses gives an
        // error return, not undefined behaviour.
        let rc = unsafe { libc::clock_gettime(self.0, &mut ts) };
        assert_eq!(
            rc,
            0,
            "thread CPU clock: {}",
            std::io::Error::last_os_error()
        );
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

/// CPU time so far of this process's threads whose name starts with `prefix`, from `/proc`.
fn thread_cpu_time(prefix: &str) -> Duration {
    threads_named(prefix)
        .filter_map(|t| rotel::stat_cpu_time(t.path().join("stat").to_str()?))
        .sum()
}

/// This process's threads (`/proc/self/task` entries) whose name starts with `prefix`.
fn threads_named(prefix: &str) -> impl Iterator<Item = std::fs::DirEntry> + '_ {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(move |t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
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
