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

/// Kineto's `baseTimeNanoseconds` for a profile taken when [`write_otlp_json`]'s requests run:
/// their start rounded down to Kineto's interval of 7 889 238 s since the epoch.
pub const KINETO_BASE_NS: u64 = 1_764_300_000 / 7_889_238 * 7_889_238 * 1_000_000_000;

/// A PyTorch profiler trace in Kineto's layout (pretty-printed, its clock before the events,
/// process and thread names after them) over the first `steps` requests of
/// [`write_otlp_json`]: per request a profiler step, and inside its forward `ops` CPU ops on
/// the scheduler's process (4242) and thread (200), each launching a kernel on GPU 0's stream 7
/// with the flow between them, and a memory event and a counter. Returns the events written.
pub fn write_kineto(out: &mut impl Write, steps: u64, ops: u64) -> io::Result<u64> {
    const BASE: u64 = 1_764_300_000_000_000_000;
    let ts = |ns: u64| {
        let rel = ns - KINETO_BASE_NS;
        format!("{}.{:03}", rel / 1000, rel % 1000)
    };
    let mut s = String::with_capacity(1 << 20);
    let _ = write!(
        s,
        "{{\n  \"schemaVersion\": 1,\n  \"deviceProperties\": [\n    {{\n      \"id\": 0, \"name\": \
         \"NVIDIA H100 80GB HBM3\", \"totalGlobalMem\": 85045231616,\n      \"computeMajor\": 9, \
         \"computeMinor\": 0, \"numSms\": 132\n    }}\n  ],\n  \"record_shapes\": 1,\n  \
         \"displayTimeUnit\": \"ms\",\n  \"baseTimeNanoseconds\": {KINETO_BASE_NS},\n  \
         \"traceEvents\": [\n"
    );
    let mut events = 0u64;
    let mut corr = 0u64;
    for i in 0..steps {
        let t0 = BASE + i * 1_000_000;
        let _ = write!(
            s,
            "  {{\n    \"ph\": \"X\", \"cat\": \"user_annotation\", \"name\": \"ProfilerStep#{i}\", \
             \"pid\": 4242, \"tid\": 200,\n    \"ts\": {}, \"dur\": 700.000,\n    \"args\": {{\n      \
             \"External id\": {}, \"Record function id\": 0, \"Ev Idx\": {events}\n    }}\n  }},\n",
            ts(t0 + 100_000),
            corr
        );
        let _ = write!(
            s,
            "  {{\n    \"ph\": \"i\", \"cat\": \"cpu_instant_event\", \"s\": \"t\", \"name\": \
             \"[memory]\",\n    \"pid\": 4242, \"tid\": 200,\n    \"ts\": {},\n    \"args\": {{\n      \
             \"Total Reserved\": 2097152, \"Total Allocated\": 4096, \"Bytes\": 4096, \"Addr\": \
             139872012206080, \"Device Id\": 0, \"Device Type\": 1\n    }}\n  }},\n",
            ts(t0 + 105_000)
        );
        let _ = write!(
            s,
            "  {{\n    \"ph\": \"C\", \"cat\": \"hardware_counters\", \"name\": \"sm__throughput\", \
             \"pid\": \"GPU 0 Counters\", \"tid\": 0,\n    \"ts\": {},\n    \"args\": {{\n      \"\": \
             {}.5\n    }}\n  }},\n",
            ts(t0 + 106_000),
            i % 100
        );
        events += 3;
        let gap = 80_000 / ops.max(1);
        for k in 0..ops {
            corr += 1;
            let at = t0 + 110_000 + k * gap;
            let _ = write!(
                s,
                "  {{\n    \"ph\": \"X\", \"cat\": \"cpu_op\", \"name\": \"aten::mm\", \"pid\": 4242, \
                 \"tid\": 200,\n    \"ts\": {}, \"dur\": {}.250,\n    \"args\": {{\n      \"External \
                 id\": {corr},\n      \"Record function id\": 0, \"Concrete Inputs\": [\"\", \"\"], \
                 \"Input type\": [\"c10::BFloat16\", \"c10::BFloat16\"], \"Input Strides\": [[4096, \
                 1], [1, 4096]], \"Input Dims\": [[8, 4096], [4096, 4096]], \"Ev Idx\": {events}\n    \
                 }}\n  }},\n",
                ts(at),
                gap / 2000
            );
            let _ = write!(
                s,
                "  {{\n    \"ph\": \"X\", \"cat\": \"cuda_runtime\", \"name\": \"cudaLaunchKernel\", \
                 \"pid\": 4242, \"tid\": 200,\n    \"ts\": {}, \"dur\": 4.100,\n    \"args\": {{\n      \
                 \"cbid\": 211, \"correlation\": {corr},\n      \"External id\": {corr}\n    }}\n  }},\n  \
                 {{\n    \"ph\": \"s\", \"id\": {corr}, \"pid\": 4242, \"tid\": 200, \"ts\": {},\n    \
                 \"cat\": \"ac2g\", \"name\": \"ac2g\"\n  }},\n",
                ts(at + 1_000),
                ts(at + 1_000)
            );
            let _ = write!(
                s,
                "  {{\n    \"ph\": \"X\", \"cat\": \"kernel\", \"name\": \
                 \"ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn\", \"pid\": 0, \"tid\": 7,\n    \"ts\": \
                 {}, \"dur\": 30.000,\n    \"args\": {{\n      \"queued\": 0, \"device\": 0, \"context\": \
                 1,\n      \"stream\": 7, \"correlation\": {corr},\n      \"registers per thread\": 232,\n      \
                 \"shared memory\": 49152,\n      \"blocks per SM\": 0.606061,\n      \"warps per SM\": \
                 2.424242,\n      \"grid\": [80, 1, 1],\n      \"block\": [128, 1, 1],\n      \"est. \
                 achieved occupancy %\": 6\n    }}\n  }},\n  {{\n    \"ph\": \"f\", \"id\": {corr}, \
                 \"pid\": 0, \"tid\": 7, \"ts\": {},\n    \"cat\": \"ac2g\", \"name\": \"ac2g\", \"bp\": \
                 \"e\"\n  }},\n",
                ts(at + 5_000),
                ts(at + 5_000)
            );
            events += 5;
        }
        if s.len() > 1 << 20 {
            out.write_all(s.as_bytes())?;
            s.clear();
        }
    }
    let at = ts(BASE);
    for (pid, tid, what, key, value) in [
        ("4242", "0", "process_name", "name", "\"python3\""),
        ("4242", "0", "process_labels", "labels", "\"CPU\""),
        ("0", "0", "process_name", "name", "\"GPU 0\""),
        ("0", "0", "process_sort_index", "sort_index", "5000000"),
        (
            "4242",
            "200",
            "thread_name",
            "name",
            "\"thread 200 (python3)\"",
        ),
        ("0", "7", "thread_name", "name", "\"stream 7 \""),
    ] {
        let _ = write!(
            s,
            "  {{\n    \"name\": \"{what}\", \"ph\": \"M\", \"ts\": {at}, \"pid\": {pid}, \"tid\": \
             {tid},\n    \"args\": {{\n      \"{key}\": {value}\n    }}\n  }},\n"
        );
        events += 1;
    }
    let end = ts(BASE + steps * 1_000_000);
    let _ = write!(
        s,
        "  {{\n    \"ph\": \"X\", \"cat\": \"Trace\", \"name\": \"PyTorch Profiler (0)\", \"pid\": \
         \"Spans\", \"tid\": \"PyTorch Profiler\",\n    \"ts\": {at}, \"dur\": {},\n    \"args\": {{\n      \
         \"Op count\": 0\n    }}\n  }},\n  {{\n    \"name\": \"Record Window End\", \"ph\": \"i\", \"s\": \
         \"g\",\n    \"pid\": \"\", \"tid\": \"\", \"ts\": {end}\n  }}\n  ],\n  \"traceName\": \
         \"synthetic.pt.trace.json\"\n}}\n",
        steps * 1000
    );
    events += 2;
    out.write_all(s.as_bytes())?;
    Ok(events)
}
