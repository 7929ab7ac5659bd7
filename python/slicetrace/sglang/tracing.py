"""SGLang 0.5.9's request-tracing calls (``sglang.srt.tracing.trace``), same names, parameters,
defaults and return values, recorded natively.

The per-request calls are the extension's own functions, so a call costs no Python frame.
Timestamps (``ts``) are nanoseconds since the Unix epoch, as SGLang's; ``None`` or ``0`` mean
now. What differs from SGLang is listed in ``docs/python.md``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any, Dict, Iterable, List, Mapping, Optional

from slicetrace._native import (
    is_tracing_enabled,
    process_tracing_init,
    trace_event,
    trace_get_proc_propagate_context,
    trace_req_finish,
    trace_req_start,
    trace_set_proc_propagate_context,
    trace_set_thread_info,
    trace_slice_add_attr,
    trace_slice_end,
    trace_slice_start,
)
from slicetrace import _native
from slicetrace._native import _slice_batch

#: The W3C headers a gateway may send; what :func:`extract_trace_headers` keeps.
TRACE_HEADERS = ["traceparent", "tracestate"]

#: SGLang's alias of :func:`trace_slice_end`.
trace_slice = trace_slice_end


def extract_trace_headers(headers: Mapping[str, str]) -> Optional[Dict]:
    """The W3C trace headers among ``headers``, for ``trace_req_start(external_trace_header=)``."""
    return {k: headers[k] for k in TRACE_HEADERS if k in headers}


def trace_slice_batch(name: str, reqs: List[Any]) -> None:
    """The decode-loop call: for each request of ``reqs`` (objects with ``.rid`` and
    ``.finished()``), ends its current slice as ``name``, then opens the next anonymous slice,
    or, for a finished request, ends its thread span. One clock read for the batch;
    ``finished()`` is called once per request."""
    if not is_tracing_enabled():
        return
    if not isinstance(reqs, list):
        try:
            reqs = list(reqs)
        except TypeError:
            raise TypeError(
                "trace_slice_batch() argument 'reqs' must be an iterable of requests, "
                f"not {type(reqs).__qualname__}"
            ) from None
    # One item per request: its rid, or (rid,) once it has finished.
    _slice_batch(name, [(r.rid,) if r.finished() else r.rid for r in reqs])


def trace_event_batch(
    name: str,
    reqs: List[Any],
    ts: Optional[int] = None,
    attrs: Dict[str, Any] = {},  # noqa: B006  (SGLang's default; never mutated here)
) -> None:
    """One event ``name`` per request of the batch, each with ``bid`` (a batch id shared by the
    batch), ``batch_size`` and ``attrs``."""
    if not is_tracing_enabled():
        return
    shared = {"bid": uuid.uuid4().hex[:8], "batch_size": len(reqs), **attrs}
    for req in reqs:
        trace_event(name, req.rid, ts=ts, attrs=shared)


def trace_get_remote_propagate_context(bootstrap_room_list: Iterable[Any]) -> str:
    """The cross-node ``trace_context`` header: base64 of the JSON object that maps each
    bootstrap room (as text) to the context of the request with that room as its rid. Rooms
    with no such request on this thread are left out; ``""`` when tracing is off."""
    if not is_tracing_enabled():
        return ""
    contexts = {}
    for room in bootstrap_room_list:
        key = str(room)
        ctx = trace_get_proc_propagate_context(key, True)
        if ctx is not None:
            contexts[key] = ctx
    text = json.dumps(contexts, ensure_ascii=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def trace_set_remote_propagate_context(base64_str: Optional[str]) -> None:
    """Reads a ``trace_context`` header made by :func:`trace_get_remote_propagate_context`
    (ours or SGLang's): a later ``trace_req_start`` with one of its bootstrap rooms joins that
    room's trace. A room seen already keeps its first context. A header that is not base64 of
    a JSON object raises ``ValueError``."""
    if not is_tracing_enabled():
        return
    if base64_str is None or base64_str == "" or base64_str == "None":
        return
    if not isinstance(base64_str, (str, bytes)):
        raise TypeError(
            "trace_set_remote_propagate_context() argument 'base64_str' must be str, "
            f"not {type(base64_str).__qualname__}"
        )
    try:
        contexts = json.loads(base64.b64decode(base64_str, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"trace_context header is not base64 of JSON: {e}") from None
    if not isinstance(contexts, dict):
        raise ValueError("trace_context header: expected a JSON object of room -> context")
    for room, ctx in contexts.items():
        _native._keep_remote_context(str(room), ctx)


class SpanAttributes:
    """OpenTelemetry GenAI attribute names, as SGLang's module provides them."""

    GEN_AI_USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
    GEN_AI_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
    GEN_AI_USAGE_CACHED_TOKENS = "gen_ai.usage.cached_tokens"
    GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
    GEN_AI_REQUEST_TOP_K = "gen_ai.request.top_k"
    GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
    GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
    GEN_AI_REQUEST_ID = "gen_ai.request.id"
    GEN_AI_REQUEST_N = "gen_ai.request.n"
    GEN_AI_LATENCY_TIME_IN_QUEUE = "gen_ai.latency.time_in_queue"
    GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN = "gen_ai.latency.time_to_first_token"
    GEN_AI_LATENCY_E2E = "gen_ai.latency.e2e"
    GEN_AI_LATENCY_TIME_IN_MODEL_PREFILL = "gen_ai.latency.time_in_model_prefill"
    GEN_AI_LATENCY_TIME_IN_MODEL_DECODE = "gen_ai.latency.time_in_model_decode"
    GEN_AI_LATENCY_TIME_IN_MODEL_INFERENCE = "gen_ai.latency.time_in_model_inference"


__all__ = [
    "TRACE_HEADERS",
    "SpanAttributes",
    "extract_trace_headers",
    "is_tracing_enabled",
    "process_tracing_init",
    "trace_event",
    "trace_event_batch",
    "trace_get_proc_propagate_context",
    "trace_get_remote_propagate_context",
    "trace_req_finish",
    "trace_req_start",
    "trace_set_proc_propagate_context",
    "trace_set_remote_propagate_context",
    "trace_set_thread_info",
    "trace_slice",
    "trace_slice_add_attr",
    "trace_slice_batch",
    "trace_slice_end",
    "trace_slice_start",
]
