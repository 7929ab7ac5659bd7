"""The propagated context: SGLang's dict (pickled in-node), the base64 cross-node header, and
requests that cross processes started with `spawn`."""

import base64
import json
import multiprocessing
import pickle
import threading

import pytest
import workers
from conftest import Trace, read_spans, thread_span_name

import slicetrace
from slicetrace.sglang.tracing import (
    trace_get_proc_propagate_context,
    trace_get_remote_propagate_context,
    trace_req_finish,
    trace_req_start,
    trace_set_proc_propagate_context,
    trace_set_remote_propagate_context,
    trace_set_thread_info,
    trace_slice_end,
    trace_slice_start,
)

RID = "c0ffee00-aaaa-bbbb-cccc-000000000001"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def test_dict_has_sglang_shape_and_survives_pickle(traced):
    trace_set_thread_info("Tokenizer")
    trace_req_start(RID)
    trace_slice_start("tokenize", RID)
    ctx = trace_get_proc_propagate_context(RID)
    assert set(ctx) >= {"root_span", "prev_span"}
    version, trace_id, parent, flags = ctx["root_span"]["traceparent"].split("-")
    assert (version, flags, len(trace_id), len(parent)) == ("00", "01", 32, 16)
    assert ctx["prev_span"]["trace_id"] == int(trace_id, 16)
    assert pickle.loads(pickle.dumps(ctx)) == ctx
    trace_slice_end("tokenize", RID)
    trace_req_finish(RID)
    t = traced.finish()
    assert t.named(" Req c0ffee00")["span_id"] == parent
    assert t.named("tokenize")["span_id"] == f"{ctx['prev_span']['span_id']:016x}"
    assert t.named("tokenize")["trace_id"] == trace_id


def test_no_slice_yet_gives_prev_span_none(traced):
    trace_req_start(RID)
    assert trace_get_proc_propagate_context(RID)["prev_span"] == "None"
    trace_req_finish(RID)


def test_unknown_rid_gives_none(traced):
    assert trace_get_proc_propagate_context("never-started") is None
    assert slicetrace.stats()["propagate_unknown"] == 1


def test_sglang_dict_joins_its_trace_and_links_its_slice(traced):
    sender_slice = 0x1122334455667788
    ctx = {
        "root_span": {"traceparent": f"00-{TRACE}-{PARENT}-01"},
        "prev_span": {"span_id": sender_slice, "trace_id": int(TRACE, 16)},
    }
    trace_set_thread_info("Scheduler", 0)
    trace_set_proc_propagate_context(RID, pickle.loads(pickle.dumps(ctx)))
    trace_slice_start("prefill", RID)
    trace_slice_end("prefill", RID, thread_finish_flag=True)
    t = traced.finish()
    assert {s["trace_id"] for s in t.spans} == {TRACE}
    prefill = t.named("prefill")
    assert [l["span_id"] for l in prefill["links"]] == [f"{sender_slice:016x}"]
    # The chain up from the slice ends at the sender's request span.
    span = prefill
    while span["parent_span_id"] in t.by_id:
        span = t.by_id[span["parent_span_id"]]
    assert span["parent_span_id"] == PARENT
    assert traced.final_stats["contexts_refused"] == 0


def test_sglang_dict_without_prev_span(traced):
    ctx = {"root_span": {"traceparent": f"00-{TRACE}-{PARENT}-01"}, "prev_span": "None"}
    trace_set_proc_propagate_context(RID, ctx)
    trace_slice_start("prefill", RID)
    trace_slice_end("prefill", RID, thread_finish_flag=True)
    t = traced.finish()
    assert t.named("prefill")["links"] == []
    assert t.named("prefill")["trace_id"] == TRACE


@pytest.mark.parametrize(
    "bad",
    [
        {"root_span": {"traceparent": "00-zz-00f067aa0ba902b7-01"}, "prev_span": "None"},
        {"root_span": {}, "prev_span": "None"},
        {"root_span": {"traceparent": f"00-{TRACE}-{PARENT}-01"}},
        {"root_span": {"traceparent": f"00-{TRACE}-{PARENT}-01"}, "prev_span": {"span_id": "x"}},
        {"root_span": {"traceparent": f"00-{TRACE}-{PARENT}-01"}, "prev_span": "None", "slicetrace": "00"},
    ],
)
def test_a_dict_that_is_no_context_is_refused_and_counted(traced, bad):
    trace_set_proc_propagate_context(RID, bad)
    assert slicetrace.stats()["contexts_refused"] == 1
    t = traced.finish()
    assert t.spans == []


def test_empty_and_none_contexts_are_ignored(traced):
    trace_set_proc_propagate_context(RID, None)
    trace_set_proc_propagate_context(RID, {})
    assert slicetrace.stats()["contexts_refused"] == 0


def test_remote_header_is_base64_json_by_room(traced):
    room = 987654321
    trace_req_start(str(room), bootstrap_room=room)
    trace_slice_start("route", str(room))
    header = trace_get_remote_propagate_context([room, 5])
    decoded = json.loads(base64.b64decode(header))
    assert list(decoded) == [str(room)]
    assert decoded[str(room)]["prev_span"]["span_id"] > 0
    assert decoded[str(room)]["root_span"]["traceparent"].startswith("00-")
    trace_slice_end("route", str(room))
    trace_req_finish(str(room))


