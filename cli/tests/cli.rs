//! The `slicetrace` command, run as a user runs it: golden conversions, the trace-event rules,
//! summaries, clear errors on bad input, and spans that went through slicetrace's own OTLP
//! path (OTLP/HTTP with JSON bodies, captured as a collector's file exporter would write them).

#[path = "../../tests/common/trace_events.rs"]
mod trace_events;

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
