"""Python threads each record into their own OS thread's ring; a forked child traces as a process
of its own, or drops and counts its calls when it cannot, and never waits."""

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import read_spans, thread_span_name

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


def run_script(code, tmp_path, timeout=60, file="spans.jsonl"):
    env = dict(os.environ, SLICETRACE_FILE=str(tmp_path / file))
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# What the scripts below share: a parent request open across the fork, and a bounded wait for
# a forked child (a child that hangs fails the test instead of stalling it).
PRELUDE = """
import json, os, sys, threading, time, warnings
import slicetrace
from slicetrace.sglang import tracing as t

def wait_child(pid, limit=30):
    until = time.monotonic() + limit
    while time.monotonic() < until:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"

def one_request(rid, name):
    t.trace_req_start(rid)
    t.trace_slice_start(name, rid)
    t.trace_slice_end(name, rid)
    t.trace_req_finish(rid)

t.process_tracing_init(None, "parent")
t.trace_set_thread_info("Main")
t.trace_req_start("parent-req-1")
t.trace_slice_start("before-fork", "parent-req-1")
t.trace_slice_end("before-fork", "parent-req-1")
"""

# The parent's side after its child is done: its request goes on and ends.
EPILOGUE = """
t.trace_slice_start("after-fork", "parent-req-1")
t.trace_slice_end("after-fork", "parent-req-1")
t.trace_req_finish("parent-req-1")
final = slicetrace.shutdown()
print(json.dumps({"pid": os.getpid(), "tid": threading.get_native_id(), "child": child, "parent": final}))
"""


def check_parent(tmp_path, out, path):
    """The parent's trace is whole, and has nothing of the child's."""
    assert out["parent"]["requests_finished"] == 1
    assert out["parent"]["forks_reinitialised"] == 0
    spans = read_spans(path)
    assert sorted(s["name"] for s in spans) == sorted(
        ["Bootstrap Room 0x0", " Req parent-r", "before-fork", "after-fork", thread_span_name("Main", None, out["tid"])]
    )
    return spans


def check_disjoint(a, b):
    for key in ("span_id", "trace_id"):
        assert not {s[key] for s in a} & {s[key] for s in b}, key


def test_a_multiprocessing_fork_child_traces_into_its_own_file(tmp_path):
    r = run_script(
        PRELUDE
        + """
import multiprocessing as mp

def worker(conn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        # A worker's own start-up call: the session it already has is kept, quietly.
        t.process_tracing_init(None, "worker")
        t.trace_set_thread_info("Worker")
        one_request("child-req-1", "child-slice")
        ctx = t.trace_get_proc_propagate_context("parent-req-1")
    conn.send({
        "pid": os.getpid(),
        "tid": threading.get_native_id(),
        "warnings": [str(x.message) for x in w],
        "enabled": slicetrace.is_tracing_enabled(),
        "ctx": ctx,
        "stats": slicetrace.stats(),
    })
    # The process leaves through os._exit: a multiprocessing finalizer exports its spans.

a, b = mp.get_context("fork").Pipe()
p = mp.get_context("fork").Process(target=worker, args=(b,))
p.start()
child = a.recv() if a.poll(30) else None
p.join(30)
child["exitcode"] = p.exitcode
"""
        + EPILOGUE,
        tmp_path,
        file="spans-{pid}.jsonl",
    )
    out = last_json(r)
    child = out["child"]
    assert child["exitcode"] == 0
    assert child["pid"] != out["pid"]
    assert child["warnings"] == [] and child["enabled"] is True
    # The parent's request is not the child's to propagate.
    assert child["ctx"] is None
    assert child["stats"]["forks_reinitialised"] == 1
    assert child["stats"]["calls_dropped_after_fork"] == 0
    parent = check_parent(tmp_path, out, tmp_path / f"spans-{out['pid']}.jsonl")
    mine = read_spans(tmp_path / f"spans-{child['pid']}.jsonl")
    assert sorted(s["name"] for s in mine) == sorted(
        ["Bootstrap Room 0x0", " Req child-re", "child-slice", thread_span_name("Worker", None, child["tid"])]
    )
    # The child's main thread is the one that forked: its id is the child's pid.
    assert child["tid"] == child["pid"]
    assert {s["service"] for s in mine} == {"parent"}
    check_disjoint(parent, mine)


def test_an_os_fork_child_writes_beside_a_fixed_file_and_its_exit_exports(tmp_path):
    r = run_script(
        PRELUDE
        + """
pid = os.fork()
if pid == 0:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t.process_tracing_init(None, "child")
        one_request("child-req-2", "child-slice")
    st = slicetrace.stats()
    with open(os.environ["SLICETRACE_FILE"] + ".child.json", "w") as f:
        json.dump({"warnings": [str(x.message) for x in w], "stats": st}, f)
    sys.exit(0)  # atexit: the child's own session exports, and nothing waits for the parent's
child = {"pid": pid, "status": wait_child(pid)}
with open(os.environ["SLICETRACE_FILE"] + ".child.json") as f:
    child.update(json.load(f))
"""
        + EPILOGUE,
        tmp_path,
    )
    out = last_json(r)
    child = out["child"]
    assert child["status"] == 0
    assert child["warnings"] == []
    assert child["stats"]["forks_reinitialised"] == 1
    parent = check_parent(tmp_path, out, tmp_path / "spans.jsonl")
    # A fixed name is the parent's file: the child writes its own beside it, its pid inserted.
    mine = read_spans(tmp_path / f"spans.{child['pid']}.jsonl")
    # Thread labels are per process: the thread that forked is traced under its OS name until
    # it sets one in the child.
    cpid = child["pid"]
    assert sorted(s["name"] for s in mine) == sorted(
        ["Bootstrap Room 0x0", " Req child-re", "child-slice", thread_span_name(f"thread-{cpid}", None, cpid)]
    )
    check_disjoint(parent, mine)


