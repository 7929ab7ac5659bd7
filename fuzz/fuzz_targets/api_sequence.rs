//! Sequences of API calls, driven by the fuzzer's bytes over four request ids and two traced
//! threads (real threads, each call run in turn), then a shutdown. The exported spans must
//! satisfy the tree invariants, and their number what a small model of the calls predicts:
//!
//! - span ids are unique; every parent of a local span is exported; slices lie inside their
//!   parent slice or thread span; every link points to an exported span;
//! - every slice opened for a request that is started at some point (by `slice_start`,
//!   `slice_start_anon`, `AUTO_NEXT_ANON`, or an unfinished `slice_batch` item) is exported
//!   exactly once, finished or marked unfinished, less those refused past the depth limit
//!   (counted);
//! - every record written is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use slicetrace::{name, End, Name, PropagateContext, Rid};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
struct Keep(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Keep {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().append(&mut batch);
        Ok(())
    }
}

static NAMES: [Name; 3] = [Name::new("a"), Name::new("b"), Name::new("c")];

#[derive(Clone, Copy, Debug)]
enum Op {
    Start(u8),
    Finish(u8),
    SliceStart(u8, u8),
    SliceAnon(u8),
    SliceEnd(u8, u8, u8),
    Event(u8),
    Attr(u8),
    Batch(u8, u8),
    /// Take the context on this thread, set it on the other.
    Propagate(u8),
}

fn decode(data: &[u8]) -> Vec<(usize, Op)> {
    data.chunks_exact(2)
        .take(200)
        .map(|c| {
            let (a, b) = (c[0], c[1]);
            let thread = (a >> 7) as usize;
            let rid = a & 3;
            let op = match (a >> 2) & 0x1f {
                0..=2 => Op::Start(rid),
                3 => Op::Finish(rid),
                4..=10 => Op::SliceStart(rid, b % 3),
                11..=12 => Op::SliceAnon(rid),
                13..=20 => Op::SliceEnd(rid, b % 3, (b >> 2) % 3),
                21 => Op::Event(rid),
                22 => Op::Attr(rid),
                23..=26 => Op::Batch(rid, b),
                _ => Op::Propagate(rid),
            };
            (thread, op)
        })
        .collect()
}

/// What the model expects: slice opens that count.
#[derive(Default)]
struct Model {
    started_ever: HashSet<u8>,
    finished: HashSet<u8>,
    /// Opens of slices per rid, to be checked once we know whether the rid was ever started.
    opens: HashMap<u8, u64>,
}

fn rid(r: u8) -> Rid {
    Rid(0xF0F0_0000 + r as u64)
}

type Job = Box<dyn FnOnce() + Send>;

