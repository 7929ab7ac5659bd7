"""Cost per request per decode step through SGLang 0.5.23's own ``req_time_stats.py`` (unpacked by
``scripts/fetch-sglang-0.5.23``, run as ``python/tests/sglang_v2_harness.py`` loads it): tracing
off, SGLang's own tracing module at levels 1 and 3, and ``slicetrace.sglang.observability`` in its
place at levels 1 and 3.

    python python/benchmarks/bench_decode_step.py [--rounds N] [--json]

A decode step per request is what SGLang's scheduler calls per running request: the stats'
``set_last_scheduled_time(DECODE, …)`` when the batch is scheduled, then
``set_last_decode_finish_time()`` when its result is processed. At level 3 that is a ``schedule``
event and a ``decode_loop`` slice recorded after the fact; at level 1 neither is recorded, and
the calls do the stats' own bookkeeping. Each configuration runs in a process of its own (SGLang's
tracer provider is process-wide): a batch of requests is started, handed to the scheduler's
stats by pickle and prefilled, then timed over decode steps. SGLang's module exports through its
own ``BatchSpanProcessor`` to an exporter that accepts every batch and does nothing with it; ours
writes a JSON-lines file (in a temporary directory). Time is the calling thread's CPU time, the
median over rounds. The five processes stay up and take turns round by round (each round starts
with the next process), so that a change in the machine's load reaches every configuration
alike and the ratios compare figures taken side by side.

Target (issue "SGLang's current tracing API"): ours at level 3 at most 1.2 x SGLang's own at
level 1.
"""

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python" / "tests"))

BATCH = 32
STEPS = 64  # per round: BATCH * STEPS request-steps
CONFIGS = [
    ("off", "sglang", None),
    ("sglang_level_1", "sglang", 1),
    ("sglang_level_3", "sglang", 3),
    ("ours_level_1", "slicetrace", 1),
    ("ours_level_3", "slicetrace", 3),
]
TARGET = 1.2


def child(impl: str, level) -> None:
    """One configuration: set up, then one timed round per ``round`` line on stdin, its figure
    printed; ``stop`` ends it, printing our drop count."""
    import sglang_v2_harness as h

    trace_module = None
    if impl == "slicetrace":
        import slicetrace.sglang.observability as trace_module
    rts, trace_mod = h.load(h.sglang_dir(), trace_module)
    if level is not None:
        if impl == "sglang":
            from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

            class Discard(SpanExporter):
                def export(self, spans):
                    return SpanExportResult.SUCCESS

            trace_mod.get_otlp_span_exporter = lambda endpoint: Discard()
            trace_mod.process_tracing_init("127.0.0.1:4317", "bench")
        else:
            trace_mod.process_tracing_init(None, "bench")
        trace_mod.set_global_trace_level(level)
    trace_mod.trace_set_thread_info("Scheduler", 0, None, 0)
    decode, extend = rts.ForwardMode.DECODE, rts.ForwardMode.EXTEND
    attrs = {"bid": "00000002", "batch_size": BATCH, "forward_mode": "decode"}
    r = 0
    for line in sys.stdin:
        if line.strip() != "round":
            break
        batch = []
        for i in range(BATCH):
            api = rts.APIServerReqTimeStats(disagg_mode=rts.DisaggregationMode.NULL)
            api.init_trace_ctx(f"{r:04x}{i:04x}-bench", None, None)
            api.set_created_time(time.perf_counter())
            s = rts.SchedulerReqTimeStats.new_from_obj(pickle.loads(pickle.dumps(api)))
            s.set_metrics_collector(None)
            now = time.perf_counter()
            s.set_scheduler_recv_time(now)
            s.set_wait_queue_entry_time(now)
            s.set_forward_entry_time(now)
            s.set_last_scheduled_time(extend, now, {"forward_mode": "prefill"})
            s.set_prefill_finished_time(time.perf_counter())
            batch.append((api, s))
        t0 = time.thread_time_ns()
        for _ in range(STEPS):
            for _, s in batch:
                s.set_last_scheduled_time(decode, time.perf_counter(), attrs)
            for _, s in batch:
                s.set_last_decode_finish_time()
        took = (time.thread_time_ns() - t0) / (BATCH * STEPS)
        for api, s in batch:
            s.set_completion_time(time.perf_counter())
            api.set_finished_time(time.perf_counter())
        r += 1
        print(took, flush=True)
    dropped = 0
    if impl == "slicetrace" and level is not None:
        import slicetrace

        final = slicetrace.shutdown()
        dropped = final["records_dropped_ring_full"] + final["spans_dropped_export"]
    print(f"dropped {dropped}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40, help="rounds per configuration (default 40)")
    ap.add_argument("--json", action="store_true", help="print one JSON object, not the table")
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "LEVEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, level = args.child
        child(impl, None if level == "off" else int(level))
        return
    samples = {key: [] for key, _, _ in CONFIGS}
    dropped = 0
    with tempfile.TemporaryDirectory() as work:
        procs = {}
        for key, impl, level in CONFIGS:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SGLANG_"))}
            env["SLICETRACE_FILE"] = str(Path(work) / f"{key}.jsonl")
            cmd = [sys.executable, __file__, "--child", impl, "off" if level is None else str(level)]
            procs[key] = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        keys = [key for key, _, _ in CONFIGS]
        try:
            for r in range(args.rounds):
                for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                    p = procs[key]
                    p.stdin.write("round\n")
                    p.stdin.flush()
                    line = p.stdout.readline()
                    if not line:
                        raise SystemExit(f"{key}: the child ended early")
                    samples[key].append(float(line))
                    # Let the export threads catch up between rounds, as a server's idle moments do.
                    time.sleep(0.02)
            for key, p in procs.items():
                out, _ = p.communicate("stop\n", timeout=60)
                dropped += int(out.split()[-1])
                if p.returncode != 0:
                    raise SystemExit(f"{key}: exited with {p.returncode}")
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
    figures = {key: statistics.median(v) for key, v in samples.items()}
    ratio = figures["ours_level_3"] / figures["sglang_level_1"]
    report = {
        "figures_ns": figures,
        "ratios": {
            "ours_level_3 / sglang_level_1": ratio,
            "ours_level_1 / sglang_level_1": figures["ours_level_1"] / figures["sglang_level_1"],
            "sglang_level_3 / ours_level_3": figures["sglang_level_3"] / figures["ours_level_3"],
        },
        "target": {"ours_level_3 / sglang_level_1": TARGET, "met": ratio <= TARGET},
        "records_or_spans_dropped": dropped,
        "batch": BATCH,
        "steps": STEPS,
        "rounds": args.rounds,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"per request per decode step, calling thread's CPU time (median of {args.rounds} rounds)")
    for key, _, _ in CONFIGS:
        print(f"  {key:16s} {figures[key]:10.0f} ns")
    print(f"  ours level 3 / SGLang level 1: {ratio:.2f} (target <= {TARGET})")
    print(f"  ours level 1 / SGLang level 1: {report['ratios']['ours_level_1 / sglang_level_1']:.2f}")
    print(f"  SGLang level 3 / ours level 3: {report['ratios']['sglang_level_3 / ours_level_3']:.1f}")
    print(f"  our records or spans dropped: {dropped}")


if __name__ == "__main__":
    main()