def test_remote_header_errors(traced):
    trace_set_remote_propagate_context(None)
    trace_set_remote_propagate_context("")
    trace_set_remote_propagate_context("None")
    with pytest.raises(ValueError, match="base64"):
        trace_set_remote_propagate_context("%%%not base64%%%")
    with pytest.raises(ValueError, match="JSON object"):
        trace_set_remote_propagate_context(base64.b64encode(b"[1, 2]").decode())
    with pytest.raises(TypeError, match="base64_str"):
        trace_set_remote_propagate_context(42)


def _spawn(target, *args):
    mp = multiprocessing.get_context("spawn")
    parent_end, child_end = mp.Pipe()
    p = mp.Process(target=target, args=(child_end, *args))
    p.start()
    return p, parent_end


def test_tokenizer_and_two_schedulers_in_spawned_processes(traced, tmp_path):
    rids = ["aaaa1111-first", "bbbb2222-second"]
    trace_set_thread_info("Tokenizer")
    procs = [_spawn(workers.scheduler, str(tmp_path / f"tp{tp}.jsonl"), tp) for tp in (0, 1)]
    batch = []
    for rid, steps in zip(rids, (2, 3)):
        trace_req_start(rid)
        trace_slice_start("", rid, anonymous=True)
        trace_slice_end("tokenize", rid, auto_next_anon=True)
        ctx = trace_get_proc_propagate_context(rid)
        batch.append((rid, ctx, steps))
    for _, conn in procs:
        conn.send(batch)  # pickled, as over ZMQ
    tids = []
    for p, conn in procs:
        tid, final = conn.recv()
        tids.append(tid)
        p.join(30)
        assert p.exitcode == 0
        assert final["records_dropped_ring_full"] == 0 and final["unknown_rid_records"] == 0
    for rid in rids:
        trace_slice_end("dispatch", rid)
        trace_req_finish(rid)
    tok = traced.finish()
    tp = [Trace(read_spans(tmp_path / f"tp{i}.jsonl")) for i in (0, 1)]

    for rid, steps in zip(rids, (2, 3)):
        short = rid[:8]
        req = tok.named(f" Req {short}")
        assert tok.tree(req) == (
            f" Req {short}",
            [(thread_span_name("Tokenizer"), [("tokenize", []), ("dispatch", [])])],
        )
        for i, t in enumerate(tp):
            spans = [s for s in t.spans if s["attributes"].get("rid") == rid or s["trace_id"] == req["trace_id"]]
            assert {s["trace_id"] for s in spans} == {req["trace_id"]}
            sub = Trace(spans)
            # The joined process opens no request span: its thread span hangs under the sender's.
            [root] = [s for s in spans if s["parent_span_id"] not in sub.by_id]
            assert root["parent_span_id"] == req["span_id"]
            decode = [("decode_loop", [])] * steps
            assert sub.tree() == [
                (thread_span_name("Scheduler", i, tids[i]), [("prefill", [("forward", [])]), *decode])
            ]
            prefill = sub.named("prefill")
            linked = prefill["links"][0]["span_id"]
            assert tok.by_id[linked]["name"] == "dispatch"
            assert [e["name"] for e in prefill["events"]] == ["prefill_done"]
            assert prefill["events"][0]["attributes"] == {"tp_rank": i}
            thread = sub.named(thread_span_name("Scheduler", i, tids[i]))
            last = max(sub.children(thread), key=lambda s: s["end_unix_nano"])
            assert thread["end_unix_nano"] == last["end_unix_nano"]


def test_cross_node_header_joins_a_spawned_decode_node(traced, tmp_path):
    room = 0x5EED
    trace_set_thread_info("Router")
    trace_req_start(str(room), bootstrap_room=room)
    trace_slice_start("route", str(room))
    header = trace_get_remote_propagate_context([room])
    p, conn = _spawn(workers.decode_node, str(tmp_path / "decode.jsonl"), header, "dddd0000-decode", room)
    tid, final = conn.recv()
    p.join(30)
    assert p.exitcode == 0
    trace_slice_end("route", str(room))
    trace_req_finish(str(room))
    router = traced.finish()
    dec = Trace(read_spans(tmp_path / "decode.jsonl"))
    req = router.named(f" Req {room}")
    router_room = router.named("Bootstrap Room 0x5eed")
    assert router_room["attributes"]["bootstrap_room"] == "0x5eed"
    assert req["parent_span_id"] == router_room["span_id"]
    assert {s["trace_id"] for s in dec.spans} == {req["trace_id"]}
    # The decode node's request span sits beside the router's, under the router's room span;
    # the decode node opens no room span of its own.
    dreq = dec.named(" Req dddd0000")
    assert dreq["parent_span_id"] == router_room["span_id"]
    assert "bootstrap_room" not in dreq["attributes"]
    assert dec.tree() == [(" Req dddd0000", [(thread_span_name("Tokenizer", None, tid), [("decode", [])])])]
    assert [router.by_id[l["span_id"]]["name"] for l in dec.named("decode")["links"]] == ["route"]
