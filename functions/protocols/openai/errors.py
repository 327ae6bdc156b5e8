"""OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}`` (what the ``openai`` SDK raises from)."""

from __future__ import annotations

from typing import Any

from functions.protocols.base import Protocol, register


def render(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


OPENAI = register(
    Protocol(
        name="openai",
        prefix="/v1",
        render=render,
        schema_name="OpenAIError",
        schema={
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
    )
)
