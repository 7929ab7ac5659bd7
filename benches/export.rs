//! The drainer's side: how fast records become spans, and how fast spans reach a collector.
//!
//! Run: `cargo bench --bench export` (the OTLP figure needs the rotel collector:
//! `pip install rotel==0.0.1a15`; without it that benchmark is skipped with a message).
//!
//! - `rebuild`: records written beforehand (untimed) into one thread's ring; the timed part is one
//!   flush, in which the drainer thread decodes them, rebuilds the trees and hands the spans to a
//!   sink that discards them. Throughput is records per second on the drainer's one core.
//! - `otlp_grpc`: spans per second from flush to the collector's acknowledgement, over loopback,
//!   with the collector discarding what it receives.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use slicetrace::{name, Config, End, Guard, OtlpSink, Protocol, Rid};
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

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
        g.bench_function(format!("rebuild_records/batch_{batch}"), |b| {
            b.iter_custom(|iters| timed_flush(&guard, iters))
        });
        let stats = guard.shutdown();
        assert_eq!(stats.records_dropped_ring_full, 0);
        assert_eq!(stats.spans_dropped_export, 0);
    }
    g.finish();
}

struct Rotel(Child);

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rotel() -> Option<(Rotel, String)> {
    let dir = Command::new("python3")
        .args([
            "-c",
            "import rotel, os; print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let agent =
        std::path::Path::new(String::from_utf8(dir.stdout).ok()?.trim()).join("rotel-agent");
    let port = |_| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (g, h) = (port(0), port(1));
    let child = Command::new(agent)
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{g}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{h}"),
            "--exporter",
            "blackhole",
            "--pid-file",
            &format!("/tmp/slicetrace-bench-rotel-{g}.pid"),
            "--log-file",
            &format!("/tmp/slicetrace-bench-rotel-{g}.log"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let r = Rotel(child);
    let addr = format!("127.0.0.1:{g}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((r, format!("http://{addr}")))
}

fn otlp(c: &mut Criterion) {
    let Some((_rotel, endpoint)) = rotel() else {
        eprintln!("export/otlp_grpc skipped: rotel is not installed (pip install rotel==0.0.1a15)");
        return;
    };
    let mut g = c.benchmark_group("export");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PAIRS + 2));
    for batch in [64usize, 512] {
        let sink = OtlpSink::new(&endpoint, Protocol::Grpc, &[], Duration::from_secs(10)).unwrap();
        let guard = slicetrace::init(config(Box::new(sink), batch)).unwrap();
        g.bench_function(format!("otlp_grpc_spans/batch_{batch}"), |b| {
            b.iter_custom(|iters| timed_flush(&guard, iters))
        });
        let stats = guard.shutdown();
        assert_eq!(
            stats.spans_export_failed + stats.spans_dropped_export,
            0,
            "{stats:?}"
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = rebuild, otlp
}
criterion_main!(benches);
