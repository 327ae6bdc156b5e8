"""Run the app with uvicorn: in the foreground (`maas serve`, GPU container) or in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from functions.inference.registry import ModelRegistry
from functions.settings import Settings
from functions.web.app import create_app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def serve(registry: ModelRegistry, host: str = "127.0.0.1", port: int = 8080) -> None:
    uvicorn.run(create_app(registry), host=host, port=port, log_level="warning", access_log=False)


class BackgroundServer:
    """A live uvicorn server on loopback for demos, benchmarks and tests; stops on exit."""

    def __init__(
        self,
        registry: ModelRegistry,
        host: str = "127.0.0.1",
        port: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            create_app(registry, settings), host=self.host, port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
