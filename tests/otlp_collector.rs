//! Export to a real collector (rotel) over OTLP/gRPC and OTLP/HTTP, and check from what the
//! collector decoded that every span arrived with the right names, parents, links and attributes.

mod common;

use common::otlp_request::{check, trace_one_request};
use common::rotel::{free_port, Rotel};
use common::{config, session_using};
use slicetrace::export::{OtlpSink, Protocol};
use slicetrace::{name, End};
use std::time::{Duration, Instant};

fn export_over(protocol: Protocol) {
    let rotel = Rotel::start();
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", rotel.grpc),
        Protocol::HttpProtobuf | Protocol::HttpJson => format!("http://{}/v1/traces", rotel.http),
    };
    let sink = OtlpSink::new(&endpoint, protocol, &[], Duration::from_secs(5)).unwrap();
    let mut cfg = config();
    cfg.service_name = "otlp-test".into();
    let mut s = session_using(cfg.sink(Box::new(sink)));
    trace_one_request();
    let stats = s.guard.take().unwrap().shutdown();
    assert_eq!(stats.spans_exported, 8);
    assert_eq!(stats.spans_export_failed + stats.spans_dropped_export, 0);
    check(&rotel.spans(8));
}

#[test]
fn spans_arrive_over_grpc() {
    export_over(Protocol::Grpc);
}

#[test]
fn spans_arrive_over_http_protobuf() {
    export_over(Protocol::HttpProtobuf);
}

#[test]
fn spans_arrive_over_http_json() {
    export_over(Protocol::HttpJson);
}

/// Several connections, small batches: many batches in flight at once, on every connection.
/// Each span arrives exactly once, with the resource every connection was given.
fn export_over_connections(protocol: Protocol) {
    let rotel = Rotel::start();
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", rotel.grpc),
        _ => format!("http://{}/v1/traces", rotel.http),
    };
    let sink = OtlpSink::new(&endpoint, protocol, &[], Duration::from_secs(5))
        .and_then(|s| s.with_connections(3))
        .unwrap();
    let mut cfg = config();
    cfg.service_name = "otlp-lanes".into();
    // The drainer wakes only at shutdown: all 160 spans reach the export thread at once, as
    // 40 batches sent three at a time, one on each connection.
    cfg.sweep_interval = Duration::from_secs(3600);
    cfg.max_export_batch = 4;
    let mut s = session_using(cfg.sink(Box::new(sink)));
    for i in 0..40 {
        one_request(&format!("lane-{i:02}"));
    }
    let stats = s.guard.take().unwrap().shutdown();
    assert_eq!(stats.spans_exported, 160, "{stats:?}");
    assert_eq!(stats.spans_export_failed + stats.spans_dropped_export, 0);
    let spans = rotel.spans(160);
    assert_eq!(spans.len(), 160);
    let mut ids: Vec<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 160, "a span arrived twice");
    let mut reqs: Vec<&str> = spans
        .iter()
        .filter_map(|s| s.name.strip_prefix(" Req "))
        .collect();
    reqs.sort_unstable();
    let want: Vec<String> = (0..40).map(|i| format!("lane-{i:02}")).collect();
    assert_eq!(reqs, want);
    assert!(
        spans
            .iter()
            .all(|s| s.resource_attr("service.name") == Some("Str(otlp-lanes)")),
        "{:?}",
        spans.iter().map(|s| &s.resource).collect::<Vec<_>>()
    );
}

#[test]
fn spans_arrive_over_several_grpc_connections() {
    export_over_connections(Protocol::Grpc);
}

#[test]
fn spans_arrive_over_several_http_connections() {
    export_over_connections(Protocol::HttpProtobuf);
}

