"""The generation settings an artifact carries in ``manifest.config["generation"]`` (written by the build)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CONFIG_KEY = "generation"


class GenerationConfig(BaseModel):
    """What the runtime needs besides the graph and tokenizer.json.

    Limits follow TGI: the prompt may hold at most ``manifest.limits.max_seq_len`` tokens, a request
    may ask for at most ``max_new_tokens``, and prompt + new tokens never exceed ``context_length``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    eos_token_ids: list[int] = Field(min_length=1, description="generation stops after any of these")
    chat_format: Literal["chatml"] = "chatml"
    default_system_prompt: str | None = Field(None, description="inserted when a chat has no system message")
    chat_template: str = Field(
        "", description="the model's own Jinja template, for reference; the runtime renders chat_format"
    )
    context_length: int = Field(ge=2, description="positions the model was trained for")
    max_new_tokens: int = Field(512, ge=1, description="the most new tokens one request may ask for")
    default_max_new_tokens: int = Field(64, ge=1, description="used when a task-API request gives none")
