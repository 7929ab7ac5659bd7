"""Wrong argument types, unknown requests, and calls outside a session: each a defined outcome,
never a crash."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import in_room, read_spans, thread_span_name

import slicetrace
from slicetrace.sglang import tracing as t

RID = "0badf00d-0000-0000-0000-000000000000"

WRONG = [
    ("trace_slice_start", (5, RID), "name"),
    ("trace_slice_start", ("s", 1.5), "rid"),
    ("trace_slice_start", ("s", RID, "now"), "ts"),
    ("trace_slice_start", ("s", RID, None, "yes"), "anonymous"),
    ("trace_slice_end", (None, RID), "name"),
    ("trace_slice_end", ("s", [RID]), "rid"),
    ("trace_slice_end", ("s", RID, None, ["a"]), "attrs"),
    ("trace_slice_end", ("s", RID, None, None, 1), "auto_next_anon"),
    ("trace_slice_end", ("s", RID, None, None, False, "x"), "thread_finish_flag"),
    ("trace_event", (b"e", RID), "name"),
    ("trace_event", ("e", RID, None, {1: 2}), "attrs"),
    ("trace_slice_add_attr", (RID, "k=v"), "attrs"),
    ("trace_req_start", (None,), "rid"),
    ("trace_req_start", (RID, "room"), "bootstrap_room"),
    ("trace_req_start", (RID, None, None, 7), "role"),
    ("trace_req_start", (RID, None, None, "null", "traceparent"), "external_trace_header"),
    ("trace_req_finish", (RID, "later"), "ts"),
    ("trace_req_finish", (RID, None, 3), "attrs"),
    ("trace_set_thread_info", (1,), "thread_label"),
    ("trace_set_thread_info", ("t", "0"), "tp_rank"),
    ("trace_slice_batch", (1, []), "name"),
    ("trace_slice_batch", ("d", 3), "reqs"),
    ("trace_get_proc_propagate_context", (object(),), "rid"),
    ("trace_set_proc_propagate_context", (RID, "ctx"), "trace_context"),
    ("process_tracing_init", (5, "svc"), "otlp_endpoint"),
    ("process_tracing_init", (None, 5), "server_name"),
]


@pytest.mark.parametrize("func,args,arg", WRONG, ids=[f"{f}-{a}" for f, _, a in WRONG])
def test_wrong_types_raise_type_error_naming_the_argument(traced, func, args, arg):
    with pytest.raises(TypeError, match=f"'{arg}'"):
        getattr(t, func)(*args)


def test_wrong_types_raise_with_tracing_off_too():
    assert not slicetrace.is_tracing_enabled()
    with pytest.raises(TypeError, match="'name'"):
        t.trace_slice_start(5, RID)
    with pytest.raises(TypeError, match="'rid'"):
        t.trace_slice_end("s", 2.0)


def test_negative_and_huge_values_raise_overflow_error(traced):
    with pytest.raises(OverflowError):
        t.trace_slice_start("s", RID, -1)
    with pytest.raises(OverflowError):
        t.trace_req_start(RID, -5)
    with pytest.raises(OverflowError):
        t.trace_set_thread_info("t", 1 << 40)


def test_calls_before_init_and_after_shutdown_record_nothing(traced, tmp_path):
    traced.finish()
    assert not slicetrace.is_tracing_enabled()

    def everything(rid):
        t.trace_set_thread_info("Idle")
        t.trace_req_start(rid)
        t.trace_slice_start("s", rid)
        t.trace_event("e", rid, attrs={"a": 1})
        t.trace_slice_add_attr(rid, {"b": 2})
        t.trace_slice_end("s", rid, attrs={"c": 3}, auto_next_anon=True)
        t.trace_slice_batch("d", [])
        t.trace_event_batch("eb", [])
        assert t.trace_get_proc_propagate_context(rid) is None
        assert t.trace_get_remote_propagate_context([1]) == ""
        t.trace_set_proc_propagate_context(rid, {"root_span": {}, "prev_span": "None"})
        t.trace_set_remote_propagate_context("garbage")
        t.trace_req_finish(rid, attrs={"d": 4})

    everything(RID)
    assert slicetrace.shutdown()["records_written"] == 0
    assert slicetrace.stats() == slicetrace.shutdown()
    assert all(v == 0 for v in slicetrace.stats().values())
    assert slicetrace.flush(0.1) is False


def test_unknown_rid_calls_are_counted_not_raised(traced):
    t.trace_slice_start("s", "never-started")
    t.trace_slice_end("s", "never-started")
    t.trace_event("e", "never-started")
    t.trace_slice_add_attr("never-started", {"a": 1})
    t.trace_req_finish("never-started")
    assert t.trace_get_proc_propagate_context("never-started") is None
    tr = traced.finish()
    assert tr.spans == []
    assert traced.final_stats["unknown_rid_records"] == 5
    assert traced.final_stats["propagate_unknown"] == 1


def test_end_without_start_and_name_mismatch_are_counted(traced):
    t.trace_set_thread_info("T")
    t.trace_req_start(RID)
    t.trace_slice_end("nothing open", RID)
    t.trace_slice_start("a", RID)
    t.trace_slice_end("b", RID)
    t.trace_req_finish(RID)
    tr = traced.finish()
    assert traced.final_stats["end_without_start"] == 1
    assert traced.final_stats["name_mismatches"] == 1
    assert tr.named("a")["status"] == "error"
    assert tr.tree() == in_room((" Req 0badf00d", [(thread_span_name("T"), [("a", [])])]))


def test_int_rids_are_their_decimal_text(traced):
    t.trace_req_start(12345)
    t.trace_slice_start("s", "12345")
    t.trace_slice_end("s", 12345)
    t.trace_req_finish("12345")
    tr = traced.finish()
    assert tr.named(" Req 12345")["attributes"]["rid"] == "12345"
    assert [c["name"] for c in tr.children(tr.children(tr.named(" Req 12345"))[0])] == ["s"]


def test_str_subclass_names_such_as_sglang_stages(traced):
    import enum

    class RequestStage(str, enum.Enum):
        DECODE_LOOP = "decode_loop"

    t.trace_req_start(RID)
    t.trace_slice_start("", RID, anonymous=True)
    t.trace_slice_end(RequestStage.DECODE_LOOP, RID)
    t.trace_req_finish(RID)
    assert traced.finish().named("decode_loop")


def test_attribute_values(traced):
    t.trace_req_start(RID)
    t.trace_slice_start("s", RID)
    t.trace_slice_add_attr(
        RID,
        {"i": -3, "f": 0.25, "b": False, "s": "text", "none": None, "big": 1 << 70, "l": [1], "mixed": [1, "a"]},
    )
    t.trace_slice_end("s", RID)
    t.trace_req_finish(RID, ts=0)
    attrs = traced.finish().named("s")["attributes"]
    assert {k: attrs[k] for k in ("i", "f", "b", "s", "big", "l", "mixed")} == {
        "i": -3,
        "f": 0.25,
        "b": False,
        "s": "text",
        "big": str(1 << 70),
        "l": [1],
        "mixed": "[1, 'a']",
    }
    assert "none" not in attrs


def test_timestamps_are_unix_nanoseconds_and_zero_means_now(traced):
    import time

    t0 = 1_700_000_000_000_000_000
    t.trace_req_start(RID, ts=t0)
    t.trace_slice_start("given", RID, ts=t0 + 1_000)
    t.trace_slice_end("given", RID, ts=t0 + 5_000)
    before = time.time_ns()
    t.trace_slice_start("now", RID, ts=0)
    t.trace_slice_end("now", RID, ts=None)
    after = time.time_ns()
    t.trace_req_finish(RID)
    tr = traced.finish()
    g = tr.named("given")
    assert (g["start_unix_nano"], g["end_unix_nano"]) == (t0 + 1_000, t0 + 5_000)
    n = tr.named("now")
    slack = 50_000_000  # the TSC's conversion to Unix time may sit a few ms off time_ns
    assert before - slack <= n["start_unix_nano"] <= n["end_unix_nano"] <= after + slack


def test_second_init_keeps_the_running_session(traced):
    with pytest.warns(RuntimeWarning, match="already|again"):
        t.process_tracing_init(None, "other")
    assert slicetrace.is_tracing_enabled()


def test_bad_endpoint_is_an_init_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SLICETRACE_FILE", str(tmp_path / "x.jsonl"))
    with pytest.raises(slicetrace.InitError, match="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT|endpoint"):
        t.process_tracing_init("ftp://nowhere:21", "svc")
    assert not slicetrace.is_tracing_enabled()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon")
    with pytest.raises(slicetrace.InitError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        t.process_tracing_init("localhost:4317", "svc")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    monkeypatch.setenv("SGLANG_OTLP_EXPORTER_MAX_EXPORT_BATCH_SIZE", "many")
    with pytest.raises(slicetrace.InitError, match="SGLANG_OTLP_EXPORTER_MAX_EXPORT_BATCH_SIZE"):
        t.process_tracing_init(None, "svc")


def test_keyword_binding_of_the_fast_calls(traced):
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        t.trace_slice_end("s", RID, colour="red")
    with pytest.raises(TypeError, match="multiple values for argument 'rid'"):
        t.trace_slice_start("s", RID, rid=RID)
    with pytest.raises(TypeError, match="missing required argument 'rid'"):
        t.trace_event("e")
    with pytest.raises(TypeError, match="missing required argument 'name'"):
        t.trace_slice_start(rid=RID)
    with pytest.raises(TypeError, match="at most 6 positional"):
        t.trace_slice_end("s", RID, None, None, False, False, 7)
    t.trace_set_thread_info("K")
    t.trace_req_start(RID)
    # Every argument by keyword, in any order.
    t.trace_slice_start(anonymous=True, rid=RID, name="", ts=None)
    t.trace_event(attrs={"k": 1}, rid=RID, name="e")
    t.trace_slice_end(thread_finish_flag=False, auto_next_anon=False, attrs={"a": 2}, ts=0, rid=RID, name="kw")
    t.trace_req_finish(RID)
    tr = traced.finish()
    kw = tr.named("kw")
    assert kw["attributes"]["a"] == 2
    assert [(e["name"], e["attributes"]) for e in kw["events"]] == [("e", {"k": 1})]


def test_signatures_are_introspectable():
    import inspect

    assert str(inspect.signature(t.trace_slice_end)) == (
        "(name, rid, ts=None, attrs=None, auto_next_anon=False, thread_finish_flag=False)"
    )
    assert str(inspect.signature(t.trace_slice_start)) == "(name, rid, ts=None, anonymous=False)"
    assert str(inspect.signature(t.trace_event)) == "(name, rid, ts=None, attrs=None)"


class _Req:
    def __init__(self, rid, done):
        self.rid, self.done = rid, done

    def finished(self):
        return self.done


def test_batch_with_int_rids_and_a_bad_rid(traced):
    t.trace_set_thread_info("B")
    for rid in (7, "8"):
        t.trace_req_start(rid)
        t.trace_slice_start("", rid, anonymous=True)
    with pytest.raises(TypeError, match="'rid'"):
        t.trace_slice_batch("step", [_Req(7, False), _Req(b"bytes", False)])
    t.trace_slice_batch("step", (r for r in [_Req(7, False), _Req("8", True)]))
    t.trace_slice_batch("step", [_Req(7, True)])
    for rid in (7, "8"):
        t.trace_req_finish(rid)
    tr = traced.finish()
    for rid, steps in (("7", 2), ("8", 1)):
        ((_, kids),) = tr.tree(tr.named(f" Req {rid}"))[1]
        assert kids == [("step", [])] * steps
    assert traced.final_stats["slices_unfinished"] == 0


def test_names_made_from_data_stay_bounded_and_are_counted(tmp_path):
    # In a process of its own: it fills the process's name table, which other tests need.
    path = tmp_path / "spans.jsonl"
    code = textwrap.dedent(
        """
        import json, os, sys
        import slicetrace
        from slicetrace.sglang import tracing as t

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        t.process_tracing_init(None, "names")
        before = slicetrace.stats()["names_interned"]
        t.trace_req_start("feed0000-names")
        t.trace_slice_start("kept-stage", "feed0000-names")
        # A name per request, as a caller that formats request data into its stage names.
        for i in range(70_000):
            t.trace_event(f"event-for-request-{i:08d}", "feed0000-names")
        full = slicetrace.stats()
        # Measured with the drainer caught up: what it holds while it catches up comes and goes.
        slicetrace.flush()
        grown = rss()
        for i in range(200_000):
            t.trace_event(f"later-event-for-request-{i:08d}", "feed0000-names")
        slicetrace.flush()
        grown = rss() - grown
        t.trace_slice_end("kept-stage", "feed0000-names")
        t.trace_slice_start("stage-after-the-bound", "feed0000-names")
        t.trace_slice_end("stage-after-the-bound", "feed0000-names")
        t.trace_req_finish("feed0000-names")
        out = {"before": before, "full": full, "final": slicetrace.shutdown(), "grown": grown}
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["SLICETRACE_FILE"] = str(path)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    limit = 65_536
    assert out["full"]["names_interned"] == limit
    # "kept-stage" and the first event names filled the table; every name after them was refused.
    refused = 1 + 70_000 - (limit - out["before"])
    assert out["full"]["names_refused"] == refused
    assert out["final"]["names_interned"] == limit
    assert out["final"]["names_refused"] == refused + 200_000 + 1
    # Kept, 200 000 more names would take about 36 MiB (190 bytes each); refused, what is left is
    # the allocator's noise, which measured up to 3.4 MiB for names already known.
    assert out["grown"] < 10 << 20, out["grown"]
    names = {s["name"] for s in read_spans(path)}
    assert {"kept-stage", "slicetrace.name_overflow"} <= names
    assert "stage-after-the-bound" not in names


