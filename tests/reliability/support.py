"""Assertions shared by the reliability tests."""

from __future__ import annotations

import re
from typing import Any

# What must never appear in an error a caller sees: stack traces, file system paths, module files, addresses.
LEAKS = re.compile(r"Traceback|File \"|/work/|/home/|/tmp/|/var/task|site-packages|\.py\b|0x[0-9a-f]{8,}")


def assert_clean_error(response: Any, status: int | tuple[int, ...]) -> dict[str, Any]:
    """The refusal has the expected status, a JSON error in its protocol's shape, and leaks nothing internal."""
    statuses = (status,) if isinstance(status, int) else status
    path = response.request.url.path
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    if path.startswith("/v1/"):  # OpenAI's error object
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["type"] in ("invalid_request_error", "server_error")
    elif path.startswith("/v2"):  # OIP / KServe: {"error": "<message>"}
        assert isinstance(error, str), error
    else:  # the task API
        assert {"code", "message"} <= set(error), error
    assert not LEAKS.search(response.text), response.text
    return body