fuzz_target!(|data: &[u8]| {
    let ops = decode(data);
    // Ops on a request after its finish are left out (their outcome depends on timing); a new
    // start of it is kept.
    let mut model = Model::default();
    let mut plan = Vec::new();
    for (t, op) in ops {
        let r = match op {
            Op::Start(r)
            | Op::Finish(r)
            | Op::SliceStart(r, _)
            | Op::SliceAnon(r)
            | Op::SliceEnd(r, _, _)
            | Op::Event(r)
            | Op::Attr(r)
            | Op::Batch(r, _)
            | Op::Propagate(r) => r,
        };
        match op {
            Op::Start(_) => {
                model.finished.remove(&r);
                model.started_ever.insert(r);
            }
            _ if model.finished.contains(&r) => continue,
            Op::Finish(_) => {
                model.finished.insert(r);
            }
            Op::SliceStart(..) | Op::SliceAnon(_) => *model.opens.entry(r).or_default() += 1,
            Op::SliceEnd(_, _, flags) if flags == 1 => *model.opens.entry(r).or_default() += 1,
            Op::Batch(_, b) if b & 1 == 0 => *model.opens.entry(r).or_default() += 1,
            _ => {}
        }
        plan.push((t, op));
    }

    let keep = Keep::default();
    let mut cfg = slicetrace::Config::new("fuzz").exporter(keep.clone());
    cfg.announce = false;
    cfg.report_losses_every = None;
    cfg.sweep_interval = Duration::from_millis(1);
    // Nothing closes or gives up on timing: shutdown decides, the same way every run.
    cfg.finish_grace = Duration::from_secs(3600);
    cfg.park_timeout = Duration::from_secs(3600);
    cfg.idle_timeout = Duration::from_secs(3600);
    cfg.joined_linger = Duration::from_secs(3600);
    let guard = slicetrace::init(cfg).unwrap();

    let workers: Vec<(Sender<Job>, std::thread::JoinHandle<()>)> = (0..2)
        .map(|i| {
            let (tx, rx) = channel::<Job>();
            let h = std::thread::spawn(move || {
                slicetrace::set_thread_info("worker", Some(i), None);
                for job in rx {
                    job();
                }
            });
            (tx, h)
        })
        .collect();
    let run = |t: usize, job: Job| {
        let (done_tx, done_rx) = channel();
        workers[t]
            .0
            .send(Box::new(move || {
                job();
                let _ = done_tx.send(());
            }))
            .unwrap();
        done_rx.recv().unwrap();
    };
    for (t, op) in plan {
        match op {
            Op::Start(r) => run(
                t,
                Box::new(move || {
                    slicetrace::req_start(rid(r), None);
                }),
            ),
            Op::Finish(r) => run(t, Box::new(move || slicetrace::req_finish(rid(r)))),
            Op::SliceStart(r, n) => run(
                t,
                Box::new(move || slicetrace::slice_start(&NAMES[n as usize], rid(r))),
            ),
            Op::SliceAnon(r) => run(t, Box::new(move || slicetrace::slice_start_anon(rid(r)))),
            Op::SliceEnd(r, n, f) => {
                let end = [End::PLAIN, End::AUTO_NEXT_ANON, End::THREAD_FINISH][f as usize];
                run(
                    t,
                    Box::new(move || slicetrace::slice_end(&NAMES[n as usize], rid(r), end)),
                )
            }
            Op::Event(r) => run(t, Box::new(move || slicetrace::event(name!("ev"), rid(r)))),
            Op::Attr(r) => run(
                t,
                Box::new(move || {
                    slicetrace::slice_add_attr(rid(r), &[slicetrace::Attr::new(&NAMES[0], 7i64)])
                }),
            ),
            Op::Batch(r, b) => run(
                t,
                Box::new(move || slicetrace::slice_batch(name!("step"), &[(rid(r), b & 1 == 1)])),
            ),
            Op::Propagate(r) => {
                let (ctx_tx, ctx_rx) = channel::<Option<[u8; slicetrace::limits::CONTEXT_LEN]>>();
                run(
                    t,
                    Box::new(move || {
                        let _ = ctx_tx
                            .send(slicetrace::propagate_context(rid(r)).map(|c| c.to_bytes()));
                    }),
                );
                if let Some(bytes) = ctx_rx.recv().unwrap() {
                    let ctx = PropagateContext::from_bytes(&bytes).unwrap();
                    run(
                        1 - t,
                        Box::new(move || slicetrace::set_propagate_context(rid(r), &ctx)),
                    );
                }
            }
        }
    }
    for (tx, h) in workers {
        drop(tx);
        h.join().unwrap();
    }
    let stats = guard.shutdown();
    let spans = keep.0.lock().unwrap().clone();

    // Every record written was read.
    assert_eq!(stats.records_read, stats.records_written, "{stats:?}");
    assert_eq!(stats.records_dropped_ring_full, 0);

    let ids: HashMap<u64, &SpanData> = spans
        .iter()
        .map(|s| (u64::from_be_bytes(s.span_context.span_id().to_bytes()), s))
        .collect();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");
    let nanos = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let is_request = |s: &SpanData| s.name.starts_with(" Req ");
    let is_slice = |s: &SpanData| {
        !is_request(s) && !s.name.starts_with("Bootstrap Room ") && !s.name.starts_with("worker")
    };
    let mut slices_by_rid: HashMap<u8, u64> = HashMap::new();
    for s in &spans {
        let parent = u64::from_be_bytes(s.parent_span_id.to_bytes());
        if parent != 0 && !s.parent_span_is_remote {
            let p = ids
                .get(&parent)
                .unwrap_or_else(|| panic!("{} has no exported parent", s.name));
            assert_eq!(p.span_context.trace_id(), s.span_context.trace_id());
            if is_slice(s) {
                assert!(
                    nanos(s.start_time) >= nanos(p.start_time),
                    "{} starts before its parent",
                    s.name
                );
                assert!(
                    nanos(s.end_time) <= nanos(p.end_time),
                    "{} ends after its parent {}",
                    s.name,
                    p.name
                );
            }
        }
        assert!(s.end_time >= s.start_time);
        for l in s.links.iter() {
            let target = u64::from_be_bytes(l.span_context.span_id().to_bytes());
            assert!(
                ids.contains_key(&target),
                "{} links to a span not exported",
                s.name
            );
        }
        if is_slice(s) {
            // The slice's request: walk up to the request span, whose rid attribute names it.
            let mut at: &SpanData = s;
            while !is_request(at) {
                match ids.get(&u64::from_be_bytes(at.parent_span_id.to_bytes())) {
                    Some(p) => at = p,
                    None => break,
                }
            }
            let r = at
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "rid")
                .map(|kv| kv.value.as_str().parse::<u64>().unwrap())
                .expect("request span with its rid");
            *slices_by_rid.entry((r - 0xF0F0_0000) as u8).or_default() += 1;
        }
    }
    let expected: u64 = model
        .opens
        .iter()
        .filter(|(r, _)| model.started_ever.contains(r))
        .map(|(_, n)| n)
        .sum();
    let exported: u64 = slices_by_rid.values().sum();
    assert_eq!(
        exported + stats.slices_dropped_depth,
        expected,
        "slices exported {slices_by_rid:?}, expected opens {:?} of started {:?}; {stats:?}",
        model.opens,
        model.started_ever
    );
});