def test_the_process_level_stops_and_restarts_the_rid_keyed_slices(traced):
    import threading

    assert slicetrace.level() == 3
    t.trace_req_start(RID)
    failed = []

    # On a thread of its own: a thread that skipped a start at level 0 marks its later ends of
    # that level as possibly unstarted (see docs/api.md, "Trace levels"), which would change
    # what later tests on the main thread see of mismatched ends.
    def run():
        try:
            slicetrace.set_level(0)
            assert slicetrace.level() == 0
            t.trace_slice_start("hidden", RID)
            t.trace_event("hidden event", RID)
            t.trace_slice_end("hidden", RID)
            slicetrace.set_level(3)
            t.trace_slice_start("shown", RID)
            t.trace_slice_end("shown", RID)
            with pytest.raises(ValueError, match="0 to 7"):
                slicetrace.set_level(8)
            with pytest.raises(ValueError, match="0 to 7"):
                slicetrace.set_level(-1)
            with pytest.raises(TypeError):
                slicetrace.set_level("3")
            assert slicetrace.level() == 3
        except BaseException as e:
            failed.append(e)
        finally:
            slicetrace.set_level(3)

    th = threading.Thread(target=run)
    th.start()
    th.join()
    assert not failed, failed
    t.trace_req_finish(RID)
    tr = traced.finish()
    names = {s["name"] for s in tr.spans}
    assert "shown" in names and "hidden" not in names, names
    assert traced.final_stats["end_without_start"] == 0
    assert traced.final_stats["level_ends_discarded"] == 0
