"""Drop-in counterparts of SGLang's modules; see :mod:`slicetrace.sglang.tracing`."""
