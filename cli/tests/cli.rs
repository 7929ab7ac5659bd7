//! The `slicetrace` command, run as a user runs it: golden conversions, the trace-event rules,
//! summaries, clear errors on bad input, and spans that went through slicetrace's own OTLP
//! path (OTLP/HTTP with JSON bodies, captured as a collector's file exporter would write them).

#[path = "../../tests/common/trace_events.rs"]
mod trace_events;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use trace_events::TraceFile;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("slicetrace-cli-{}-{name}", std::process::id()))
}

fn slicetrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slicetrace"))
        .args(args)
        .output()
        .expect("runs the slicetrace binary")
}

fn convert(input: &Path, output: &Path) -> Output {
    slicetrace(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn collector_json_converts_to_the_golden_trace_file() {
    let out = temp("collector.trace.json");
    let o = convert(&data("collector.jsonl"), &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    if std::env::var_os("SLICETRACE_UPDATE_GOLDEN").is_some() {
        std::fs::write(data("collector.trace.json"), &text).unwrap();
    }
    let golden = std::fs::read_to_string(data("collector.trace.json")).unwrap();
    assert_eq!(
        text, golden,
        "output differs from tests/data/collector.trace.json"
    );

    let f = TraceFile::check(&text);
    assert_eq!(f.slices.len(), 9);
    assert_eq!(f.requests.len(), 2);
    assert_eq!(f.flows.len(), 5);
    // Threads named from the reference's attributes (label, TP rank), per process.
    assert_eq!(f.thread_names[&(111, 1001)], "tokenizer");
    assert_eq!(f.thread_names[&(222, 2001)], "scheduler [TP 0]");
    assert_eq!(
        f.process_names[&222],
        "sglang-scheduler (pid 222 on node-1)"
    );
    // Slices of the reference carry no thread id: they were placed through their parents,
    // nested ones too.
    let forward = &f.named("forward")[0];
    let prefill = f.by_span_id("c100000000000001").unwrap();
    assert_eq!((forward.pid, forward.tid), (prefill.pid, prefill.tid));
    assert!(prefill.start_ns <= forward.start_ns && forward.end_ns <= prefill.end_ns);
    // The cross-process link is an arrow from the tokenizer process to the scheduler process.
    let cross = f
        .flows
        .values()
        .filter(|(s, fin)| s.0 == 111 && fin.0 == 222)
        .count();
    assert_eq!(cross, 2);
    // The rid reaches slices that never carried it, from their request span.
    assert_eq!(forward.arg_str("rid"), Some("3f2a9c0e5d8f4b1a"));
    assert!(f
        .by_span_id("c100000000000004")
        .unwrap()
        .arg_str("error")
        .unwrap()
        .contains("mismatch"));
}

#[test]
fn summary_reports_slices_and_phases_from_either_format() {
    let o = slicetrace(&[
        "summary",
        "--json",
        data("collector.jsonl").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let from_otlp: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let decode = from_otlp["slices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "decode")
        .unwrap();
    assert_eq!(decode["count"], 3);
    assert_eq!(decode["p50_ns"], 60_000);
    assert_eq!(decode["max_ns"], 70_000);
    assert_eq!(from_otlp["requests"], 2);
    let req = from_otlp["per_request"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rid"] == "3f2a9c0e5d8f4b1a")
        .unwrap();
    // tokenizer 50 µs (tokenize; encode is nested), prefill 100, decode 60 + 70; total 420.
    assert_eq!(
        req["phases_ns"],
        serde_json::json!([50_000, 0, 100_000, 130_000])
    );
    assert_eq!(req["total_ns"], 420_000);

    // The same figures from the converted trace-event file.
    let o = slicetrace(&[
        "summary",
        "--json",
        data("collector.trace.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let from_events: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(from_events["slices"], from_otlp["slices"]);
    assert_eq!(from_events["per_request"], from_otlp["per_request"]);

    let o = slicetrace(&["summary", data("collector.jsonl").to_str().unwrap()]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("decode"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("prefill ") && l.contains("0.100")),
        "{table}"
    );
}

#[test]
fn bad_input_is_named_by_line_and_partial_input_converts_what_is_valid() {
    let not_json = temp("not-json.jsonl");
    std::fs::write(&not_json, "hello world\n").unwrap();
    let o = convert(&not_json, &temp("x.json"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 1: not JSON"), "{}", stderr(&o));

    let wrong = temp("wrong.jsonl");
    std::fs::write(&wrong, "{\"logs\":[]}\n").unwrap();
    let o = convert(&wrong, &temp("x.json"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 1: expected an OTLP/JSON object"),
        "{}",
        stderr(&o)
    );

    // A valid file, a line of the wrong schema in the middle, and a truncated last line.
    let good = std::fs::read_to_string(data("collector.jsonl")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let partial = temp("partial.jsonl");
    let cut = &lines[2][..lines[2].len() / 2];
    std::fs::write(
        &partial,
        format!(
            "{}\n{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{{\"traceId\":\"xyz\"}}]}}]}}]}}\n{}\n{}",
            lines[0], lines[1], cut
        ),
    )
    .unwrap();
    let out = temp("partial.trace.json");
    let o = convert(&partial, &out);
    assert_eq!(o.status.code(), Some(2), "some lines were skipped");
    let err = stderr(&o);
    assert!(
        err.contains("line 2: skipped: not an OTLP/JSON traces object"),
        "{err}"
    );
    assert!(err.contains("line 4: skipped: truncated"), "{err}");
    assert!(err.contains("skipped 2 lines"), "{err}");
    let f = TraceFile::check(&std::fs::read_to_string(&out).unwrap());
    // Lines 1 and 3 hold the scheduler's six slices and the tokenizer's tokenize and encode.
    assert_eq!(f.slices.len(), 8);
    for p in [not_json, wrong, partial, out] {
        let _ = std::fs::remove_file(p);
    }
}

/// Accepts OTLP/HTTP requests and keeps their bodies, one per line: what the Collector's file
/// exporter writes for the same data.
fn capture_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let keep = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    // One object per line, as the file exporter writes it.
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    keep.lock().unwrap().push(v.to_string());
                    let _ = w.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (format!("http://{addr}/v1/traces"), bodies)
}

fn trace_a_small_server(endpoint: &str) -> slicetrace::Stats {
    use slicetrace::{name, End};
    let sink = slicetrace::export::OtlpSink::new(
        endpoint,
        slicetrace::export::Protocol::HttpJson,
        &[],
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let mut cfg = slicetrace::Config::new("otlp-json-server");
    cfg.announce = false;
    cfg.finish_grace = std::time::Duration::from_millis(5);
    let guard = slicetrace::init(cfg.sink(Box::new(sink))).unwrap();
    let (tx, rx) =
        std::sync::mpsc::channel::<(slicetrace::Rid, [u8; slicetrace::limits::CONTEXT_LEN])>();
    let sched = std::thread::spawn(move || {
        slicetrace::set_thread_info("scheduler", Some(0), None);
        for (rid, ctx) in rx {
            let ctx = slicetrace::PropagateContext::from_bytes(&ctx).unwrap();
            slicetrace::set_propagate_context(rid, &ctx);
            slicetrace::slice_start(name!("prefill"), rid);
            slicetrace::slice_start(name!("forward"), rid);
            slicetrace::slice_end(name!("forward"), rid, End::PLAIN);
            slicetrace::slice_end(name!("prefill"), rid, End::AUTO_NEXT_ANON);
            slicetrace::slice_batch(name!("decode"), &[(rid, false)]);
            slicetrace::slice_batch(name!("decode"), &[(rid, true)]);
        }
    });
    slicetrace::set_thread_info("tokenizer", None, None);
    let mut rids = Vec::new();
    for i in 0..3 {
        let rid = slicetrace::req_start(format!("otlp-json-{i}").as_str(), None);
        slicetrace::slice_start(name!("tokenize"), rid);
        slicetrace::event(name!("prompt read"), rid);
        let ctx = slicetrace::propagate_context(rid).unwrap();
        slicetrace::slice_end(name!("tokenize"), rid, End::PLAIN);
        tx.send((rid, ctx.to_bytes())).unwrap();
        rids.push(rid);
    }
    drop(tx);
    sched.join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    for rid in rids {
        slicetrace::req_finish(rid);
    }
    guard.shutdown()
}

#[test]
fn spans_through_our_own_otlp_json_path_convert_with_links_and_nesting() {
    let (endpoint, bodies) = capture_server();
    let stats = trace_a_small_server(&endpoint);
    assert_eq!(stats.spans_export_failed, 0);
    let captured = bodies.lock().unwrap().join("\n") + "\n";
    let input = temp("ours.jsonl");
    std::fs::write(&input, &captured).unwrap();
    if std::env::var_os("SLICETRACE_UPDATE_GOLDEN").is_some() {
        std::fs::write(data("otlp_http_json.jsonl"), &captured).unwrap();
    }
    let out = temp("ours.trace.json");
    let o = convert(&input, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = TraceFile::check(&std::fs::read_to_string(&out).unwrap());
    // Per request: tokenize, prefill, forward, decode × 2 (a room span, a request span, two
    // threads); room and request spans are both async slices.
    assert_eq!(f.slices.len(), 3 * 5);
    assert_eq!(stats.spans_exported, 3 * 9);
    assert_eq!(f.requests.len(), 3 * 2);
    assert_eq!(f.instants.len(), 3);
    // tokenize → prefill (across threads), prefill → decode → decode: three links a request.
    assert_eq!(f.flows.len(), 3 * 3);
    for i in 0..3 {
        let rid = format!("otlp-json-{i}");
        let mine: Vec<_> = f
            .slices
            .iter()
            .filter(|s| s.arg_str("rid") == Some(&rid))
            .collect();
        assert_eq!(mine.len(), 5, "{rid}");
    }
    for fwd in f.named("forward") {
        let parent = f
            .by_span_id(fwd.arg_str("parent_span_id").unwrap())
            .unwrap();
        assert_eq!(parent.name, "prefill");
        assert_eq!(parent.tid, fwd.tid);
    }
    let _ = std::fs::remove_file(input);
    let _ = std::fs::remove_file(out);
}

#[test]
fn a_committed_capture_of_our_otlp_path_converts_to_its_golden_file() {
    let out = temp("otlp_http_json.trace.json");
    let o = convert(&data("otlp_http_json.jsonl"), &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    if std::env::var_os("SLICETRACE_UPDATE_GOLDEN").is_some() {
        std::fs::write(data("otlp_http_json.trace.json"), &text).unwrap();
    }
    let golden = std::fs::read_to_string(data("otlp_http_json.trace.json")).unwrap();
    assert_eq!(text, golden);
    let f = TraceFile::check(&text);
    assert_eq!(f.slices.len(), 15);
}

#[test]
fn repair_closes_a_cut_file_and_leaves_a_whole_one_alone() {
    let golden = std::fs::read_to_string(data("collector.trace.json")).unwrap();
    let cut = temp("cut.trace.json");
    std::fs::write(&cut, &golden[..golden.len() * 2 / 3]).unwrap();
    let o = slicetrace(&["repair", cut.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("closed"), "{}", stderr(&o));
    let f = TraceFile::check_cut(&std::fs::read_to_string(&cut).unwrap());
    assert!(!f.slices.is_empty());
    let o = slicetrace(&["repair", cut.to_str().unwrap()]);
    assert!(stderr(&o).contains("already complete"));
    std::fs::remove_file(&cut).unwrap();
}

#[test]
fn trace_files_of_two_processes_merge_with_arrows_across_them() {
    // Split the collector output by process, convert each alone (as each process would write
    // its own file), then merge the two trace files.
    let text = std::fs::read_to_string(data("collector.jsonl")).unwrap();
    let mut per_process: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"][0]["value"]["stringValue"]
                .as_str()
                .unwrap()
                .to_owned();
            let one = serde_json::json!({ "resourceSpans": [rs] });
            per_process
                .entry(service)
                .or_default()
                .push(one.to_string());
        }
    }
    assert_eq!(per_process.len(), 2);
    let mut files = Vec::new();
    for (service, lines) in &per_process {
        let input = temp(&format!("{service}.jsonl"));
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let out = temp(&format!("{service}.trace.json"));
        let o = convert(&input, &out);
        assert!(o.status.success(), "{}", stderr(&o));
        // Alone, the scheduler's links to the tokenizer have no target in its file.
        let want = if service.contains("scheduler") {
            "2 links unresolved"
        } else {
            "0 links"
        };
        assert!(stderr(&o).contains(want), "{service}: {}", stderr(&o));
        std::fs::remove_file(&input).unwrap();
        files.push(out);
    }
    let merged = temp("merged.trace.json");
    let mut args = vec!["convert".to_owned()];
    args.extend(files.iter().map(|f| f.to_str().unwrap().to_owned()));
    args.extend(["-o".to_owned(), merged.to_str().unwrap().to_owned()]);
    let o = slicetrace(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("0 links unresolved"), "{}", stderr(&o));
    let f = TraceFile::check(&std::fs::read_to_string(&merged).unwrap());
    assert_eq!(f.slices.len(), 9);
    assert_eq!(f.flows.len(), 5);
    assert_eq!(f.instants.len(), 1);
    let cross = f
        .flows
        .values()
        .filter(|(s, fin)| s.0 == 111 && fin.0 == 222)
        .count();
    assert_eq!(cross, 2, "tokenize → prefill, across the processes");
    assert_eq!(f.thread_names[&(222, 2001)], "scheduler [TP 0]");
    for p in files.into_iter().chain([merged]) {
        let _ = std::fs::remove_file(p);
    }
}

/// The Unix time (ns) the committed profiler trace `kineto.trace.json` counts from: its
/// `baseTimeNanoseconds`, what Kineto writes for a profile started at 2025-11-28 03:20 UTC.
const KINETO_BASE_NS: i128 = 1_759_300_074_000_000_000;

/// A `ts` or `dur` as written, in whole nanoseconds, read from the text (not through a double).
fn exact_ns(line: &str, key: &str) -> i128 {
    let at = line.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    let rest = &line[at..];
    let number = &rest[..rest.find([',', '}']).unwrap()];
    let (us, frac) = number.split_once('.').unwrap_or((number, ""));
    let frac = format!("{frac:0<3}");
    us.parse::<i128>().unwrap() * 1000 + frac[..3].parse::<i128>().unwrap()
}

/// Each event of a merged file with its line, and the pids of slicetrace's processes (those
/// named with a time origin).
fn merged_lines(text: &str) -> (Vec<(serde_json::Value, String)>, HashSet<u64>) {
    let mut events = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches(',');
        if line == "[" || line == "]" {
            continue;
        }
        events.push((
            serde_json::from_str::<serde_json::Value>(line).unwrap(),
            line.to_owned(),
        ));
    }
    let ours = events
        .iter()
        .filter(|(e, _)| {
            e["name"] == "process_name" && e["args"].get("slicetrace_epoch_unix_ns").is_some()
        })
        .map(|(e, _)| e["pid"].as_u64().unwrap())
        .collect();
    (events, ours)
}

fn merge_torch(spans: &Path, torch: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "convert",
        spans.to_str().unwrap(),
        "-f",
        torch.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    slicetrace(&args)
}

/// (ph, name) → count, of a list of events.
fn census<'a>(
    events: impl Iterator<Item = &'a serde_json::Value>,
) -> BTreeMap<(String, String), usize> {
    let mut c = BTreeMap::new();
    for e in events {
        let key = (
            e["ph"].as_str().unwrap_or_default().to_owned(),
            e["name"].as_str().unwrap_or_default().to_owned(),
        );
        *c.entry(key).or_default() += 1;
    }
    c
}

#[test]
fn a_torch_profiler_trace_merges_on_the_spans_clock_with_every_event_and_track() {
    let out = temp("merged-torch.trace.json");
    let o = merge_torch(
        &data("collector.jsonl"),
        &data("kineto.trace.json"),
        &out,
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("24 profiler events (C 1, M 11, X 7, f 1, i 3, s 1) on 6 processes"),
        "{err}"
    );
    assert!(
        err.contains("baseTimeNanoseconds 1759300074000000000"),
        "{err}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let (events, ours) = merged_lines(&text);

    // Alignment: the file counts from the profiler's base, so its ts are as written, and the
    // kernel launched at 10.123 µs into the forward slice lands there to the nanosecond.
    let line = |name: &str| {
        &events
            .iter()
            .find(|(e, _)| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .1
    };
    let origin = events
        .iter()
        .find_map(|(e, _)| e["args"]["slicetrace_epoch_unix_ns"].as_u64())
        .unwrap();
    assert_eq!(i128::from(origin), KINETO_BASE_NS);
    let kernel = line("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn");
    let forward = line("forward");
    assert_eq!(exact_ns(kernel, "ts") - exact_ns(forward, "ts"), 10_123);
    assert_eq!(
        KINETO_BASE_NS + exact_ns(kernel, "ts"),
        1_764_300_000_000_100_123,
        "the kernel's Unix time"
    );
    assert_eq!(
        i128::from(origin) + exact_ns(forward, "ts"),
        1_764_300_000_000_090_000,
        "the forward slice's Unix time, as the collector wrote it"
    );
    // The profiler's CPU op runs inside the forward slice of the same thread.
    let mm = line("aten::mm");
    let (mm_start, fw_start) = (exact_ns(mm, "ts"), exact_ns(forward, "ts"));
    assert!(
        fw_start <= mm_start
            && mm_start + exact_ns(mm, "dur") <= fw_start + exact_ns(forward, "dur")
    );

    // Every event of both sides is there: the profiler's, counted by phase and name against
    // the input (plus the names made up for its four string pids and three string tids) …
    let input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("kineto.trace.json")).unwrap()).unwrap();
    let mut want = census(input["traceEvents"].as_array().unwrap().iter());
    *want.get_mut(&("M".into(), "process_name".into())).unwrap() += 4;
    *want.get_mut(&("M".into(), "thread_name".into())).unwrap() += 3;
    let theirs: Vec<&serde_json::Value> = events
        .iter()
        .map(|(e, _)| e)
        .filter(|e| !ours.contains(&e["pid"].as_u64().unwrap()))
        .collect();
    assert_eq!(census(theirs.iter().copied()), want);
    // … and ours, as converting the spans alone writes them.
    let alone = temp("alone.trace.json");
    assert!(convert(&data("collector.jsonl"), &alone).status.success());
    let alone_text = std::fs::read_to_string(&alone).unwrap();
    let (alone_events, _) = merged_lines(&alone_text);
    let ours_text = format!(
        "[\n{}\n]\n",
        events
            .iter()
            .filter(|(e, _)| ours.contains(&e["pid"].as_u64().unwrap()))
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join(",\n")
    );
    let f = TraceFile::check(&ours_text);
    assert_eq!(
        (
            f.slices.len(),
            f.requests.len(),
            f.flows.len(),
            f.instants.len()
        ),
        (9, 2, 5, 1)
    );
    assert_eq!(
        census(alone_events.iter().map(|(e, _)| e)),
        census(f.events.iter()),
    );

    // Tracks: no pid of ours is one of the profiler's; both sides keep their names. The
    // scheduler's own pid 222 is the profiler's CPU process, so ours is written under another
    // and keeps its title.
    let their_pids: HashSet<u64> = theirs.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert!(ours.is_disjoint(&their_pids), "{ours:?} {their_pids:?}");
    assert_eq!(their_pids.len(), 6);
    assert!(their_pids.contains(&222) && their_pids.contains(&0));
    let sched = f
        .process_names
        .iter()
        .find(|(_, n)| n.starts_with("sglang-scheduler"))
        .unwrap();
    assert_ne!(*sched.0, 222);
    assert_eq!(sched.1, "sglang-scheduler (pid 222 on node-1)");
    assert_eq!(f.thread_names[&(*sched.0, 2001)], "scheduler [TP 0]");
    let named = |what: &str, pid: u64, tid: Option<u64>| {
        theirs
            .iter()
            .find(|e| e["name"] == what && e["pid"] == pid && tid.is_none_or(|t| e["tid"] == t))
            .map(|e| e["args"]["name"].as_str().unwrap().to_owned())
    };
    assert_eq!(named("process_name", 222, None).as_deref(), Some("python3"));
    assert_eq!(named("process_name", 0, None).as_deref(), Some("GPU 0"));
    assert_eq!(
        named("thread_name", 0, Some(7)).as_deref(),
        Some("stream 7 ")
    );
    assert_eq!(
        named("thread_name", 222, Some(2001)).as_deref(),
        Some("thread 2001 (python3)")
    );
    // The pids Kineto writes as strings are numbers here, named by those strings; so are the
    // string tids.
    for s in ["Spans", "Traces", "GPU 0 Counters", ""] {
        let pid = theirs
            .iter()
            .find(|e| e["name"] == "process_name" && e["args"]["name"] == s)
            .unwrap_or_else(|| panic!("{s:?} named"))["pid"]
            .as_u64()
            .unwrap();
        assert!(pid >= 1 << 31, "{s}: {pid}");
    }
    let span = theirs
        .iter()
        .find(|e| e["name"] == "PyTorch Profiler (0)")
        .unwrap();
    assert_eq!(
        named(
            "thread_name",
            span["pid"].as_u64().unwrap(),
            span["tid"].as_u64()
        )
        .as_deref(),
        Some("PyTorch Profiler")
    );
    // Flows keep their ids and category, kept apart from ours by it.
    assert_eq!(theirs.iter().filter(|e| e["cat"] == "ac2g").count(), 2);

    // Read back, the merged file is its spans: the profiler's events are passed over.
    let summary = |p: &Path| {
        let o = slicetrace(&["summary", "--json", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    assert_eq!(summary(&out), summary(&alone));
    for p in [out, alone] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_profiler_trace_in_older_layouts_or_gzipped_merges_the_same() {
    let text = std::fs::read_to_string(data("kineto.trace.json")).unwrap();
    let reference = temp("layout-ref.trace.json");
    let o = merge_torch(
        &data("collector.jsonl"),
        &data("kineto.trace.json"),
        &reference,
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let want = std::fs::read_to_string(&reference).unwrap();

    // The first Kineto versions to record the base wrote it after the events.
    let base_line = "  \"baseTimeNanoseconds\": 1759300074000000000,\n";
    assert!(text.contains(base_line));
    let after = text.replace(base_line, "").replace(
        "  \"traceName\"",
        "  \"baseTimeNanoseconds\": 1759300074000000000,\n  \"traceName\"",
    );
    let after_path = temp("base-after.json");
    std::fs::write(&after_path, after).unwrap();
    // torch.profiler writes `.json.gz` when asked; the content decides, not the name.
    let gz_path = temp("gzipped.json.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
    for input in [&after_path, &gz_path] {
        let out = temp("layout.trace.json");
        let o = merge_torch(&data("collector.jsonl"), input, &out, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            want,
            "{}",
            input.display()
        );
        let _ = std::fs::remove_file(out);
    }
    for p in [reference, after_path, gz_path] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_profiler_trace_without_clock_metadata_is_refused_unless_its_base_is_given() {
    let text = std::fs::read_to_string(data("kineto.trace.json")).unwrap();
    let no_clock = temp("no-clock.json");
    std::fs::write(
        &no_clock,
        text.replace("  \"baseTimeNanoseconds\": 1759300074000000000,\n", ""),
    )
    .unwrap();
    let out = temp("no-clock.trace.json");
    let _ = std::fs::remove_file(&out);
    let o = merge_torch(&data("collector.jsonl"), &no_clock, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}: the profiler trace records no clock",
            no_clock.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("baseTimeNanoseconds") && err.contains("--torch-base-ns"),
        "{err}"
    );
    assert!(
        !out.exists(),
        "no output is written when the trace cannot be placed"
    );

    // Given the base, the merge is the one the recorded base gives.
    let o = merge_torch(
        &data("collector.jsonl"),
        &no_clock,
        &out,
        &["--torch-base-ns", "1759300074000000000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = temp("given-ref.trace.json");
    let o = merge_torch(
        &data("collector.jsonl"),
        &data("kineto.trace.json"),
        &reference,
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&reference).unwrap()
    );

    // A file that is not a profiler trace, or is broken, is named with its line.
    let broken = temp("broken.json");
    std::fs::write(
        &broken,
        text.replacen("\"ph\": \"X\",", "\"ph\": \"X\",,", 1),
    )
    .unwrap();
    let o = merge_torch(
        &data("collector.jsonl"),
        &broken,
        &temp("broken.trace.json"),
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "{}: line 18: the event is not JSON",
            broken.display()
        )),
        "{}",
        stderr(&o)
    );
    // Nor is the trace written over by the output.
    let o = merge_torch(&data("collector.jsonl"), &broken, &broken, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is both a profiler trace to merge and the output"),
        "{}",
        stderr(&o)
    );
    assert!(std::fs::read_to_string(&broken)
        .unwrap()
        .contains("\"ph\": \"X\",,"));
    for p in [no_clock, out, reference, broken] {
        let _ = std::fs::remove_file(p);
    }
}
