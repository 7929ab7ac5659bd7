//! The local trace file: a tokenizer and a TP scheduler thread write a Perfetto trace-event file,
//! which is checked against the format's rules and for what it must show: named tracks, nested
//! slices, flow arrows for links across threads, requests as async slices with their rid,
//! span events as instants, overlapping slices of two requests on overlap lanes, and a decode
//! loop's batches (`slice_batch`, the last one finishing the thread).

mod common;

use common::trace_events::{ns, At, Slice, TraceFile};
use common::*;
use slicetrace::export::PerfettoExporter;
use slicetrace::{name, End, PropagateContext, Rid};
use std::sync::mpsc;

fn temp_path(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "slicetrace-test-{tag}-{}.trace.json",
        std::process::id()
    ))
}

fn scheduler(rx: mpsc::Receiver<(Rid, [u8; slicetrace::limits::CONTEXT_LEN])>) {
    slicetrace::set_thread_info("scheduler", Some(0), None);
    let mut live = Vec::new();
    for _ in 0..2 {
        let (rid, bytes) = rx.recv().unwrap();
        slicetrace::set_propagate_context(rid, &PropagateContext::from_bytes(&bytes).unwrap());
        live.push(rid);
    }
    let (a, b) = (live[0], live[1]);
    // Two requests' slices that overlap without nesting.
    slicetrace::slice_start(name!("prefill"), a);
    slicetrace::slice_start(name!("prefill"), b);
    slicetrace::slice_end(name!("prefill"), a, End::PLAIN);
    slicetrace::slice_end(name!("prefill"), b, End::PLAIN);
    // The decode loop: each step ends every request's current slice as "decode" and opens the
    // next with one clock read; the last step finishes both requests on this thread.
    for &rid in &live {
        slicetrace::slice_start_anon(rid);
    }
    for step in 0..DECODE_STEPS {
        let batch: Vec<(Rid, bool)> = live
            .iter()
            .map(|&r| (r, step == DECODE_STEPS - 1))
            .collect();
        slicetrace::slice_batch(name!("decode"), &batch);
    }
}

const DECODE_STEPS: usize = 3;

