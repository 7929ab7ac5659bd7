"""Runs whole requests through SGLang 0.5.23's own request time stats
(`sglang/srt/observability/req_time_stats.py`) and tracing module (`trace.py`, with
`trace_async.py` beside it), in the processes SGLang runs them in, and turns the spans they export
into a form that compares across runs and across implementations of the tracing module.

The tracing module is the variable: `IMPLS["sglang"]` is SGLang's own `trace.py` from the
release's wheel; `IMPLS["slicetrace"]` is our drop-in `slicetrace.sglang.observability`, installed
under SGLang's module name before `req_time_stats.py` is imported. `run(scenario, workdir,
impl=...)` is the one switch; everything else (SGLang's stats classes, the scenario, the
normalization) stays the same, so the two runs' trees can be compared with `tree_of`.

Processes. One run is three processes, as in SGLang with `--tp 2`: a tokenizer, and a scheduler per
TP rank. Real processes rather than threads, because SGLang's module keeps process-wide state (the
tracer provider, which can be set once; the table of thread labels; the trace level), and because a
scheduler in SGLang only ever sees a request through pickled bytes. The tokenizer pickles each
request's `APIServerReqTimeStats` (real `pickle.dumps`) while its dispatch slice is open, as it
sends the request over ZMQ. With SGLang's default pickle IPC (SGLANG_USE_PICKLE_IPC=1) rank 0
unpickles it and `broadcast_pyobj` pickles what rank 0 got again for the other ranks, before any of
them builds its `Req`; with msgpack IPC the stats ride as the tokenizer's bytes (`wrap_as_pickle`)
and every rank loads those. `Scenario.pickle_ipc` picks one. The tokenizer stays up while the
schedulers run and finishes its requests afterwards, as the real one does when their last outputs
come back.

What is stubbed, and why (everything else is SGLang's file, unmodified):
    sglang.srt.runtime_context   imports msgspec and the server-argument tree; only
                                 `get_resources().trace_level` (a process-wide slot, None until
                                 `get_global_trace_level` seeds it from SGLANG_TRACE_LEVEL) is used.
    sglang.srt.utils             its `__init__` imports torch; `get_int_env_var` and
                                 `get_bool_env_var` are reimplemented with SGLang's semantics.
    sglang.srt.utils.poll_timer  imports msgspec; only built when metrics are on (never here).
    sglang.srt.disaggregation.utils.DisaggregationMode,
    sglang.srt.model_executor.forward_batch_info.ForwardMode
                                 their modules import torch; the two enums are small and copied by
                                 value (members, values, the `is_*` predicates the stats call).
    sglang.srt.observability.metrics_collector
                                 imports prometheus; only its three class names are imported.
    sglang.srt.managers.schedule_batch
                                 imports torch; `TraceReqContext.abort` imports `BaseFinishReason`
                                 from it whenever it is given abort info.
`sglang.srt.environ` (the `envs` table: SGLANG_TRACE_ASYNC, the OTLP batch settings) is SGLang's own
file: it is standard-library only.

Capture. SGLang's `process_tracing_init` builds its own `TracerProvider` (its 64-bit id generator,
its resource) with a `BatchSpanProcessor` over an OTLP exporter from `get_otlp_span_exporter`. There
is no collector here, so that one factory is replaced by one returning an `InMemorySpanExporter`:
the rest of their initialization runs as written, and at the end the provider is flushed and the
spans written to a JSON-lines file in the same shape our exporter writes (src/export/jsonl.rs).
With our module, `SLICETRACE_FILE` points each process at its own file instead.

Time. Every stats call that takes a timestamp gets one from the scenario: milliseconds after a base
ten minutes in the past, shared by all three processes. Calls that SGLang makes without one (the
scheduler's `rebuild_thread_context` on receipt, `abort()` on completion or teardown, the closing of
a thread span in `trace_req_finish`) read the live clock, so they land far from the scenario's
window and `normalize` reports them as `WALL`. The batch helpers `set_schedule_time_batch` and
`set_time_batch` read `time.perf_counter()` and `uuid4` themselves, so the drivers make the
per-request calls those helpers make, with the same arguments and attributes.

Run as a script: `python sglang_v2_harness.py show [--level N] [--impl sglang|slicetrace]` prints a
run's tree; the `child` role is what `run` starts in each process.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import gc
import importlib
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DIR_ENV = "SLICETRACE_SGLANG_V2_DIR"
FETCH_SCRIPT = "scripts/fetch-sglang-0.5.23"
# The files of the wheel loaded unmodified; scripts/fetch-sglang-0.5.23 unpacks the same list.
SGLANG_FILES = (
    "sglang/srt/environ.py",
    "sglang/srt/observability/req_time_stats.py",
    "sglang/srt/observability/trace_async.py",
    "sglang/srt/observability/trace.py",
)
SERVICE = "sglang-v2-harness"
# Scheduler thread labels as SGLang's run_scheduler_process passes them: TP rank, no DP rank (no DP
# controller), PP rank 0 (always passed, so every scheduler thread name carries " [PP 0] ").
SCHEDULER_LABEL = "Scheduler"
TOKENIZER_LABEL = "Tokenizer"
# Times further than this from a trace's start were read from the live clock (see "Time" above).
WALL_AFTER_MS = 60_000.0
WALL = "wall-clock"
BASE_AGE_S = 600


def sglang_dir() -> Path:
    """The unpacked SGLang 0.5.23 files: $SLICETRACE_SGLANG_V2_DIR, else target/sglang-0.5.23."""
    return Path(os.environ.get(DIR_ENV) or REPO / "target" / "sglang-0.5.23")


def check_sglang_dir(root) -> Path:
    """`root`, once every file the harness loads is found there; else a FileNotFoundError that
    says how to get them."""
    root = Path(root)
    missing = [f for f in SGLANG_FILES if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"SGLang 0.5.23's files are not under {root} (missing {', '.join(missing)}): run "
            f"`{FETCH_SCRIPT} <python> {root}` (python: a CPython 3.11, which the wheel is "
            f"built for), or point {DIR_ENV} at a directory that has them"
        )
    return root


# --------------------------------------------------------------------------------------------
# Loading SGLang's modules with the stubs they need
# --------------------------------------------------------------------------------------------


def _module(name: str, package_path: Optional[Sequence[str]] = None, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    if package_path is not None:
        # A package: submodule imports then look in sys.modules first and fail loudly for any
        # module neither stubbed nor unpacked.
        m.__path__ = list(package_path)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    parent, _, leaf = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], leaf, m)
    return m


class _Resources:
    """The one slot of SGLang's process resources that tracing uses."""

    trace_level: Any = None


