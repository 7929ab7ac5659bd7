"""Drop-in counterparts of SGLang's tracing modules: :mod:`slicetrace.sglang.tracing` for
SGLang 0.5.9's rid-keyed calls, :mod:`slicetrace.sglang.observability` for the request-context
API of 0.5.10 and later. :func:`install` puts them in SGLang's place."""

import sys as _sys

#: SGLang's module names, and the modules of ours that take their place.
_MODULES = {
    "sglang.srt.tracing.trace": "slicetrace.sglang.tracing",
    "sglang.srt.observability.trace": "slicetrace.sglang.observability",
    "sglang.srt.observability.trace_async": "slicetrace.sglang.observability_async",
}


def install() -> None:
    """Registers our modules under SGLang's module names, so that an unmodified SGLang imported
    after this call traces through slicetrace. Call it in every process of the server before
    SGLang imports its tracing module (see ``docs/python.md``: the ``SLICETRACE_SGLANG=1``
    variable does it at interpreter start-up, which reaches spawned workers too). A module of
    SGLang's imported already is replaced too, in ``sys.modules`` and on its package; a name
    that code took from it with ``from … import`` before the call keeps SGLang's object."""
    import importlib

    for theirs, ours in _MODULES.items():
        module = importlib.import_module(ours)
        _sys.modules[theirs] = module
        package, _, leaf = theirs.rpartition(".")
        parent = _sys.modules.get(package)
        if parent is not None:
            setattr(parent, leaf, module)


def installed() -> bool:
    """Whether SGLang's tracing module names lead to ours."""
    return all(
        getattr(_sys.modules.get(theirs), "__name__", None) == ours for theirs, ours in _MODULES.items()
    )
