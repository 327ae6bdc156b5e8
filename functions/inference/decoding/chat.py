"""Chat messages → the model's chat format (ChatML for SmolLM2): as a string, and as token segments.

The build checks that :func:`render_chat` gives the same string as the model's own Jinja template, so the
runtime needs no template engine. To serve a chat, though, the string is never tokenized whole: a user who
types ``<|im_start|>`` or ``<|im_end|>`` would close their turn and forge system or assistant turns.
:func:`chat_segments` gives the same conversation as control tokens and plain text, and the pipeline
tokenizes every text segment as plain text (special-token strings inside it are ordinary characters).
"""

from __future__ import annotations

from dataclasses import dataclass

from functions.errors import InvalidInputError

ROLES = ("system", "user", "assistant")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class Control:
    """A control token of the chat format, inserted by the template (never by a message's text)."""

    token: str


def chat_segments(
    messages: list[ChatMessage], *, default_system_prompt: str | None, add_generation_prompt: bool = True
) -> list[str | Control]:
    """ChatML as control tokens and text: ``<|im_start|>`` ``{role}\\n{content}`` ``<|im_end|>`` ``\\n`` per
    message, then the assistant's header. Like SmolLM2's template, a default system message is inserted when
    the first message is not one."""
    if not messages:
        raise InvalidInputError("messages is empty: send at least one message", param="messages")
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            raise InvalidInputError(
                f"messages[{index}].role is {message.role!r}; use one of {', '.join(ROLES)}",
                param=f"messages[{index}].role",
            )
        if index == 0 and message.role != "system" and default_system_prompt is not None:
            turns.append(("system", default_system_prompt))
        turns.append((message.role, message.content))
    segments: list[str | Control] = []
    for role, content in turns:
        segments += [Control(IM_START), f"{role}\n{content}", Control(IM_END), "\n"]
    if add_generation_prompt:
        segments += [Control(IM_START), "assistant\n"]
    return segments


def render_chat(
    messages: list[ChatMessage], *, default_system_prompt: str | None, add_generation_prompt: bool = True
) -> str:
    """ChatML as one string: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then the assistant's
    header (what the model's Jinja template renders; for reference and the build's template gate)."""
    segments = chat_segments(
        messages, default_system_prompt=default_system_prompt, add_generation_prompt=add_generation_prompt
    )
    return "".join(s.token if isinstance(s, Control) else s for s in segments)
