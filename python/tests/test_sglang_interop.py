"""One trace across SGLang 0.5.9's own module and ours, each in its own process, in both
directions, through the pickled in-node context and the base64 cross-node header; both sides
export to the real collector (rotel), and the trace is read back from what it received.

Needs the OpenTelemetry SDK and the unpacked sglang wheel: `bash scripts/test` provides both and
sets SLICETRACE_SGLANG_DIR; without them the tests fail, naming what is missing."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from collector import Rotel

import slicetrace
from slicetrace.sglang import tracing as t

HERE = Path(__file__).resolve().parent
SGLANG = os.environ.get("SLICETRACE_SGLANG_DIR") or str(HERE.parents[1] / "target" / "sglang-0.5.9")
RID = "feedface-0000-interop"
ROOM = 0x5EED
DECODE_RID = "dddd0000-decode"


@pytest.fixture
def rotel():
    assert Path(SGLANG, "sglang/srt/tracing/trace.py").is_file(), (
        f"SGLang 0.5.9's trace.py is not at {SGLANG}: run bash scripts/test, which unpacks it"
    )
    r = Rotel()
    yield r
    r.stop()


def sglang(mode, rotel, ctx_path):
    env = dict(os.environ, SLICETRACE_SGLANG_DIR=SGLANG, SGLANG_OTLP_EXPORTER_SCHEDULE_DELAY_MILLIS="50")
    r = subprocess.run(
        [sys.executable, str(HERE / "sglang_side.py"), mode, rotel.grpc, str(ctx_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr


def ours_start(rotel):
    t.process_tracing_init(rotel.grpc, "slicetrace-side")


def ours_finish():
    final = slicetrace.shutdown()
    assert final["spans_export_failed"] + final["spans_dropped_export"] == 0, final
    assert final["contexts_refused"] == 0, final
    return final


class Spans:
    """What the collector received, by side (service name)."""

    def __init__(self, spans):
        self.all = spans
        self.by_id = {s["span_id"]: s for s in spans}

    def side(self, service):
        return [s for s in self.all if s["resource"].get("service.name") == f"Str({service})"]

    def one(self, service, name=None, prefix=None):
        found = [
            s
            for s in self.side(service)
            if (name is not None and s["name"] == name) or (prefix is not None and s["name"].startswith(prefix))
        ]
        assert len(found) == 1, f"{service}: {name or prefix!r} in {[s['name'] for s in self.side(service)]}"
        return found[0]

    def names(self, service):
        return sorted(s["name"].split("(host:")[0] for s in self.side(service))


def collected(rotel, n):
    spans = Spans(rotel.spans(n))
    assert len(spans.all) == n, [s["name"] for s in spans.all]
    assert len({s["trace_id"] for s in spans.all}) == 1, "one trace"
    return spans


def test_sglang_sends_in_node_and_we_receive(rotel, tmp_path):
    sglang("send", rotel, tmp_path / "ctx.pkl")
    ctx = pickle.loads((tmp_path / "ctx.pkl").read_bytes())
    assert "slicetrace" not in ctx  # SGLang's own dict
    ours_start(rotel)
    t.trace_set_thread_info("Scheduler", 0, 0)
    t.trace_set_proc_propagate_context(RID, ctx)
    t.trace_slice_start("prefill", RID)
    t.trace_slice_end("prefill", RID, thread_finish_flag=True)
    ours_finish()
    s = collected(rotel, 6)
    assert s.names("sglang-side") == [" Req feedface", "Bootstrap Room 0x0", "Tokenizer", "tokenize"]
    # Ours joined: a thread span straight under their request span, no request span of ours.
    assert s.names("slicetrace-side") == ["Scheduler [TP 0] ", "prefill"]
    their_req = s.one("sglang-side", " Req feedface")
    thread = s.one("slicetrace-side", prefix="Scheduler [TP 0] (host:")
    prefill = s.one("slicetrace-side", "prefill")
    assert thread["parent_span_id"] == their_req["span_id"]
    assert prefill["parent_span_id"] == thread["span_id"]
    assert prefill["links"] == [s.one("sglang-side", "tokenize")["span_id"]]
    assert thread["scope"] == their_req["scope"] == "sglang server"
    assert thread["kind"] == their_req["kind"] == "SPAN_KIND_INTERNAL"
    assert thread["attributes"]["tp_rank"] == "Int(0)"


def test_we_send_in_node_and_sglang_receives(rotel, tmp_path):
    ours_start(rotel)
    t.trace_set_thread_info("Tokenizer")
    t.trace_req_start(RID)
    t.trace_slice_start("tokenize", RID)
    (tmp_path / "ctx.pkl").write_bytes(pickle.dumps(t.trace_get_proc_propagate_context(RID)))
    t.trace_slice_end("tokenize", RID)
    t.trace_req_finish(RID)
    ours_finish()
    sglang("recv", rotel, tmp_path / "ctx.pkl")
    s = collected(rotel, 6)
    assert s.names("slicetrace-side") == [" Req feedface", "Bootstrap Room 0x0", "Tokenizer", "tokenize"]
    assert s.names("sglang-side") == ["Scheduler [TP 0] ", "prefill"]
    req = s.one("slicetrace-side", " Req feedface")
    room = s.one("slicetrace-side", "Bootstrap Room 0x0")
    assert req["parent_span_id"] == room["span_id"]
    assert room["attributes"]["bootstrap_room"] == "Str(0x0)"
    thread = s.one("sglang-side", prefix="Scheduler [TP 0] (host:")
    assert thread["parent_span_id"] == req["span_id"]
    assert thread["trace_id"] == req["trace_id"]  # all 128 bits
    prefill = s.one("sglang-side", "prefill")
    assert prefill["parent_span_id"] == thread["span_id"]
    assert prefill["links"] == [s.one("slicetrace-side", "tokenize")["span_id"]]


def test_sglang_router_sends_the_header_and_our_decode_node_joins(rotel, tmp_path):
    sglang("send-remote", rotel, tmp_path / "header.txt")
    ours_start(rotel)
    t.trace_set_remote_propagate_context((tmp_path / "header.txt").read_text())
    t.trace_set_thread_info("Tokenizer")
    t.trace_req_start(DECODE_RID, bootstrap_room=ROOM)
    t.trace_slice_start("decode", DECODE_RID)
    t.trace_slice_end("decode", DECODE_RID)
    t.trace_req_finish(DECODE_RID)
    ours_finish()
    s = collected(rotel, 7)
    assert s.names("sglang-side") == [f" Req {ROOM}", "Bootstrap Room 0x5eed", "Router", "route"]
    # The decode node's request span sits under the router's room span; it opens no room span.
    assert s.names("slicetrace-side") == [" Req dddd0000", "Tokenizer", "decode"]
    room = s.one("sglang-side", "Bootstrap Room 0x5eed")
    req = s.one("slicetrace-side", " Req dddd0000")
    assert req["parent_span_id"] == room["span_id"]
    thread = s.one("slicetrace-side", prefix="Tokenizer(host:")
    assert thread["parent_span_id"] == req["span_id"]
    decode = s.one("slicetrace-side", "decode")
    assert decode["links"] == [s.one("sglang-side", "route")["span_id"]]


def test_our_router_sends_the_header_and_an_sglang_decode_node_joins(rotel, tmp_path):
    ours_start(rotel)
    t.trace_set_thread_info("Router")
    t.trace_req_start(str(ROOM), bootstrap_room=ROOM)
    t.trace_slice_start("route", str(ROOM))
    (tmp_path / "header.txt").write_text(t.trace_get_remote_propagate_context([ROOM]))
    t.trace_slice_end("route", str(ROOM))
    t.trace_req_finish(str(ROOM))
    ours_finish()
    sglang("recv-remote", rotel, tmp_path / "header.txt")
    s = collected(rotel, 7)
    assert s.names("slicetrace-side") == [f" Req {ROOM}", "Bootstrap Room 0x5eed", "Router", "route"]
    assert s.names("sglang-side") == [" Req dddd0000", "Tokenizer", "decode"]
    room = s.one("slicetrace-side", "Bootstrap Room 0x5eed")
    assert room["attributes"]["bootstrap_room"] == "Str(0x5eed)"
    req = s.one("sglang-side", " Req dddd0000")
    assert req["parent_span_id"] == room["span_id"]
    assert req["trace_id"] == room["trace_id"]
    thread = s.one("sglang-side", prefix="Tokenizer(host:")
    assert thread["parent_span_id"] == req["span_id"]
    decode = s.one("sglang-side", "decode")
    assert decode["links"] == [s.one("slicetrace-side", "route")["span_id"]]
