"""The Open Inference Protocol's error shape (KServe / Triton): ``{"error": "<message>"}``."""

from __future__ import annotations

from typing import Any

from functions.protocols.base import Protocol, register


def render(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": message}


OIP = register(
    Protocol(
        name="oip",
        prefix="/v2",
        render=render,
        schema_name="OipError",
        schema={"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    )
)
