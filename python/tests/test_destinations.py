"""Where spans go: the endpoint argument or OTEL_* choose OTLP (a collector that is down is
counted, not fatal); with neither, the local Perfetto file."""

import json
import socket
import time

import slicetrace
from slicetrace.sglang import tracing as t


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_request(rid="d0d0d0d0-dest"):
    t.trace_set_thread_info("Tokenizer")
    t.trace_req_start(rid)
    t.trace_slice_start("s", rid)
    t.trace_slice_end("s", rid)
    t.trace_req_finish(rid)


def test_no_endpoint_writes_the_perfetto_file(tmp_path, monkeypatch):
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "run.trace.json"
    monkeypatch.setenv("SLICETRACE_FILE", str(path))
    t.process_tracing_init(None, "perfetto-server")
    one_request()
    final = slicetrace.shutdown()
    # The slice, the thread, request and room spans.
    assert final["spans_exported"] == 4
    doc = json.loads(path.read_text())
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    names = {e.get("name") for e in events}
    assert {"s", " Req d0d0d0d0", "Bootstrap Room 0x0"} <= names


def collector_down_run(monkeypatch, tmp_path, endpoint_arg, env):
    monkeypatch.setenv("SLICETRACE_FILE", str(tmp_path / "must-not-exist.jsonl"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "200")
    t.process_tracing_init(endpoint_arg, "otlp-server")
    one_request()
    start = time.monotonic()
    final = slicetrace.shutdown()
    assert time.monotonic() - start < 10
    assert not (tmp_path / "must-not-exist.jsonl").exists()
    return final


def test_endpoint_argument_chooses_otlp_and_a_down_collector_is_counted(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    final = collector_down_run(monkeypatch, tmp_path, f"http://127.0.0.1:{free_port()}/v1/traces", {})
    assert final["spans_exported"] == 0
    assert final["spans_export_failed"] + final["spans_dropped_export"] == 4


def test_otel_variables_choose_otlp_without_an_argument(tmp_path, monkeypatch):
    final = collector_down_run(
        monkeypatch,
        tmp_path,
        None,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"127.0.0.1:{free_port()}"},
    )
    assert final["spans_exported"] == 0
    assert final["spans_export_failed"] + final["spans_dropped_export"] == 4
