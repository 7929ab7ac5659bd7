"""SGLang 0.5.10 and later's request tracing (``sglang.srt.observability.trace``): the same
names, signatures and carrier dict, recorded natively.

A request's trace is a :class:`TraceReqContext` object. It is a plain Python class, as SGLang's
is, because SGLang rebuilds a received one with ``object.__new__`` and ``__setstate__``; it
holds the request id, the trace level it was made with, the slices open on its thread and the
events waiting for a slice, and records through the extension on the calling thread.

What differs from SGLang's module is listed in ``docs/python.md``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from slicetrace import _native
from slicetrace._native import _event_to, _slice_after
from slicetrace._native import trace_event as _event
from slicetrace._native import trace_get_proc_propagate_context as _context_here
from slicetrace._native import trace_set_proc_propagate_context as _continue_from
from slicetrace._native import trace_slice_end as _slice_end
from slicetrace._native import trace_slice_start as _slice_start
from slicetrace.sglang.tracing import SpanAttributes

logger = logging.getLogger(__name__)

#: The W3C headers a gateway may send; what :func:`extract_trace_headers` keeps.
TRACE_HEADERS = ["traceparent", "tracestate"]

# Module state SGLang's own module has, read by code written against it (its async variant
# reads these by attribute at call time).
opentelemetry_imported = True
opentelemetry_initialized = False
tracer = None
_trace_context_propagator = None
#: Modules allowed to trace (``--trace-modules``); ``None``: every module.
global_trace_modules: Optional[List[str]] = None
#: Called with a :class:`TraceThreadInfo` when a thread first names itself.
_on_thread_info_set = None

_process_level: Optional[int] = None


def get_cur_time_ns() -> int:
    return time.time_ns()


def extract_trace_headers(headers: Mapping[str, str]) -> Optional[Dict]:
    """The W3C trace headers among ``headers``, for ``TraceReqContext(external_trace_header=)``."""
    return {h: headers[h] for h in TRACE_HEADERS if h in headers}


def get_global_trace_level() -> int:
    """The level new contexts take: set by :func:`set_global_trace_level`, else
    ``SGLANG_TRACE_LEVEL`` (default 3)."""
    global _process_level
    if _process_level is None:
        try:
            _process_level = int(os.environ.get("SGLANG_TRACE_LEVEL", "3"))
        except ValueError:
            logger.warning("SGLANG_TRACE_LEVEL is not an integer; the level is 3")
            _process_level = 3
    return _process_level


def set_global_trace_level(level: int) -> None:
    """The level for contexts made from now on; a context keeps the level it was made with."""
    global _process_level
    if not isinstance(level, int) or isinstance(level, bool):
        raise TypeError(f"set_global_trace_level() argument 'level' must be int, not {type(level).__qualname__}")
    _process_level = level


def get_global_tracing_enabled() -> bool:
    return _native.is_tracing_enabled()


def fastapi_telemetry_disabled_kwargs() -> Dict[str, Any]:
    """Keyword arguments for ``FastAPI(...)`` that keep it from tracing every HTTP request itself."""
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def process_tracing_init(otlp_endpoint, server_name, trace_modules: Optional[str] = None) -> None:
    """Starts tracing in this process; a second call does nothing. ``trace_modules`` is the
    comma-separated ``--trace-modules`` list. The service is ``server_name``, else
    ``OTEL_SERVICE_NAME``, else ``sglang``."""
    global opentelemetry_initialized, global_trace_modules
    if opentelemetry_initialized and _native.is_tracing_enabled():
        return
    if trace_modules is not None:
        global_trace_modules = [m.strip() for m in trace_modules.split(",") if m.strip()]
    # A session started by the 0.5.9 module's init, or at a fork, is this process's already.
    if not _native.is_tracing_enabled():
        service = server_name or os.environ.get("OTEL_SERVICE_NAME", "sglang")
        _native.process_tracing_init(otlp_endpoint, service)
    opentelemetry_initialized = True


@dataclass
class TraceThreadInfo:
    host_id: str
    pid: int
    thread_label: str
    tp_rank: Optional[int]
    dp_rank: Optional[int]
    pp_rank: Optional[int]


@dataclass
class TraceEvent:
    event_name: str
    ts: int
    attrs: Dict[str, Any]


@dataclass
class TraceSliceContext:
    """A slice recorded after the fact by :meth:`TraceReqContext.trace_slice`."""

    slice_name: str
    start_time_ns: int
    end_time_ns: Optional[int] = None
    span: Any = None
    level: int = 1
    attrs: Optional[Dict[str, Any]] = None
    events: Optional[List[TraceEvent]] = None


#: The threads that named themselves, by native thread id.
threads_info: Dict[int, TraceThreadInfo] = {}
_MAX_THREADS_INFO = 4096


def _host_id() -> str:
    try:
        with open("/etc/machine-id") as f:
            text = f.read().strip()
        if text:
            return text
    except OSError:
        pass
    return os.uname().nodename


def trace_set_thread_info(
    thread_label: str,
    tp_rank: Optional[int] = None,
    dp_rank: Optional[int] = None,
    pp_rank: Optional[int] = None,
) -> None:
    """Names the calling thread: its thread spans read ``"{label} [TP n]  [PP n]  [DP n]
    (host:… | pid:…)"``, with each rank given. Works before init; the latest call applies to
    thread spans opened after it."""
    _native._set_thread_info(thread_label, tp_rank, dp_rank, pp_rank)
    tid = threading.get_native_id()
    first = tid not in threads_info
    if first and len(threads_info) >= _MAX_THREADS_INFO:
        # Thread churn: forget the threads that are gone, so the table stays bounded.
        alive = {t.native_id for t in threading.enumerate()}
        for gone in [t for t in threads_info if t not in alive]:
            del threads_info[gone]
    threads_info[tid] = TraceThreadInfo(_host_id(), tid, thread_label, tp_rank, dp_rank, pp_rank)
    if first and _on_thread_info_set is not None:
        _on_thread_info_set(threads_info[tid])


def _name_thread_if_unnamed() -> None:
    # As SGLang: a thread that never named itself is traced as "unknown".
    if threading.get_native_id() not in threads_info:
        trace_set_thread_info("unknown")


class TraceReqContext:
    """One request's trace on one thread: made where the request starts, sent to other
    processes pickled (SGLang's carrier dict) and to other threads by :meth:`copy_for_thread`,
    continued there by :meth:`rebuild_thread_context`. Calls whose level is above the level
    the context was made with record nothing. Events wait for their slice in the extension's
    background thread, not in the context."""

    def __init__(
        self,
        rid,
        bootstrap_room=None,
        role="unified",
        module_name="",
        external_trace_header: Optional[Dict[str, str]] = None,
        trace_level: Optional[int] = None,
    ):
        self.rid = str(rid)
        self.trace_level = trace_level if trace_level is not None else get_global_trace_level()
        self.tracing_enable = _native.is_tracing_enabled() and self.trace_level > 0
        # Only contexts that name a module are filtered; the default empty name always traces.
        if module_name and global_trace_modules is not None and module_name not in global_trace_modules:
            self.tracing_enable = False
        if not self.tracing_enable:
            return
        self.start_time_ns: Optional[int] = None
        self.bootstrap_room = bootstrap_room
        self.role = role
        self.module_name = module_name
        self.is_copy = False
        self.external_trace_header = external_trace_header
        self.pid = threading.get_native_id()
        self._reset_thread()
        self._root = False
        # The context to continue from (a received or copied one, until rebuilt), or the last
        # one read here, for a __getstate__ on a thread where the request is not known.
        self._carrier: Optional[Dict[str, Any]] = None

    def _reset_thread(self) -> None:
        self._thread = False
        self._stack: List[tuple] = []

    def is_tracing_enabled(self) -> bool:
        return self.tracing_enable

    def _skip(self, level=None) -> bool:
        return not self.tracing_enable or not self._thread or (bool(level) and level > self.trace_level)

    # -- the request ---------------------------------------------------------------------

    def trace_req_start(self, ts: Optional[int] = None) -> None:
        """Opens the request span ``"{role} Req {rid[:8]}"`` (role ``unified``: none), under the
        gateway's span when ``external_trace_header`` has one, and this thread's span."""
        if not self.tracing_enable:
            return
        ts = ts or time.time_ns()
        self.start_time_ns = ts
        attrs = {"module": f"sglang::{self.module_name}"}
        if self.bootstrap_room:
            attrs["bootstrap_room"] = hex(self.bootstrap_room)
        role = "" if self.role == "unified" else self.role
        _name_thread_if_unnamed()
        _native._req_start(self.rid, role, ts, self.external_trace_header, attrs)
        self._root = True
        self._reset_thread()
        self._thread = True
        self.pid = threading.get_native_id()
        self._carrier = _context_here(self.rid)

    def trace_req_finish(self, ts: Optional[int] = None, attrs: Optional[Dict[str, Any]] = None) -> None:
        """Ends this thread's span (as :meth:`abort` without a reason), then the request span at
        ``ts``, with ``attrs``. Only where the request started."""
        if not self.tracing_enable or not self._root:
            return
        ts = ts or time.time_ns()
        self.abort()
        _native.trace_req_finish(self.rid, ts, attrs)
        self._root = False

    def trace_set_root_attrs(self, attrs: Dict[str, Any]) -> None:
        if self.tracing_enable and self._root:
            _native._add_attrs(self.rid, attrs, False)

    def trace_set_thread_attrs(self, attrs: Dict[str, Any]) -> None:
        if not self._skip():
            _native._add_attrs(self.rid, attrs, True)

    # -- slices and events -----------------------------------------------------------------

    def trace_slice_start(self, name: str, level: int, ts: Optional[int] = None) -> None:
        """Opens a slice under this thread's innermost open one (else the thread span); a
        top-level one links to the slice before it."""
        if self._skip(level):
            return
        _slice_start(name, self.rid, ts or time.time_ns())
        self._stack.append((name, level))

    def trace_slice_end(
        self,
        name: str,
        level: int,
        ts: Optional[int] = None,
        attrs: Optional[Dict[str, Any]] = None,
        thread_finish_flag: bool = False,
    ) -> None:
        """Ends the innermost open slice, with the cached events its interval holds and
        ``attrs``; with ``thread_finish_flag`` the thread span ends too. An end that does not
        name the open slice still ends it, marked in error (SGLang leaves that slice unended,
        so it is never exported)."""
        if self._skip(level):
            return
        if not self._stack:
            logger.warning("trace_slice_end(%r): no slice is open", name)
            return
        open_name, open_level = self._stack[-1]
        if open_name != name or open_level != level:
            logger.warning(
                "trace_slice_end(%r, %r) ends the open slice %r of level %r", name, level, open_name, open_level
            )
        _slice_end(name, self.rid, ts or time.time_ns(), attrs)
        # Popped once recorded: an end refused for its arguments leaves the slice open.
        self._stack.pop()
        if thread_finish_flag:
            self.abort(ts)

    def trace_slice(self, slice: TraceSliceContext, thread_finish_flag: bool = False) -> None:
        """Records a slice that has already ended, with its own start, end, attributes and
        events, and the cached events its interval holds."""
        level = slice.level
        if not self.tracing_enable or not self._thread or (level and level > self.trace_level):
            return
        end = slice.end_time_ns or time.time_ns()
        if slice.events:
            _slice_start(slice.slice_name, self.rid, slice.start_time_ns)
            for e in slice.events:
                _event(e.event_name, self.rid, e.ts, e.attrs)
            _slice_end(slice.slice_name, self.rid, end, slice.attrs)
        else:
            _slice_after(slice.slice_name, self.rid, slice.start_time_ns, end, slice.attrs)
        if thread_finish_flag:
            self.abort(end)

    def trace_event(self, name: str, level: int, ts: Optional[int] = None, attrs: Dict[str, Any] = None) -> None:
        """An event for the next slice to end on this thread whose interval holds ``ts`` (else
        the thread span, when that ends), as SGLang's cached events. At most 128 wait per
        thread span; more are counted in its dropped events."""
        if not self.tracing_enable or not self._thread or (level and level > self.trace_level):
            return
        _event_to(name, self.rid, ts or time.time_ns(), attrs, True)

    def abort(self, ts=None, abort_info: Optional[Dict] = None) -> None:
        """Ends this thread's open slices and its thread span at ``ts``; with ``abort_info``
        (a dict, or an object with ``to_json()``) the thread span is in error and carries it."""
        if self._skip():
            return
        ts = ts or time.time_ns()
        if abort_info is not None and not isinstance(abort_info, dict) and hasattr(abort_info, "to_json"):
            abort_info = abort_info.to_json()
        _native._thread_end(self.rid, ts, bool(abort_info), abort_info or None)
        self._reset_thread()

    def flush(self) -> None:
        pass

    def __del__(self):
        try:
            if getattr(self, "tracing_enable", False) and getattr(self, "_thread", False):
                self.abort(abort_info={"reason": "have unclosed span, auto closed"})
        except Exception:
            # At interpreter exit the extension may be gone already; nothing can be recorded.
            pass

    # -- hand-offs -------------------------------------------------------------------------

    def _current_context(self) -> Optional[Dict[str, Any]]:
        # Only the thread that holds the request's thread span knows its latest slice.
        if self._thread and self.pid == threading.get_native_id():
            here = _context_here(self.rid)
            if here is not None:
                self._carrier = here
        return self._carrier

    def __getstate__(self) -> Dict[str, Any]:
        """SGLang's carrier dict, plus our own encoding of the context under ``slicetrace``."""
        if not self.tracing_enable:
            return {"tracing_enable": False}
        ctx = self._current_context()
        if ctx is None:
            return {"tracing_enable": False}
        prev = ctx.get("prev_span")
        state = {
            "tracing_enable": True,
            "rid": self.rid,
            "bootstrap_room": self.bootstrap_room,
            "start_time_ns": self.start_time_ns,
            "role": self.role,
            "trace_level": self.trace_level,
            "module_name": self.module_name,
            "is_copy": self.is_copy,
            "pid": self.pid,
            "thread_context": None,
            "root_span": None,
            "last_span_context": (
                {"span_id": prev["span_id"], "trace_id": prev["trace_id"]} if isinstance(prev, dict) else None
            ),
            "root_span_context": dict(ctx["root_span"]),
        }
        if "slicetrace" in ctx:
            state["slicetrace"] = ctx["slicetrace"]
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Takes a carrier dict made by :meth:`__getstate__` here or by SGLang's own module.
        The thread continues the request at :meth:`rebuild_thread_context`."""
        if not isinstance(state, dict):
            raise TypeError(f"TraceReqContext state must be a dict, not {type(state).__qualname__}")
        self.__dict__.update(state)
        self.tracing_enable = bool(state.get("tracing_enable")) and _native.is_tracing_enabled()
        if not self.tracing_enable:
            return
        self.rid = str(state.get("rid"))
        self.trace_level = state.get("trace_level", get_global_trace_level())
        self.is_copy = True
        self.pid = threading.get_native_id()
        self._root = False
        self._reset_thread()
        self._carrier = _carrier_of(state)
        if self._carrier is None:
            logger.warning("TraceReqContext: the carrier has no root_span_context; not traced")
            self.tracing_enable = False

    def copy_for_thread(self) -> "TraceReqContext":
        """A context for another thread, to continue there after :meth:`rebuild_thread_context`."""
        if not self.tracing_enable:
            return TraceNullContext()
        state = self.__getstate__()
        if not state.get("tracing_enable"):
            return TraceNullContext()
        copied = TraceReqContext.__new__(TraceReqContext)
        copied.__setstate__(state)
        copied.pid = None
        return copied

    def rebuild_thread_context(self, ts: Optional[int] = None, pid: Optional[int] = None) -> None:
        """Continues the request on the calling thread: its thread span hangs under the request
        span, and its first slice links to the sender's slice."""
        if not self.tracing_enable:
            return
        self.pid = pid if pid is not None else threading.get_native_id()
        carrier = self._carrier if self._carrier is not None else _context_here(self.rid)
        if carrier is None:
            return
        _name_thread_if_unnamed()
        _continue_from(self.rid, carrier)
        self._reset_thread()
        self._thread = True


def _carrier_of(state: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The propagated context a carrier dict holds, in the shape the extension reads."""
    root = state.get("root_span_context")
    if not isinstance(root, dict) or "traceparent" not in root:
        return None
    last = state.get("last_span_context")
    ctx = {"root_span": root, "prev_span": last if isinstance(last, dict) else "None"}
    if "slicetrace" in state:
        ctx["slicetrace"] = state["slicetrace"]
    return ctx


@dataclass
class TraceNullContext:
    """The context of a request that is not traced: every attribute and call gives itself."""

    tracing_enable: bool = False

    def __getattr__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        return self


__all__ = [
    "SpanAttributes",
    "TRACE_HEADERS",
    "TraceEvent",
    "TraceNullContext",
    "TraceReqContext",
    "TraceSliceContext",
    "TraceThreadInfo",
    "extract_trace_headers",
    "fastapi_telemetry_disabled_kwargs",
    "get_cur_time_ns",
    "get_global_trace_level",
    "get_global_tracing_enabled",
    "process_tracing_init",
    "set_global_trace_level",
    "trace_set_thread_info",
]
