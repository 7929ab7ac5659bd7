"""Takes the place of SGLang's ``sglang.srt.observability.trace_async`` (``SGLANG_TRACE_ASYNC=1``:
spans built in an exporter process fed over ZMQ). slicetrace's calls already hand their records to
a background thread, so there is no exporter process to start: asynchronous tracing reports itself
unavailable and SGLang makes plain :class:`~slicetrace.sglang.observability.TraceReqContext`
objects, which carry ``is_async: False`` in their carrier."""

from __future__ import annotations

from typing import Optional

from slicetrace.sglang.observability import TraceReqContext


class TraceReqContextAsync(TraceReqContext):
    """SGLang's asynchronous context: here the same as the plain one."""


def is_async_tracing_available() -> bool:
    return False


def start_trace_exporter(otlp_endpoint: str, server_name: str, trace_modules: Optional[str] = None) -> bool:
    """Nothing to start: returns False, as SGLang's does when the exporter cannot run."""
    return False


def stop_trace_exporter() -> None:
    pass


def maybe_start_trace_exporter(otlp_endpoint: str, server_name: str, trace_modules: Optional[str] = None) -> None:
    pass