/// With batches in flight on several connections, the collector's answers reach the counters
/// while the program sends nothing more: no flush, no shutdown needed.
#[test]
fn counters_follow_the_collectors_answers_without_a_flush() {
    let rotel = Rotel::start();
    let sink = OtlpSink::new(
        &format!("http://{}", rotel.grpc),
        Protocol::Grpc,
        &[],
        Duration::from_secs(5),
    )
    .and_then(|s| s.with_connections(3))
    .unwrap();
    let mut cfg = config();
    cfg.max_export_batch = 4;
    let mut s = session_using(cfg.sink(Box::new(sink)));
    for i in 0..10 {
        one_request(&format!("idle-{i}"));
    }
    let t = std::time::Instant::now();
    let stats = loop {
        let stats = s.guard.as_ref().unwrap().stats();
        if stats.spans_exported >= 40 || t.elapsed() > Duration::from_secs(20) {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stats.spans_exported, 40, "{stats:?}");
    assert_eq!(rotel.spans(40).len(), 40);
    let stats = s.guard.take().unwrap().shutdown();
    assert_eq!(stats.spans_exported, 40, "{stats:?}");
}

/// A program that is itself running on a Tokio runtime sets up, traces and shuts down from
/// inside it: the exporters' own runtimes are made, run and dropped on slicetrace's threads.
#[test]
fn works_from_inside_a_tokio_runtime() {
    let rotel = Rotel::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (protocol, endpoint) in [
        (Protocol::Grpc, format!("http://{}", rotel.grpc)),
        (
            Protocol::HttpProtobuf,
            format!("http://{}/v1/traces", rotel.http),
        ),
    ] {
        let stats = rt.block_on(async {
            let sink = OtlpSink::new(&endpoint, protocol, &[], Duration::from_secs(5))
                .and_then(|s| s.with_connections(2))
                .unwrap();
            let mut s = session_using(config().sink(Box::new(sink)));
            one_request(&format!("in-runtime-{protocol:?}"));
            s.guard.take().unwrap().shutdown()
        });
        assert_eq!(stats.spans_exported, 4, "{stats:?}");
    }
    let spans = rotel.spans(8);
    assert_eq!(spans.len(), 8);
}

/// A sink that never reaches a session (here: tracing already runs) is dropped on the
/// program's thread, which may be inside a Tokio runtime: no panic there.
#[test]
fn a_sink_dropped_inside_a_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _s = common::session();
    rt.block_on(async {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let sink = OtlpSink::new("http://127.0.0.1:9", protocol, &[], Duration::from_secs(1))
                .and_then(|s| s.with_connections(2))
                .unwrap();
            let refused = slicetrace::init(config().sink(Box::new(sink)));
            assert!(matches!(
                refused,
                Err(slicetrace::InitError::AlreadyRunning)
            ));
        }
    });
}

#[test]
fn connections_outside_one_to_sixteen_are_refused() {
    let sink = || {
        OtlpSink::new(
            "http://127.0.0.1:9",
            Protocol::Grpc,
            &[],
            Duration::from_secs(1),
        )
    };
    for n in [0, 17] {
        let e = sink().unwrap().with_connections(n).err().unwrap();
        assert!(e.to_string().contains("1 to 16"), "{e}");
    }
    assert!(sink().unwrap().with_connections(16).is_ok());
}

/// An OTLP/gRPC sink for a loopback port (a collector may or may not listen there).
fn grpc_sink(port: u16, timeout: Duration) -> OtlpSink {
    grpc_sink_over(port, timeout, 1)
}

fn grpc_sink_over(port: u16, timeout: Duration, connections: usize) -> OtlpSink {
    OtlpSink::new(
        &format!("http://127.0.0.1:{port}"),
        Protocol::Grpc,
        &[],
        timeout,
    )
    .and_then(|s| s.with_connections(connections))
    .unwrap()
}

fn one_request(text: &str) {
    let rid = slicetrace::req_start(text, None);
    slicetrace::slice_start(name!("work"), rid);
    slicetrace::slice_end(name!("work"), rid, End::PLAIN);
    slicetrace::req_finish(rid);
}

