"""SGLang 0.5.23's own request time stats and tracing module, run by sglang_v2_harness through its
scenario (a tokenizer and two TP-rank schedulers, each a process of its own; three requests: one
finishing by length, one cancelled by an AbortReq, one torn down mid-decode) at every trace level,
and the span trees they export: which slices each level has, how they nest and link across the
pickled hand-off, where the schedule events land, what the two kinds of abort leave behind.

These pin SGLang's behaviour, for our drop-in module to be compared against. They need the
OpenTelemetry SDK and SGLang's files unpacked by scripts/fetch-sglang-0.5.23 (at
$SLICETRACE_SGLANG_V2_DIR, else target/sglang-0.5.23); without those they fail, saying so."""

import json

import pytest

import sglang_v2_harness as h
from sglang_v2_harness import WALL, Scenario

DONE, CANCEL, TEARDOWN = h.DEFAULT_REQUESTS
RANKS = (0, 1)
TOKENIZER = h.thread_name("Tokenizer")
# A request's top-level scheduler slices at levels 1 and 2+, in the order they happen.
SCHED_TOP_1 = ["prefill_waiting", "prefill_forward", "decode_waiting", "decode_forward"]
SCHED_TOP_2 = ["request_process"] + SCHED_TOP_1


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs a scenario once per module (each run is three processes) and hands out the Run."""
    try:
        root = h.check_sglang_dir(h.sglang_dir())
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    cache = {}

    def get(scenario: Scenario) -> h.Run:
        if scenario not in cache:
            work = tmp_path_factory.mktemp("run")
            cache[scenario] = h.run(scenario, work, sglang_dir_path=root)
        return cache[scenario]

    return get


def by_path(run: h.Run):
    return {tuple(n["path"]): n for n in run.normalized()}


def root(plan):
    return h.root_name(plan.rid)


def kids(spans, *path):
    """Names of the spans right under `path`, in start order (ties by name)."""
    found = [n for p, n in spans.items() if p[:-1] == path]
    found.sort(key=lambda n: (n["start_ms"] if n["start_ms"] != WALL else 1e18, n["name"]))
    return [n["name"] for n in found]


def ms(plan, scenario_ms):
    """A scenario time as the harness's normalized times give it: after the request's start."""
    return scenario_ms - plan.created_ms


def test_a_missing_sglang_dir_fails_naming_the_fetch_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="scripts/fetch-sglang-0.5.23"):
        h.check_sglang_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="scripts/fetch-sglang-0.5.23"):
        h.run(Scenario.at(3), tmp_path / "work", sglang_dir_path=tmp_path)


def test_level_0_exports_nothing_and_hands_off_a_disabled_context(runs):
    r = runs(Scenario.at(0))
    assert r.spans == []
    for plan in h.DEFAULT_REQUESTS:
        handoff = r.handoff[plan.rid]
        assert handoff["trace_ctx_keys"] == ["tracing_enable"]
        assert handoff["tracing_enable"] is False


def test_the_pickled_stats_carry_the_context_as_a_traceparent_carrier(runs):
    r = runs(Scenario.at(3))
    raw = {(s["trace_id"], s["name"]): s for s in r.spans}
    for plan in h.DEFAULT_REQUESTS:
        handoff = r.handoff[plan.rid]
        # ReqTimeStatsBase.__getstate__: no timestamps travel, only these.
        assert handoff["state_keys"] == [
            "diff_realtime_monotonic",
            "disagg_mode",
            "enable_metrics",
            "trace_ctx",
        ]
        assert handoff["trace_ctx_keys"] == [
            "bootstrap_room",
            "is_copy",
            "last_span_context",
            "module_name",
            "pid",
            "rid",
            "role",
            "root_span",
            "root_span_context",
            "start_time_ns",
            "thread_context",
            "trace_level",
            "tracing_enable",
        ]
        assert handoff["trace_level"] == 3
        assert handoff["is_copy"] is False
        # The default propagators inject no tracestate (empty) and no baggage (none set).
        assert handoff["carrier_keys"] == ["traceparent"]
        assert handoff["last_span_context_keys"] == ["span_id", "trace_id"]
        version, trace_id, span_id, flags = handoff["carrier"]["traceparent"].split("-")
        assert (version, flags) == ("00", "01")
        # SGLang's id generator makes 64-bit trace ids.
        assert trace_id.startswith("0" * 16) and int(trace_id, 16) > 0
        req = raw[(trace_id, root(plan))]
        assert span_id == req["span_id"]  # the carrier names the request's root span
        # Pickled while the dispatch slice was open: the open top-level slice is the one
        # the schedulers' first slice links to.
        assert handoff["last_span_id"] == raw[(trace_id, "api_server_dispatch")]["span_id"]
        # Every span of the request's tree is in that one trace, on every process.
        in_trace = [s for s in r.spans if s["trace_id"] == trace_id]
        assert len(in_trace) == len([n for n in r.normalized() if n["path"][0] == root(plan)])


def test_rank_0_relays_an_equivalent_context_and_msgpack_ipc_gives_the_same_tree(runs):
    r = runs(Scenario.at(3))
    for plan in h.DEFAULT_REQUESTS:
        sent, relayed = r.handoff[plan.rid], r.relay[plan.rid]
        # Pickled again from rank 0's unpickled copy, before its Req is built: a copy now,
        # carrying the same request span and the same span to link to.
        assert relayed == dict(sent, is_copy=True)
    msgpack = runs(Scenario.at(3, pickle_ipc=False))
    assert msgpack.relay is None
    assert msgpack.tree() == r.tree()


def test_level_1_has_the_leaf_stages_only(runs):
    r = runs(Scenario.at(1))
    spans = by_path(r)
    assert not h.find(r.normalized(), "api_server_dispatch")
    assert not h.find(r.normalized(), "request_process")
    assert not h.find(r.normalized(), "decode_loop")
    assert not h.find(r.normalized(), "run_batch_cpu")
    assert all(not n["events"] for n in spans.values()), "schedule events are level 3"
    for plan in h.DEFAULT_REQUESTS:
        req = (root(plan),)
        assert kids(spans, *req) == [TOKENIZER] + [h.scheduler_name(k) for k in RANKS]
        assert kids(spans, *req, TOKENIZER) == ["tokenize"]
        # The dispatch slice (level 2) is skipped with its thread_finish_flag, so the
        # tokenizer's thread span stays open until trace_req_finish closes it by the clock.
        assert spans[req + (TOKENIZER,)]["end_ms"] == WALL
        for rank in RANKS:
            thread = req + (h.scheduler_name(rank),)
            assert kids(spans, *thread) == SCHED_TOP_1
            # Across the pickled hand-off to the tokenizer's last top-level slice.
            assert spans[thread + ("prefill_waiting",)]["links"] == [
                [root(plan), TOKENIZER, "tokenize"]
            ]
            assert kids(spans, *thread, "decode_forward") == []
    # At level 1 nothing is open at the pickling: the link is the last ended top-level slice.
    for plan in h.DEFAULT_REQUESTS:
        tokenize = [
            s
            for s in r.spans
            if s["name"] == "tokenize"
            and s["trace_id"] in r.handoff[plan.rid]["carrier"]["traceparent"]
        ]
        assert [s["span_id"] for s in tokenize] == [r.handoff[plan.rid]["last_span_id"]]


def test_level_2_adds_the_dispatch_and_request_process_stages(runs):
    r = runs(Scenario.at(2))
    spans = by_path(r)
    assert not h.find(r.normalized(), "decode_loop")
    assert all(not n["events"] for n in spans.values())
    for plan in h.DEFAULT_REQUESTS:
        req = (root(plan),)
        tok = req + (TOKENIZER,)
        assert kids(spans, *tok) == ["tokenize", "api_server_dispatch"]
        assert spans[tok + ("api_server_dispatch",)]["links"] == [
            [root(plan), TOKENIZER, "tokenize"]
        ]
        # Now the dispatch's end closes the tokenizer's thread span, at its own time.
        assert (spans[tok]["start_ms"], spans[tok]["end_ms"]) == (0.0, 4.0)
        for rank in RANKS:
            thread = req + (h.scheduler_name(rank),)
            assert kids(spans, *thread) == SCHED_TOP_2
            assert spans[thread + ("request_process",)]["links"] == [
                [root(plan), TOKENIZER, "api_server_dispatch"]
            ]
            rp = spans[thread + ("request_process",)]
            assert (rp["start_ms"], rp["end_ms"]) == (ms(plan, h.RECV_MS), ms(plan, h.WAIT_MS))


def test_level_3_has_one_decode_loop_per_step_per_rank_with_its_schedule_event(runs):
    r = runs(Scenario.at(3))
    spans = by_path(r)
    assert not h.find(r.normalized(), "run_batch_cpu")
    loops = {DONE.rid: 3, CANCEL.rid: 2, TEARDOWN.rid: 1}
    batch_sizes = [3, 3, 1]  # the teardown and the cancel leave the batch after step 1
    for plan in h.DEFAULT_REQUESTS:
        for rank in RANKS:
            thread = (root(plan), h.scheduler_name(rank))
            assert kids(spans, *thread) == SCHED_TOP_2
            # The prefill's schedule event comes after its forward entry (SGLang stamps the
            # forward entry while building the batch), so prefill_forward holds it.
            prefill = spans[thread + ("prefill_forward",)]
            assert prefill["events"] == [
                {
                    "name": "schedule",
                    "attributes": {"batch_size": 3, "bid": "00000001", "forward_mode": "prefill"},
                    "ms": ms(plan, h.PREFILL_SCHEDULE_MS),
                }
            ]
            forward = thread + ("decode_forward",)
            n = loops[plan.rid]
            names = [f"decode_loop[{i}]" if n > 1 else "decode_loop" for i in range(n)]
            assert kids(spans, *forward) == ["decode_loop"] * n
            for step, name in enumerate(names):
                loop = spans[forward + (name,)]
                at = h.DECODE_MS + step * h.STEP_MS
                # The first loop starts at the first decode schedule, the others at the previous
                # result; each ends at its own result.
                start = at if step == 0 else at - h.STEP_MS + h.STEP_RESULT_MS
                assert (loop["start_ms"], loop["end_ms"]) == (
                    ms(plan, start),
                    ms(plan, at + h.STEP_RESULT_MS),
                )
                assert loop["attributes"] == {"decode_ct": step}
                assert loop["links"] == []  # nested slices link nothing
                assert loop["events"] == [
                    {
                        "name": "schedule",
                        "attributes": {
                            "batch_size": batch_sizes[step],
                            "bid": f"{step + 2:08x}",
                            "forward_mode": "decode",
                        },
                        "ms": ms(plan, at),
                    }
                ]
            # decode_forward is never ended by name: abort() closes it by the clock.
            assert spans[forward]["start_ms"] == ms(plan, h.DECODE_MS)
            assert spans[forward]["end_ms"] == WALL


def test_level_4_adds_run_batch_cpu_under_each_forward(runs):
    r3, r4 = runs(Scenario.at(3)), runs(Scenario.at(4))
    spans = by_path(r4)
    steps = {DONE.rid: 3, CANCEL.rid: 2, TEARDOWN.rid: 2}  # launched before the teardown
    for plan in h.DEFAULT_REQUESTS:
        for rank in RANKS:
            thread = (root(plan), h.scheduler_name(rank))
            cpu = spans[thread + ("prefill_forward", "run_batch_cpu")]
            assert (cpu["start_ms"], cpu["end_ms"]) == tuple(ms(plan, t) for t in h.PREFILL_CPU_MS)
            assert cpu["attributes"] == {"pp_mb_id": 0}
            launched = [
                n
                for p, n in spans.items()
                if p[:-1] == thread + ("decode_forward",) and n["name"] == "run_batch_cpu"
            ]
            assert sorted(n["start_ms"] for n in launched) == [
                ms(plan, h.DECODE_MS + k * h.STEP_MS + h.STEP_CPU_MS[0])
                for k in range(steps[plan.rid])
            ]
            assert all(n["events"] == [] and n["links"] == [] for n in launched)

    def without_cpu(tree):
        return [
            dict(n, children=without_cpu(n["children"]))
            for n in tree
            if n["name"] != "run_batch_cpu"
        ]

    assert without_cpu(r4.tree()) == r3.tree()


def test_top_level_slices_chain_by_links_within_and_across_processes(runs):
    r = runs(Scenario.at(3))
    spans = by_path(r)
    for plan in h.DEFAULT_REQUESTS:
        req = root(plan)
        assert spans[(req, TOKENIZER, "tokenize")]["links"] == []
        previous = [req, TOKENIZER, "api_server_dispatch"]
        for rank in RANKS:
            before = previous
            for name in SCHED_TOP_2:
                path = [req, h.scheduler_name(rank), name]
                assert spans[tuple(path)]["links"] == [before], path
                before = path
        for n in spans.values():
            if n["path"][0] == req and len(n["path"]) == 2:
                assert n["links"] == []  # thread spans link nothing


def test_names_attributes_and_scope(runs):
    r = runs(Scenario.at(3))
    spans = by_path(r)
    raw_names = {s["name"] for s in r.spans}
    # "Tokenizer(host:…": no space without ranks; each rank part has a space on both sides.
    assert any(n.startswith("Tokenizer(host:") for n in raw_names)
    assert any(n.startswith("Scheduler [TP 1]  [PP 0] (host:") for n in raw_names)
    assert all(s["kind"] == "internal" and s["scope"] == "sglang server" for s in r.spans)
    assert {s["service"] for s in r.spans} == {h.SERVICE}
    threads = [s for s in r.spans if "(host:" in s["name"]]
    assert threads and all({"host_id", "pid"} <= set(s["attributes"]) for s in threads)
    for plan in h.DEFAULT_REQUESTS:
        req = spans[(root(plan),)]
        assert req["name"] == " Req " + plan.rid[:8]
        assert req["parent"] == [] and req["links"] == [] and req["events"] == []
        assert (req["start_ms"], req["end_ms"]) == (0.0, ms(plan, plan.finished_ms))
        attrs = req["attributes"]
        assert (attrs["rid"], attrs["module"]) == (plan.rid, "sglang::request")
        assert attrs["gen_ai.response.finish_reasons"] == json.dumps([plan.finish_reason])
        # set_finished_time adds the latencies it derives (seconds).
        assert attrs["gen_ai.latency.e2e"] == round(ms(plan, plan.finished_ms) / 1e3, 6)
        assert attrs["gen_ai.latency.time_to_first_token"] == round(
            ms(plan, h.FIRST_TOKEN_MS) / 1e3, 6
        )
        assert spans[(root(plan), TOKENIZER)]["attributes"] == {"thread_label": "Tokenizer"}
        for rank in RANKS:
            thread = spans[(root(plan), h.scheduler_name(rank))]
            # Built on receipt by rebuild_thread_context(), which takes no time: the clock's.
            assert thread["start_ms"] == WALL and thread["end_ms"] == WALL
            expected = {"pp_rank": 0, "thread_label": "Scheduler", "tp_rank": rank}
            if plan is TEARDOWN:
                expected["reason"] = h.TEARDOWN_REASON
            assert thread["attributes"] == expected


def test_a_teardown_mid_decode_marks_the_scheduler_thread_spans_as_errors(runs):
    r = runs(Scenario.at(3))
    spans = by_path(r)
    req = root(TEARDOWN)
    step = TEARDOWN.teardown_at
    for rank in RANKS:
        thread = spans[(req, h.scheduler_name(rank))]
        assert thread["status"] == {"code": "ERROR", "description": None}
        assert thread["attributes"] == {
            "pp_rank": 0,
            "reason": h.TEARDOWN_REASON,
            "thread_label": "Scheduler",
            "tp_rank": rank,
        }
        # The step in flight had been scheduled: its cached event had no slice to close into,
        # so abort() hands it to the thread span.
        assert thread["events"] == [
            {
                "name": "schedule",
                "attributes": {"batch_size": 3, "bid": f"{step + 2:08x}", "forward_mode": "decode"},
                "ms": ms(TEARDOWN, h.DECODE_MS + step * h.STEP_MS),
            }
        ]
        assert spans[(req, h.scheduler_name(rank), "decode_forward")]["status"]["code"] == "UNSET"
    # Only the scheduler knows: the tokenizer side finishes as usual, the reason in its attrs.
    assert spans[(req,)]["status"]["code"] == "UNSET"
    assert spans[(req, TOKENIZER)]["status"]["code"] == "UNSET"
    others = [n for n in spans.values() if n["path"][0] != req]
    assert all(n["status"]["code"] == "UNSET" for n in others)
    assert not any("reason" in n["attributes"] for n in others)


def test_an_abort_req_mid_decode_ends_the_request_without_an_error(runs):
    # SGLang's abort of a running request only sets to_finish; the next result finishes the
    # request through set_completion_time, whose abort() passes no abort info.
    r = runs(Scenario.at(3))
    spans = by_path(r)
    req = root(CANCEL)
    for rank in RANKS:
        thread = (req, h.scheduler_name(rank))
        assert spans[thread]["status"] == {"code": "UNSET", "description": None}
        assert "reason" not in spans[thread]["attributes"] and spans[thread]["events"] == []
        assert kids(spans, *thread, "decode_forward") == ["decode_loop", "decode_loop"]
    assert spans[(req,)]["attributes"]["gen_ai.response.finish_reasons"] == '["abort"]'


def test_the_level_is_the_tokenizers_and_travels_with_the_request(runs):
    level_1 = runs(Scenario.at(1)).tree()
    # set_global_trace_level (the /set_trace_level endpoint) wins over SGLANG_TRACE_LEVEL.
    assert runs(Scenario(env_level=4, api_level=1)).tree() == level_1
    # The schedulers' own level plays no part: the pickled context carries the tokenizer's.
    assert runs(Scenario(env_level=1, scheduler_env_level=4)).tree() == level_1
    # Unset, SGLANG_TRACE_LEVEL defaults to 3.
    assert runs(Scenario(env_level=None)).tree() == runs(Scenario.at(3)).tree()


def test_runs_are_reproducible_once_normalized(runs, tmp_path):
    again = h.run(Scenario.at(4), tmp_path)
    assert again.tree() == runs(Scenario.at(4)).tree()
    assert h.format_tree(again.tree()) == h.format_tree(runs(Scenario.at(4)).tree())


def test_normalize_takes_sdk_spans_their_json_and_our_json_lines_alike():
    from opentelemetry import trace as ot
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("sglang server")
    t0 = 1_700_000_000_000_000_000
    req = tracer.start_span(" Req abcdefgh", start_time=t0, attributes={"rid": "abcdefgh"})
    under_req = ot.set_span_in_context(req)
    thread = tracer.start_span("Worker [TP 3] (host:0123abcd | pid:4242)", under_req, start_time=t0)
    thread.set_attributes({"host_id": "0123abcd9999", "pid": 4242, "tp_rank": 3})
    under_thread = ot.set_span_in_context(thread)
    first = tracer.start_span("step", under_thread, start_time=t0 + 1_000_000)
    first.end(end_time=t0 + 2_000_000)
    second = tracer.start_span("step", under_thread, start_time=t0 + 2_000_000)
    second.add_link(first.get_span_context())
    second.add_event("schedule", {"bid": "00000001", "lat": 0.1 + 0.2}, timestamp=t0 + 2_500_000)
    second.end(end_time=t0 + 3_000_000)
    thread.set_status(Status(StatusCode.ERROR))
    thread.end(end_time=t0 + 3_000_000)
    req.end(end_time=t0 + 4_000_000)
    sdk = exporter.get_finished_spans()

    expected = [
        {
            "name": " Req abcdefgh",
            "path": [" Req abcdefgh"],
            "parent": [],
            "links": [],
            "events": [],
            "attributes": {"rid": "abcdefgh"},
            "status": {"code": "UNSET", "description": None},
            "kind": "internal",
            "scope": "sglang server",
            "service": "svc",
            "start_ms": 0.0,
            "end_ms": 4.0,
        },
        {
            "name": "Worker [TP 3] " + h.THREAD_SUFFIX,
            "path": [" Req abcdefgh", "Worker [TP 3] " + h.THREAD_SUFFIX],
            "parent": [" Req abcdefgh"],
            "links": [],
            "events": [],
            "attributes": {"tp_rank": 3},
            "status": {"code": "ERROR", "description": None},
            "kind": "internal",
            "scope": "sglang server",
            "service": "svc",
            "start_ms": 0.0,
            "end_ms": 3.0,
        },
    ]
    thread_path = expected[1]["path"]
    for i, (start, end) in enumerate([(1.0, 2.0), (2.0, 3.0)]):
        expected.append(
            {
                "name": "step",
                "path": thread_path + [f"step[{i}]"],
                "parent": thread_path,
                "links": [thread_path + ["step[0]"]] if i else [],
                "events": (
                    [{"name": "schedule", "attributes": {"bid": "00000001", "lat": 0.3}, "ms": 2.5}]
                    if i
                    else []
                ),
                "attributes": {},
                "status": {"code": "UNSET", "description": None},
                "kind": "internal",
                "scope": "sglang server",
                "service": "svc",
                "start_ms": start,
                "end_ms": end,
            }
        )
    assert h.normalize(sdk) == expected
    records = [h.span_record(s) for s in sdk]
    assert h.normalize(records) == expected
    # Through JSON text, as a dump file holds them: the same.
    assert h.normalize([json.loads(json.dumps(x)) for x in records]) == expected
    # ReadableSpan.to_json() has no instrumentation scope, and times in microseconds.
    from_json = h.normalize([json.loads(s.to_json()) for s in sdk])
    assert from_json == [dict(n, scope="") for n in expected]
    # One line of our exporter's file, as src/export/jsonl.rs writes it.
    line = (
        '{"trace_id":"000000000000000000000000000000aa","span_id":"00000000000000bb",'
        '"parent_span_id":"0000000000000000","name":" Req abcdefgh","start_unix_nano":%d,'
        '"end_unix_nano":%d,"status":"unset","attributes":{"rid":"abcdefgh"},"events":[],'
        '"links":[],"kind":"internal","scope":"sglang server","service":"svc"}'
    ) % (t0, t0 + 4_000_000)
    assert h.normalize([json.loads(line)]) == expected[:1]
    tree = h.tree_of(expected)
    assert [n["name"] for n in tree] == [" Req abcdefgh"]
    steps = tree[0]["children"][0]["children"]
    assert [(n["name"], n["start_ms"]) for n in steps] == [("step", 1.0), ("step", 2.0)]
