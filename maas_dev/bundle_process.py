"""Long-lived Lambda execution environments on this machine: one process per function, events over a pipe.

- :class:`BundleProcess` is a function whose runtime calls a handler (a zip's ``Handler``, an image's ``CMD``): the
  process imports the handler once (Lambda's init phase), then for each event read as a JSON line on its stdin it
  invokes the handler with a Lambda context counting down the function's timeout and writes the response as a JSON
  line. The function's own output (its logs) goes to stderr, kept apart and timestamped line by line.
- :class:`BundleServer` is a function whose image runs a web server behind the Lambda Web Adapter (the entry point
  is the server, no handler): the process is that server, on a free loopback port, ready once the adapter's
  readiness path answers 200.

Both run in the sandbox :func:`maas_dev.lambda_bundle.sandbox` builds: the task root read-only at /var/task, Lambda's
CPython with ``-I -S``, an unprivileged user, the function's environment. Used by the local gateway
(``maas_dev/gateway``) and the bundle tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from maas_dev.lambda_bundle import BundleRunError, sandbox

# Runs in the sandbox: the standard library only (an authorizer's zip carries nothing else of maas's).
_SERVE = r"""
import importlib, json, os, sys, time, uuid

replies = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)  # the function's prints and logs go to stderr; stdout carries only replies
sys.stdout = os.fdopen(1, "w", buffering=1)


class Context:
    def __init__(self, timeout_s, request_id):
        self._deadline = time.monotonic() + timeout_s
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "maas-local")
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:%s:123456789012:function:%s" % (
            os.environ.get("AWS_REGION", "us-east-1"), self.function_name)
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048"))
        self.aws_request_id = request_id
        self.log_group_name = "/aws/lambda/" + self.function_name
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


started = time.perf_counter()
module_name, _, attribute = os.environ["_HANDLER"].rpartition(".")
handler = getattr(importlib.import_module(module_name), attribute)
replies.write(json.dumps({"ready": True, "init_s": time.perf_counter() - started}) + "\n")
timeout_s = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "30"))
for line in sys.stdin:
    request = json.loads(line)
    begun = time.perf_counter()
    try:
        reply = {"ok": True, "response": handler(request["event"], Context(timeout_s, request["id"]))}
    except Exception as exc:
        reply = {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc)[:2000]}
    reply["seconds"] = time.perf_counter() - begun
    replies.write(json.dumps(reply, default=str) + "\n")
"""


@dataclass
class LogLines:
    """A process's output, line by line, with the time each line arrived (``time.monotonic()``)."""

    lines: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=20_000))

    def follow(self, stream: IO[str]) -> threading.Thread:
        def read() -> None:
            for line in stream:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def since(self, moment: float) -> list[tuple[float, str]]:
        return [(at, line) for at, line in list(self.lines) if at >= moment]

    def tail(self, count: int = 40) -> str:
        return "\n".join(line for _, line in list(self.lines)[-count:])


class _Sandboxed:
    """A sandboxed process we started (in its own process group, so closing it ends its children too)."""

    process: subprocess.Popen[str] | None = None
    logs: LogLines
    task_root: Path
    python: Path
    environment: dict[str, str]
    runtime_dir: Path | None
    emulator: Sequence[str] = ()  # QEMU user mode for an interpreter of another architecture (maas_dev.emulation)

    def _spawn(self, code: str, args: list[str], *, pipe_stdin: bool) -> subprocess.Popen[str]:
        """Start Python ``code`` in the sandbox; its stderr (and stdout, unless ``pipe_stdin``) goes to the logs."""
        command, env = sandbox(
            self.task_root, python=self.python, code=code, args=args, environment=self.environment,
            runtime_dir=self.runtime_dir, emulator=self.emulator,
        )  # fmt: skip
        self.process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if pipe_stdin else subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        output = self.process.stderr if pipe_stdin else self.process.stdout
        assert output is not None
        self.logs.follow(output)
        return self.process

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def __enter__(self) -> _Sandboxed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BundleProcess(_Sandboxed):
    """One execution environment of a handler function: started on first use, reused for every event."""

    def __init__(
        self,
        task_root: Path,
        *,
        python: Path,
        handler: str,
        environment: dict[str, str],
        timeout_s: float,
        runtime_dir: Path | None = None,
    ) -> None:
        self.task_root, self.python, self.handler = task_root, python, handler
        self.environment = {**environment, "_HANDLER": handler, "AWS_LAMBDA_FUNCTION_TIMEOUT": str(timeout_s)}
        self.timeout_s = timeout_s
        self.runtime_dir = runtime_dir
        self.logs = LogLines()
        self.init_s: float | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        process = self._spawn(f"exec({_SERVE!r})", [], pipe_stdin=True)
        assert process.stdout is not None
        self._replies: queue.Queue[str] = queue.Queue()
        replies, stdout = self._replies, process.stdout

        def read() -> None:
            for line in stdout:
                replies.put(line)
            replies.put("")  # the process is gone

        threading.Thread(target=read, daemon=True).start()
        ready = self._reply(timeout_s=600)
        if not ready.get("ready"):
            raise BundleRunError(f"{self.handler} did not start:\n{self.logs.tail()}")
        self.init_s = float(ready["init_s"])

    def _reply(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            line = None
        if not line:
            what = "timed out" if line is None else "exited"
            self.close()
            raise BundleRunError(f"{self.handler} {what} without answering:\n{self.logs.tail()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def invoke(self, event: Any, *, timeout_s: float | None = None) -> dict[str, Any]:
        """The handler's reply: ``{"ok": True, "response": ...}`` or ``{"ok": False, "errorType", "errorMessage"}``.

        Raises :class:`BundleRunError` when the environment died or ran past ``timeout_s`` (default: the function's
        timeout); it is then discarded, and the next event starts a new one (a cold start)."""
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                self.start()
            assert self.process is not None and self.process.stdin is not None
            request = {"id": f"local-{time.time_ns()}", "event": event}
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            return self._reply(timeout_s=timeout_s or self.timeout_s)


class BundleServer(_Sandboxed):
    """The web server of a Lambda Web Adapter function, run from its task root on a loopback port."""

    def __init__(
        self,
        task_root: Path,
        *,
        python: Path,
        entry_point: list[str],
        environment: dict[str, str],
        port: int,
        ready_path: str,
        runtime_dir: Path | None = None,
        emulator: Sequence[str] = (),
    ) -> None:
        if entry_point[:2] != ["python3", "-m"] or len(entry_point) < 3:
            raise ValueError(f"expected an entry point 'python3 -m <module> ...', got {entry_point}")
        self.task_root, self.python = task_root, python
        self.module, self.args = entry_point[2], _with_port(entry_point[3:], port)
        self.environment = environment
        self.port, self.ready_path = port, ready_path
        self.runtime_dir, self.emulator = runtime_dir, emulator
        self.logs = LogLines()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 600) -> None:
        module = repr(self.module)
        code = f"import runpy; sys.argv = [{module}, *sys.argv[1:]]; runpy.run_module({module}, run_name='__main__')"
        process = self._spawn(code, self.args, pipe_stdin=False)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BundleRunError(f"the server exited {process.returncode}:\n{self.logs.tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url + self.ready_path, timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.2)
        self.close()
        raise BundleRunError(f"the server was not ready within {timeout_s:g} s:\n{self.logs.tail()}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _with_port(args: list[str], port: int) -> list[str]:
    """The server's arguments with its ``--port`` replaced (the image listens on a fixed one; here any is free)."""
    out = list(args)
    if "--port" in out:
        out[out.index("--port") + 1] = str(port)
    else:
        out += ["--port", str(port)]
    return out
