"""The loopback HTTP side of the local gateway: requests in, buffered or chunked (streamed) responses out."""

from __future__ import annotations

import contextlib
import json
import select
import socket
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maas_dev.gateway.server import LocalGateway

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway REST's payload limit


class GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gateway: LocalGateway

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and `maas gateway` print what matters themselves

    def read_body(self) -> bytes | None:
        """The request body (None when over API Gateway's 10 MB)."""
        length = int(self.headers.get("content-length") or 0)
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            pieces, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
                total += size
            body = b"".join(pieces)
            return body if total <= MAX_BODY_BYTES else None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def start_chunked(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, piece: bytes) -> bool:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return False

    def end_chunked(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    def client_gone(self) -> bool:
        """Whether the client closed its side (readable with nothing to read) while a response streams."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            gone = self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        if gone:
            self.close_connection = True
        return gone

    def _dispatch(self) -> None:
        try:
            self.gateway.handle(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # the gateway itself failed: say so, as API Gateway's 500
            body = json.dumps({"message": f"local gateway error: {type(exc).__name__}: {exc}"}).encode()
            with contextlib.suppress(OSError):
                self.answer(500, {"content-type": "application/json"}, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch
