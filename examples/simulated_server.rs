//! A simulated LLM inference server, traced: a tokenizer thread, one scheduler thread per tensor
//! parallel rank, and a detokenizer thread pass requests through channels with their propagated
//! context; each scheduler runs prefill, then a batched decode loop.
//!
//! Run: `cargo run --release --example simulated_server`. Spans go to `slicetrace-trace.json`
//! (or the path in `SLICETRACE_FILE`), a trace-event file to drop into ui.perfetto.dev; with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set they go to that collector instead (docs/api.md lists
//! the other `OTEL_*` variables). `SIM_REQUESTS` and `SIM_TP` change the load.

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use slicetrace::options::Opts;
use slicetrace::{name, Attr, Config, End, Name, PropagateContext, Rid};
use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

static PROMPT_TOKENS: Name = Name::new("prompt_tokens");
static OUTPUT_TOKENS: Name = Name::new("output_tokens");
static BATCH_SIZE: Name = Name::new("batch_size");

/// What travels between the server's threads: the request and its trace context.
struct Msg {
    rid: Rid,
    ctx: [u8; slicetrace::limits::CONTEXT_LEN],
    output_tokens: usize,
}

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Busy work standing in for tokenizing, attention kernels and so on.
fn work(micros: u64) {
    let until = Instant::now() + Duration::from_micros(micros);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

fn rid_text(i: usize) -> String {
    // Looks like the reference's uuid hex ids.
    format!(
        "{:016x}{:016x}",
        0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1),
        i
    )
}

