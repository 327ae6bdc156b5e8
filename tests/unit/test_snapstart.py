"""GIVEN Lambda's SnapStart runtime (its snapshot_restore_py module) WHEN a handler module initialises THEN it
registers hooks, and after a restore the AWS clients are made anew and the next request counts as a cold start."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest

from functions import telemetry
from functions.batch import s3io
from functions.handlers import snapstart


@pytest.fixture
def snapstart_runtime(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Callable[[], None]]]:
    hooks: dict[str, list[Callable[[], None]]] = {"before": [], "after": []}
    module = types.ModuleType("snapshot_restore_py")
    module.register_before_snapshot = hooks["before"].append  # type: ignore[attr-defined]
    module.register_after_restore = hooks["after"].append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", module)
    return hooks


def test_hooks_register_on_a_snapstart_runtime_and_renew_clients_after_restore(snapstart_runtime, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert snapstart.register_hooks() is True
    assert snapstart_runtime["before"] == [snapstart.before_snapshot]
    assert snapstart_runtime["after"] == [snapstart.after_restore]
    client = s3io.s3_client()
    assert s3io.s3_client() is client  # cached for the life of the process...
    telemetry._cold_models.add("minilm-embed")
    snapstart_runtime["after"][0]()  # ... until Lambda restores the snapshot
    assert s3io.s3_client() is not client
    assert "minilm-embed" not in telemetry._cold_models


def test_nothing_is_registered_off_snapstart(monkeypatch):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # import fails, as outside Lambda
    assert snapstart.register_hooks() is False
