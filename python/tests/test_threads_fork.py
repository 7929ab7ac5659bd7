"""Python threads each record into their own OS thread's ring; a forked child records nothing
and counts its calls."""

import os
import subprocess
import sys
import textwrap
import threading

from conftest import thread_span_name

import slicetrace
from slicetrace.sglang import tracing as t


def test_threads_trace_their_own_requests(traced):
    n_threads, per_thread, slices = 8, 20, 10
    barrier = threading.Barrier(n_threads)
    tids = {}

    def work(k):
        t.trace_set_thread_info(f"worker-{k}", k)
        tids[k] = threading.get_native_id()
        barrier.wait()
        for i in range(per_thread):
            rid = f"{k:02d}{i:06d}-thread-req"
            t.trace_req_start(rid)
            t.trace_slice_start("", rid, anonymous=True)
            for s in range(slices):
                t.trace_slice_end(f"step{s}", rid, auto_next_anon=s < slices - 1)
            t.trace_req_finish(rid)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tr = traced.finish()
    st = traced.final_stats
    assert st["records_dropped_ring_full"] == 0 and st["unknown_rid_records"] == 0
    assert st["requests_finished"] == n_threads * per_thread
    # The slices, a thread span, a request span and a room span per request.
    assert len(tr.spans) == n_threads * per_thread * (slices + 3)
    for k in range(n_threads):
        for i in range(per_thread):
            rid = f"{k:02d}{i:06d}-thread-req"
            req = [s for s in tr.spans if s["name"] == f" Req {rid[:8]}"]
            assert len(req) == 1
            ((thread_name, kids),) = tr.tree(req[0])[1]
            assert thread_name == thread_span_name(f"worker-{k}", k, tids[k])
            assert [name for name, _ in kids] == [f"step{s}" for s in range(slices)]
            for s in tr.children(tr.children(req[0])[0]):
                assert s["attributes"]["thread.id"] == tids[k]
                assert s["attributes"]["rid"] == rid


def test_caches_stay_bounded():
    assert not slicetrace.is_tracing_enabled()
    for i in range(20_000):
        t.trace_event(f"name-{i % 3000}", f"rid-{i}")
    names, rids = slicetrace._native._cache_sizes()
    assert 0 < names <= 256 and 0 < rids <= 2048


def run_script(code, tmp_path, timeout=60):
    env = dict(os.environ, SLICETRACE_FILE=str(tmp_path / "spans.jsonl"))
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_forked_child_drops_and_counts_its_calls_and_the_parent_goes_on(tmp_path):
    r = run_script(
        """
        import os, sys, warnings, json
        import slicetrace
        from slicetrace.sglang import tracing as t
        t.process_tracing_init(None, "parent")
        t.trace_req_start("parent-req-1")
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                t.trace_req_start("child-req-1")
                t.trace_slice_start("s", "child-req-1")
                t.trace_slice_end("s", "child-req-1")
                t.process_tracing_init(None, "child")
                t.trace_req_finish("child-req-1")
            out = {
                "warnings": [str(x.message) for x in w],
                "stats": slicetrace.stats(),
                "enabled": slicetrace.is_tracing_enabled(),
                "shutdown": slicetrace.shutdown(),
                "ctx": t.trace_get_proc_propagate_context("parent-req-1"),
            }
            os.write(wr, json.dumps(out).encode())
            sys.exit(0)  # runs atexit: must not wait for the parent's drainer
        os.close(wr)
        data = b""
        while chunk := os.read(rd, 65536):
            data += chunk
        _, status = os.waitpid(pid, 0)
        child = json.loads(data)
        t.trace_slice_start("after-fork", "parent-req-1")
        t.trace_slice_end("after-fork", "parent-req-1")
        t.trace_req_finish("parent-req-1")
        final = slicetrace.shutdown()
        print(json.dumps({"status": status, "child": child, "parent": final}))
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == 0
    child = out["child"]
    # Four traced calls before the snapshot; process_tracing_init is not counted.
    assert child["stats"]["calls_dropped_after_fork"] == 4
    assert child["enabled"] is False
    assert child["ctx"] is None
    assert len(child["warnings"]) == 1 and "forked" in child["warnings"][0]
    assert out["parent"]["requests_finished"] == 1
    from conftest import read_spans

    names = sorted(s["name"] for s in read_spans(tmp_path / "spans.jsonl"))
    assert "after-fork" in names and " Req parent-r" in names
    assert not any("child" in s["attributes"].get("rid", "") for s in read_spans(tmp_path / "spans.jsonl"))


def test_interpreter_exit_flushes(tmp_path):
    r = run_script(
        """
        from slicetrace.sglang import tracing as t
        t.process_tracing_init(None, "exiting")
        t.trace_req_start("exit-req-0001")
        t.trace_slice_start("last", "exit-req-0001")
        t.trace_slice_end("last", "exit-req-0001")
        t.trace_req_finish("exit-req-0001")
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    from conftest import read_spans

    spans = read_spans(tmp_path / "spans.jsonl")
    assert {s["name"] for s in spans} >= {" Req exit-req", "last", "Bootstrap Room 0x0"}
    assert len(spans) == 4