/// The tokenizer finishes a request once every part of the server is done with it: the
/// detokenizer (after TP 0) and each other TP rank, which decode it in step with TP 0 but may
/// still be writing its last decode when TP 0's path is through.
fn tokenizer(n: usize, to_sched: Vec<Sender<Msg>>, done: Receiver<Rid>) {
    let parts = to_sched.len();
    slicetrace::set_thread_info("tokenizer", None, Some(0));
    let mut open = HashMap::new();
    for i in 0..n {
        let text = rid_text(i);
        let rid = slicetrace::req_start(text.as_str(), None);
        slicetrace::slice_start(name!("tokenize"), rid);
        work(40);
        slicetrace::options::slice_end_with(
            name!("tokenize"),
            rid,
            End::PLAIN,
            Opts::attrs(&[Attr::new(&PROMPT_TOKENS, 64 + (i % 7) as i64 * 32)]),
        );
        let ctx = slicetrace::propagate_context(rid).expect("started on this thread");
        let output_tokens = 4 + i % 13;
        for tx in &to_sched {
            let _ = tx.send(Msg {
                rid,
                ctx: ctx.to_bytes(),
                output_tokens,
            });
        }
        open.insert(rid, (output_tokens, parts));
        if i % 8 == 7 {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Between arrivals, hand finished requests back as they complete.
        while let Ok(rid) = done.try_recv() {
            finish(&mut open, rid);
        }
    }
    drop(to_sched);
    for rid in done {
        finish(&mut open, rid);
    }
}

fn finish(open: &mut HashMap<Rid, (usize, usize)>, rid: Rid) {
    let Some((tokens, waiting)) = open.get_mut(&rid) else {
        return;
    };
    *waiting -= 1;
    if *waiting == 0 {
        let tokens = *tokens;
        open.remove(&rid);
        slicetrace::options::req_finish_with(
            rid,
            Opts::attrs(&[Attr::new(&OUTPUT_TOKENS, tokens as i64)]),
        );
    }
}

struct Running {
    rid: Rid,
    left: usize,
    ctx_bytes: [u8; slicetrace::limits::CONTEXT_LEN],
}

/// TP 0 hands each finished request on to the detokenizer; the other ranks report it done.
enum Onward {
    Detokenizer(Sender<Msg>),
    Done(Sender<Rid>),
}

fn scheduler(tp: u32, inbox: Receiver<Msg>, onward: Onward) {
    slicetrace::set_thread_info("scheduler", Some(tp), Some(0));
    let mut running: Vec<Running> = Vec::new();
    let mut inbox_open = true;
    while inbox_open || !running.is_empty() {
        // Admit what has arrived: queue wait, then prefill.
        loop {
            let msg = if running.is_empty() && inbox_open {
                inbox.recv().map_err(|_| ())
            } else {
                inbox.try_recv().map_err(|_| ())
            };
            let Ok(msg) = msg else {
                if running.is_empty() {
                    inbox_open = false;
                }
                break;
            };
            let ctx = PropagateContext::from_bytes(&msg.ctx).expect("valid context");
            slicetrace::set_propagate_context(msg.rid, &ctx);
            slicetrace::slice_start_anon(msg.rid);
            slicetrace::slice_end(name!("queue wait"), msg.rid, End::AUTO_NEXT_ANON);
            work(120);
            slicetrace::slice_end(name!("prefill"), msg.rid, End::AUTO_NEXT_ANON);
            running.push(Running {
                rid: msg.rid,
                left: msg.output_tokens,
                ctx_bytes: msg.ctx,
            });
        }
        if running.is_empty() {
            continue;
        }
        // One decode step for the whole batch.
        work(30 + running.len() as u64);
        for r in &mut running {
            r.left -= 1;
        }
        let batch: Vec<(Rid, bool)> = running.iter().map(|r| (r.rid, r.left == 0)).collect();
        slicetrace::slice_batch(name!("decode"), &batch);
        if tp == 0 {
            slicetrace::options::event_with(
                name!("decode step"),
                running[0].rid,
                Opts::attrs(&[Attr::new(&BATCH_SIZE, running.len())]),
            );
        }
        running.retain(|r| {
            if r.left > 0 {
                return true;
            }
            match &onward {
                Onward::Detokenizer(tx) => {
                    // The finished request goes on to the detokenizer with its context.
                    let ctx = slicetrace::propagate_context(r.rid);
                    let ctx = ctx.map(|c| c.to_bytes()).unwrap_or(r.ctx_bytes);
                    let _ = tx.send(Msg {
                        rid: r.rid,
                        ctx,
                        output_tokens: 0,
                    });
                }
                Onward::Done(tx) => {
                    let _ = tx.send(r.rid);
                }
            }
            false
        });
    }
}

fn detokenizer(inbox: Receiver<Msg>, done: Sender<Rid>) {
    slicetrace::set_thread_info("detokenizer", None, Some(0));
    for msg in inbox {
        let ctx = PropagateContext::from_bytes(&msg.ctx).expect("valid context");
        slicetrace::set_propagate_context(msg.rid, &ctx);
        slicetrace::slice_start(name!("detokenize"), msg.rid);
        work(25);
        slicetrace::slice_end(name!("detokenize"), msg.rid, End::THREAD_FINISH);
        let _ = done.send(msg.rid);
    }
}

/// Drops every span: the cost probe's session exports nowhere.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

/// Nanoseconds per call of a slice start+end pair, and of a raw clock read, measured here. The
/// probe runs in a session of its own that discards its spans, once the server's trace is
/// complete, so none of its slices lands in that trace.
fn measure_cost() -> Result<(f64, f64), slicetrace::InitError> {
    // Small enough to fit the ring between flushes, so no call meets a full ring.
    const PAIRS: u64 = 1024;
    const ROUNDS: u64 = 8;
    let mut cfg = Config::new("cost-probe").exporter(Discard);
    cfg.announce = false;
    // One pass of the rounds below fills the ring once.
    cfg.ring_capacity = (2 * PAIRS * ROUNDS) as usize;
    let guard = slicetrace::init(cfg)?;
    let rid = slicetrace::req_start("cost-probe", None);
    let mut traced = Duration::ZERO;
    // The first pass writes the whole of this thread's new ring, untimed, so that the timed
    // one meets resident pages, as a server's long-lived thread does.
    for timed in [false, true] {
        for _ in 0..ROUNDS {
            guard.flush(Duration::from_secs(5));
            let t = Instant::now();
            for _ in 0..PAIRS {
                slicetrace::slice_start(name!("probe"), std::hint::black_box(rid));
                slicetrace::slice_end(name!("probe"), std::hint::black_box(rid), End::PLAIN);
            }
            if timed {
                traced += t.elapsed();
            }
        }
    }
    slicetrace::req_finish(rid);
    guard.shutdown();
    let clock = quanta::Clock::new();
    let t = Instant::now();
    for _ in 0..PAIRS * ROUNDS * 2 {
        std::hint::black_box(clock.raw());
    }
    let raw = t.elapsed();
    let calls = (PAIRS * ROUNDS * 2) as f64;
    Ok((
        traced.as_nanos() as f64 / calls,
        raw.as_nanos() as f64 / calls,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests = env_num("SIM_REQUESTS", 200);
    let tp = env_num("SIM_TP", 2).max(1) as u32;
    let cfg = Config::from_env_or_file("simulated-llm-server", "slicetrace-trace.json")?;
    let dest = cfg.destination().unwrap_or_default().to_owned();
    let guard = slicetrace::init(cfg)?;
    let started = Instant::now();

    let (done_tx, done_rx) = channel();
    let (detok_tx, detok_rx) = channel();
    let detok = std::thread::Builder::new()
        .name("detokenizer".into())
        .spawn({
            let done_tx = done_tx.clone();
            move || detokenizer(detok_rx, done_tx)
        })?;
    let mut sched_txs = Vec::new();
    let mut scheds = Vec::new();
    for rank in 0..tp {
        let (tx, rx) = channel();
        sched_txs.push(tx);
        let onward = if rank == 0 {
            Onward::Detokenizer(detok_tx.clone())
        } else {
            Onward::Done(done_tx.clone())
        };
        scheds.push(
            std::thread::Builder::new()
                .name(format!("scheduler-tp{rank}"))
                .spawn(move || scheduler(rank, rx, onward))?,
        );
    }
    drop((detok_tx, done_tx));
    let tok = std::thread::Builder::new()
        .name("tokenizer".into())
        .spawn(move || tokenizer(requests, sched_txs, done_rx))?;
    for s in scheds {
        s.join().expect("scheduler");
    }
    detok.join().expect("detokenizer");
    tok.join().expect("tokenizer");
    let served = started.elapsed();

    let clock = guard.clock_source();
    let stats = guard.shutdown();
    let (per_call, per_raw_read) = measure_cost()?;
    println!("simulated server: {requests} requests on {tp} TP ranks in {served:.2?}");
    println!(
        "spans exported: {} (to {dest}); requests finished: {}",
        stats.spans_exported, stats.requests_finished
    );
    println!(
        "records written: {}, dropped (ring full): {}, unknown request: {}; spans failed to export: {}, dropped (export queue full): {}",
        stats.records_written,
        stats.records_dropped_ring_full,
        stats.unknown_rid_records,
        stats.spans_export_failed,
        stats.spans_dropped_export
    );
    println!(
        "tracing cost: {per_call:.1} ns per call (slice start/end), a raw clock read here: {per_raw_read:.1} ns"
    );
    println!("clock: {clock}");
    Ok(())
}