/// No collector at all: export fails, the losses are counted span for span, and shutdown ends
/// within its timeout.
#[test]
fn collector_down_losses_are_counted_and_shutdown_is_bounded() {
    let port = free_port();
    let sink = grpc_sink(port, Duration::from_millis(300));
    let mut cfg = config();
    cfg.shutdown_timeout = Duration::from_secs(2);
    let mut s = session_using(cfg.sink(Box::new(sink)));
    for i in 0..50 {
        one_request(&format!("down-{i}"));
    }
    let t = Instant::now();
    let stats = s.guard.take().unwrap().shutdown();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(30), "shutdown took {took:?}");
    assert_eq!(stats.spans_exported, 0);
    assert_eq!(
        stats.spans_export_failed + stats.spans_dropped_export,
        200,
        "{stats:?}"
    );
    assert!(stats.export_errors >= 1);
}

/// The collector comes up after tracing started: what was exported before is counted as lost,
/// export resumes by itself, and everything after arrives.
#[test]
fn export_resumes_when_the_collector_comes_up() {
    let (g, h) = (free_port(), free_port());
    let sink = grpc_sink(g, Duration::from_millis(300));
    let mut s = session_using(config().sink(Box::new(sink)));
    one_request("before-collector");
    assert!(s.guard.as_ref().unwrap().flush(Duration::from_secs(30)));
    let lost = slicetrace::stats();
    assert_eq!(lost.spans_exported, 0);
    assert_eq!(lost.spans_export_failed + lost.spans_dropped_export, 4);

    let rotel = Rotel::start_on(g, h);
    one_request("after-collector");
    let stats = s.guard.take().unwrap().shutdown();
    assert_eq!(stats.spans_exported, 4, "{stats:?}");
    let spans = rotel.spans(4);
    assert_eq!(spans.len(), 4);
    assert!(spans.iter().any(|s| s.name == " Req after-co"));
    assert!(!spans.iter().any(|s| s.name.starts_with(" Req before")));
}

/// The collector is killed mid-run and restarted on the same ports: while it is gone the losses
/// are counted, afterwards export resumes, and every span is accounted for exactly once.
#[test]
fn collector_killed_and_restarted_every_span_accounted_for() {
    killed_and_restarted(1, 64);
}

/// The same with three connections and batches of two spans: batches on every connection fail
/// while the collector is gone, and each is counted for its own spans.
#[test]
fn collector_killed_and_restarted_over_several_connections() {
    killed_and_restarted(3, 2);
}

fn killed_and_restarted(connections: usize, batch: usize) {
    let (g, h) = (free_port(), free_port());
    let sink = grpc_sink_over(g, Duration::from_millis(500), connections);
    let mut cfg = config();
    cfg.max_export_batch = batch;
    let mut s = session_using(cfg.sink(Box::new(sink)));
    let flush =
        |s: &common::Session| assert!(s.guard.as_ref().unwrap().flush(Duration::from_secs(60)));

    let first = Rotel::start_on(g, h);
    for i in 0..10 {
        one_request(&format!("first-{i}"));
    }
    flush(&s);
    assert_eq!(first.spans(40).len(), 40);
    drop(first); // killed

    for i in 0..10 {
        one_request(&format!("gone-{i}"));
    }
    flush(&s);
    let mid = slicetrace::stats();
    assert_eq!(mid.spans_exported, 40);
    assert_eq!(
        mid.spans_export_failed + mid.spans_dropped_export,
        40,
        "{mid:?}"
    );

    let second = Rotel::start_on(g, h);
    for i in 0..10 {
        one_request(&format!("again-{i}"));
    }
    let stats = s.guard.take().unwrap().shutdown();
    let spans = second.spans(40);
    assert_eq!(spans.len(), 40);
    assert!(spans.iter().all(|s| !s.name.starts_with(" Req gone")));
    assert_eq!(stats.spans_exported, 80, "{stats:?}");
    assert_eq!(
        stats.spans_exported + stats.spans_export_failed + stats.spans_dropped_export,
        120
    );
}

