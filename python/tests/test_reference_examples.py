"""The code examples of SGLang's request-tracing guide, verbatim, and the trees they make."""

import queue
import threading

from conftest import in_room, thread_span_name

import slicetrace
from slicetrace.sglang.tracing import (
    process_tracing_init,
    trace_get_proc_propagate_context,
    trace_req_finish,
    trace_req_start,
    trace_set_proc_propagate_context,
    trace_set_thread_info,
    trace_slice_end,
    trace_slice_start,
)

RID = "5e1f0a2b-9c3d-4e5f-8a6b-7c8d9e0f1a2b"


def test_initialization_starts_tracing(tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("SLICETRACE_FILE", str(tmp_path / "init.jsonl"))
    oltp_traces_endpoint, server_name = None, "example-server"
    process_tracing_init(oltp_traces_endpoint, server_name)
    try:
        assert slicetrace.is_tracing_enabled()
        tp_rank, dp_rank = 1, 0
        trace_set_thread_info("thread label", tp_rank, dp_rank)
    finally:
        slicetrace.shutdown()
    assert not slicetrace.is_tracing_enabled()


def test_request_and_a_slice(traced):
    rid, bootstrap_room = RID, None
    trace_set_thread_info("thread label", 0, None)
    trace_req_start(rid, bootstrap_room)
    trace_slice_start("slice A", rid)
    trace_slice_end("slice A", rid)
    trace_req_finish(rid)
    t = traced.finish()
    # SGLang 0.5.9's tree: the room span (0x0 without a room) above the request span.
    assert t.tree() == in_room(
        (" Req 5e1f0a2b", [(thread_span_name("thread label", 0), [("slice A", [])])])
    )
    req = t.named(" Req 5e1f0a2b")
    assert req["attributes"] == {"rid": RID}
    room = t.named("Bootstrap Room 0x0")
    assert room["attributes"] == {"bootstrap_room": "0x0"}
    assert (room["start_unix_nano"], room["end_unix_nano"]) == (req["start_unix_nano"], req["end_unix_nano"])
    assert req["kind"] == room["kind"] == "internal"
    assert req["scope"] == "sglang server"
    thread = t.named(thread_span_name("thread label", 0))
    assert thread["attributes"]["thread_label"] == "thread label"
    assert thread["attributes"]["tp_rank"] == 0
    assert t.named("slice A")["status"] == "unset"
    assert len({s["trace_id"] for s in t.spans}) == 1


def test_anonymous_slice_named_by_its_end(traced):
    rid = RID
    trace_set_thread_info("thread label")
    trace_req_start(rid)
    trace_slice_start("", rid, anonymous = True)
    trace_slice_end("slice A", rid)
    trace_req_finish(rid)
    t = traced.finish()
    assert t.tree() == in_room((" Req 5e1f0a2b", [(thread_span_name("thread label"), [("slice A", [])])]))
    assert t.named("slice A")["status"] == "unset"


def test_auto_next_anon_chains_slices(traced):
    rid = RID
    trace_set_thread_info("thread label")
    trace_req_start(rid)
    trace_slice_start("", rid, anonymous = True)
    trace_slice_end("slice A", rid, auto_next_anon = True)
    trace_slice_end("slice B", rid, auto_next_anon = True)
    trace_slice_end("slice C", rid, auto_next_anon = True)
    trace_slice_end("slice D", rid)
    trace_req_finish(rid)
    t = traced.finish()
    slices = [(f"slice {c}", []) for c in "ABCD"]
    assert t.tree() == in_room((" Req 5e1f0a2b", [(thread_span_name("thread label"), slices)]))
    assert t.links("slice A") == []
    assert t.links("slice B") == ["slice A"]
    assert t.links("slice C") == ["slice B"]
    assert t.links("slice D") == ["slice C"]
    # Each next slice starts where the one before ended.
    for a, b in ["AB", "BC", "CD"]:
        assert t.named(f"slice {a}")["end_unix_nano"] == t.named(f"slice {b}")["start_unix_nano"]


def test_thread_finish_flag_ends_the_thread_span(traced):
    rid = RID
    trace_set_thread_info("thread label")
    trace_req_start(rid)
    trace_slice_start("", rid, anonymous = True)
    trace_slice_end("slice D", rid, thread_finish_flag = True)
    trace_slice_start("late", rid)  # after the thread finished: a new thread span
    trace_slice_end("late", rid)
    trace_req_finish(rid)
    t = traced.finish()
    threads = [s for s in t.spans if s["name"] == thread_span_name("thread label")]
    assert len(threads) == 2
    first = min(threads, key=lambda s: s["start_unix_nano"])
    assert [c["name"] for c in t.children(first)] == ["slice D"]
    assert first["end_unix_nano"] == t.named("slice D")["end_unix_nano"]


class Req:
    """What SGLang sends over ZMQ: the request with its trace context."""

    def __init__(self, rid):
        self.rid = rid
        self.trace_context = None


def test_propagation_to_another_thread(traced):
    rid = RID
    trace_set_thread_info("Tokenizer")
    trace_req_start(rid)
    trace_slice_start("tokenize", rid)
    req = Req(rid)
    # sender
    trace_context = trace_get_proc_propagate_context(rid)
    req.trace_context = trace_context
    pipe = queue.Queue()
    pipe.put(req)

    def scheduler():
        trace_set_thread_info("Scheduler", 0, 0)
        req = pipe.get()
        rid = req.rid
        # receiver
        trace_set_proc_propagate_context(rid, req.trace_context)
        trace_slice_start("prefill", rid)
        trace_slice_end("prefill", rid, thread_finish_flag = True)
        done.set()
        tid.append(threading.get_native_id())

    done, tid = threading.Event(), []
    t = threading.Thread(target=scheduler)
    t.start()
    t.join()
    assert done.is_set()
    trace_slice_end("tokenize", rid)
    trace_req_finish(rid)
    tr = traced.finish()
    # One request span in the process: the scheduler thread's span hangs under it too.
    assert tr.tree() == in_room(
        (
            " Req 5e1f0a2b",
            [
                (thread_span_name("Tokenizer"), [("tokenize", [])]),
                (thread_span_name("Scheduler", 0, tid[0]), [("prefill", [])]),
            ],
        )
    )
    assert tr.links("prefill") == ["tokenize"]
    assert tr.named(thread_span_name("Scheduler", 0, tid[0]))["attributes"]["dp_rank"] == 0
