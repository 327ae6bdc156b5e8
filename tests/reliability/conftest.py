"""Reliability tests record the figures they prove; `make reliability` renders them into docs/reliability.md.

Each test calls ``record(section, name, value)``; records land in ``build/reliability/<section>.json`` tagged
with the test's node id, so every figure in the report names the test that produced it. Long variants
(≥1,000 fuzz cases, a minutes-long load run) run when ``MAAS_RELIABILITY_FULL=1``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("MAAS_RELIABILITY_FULL", "") not in ("", "0", "false")
OUT_DIR = Path(os.environ.get("MAAS_RELIABILITY_OUT", REPO_ROOT / "build" / "reliability"))

Record = Callable[..., None]


class _Store:
    def __init__(self) -> None:
        self.sections: dict[str, dict[str, dict[str, Any]]] = {}

    def add(self, section: str, name: str, value: Any, test: str, note: str = "") -> None:
        self.sections.setdefault(section, {})[name] = {"value": value, "test": test, "note": note}

    def flush(self) -> None:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for section, records in self.sections.items():
            path = OUT_DIR / f"{section}.json"
            merged: dict[str, Any] = {}
            if path.is_file():  # a partial rerun updates its own records and keeps the others
                merged = json.loads(path.read_text(encoding="utf-8"))
            merged.update(records)
            path.write_text(json.dumps(merged, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def _figures() -> Iterator[_Store]:
    store = _Store()
    yield store
    store.flush()


@pytest.fixture
def record(_figures: _Store, request: pytest.FixtureRequest) -> Record:
    """``record(section, name, value, note="")``: keep a figure for docs/reliability.md, tagged with this test."""
    test = request.node.nodeid

    def _record(section: str, name: str, value: Any, note: str = "") -> None:
        _figures.add(section, name, value, test, note)

    return _record


@pytest.fixture(scope="session")
def full_run() -> bool:
    return FULL