/// The collector hangs (SIGSTOP) mid-run, then resumes: exports time out and are counted, the
/// traced threads go on, export resumes, and every span is accounted for exactly once.
#[test]
fn collector_stopped_then_resumed_every_span_accounted_for() {
    let (g, h) = (free_port(), free_port());
    let sink = grpc_sink(g, Duration::from_millis(400));
    let mut s = session_using(config().sink(Box::new(sink)));
    let flush = |s: &common::Session| s.guard.as_ref().unwrap().flush(Duration::from_secs(60));

    let rotel = Rotel::start_on(g, h);
    for i in 0..10 {
        one_request(&format!("running-{i}"));
    }
    assert!(flush(&s));
    assert_eq!(rotel.spans(40).len(), 40);

    rotel.signal(libc::SIGSTOP);
    for i in 0..10 {
        one_request(&format!("stopped-{i}"));
    }
    flush(&s);
    let mid = slicetrace::stats();
    assert_eq!(mid.spans_exported, 40, "{mid:?}");
    assert_eq!(
        mid.spans_export_failed + mid.spans_dropped_export,
        40,
        "exports to a hung collector time out and are counted: {mid:?}"
    );
    assert!(mid.export_errors >= 1);

    rotel.signal(libc::SIGCONT);
    for i in 0..10 {
        one_request(&format!("resumed-{i}"));
    }
    let stats = s.guard.take().unwrap().shutdown();
    assert_eq!(stats.spans_exported, 80, "{stats:?}");
    assert_eq!(
        stats.spans_exported + stats.spans_export_failed + stats.spans_dropped_export,
        120
    );
    // A request that timed out on our side may still have been read by the collector once it
    // resumed: it is counted as failed here, since the exporter cannot know.
    let spans = rotel.spans(80);
    let resumed = spans
        .iter()
        .filter(|s| s.name.starts_with(" Req resumed"))
        .count();
    assert_eq!(resumed, 10);
    assert!(spans.len() >= 80 && spans.len() <= 120, "{}", spans.len());
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A sustained load against a collector that is down: memory stays bounded (the export queue
/// and the rings are the only buffers), and every span is accounted for.
#[test]
fn memory_stays_bounded_while_the_collector_is_down() {
    let port = free_port();
    let sink = grpc_sink(port, Duration::from_millis(200));
    let mut cfg = config();
    // A small queue, so the test reaches the bound quickly: 64 batches of 64 spans.
    cfg.export_queue_batches = 64;
    cfg.shutdown_timeout = Duration::from_secs(1);
    cfg.ring_capacity = 1 << 16;
    let mut s = session_using(cfg.sink(Box::new(sink)));
    let rid = slicetrace::req_start("steady", None);
    let mut samples = Vec::new();
    const ROUNDS: u64 = 20;
    const PAIRS: u64 = 20_000;
    for round in 0..ROUNDS {
        for _ in 0..PAIRS {
            slicetrace::slice_start(name!("step"), rid);
            slicetrace::slice_end(name!("step"), rid, End::PLAIN);
        }
        // Let the drainer read the ring, as a real server's pauses would (no record is lost
        // to a full ring, so what is lost below is the export's doing alone).
        while slicetrace::stats().records_read < slicetrace::stats().records_written {
            std::thread::sleep(Duration::from_millis(1));
        }
        if round >= ROUNDS / 4 {
            samples.push(resident_bytes());
        }
    }
    slicetrace::req_finish(rid);
    let stats = s.guard.take().unwrap().shutdown();
    let (lo, hi) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    eprintln!(
        "resident memory over the last {} rounds: {:.1}..{:.1} MiB",
        samples.len(),
        lo as f64 / 1048576.0,
        hi as f64 / 1048576.0
    );
    assert!(
        hi - lo < 32 << 20,
        "resident memory grew by {} MiB under a down collector",
        (hi - lo) >> 20
    );
    // Every slice, plus the room, request and thread spans, failed or was dropped, and is
    // counted.
    assert_eq!(stats.records_dropped_ring_full, 0);
    assert_eq!(stats.spans_exported, 0);
    assert_eq!(
        stats.spans_export_failed + stats.spans_dropped_export,
        ROUNDS * PAIRS + 3,
        "{stats:?}"
    );
    assert!(
        stats.spans_dropped_export > 0,
        "the queue bound was reached"
    );
}
