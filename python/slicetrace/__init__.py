"""Request tracing for LLM inference servers, on a native recorder.

The SGLang-compatible calls are in :mod:`slicetrace.sglang.tracing`. This module holds the
session functions: :func:`stats`, :func:`flush` and :func:`shutdown` (also run at interpreter
exit, within the shutdown timeout), and the process's trace level, :func:`set_level` and
:func:`level`.

A process forked while tracing runs (multiprocessing ``fork``, pre-forking servers) starts its
own session from the parent's configuration before any of its own code runs; if that cannot be
done safely, its calls are dropped and counted (``stats()["calls_dropped_after_fork"]``).
"""

import atexit as _atexit
import os as _os
import sys as _sys

from slicetrace import _native
from slicetrace._native import (
    InitError,
    __version__,
    flush,
    is_tracing_enabled,
    level,
    process_tracing_init,
    set_level,
    shutdown,
    stats,
)

_atexit.register(_native._at_exit)


def _after_fork_in_child():
    if not _native._after_fork():
        return
    # A multiprocessing child leaves by os._exit, which runs no atexit handler; what runs at
    # its end are multiprocessing's finalizers, and it clears those it inherited before running
    # its after-fork callbacks: so the finalizer that exports the child's spans is added from
    # one of those. (Only when the program uses multiprocessing already.)
    mp_util = _sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.register_after_fork(_after_fork_in_child, _export_at_mp_exit)


def _export_at_mp_exit(_):
    import multiprocessing.util as mp_util

    mp_util.Finalize(None, _native._at_exit, exitpriority=-100)


_os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "InitError",
    "__version__",
    "flush",
    "is_tracing_enabled",
    "level",
    "process_tracing_init",
    "set_level",
    "shutdown",
    "stats",
]
