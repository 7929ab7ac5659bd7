"""The README's Python example runs as written and makes the tree it promises."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import Trace, read_spans

README = Path(__file__).resolve().parents[2] / "README.md"


def run_block(i, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2
    env = {"SLICETRACE_FILE": str(tmp_path / "readme.jsonl"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", blocks[i]], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r


def test_readme_example(tmp_path):
    r = run_block(0, tmp_path)
    assert "'records_written'" in r.stdout
    t = Trace(read_spans(tmp_path / "readme.jsonl"))
    [(room, [(req, [(thread, slices)])])] = t.tree()
    assert room == "Bootstrap Room 0x0"
    assert req == " Req 5d8f3a2b"
    assert thread.startswith("Scheduler [TP 0] (host:")
    assert slices == [("prefill", []), ("decode", [])]
    assert t.links("decode") == ["prefill"]


def test_readme_example_of_the_request_context_api(tmp_path):
    run_block(1, tmp_path)
    t = Trace(read_spans(tmp_path / "readme.jsonl"))
    [(req, [(thread, slices)])] = t.tree()
    assert req == " Req 5d8f3a2b"
    assert t.named(req)["attributes"]["module"] == "sglang::request"
    assert thread.startswith("unknown(host:"), "a thread that never named itself, as SGLang"
    assert slices == [("tokenize", [])]