#[test]
fn tokenizer_and_scheduler_make_a_valid_nested_linked_trace_file() {
    let path = temp_path("scenario");
    let mut s = session_using(config().exporter(PerfettoExporter::create(&path).unwrap()));
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || scheduler(rx));
    slicetrace::set_thread_info("tokenizer", None, None);
    let mut rids = Vec::new();
    for text in ["req-alpha-0001", "req-beta-00002"] {
        let rid = slicetrace::req_start(text, None);
        slicetrace::slice_start(name!("tokenize"), rid);
        slicetrace::slice_start(name!("encode"), rid);
        slicetrace::event(name!("vocab loaded"), rid);
        slicetrace::slice_end(name!("encode"), rid, End::PLAIN);
        let ctx = slicetrace::propagate_context(rid).unwrap();
        slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);
        tx.send((rid, ctx.to_bytes())).unwrap();
        rids.push((text, rid));
    }
    worker.join().unwrap();
    for &(_, rid) in &rids {
        slicetrace::req_finish(rid);
    }
    let (_, stats) = s.finish();
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let f = TraceFile::check(&text);

    // Per request: tokenize, encode, prefill, 3 decode slices; plus a room, a request and two
    // thread spans each that are not drawn as slices. Room and request spans are async slices.
    assert_eq!(f.slices.len(), 2 * 6);
    assert_eq!(stats.spans_exported as usize, 2 * 6 + 2 * 4);
    assert_eq!(f.requests.len(), 2 * 2);
    let rooms = f
        .requests
        .values()
        .filter(|(name, args)| {
            name == "Bootstrap Room 0x0" && args["bootstrap_room"].as_str() == Some("0x0")
        })
        .count();
    assert_eq!(rooms, 2, "a room span above each request");
    for (text, _) in &rids {
        assert!(
            f.requests
                .values()
                .any(|(_, args)| args["rid"].as_str() == Some(text)),
            "request {text} has an async slice with its rid"
        );
        let mine: Vec<_> = f
            .slices
            .iter()
            .filter(|s| s.arg_str("rid") == Some(text))
            .collect();
        assert_eq!(mine.len(), 6, "every slice of {text} carries its rid");
    }
    let names: Vec<&String> = f.thread_names.values().collect();
    assert!(names.iter().any(|n| n.as_str() == "tokenizer"), "{names:?}");
    assert!(
        names.iter().any(|n| n.as_str() == "scheduler [TP 0]"),
        "{names:?}"
    );
    assert!(f
        .process_names
        .values()
        .all(|n| n.contains("slicetrace-test")));

    // Nested slices are kept: each encode lies inside its tokenize, on the same track.
    for enc in f.named("encode") {
        let parent = f
            .by_span_id(enc.arg_str("parent_span_id").unwrap())
            .expect("encode's parent is in the file");
        assert_eq!(parent.name, "tokenize");
        assert_eq!((parent.pid, parent.tid), (enc.pid, enc.tid));
        assert!(parent.start_ns <= enc.start_ns && enc.end_ns <= parent.end_ns);
    }
    // The span event is an instant inside encode.
    assert_eq!(f.instants.len(), 2);
    for (pid, tid, ts, name) in &f.instants {
        assert_eq!(name, "vocab loaded");
        assert_eq!(f.enclosing((*pid, *tid, *ts)).unwrap().name, "encode");
    }

    // The two prefills overlap without nesting: one is on an overlap lane of the scheduler.
    let prefills = f.named("prefill");
    assert_eq!(prefills.len(), 2);
    assert_ne!(prefills[0].tid, prefills[1].tid);
    let lane = prefills.iter().map(|p| p.tid).max().unwrap();
    assert!(f.thread_names[&(prefills[0].pid, lane)].starts_with("scheduler [TP 0] · overlap"));

    // The decode batches: per request, slices back to back (one instant ends one and opens the
    // next), ending at the same instants for both requests (one clock read per batch).
    let decodes = |text: &str| {
        let mut v: Vec<&Slice> = f
            .named("decode")
            .into_iter()
            .filter(|s| s.arg_str("rid") == Some(text))
            .collect();
        v.sort_by_key(|s| s.start_ns);
        v
    };
    let (da, db) = (decodes(rids[0].0), decodes(rids[1].0));
    assert_eq!((da.len(), db.len()), (DECODE_STEPS, DECODE_STEPS));
    for d in [&da, &db] {
        for w in d.windows(2) {
            assert_eq!(w[0].end_ns, w[1].start_ns, "{:?}", w[1].args);
        }
    }
    for (x, y) in da.iter().zip(&db) {
        assert_eq!(x.end_ns, y.end_ns, "both requests' decodes end together");
    }
    // The last batch finished both requests on the scheduler: it opened no next slice, which
    // the request's end would have closed as unfinished.
    assert!(
        f.slices
            .iter()
            .all(|s| s.arg("slicetrace.unfinished").is_none()),
        "no slice is unfinished"
    );
    for (text, d) in [(rids[0].0, &da), (rids[1].0, &db)] {
        let last = d.last().unwrap();
        let after: Vec<&str> = f
            .slices
            .iter()
            .filter(|s| s.arg_str("rid") == Some(text) && s.start_ns >= last.end_ns)
            .map(|s| s.name.as_str())
            .collect();
        assert!(after.is_empty(), "{text}: {after:?} after its last decode");
    }

    // Each link is a flow arrow that ends where its linking slice starts, on its track, and
    // starts on the linked slice's track, inside it. Slices starting at one point of one track
    // (a batch's decodes) share the arrows ending there: the file cannot tell which is whose.
    let mut linking: std::collections::BTreeMap<(u64, u64, i64), Vec<&Slice>> = Default::default();
    for s in &f.slices {
        if s.arg("links").is_some() {
            linking
                .entry((s.pid, s.tid, s.start_ns))
                .or_default()
                .push(s);
        }
    }
    let mut linked = 0;
    for (&(pid, tid, start_ns), group) in &linking {
        let mut starts: Vec<At> = f
            .flows
            .values()
            .filter(|(_, fin)| (fin.0, fin.1, ns(fin.2)) == (pid, tid, start_ns))
            .map(|(start, _)| *start)
            .collect();
        let names: Vec<&str> = group.iter().map(|s| s.name.as_str()).collect();
        for s in group {
            for l in s.arg("links").unwrap().as_array().unwrap() {
                let target_span = l.as_str().unwrap().split('-').nth(1).unwrap();
                let target = f.by_span_id(target_span).expect("link target in the file");
                let i = starts
                    .iter()
                    .position(|st| {
                        (st.0, st.1) == (target.pid, target.tid) && target.contains(st.2)
                    })
                    .unwrap_or_else(|| panic!("no flow from {} into {names:?}", target.name));
                starts.swap_remove(i);
                linked += 1;
            }
        }
        assert!(starts.is_empty(), "flows into {names:?} without a link");
    }
    // prefill → tokenize (across threads) and decode → previous slice (same thread), per request.
    assert_eq!(
        linked,
        2 * 4,
        "tokenize has no predecessor; the other four top-level do"
    );
    assert_eq!(f.flows.len(), linked);
    let prefill_from = f
        .flows
        .values()
        .filter(|(_, fin)| f.enclosing(*fin).unwrap().name == "prefill")
        .map(|(start, _)| f.enclosing(*start).unwrap().name.clone())
        .collect::<Vec<_>>();
    assert_eq!(prefill_from.len(), 2);
    assert!(prefill_from
        .iter()
        .all(|n| n == "tokenize" || n == "encode"));
}

