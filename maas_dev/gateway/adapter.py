"""The AWS Lambda Web Adapter's part, played locally: an API Gateway event in, an HTTP request to the function's web
server out, its response streamed back piece by piece as it arrives.

Like the adapter in ``response_stream`` mode, it forwards the method, path, query string, headers and body of the
event, adds ``x-amzn-request-context`` (the event's request context, JSON) and ``x-amzn-lambda-context`` (the
invocation's context with its ``deadline`` in epoch milliseconds), and hands back the server's status, headers and
body chunks without buffering. Closing the response closes the connection: the server sees its client go away.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from functions.contract.deployment import LAMBDA_CONTEXT_HEADER

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


@dataclass
class StreamedResponse:
    """The web server's answer: status and headers at once, then the body as it comes."""

    status: int
    headers: list[tuple[str, str]]
    _response: http.client.HTTPResponse
    _connection: http.client.HTTPConnection

    def chunks(self, size: int = 65_536) -> Iterator[bytes]:
        """Body pieces as the server sends them (``read1``: whatever has arrived, without waiting for more)."""
        while True:
            piece = self._response.read1(size)
            if not piece:
                return
            yield piece

    def close(self) -> None:
        """Drop the connection (the server sees a disconnect if it is still sending)."""
        self._response.close()
        self._connection.close()

    def abort(self) -> None:
        """Hang up now, from any thread: the server sees its client go away, and a pending read returns."""
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def forward(
    port: int, event: Mapping[str, Any], *, deadline_s: float, function_arn: str, timeout_s: float
) -> StreamedResponse:
    """Send ``event`` (API Gateway REST v1 or HTTP API v2) to the server on ``port``; start reading its answer."""
    method = event.get("httpMethod") or event.get("requestContext", {}).get("http", {}).get("method", "GET")
    path = event.get("path") or event.get("rawPath") or "/"
    query = event.get("rawQueryString")
    if query is None:
        pairs = [(k, v) for k, values in (event.get("multiValueQueryStringParameters") or {}).items() for v in values]
        query = urllib.parse.urlencode(pairs)
    headers: dict[str, str] = {}
    for name, values in (event.get("multiValueHeaders") or {}).items():
        headers[name.lower()] = ",".join(values)
    for name, value in (event.get("headers") or {}).items():
        headers.setdefault(name.lower(), value)
    for name in HOP_BY_HOP:
        headers.pop(name, None)
    body = event.get("body") or ""
    payload = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    context = event.get("requestContext") or {}
    headers["x-amzn-request-context"] = json.dumps(context)
    headers[LAMBDA_CONTEXT_HEADER] = json.dumps(
        {
            "request_id": context.get("requestId", ""),
            "deadline": int(deadline_s * 1000),
            "invoked_function_arn": function_arn,
            "xray_trace_id": headers.get("x-amzn-trace-id"),
            "env_config": {"function_name": function_arn.rsplit(":", 1)[-1]},
        }
    )
    headers["content-length"] = str(len(payload))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    target = path + (f"?{query}" if query else "")
    connection.request(method, target, body=payload, headers=headers)
    response = connection.getresponse()
    kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
    return StreamedResponse(response.status, kept, response, connection)


def lambda_deadline(timeout_s: float) -> float:
    """The epoch time at which an invocation starting now is stopped by Lambda."""
    return time.time() + timeout_s
