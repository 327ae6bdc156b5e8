"""The process side of `maas bench --peers`: one case per process, driven over stdin/stdout.

A case runs in its own interpreter (a peer's environment may not be maas's: optimum-onnx needs
transformers < 5, llama-cpp-python is built from source), so this module imports only the standard
library and numpy. It is started as ``python -m maas_dev.bench.<worker> `` from the repository root:

1. the parent writes one JSON line: the case's spec;
2. the worker loads the case and answers ``{"ready": true, "load_s": …}``, or ``{"ready": false,
   "skip": "<why, and how to provide it>"}`` when the peer's library or files are missing;
3. then each line is a call ``{"method": name, "args": {…}}`` of the runner, answered by
   ``{"result": …}`` (or ``{"error": …}``) until ``{"method": "quit"}``.

Timing loops run inside the worker, so the pipe never sits inside a timed region. Anything a library
prints goes to stderr: stdout carries only the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO


class PeerUnavailable(Exception):
    """The peer cannot run in this interpreter (library or files missing): the case is skipped, saying how."""


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _reply(channel: TextIO, message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def serve(make_runner: Callable[[dict[str, Any]], Any]) -> None:
    """Read the spec, build the runner, answer calls until ``quit`` or end of input."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr
    spec = json.loads(sys.stdin.readline())
    started = time.perf_counter()
    try:
        runner = make_runner(spec)
    except PeerUnavailable as exc:
        _reply(channel, {"ready": False, "skip": str(exc)})
        return
    except Exception as exc:  # a broken peer is reported and skipped, never a failed bench
        _reply(channel, {"ready": False, "skip": f"failed to load: {type(exc).__name__}: {exc}"})
        traceback.print_exc()
        return
    _reply(channel, {"ready": True, "load_s": time.perf_counter() - started})
    for line in sys.stdin:
        call = json.loads(line)
        if call["method"] == "quit":
            return
        try:
            result = getattr(runner, call["method"])(**call.get("args", {}))
        except Exception as exc:
            traceback.print_exc()
            _reply(channel, {"error": f"{type(exc).__name__}: {exc}"})
        else:
            _reply(channel, {"result": result})


def require(module: str, how: str) -> Any:
    """Import ``module`` or skip the case with ``how`` (what to install, which variable to set)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(f"{module} is not importable by {sys.executable} ({exc}); {how}") from None
