"""One trace across SGLang 0.5.9's own module and ours, in both directions, through the pickled
in-node context. Each side runs in its own process. Needs the OpenTelemetry SDK and the
unpacked sglang wheel (`bash scripts/test` provides both); skipped without them."""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import thread_span_name

from slicetrace.sglang import tracing as t

SGLANG = os.environ.get("SLICETRACE_SGLANG_DIR", "")
HERE = Path(__file__).resolve().parent
RID = "feedface-0000-interop"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry") is None
    or not Path(SGLANG, "sglang/srt/tracing/trace.py").is_file(),
    reason="needs the OpenTelemetry SDK and SLICETRACE_SGLANG_DIR (bash scripts/test sets both)",
)


def sglang(mode, tmp_path):
    r = subprocess.run(
        [sys.executable, str(HERE / "sglang_side.py"), mode, str(tmp_path / "ctx.pkl"), str(tmp_path / "sgl.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return {s["name"]: s for s in json.loads((tmp_path / "sgl.json").read_text())}


def test_sglang_sends_and_we_receive(traced, tmp_path):
    theirs = sglang("send", tmp_path)
    ctx = pickle.loads((tmp_path / "ctx.pkl").read_bytes())
    assert "slicetrace" not in ctx  # SGLang's own dict
    t.trace_set_thread_info("Scheduler", 0, 0)
    t.trace_set_proc_propagate_context(RID, ctx)
    t.trace_slice_start("prefill", RID)
    t.trace_slice_end("prefill", RID, thread_finish_flag=True)
    ours = traced.finish()
    assert traced.final_stats["contexts_refused"] == 0
    their_req = theirs[" Req feedface"]  # 0.5.9's name with the default role
    assert {s["trace_id"] for s in ours.spans} == {their_req["trace_id"]}
    # Today's core: a request span of our process under theirs, our thread span under it.
    [our_req] = [s for s in ours.spans if s["parent_span_id"] == their_req["span_id"]]
    assert ours.tree(our_req) == (
        our_req["name"],
        [(thread_span_name("Scheduler", 0), [("prefill", [])])],
    )
    assert [link["span_id"] for link in ours.named("prefill")["links"]] == [theirs["tokenize"]["span_id"]]


def test_we_send_and_sglang_receives(traced, tmp_path):
    t.trace_set_thread_info("Tokenizer")
    t.trace_req_start(RID)
    t.trace_slice_start("tokenize", RID)
    (tmp_path / "ctx.pkl").write_bytes(pickle.dumps(t.trace_get_proc_propagate_context(RID)))
    t.trace_slice_end("tokenize", RID)
    t.trace_req_finish(RID)
    ours = traced.finish()
    theirs = sglang("recv", tmp_path)
    req = ours.named("Req feedface")
    [thread] = [s for n, s in theirs.items() if n.startswith("Scheduler [TP 0] (host:")]
    assert thread["parent_span_id"] == req["span_id"]
    assert thread["trace_id"] == req["trace_id"]  # all 128 bits
    prefill = theirs["prefill"]
    assert prefill["parent_span_id"] == thread["span_id"]
    assert prefill["links"] == [ours.named("tokenize")["span_id"]]
