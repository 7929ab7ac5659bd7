//! Conversion throughput, spans per second: the whole `convert` path (OTLP/JSON lines read and
//! parsed on one thread, spans placed on their threads through their parents and trace-event
//! JSON written on another), and each of the two stages alone on one thread: the reader
//! (spans parsed and dropped) and the writer (on spans already in memory). As a yardstick in
//! the same run, since the machine is shared and its speed moves between runs: the same file
//! parsed line by line into `serde_json::Value`s, which converts nothing.
//!
//! `cargo bench -p slicetrace-cli --bench convert`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slicetrace_cli::synthetic::write_otlp_json;
use slicetrace_spans::model::{ProcessKey, Span};
use slicetrace_spans::writer::{Limits, TraceEventWriter};
use std::io::{BufRead, BufReader, BufWriter, Write};

#[global_allocator]
static ALLOC: slicetrace_cli::allocator::Allocator = mimalloc::MiMalloc;

const REQUESTS: u64 = 20_000;
/// Requests to a line of input.
const PER_LINE: u64 = 50;
/// Spans per run handed to the writer: a line's worth.
const RUN_SPANS: usize = (PER_LINE * slicetrace_cli::synthetic::SPANS_PER_REQUEST) as usize;

fn convert(c: &mut Criterion) {
    // As the command runs.
    slicetrace_cli::allocator::keep_freed_memory();
    let path = std::env::temp_dir().join(format!("slicetrace-bench-{}.jsonl", std::process::id()));
    let spans = {
        let mut w = BufWriter::new(std::fs::File::create(&path).unwrap());
        let n = write_otlp_json(&mut w, REQUESTS, PER_LINE).unwrap();
        w.flush().unwrap();
        n
    };
    let inputs = vec![path.clone()];
    let mut g = c.benchmark_group("convert");
    g.sample_size(10);
    g.throughput(Throughput::Elements(spans));
    g.bench_function("otlp_json_to_trace_events", |b| {
        b.iter(|| {
            let (skipped, stats) =
                slicetrace_cli::convert(&inputs, std::io::sink(), Limits::default()).unwrap();
            assert!(!skipped);
            assert_eq!(stats.slices, REQUESTS * 7);
        })
    });

    // The reading stage alone: lines parsed into spans, which are dropped.
    g.bench_function("otlp_json_reader", |b| {
        b.iter(|| {
            let mut n = 0u64;
            slicetrace_cli::read_all(&inputs, &mut |_, s| {
                n += 1;
                drop(s);
                Ok(())
            })
            .unwrap();
            assert_eq!(n, spans);
        })
    });

    // The yardstick: each line parsed into a generic JSON tree, and dropped.
    g.bench_function("peer/serde_json_value", |b| {
        b.iter(|| {
            let mut lines = 0u64;
            let mut r = BufReader::new(std::fs::File::open(&path).unwrap());
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).unwrap() > 0 {
                let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                lines += v.is_object() as u64;
                line.clear();
            }
            assert_eq!(lines, REQUESTS.div_ceil(PER_LINE));
        })
    });

    // The same spans, parsed once, through the writer alone, in runs of one process as
    // `convert` hands them over (one key per run, not a key compared for every span).
    let mut parsed: Vec<(ProcessKey, Vec<Span>)> = Vec::new();
    slicetrace_cli::read_all(&inputs, &mut |p, s| {
        match parsed.last_mut() {
            Some((last, run)) if last == p && run.len() < RUN_SPANS => run.push(s),
            _ => parsed.push((p.clone(), vec![s])),
        }
        Ok(())
    })
    .unwrap();
    g.bench_function("trace_event_writer", |b| {
        b.iter_batched(
            || parsed.clone(),
            |runs| {
                let mut w = TraceEventWriter::new(std::io::sink(), Limits::default()).unwrap();
                for (p, mut spans) in runs {
                    w.push_all(&p, &mut spans).unwrap();
                }
                let (_, stats) = w.finish().unwrap();
                assert_eq!(stats.slices, REQUESTS * 7);
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, convert);
criterion_main!(benches);
