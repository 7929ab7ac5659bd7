//! The `slicetrace` command's input readers (OTLP/JSON lines, span lines, trace-event files,
//! told apart by the first line) and the trace-event writer they feed, on arbitrary bytes:
//! never panic, and every span read reaches the writer, whose output stays one JSON array. The
//! direct OTLP/JSON reader reads every line it takes as the serde reader does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slicetrace_spans::writer::{Limits, TraceEventWriter};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        // Small bounds, so the eviction paths run too.
        max_buffered: 64,
        max_pending: 8,
        index_window: 16,
        ..Limits::default()
    };
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            assert!(slicetrace_cli::input::direct_reader_agrees(line.trim_ascii()));
        }
    }
    let mut w = TraceEventWriter::new(Vec::new(), limits).unwrap();
    let mut spans = 0u64;
    let report = slicetrace_cli::input::read_from(data, "fuzz", &mut |p, s| {
        spans += 1;
        w.push(p, s)
    });
    if let Ok(r) = report {
        assert_eq!(r.spans, spans);
    }
    let (out, stats) = w.finish().unwrap();
    assert_eq!(stats.spans, spans);
    assert!(out.starts_with(b"[\n") && out.ends_with(b"\n]\n"));
});