_RESOURCES = _Resources()


def _get_resources() -> _Resources:
    return _RESOURCES


def _get_int_env_var(name: str, default: int = 0) -> int:
    # As SGLang's: unset, blank or unparsable gives the default.
    value = os.getenv(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _get_bool_env_var(name: str, default: str = "false") -> bool:
    # As SGLang's: "true"/"1" (any case) is True, anything else False, with a warning when the
    # value is neither truthy nor falsy.
    value = os.getenv(name, default).lower()
    if value not in ("true", "1", "false", "0"):
        logging.getLogger(__name__).warning("%s has unrecognized value %r: false", name, value)
    return value in ("true", "1")


class _PollTimer:
    """Same behaviour as SGLang's msgspec struct: times from the first blocked poll to the first
    ready one."""

    def __init__(self, started_at: Optional[float] = None):
        self.started_at = started_at

    @property
    def running(self) -> bool:
        return self.started_at is not None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started_at if self.running else 0.0

    def observe(self, ready: bool) -> float:
        if ready:
            elapsed = self.elapsed()
            self.started_at = None
            return elapsed
        if not self.running:
            self.started_at = time.perf_counter()
        return 0.0


class DisaggregationMode(enum.Enum):
    NULL = "null"
    PREFILL = "prefill"
    DECODE = "decode"


class ForwardMode(enum.IntEnum):
    # Same members in the same order as SGLang's, so the values match too.
    EXTEND = enum.auto()
    DECODE = enum.auto()
    MIXED = enum.auto()
    IDLE = enum.auto()
    TARGET_VERIFY = enum.auto()
    DRAFT_EXTEND_V2 = enum.auto()
    PREBUILT = enum.auto()
    SPLIT_PREFILL = enum.auto()
    DLLM_EXTEND = enum.auto()

    def is_extend(self, include_draft_extend_v2: bool = False) -> bool:
        return self in (
            ForwardMode.EXTEND,
            ForwardMode.MIXED,
            ForwardMode.TARGET_VERIFY,
            ForwardMode.SPLIT_PREFILL,
            ForwardMode.DLLM_EXTEND,
        ) or (include_draft_extend_v2 and self == ForwardMode.DRAFT_EXTEND_V2)

    def is_prefill(self, include_draft_extend_v2: bool = False) -> bool:
        return self.is_extend(include_draft_extend_v2=include_draft_extend_v2)

    def is_decode(self) -> bool:
        return self == ForwardMode.DECODE

    def is_mixed(self) -> bool:
        return self == ForwardMode.MIXED

    def is_idle(self) -> bool:
        return self == ForwardMode.IDLE

    def is_decode_or_idle(self) -> bool:
        return self in (ForwardMode.DECODE, ForwardMode.IDLE)

    def is_prebuilt(self) -> bool:
        return self == ForwardMode.PREBUILT


class BaseFinishReason:
    def to_json(self):
        raise NotImplementedError()


class FINISH_ABORT(BaseFinishReason):
    """As SGLang's: what a running request's `to_finish` holds after an AbortReq."""

    def __init__(self, message=None, status_code=None, err_type=None):
        self.message = message or "Aborted"
        self.status_code = status_code
        self.err_type = err_type

    def to_json(self):
        return {
            "type": "abort",
            "message": self.message,
            "status_code": self.status_code,
            "err_type": self.err_type,
        }


class _Collector:
    """A metrics collector class name; metrics are off in every scenario."""


def load(sglang_dir_path, trace_module: Optional[types.ModuleType] = None):
    """Makes SGLang's packages point at the unpacked files, installs the stubs, and imports
    `req_time_stats.py`. With `trace_module`, that module object is installed as
    `sglang.srt.observability.trace` first, so `req_time_stats.py` and `trace_async.py` import it
    instead of SGLang's file. Returns `(req_time_stats, trace_module_in_use)`.

    Once per process: SGLang's module (and the OpenTelemetry provider it sets) is process-wide."""
    root = check_sglang_dir(sglang_dir_path)
    if "sglang" in sys.modules:
        raise RuntimeError("sglang is already imported in this process; load() runs once")
    src = root / "sglang"
    _module("sglang", [str(src)])
    _module("sglang.srt", [str(src / "srt")])
    _module("sglang.srt.observability", [str(src / "srt" / "observability")])
    _module("sglang.srt.runtime_context", get_resources=_get_resources)
    _module(
        "sglang.srt.utils",
        [],
        get_int_env_var=_get_int_env_var,
        get_bool_env_var=_get_bool_env_var,
    )
    _module("sglang.srt.utils.poll_timer", PollTimer=_PollTimer)
    _module("sglang.srt.disaggregation", [])
    _module("sglang.srt.disaggregation.utils", DisaggregationMode=DisaggregationMode)
    _module("sglang.srt.model_executor", [])
    _module("sglang.srt.model_executor.forward_batch_info", ForwardMode=ForwardMode)
    _module("sglang.srt.managers", [])
    _module(
        "sglang.srt.managers.schedule_batch",
        BaseFinishReason=BaseFinishReason,
        FINISH_ABORT=FINISH_ABORT,
    )
    _module(
        "sglang.srt.observability.metrics_collector",
        EncoderMetricsCollector=type("EncoderMetricsCollector", (_Collector,), {}),
        SchedulerMetricsCollector=type("SchedulerMetricsCollector", (_Collector,), {}),
        TokenizerMetricsCollector=type("TokenizerMetricsCollector", (_Collector,), {}),
    )
    if trace_module is not None:
        sys.modules["sglang.srt.observability.trace"] = trace_module
        setattr(sys.modules["sglang.srt.observability"], "trace", trace_module)
    trace_mod = importlib.import_module("sglang.srt.observability.trace")
    rts = importlib.import_module("sglang.srt.observability.req_time_stats")
    return rts, trace_mod


# --------------------------------------------------------------------------------------------
# Implementations of the tracing module, and how each one's spans are captured
# --------------------------------------------------------------------------------------------


class SglangImpl:
    """SGLang's own `trace.py`, spans kept in memory and written out at the end."""

    name = "sglang"

    def trace_module(self) -> Optional[types.ModuleType]:
        return None

    def child_env(self, dump: Path) -> Dict[str, str]:
        return {}

    def start(self, trace_mod, service: str, dump: Path) -> None:
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.exporter = InMemorySpanExporter()
        trace_mod.get_otlp_span_exporter = lambda endpoint: self.exporter
        # An endpoint as the server would have; nothing connects to it.
        trace_mod.process_tracing_init("127.0.0.1:4317", service)

    def finish(self, trace_mod, dump: Path) -> None:
        from opentelemetry import trace as ot

        provider = ot.get_tracer_provider()
        if not provider.force_flush(10_000):
            raise RuntimeError("the tracer provider did not flush")
        write_jsonl(dump, [span_record(s) for s in self.exporter.get_finished_spans()])
        provider.shutdown()


class SlicetraceImpl:
    """Our drop-in, installed under SGLang's module name; it writes the JSON-lines file itself."""

    name = "slicetrace"
    module_name = "slicetrace.sglang.observability"

    def trace_module(self) -> Optional[types.ModuleType]:
        return importlib.import_module(self.module_name)

    def child_env(self, dump: Path) -> Dict[str, str]:
        return {"SLICETRACE_FILE": str(dump)}

    def start(self, trace_mod, service: str, dump: Path) -> None:
        trace_mod.process_tracing_init(None, service)

    def finish(self, trace_mod, dump: Path) -> None:
        import slicetrace

        slicetrace.shutdown()


IMPLS = {"sglang": SglangImpl, "slicetrace": SlicetraceImpl}


# --------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------

# Scheduler timeline, in ms after the base; a decode step k runs at DECODE_MS + k * STEP_MS.
RECV_MS = 10.0  # Req built from the received stats; set_scheduler_recv_time
WAIT_MS = 11.0  # _add_request_to_queue: set_wait_queue_entry_time
FORWARD_MS = 12.0  # get_new_batch_prefill: set_forward_entry_time (before the batch's schedule)
PREFILL_SCHEDULE_MS = 13.0  # get_next_batch_to_run: set_schedule_time_batch
PREFILL_CPU_MS = (14.0, 18.0)  # _pp_launch_batch: run_batch_cpu start, end
PREFILL_DONE_MS = 20.0  # process_batch_result_prefill: set_prefill_finished_time
FIRST_TOKEN_MS = 22.0  # the tokenizer sees the first output
DECODE_MS = 30.0
STEP_MS = 10.0
STEP_CPU_MS = (1.0, 5.0)  # run_batch_cpu within a step
STEP_RESULT_MS = 8.0  # process_batch_result_decode: set_last_decode_finish_time
OUTPUT_DELAY_MS = 2.0  # from a scheduler's last result to the tokenizer's set_finished_time


@dataclass(frozen=True)
class RequestPlan:
    """One request. `decode_steps`: decode steps it runs before it finishes by length.
    `cancel_at`: an AbortReq for it is handled while that decode step is in flight; the scheduler
    only sets `to_finish` (no trace call), so it finishes normally at that step's result.
    `teardown_at`: while that step is in flight the scheduler tears it down with
    `trace_ctx.abort(abort_info={"reason": ...})`, the call of its own abort paths (chunked prefill
    abort, priority preemption, admission rejections); the overlap loop then skips its result."""

    rid: str
    created_ms: float
    decode_steps: int
    cancel_at: Optional[int] = None
    teardown_at: Optional[int] = None

    @property
    def last_step(self) -> int:
        for step in (self.teardown_at, self.cancel_at):
            if step is not None:
                return step
        return self.decode_steps - 1

    @property
    def finish_reason(self) -> str:
        return "length" if self.cancel_at is None and self.teardown_at is None else "abort"

    @property
    def completion_tokens(self) -> int:
        # The prefill's token, then one per decode step whose result was processed.
        return 1 + self.last_step + (0 if self.teardown_at is not None else 1)

    @property
    def finished_ms(self) -> float:
        end = DECODE_MS + self.last_step * STEP_MS
        end += STEP_CPU_MS[1] if self.teardown_at is not None else STEP_RESULT_MS
        return end + OUTPUT_DELAY_MS


TEARDOWN_REASON = "torn down mid-decode"
# Root span names are " Req " + rid[:8] (a leading space: the role prefix of a unified server is
# empty), so the first eight characters are kept distinct.
DEFAULT_REQUESTS = (
    RequestPlan("req-done-0001", 0.0, decode_steps=3),
    RequestPlan("req-cncl-0002", 1.0, decode_steps=3, cancel_at=1),
    RequestPlan("req-abrt-0003", 2.0, decode_steps=3, teardown_at=1),
)


@dataclass(frozen=True)
class Scenario:
    """`env_level`: SGLANG_TRACE_LEVEL in every process (None: unset, SGLang's default 3).
    `scheduler_env_level`: SGLANG_TRACE_LEVEL in the schedulers when it should differ.
    `api_level`: the tokenizer calls `set_global_trace_level` with it after init, as the
    /set_trace_level endpoint does. `pp_launch`: the schedulers stamp run_batch_cpu around each
    forward, as SGLang's pipeline-parallel launch does (the only caller; level 4's one stage).
    `pickle_ipc`: how the stats reach the ranks other than 0 (see "Processes" above).
    `gateway`: a W3C `traceparent` the HTTP request came with, given to every request's
    context as its `external_trace_header`."""

    env_level: Optional[int] = 3
    scheduler_env_level: Optional[int] = None
    api_level: Optional[int] = None
    tp_size: int = 2
    pp_launch: bool = True
    pickle_ipc: bool = True
    requests: Tuple[RequestPlan, ...] = DEFAULT_REQUESTS
    gateway: Optional[str] = None

    @classmethod
    def at(cls, level: int, **kw) -> "Scenario":
        return cls(env_level=level, **kw)


class _Clock:
    """Scenario milliseconds as the `time.perf_counter()` values SGLang's stats take, such that
    their conversion to wall time (`convert_time_to_realtime_ns`, through the module's current
    calibration) gives base + ms in every process."""

    def __init__(self, rts, base_s: float):
        self.rts = rts
        self.base_s = base_s

    def __call__(self, ms: float) -> float:
        return self.base_s + ms / 1e3 - self.rts.global_diff_realtime_monotonic


def _span_attrs(plan: RequestPlan) -> Dict[str, Any]:
    # What TokenizerManager.convert_to_span_attrs gives for a generate request.
    return {
        "gen_ai.usage.completion_tokens": plan.completion_tokens,
        "gen_ai.usage.prompt_tokens": 5,
        "gen_ai.usage.cached_tokens": 0,
        "gen_ai.request.id": plan.rid,
        "gen_ai.request.max_tokens": plan.decode_steps + 1,
        "gen_ai.response.model": "harness-model",
        "gen_ai.response.finish_reasons": json.dumps([plan.finish_reason]),
    }


def _handoff_summary(state: Dict[str, Any]) -> Dict[str, Any]:
    ctx = state.get("trace_ctx") or {}
    carrier = ctx.get("root_span_context")
    last = ctx.get("last_span_context")
    return {
        "state_keys": sorted(state),
        "trace_ctx_keys": sorted(ctx),
        "tracing_enable": ctx.get("tracing_enable"),
        "is_copy": ctx.get("is_copy"),
        "trace_level": ctx.get("trace_level"),
        "carrier_keys": sorted(carrier) if isinstance(carrier, dict) else None,
        "carrier": carrier if isinstance(carrier, dict) else None,
        "last_span_context_keys": sorted(last) if isinstance(last, dict) else None,
        "last_span_id": f"{last['span_id']:016x}" if isinstance(last, dict) else None,
    }


def _tokenizer(cfg: Dict[str, Any], rts, trace_mod) -> None:
    work = Path(cfg["workdir"])
    plans = [RequestPlan(**p) for p in cfg["requests"]]
    if cfg["api_level"] is not None:
        trace_mod.set_global_trace_level(cfg["api_level"])
    trace_mod.trace_set_thread_info(TOKENIZER_LABEL)
    base_s = float(int(time.time()) - BASE_AGE_S)
    (work / "clock.json").write_text(json.dumps({"base_s": base_s}))
    t = _Clock(rts, base_s)
    stats = {}
    handoff = {}
    for plan in plans:
        # TokenizerManager._init_req_state, then _tokenize_one_request, then _send_one_request.
        s = rts.APIServerReqTimeStats(disagg_mode=rts.DisaggregationMode.NULL)
        header = {"traceparent": cfg["gateway"]} if cfg.get("gateway") else None
        s.init_trace_ctx(plan.rid, None, header)
        s.set_created_time(t(plan.created_ms))
        s.set_tokenize_finish_time(t(plan.created_ms + 2))
        s.set_api_server_dispatch_time(t(plan.created_ms + 3))
        # send_pyobj of the tokenized request, or wrap_pickle_fields in msgpack mode.
        protocol = pickle.HIGHEST_PROTOCOL if cfg["pickle_ipc"] else pickle.DEFAULT_PROTOCOL
        (work / f"handoff-{plan.rid}.pkl").write_bytes(pickle.dumps(s, protocol=protocol))
        handoff[plan.rid] = _handoff_summary(s.__getstate__())
        s.set_api_server_dispatch_finish_time(t(plan.created_ms + 4))
        stats[plan.rid] = s
    (work / "handoff.json").write_text(json.dumps(handoff, indent=1, sort_keys=True))
    print("dispatched", flush=True)
    if sys.stdin.readline().strip() != "finish":
        raise SystemExit("the tokenizer was not told to finish")
    for plan in plans:
        # _handle_batch_output: the first output, then the last one.
        s = stats[plan.rid]
        s.set_first_token_time(t(FIRST_TOKEN_MS))
        s.set_last_time(t(FIRST_TOKEN_MS))
        s.set_finished_time(t(plan.finished_ms), span_attrs=_span_attrs(plan))


@dataclass
class _Req:
    plan: RequestPlan
    stats: Any
    decoded: int = 0
    to_finish: bool = False
    finished: bool = False


def _scheduler(cfg: Dict[str, Any], rts, trace_mod) -> None:
    work = Path(cfg["workdir"])
    plans = [RequestPlan(**p) for p in cfg["requests"]]
    # run_scheduler_process: (label, tp_rank, dp_rank, pp_rank).
    trace_mod.trace_set_thread_info(SCHEDULER_LABEL, cfg["tp_rank"], None, 0)
    t = _Clock(rts, json.loads((work / "clock.json").read_text())["base_s"])
    decode, extend = rts.ForwardMode.DECODE, rts.ForwardMode.EXTEND
    relayed = cfg["pickle_ipc"] and cfg["tp_rank"] != 0
    received = {}
    for plan in plans:
        # recv_requests: rank 0 unpickles what the tokenizer sent; in pickle IPC mode the others
        # unpickle what broadcast_pyobj made of rank 0's copy.
        name = f"relay-{plan.rid}.pkl" if relayed else f"handoff-{plan.rid}.pkl"
        received[plan.rid] = pickle.loads((work / name).read_bytes())
    if cfg["pickle_ipc"] and cfg["tp_rank"] == 0:
        relay = {}
        for plan in plans:
            (work / f"relay-{plan.rid}.pkl").write_bytes(pickle.dumps(received[plan.rid]))
            relay[plan.rid] = _handoff_summary(received[plan.rid].__getstate__())
        (work / "relay.json").write_text(json.dumps(relay, indent=1, sort_keys=True))
        print("relayed", flush=True)
    reqs = []
    for plan in plans:
        # process_input_requests, then Req.__init__.
        stats = rts.SchedulerReqTimeStats.new_from_obj(received.pop(plan.rid))
        stats.set_metrics_collector(None)
        stats.set_scheduler_recv_time(t(RECV_MS))
        reqs.append(_Req(plan, stats))
    for r in reqs:
        r.stats.set_wait_queue_entry_time(t(WAIT_MS))

    def launch(batch, start_ms, end_ms):
        # _pp_launch_batch, around run_batch.
        if cfg["pp_launch"]:
            for r in batch:
                r.stats.set_run_batch_cpu_start_time(t(start_ms))
            for r in batch:
                r.stats.set_run_batch_cpu_end_time(t(end_ms), {"pp_mb_id": 0})

    for r in reqs:
        r.stats.set_forward_entry_time(t(FORWARD_MS))
    prefill_attrs = {"bid": "00000001", "batch_size": len(reqs), "forward_mode": "prefill"}
    for r in reqs:
        r.stats.set_last_scheduled_time(extend, t(PREFILL_SCHEDULE_MS), prefill_attrs)
    launch(reqs, *PREFILL_CPU_MS)
    for r in reqs:
        r.stats.set_prefill_finished_time(t(PREFILL_DONE_MS))

    running = list(reqs)
    step = 0
    while running:
        at = DECODE_MS + step * STEP_MS
        attrs = {"bid": f"{step + 2:08x}", "batch_size": len(running), "forward_mode": "decode"}
        for r in running:
            r.stats.set_last_scheduled_time(decode, t(at), attrs)
        launch(running, at + STEP_CPU_MS[0], at + STEP_CPU_MS[1])
        # Inputs handled while this step is in flight.
        for r in running:
            if r.plan.cancel_at == step:
                r.to_finish = True
            if r.plan.teardown_at == step:
                r.stats.trace_ctx.abort(abort_info={"reason": TEARDOWN_REASON})
                r.finished = True
        for r in running:
            if r.finished:
                continue
            r.stats.set_last_decode_finish_time(t(at + STEP_RESULT_MS))
            r.decoded += 1
            if r.to_finish or r.decoded == r.plan.decode_steps:
                r.stats.set_completion_time(t(at + STEP_RESULT_MS))
                r.finished = True
        running = [r for r in running if not r.finished]
        step += 1


def _child(cfg_path: str) -> None:
    cfg = json.loads(Path(cfg_path).read_text())
    impl = IMPLS[cfg["impl"]]()
    rts, trace_mod = load(cfg["sglang_dir"], impl.trace_module())
    dump = Path(cfg["dump"])
    impl.start(trace_mod, SERVICE, dump)
    if cfg["role"] == "tokenizer":
        _tokenizer(cfg, rts, trace_mod)
    else:
        _scheduler(cfg, rts, trace_mod)
    # Whatever SGLang's __del__ does with a context still open is part of the trace.
    gc.collect()
    impl.finish(trace_mod, dump)


# --------------------------------------------------------------------------------------------
# Running a scenario
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one run exported (every process's spans, as JSON-lines dicts), what the tokenizer
    pickled for each request (`handoff`, by rid) and, in pickle IPC mode, what rank 0 pickled
    again for the other ranks (`relay`, likewise; None otherwise). Both hold `_handoff_summary`s
    of the pickled state: its keys, the trace context's keys, the carrier, the linked span id."""

    scenario: Scenario
    impl: str
    spans: List[Dict[str, Any]]
    handoff: Dict[str, Dict[str, Any]]
    relay: Optional[Dict[str, Dict[str, Any]]]
    workdir: Path

    def normalized(self, **kw) -> List[Dict[str, Any]]:
        return normalize(self.spans, **kw)

    def tree(self, **kw) -> List[Dict[str, Any]]:
        return tree_of(self.normalized(**kw))


def _child_env(scenario: Scenario, role: str, extra: Dict[str, str]) -> Dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "SGLANG_", "SGL_", "SLICETRACE_"))
    }
    level = scenario.env_level
    if role != "tokenizer" and scenario.scheduler_env_level is not None:
        level = scenario.scheduler_env_level
    if level is not None:
        env["SGLANG_TRACE_LEVEL"] = str(level)
    env.update(extra)
    return env


