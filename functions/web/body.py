"""The request body, read whole before the request may take an admission slot: on time, capped, decompressed.

- **On time.** The body must arrive within ``timeout_s`` of the request reaching the app (408 and
  ``Connection: close`` otherwise), and it is read *before* admission control: a client that sends headers
  and then a byte a minute holds a connection, never one of the ``MAAS_MAX_CONCURRENCY`` slots. At most
  ``max_readers`` bodies are in transit at once (429 beyond; health routes are exempt), so slow uploads bound
  their memory too.
- **Capped.** ``max_bytes`` as sent and once decompressed (413): a ``Content-Length`` over the cap is
  refused unread, a chunked body is cut off at the cap, and ``Content-Encoding: gzip``/``deflate`` is
  inflated incrementally with an output cap, so a gzip bomb stops at ``max_bytes`` + 1 bytes. Other
  encodings get 415, malformed compressed data 400. Routes see the plain body, without ``Content-Encoding``.
- **Watched.** Once the body is in, a disconnect is watched for while the request runs; the inference code
  sees it (:func:`functions.inference.pipelines.base.check_cancelled`) and stops working for a client
  that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.inference.pipelines.base import cancellation
from functions.web.security import HEALTH_PATHS, send_error

_CLOSE = [(b"connection", b"close")]  # the rest of an unread body is never read: the connection cannot be reused


class RequestBodyMiddleware:
    """Read the body under a deadline and a size cap before the app (and admission control) sees the request."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0, max_readers: int = 0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_readers = max_readers
        self.readers = 0  # bodies being received now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        values = {key.lower(): value for key, value in headers}
        declared = values.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send, "")
            return
        encoding = values.get(b"content-encoding", b"identity").decode("latin-1").strip().lower() or "identity"
        if encoding != "identity" and encoding not in _WBITS:
            message = f"Content-Encoding {encoding!r} is not accepted; send the body plain or gzip-compressed"
            await send_error(scope, send, 415, "unsupported_media_type", message, _CLOSE)
            return
        if self.max_readers and self.readers >= self.max_readers and scope.get("path") not in HEALTH_PATHS:
            message = f"too many uploads in progress ({self.max_readers}); retry after a short backoff"
            await send_error(scope, send, 429, "too_many_requests", message, [(b"retry-after", b"1"), *_CLOSE])
            return
        self.readers += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive, _WBITS.get(encoding))
        except TimeoutError:
            message = (
                f"the request body did not arrive within {self.timeout_s:g} s; send it at once, with its headers"
            )
            await send_error(scope, send, 408, "request_timeout", message, _CLOSE)
            return
        except _TooLarge as exc:
            await self._refuse(scope, send, exc.note)
            return
        except _BadEncoding as exc:
            message = f"request body is not valid {encoding}: {exc}"
            await send_error(scope, send, 400, "invalid_encoding", message, _CLOSE)
            return
        except _Disconnected:
            return
        finally:
            self.readers -= 1
        kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-encoding")]
        scope = {**scope, "headers": [*kept, (b"content-length", str(len(body)).encode())]}
        await _run_watched(self.app, scope, body, receive, send)

    async def _read(self, receive: Receive, wbits: int | None) -> bytes:
        raw = 0
        inflater = _Inflater(wbits, self.max_bytes) if wbits is not None else None
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            more = bool(message.get("more_body", False))
            raw += len(chunk)
            if raw > self.max_bytes:
                raise _TooLarge("")
            if inflater is not None:
                inflater.feed(chunk)
            elif chunk:
                chunks.append(chunk)
        return inflater.finish(raw) if inflater is not None else b"".join(chunks)

    async def _refuse(self, scope: Scope, send: Send, note: str) -> None:
        message = f"request body exceeds {self.max_bytes} bytes{note}; split the batch or send fewer/smaller inputs"
        await send_error(scope, send, 413, "payload_too_large", message, _CLOSE)


async def _run_watched(app: ASGIApp, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
    """Run the app on the read body while watching for the client to go away (then flag the work cancelled)."""
    gone = threading.Event()  # read by worker threads through the cancellation context
    disconnected = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                disconnected.set()
                return

    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected.wait()  # after the body: only the disconnect is left to receive, as from the server
        return {"type": "http.disconnect"}

    watcher = asyncio.create_task(watch())
    try:
        with cancellation(gone):
            await app(scope, replay, send)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


# zlib window bits per accepted Content-Encoding: gzip framing, and "deflate" as HTTP defines it (zlib framing)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _Inflater:
    """Incremental decompression that never produces more than ``limit`` + 1 bytes, whatever the input."""

    def __init__(self, wbits: int, limit: int) -> None:
        self.wbits, self.limit = wbits, limit
        self.decoder = zlib.decompressobj(wbits)
        self.out: list[bytes] = []
        self.size = 0

    def feed(self, data: bytes) -> None:
        while data:
            try:
                piece = self.decoder.decompress(data, self.limit - self.size + 1)
            except zlib.error as exc:
                raise _BadEncoding(str(exc)) from None
            self.size += len(piece)
            if self.size > self.limit:
                raise _TooLarge(" once decompressed")
            self.out.append(piece)
            data = self.decoder.unconsumed_tail
            if self.decoder.eof and self.decoder.unused_data:
                if self.wbits != _WBITS["gzip"]:
                    raise _BadEncoding("trailing bytes after the compressed stream")
                data = self.decoder.unused_data  # gzip allows several members back to back
                self.decoder = zlib.decompressobj(self.wbits)

    def finish(self, raw: int) -> bytes:
        if raw and not self.decoder.eof:
            raise _BadEncoding("the compressed stream is truncated")
        return b"".join(self.out)


class _TooLarge(Exception):
    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


class _BadEncoding(Exception):
    pass


class _Disconnected(Exception):
    pass
