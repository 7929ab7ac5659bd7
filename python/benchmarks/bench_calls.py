"""Cost per call of the SGLang-compatible calls, against what a Python program pays anyway and
against SGLang 0.5.9's own tracing module, all measured in one process.

    python python/benchmarks/bench_calls.py [--rounds N] [--json]

Rows, traced phase (our session and SGLang's provider both running):
  - an empty Python function called twice: the floor no call pair can beat;
  - our ``trace_slice_start`` + ``trace_slice_end`` pair;
  - a plain loop over a batch of 256 that only reads ``.rid`` and calls ``.finished()``, and our
    ``trace_slice_batch`` on the same batch, each per request;
  - SGLang's own pair, from its real ``sglang/srt/tracing/trace.py`` (``$SLICETRACE_SGLANG_DIR``,
    default ``target/sglang-0.5.9``, which ``bash scripts/test`` unpacks), initialised by its own
    ``process_tracing_init``: its ``BatchSpanProcessor`` with the default settings, exporting to
    an exporter that accepts every batch and does nothing with it.
Untraced phase, before either is initialised: the empty pair again, and our pair with tracing off.

The rows of a phase take turns: each round runs every row once (warmed, timed, then a pause),
starting one row later each round, so that a change in the machine's load reaches every row of
the phase alike and the ratios compare figures taken side by side. Each figure is the median
over rounds. Time is the calling thread's CPU time (``time.thread_time_ns``): our drainer and
SGLang's export thread each run on a thread of their own, and on a small shared machine wall time
would count their turns, and other processes', as the caller's. The pauses let both empty their
queues between bursts: the script reports our records dropped on a full ring and SGLang's spans
that never reached its exporter (both 0 when the figures are of calls that were all kept).

The default run takes about 12 s; ``--rounds 1000`` gives steadier medians in about 80 s.
``--json`` prints the figures, ratios and targets as one JSON object instead of the table.
"""

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 1000  # our pair and the floor: 0.1-0.2 ms a burst
SGLANG_PAIRS = 100  # SGLang's pair costs about 20 us: 2 ms a burst
BATCH = 256
BATCHES = 4
NAME, RID = "decode_loop", "9f8e7d6c-5b4a-4321-8765-0123456789ab"


def empty(name, rid):
    pass


class Req:
    __slots__ = ("rid",)

    def __init__(self, rid):
        self.rid = rid

    def finished(self):
        return False


class Row:
    """A timed burst: `run` makes `per` calls (or pairs); `pause` follows it."""

    def __init__(self, key, run, per, pause):
        self.key, self.run, self.per, self.pause = key, run, per, pause


def pair_loop(start, end, pairs):
    def run():
        for _ in range(pairs):
            start(NAME, RID)
            end(NAME, RID)

    return run


def measure(rows, rounds):
    samples = {r.key: [] for r in rows}
    for i in range(rounds):
        k = i % len(rows)
        for row in rows[k:] + rows[:k]:
            row.run()  # warm: the timed run finds its code and data in cache, as a busy server does
            t0 = time.thread_time_ns()
            row.run()
            samples[row.key].append((time.thread_time_ns() - t0) / row.per)
            time.sleep(row.pause)
    return {key: statistics.median(v) for key, v in samples.items()}


