//! A million spans convert in bounded memory: the converter's peak resident set stays far
//! below the input's size. (Throughput is measured by `benches/convert.rs`.)

#[path = "../../tests/common/trace_events.rs"]
mod trace_events;

use slicetrace_cli::synthetic::{write_otlp_json, SPANS_PER_REQUEST};
use std::io::{BufWriter, Write};
use std::process::Command;

fn children_max_rss_bytes() -> u64 {
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN covers waited-for children of this process.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0);
    ru.ru_maxrss as u64 * 1024
}

#[test]
fn a_million_spans_convert_in_bounded_memory() {
    let dir = std::env::temp_dir();
    let input = dir.join(format!("slicetrace-large-{}.jsonl", std::process::id()));
    let output = dir.join(format!(
        "slicetrace-large-{}.trace.json",
        std::process::id()
    ));
    let requests = 100_000;
    let spans = {
        let mut w = BufWriter::new(std::fs::File::create(&input).unwrap());
        let n = write_otlp_json(&mut w, requests, 50).unwrap();
        w.flush().unwrap();
        n
    };
    assert_eq!(spans, requests * SPANS_PER_REQUEST);
    assert!(spans >= 1_000_000);
    let input_bytes = std::fs::metadata(&input).unwrap().len();

    let o = Command::new(env!("CARGO_BIN_EXE_slicetrace"))
        .args([
            "convert",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let peak = children_max_rss_bytes();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    // Seven slices and one request per request; every slice placed through its parents.
    assert!(
        err.contains(&format!("{} slices, {} requests", requests * 7, requests)),
        "{err}"
    );
    assert!(
        err.contains("0 links unresolved, 0 slices with no thread found"),
        "{err}"
    );
    eprintln!(
        "input {:.0} MB, {spans} spans; converter peak RSS {:.0} MB",
        input_bytes as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert!(input_bytes > 300_000_000, "{input_bytes}");
    assert!(
        peak < 150_000_000,
        "peak RSS {peak} bytes for {input_bytes} bytes of input"
    );

    // Read back, the output holds every slice by name; its first 20 000 events obey the
    // format's rules (checking all million in memory would take gigabytes).
    let o = Command::new(env!("CARGO_BIN_EXE_slicetrace"))
        .args(["summary", "--json", output.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let count = |name: &str| {
        summary["slices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["count"].as_u64().unwrap())
    };
    assert_eq!(count("decode"), Some(requests * 4));
    assert_eq!(count("forward"), Some(requests));
    assert_eq!(summary["requests"], requests);
    let text = std::fs::read_to_string(&output).unwrap();
    let head: String = text.lines().take(20_000).collect::<Vec<_>>().join("\n");
    let head = head.trim_end_matches(',').to_owned() + "\n]";
    let f = trace_events::TraceFile::check_cut(&head);
    assert!(f.slices.len() > 5_000, "{}", f.slices.len());
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
}

/// Runs the command with its stderr to a file and returns (whether it succeeded, its stderr,
/// its own peak resident set in bytes), waited for by pid so that no other child's peak
/// counts.
// Waited for by wait4, which the lint does not see.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], stderr_to: &std::path::Path) -> (bool, String, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_slicetrace"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(stderr_to).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: as in children_max_rss_bytes.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes the status and usage of this child, which is not waited for
    // elsewhere (the Child handle is dropped unwaited).
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let err = std::fs::read_to_string(stderr_to).unwrap();
    (ok, err, ru.ru_maxrss as u64 * 1024)
}

#[test]
fn a_large_profiler_trace_merges_in_bounded_memory() {
    use slicetrace_cli::synthetic::write_kineto;
    let dir = std::env::temp_dir();
    let id = std::process::id();
    let spans = dir.join(format!("slicetrace-merge-{id}.jsonl"));
    let torch = dir.join(format!("slicetrace-merge-{id}.torch.json"));
    let output = dir.join(format!("slicetrace-merge-{id}.trace.json"));
    let log = dir.join(format!("slicetrace-merge-{id}.stderr"));
    let requests = 2_500;
    {
        let mut w = BufWriter::new(std::fs::File::create(&spans).unwrap());
        write_otlp_json(&mut w, requests, 50).unwrap();
        w.flush().unwrap();
    }
    let events = {
        let mut w = BufWriter::new(std::fs::File::create(&torch).unwrap());
        let n = write_kineto(&mut w, requests, 30).unwrap();
        w.flush().unwrap();
        n
    };
    let torch_bytes = std::fs::metadata(&torch).unwrap().len();
    assert!(torch_bytes > 100_000_000, "{torch_bytes}");
    let (ok, err, peak) = run_measured(
        &[
            "convert",
            spans.to_str().unwrap(),
            "-f",
            torch.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        &log,
    );
    assert!(ok, "{err}");
    assert!(err.contains(&format!("{events} profiler events")), "{err}");
    assert!(err.contains("timestamps kept as written"), "{err}");
    eprintln!(
        "profiler trace {:.0} MB, {events} events; merge peak RSS {:.0} MB",
        torch_bytes as f64 / 1e6,
        peak as f64 / 1e6
    );
    // Neither pass holds the file: the peak is the span writer's windows and one event.
    assert!(
        peak < 64_000_000,
        "peak RSS {peak} bytes for a {torch_bytes}-byte profiler trace"
    );
    // Every event is on a line of its own: the spans' (as converting them alone writes), the
    // profiler's, and the names made up for its three string-named pids and two string tids.
    let alone = dir.join(format!("slicetrace-merge-{id}.alone.json"));
    let (ok, err, _) = run_measured(
        &[
            "convert",
            spans.to_str().unwrap(),
            "-o",
            alone.to_str().unwrap(),
        ],
        &log,
    );
    assert!(ok, "{err}");
    let lines = |p: &std::path::Path| {
        let f = std::io::BufReader::new(std::fs::File::open(p).unwrap());
        std::io::BufRead::lines(f).count() as u64 - 2
    };
    assert_eq!(lines(&output), lines(&alone) + events + 5);
    let _ = std::fs::remove_file(alone);
    for p in [spans, torch, output, log] {
        let _ = std::fs::remove_file(p);
    }
}
