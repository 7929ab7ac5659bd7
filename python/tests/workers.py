"""Processes the tests start with multiprocessing's `spawn`, as SGLang starts its schedulers."""

import os
import threading

import slicetrace
from slicetrace.sglang.tracing import (
    process_tracing_init,
    trace_event,
    trace_req_finish,
    trace_req_start,
    trace_set_proc_propagate_context,
    trace_set_remote_propagate_context,
    trace_set_thread_info,
    trace_slice_batch,
    trace_slice_end,
    trace_slice_start,
)


class Req:
    def __init__(self, rid, steps):
        self.rid = rid
        self.steps = steps

    def finished(self):
        return self.steps <= 0


def scheduler(conn, path, tp_rank):
    """Receives pickled (rid, context) pairs, as a scheduler receives requests over ZMQ, and
    runs them: a prefill, an event, then a decode loop in batches until each finishes."""
    os.environ["SLICETRACE_FILE"] = path
    process_tracing_init(None, "test-server")
    trace_set_thread_info("Scheduler", tp_rank, 0)
    reqs = []
    for rid, ctx, steps in conn.recv():
        trace_set_proc_propagate_context(rid, ctx)
        trace_slice_start("", rid, anonymous=True)
        trace_slice_start("forward", rid)
        trace_slice_end("forward", rid)
        trace_event("prefill_done", rid, attrs={"tp_rank": tp_rank})
        trace_slice_end("prefill", rid, auto_next_anon=True)
        reqs.append(Req(rid, steps))
    while reqs:
        for r in reqs:
            r.steps -= 1
        trace_slice_batch("decode_loop", reqs)
        reqs = [r for r in reqs if not r.finished()]
    conn.send((threading.get_native_id(), slicetrace.shutdown()))


def decode_node(conn, path, header, rid, room):
    """A decode node: joins through the cross-node header, then runs one slice."""
    os.environ["SLICETRACE_FILE"] = path
    process_tracing_init(None, "decode-server")
    trace_set_thread_info("Tokenizer")
    trace_set_remote_propagate_context(header)
    trace_req_start(rid, bootstrap_room=room)
    trace_slice_start("decode", rid)
    trace_slice_end("decode", rid)
    trace_req_finish(rid)
    conn.send((threading.get_native_id(), slicetrace.shutdown()))