def load_sglang():
    """SGLang's module, unmodified, with only what imports torch stubbed, and the exporter it
    would build replaced in its namespace by one that counts the spans it is given."""
    root = Path(os.environ.get("SLICETRACE_SGLANG_DIR", ROOT / "target" / "sglang-0.5.9"))
    if not (root / "sglang" / "srt" / "tracing" / "trace.py").is_file():
        sys.exit(
            f"bench_calls: no SGLang 0.5.9 tracing module under {root} "
            "(bash scripts/test unpacks it there; or set SLICETRACE_SGLANG_DIR)"
        )
    sys.path.insert(0, str(root))
    for pkg in ("sglang", "sglang.srt"):
        m = types.ModuleType(pkg)
        m.__path__ = [str(root.joinpath(*pkg.split(".")))]
        sys.modules[pkg] = m
    utils = types.ModuleType("sglang.srt.utils")
    utils.get_int_env_var = lambda name, default: int(os.environ.get(name, default))
    sys.modules["sglang.srt.utils"] = utils

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from sglang.srt.tracing import trace as sg

    class NoopExporter(SpanExporter):
        spans = 0

        def export(self, spans):
            NoopExporter.spans += len(spans)
            return SpanExportResult.SUCCESS

    sg.get_otlp_span_exporter = lambda endpoint: NoopExporter()
    return sg, NoopExporter


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=150, help="rounds per phase (default 150)")
    ap.add_argument("--json", action="store_true", help="print one JSON object, not the table")
    args = ap.parse_args()
    rounds = max(args.rounds, 1)

    # Both libraries read OTEL_* (and SGLang its SGLANG_OTLP_*) at init: measure their defaults.
    for k in [k for k in os.environ if k.startswith(("OTEL_", "SGLANG_OTLP_", "SLICETRACE"))]:
        if k != "SLICETRACE_SGLANG_DIR":
            del os.environ[k]
    # Our spans are still built and written, as SGLang's are handed to its exporter, but to
    # nowhere: a default run makes some 600 000 of them.
    os.environ["SLICETRACE_FILE"] = os.devnull

    sg, noop = load_sglang()
    import slicetrace
    from slicetrace.sglang import tracing as t

    ours = pair_loop(t.trace_slice_start, t.trace_slice_end, PAIRS)
    floor = pair_loop(empty, empty, PAIRS)

    # Untraced: neither library initialised.
    assert not slicetrace.is_tracing_enabled()
    off = measure(
        [
            Row("empty_pair_beside_off", floor, PAIRS, 0.001),
            Row("off_pair", ours, PAIRS, 0.001),
        ],
        rounds,
    )

    t.process_tracing_init(None, "bench")
    t.trace_set_thread_info("bench", 0)
    t.trace_req_start(RID)
    reqs = [Req(f"{i:08x}-batch-request-0000-000000000000") for i in range(BATCH)]
    for r in reqs:
        t.trace_req_start(r.rid)
        t.trace_slice_start("", r.rid, anonymous=True)

    sg.process_tracing_init("unused:4317", "bench-sglang")
    if not sg.tracing_enabled:
        sys.exit("bench_calls: SGLang's process_tracing_init failed (see its log above)")
    sg.trace_set_thread_info("bench", 0)
    sg.trace_req_start(RID)

    sglang = pair_loop(sg.trace_slice_start, sg.trace_slice_end, SGLANG_PAIRS)

    def batch_run():
        for _ in range(BATCHES):
            t.trace_slice_batch(NAME, reqs)

    def plain_run():
        for _ in range(BATCHES):
            for r in reqs:
                r.rid
                r.finished()

    # Pauses sized to what a row's two bursts leave behind: 4000 records for our drainer from
    # the pairs, 688 records that become 2048 spans from the batches, 200 spans for SGLang's
    # export thread. SGLang's row includes the garbage collections its objects set off, as in
    # a server; the other rows allocate no tracked objects.
    on = measure(
        [
            Row("empty_pair", floor, PAIRS, 0.001),
            Row("slice_pair", ours, PAIRS, 0.01),
            Row("plain_loop_per_request", plain_run, BATCHES * BATCH, 0.001),
            Row("slice_batch_per_request", batch_run, BATCHES * BATCH, 0.04),
            Row("sglang_pair", sglang, SGLANG_PAIRS, 0.01),
        ],
        rounds,
    )

    for r in reqs:
        t.trace_req_finish(r.rid)
    t.trace_req_finish(RID)
    final = slicetrace.shutdown()
    sg.trace_req_finish(RID)
    from opentelemetry import trace as ot

    ot.get_tracer_provider().shutdown()
    # Each round's two bursts of slices, and the room, request and thread spans.
    sglang_dropped = 2 * SGLANG_PAIRS * rounds + 3 - noop.spans

    figures = {**on, **off}
    ratio = figures.__getitem__
    targets = [
        ("our pair / empty pair", "slice_pair", "empty_pair", "<=", 2.0),
        ("SGLang's pair / our pair", "sglang_pair", "slice_pair", ">=", 150.0),
        (
            "trace_slice_batch / plain loop, per request",
            "slice_batch_per_request",
            "plain_loop_per_request",
            "<=",
            1.5,
        ),
        ("tracing off pair / empty pair", "off_pair", "empty_pair_beside_off", "<=", 1.5),
    ]
    results = []
    for name, num, den, op, limit in targets:
        v = ratio(num) / ratio(den)
        ok = v <= limit if op == "<=" else v >= limit
        results.append({"name": name, "value": v, "op": op, "limit": limit, "pass": ok})
    if args.json:
        json.dump(
            {
                "rounds": rounds,
                "figures_ns": figures,
                "targets": results,
                "records_dropped_ring_full": final["records_dropped_ring_full"],
                "sglang_spans_dropped": sglang_dropped,
            },
            sys.stdout,
            indent=1,
        )
        print()
        return

    labels = {
        "empty_pair": "empty Python function, pair (floor)",
        "slice_pair": "trace_slice_start + trace_slice_end",
        "plain_loop_per_request": "plain loop per request (.rid, .finished())",
        "slice_batch_per_request": f"trace_slice_batch per request, batch {BATCH}",
        "sglang_pair": "SGLang 0.5.9's pair (BatchSpanProcessor, no-op export)",
        "empty_pair_beside_off": "untraced: empty Python function, pair (floor)",
        "off_pair": "untraced: our pair, tracing off",
    }
    print(f"{'call':56} {'ns':>9}")
    for key, label in labels.items():
        print(f"{label:56} {figures[key]:9.1f}")
    print()
    print(f"{'target':46} {'value':>8}  {'limit':>8}  result")
    for r in results:
        limit = f"{r['op']} {r['limit']:g}"
        print(f"{r['name']:46} {r['value']:8.2f}  {limit:>8}  {'PASS' if r['pass'] else 'FAIL'}")
    print(
        f"\n{rounds} rounds per phase; our records dropped on a full ring: "
        f"{final['records_dropped_ring_full']}; SGLang's spans that did not reach its exporter: "
        f"{sglang_dropped}"
    )


if __name__ == "__main__":
    main()