def test_a_pid_pattern_gives_a_forked_child_its_own_perfetto_file(tmp_path):
    r = run_script(
        """
import json, os, sys, time
import slicetrace
from slicetrace.sglang import tracing as t
t.process_tracing_init(None, "perfetto-parent")
pid = os.fork()
if pid == 0:
    t.trace_req_start("child-req-3")
    t.trace_req_finish("child-req-3")
    sys.exit(0)
_, status = os.waitpid(pid, 0)
t.trace_req_start("parent-req-3")
t.trace_req_finish("parent-req-3")
slicetrace.shutdown()
print(json.dumps({"pid": os.getpid(), "child": pid, "status": status}))
""",
        tmp_path,
        file="run-{pid}.trace.json",
    )
    out = last_json(r)
    assert out["status"] == 0
    for who, req in ((out["pid"], " Req parent-r"), (out["child"], " Req child-re")):
        doc = json.loads((tmp_path / f"run-{who}.trace.json").read_text())
        events = doc["traceEvents"] if isinstance(doc, dict) else doc
        titles = [e["args"]["name"] for e in events if e.get("name") == "process_name"]
        assert titles and all(f"(pid {who}" in x for x in titles), titles
        names = {e.get("name") for e in events}
        assert req in names and not ({" Req parent-r", " Req child-re"} - {req}) & names


@pytest.mark.parametrize(
    "lock,why",
    [
        ("names", "the name table"),
        ("session", "the session"),
        ("guard", "session lock"),
    ],
)
def test_a_fork_while_a_lock_is_held_drops_and_counts_without_waiting(tmp_path, lock, why):
    r = run_script(
        PRELUDE
        + f"""
assert slicetrace._native._hold_lock({lock!r}, 3.0)
pid = os.fork()
if pid == 0:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        one_request("child-req-4", "child-slice")
        t.process_tracing_init(None, "child")
        t.trace_event("late", "child-req-4")
    out = {{
        "warnings": [str(x.message) for x in w],
        "enabled": slicetrace.is_tracing_enabled(),
        "flushed": slicetrace.flush(1.0),
        "stats": slicetrace.stats(),
        "shutdown": slicetrace.shutdown(),
    }}
    with open(os.environ["SLICETRACE_FILE"] + ".child.json", "w") as f:
        json.dump(out, f)
    sys.exit(0)
child = {{"pid": pid, "status": wait_child(pid)}}
with open(os.environ["SLICETRACE_FILE"] + ".child.json") as f:
    child.update(json.load(f))
time.sleep(3)  # the holder lets go in the parent
"""
        + EPILOGUE,
        tmp_path,
    )
    out = last_json(r)
    child = out["child"]
    assert child["status"] == 0
    assert child["enabled"] is False and child["flushed"] is False
    # Five traced calls; process_tracing_init only warns (the one warning, with the reason).
    assert child["stats"]["calls_dropped_after_fork"] == 5
    assert child["shutdown"]["calls_dropped_after_fork"] == 5
    assert child["stats"]["forks_reinitialised"] == 0
    assert len(child["warnings"]) == 1, child["warnings"]
    assert "forked" in child["warnings"][0] and why in child["warnings"][0]
    check_parent(tmp_path, out, tmp_path / "spans.jsonl")
    assert not (tmp_path / f"spans.{child['pid']}.jsonl").exists()


def test_a_child_that_could_not_start_at_the_fork_starts_with_process_tracing_init(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    r = run_script(
        PRELUDE.replace("import json,", "import json, shutil,")
        + """
# The child's file cannot be made at the fork: its directory is gone (the parent keeps its own
# file open).
logs = os.path.dirname(os.environ["SLICETRACE_FILE"])
shutil.rmtree(logs)
pid = os.fork()
if pid == 0:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t.trace_event("dropped", "child-req-5")
        os.mkdir(logs)
        t.process_tracing_init(None, "child")
        one_request("child-req-5", "child-slice")
    st = slicetrace.shutdown()
    with open(os.path.join(logs, "child.json"), "w") as f:
        json.dump({"warnings": [str(x.message) for x in w], "stats": st}, f)
    os._exit(0)
child = {"pid": pid, "status": wait_child(pid)}
with open(os.path.join(logs, "child.json")) as f:
    child.update(json.load(f))
"""
        + EPILOGUE,
        tmp_path,
        file="logs/spans-{pid}.jsonl",
    )
    out = last_json(r)
    child = out["child"]
    assert child["status"] == 0
    assert len(child["warnings"]) == 1 and "cannot create" in child["warnings"][0]
    assert child["stats"]["calls_dropped_after_fork"] == 1
    assert child["stats"]["forks_reinitialised"] == 1
    assert child["stats"]["requests_finished"] == 1
    mine = read_spans(tmp_path / "logs" / f"spans-{child['pid']}.jsonl")
    assert {s["service"] for s in mine} == {"child"} and len(mine) == 4
    # The parent's file went with its directory; its session still ended normally.
    assert out["parent"]["requests_finished"] == 1


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
    spans = read_spans(tmp_path / "spans.jsonl")
    assert {s["name"] for s in spans} >= {" Req exit-req", "last", "Bootstrap Room 0x0"}
    assert len(spans) == 4
