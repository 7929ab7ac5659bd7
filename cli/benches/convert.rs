//! Conversion throughput, spans per second: the whole `convert` path (OTLP/JSON lines read and
//! parsed on one thread, spans placed on their threads through their parents and trace-event
//! JSON written on another), and each of the two stages alone on one thread: the reader
//! (spans parsed and dropped) and the writer (on spans already in memory).
//!
//! `cargo bench -p slicetrace-cli --bench convert`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slicetrace::trace_event::model::{ProcessKey, Span};
use slicetrace::trace_event::writer::{Limits, TraceEventWriter};
use slicetrace_cli::synthetic::write_otlp_json;
use std::io::{BufWriter, Write};

#[global_allocator]
static ALLOC: slicetrace_cli::allocator::Allocator = mimalloc::MiMalloc;

const REQUESTS: u64 = 20_000;

fn convert(c: &mut Criterion) {
    // As the command runs.
    slicetrace_cli::allocator::keep_freed_memory();
    let path = std::env::temp_dir().join(format!("slicetrace-bench-{}.jsonl", std::process::id()));
    let spans = {
        let mut w = BufWriter::new(std::fs::File::create(&path).unwrap());
        let n = write_otlp_json(&mut w, REQUESTS, 50).unwrap();
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

    // The same spans, parsed once, through the writer alone.
    let mut parsed: Vec<(ProcessKey, Span)> = Vec::with_capacity(spans as usize);
    slicetrace_cli::read_all(&inputs, &mut |p, s| {
        parsed.push((p.clone(), s));
        Ok(())
    })
    .unwrap();
    g.bench_function("trace_event_writer", |b| {
        b.iter_batched(
            || parsed.clone(),
            |spans| {
                let mut w = TraceEventWriter::new(std::io::sink(), Limits::default()).unwrap();
                for (p, s) in spans {
                    w.push(&p, s).unwrap();
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
