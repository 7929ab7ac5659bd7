use super::*;
use serde_json::Value;
use slicetrace_spans::model::{AttrValue, ProcessKey, Role, Span};
use slicetrace_spans::schema;
use slicetrace_spans::writer::Limits;

/// Kineto's base for a profile started at 2025-11-28 03:20 UTC: that instant rounded down to a
/// multiple of its three-month interval (7 889 238 s) since the epoch.
const B: u64 = 1_759_300_074_000_000_000;
/// 2025-11-28 03:20:00 UTC, when the spans below start.
const T: u64 = 1_764_300_000_000_000_000;

fn temp(name: &str, text: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("slicetrace-kineto-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

/// A trace in Kineto's layout (pretty-printed, an event over several lines), its base before
/// or after the events (or absent).
fn kineto(base: Option<(u64, bool)>, events: &[String]) -> String {
    let mut s = String::from("{\n  \"schemaVersion\": 1,\n  \"deviceProperties\": [],\n");
    if let Some((b, true)) = base {
        s += &format!("  \"displayTimeUnit\": \"ms\",\n  \"baseTimeNanoseconds\": {b},\n");
    }
    s += "  \"traceEvents\": [\n";
    s += &events.join(",\n");
    s += "\n  ],\n";
    if let Some((b, false)) = base {
        s += &format!("  \"displayTimeUnit\": \"ms\",\n  \"baseTimeNanoseconds\": {b},\n");
    }
    s += "  \"traceName\": \"t.json\"\n}\n";
    s
}

fn x(name: &str, pid: &str, tid: &str, ts: &str) -> String {
    format!(
        "  {{\n    \"ph\": \"X\", \"cat\": \"kernel\", \"name\": \"{name}\", \"pid\": {pid}, \
         \"tid\": {tid},\n    \"ts\": {ts}, \"dur\": 1.000,\n    \"args\": {{\n      \"stream\": 7\n    }}\n  }}"
    )
}

fn meta(what: &str, pid: &str, tid: &str, name: &str) -> String {
    format!(
        "  {{\n    \"name\": \"{what}\", \"ph\": \"M\", \"ts\": 0.000, \"pid\": {pid}, \"tid\": {tid},\n    \
         \"args\": {{\n      \"name\": \"{name}\"\n    }}\n  }}"
    )
}

fn slice(id: u64, start: u64, end: u64, tid: u64) -> Span {
    Span {
        trace_id: 7,
        span_id: id,
        parent: 0,
        name: format!("s{id}"),
        start_ns: start,
        end_ns: end,
        attrs: vec![(schema::THREAD_ID.into(), AttrValue::Int(tid as i64))],
        events: Vec::new(),
        links: Vec::new(),
        error: None,
        role: Role::Slice,
    }
}

/// Merges `profiles` with `spans` (of a process with pid `pid`) as the command does: the
/// output's events, what each merge did, and the output's text.
fn merge(profiles: &Profiles, pid: u64, spans: Vec<Span>) -> (Vec<Value>, Vec<Merged>, String) {
    let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
    profiles.prepare(&mut w);
    let p = ProcessKey {
        service: "svc".into(),
        pid,
        ..ProcessKey::default()
    };
    for s in spans {
        w.push(&p, s).unwrap();
    }
    let merged = profiles.write(&mut w).unwrap();
    let (out, _) = w.finish().unwrap();
    let text = String::from_utf8(out).unwrap();
    // One event a line, whatever the input's layout.
    for line in text.lines().skip(1) {
        let line = line.trim_end_matches(',');
        if line != "]" {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    (v.as_array().unwrap().clone(), merged, text)
}

/// The `ts` of the event named `name` as written: exact, not through a double.
fn ts_text(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"name\":\"{name}\"")))
        .unwrap();
    let at = line.find("\"ts\":").unwrap() + 5;
    let rest = &line[at..];
    rest[..rest.find([',', '}']).unwrap()].to_owned()
}

fn origin(events: &[Value]) -> u64 {
    events
        .iter()
        .find_map(|e| e["args"][schema::EPOCH_ARG].as_u64())
        .unwrap()
}

#[test]
fn the_base_is_found_before_or_after_the_events() {
    let events = [x("k", "0", "7", "4999926000100.123")];
    let mut outs = Vec::new();
    for before in [true, false] {
        let path = temp(
            &format!("base-{before}.json"),
            kineto(Some((B, before)), &events).as_bytes(),
        );
        let profiles = Profiles::read(std::slice::from_ref(&path), None).unwrap();
        assert_eq!(profiles.files[0].clock, Clock::Recorded(B));
        let (ev, merged, text) = merge(&profiles, 1, vec![slice(1, T + 90_000, T + 170_000, 5)]);
        // The spans count from the profiler's base: its timestamps are kept as written.
        assert_eq!(origin(&ev), B);
        assert_eq!(merged[0].shift_ns, 0);
        assert_eq!(ts_text(&text, "k"), "4999926000100.123");
        assert_eq!(ts_text(&text, "s1"), "4999926000090.000");
        outs.push(ev);
        std::fs::remove_file(path).unwrap();
    }
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn unix_times_need_no_base_and_count_from_a_recent_origin() {
    // Kineto before 2024: absolute Unix microseconds, integers.
    let events = [
        x("k", "0", "7", "1764300000000100"),
        meta("process_name", "0", "0", "GPU 0"),
    ];
    let path = temp("unix.json", kineto(None, &events).as_bytes());
    let profiles = Profiles::read(std::slice::from_ref(&path), None).unwrap();
    assert_eq!(profiles.files[0].clock, Clock::Unix);
    let (ev, merged, text) = merge(&profiles, 1, vec![slice(1, T + 90_000, T + 170_000, 5)]);
    let day = 86_400_000_000_000u64;
    let o = (T / day - 1) * day;
    assert_eq!(origin(&ev), o);
    let want_ns = T + 100_000 - o;
    assert_eq!(
        ts_text(&text, "k"),
        format!("{}.{:03}", want_ns / 1000, want_ns % 1000)
    );
    // The metadata's ts 0 came out before the origin: written as 0, counted.
    assert_eq!(merged[0].clamped, 1);
    assert_eq!(merged[0].shift_ns, -i128::from(o));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn relative_times_without_a_base_are_refused_unless_one_is_given() {
    let events = [x("k", "0", "7", "4999926000100.123")];
    let path = temp("nobase.json", kineto(None, &events).as_bytes());
    let e = Profiles::read(std::slice::from_ref(&path), None)
        .err()
        .unwrap();
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    assert!(e.contains("records no clock"), "{e}");
    assert!(e.contains("baseTimeNanoseconds"), "{e}");
    assert!(e.contains("--torch-base-ns"), "{e}");
    let profiles = Profiles::read(std::slice::from_ref(&path), Some(B)).unwrap();
    assert_eq!(profiles.files[0].clock, Clock::Given(B));
    let (_, _, text) = merge(&profiles, 1, vec![slice(1, T + 90_000, T + 170_000, 5)]);
    assert_eq!(ts_text(&text, "k"), "4999926000100.123");
    // A base the file records is its own, whatever is given.
    let recorded = temp("recorded.json", kineto(Some((B, true)), &events).as_bytes());
    let profiles = Profiles::read(std::slice::from_ref(&recorded), Some(1)).unwrap();
    assert_eq!(profiles.files[0].clock, Clock::Recorded(B));
    std::fs::remove_file(path).unwrap();
    std::fs::remove_file(recorded).unwrap();
}

#[test]
fn spans_before_the_base_move_the_profilers_times_instead() {
    // A profiler whose quarter began after the first span: the spans' own origin is earlier,
    // and the profiler's times are moved onto it, to the nanosecond.
    let base = T + 50_000;
    let events = [x("k", "0", "7", "50.123")];
    let path = temp(
        "late-base.json",
        kineto(Some((base, true)), &events).as_bytes(),
    );
    let profiles = Profiles::read(std::slice::from_ref(&path), None).unwrap();
    let (ev, merged, _) = merge(&profiles, 1, vec![slice(1, T + 90_000, T + 170_000, 5)]);
    let day = 86_400_000_000_000u64;
    let o = (T / day - 1) * day;
    assert_eq!(origin(&ev), o);
    assert_eq!(merged[0].shift_ns, i128::from(base - o));
    let kernel_ns = T + 50_000 + 50_123 - o;
    let span_ns = T + 90_000 - o;
    let k = ev.iter().find(|e| e["name"] == "k").unwrap()["ts"]
        .as_f64()
        .unwrap();
    let s = ev.iter().find(|e| e["name"] == "s1").unwrap()["ts"]
        .as_f64()
        .unwrap();
    assert_eq!((k * 1000.0).round() as u64, kernel_ns);
    assert_eq!((s * 1000.0).round() as u64, span_ns);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn pids_are_kept_where_they_can_be_and_made_up_where_not() {
    let first = kineto(
        Some((B, true)),
        &[
            x("a", "100", "281474976710656", "1.000"),
            x("b", "\"Spans\"", "\"PyTorch Profiler\"", "2.000"),
            x("c", "-1", "3", "3.000"),
            meta("process_name", "100", "0", "python3"),
        ],
    );
    let second = kineto(
        Some((B, true)),
        &[
            x("d", "100", "5", "4.000"),
            x("e", "2147483648", "5", "5.000"),
        ],
    );
    let paths = [
        temp("pids-1.json", first.as_bytes()),
        temp("pids-2.json", second.as_bytes()),
    ];
    let profiles = Profiles::read(&paths, None).unwrap();
    let (ev, merged, _) = merge(&profiles, 100, vec![slice(1, T + 10, T + 20, 5)]);
    let pid_of = |name: &str| ev.iter().find(|e| e["name"] == name).unwrap()["pid"].as_u64();
    let tid_of = |name: &str| ev.iter().find(|e| e["name"] == name).unwrap()["tid"].as_u64();
    assert_eq!(pid_of("a"), Some(100));
    // A made-up tid skips the integers the process's events already use.
    assert_eq!(tid_of("a"), Some(FIRST_OTHER_TID));
    assert_eq!(tid_of("b"), Some(FIRST_OTHER_TID));
    // "Spans" and -1 get made-up pids past the second file's own 2^31; the second file's
    // 100, taken by the first, gets the next.
    let (spans, minus, taken) = (
        pid_of("b").unwrap(),
        pid_of("c").unwrap(),
        pid_of("d").unwrap(),
    );
    assert_eq!(pid_of("e"), Some(u64::from(FIRST_OTHER_PID)));
    assert_eq!(
        (spans, minus, taken),
        (
            u64::from(FIRST_OTHER_PID) + 1,
            u64::from(FIRST_OTHER_PID) + 2,
            u64::from(FIRST_OTHER_PID) + 3
        )
    );
    // The spans' process wanted 100 too: it was given another, and keeps its title.
    let ours = ev.iter().find(|e| e["name"] == "s1").unwrap()["pid"]
        .as_u64()
        .unwrap();
    assert!(![100, spans, minus, taken].contains(&ours));
    assert_eq!(merged[0].renamed.len(), 2);
    assert_eq!(merged[1].renamed, [("100".to_owned(), FIRST_OTHER_PID + 3)]);
    let names: Vec<(u64, &str)> = ev
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    for want in [
        (100, "python3"),
        (spans, "Spans"),
        (minus, "pid -1"),
        (taken, "pid 100"),
    ] {
        assert!(names.contains(&want), "{want:?} in {names:?}");
    }
    assert!(ev.iter().any(|e| e["name"] == "thread_name"
        && e["pid"] == spans
        && e["tid"] == FIRST_OTHER_TID
        && e["args"]["name"] == "PyTorch Profiler"));
    for p in paths {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn every_event_is_written_once_and_process_names_come_first() {
    let events = [
        x("k1", "0", "7", "10.000"),
        x("k2", "\"Spans\"", "\"s\"", "11.000"),
        meta("thread_name", "0", "7", "stream 7"),
        meta("process_name", "0", "0", "GPU 0"),
    ];
    let path = temp("once.json", kineto(Some((B, false)), &events).as_bytes());
    let profiles = Profiles::read(std::slice::from_ref(&path), None).unwrap();
    let (ev, merged, _) = merge(&profiles, 1, Vec::new());
    assert_eq!(merged[0].events, 4);
    assert_eq!(merged[0].phases, [("M".to_owned(), 2), ("X".to_owned(), 2)]);
    let theirs: Vec<&Value> = ev.iter().filter(|e| e["pid"] != 1).collect();
    // The file's name for GPU 0, then the names made up for "Spans", then the events.
    let order: Vec<String> = theirs
        .iter()
        .map(|e| match e["name"].as_str().unwrap() {
            n @ ("process_name" | "thread_name") => format!("{n} {}", e["args"]["name"]),
            n => n.to_owned(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "process_name \"GPU 0\"",
            "process_name \"Spans\"",
            "thread_name \"s\"",
            "k1",
            "k2",
            "thread_name \"stream 7\""
        ]
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn gzipped_and_bare_array_traces_read_as_plain_ones() {
    use std::io::Write as _;
    let text = kineto(Some((B, true)), &[x("k", "0", "7", "4999926000100.123")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    let path = temp("gz.json.gz", &gz.finish().unwrap());
    let profiles = Profiles::read(std::slice::from_ref(&path), None).unwrap();
    let (_, _, text) = merge(&profiles, 1, Vec::new());
    assert_eq!(ts_text(&text, "k"), "4999926000100.123");
    std::fs::remove_file(path).unwrap();

    // The array form, left open as the format allows, with Unix times.
    let bare = format!(
        "[{},\n{}",
        x("a", "0", "7", "1764300000000100"),
        x("b", "0", "7", "1764300000000200")
    );
    let path = temp("bare.json", bare.as_bytes());
    let profiles = Profiles::read(std::slice::from_ref(&path), None).unwrap();
    let (ev, merged, _) = merge(&profiles, 1, Vec::new());
    assert_eq!(merged[0].events, 2);
    assert!(ev.iter().any(|e| e["name"] == "b"));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn malformed_traces_are_refused_naming_the_file_the_line_and_the_fault() {
    let good = x("k", "0", "7", "1.000");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "empty"),
        ("text", b"hello".to_vec(), "it starts with 'h'"),
        (
            "no-events",
            b"{\"baseTimeNanoseconds\": 1}".to_vec(),
            "no \"traceEvents\" array",
        ),
        (
            "bad-event",
            kineto(
                Some((B, true)),
                &[good.clone(), "  {\"ph\": \"X\",, \"ts\": 1}".into()],
            )
            .into_bytes(),
            "line 14: the event is not JSON",
        ),
        (
            "cut",
            kineto(Some((B, true)), std::slice::from_ref(&good)).as_bytes()[..150].to_vec(),
            "cut short",
        ),
        (
            "not-object",
            kineto(Some((B, true)), &["  17".into()]).into_bytes(),
            "event 0 of \"traceEvents\" is not an object",
        ),
        (
            "ts-string",
            kineto(Some((B, true)), &[x("k", "0", "7", "\"1.0\"")]).into_bytes(),
            "\"ts\" is \"1.0\", not a number",
        ),
        (
            "bad-base",
            kineto(Some((B, true)), std::slice::from_ref(&good))
                .replace(&B.to_string(), "-5")
                .into_bytes(),
            "\"baseTimeNanoseconds\" is -5",
        ),
        (
            "not-utf8",
            kineto(Some((B, true)), &[x("k~", "0", "7", "1.0")])
                .into_bytes()
                .into_iter()
                .map(|b| if b == b'~' { 0xff } else { b })
                .collect(),
            "not UTF-8",
        ),
        (
            "trailing",
            (kineto(Some((B, true)), std::slice::from_ref(&good)) + "{}").into_bytes(),
            "text after the trace's closing '}'",
        ),
        (
            "events-not-array",
            b"{\"traceEvents\": {}}".to_vec(),
            "\"traceEvents\" is not an array",
        ),
    ];
    for (name, text, want) in cases {
        let path = temp(&format!("bad-{name}.json"), &text);
        let e = Profiles::read(std::slice::from_ref(&path), None)
            .err()
            .unwrap_or_else(|| panic!("{name}: read"));
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains(want),
            "{name}: {e}"
        );
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn member_names_are_read_with_or_without_escapes() {
    assert!(field("\"pid\"") == Field::Pid);
    assert!(field("\"p\\u0069d\"") == Field::Pid);
    assert!(field("\"tid\"") == Field::Tid);
    assert!(field("\"args\"") == Field::Other);
    assert!(field("\"a\\\"\"") == Field::Other);
}

/// Bytes of a real-looking trace changed one at a time, and cut: every reading either refuses
/// the file with a message or merges it into lines that are each valid JSON. Nothing panics.
#[test]
fn a_damaged_trace_is_refused_or_merged_whole_never_half() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kineto.trace.json");
    let good = std::fs::read(fixture).unwrap();
    let mut variants: Vec<Vec<u8>> = Vec::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        // A small deterministic generator: the same damage on every run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = (state % good.len() as u64) as usize;
        let with = b"\"{}[],:\\0-e. \xff"[(state >> 32) as usize % 14];
        let mut v = good.clone();
        v[at] = with;
        variants.push(v);
        if state % 5 == 0 {
            variants.push(good[..at].to_vec());
        }
    }
    let (mut refused, mut merged) = (0, 0);
    for (i, v) in variants.iter().enumerate() {
        let path = temp(&format!("damaged-{i}.json"), v);
        match Profiles::read(std::slice::from_ref(&path), None) {
            Err(e) => {
                assert!(e.starts_with(&path.display().to_string()), "{e}");
                refused += 1;
            }
            Ok(profiles) => {
                let mut w = TraceEventWriter::new(Vec::new(), Limits::default()).unwrap();
                profiles.prepare(&mut w);
                if profiles.write(&mut w).is_ok() {
                    let (out, _) = w.finish().unwrap();
                    let text = String::from_utf8(out).unwrap();
                    serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{i}: {e}"));
                    merged += 1;
                }
            }
        }
        std::fs::remove_file(path).unwrap();
    }
    // Both outcomes happen: the damage is not all in whitespace, nor all fatal.
    assert!(
        refused > 50 && merged > 50,
        "{refused} refused, {merged} merged"
    );
}
