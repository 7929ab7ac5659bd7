//! Synthetic OTLP/JSON input, as the reference's collector set-up writes it: for benchmarks and
//! the large-input test. Each request is ten spans over two processes' threads — the request,
//! two thread spans, tokenize, prefill with a nested forward, four decode steps — and its
//! slices carry no thread id, so they are placed through their parents, which arrive after
//! them, as in a real export.

use std::fmt::Write as _;
use std::io::{self, Write};

pub const SPANS_PER_REQUEST: u64 = 10;

#[allow(clippy::too_many_arguments)]
fn span(
    out: &mut String,
    trace: u128,
    id: u64,
    parent: u64,
    name: &str,
    start: u64,
    end: u64,
    attrs: &str,
    link: Option<u64>,
) {
    let _ = write!(
        out,
        r#"{{"traceId":"{trace:032x}","spanId":"{id:016x}","parentSpanId":"{}","name":"{name}","kind":1,"startTimeUnixNano":"{start}","endTimeUnixNano":"{end}","attributes":[{attrs}],"status":{{}}"#,
        if parent == 0 {
            String::new()
        } else {
            format!("{parent:016x}")
        }
    );
    if let Some(l) = link {
        let _ = write!(
            out,
            r#","links":[{{"traceId":"{trace:032x}","spanId":"{l:016x}"}}]"#
        );
    }
    out.push_str("},");
}

/// Writes `requests` requests, `per_line` to a line, to `out`; returns the number of spans.
pub fn write_otlp_json(out: &mut impl Write, requests: u64, per_line: u64) -> io::Result<u64> {
    const BASE: u64 = 1_764_300_000_000_000_000;
    let mut line = String::with_capacity(1 << 20);
    let mut spans = 0;
    let mut r = 0;
    while r < requests {
        line.clear();
        line.push_str(r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"synthetic"}},{"key":"process.pid","value":{"intValue":"4242"}}]},"scopeSpans":[{"scope":{"name":"sglang"},"spans":["#);
        for i in r..(r + per_line).min(requests) {
            let trace = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            let id = |k: u64| (i + 1) << 8 | k;
            let t0 = BASE + i * 1_000_000;
            let rid = format!(r#"{{"key":"rid","value":{{"stringValue":"req-{i:08}"}}}}"#);
            let tok = r#"{"key":"thread_label","value":{"stringValue":"tokenizer"}},{"key":"pid","value":{"intValue":"100"}}"#;
            let sched = r#"{"key":"thread_label","value":{"stringValue":"scheduler"}},{"key":"tp_rank","value":{"intValue":"0"}},{"key":"pid","value":{"intValue":"200"}}"#;
            span(
                &mut line,
                trace,
                id(3),
                id(2),
                "tokenize",
                t0 + 10_000,
                t0 + 60_000,
                "",
                None,
            );
            span(
                &mut line,
                trace,
                id(2),
                id(1),
                "tokenizer",
                t0 + 5_000,
                t0 + 70_000,
                tok,
                None,
            );
            span(
                &mut line,
                trace,
                id(6),
                id(5),
                "forward",
                t0 + 110_000,
                t0 + 190_000,
                "",
                None,
            );
            span(
                &mut line,
                trace,
                id(5),
                id(4),
                "prefill",
                t0 + 100_000,
                t0 + 200_000,
                "",
                Some(id(3)),
            );
            let mut prev = id(5);
            for step in 0..4u64 {
                let s = t0 + 200_000 + step * 150_000;
                span(
                    &mut line,
                    trace,
                    id(7 + step),
                    id(4),
                    "decode",
                    s,
                    s + 150_000,
                    "",
                    Some(prev),
                );
                prev = id(7 + step);
            }
            span(
                &mut line,
                trace,
                id(4),
                id(1),
                "scheduler [TP 0]",
                t0 + 90_000,
                t0 + 800_000,
                sched,
                None,
            );
            span(
                &mut line,
                trace,
                id(1),
                0,
                "Req",
                t0,
                t0 + 850_000,
                &rid,
                None,
            );
            spans += SPANS_PER_REQUEST;
        }
        line.pop();
        line.push_str("]}]}]}\n");
        out.write_all(line.as_bytes())?;
        r += per_line;
    }
    Ok(spans)
}