def run(
    scenario: Scenario,
    workdir,
    impl: str = "sglang",
    sglang_dir_path=None,
    python: str = sys.executable,
    timeout: float = 120.0,
    scheduler_impl: Optional[str] = None,
) -> Run:
    """Runs `scenario` with the tracing module `impl` (a key of IMPLS): the tokenizer, then one
    scheduler per TP rank (concurrently, once rank 0 has relayed the requests in pickle IPC
    mode), then the tokenizer's finish. The schedulers run `scheduler_impl` when given (a mixed
    deployment). Raises with the failing process's log if one exits non-zero."""
    root = check_sglang_dir(sglang_dir_path or sglang_dir())
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)

    procs, logs = [], []

    def start(role: str, **extra_cfg) -> Tuple[subprocess.Popen, Path]:
        dump = work / f"spans-{role}.jsonl"
        role_impl = impl if role == "tokenizer" else (scheduler_impl or impl)
        factory = IMPLS[role_impl]
        cfg = {
            "role": role,
            "impl": role_impl,
            "sglang_dir": str(root),
            "workdir": str(work),
            "dump": str(dump),
            "api_level": scenario.api_level,
            "pp_launch": scenario.pp_launch,
            "pickle_ipc": scenario.pickle_ipc,
            "gateway": scenario.gateway,
            "requests": [dataclasses.asdict(p) for p in scenario.requests],
            **extra_cfg,
        }
        cfg_path = work / f"{role}.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        log = open(work / f"{role}.log", "w")
        logs.append(log)
        proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "child", str(cfg_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=_child_env(scenario, role, factory().child_env(dump)),
        )
        procs.append(proc)
        return proc, dump

    def failed(role: str, what: str) -> RuntimeError:
        text = (work / f"{role}.log").read_text()
        return RuntimeError(f"{role} {what}; its log ({work / (role + '.log')}):\n{text}")

    scheds = []
    try:
        tok, tok_dump = start("tokenizer")
        line = tok.stdout.readline().strip()
        if line != "dispatched":
            tok.wait(timeout)
            raise failed("tokenizer", f"did not dispatch (said {line!r})")
        for rank in range(scenario.tp_size):
            role = f"scheduler-tp{rank}"
            p, dump = start(role, tp_rank=rank)
            scheds.append((role, p, dump))
            if rank == 0 and scenario.pickle_ipc:
                line = p.stdout.readline().strip()
                if line != "relayed":
                    p.wait(timeout)
                    raise failed(role, f"did not relay the requests (said {line!r})")
        for role, p, _ in scheds:
            p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise failed(role, f"exited with {p.returncode}")
        tok.communicate("finish\n", timeout=timeout)
        if tok.returncode != 0:
            raise failed("tokenizer", f"exited with {tok.returncode}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    spans = read_jsonl(tok_dump)
    for _, _, dump in scheds:
        spans += read_jsonl(dump)
    handoff = json.loads((work / "handoff.json").read_text())
    relay_file = work / "relay.json"
    relay = json.loads(relay_file.read_text()) if relay_file.exists() else None
    return Run(scenario, impl, spans, handoff, relay, work)


# --------------------------------------------------------------------------------------------
# Span records and their normalized form
# --------------------------------------------------------------------------------------------

_NO_PARENT = "0" * 16


def write_jsonl(path: Path, records: List[Dict[str, Any]]) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    """The spans of a JSON-lines file (ours, or a harness dump); none for a missing file."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plain(value):
    # Sequence attributes come back from the SDK as tuples; JSON has lists.
    return list(value) if isinstance(value, tuple) else value


def span_record(span) -> Dict[str, Any]:
    """An OpenTelemetry SDK ReadableSpan as the dict one line of our JSON-lines file holds."""
    ctx = span.context
    code = span.status.status_code.name.lower()
    record = {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else _NO_PARENT,
        "name": span.name,
        "start_unix_nano": span.start_time,
        "end_unix_nano": span.end_time,
        "status": code,
    }
    if code == "error":
        record["status_message"] = span.status.description or ""
    record.update(
        attributes={k: _plain(v) for k, v in (span.attributes or {}).items()},
        events=[
            {
                "name": e.name,
                "time_unix_nano": e.timestamp,
                "attributes": {k: _plain(v) for k, v in (e.attributes or {}).items()},
            }
            for e in span.events
        ],
        links=[
            {"trace_id": f"{l.context.trace_id:032x}", "span_id": f"{l.context.span_id:016x}"}
            for l in span.links
        ],
        kind=span.kind.name.lower(),
        scope=span.instrumentation_scope.name if span.instrumentation_scope else "",
        service=str(span.resource.attributes.get("service.name", "")),
    )
    return record


def _iso_ns(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    dt = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def _hex_id(text: Optional[str], width: int) -> str:
    return format(int(text, 16), f"0{width}x") if text else "0" * width


def _from_otel_json(d: Dict[str, Any]) -> Dict[str, Any]:
    # ReadableSpan.to_json(): hex ids with 0x, ISO times (microseconds), enum names in text.
    status = d.get("status") or {}
    code = str(status.get("status_code", "UNSET")).lower()
    record = {
        "trace_id": _hex_id(d["context"]["trace_id"], 32),
        "span_id": _hex_id(d["context"]["span_id"], 16),
        "parent_span_id": _hex_id(d.get("parent_id"), 16),
        "name": d["name"],
        "start_unix_nano": _iso_ns(d.get("start_time")),
        "end_unix_nano": _iso_ns(d.get("end_time")),
        "status": code,
    }
    if code == "error":
        record["status_message"] = status.get("description") or ""
    record.update(
        attributes=dict(d.get("attributes") or {}),
        events=[
            {
                "name": e["name"],
                "time_unix_nano": _iso_ns(e.get("timestamp")),
                "attributes": dict(e.get("attributes") or {}),
            }
            for e in d.get("events") or []
        ],
        links=[
            {
                "trace_id": _hex_id(l["context"]["trace_id"], 32),
                "span_id": _hex_id(l["context"]["span_id"], 16),
            }
            for l in d.get("links") or []
        ],
        kind=str(d.get("kind", "SpanKind.INTERNAL")).rpartition(".")[2].lower(),
        scope="",
        service=str(((d.get("resource") or {}).get("attributes") or {}).get("service.name", "")),
    )
    return record


def as_record(span) -> Dict[str, Any]:
    """Any accepted form of a span as a JSON-lines dict: a ReadableSpan, the dict of
    `ReadableSpan.to_json()`, or a JSON-lines dict (ours, or a harness dump) as it is."""
    if isinstance(span, dict):
        return _from_otel_json(span) if "context" in span else span
    return span_record(span)


# Thread span names end "(host:<first 8 of the machine id> | pid:<native thread id>)".
_THREAD_SUFFIX = re.compile(r"\(host:[^ |)]* \| pid:\d+\)$")
THREAD_SUFFIX = "(host:<host> | pid:<pid>)"
# Thread span attributes that differ by machine and by run (the same values the name suffix holds).
DROPPED_ATTRIBUTES = frozenset({"host_id", "pid"})


def normalize_name(name: str) -> str:
    return _THREAD_SUFFIX.sub(THREAD_SUFFIX, name)


def _value(v):
    # Latencies are differences of perf_counter() floats: their last digits vary by run.
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return [_value(x) for x in v]
    return v


def _attrs(attrs: Optional[Dict[str, Any]], drop=frozenset()) -> Dict[str, Any]:
    return {k: _value(v) for k, v in sorted((attrs or {}).items()) if k not in drop}


def normalize(spans, times: bool = True, wall_after_ms: float = WALL_AFTER_MS) -> List[dict]:
    """The spans (any mix of the forms `as_record` takes) as dicts free of ids and wall-clock
    times, one per span:

        name        the span's name, a thread span's "(host:… | pid:…)" replaced by THREAD_SUFFIX
        path        names from the trace's root to this span; a name shared by siblings gets
                    "[i]", i its rank among them by start (then end) time
        parent      path of the parent span ([] for a root; ["<not exported>"] when the parent
                    is not among the spans)
        links       path of each linked span, in order (["<not exported>"] for one not among them)
        events      name, attributes and `ms` (see below) of each event, in recorded order
        attributes  all but DROPPED_ATTRIBUTES (host id and thread id: machine and run specific);
                    floats rounded to 6 places (seconds: microseconds)
        status      {"code": "UNSET"|"OK"|"ERROR", "description": text or None}
        kind, scope, service
        start_ms, end_ms (with `times`)

    Times (`ms`, `start_ms`, `end_ms`) are milliseconds after the start of the trace's root span
    (without it among the spans, the trace's earliest start), rounded to 0.01; a time more than
    `wall_after_ms` away was read from the live clock rather than given by the scenario, and is
    WALL. Dropped: trace, span and parent ids (random; replaced by
    paths), the links' trace ids (the path says which trace), and absolute times."""
    records = [as_record(s) for s in spans]
    by_id = {(r["trace_id"], r["span_id"]): r for r in records}
    kids: Dict[Any, List[dict]] = {}
    roots = []
    for r in records:
        key = (r["trace_id"], r.get("parent_span_id") or _NO_PARENT)
        if key in by_id:
            kids.setdefault(key, []).append(r)
        else:
            roots.append(r)
    orphans = [r for r in roots if r.get("parent_span_id") not in (None, "", _NO_PARENT)]
    orphan_ids = {id(r) for r in orphans}
    starts: Dict[str, int] = {}
    for r in roots:
        t, start = r["trace_id"], r.get("start_unix_nano")
        if start and id(r) not in orphan_ids:
            starts[t] = min(starts.get(t, start), start)
    # A trace whose root span is not among the spans counts from its earliest start.
    earliest: Dict[str, int] = {}
    for r in records:
        t, start = r["trace_id"], r.get("start_unix_nano")
        if start and t not in starts:
            earliest[t] = min(earliest.get(t, start), start)
    starts.update(earliest)

    paths: Dict[Any, List[str]] = {}

    def order(group: List[dict]) -> List[dict]:
        return sorted(group, key=lambda r: (r.get("start_unix_nano") or 0, r["end_unix_nano"] or 0))

    def name_group(group: List[dict], parent_path: List[str]) -> None:
        by_name: Dict[str, List[dict]] = {}
        for r in group:
            by_name.setdefault(normalize_name(r["name"]), []).append(r)
        for name, same in by_name.items():
            for i, r in enumerate(order(same)):
                label = name if len(same) == 1 else f"{name}[{i}]"
                path = parent_path + [label]
                paths[(r["trace_id"], r["span_id"])] = path
                name_group(kids.get((r["trace_id"], r["span_id"]), []), path)

    name_group([r for r in roots if id(r) not in orphan_ids], [])
    name_group(orphans, ["<not exported>"])

    def ms(trace_id: str, ns: Optional[int]):
        base = starts.get(trace_id)
        if not ns or base is None:
            return None
        off = (ns - base) / 1e6
        return WALL if abs(off) > wall_after_ms else round(off, 2)

    out = []
    for r in records:
        key = (r["trace_id"], r["span_id"])
        n = {
            "name": normalize_name(r["name"]),
            "path": paths[key],
            "parent": paths[key][:-1],
            "links": [
                paths.get((l.get("trace_id", r["trace_id"]), l["span_id"]), ["<not exported>"])
                for l in r.get("links") or []
            ],
            "events": [
                dict(
                    name=e["name"],
                    attributes=_attrs(e.get("attributes")),
                    **({"ms": ms(r["trace_id"], e.get("time_unix_nano"))} if times else {}),
                )
                for e in r.get("events") or []
            ],
            "attributes": _attrs(r.get("attributes"), DROPPED_ATTRIBUTES),
            "status": {
                "code": str(r.get("status", "unset")).upper(),
                "description": r.get("status_message") or None,
            },
            "kind": r.get("kind", "internal"),
            "scope": r.get("scope", ""),
            "service": r.get("service", ""),
        }
        if times:
            n["start_ms"] = ms(r["trace_id"], r.get("start_unix_nano"))
            n["end_ms"] = ms(r["trace_id"], r.get("end_unix_nano"))
        out.append(n)
    out.sort(key=lambda n: n["path"])
    return out


def _sort_key(node: Dict[str, Any]):
    # Same-named siblings (decode_loop, run_batch_cpu) read best in time order; the content
    # breaks ties, and orders them when times are off or read from the clock.
    start = node.get("start_ms")
    timed = isinstance(start, (int, float))
    return (node["name"], not timed, start if timed else 0, json.dumps(node, sort_keys=True))


def tree_of(normalized: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The normalized spans as nested dicts (each with its "children"), siblings sorted by name
    then content, so two runs' trees compare with == and pytest diffs them field by field."""
    nodes = {}
    for n in normalized:
        node = {k: v for k, v in n.items() if k not in ("path", "parent")}
        node["children"] = []
        nodes[tuple(n["path"])] = node
    top = []
    for n in normalized:
        parent = nodes.get(tuple(n["parent"]))
        (parent["children"] if parent is not None else top).append(nodes[tuple(n["path"])])

    def settle(group):
        for node in group:
            settle(node["children"])
        group.sort(key=_sort_key)

    settle(top)
    return top


def format_tree(tree: List[Dict[str, Any]]) -> str:
    """An indented text of `tree_of`'s result, for reading a run or diffing two."""
    lines = []

    def fmt_ms(node):
        if "start_ms" not in node:
            return ""
        return f" [{node['start_ms']} .. {node['end_ms']}]"

    def walk(node, depth):
        pad = "  " * depth
        status = node["status"]
        flag = "" if status["code"] == "UNSET" else f" {status['code']}"
        if status["description"]:
            flag += f"({status['description']})"
        lines.append(f"{pad}{node['name']!r}{fmt_ms(node)}{flag}")
        if node["attributes"]:
            lines.append(f"{pad}    attrs {json.dumps(node['attributes'], sort_keys=True)}")
        for link in node["links"]:
            lines.append(f"{pad}    link -> {' / '.join(repr(p) for p in link)}")
        for e in node["events"]:
            when = f" @{e['ms']}" if "ms" in e else ""
            lines.append(f"{pad}    event {e['name']}{when} {json.dumps(e['attributes'])}")
        for child in node["children"]:
            walk(child, depth + 1)

    for node in tree:
        walk(node, 0)
    return "\n".join(lines)


def find(normalized: List[Dict[str, Any]], name: str, under: Optional[str] = None) -> List[dict]:
    """The normalized spans named `name` (thread names with THREAD_SUFFIX), optionally only those
    with a span named `under` on their path (an exact name, or a prefix ending in "*")."""

    def matches(label: str, pattern: str) -> bool:
        label = re.sub(r"\[\d+\]$", "", label)
        return label.startswith(pattern[:-1]) if pattern.endswith("*") else label == pattern

    found = [n for n in normalized if matches(n["path"][-1], name)]
    if under is not None:
        found = [n for n in found if any(matches(p, under) for p in n["parent"])]
    return found


def thread_name(label: str, tp_rank: Optional[int] = None, pp_rank: Optional[int] = None) -> str:
    """A thread span's normalized name as SGLang 0.5.23 builds it: each rank part is " [TP n] "
    with a space on both sides, so two of them meet with two spaces."""
    name = label
    if tp_rank is not None:
        name += f" [TP {tp_rank}] "
    if pp_rank is not None:
        name += f" [PP {pp_rank}] "
    return name + THREAD_SUFFIX


def scheduler_name(tp_rank: int) -> str:
    return thread_name(SCHEDULER_LABEL, tp_rank, 0)


def root_name(rid: str) -> str:
    return f" Req {rid[:8]}"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    child = sub.add_parser("child", help="one process of a run (started by run())")
    child.add_argument("config")
    show = sub.add_parser("show", help="run a scenario and print its normalized tree")
    show.add_argument("--level", type=int, default=3)
    show.add_argument("--impl", choices=sorted(IMPLS), default="sglang")
    show.add_argument("--no-times", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "child":
        _child(args.config)
        return
    with tempfile.TemporaryDirectory() as work:
        r = run(Scenario.at(args.level), work, impl=args.impl)
        print(format_tree(r.tree(times=not args.no_times)))
        print(json.dumps(r.handoff, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
