"""Chat messages → one prompt string in the model's chat format (ChatML for SmolLM2).

The build checks that this renderer gives the same string as the model's own Jinja template, so the
runtime needs no template engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.errors import InvalidInputError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


def render_chat(
    messages: list[ChatMessage], *, default_system_prompt: str | None, add_generation_prompt: bool = True
) -> str:
    """ChatML: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then the assistant's header.

    Like SmolLM2's template, a default system message is inserted when the first message is not one.
    """
    if not messages:
        raise InvalidInputError("messages is empty: send at least one message", param="messages")
    parts: list[str] = []
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            raise InvalidInputError(
                f"messages[{index}].role is {message.role!r}; use one of {', '.join(ROLES)}",
                param=f"messages[{index}].role",
            )
        if index == 0 and message.role != "system" and default_system_prompt is not None:
            parts.append(f"<|im_start|>system\n{default_system_prompt}<|im_end|>\n")
        parts.append(f"<|im_start|>{message.role}\n{message.content}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)
