//! Writes a synthetic collector export and a PyTorch profiler trace of the same requests, on
//! the same clock, to measure `convert -f` on inputs of any size:
//!
//! ```text
//! cargo run --release -p slicetrace-cli --example synthetic_traces -- DIR REQUESTS OPS
//! slicetrace convert DIR/spans.jsonl -f DIR/torch.trace.json -o DIR/merged.trace.json
//! ```
//!
//! `OPS` is the CPU ops (each launching a kernel) per request's profiler step; about 1.3 kB of
//! profiler trace each.

use slicetrace_cli::synthetic::{write_kineto, write_otlp_json};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let requests = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let ops = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let mut spans = BufWriter::new(std::fs::File::create(dir.join("spans.jsonl"))?);
    let n = write_otlp_json(&mut spans, requests, 50)?;
    spans.flush()?;
    let mut torch = BufWriter::new(std::fs::File::create(dir.join("torch.trace.json"))?);
    let events = write_kineto(&mut torch, requests, ops)?;
    torch.flush()?;
    eprintln!("{n} spans, {events} profiler events");
    Ok(())
}
