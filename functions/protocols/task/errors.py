"""The task API's error shape: ``{"error": {"code", "message", "param"}}``."""

from __future__ import annotations

from typing import Any

from functions.protocols.base import Protocol, register


def render(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": param}}


TASK_API = register(
    Protocol(
        name="task",
        prefix="/models",
        render=render,
        schema_name="TaskApiError",
        schema={
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                    },
                }
            },
        },
    )
)
