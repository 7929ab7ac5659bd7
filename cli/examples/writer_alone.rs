//! The trace-event writer once over a synthetic trace, for instruction counts, which the noise
//! of a shared machine does not move as it moves times:
//!
//! ```text
//! cargo build --release -p slicetrace-cli --example writer_alone
//! valgrind --tool=callgrind target/release/examples/writer_alone read
//! valgrind --tool=callgrind target/release/examples/writer_alone write [OUT]
//! ```
//!
//! `read` makes and parses the spans only; `write` also writes them (to `OUT` if given), so
//! the writer's count is the difference; `write` also prints the writer's own time. `REQUESTS` in the environment sets the trace's size
//! (5 000 requests, 50 000 spans, by default).

use slicetrace_cli::synthetic::write_otlp_json;
use slicetrace_spans::model::{ProcessKey, Span};
use slicetrace_spans::writer::{Limits, TraceEventWriter};
use std::io::{BufWriter, Write};

#[global_allocator]
static ALLOC: slicetrace_cli::allocator::Allocator = mimalloc::MiMalloc;

/// Spans per run handed to the writer, as `convert` hands them over.
const RUN_SPANS: usize = 500;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let out_path = args.next();
    let requests = std::env::var("REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    slicetrace_cli::allocator::keep_freed_memory();
    let input = std::env::temp_dir().join(format!("writer-alone-{}.jsonl", std::process::id()));
    {
        let mut w = BufWriter::new(std::fs::File::create(&input).unwrap());
        write_otlp_json(&mut w, requests, 50).unwrap();
        w.flush().unwrap();
    }
    let mut runs: Vec<(ProcessKey, Vec<Span>)> = Vec::new();
    slicetrace_cli::read_all(std::slice::from_ref(&input), &mut |p, s| {
        match runs.last_mut() {
            Some((last, run)) if last == p && run.len() < RUN_SPANS => run.push(s),
            _ => runs.push((p.clone(), vec![s])),
        }
        Ok(())
    })
    .unwrap();
    let _ = std::fs::remove_file(&input);
    if mode != "write" {
        return;
    }
    let out: Box<dyn Write> = match out_path {
        Some(p) => Box::new(BufWriter::new(std::fs::File::create(p).unwrap())),
        None => Box::new(std::io::sink()),
    };
    let began = std::time::Instant::now();
    let mut w = TraceEventWriter::new(out, Limits::default()).unwrap();
    for (p, mut spans) in runs {
        w.push_all(&p, &mut spans).unwrap();
    }
    let (_, stats) = w.finish().unwrap();
    let took = began.elapsed();
    println!(
        "{} spans, {} bytes, {:.1} ms ({:.2} M spans/s)",
        stats.spans,
        stats.bytes,
        took.as_secs_f64() * 1e3,
        stats.spans as f64 / took.as_secs_f64() / 1e6
    );
}
