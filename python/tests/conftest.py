"""Helpers: run traced code with spans going to a JSON-lines file, then read the tree back."""

import json
import os
import threading
from pathlib import Path

import pytest

import slicetrace
from slicetrace.sglang import tracing


def host_prefix() -> str:
    """The host id's first 8 characters, as thread span names carry it."""
    try:
        text = Path("/etc/machine-id").read_text().strip()
        if text:
            return text[:8]
    except OSError:
        pass
    return os.uname().nodename[:8]


def thread_span_name(label: str, tp_rank=None, tid=None) -> str:
    tid = threading.get_native_id() if tid is None else tid
    # SGLang 0.5.9 spaces the TP part on both sides, and puts no space before "(host:" without it.
    tp = f" [TP {tp_rank}] " if tp_rank is not None else ""
    return f"{label}{tp}(host:{host_prefix()} | pid:{tid})"


def in_room(*requests, room=0):
    """`requests` (trees) each under its own bootstrap room span, as `Trace.tree()` gives them."""
    return [(f"Bootstrap Room {hex(room)}", [r]) for r in requests]


def read_spans(path: Path) -> list:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Trace:
    """The spans of one file, indexed for tree assertions."""

    def __init__(self, spans):
        self.spans = spans
        self.by_id = {s["span_id"]: s for s in spans}

    def named(self, name):
        found = [s for s in self.spans if s["name"] == name]
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s['name'] for s in self.spans]}"
        return found[0]

    def children(self, span):
        kids = [s for s in self.spans if s["parent_span_id"] == span["span_id"]]
        return sorted(kids, key=lambda s: (s["start_unix_nano"], s["end_unix_nano"]))

    def tree(self, span=None):
        """(name, [subtrees]) from `span`, or the list of root trees."""
        if span is None:
            roots = [s for s in self.spans if s["parent_span_id"] not in self.by_id]
            roots.sort(key=lambda s: s["start_unix_nano"])
            return [self.tree(r) for r in roots]
        return (span["name"], [self.tree(c) for c in self.children(span)])

    def rooms(self):
        """The room spans (roots here, with the request under each), by their request's name."""
        return {self.children(s)[0]["name"]: s for s in self.spans if s["name"].startswith("Bootstrap Room ")}

    def links(self, name):
        """Names of the spans `name` links to (None for a span not in this file)."""
        return [self.by_id.get(l["span_id"], {}).get("name") for l in self.named(name)["links"]]


@pytest.fixture
def traced(tmp_path, monkeypatch):
    """Starts a session writing to a fresh JSON-lines file; `.finish()` ends it and returns the
    spans as a `Trace`."""
    for k in list(os.environ):
        if k.startswith("OTEL_"):
            monkeypatch.delenv(k)
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("SLICETRACE_FILE", str(path))

    class Session:
        file = path

        def start(self, name="test-server"):
            tracing.process_tracing_init(None, name)
            assert slicetrace.is_tracing_enabled()
            return self

        def finish(self):
            self.final_stats = slicetrace.shutdown()
            return Trace(read_spans(path))

    s = Session().start()
    yield s
    slicetrace.shutdown()
