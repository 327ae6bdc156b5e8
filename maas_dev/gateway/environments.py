"""The functions' execution environments: one per function, started at its first invocation, then reused."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

from maas_dev.bundle_process import BundleProcess, BundleServer
from maas_dev.gateway.stage import FunctionDef


class Environments:
    """One execution environment per function, started at its first invocation (a cold start), then reused."""

    def __init__(
        self,
        task_root: Callable[[FunctionDef], Path],
        environment: Callable[[FunctionDef], dict[str, str]],
        *,
        python: Path,
        runtime_dir: Path | None,
    ) -> None:
        self.task_root, self.environment = task_root, environment
        self.python, self.runtime_dir = python, runtime_dir
        self.processes: dict[str, BundleProcess] = {}
        self.servers: dict[str, BundleServer] = {}
        self.locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def lock(self, function: FunctionDef) -> threading.Lock:
        with self._lock:
            return self.locks.setdefault(function.name, threading.Lock())

    def process(self, function: FunctionDef) -> BundleProcess:
        with self._lock:
            if function.name not in self.processes:
                assert function.handler is not None
                self.processes[function.name] = BundleProcess(
                    self.task_root(function),
                    python=self.python,
                    handler=function.handler,
                    environment=self.environment(function),
                    timeout_s=function.timeout_s,
                    runtime_dir=self.runtime_dir,
                )
            return self.processes[function.name]

    def server(self, function: FunctionDef) -> BundleServer:
        with self._lock:
            server = self.servers.get(function.name)
            if server is None or not server.running():
                assert function.entry_point is not None
                environment = self.environment(function)
                port = _free_port()
                server = BundleServer(
                    self.task_root(function),
                    python=self.python,
                    entry_point=list(function.entry_point),
                    environment={**environment, "AWS_LWA_PORT": str(port)},
                    port=port,
                    ready_path=environment.get("AWS_LWA_READINESS_CHECK_PATH", "/"),
                    runtime_dir=self.runtime_dir,
                )
                self.servers[function.name] = server
        if not server.running():
            server.start()
        return server

    def close(self) -> None:
        for environment in [*self.processes.values(), *self.servers.values()]:
            environment.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
