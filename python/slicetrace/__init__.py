"""Request tracing for LLM inference servers, on a native recorder.

The SGLang-compatible calls are in :mod:`slicetrace.sglang.tracing`. This module holds the
session functions: :func:`stats`, :func:`flush` and :func:`shutdown` (also run at interpreter
exit, within the shutdown timeout).
"""

import atexit as _atexit

from slicetrace import _native
from slicetrace._native import (
    InitError,
    __version__,
    flush,
    is_tracing_enabled,
    process_tracing_init,
    shutdown,
    stats,
)

_atexit.register(_native._at_exit)

__all__ = [
    "InitError",
    "__version__",
    "flush",
    "is_tracing_enabled",
    "process_tracing_init",
    "shutdown",
    "stats",
]
