"""A real OpenTelemetry collector for the tests: `rotel` (from PyPI; `bash scripts/test` installs
it and sets ROTEL_AGENT), on loopback ports of its own, printing every span it decoded in the
collector's "detailed" debug format; and a reader of what it printed."""

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def agent_path() -> str:
    path = os.environ.get("ROTEL_AGENT")
    if not path:
        import rotel  # installed by scripts/test; an ImportError here names what is missing

        path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    assert os.access(path, os.X_OK), f"rotel-agent is not executable at {path}"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rotel:
    def __init__(self):
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.dir = Path(tempfile.mkdtemp(prefix="slicetrace-rotel-"))
        self.log = self.dir / "out.txt"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    agent_path(),
                    "start",
                    "--otlp-grpc-endpoint",
                    self.grpc,
                    "--otlp-http-endpoint",
                    self.http,
                    "--exporter",
                    "blackhole",
                    "--pid-file",
                    str(self.dir / "pid"),
                    "--log-file",
                    str(self.dir / "log"),
                    "--debug-log",
                    "traces",
                    "--debug-log-verbosity",
                    "detailed",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        for addr in (self.grpc, self.http):
            host, port = addr.split(":")
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection((host, int(port)), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"rotel did not listen on {addr}"
                    time.sleep(0.02)

    def spans(self, at_least: int, timeout: float = 20.0) -> list:
        """The spans printed so far, once there are `at_least` (the collector prints a batch a
        moment after it answered for it)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = parse(self.log.read_text(errors="replace"))
            if len(spans) >= at_least or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _field(line: str, name: str, exact: bool = False):
    t = line.lstrip()
    if not t.startswith(name):
        return None
    rest = t[len(name) :].lstrip()
    if not rest.startswith(":"):
        return None
    value = rest[1:]
    # A span name may itself begin with a space: only the one after the colon is the format's.
    return (value[1:] if value.startswith(" ") else value).rstrip("\r\n") if exact else value.strip()


def parse(text: str) -> list:
    """Each span as a dict: trace_id, span_id, parent_span_id ("" for a root), name, kind,
    attributes {key: printed value, e.g. "Str(x)"}, links [span ids], scope, resource."""
    spans, resource, scope, mode = [], {}, "", None
    for line in text.splitlines():
        t = line.strip()
        if t.startswith("ResourceSpans #"):
            resource, mode = {}, None
        elif t.startswith("Resource attributes:"):
            mode = "resource"
        elif t.startswith("ScopeSpans #"):
            mode = None
        elif t.startswith("InstrumentationScope"):
            # The scope's name may hold a space ("sglang server"): keep all but a version.
            words = t[len("InstrumentationScope") :].strip().split(" ")
            scope = " ".join(w for w in words if w and not w[0].isdigit())
        elif t.startswith("Span #"):
            spans.append(
                {
                    "resource": dict(resource),
                    "scope": scope,
                    "attributes": {},
                    "links": [],
                    "events": [],
                    "parent_span_id": "",
                }
            )
            mode = None
        elif t == "Attributes:":
            mode = "attrs"
        elif t == "Events:":
            mode = "events"
        elif t == "Links:":
            mode = "links"
        elif mode == "resource":
            if t.startswith("-> ") and ": " in t:
                k, v = t[3:].split(": ", 1)
                resource[k] = v
        elif spans:
            s = spans[-1]
            for key, name, exact in (
                ("trace_id", "Trace ID", False),
                ("parent_span_id", "Parent ID", False),
                ("span_id", "ID", False),
                ("name", "Name", True),
                ("kind", "Kind", False),
                ("status", "Status code", False),
            ):
                if key in ("trace_id", "span_id", "name") and mode is not None:
                    continue
                v = _field(line, name, exact)
                if v is not None:
                    s[key] = v
                    break
            else:
                if t.startswith("-> "):
                    kv = t[3:]
                    if mode == "attrs" and ": " in kv:
                        k, v = kv.split(": ", 1)
                        s["attributes"][k] = v
                    elif mode == "links" and kv.startswith("ID: "):
                        s["links"].append(kv[4:])
                    elif mode == "events" and kv.startswith("Name: "):
                        s["events"].append(kv[6:])
    return spans
