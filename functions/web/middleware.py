"""Pure ASGI middleware: request ids + structured access logs, and a body-size cap (also once decompressed)."""

from __future__ import annotations

import time
import uuid
import zlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.telemetry import RequestMetrics, logger, request_scope
from functions.web.security import send_error


class RequestContextMiddleware:
    """Give every request an id (caller's ``x-request-id``, Lambda's request id, or a new one), put it on every
    log line of the request, log the access line and publish the request's metrics (EMF) once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        context = scope.get("aws.context")
        request_id = (
            headers.get(b"x-request-id", b"").decode("latin-1")[:128]
            or getattr(context, "aws_request_id", None)
            or uuid.uuid4().hex
        )
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["metrics"] = record = RequestMetrics()
        status = {"code": 500}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*kept, (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        with request_scope(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                latency_ms = (time.perf_counter() - started) * 1000
                logger.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status["code"],
                        "latency_ms": round(latency_ms, 2),
                        "model": record.model,
                    },
                )
                record.publish(status=status["code"], latency_ms=latency_ms)


class BodySizeLimitMiddleware:
    """Cap the request body at ``max_bytes`` (413) as sent *and* as decompressed; refuse unknown encodings.

    The body is read here, before any route sees it, and never held beyond ``max_bytes`` (+1 to detect the
    overflow): a ``Content-Length`` over the cap is refused unread, a chunked body is cut off at the cap, and a
    ``Content-Encoding: gzip``/``deflate`` body is inflated incrementally with an output cap, so a gzip bomb
    (a few KB that inflate to GBs) stops at ``max_bytes`` + 1 bytes. Other encodings get 415, malformed
    compressed data 400. Routes then see the plain body, without ``Content-Encoding``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
            await send_error(scope, send, 415, "unsupported_media_type", message)
            return
        try:
            body = await self._read(receive, _WBITS.get(encoding))
        except _TooLarge as exc:
            await self._refuse(scope, send, exc.note)
            return
        except _BadEncoding as exc:
            await send_error(scope, send, 400, "invalid_encoding", f"request body is not valid {encoding}: {exc}")
            return
        except _Disconnected:
            return
        kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"content-encoding")]
        scope = {**scope, "headers": [*kept, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

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
        await send_error(scope, send, 413, "payload_too_large", message)


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
