"""Who may call, and how many at once: API keys and admission control, as pure ASGI middleware.

- **API keys** are read as the deployed API reads them — ``Authorization: Bearer <key>`` (what the ``openai``
  SDK sends), else ``x-api-key`` — so a client written against the deployed API works unchanged against `maas
  serve`. Keys are compared in constant time. `maas serve` refuses to bind beyond loopback without keys
  (:func:`require_keys_for_host`). Behind API Gateway the bearer-key authorizer checks keys before the app runs.
- **Admission control** caps the requests in flight per process. A request over the cap waits for a slot
  in a bounded queue for at most ``queue_timeout_s`` (then 503 with ``Retry-After``); when the queue is
  full it is refused at once with 429. Refusals cost microseconds and never touch the model, so
  admitted requests keep their latency while the excess is told to back off (OWASP API4).

Health routes are exempt from both: load balancers and orchestrators must always see the truth.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
from collections import deque
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from functions.errors import MaasError
from functions.protocols.base import error_json, note_error, protocol_for_scope

HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", "/health", "/healthz"})
_LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


class UnsafeBindError(MaasError):
    """`maas serve` was asked to listen beyond loopback without any API key configured."""

    status_code = 500
    code = "unsafe_bind"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a hostname may resolve anywhere: treat it as reachable from outside


def require_keys_for_host(host: str, api_keys: list[str]) -> None:
    """Refuse to serve beyond loopback without API keys (an open model endpoint on a LAN is a free GPU/CPU)."""
    if not is_loopback(host) and not api_keys:
        raise UnsafeBindError(
            f"refusing to listen on {host!r} without an API key: set MAAS_API_KEYS=<key>[,<key>...] (callers send "
            "it as 'x-api-key'), or bind to 127.0.0.1"
        )


async def send_error(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with an error in the shape of the protocol of the route the request was for."""
    note_error(scope, code)
    body = error_json(protocol_for_scope(scope).render(status, code, message, None))
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *(headers or []),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


def _presented(scope: Scope) -> bytes | None:
    """The key a request carries, byte for byte: a ``Bearer`` token of ``Authorization``, else ``x-api-key``."""
    api_key = None
    for name, value in scope.get("headers") or []:
        name = bytes(name).lower()
        if name == b"authorization":
            scheme, _, token = bytes(value).partition(b" ")
            if scheme.lower() == b"bearer" and token:
                return token
        elif name == b"x-api-key":
            api_key = bytes(value)
    return api_key


class ApiKeyMiddleware:
    """Require one of ``keys`` as a bearer token or in ``x-api-key`` (401 otherwise); a no-op without keys."""

    def __init__(self, app: ASGIApp, keys: list[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys if key]

    def _accepted(self, presented: bytes | None) -> bool:
        if presented is None:
            return False
        # compare with every key, no early exit: the time taken says nothing about which key nearly matched
        matches = [hmac.compare_digest(presented, key) for key in self.keys]
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or scope.get("path") in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        if not self._accepted(_presented(scope)):
            await send_error(
                scope,
                send,
                401,
                "unauthorized",
                "missing or invalid API key: send 'Authorization: Bearer <key>' (or the key in the 'x-api-key' header)",
                headers=[(b"www-authenticate", b'Bearer realm="maas", ApiKey header="x-api-key"')],
            )
            return
        await self.app(scope, receive, send)


class AdmissionController:
    """Counts in-flight requests; hands out slots FIFO to a bounded queue of waiters.

    Works on whichever event loop calls it (uvicorn's, TestClient's portal, Mangum's per-invocation loop):
    waiters are futures of the running loop, never a loop-bound primitive created at import.
    """

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.admitted = 0
        self.rejected_full = 0
        self.rejected_timeout = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> int:
        """0 when admitted, else the status to refuse with (429: queue full, 503: waited too long)."""
        if self.max_concurrency <= 0 or (self.in_flight < self.max_concurrency and not self._waiters):
            self.in_flight += 1
            self.admitted += 1
            return 0
        if len(self._waiters) >= self.max_queue:
            self.rejected_full += 1
            return 429
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():  # the slot arrived as the timer fired: pass it on
                self.release()
            else:
                waiter.cancel()
            self.rejected_timeout += 1
            return 503
        except BaseException:  # the client went away while waiting
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                waiter.cancel()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        self.admitted += 1
        return 0

    def release(self) -> None:
        """Give the slot to the oldest live waiter (the count stays), or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1


class AdmissionControlMiddleware:
    """Admit at most ``max_concurrency`` requests at once; queue a bounded few; refuse the rest at once."""

    def __init__(self, app: ASGIApp, controller: AdmissionController) -> None:
        self.app = app
        self.controller = controller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.controller.max_concurrency <= 0 or scope.get("path") in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        refusal = await self.controller.acquire()
        if refusal:
            retry_after = str(max(1, math.ceil(self.controller.queue_timeout_s / 2))).encode()
            if refusal == 429:
                message = (
                    f"too many requests: {self.controller.max_concurrency} in flight and "
                    f"{self.controller.max_queue} waiting; retry after a short backoff"
                )
                await send_error(scope, send, 429, "too_many_requests", message, [(b"retry-after", retry_after)])
            else:
                message = f"server busy: no slot within {self.controller.queue_timeout_s:g} s; retry later"
                await send_error(scope, send, 503, "overloaded", message, [(b"retry-after", retry_after)])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.controller.release()
