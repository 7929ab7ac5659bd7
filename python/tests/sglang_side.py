"""Runs SGLang 0.5.9's own tracing module, unmodified, in a process of its own, on the
OpenTelemetry Python SDK with its own OTLP exporter (gRPC, to the collector the test started).
Only `sglang.srt.utils` is stubbed (it imports torch); the module comes from the release's
wheel, unpacked at SLICETRACE_SGLANG_DIR.

    python sglang_side.py MODE <collector host:port> <context file>

send:        starts a request, opens a slice, pickles its in-node context, ends everything.
recv:        joins the request from the pickled context and runs one slice on a scheduler thread.
send-remote: a router: starts the request of a bootstrap room, opens a slice, writes the
             cross-node header for the room, ends everything.
recv-remote: a decode node: reads the header, then starts its request with that room.
"""

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

from sglang.srt.tracing import trace as sg  # noqa: E402

RID = "feedface-0000-interop"
ROOM = 0x5EED
DECODE_RID = "dddd0000-decode"


def main(mode, endpoint, ctx_path):
    sg.process_tracing_init(endpoint, "sglang-side")
    if mode == "send":
        sg.trace_set_thread_info("Tokenizer")
        sg.trace_req_start(RID)
        sg.trace_slice_start("tokenize", RID)
        with open(ctx_path, "wb") as f:
            pickle.dump(sg.trace_get_proc_propagate_context(RID), f)
        sg.trace_slice_end("tokenize", RID)
        sg.trace_req_finish(RID)
    elif mode == "recv":
        with open(ctx_path, "rb") as f:
            ctx = pickle.load(f)
        sg.trace_set_thread_info("Scheduler", 0, 0)
        sg.trace_set_proc_propagate_context(RID, ctx)
        sg.trace_slice_start("prefill", RID)
        sg.trace_slice_end("prefill", RID, thread_finish_flag=True)
    elif mode == "send-remote":
        sg.trace_set_thread_info("Router")
        sg.trace_req_start(str(ROOM), bootstrap_room=ROOM)
        sg.trace_slice_start("route", str(ROOM))
        with open(ctx_path, "w") as f:
            f.write(sg.trace_get_remote_propagate_context([ROOM]))
        sg.trace_slice_end("route", str(ROOM))
        sg.trace_req_finish(str(ROOM))
    elif mode == "recv-remote":
        with open(ctx_path) as f:
            sg.trace_set_remote_propagate_context(f.read())
        sg.trace_set_thread_info("Tokenizer")
        sg.trace_req_start(DECODE_RID, bootstrap_room=ROOM)
        sg.trace_slice_start("decode", DECODE_RID)
        sg.trace_slice_end("decode", DECODE_RID)
        sg.trace_req_finish(DECODE_RID)
    else:
        raise SystemExit(f"unknown mode {mode}")
    # Its batch processor sends what it holds; then the spans are the collector's.
    assert ot.get_tracer_provider().force_flush(10_000)
    ot.get_tracer_provider().shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
