"""SGLang 0.5.23's own `req_time_stats.py` driven through whole requests (a tokenizer, a pickled
hand-off to two TP-rank schedulers, prefill, decode steps, finish, a cancelled request and one
torn down mid-decode; each process its own), once with SGLang's tracing module and once with
`slicetrace.sglang.observability` in its place, at every trace level: the span trees are equal in
names, parents, links, events, attributes and status. Allowed to differ (docs/python.md): the
trace and span ids (ours are 128-bit trace ids), the `thread.id`, `thread.name` and `rid`
attributes ours adds, and times (ours start a scheduler's thread span at its first record).

Then mixed deployments, one side on each module, through the carrier dict and under a gateway's
W3C `traceparent`: one trace, the same tree."""

import pytest

import sglang_v2_harness as h
from sglang_v2_harness import Scenario

#: Attributes only our spans carry.
OURS_ONLY = {"thread.id", "thread.name", "rid"}
GATEWAY_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GATEWAY = f"00-{GATEWAY_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    try:
        root = h.check_sglang_dir(h.sglang_dir())
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)
    cache = {}

    def get(scenario, impl, scheduler_impl=None):
        key = (scenario, impl, scheduler_impl)
        if key not in cache:
            work = tmp_path_factory.mktemp(f"{impl}-{scheduler_impl or impl}")
            cache[key] = h.run(scenario, work, impl=impl, sglang_dir_path=root, scheduler_impl=scheduler_impl)
        return cache[key]

    return get


def comparable(r):
    """The run's spans as sorted, printable lines: everything the trees must share."""
    lines = []
    for n in r.normalized(times=False):
        attrs = {k: v for k, v in n["attributes"].items() if k not in OURS_ONLY}
        events = [(e["name"], sorted(e["attributes"].items())) for e in n["events"]]
        lines.append(
            " / ".join(n["path"])
            + f" | links={[' / '.join(l) for l in n['links']]}"
            + f" | events={events}"
            + f" | attrs={sorted(attrs.items())}"
            + f" | status={n['status']['code']}"
            + f" | {n['kind']} {n['scope']}"
        )
    return sorted(lines)


def trace_ids(r):
    return {s["trace_id"] for s in r.spans}


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_our_module_in_sglangs_place_gives_sglangs_tree(run, level):
    theirs = run(Scenario.at(level), "sglang")
    ours = run(Scenario.at(level), "slicetrace")
    assert comparable(ours) == comparable(theirs)
    if level == 0:
        assert ours.spans == [] and theirs.spans == []
        assert ours.handoff == theirs.handoff
    else:
        assert len(ours.spans) == len(theirs.spans) > 0
        # One trace per request, on each side.
        assert len(trace_ids(ours)) == len(trace_ids(theirs)) == len(Scenario().requests)


def test_the_carrier_has_sglangs_keys_and_ours(run):
    theirs = run(Scenario.at(3), "sglang")
    ours = run(Scenario.at(3), "slicetrace")
    for rid, hand in theirs.handoff.items():
        mine = ours.handoff[rid]
        assert set(mine["trace_ctx_keys"]) == set(hand["trace_ctx_keys"]) | {"slicetrace"}
        assert mine["carrier_keys"] == hand["carrier_keys"] == ["traceparent"]
        assert mine["last_span_context_keys"] == hand["last_span_context_keys"] == ["span_id", "trace_id"]
        assert (mine["trace_level"], mine["is_copy"]) == (hand["trace_level"], hand["is_copy"])


@pytest.mark.parametrize("tokenizer, schedulers", [("sglang", "slicetrace"), ("slicetrace", "sglang")])
def test_a_mixed_deployment_forms_one_trace_through_the_carrier(run, tokenizer, schedulers):
    pure = run(Scenario.at(3), "sglang")
    mixed = run(Scenario.at(3), tokenizer, schedulers)
    assert comparable(mixed) == comparable(pure)
    assert len(trace_ids(mixed)) == len(Scenario().requests)


@pytest.mark.parametrize("tokenizer, schedulers", [("sglang", "slicetrace"), ("slicetrace", "sglang")])
def test_a_mixed_deployment_stays_in_the_gateways_trace(run, tokenizer, schedulers):
    scenario = Scenario(env_level=3, gateway=GATEWAY)
    pure = run(scenario, "sglang")
    mixed = run(scenario, tokenizer, schedulers)
    assert comparable(mixed) == comparable(pure)
    # Every span of every request, on both modules' sides, is in the gateway's trace.
    assert trace_ids(mixed) == {GATEWAY_TRACE}
    roots = [s for s in mixed.spans if s["name"].startswith(" Req ")]
    assert len(roots) == len(Scenario().requests)
    assert {s["parent_span_id"] for s in roots} == {"00f067aa0ba902b7"}