/// The child's side of the kill test: traces requests until it is killed.
#[test]
#[ignore = "a child process of a_killed_process_leaves_a_file_that_repair_makes_valid"]
fn killed_child_side() {
    common::child::expect_started_as("killed_child_side");
    let guard = slicetrace::init_from_env("killed-server").unwrap().unwrap();
    slicetrace::set_thread_info("scheduler", Some(1), None);
    let one = |text: String| {
        let rid = slicetrace::req_start(text.as_str(), None);
        slicetrace::slice_start(name!("step"), rid);
        slicetrace::slice_start(name!("inner"), rid);
        slicetrace::slice_end(name!("inner"), rid, End::PLAIN);
        slicetrace::slice_end(name!("step"), rid, End::PLAIN);
        slicetrace::req_finish(rid);
    };
    for i in 0..200 {
        one(format!("early-{i}"));
    }
    // Later spans move the reorder window past the early ones.
    let t = std::time::Instant::now();
    let mut i = 0;
    while t.elapsed() < std::time::Duration::from_millis(1600) {
        one(format!("tick-{i}"));
        i += 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(guard.flush(std::time::Duration::from_secs(10)));
    println!("READY");
    loop {
        one(format!("tick-{i}"));
        i += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_killed_process_leaves_a_file_that_repair_makes_valid() {
    use std::io::{BufRead, BufReader};
    let path = temp_path("killed");
    let mut child = common::child::command("killed_child_side")
        .env("SLICETRACE", "1")
        .env("SLICETRACE_FILE", &path)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("READY") {
        assert!(
            out.read_line(&mut seen).unwrap() > 0,
            "child ended early: {seen}"
        );
    }
    assert!(seen.contains("running 1 test"), "{seen}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();

    let cut = std::fs::read_to_string(&path).unwrap();
    assert!(
        !cut.trim_end().ends_with(']'),
        "a killed writer never closed the array"
    );
    let r = slicetrace::export::perfetto::repair(&path).unwrap();
    assert!(matches!(
        r,
        slicetrace::export::perfetto::Repaired::Closed { .. }
    ));
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let f = TraceFile::check_cut(&text);
    // Every span of the early requests was more than a reorder window old at the kill.
    for i in 0..200 {
        let rid = format!("early-{i}");
        let names: Vec<&str> = f
            .slices
            .iter()
            .filter(|s| s.arg_str("rid") == Some(rid.as_str()))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names.len(), 2, "{rid}: {names:?}");
        assert!(f
            .requests
            .values()
            .any(|(_, a)| a["rid"].as_str() == Some(rid.as_str())));
    }
}

#[test]
fn the_file_rotates_by_size_and_every_file_is_a_whole_trace() {
    use slicetrace::export::perfetto::Rotation;
    let path = temp_path("rotating");
    // A short reorder window, so that events reach the file (and rotation) while the test runs.
    let limits = slicetrace::export::perfetto::Limits {
        reorder_window_ns: 1_000_000,
        ..Default::default()
    };
    let exporter = PerfettoExporter::with_limits(&path, limits)
        .unwrap()
        .with_rotation(Rotation {
            max_bytes: 40_000,
            keep: 3,
        });
    let rotated: Vec<std::path::PathBuf> = (1..=4).map(|n| exporter.rotated_path(n)).collect();
    let mut cfg = config();
    cfg.max_export_batch = 16;
    let mut s = session_using(cfg.exporter(exporter));
    slicetrace::set_thread_info("tokenizer", None, None);
    for i in 0..400 {
        let rid = slicetrace::req_start(format!("rotating-{i:04}").as_str(), None);
        slicetrace::slice_start(name!("tokenize"), rid);
        slicetrace::slice_start(name!("encode"), rid);
        slicetrace::slice_end(name!("encode"), rid, End::PLAIN);
        slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);
        slicetrace::req_finish(rid);
        if i % 10 == 9 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if i % 50 == 49 {
            assert!(s
                .guard
                .as_ref()
                .unwrap()
                .flush(std::time::Duration::from_secs(10)));
        }
    }
    s.finish();
    assert!(
        rotated[0].ends_with(format!(
            "slicetrace-test-rotating-{}.1.trace.json",
            std::process::id()
        )),
        "{:?}",
        rotated[0]
    );
    assert!(!rotated[3].exists(), "only `keep` rotated files stay");
    let mut last_rids = Vec::new();
    for p in [&path, &rotated[0], &rotated[1], &rotated[2]] {
        let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let f = TraceFile::check(&text);
        // The current file may have rotated at the last batch and hold nothing since.
        assert!(p == &path || !f.slices.is_empty(), "{p:?}");
        assert!(
            f.thread_names.values().any(|n| n == "tokenizer"),
            "{p:?} names its tracks: {:?}",
            f.thread_names
        );
        last_rids.extend(
            f.slices
                .iter()
                .filter_map(|s| s.arg_str("rid").map(str::to_owned)),
        );
        let _ = std::fs::remove_file(p);
    }
    // The newest requests are in the files kept.
    assert!(last_rids.iter().any(|r| r == "rotating-0399"));
}
