"""Cost per call of the SGLang-compatible calls, against what a Python program pays anyway.

    python python/benchmarks/bench_calls.py [--rounds N]

Rows: an empty Python function called twice (the floor a call pair cannot beat), our
``trace_slice_start`` + ``trace_slice_end`` pair, our ``trace_slice_batch`` per request at
batch 256 beside a plain loop that only reads ``.rid`` and calls ``.finished()``, and the pair
with tracing off. Each figure is the median over rounds of a short timed burst; between bursts
the drainer gets time to empty the ring, so no call meets a full ring (checked at the end); each
timed burst follows an untimed one, so that it measures the calls, not a cold cache.
Time is the calling thread's CPU time (``time.thread_time_ns``): on a small shared machine the
drainer, the exporter and other processes take turns on the cores, and wall time would count
their turns as the caller's.
"""

import argparse
import os
import statistics
import tempfile
import time

import slicetrace
from slicetrace.sglang import tracing as t

PAIRS_PER_ROUND = 1000
BATCH = 256


def empty(name, rid):
    pass


class Req:
    __slots__ = ("rid",)

    def __init__(self, rid):
        self.rid = rid

    def finished(self):
        return False


def median_ns(run, per_round, rounds, pause=0.01):
    samples = []
    for _ in range(rounds):
        run()  # warm: the timed run finds its code and data in cache, as a busy server does
        t0 = time.thread_time_ns()
        run()
        samples.append((time.thread_time_ns() - t0) / per_round)
        time.sleep(pause)
    return statistics.median(samples)


def pair_loop(start, end, name, rid):
    def run():
        for _ in range(PAIRS_PER_ROUND):
            start(name, rid)
            end(name, rid)

    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    rounds = args.rounds

    out = tempfile.mkdtemp(prefix="slicetrace-bench-")
    os.environ["SLICETRACE_FILE"] = os.path.join(out, "bench.jsonl")
    for k in [k for k in os.environ if k.startswith("OTEL_EXPORTER_OTLP")]:
        del os.environ[k]

    name, rid = "decode_loop", "9f8e7d6c-5b4a-4321-8765-0123456789ab"
    floor = median_ns(pair_loop(empty, empty, name, rid), PAIRS_PER_ROUND, rounds)

    t.process_tracing_init(None, "bench")
    t.trace_set_thread_info("bench", 0)
    t.trace_req_start(rid)
    pair = median_ns(pair_loop(t.trace_slice_start, t.trace_slice_end, name, rid), PAIRS_PER_ROUND, rounds)

    reqs = [Req(f"{i:08x}-batch-request-0000-000000000000") for i in range(BATCH)]
    for r in reqs:
        t.trace_req_start(r.rid)
        t.trace_slice_start("", r.rid, anonymous=True)
    batch_rounds = max(rounds // 3, 20)

    def batch_run():
        for _ in range(4):
            t.trace_slice_batch(name, reqs)

    def plain_run():
        for _ in range(4):
            for r in reqs:
                r.rid
                r.finished()

    # A batch of 256 is 86 records and 256 spans for the drainer: longer pauses, for both rows.
    batch = median_ns(batch_run, 4 * BATCH, batch_rounds, pause=0.04)
    plain = median_ns(plain_run, 4 * BATCH, batch_rounds, pause=0.04)
    for r in reqs:
        t.trace_req_finish(r.rid)
    t.trace_req_finish(rid)
    final = slicetrace.shutdown()

    off = median_ns(pair_loop(t.trace_slice_start, t.trace_slice_end, name, rid), PAIRS_PER_ROUND, rounds)

    rows = [
        ("empty Python function, pair (floor)", floor, None),
        ("trace_slice_start + trace_slice_end", pair, pair / floor),
        ("tracing off, pair", off, off / floor),
        ("plain loop per request (.rid, .finished())", plain, None),
        (f"trace_slice_batch per request, batch {BATCH}", batch, batch / plain),
    ]
    print(f"{'call':48} {'ns':>8}  ratio")
    for label, ns, ratio in rows:
        r = f"{ratio:5.2f}x" if ratio is not None else "     -"
        print(f"{label:48} {ns:8.1f}  {r}")
    print(
        f"(pair / floor; off / floor; batch / plain loop)  "
        f"records dropped on a full ring: {final['records_dropped_ring_full']}"
    )


if __name__ == "__main__":
    main()
