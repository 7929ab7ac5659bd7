"""`slicetrace.sglang.observability`, SGLang 0.5.10+'s request-context API: the trees it makes,
levels carried by the context, module filtering, abort, hand-offs by pickle and by
`copy_for_thread`, and what bad input gets."""

import pickle
import sys
import threading
import time

import pytest
from conftest import host_prefix

import slicetrace
from slicetrace.sglang import observability as ob

RID = "7_c0ffee00aaaa"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def v2(traced, monkeypatch):
    """A session as `traced` gives it, with the module's process state as a new process has it."""
    monkeypatch.setattr(ob, "_process_level", None)
    monkeypatch.setattr(ob, "global_trace_modules", None)
    monkeypatch.delenv("SGLANG_TRACE_LEVEL", raising=False)
    ob.process_tracing_init(None, "v2-test")
    return traced


def v2_thread_name(label, tp=None, pp=None, dp=None):
    ranks = "".join(f" [{tag} {r}] " for tag, r in (("TP", tp), ("PP", pp), ("DP", dp)) if r is not None)
    return f"{label}{ranks}(host:{host_prefix()} | pid:{threading.get_native_id()})"


def run_on_thread(fn):
    out = {}

    def body():
        out["value"] = fn()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    return out.get("value")


def test_a_request_handed_over_by_pickle_forms_one_tree(v2):
    ob.trace_set_thread_info("Tokenizer")
    ctx = ob.TraceReqContext(RID, module_name="request", external_trace_header={"traceparent": TRACEPARENT})
    assert ctx.tracing_enable
    ctx.trace_req_start()
    ctx.trace_slice_start("tokenize", 1)
    ctx.trace_slice_end("tokenize", 1, attrs={"tokens": 12})
    carrier = pickle.dumps(ctx)

    def scheduler():
        ob.trace_set_thread_info("Scheduler", tp_rank=1, dp_rank=0, pp_rank=2)
        # As SGLang 0.5.14+ rebuilds a received context.
        state = pickle.loads(carrier).__getstate__()
        got = object.__new__(ob.TraceReqContext)
        got.__setstate__(state)
        got.rebuild_thread_context()
        t0 = time.time_ns()
        got.trace_event("schedule", 3, ts=t0 + 10)
        got.trace_slice(ob.TraceSliceContext("decode_loop", t0, t0 + 100, level=3))
        got.trace_slice(ob.TraceSliceContext("decode_loop", t0 + 100, t0 + 200, level=3, attrs={"step": 2}))
        got.trace_slice_end("decode_loop", 3, thread_finish_flag=False)  # nothing open: ignored
        got.trace_slice_start("prefill_forward", 1, ts=t0 + 200)
        got.trace_slice_end("prefill_forward", 1, ts=t0 + 300, thread_finish_flag=True)
        return threading.get_native_id()

    tid = run_on_thread(scheduler)
    ctx.trace_req_finish(attrs={ob.SpanAttributes.GEN_AI_USAGE_PROMPT_TOKENS: 12})
    t = v2.finish()
    sched = f"Scheduler [TP 1]  [PP 2]  [DP 0] (host:{host_prefix()} | pid:{tid})"
    assert t.tree() == [
        (
            " Req c0ffee00",
            [
                (v2_thread_name("Tokenizer"), [("tokenize", [])]),
                (sched, [("decode_loop", []), ("decode_loop", []), ("prefill_forward", [])]),
            ],
        )
    ]
    req = t.named(" Req c0ffee00")
    assert req["parent_span_id"] == "00f067aa0ba902b7" and req["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert req["attributes"]["module"] == "sglang::request"
    assert req["attributes"]["gen_ai.usage.prompt_tokens"] == 12
    th = t.named(sched)
    assert (th["attributes"]["tp_rank"], th["attributes"]["pp_rank"], th["attributes"]["dp_rank"]) == (1, 2, 0)
    first, second = [s for s in t.spans if s["name"] == "decode_loop"]
    assert t.links("prefill_forward") == ["decode_loop"]
    assert [l["span_id"] for l in first["links"]] == [t.named("tokenize")["span_id"]]
    assert [e["name"] for e in first["events"]] == ["schedule"]
    assert second["attributes"]["step"] == 2 and second["events"] == []
    assert th["status"] == "unset"
    assert v2.final_stats["name_mismatches"] == 0
    assert v2.final_stats["contexts_refused"] == 0


def test_the_level_is_the_contexts_own_and_travels_with_it(v2):
    ob.set_global_trace_level(1)
    ctx = ob.TraceReqContext(RID)
    assert ctx.trace_level == 1
    ob.set_global_trace_level(4)
    ctx.trace_req_start()
    ctx.trace_slice_start("tokenize", 1)
    ctx.trace_slice_start("api_server_dispatch", 2)  # above the context's level
    ctx.trace_slice_end("api_server_dispatch", 2)
    ctx.trace_event("schedule", 3)
    ctx.trace_slice_end("tokenize", 1)
    state = ctx.__getstate__()
    assert state["trace_level"] == 1

    def receiver():
        got = object.__new__(ob.TraceReqContext)
        got.__setstate__(state)
        got.rebuild_thread_context()
        assert got.trace_level == 1
        got.trace_slice(ob.TraceSliceContext("decode_loop", time.time_ns(), time.time_ns() + 5, level=3))
        got.trace_slice(ob.TraceSliceContext("prefill_forward", time.time_ns(), time.time_ns() + 5, level=1))
        got.abort()

    run_on_thread(receiver)
    # A context made now takes the new process level.
    assert ob.TraceReqContext("other").trace_level == 4
    ctx.trace_req_finish()
    t = v2.finish()
    names = sorted(s["name"] for s in t.spans if "(host:" not in s["name"])
    assert names == [" Req c0ffee00", "prefill_forward", "tokenize"]
    assert all(not s["events"] for s in t.spans)


def test_level_zero_and_a_filtered_module_trace_nothing(v2, monkeypatch):
    monkeypatch.setattr(ob, "global_trace_modules", ["request"])
    assert not ob.TraceReqContext(RID, trace_level=0).tracing_enable
    assert not ob.TraceReqContext(RID, module_name="mooncake").tracing_enable
    assert ob.TraceReqContext(RID, module_name="request").tracing_enable
    assert ob.TraceReqContext(RID).tracing_enable, "a context naming no module is always traced"
    off = ob.TraceReqContext(RID, trace_level=0)
    off.trace_req_start()
    off.trace_slice_start("tokenize", 1)
    off.abort()
    assert off.__getstate__() == {"tracing_enable": False}
    assert isinstance(off.copy_for_thread(), ob.TraceNullContext)
    t = v2.finish()
    assert t.spans == []


def test_trace_modules_come_from_process_tracing_init(traced, monkeypatch):
    monkeypatch.setattr(ob, "global_trace_modules", None)
    monkeypatch.setattr(ob, "opentelemetry_initialized", False)
    slicetrace.shutdown()
    ob.process_tracing_init(None, "v2-test", trace_modules=" request , mooncake,")
    assert ob.global_trace_modules == ["request", "mooncake"]
    assert ob.get_global_tracing_enabled() and ob.opentelemetry_initialized


def test_abort_ends_open_slices_and_marks_the_thread_span(v2):
    ob.trace_set_thread_info("Scheduler", tp_rank=0)
    ctx = ob.TraceReqContext(RID)
    ctx.trace_req_start()
    ctx.trace_slice_start("request_process", 2)
    ctx.trace_slice_start("prefill_forward", 1)
    ctx.trace_event("retract", 1, ts=1)  # no slice's interval holds it: the thread span's
    ctx.trace_set_thread_attrs({"batch": 4})
    ctx.abort(abort_info={"type": "abort", "message": "client left"})
    ctx.trace_slice_start("after", 1)  # the thread span has ended: nothing
    ctx.trace_req_finish()
    t = v2.finish()
    th = t.named(v2_thread_name("Scheduler", tp=0))
    assert th["status"].startswith("error")
    assert th["attributes"]["message"] == "client left" and th["attributes"]["batch"] == 4
    assert [e["name"] for e in th["events"]] == ["retract"]
    for name in ("request_process", "prefill_forward"):
        assert t.named(name)["status"] == "unset"
        assert t.named(name)["end_unix_nano"] == th["end_unix_nano"]
    assert t.children(t.named("request_process"))[0]["name"] == "prefill_forward"
    assert "after" not in [s["name"] for s in t.spans]
    assert v2.final_stats["slices_unfinished"] == 0


def test_a_context_dropped_with_its_thread_span_open_closes_it(v2):
    ob.trace_set_thread_info("Worker")
    ctx = ob.TraceReqContext(RID)
    ctx.trace_req_start()
    ctx.trace_slice_start("tokenize", 1)
    del ctx
    t = v2.finish()
    th = t.named(v2_thread_name("Worker"))
    assert th["attributes"]["reason"] == "have unclosed span, auto closed"
    assert th["status"].startswith("error")
    assert t.named("tokenize")["status"] == "unset"


def test_copy_for_thread_continues_on_another_thread(v2):
    ob.trace_set_thread_info("Tokenizer")
    ctx = ob.TraceReqContext(RID)
    ctx.trace_req_start()
    ctx.trace_slice_start("dispatch", 2)
    copy = ctx.copy_for_thread()
    assert copy.is_copy and copy.pid is None

    def worker():
        ob.trace_set_thread_info("KV sender")
        copy.rebuild_thread_context()
        copy.trace_slice_start("transfer", 1)
        copy.trace_slice_end("transfer", 1, thread_finish_flag=True)

    run_on_thread(worker)
    ctx.trace_slice_end("dispatch", 2)
    ctx.trace_req_finish()
    t = v2.finish()
    assert t.links("transfer") == ["dispatch"], "links to the sender's open top-level slice"
    req = t.named(" Req c0ffee00")
    sender = [s for s in t.children(req) if s["name"].startswith("KV sender")]
    assert len(sender) == 1 and t.children(sender[0])[0]["name"] == "transfer"


def test_a_mismatched_end_still_ends_the_open_slice_in_error(v2):
    ctx = ob.TraceReqContext(RID)
    ctx.trace_req_start()
    ctx.trace_slice_start("prefill_forward", 1)
    ctx.trace_slice_end("decode_forward", 1)
    ctx.trace_slice_end("decode_forward", 1)  # nothing open: ignored
    ctx.trace_req_finish()
    t = v2.finish()
    assert t.named("prefill_forward")["status"].startswith("error")
    assert v2.final_stats["name_mismatches"] == 1


def test_list_values_are_arrays_as_opentelemetrys_sequences(v2):
    from opentelemetry.attributes import BoundedAttributes

    lists = {
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "steps": (1, 2, 3),
        "scores": [0.5, -1.25],
        "flags": [True, False],
        "none_yet": [],
    }
    ctx = ob.TraceReqContext(RID)
    ctx.trace_req_start()
    ctx.trace_set_thread_attrs({"flags": [False]})
    ctx.trace_slice_start("decode", 1)
    ctx.trace_event("scored", 1, attrs={"scores": [1.0]})
    ctx.trace_slice_end("decode", 1, attrs=lists)
    # Not one of OpenTelemetry's sequences (mixed, holding None, nested, a 65-bit integer):
    # recorded as its str(), where OpenTelemetry would drop it.
    odd = {"mixed": [1, "a"], "holes": ["a", None], "nested": [[1]], "big": [1 << 64], "ints_floats": [1, 2.0]}
    ctx.trace_req_finish(attrs={**odd, "gen_ai.response.finish_reasons": ("stop",)})
    t = v2.finish()
    # What the OpenTelemetry SDK keeps for the same values, as JSON gives it back.
    want = {k: list(v) for k, v in BoundedAttributes(attributes=lists).items()}
    got = t.named("decode")["attributes"]
    assert {k: got[k] for k in lists} == want
    assert t.named("decode")["events"][0]["attributes"] == {"scores": [1.0]}
    req = t.named(" Req c0ffee00")
    assert req["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert {k: req["attributes"][k] for k in odd} == {k: str(v) for k, v in odd.items()}
    (th,) = t.children(req)
    assert th["attributes"]["flags"] == [False]


def test_events_waiting_for_a_slice_are_bounded_and_counted(v2):
    ob.trace_set_thread_info("Waiter")
    ctx = ob.TraceReqContext(RID)
    ctx.trace_req_start()
    for i in range(128 + 5):
        ctx.trace_event("schedule", 3, ts=1 + i)  # long before any slice: none holds them
    ctx.trace_req_finish()
    t = v2.finish()
    th = t.named(v2_thread_name("Waiter"))
    # Bounded as every span's events are (the other 5 are in the span's dropped count).
    assert [e["time_unix_nano"] for e in th["events"]] == list(range(1, 129))


def test_bad_input_gets_a_clear_error(v2):
    ctx = ob.TraceReqContext(RID)
    ctx.trace_req_start()
    ctx.trace_slice_start("x", 1)
    with pytest.raises(TypeError):
        ctx.trace_slice_end("x", 1, attrs=["not", "a", "dict"])
    with pytest.raises(TypeError):
        ctx.trace_set_root_attrs("nope")
    with pytest.raises(TypeError):
        ob.TraceReqContext.__new__(ob.TraceReqContext).__setstate__(["state"])
    with pytest.raises(TypeError):
        ob.set_global_trace_level("3")
    # A carrier without the root context is not traced, and says why.
    bare = object.__new__(ob.TraceReqContext)
    bare.__setstate__({"tracing_enable": True, "rid": RID, "trace_level": 3})
    assert not bare.tracing_enable
    bare.trace_slice_start("x", 1)
    # A header whose traceparent is not W3C starts a new trace, as SGLang's does.
    odd = ob.TraceReqContext("odd", external_trace_header={"traceparent": "garbage"})
    odd.trace_req_start()
    odd.trace_req_finish()
    ctx.trace_req_finish()
    t = v2.finish()
    assert t.named(" Req odd")["parent_span_id"] in ("", "0000000000000000")


def test_null_context_answers_everything_with_itself():
    n = ob.TraceNullContext()
    assert n.tracing_enable is False
    assert n.trace_slice_start("x", 1) is n
    assert n.anything.at.all() is n


def test_the_module_has_every_name_sglang_imports():
    names = [
        "TraceReqContext",
        "TraceNullContext",
        "TraceSliceContext",
        "SpanAttributes",
        "process_tracing_init",
        "trace_set_thread_info",
        "fastapi_telemetry_disabled_kwargs",
        "extract_trace_headers",
        "get_global_tracing_enabled",
        "get_global_trace_level",
        "set_global_trace_level",
        # Read by SGLang's asynchronous variant.
        "tracer",
        "opentelemetry_initialized",
        "global_trace_modules",
        "_trace_context_propagator",
        "get_cur_time_ns",
        "_on_thread_info_set",
    ]
    assert [n for n in names if not hasattr(ob, n)] == []
    assert ob.fastapi_telemetry_disabled_kwargs() == {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    assert ob.extract_trace_headers({"traceparent": "a", "x": "b"}) == {"traceparent": "a"}


def test_install_puts_our_modules_under_sglangs_names(monkeypatch):
    import slicetrace.sglang as sg

    for name in list(sys.modules):
        if name == "sglang" or name.startswith("sglang."):
            monkeypatch.delitem(sys.modules, name)
    try:
        sg.install()
        assert sg.installed()
        from sglang.srt.observability.trace import TraceReqContext
        from sglang.srt.observability.trace_async import is_async_tracing_available
        from sglang.srt.tracing.trace import trace_slice_start

        assert TraceReqContext is ob.TraceReqContext
        assert is_async_tracing_available() is False
        assert trace_slice_start is slicetrace._native.trace_slice_start
    finally:
        for name in list(sys.modules):
            if name.startswith("sglang."):
                sys.modules.pop(name, None)


def test_the_thread_table_forgets_threads_that_are_gone(v2, monkeypatch):
    monkeypatch.setattr(ob, "_MAX_THREADS_INFO", 8)
    monkeypatch.setattr(ob, "threads_info", {})
    for i in range(20):
        run_on_thread(lambda: ob.trace_set_thread_info(f"worker-{i}"))
    assert len(ob.threads_info) <= 8
    ob.trace_set_thread_info("main")
    assert ob.threads_info[threading.get_native_id()].thread_label == "main"


def test_a_request_its_gateway_did_not_sample_is_not_exported(v2):
    unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    ctx = ob.TraceReqContext(RID, external_trace_header={"traceparent": unsampled})
    ctx.trace_req_start()
    ctx.trace_slice_start("tokenize", 1)
    ctx.trace_slice_end("tokenize", 1)
    # The decision travels on: the carrier's traceparent says "not sampled".
    assert ctx.__getstate__()["root_span_context"]["traceparent"].endswith("-00")
    ctx.trace_req_finish()
    t = v2.finish()
    assert t.spans == []
    assert v2.final_stats["requests_sampled_out"] == 1


def test_a_ratio_sampler_from_the_environment_keeps_a_share_by_request_id(traced, monkeypatch):
    slicetrace.shutdown()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    monkeypatch.setattr(ob, "opentelemetry_initialized", False)
    ob.process_tracing_init(None, "v2-test")
    for i in range(400):
        ctx = ob.TraceReqContext(f"req-{i}")
        ctx.trace_req_start()
        ctx.trace_slice_start("tokenize", 1)
        ctx.trace_slice_end("tokenize", 1)
        ctx.trace_req_finish()
    t = traced.finish()
    kept = len([s for s in t.spans if s["name"] == "tokenize"])
    assert 50 <= kept <= 150, kept
    assert traced.final_stats["requests_sampled_out"] == 400 - kept
