"""Runs SGLang 0.5.9's own tracing module, unmodified, in a process of its own, with the
OpenTelemetry Python SDK and an in-memory exporter. Only `sglang.srt.utils` is stubbed (it
imports torch); the module comes from the release's wheel, unpacked at SLICETRACE_SGLANG_DIR.

    python sglang_side.py send|recv <context.pkl> <spans.json>

send: starts a request, opens a slice, pickles its propagated context, ends everything.
recv: joins the request from the pickled context and runs one slice on a scheduler thread.
Both write the finished spans as JSON.
"""

import json
import os
import pickle
import sys
import types

root = os.environ["SLICETRACE_SGLANG_DIR"]
sys.path.insert(0, root)
for pkg in ("sglang", "sglang.srt"):
    m = types.ModuleType(pkg)
    m.__path__ = [os.path.join(root, *pkg.split("."))]
    sys.modules[pkg] = m
utils = types.ModuleType("sglang.srt.utils")
utils.get_int_env_var = lambda name, default: int(os.environ.get(name, default))
sys.modules["sglang.srt.utils"] = utils

from opentelemetry import trace as ot  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from sglang.srt.tracing import trace as sg  # noqa: E402

RID = "feedface-0000-interop"


def main(mode, ctx_path, out_path):
    # Its OTLP exporter points nowhere; the spans are read from memory.
    sg.process_tracing_init("127.0.0.1:9", "sglang-side")
    mem = InMemorySpanExporter()
    ot.get_tracer_provider().add_span_processor(SimpleSpanProcessor(mem))
    if mode == "send":
        sg.trace_set_thread_info("Tokenizer")
        sg.trace_req_start(RID)
        sg.trace_slice_start("tokenize", RID)
        with open(ctx_path, "wb") as f:
            pickle.dump(sg.trace_get_proc_propagate_context(RID), f)
        sg.trace_slice_end("tokenize", RID)
        sg.trace_req_finish(RID)
    else:
        with open(ctx_path, "rb") as f:
            ctx = pickle.load(f)
        sg.trace_set_thread_info("Scheduler", 0, 0)
        sg.trace_set_proc_propagate_context(RID, ctx)
        sg.trace_slice_start("prefill", RID)
        sg.trace_slice_end("prefill", RID, thread_finish_flag=True)
    spans = [
        {
            "name": s.name,
            "span_id": f"{s.context.span_id:016x}",
            "trace_id": f"{s.context.trace_id:032x}",
            "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else None,
            "links": [f"{link.context.span_id:016x}" for link in s.links],
        }
        for s in mem.get_finished_spans()
    ]
    with open(out_path, "w") as f:
        json.dump(spans, f)
    os._exit(0)  # its batch processor would retry the unreachable endpoint at exit


if __name__ == "__main__":
    main(*sys.argv[1:])
