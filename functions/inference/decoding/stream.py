"""One decoder-only generation as a stream of text deltas: sampling, EOS, stop sequences, finish reasons.

The model runs through :class:`~functions.inference.decoding.kv_cache.KVCacheDecoder` (prefill once, then
one token per step); the text is decoded as it grows, so stop sequences match across token boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from functions.errors import ClientDisconnectedError
from functions.inference.decoding.deadline import StepClock
from functions.inference.decoding.kv_cache import KVCacheDecoder
from functions.inference.decoding.sampling import Sampler

Decode = Callable[[list[int]], str]


def _never() -> bool:
    return False


class FinishReason(StrEnum):
    STOP = "stop"  # an EOS token or a stop sequence
    LENGTH = "length"  # max_new_tokens reached, or the request's deadline: no time for another token


@dataclass
class Generation:
    """One sequence being generated. Iterate it for text deltas (streaming); read the totals when done.

    Stop sequences are searched in the decoded text, so they match across token boundaries; text that
    could still turn into a stop sequence, or an incomplete UTF-8 character, is held back until the
    next token settles it. The returned text never contains the stop sequence or the EOS token.
    ``cancelled`` is asked before every token: once it answers True (the caller went away), generation stops.
    With a ``deadline`` (``time.monotonic()``), generation also stops, with ``finish_reason = "length"``, before a
    step that would end past it (:mod:`functions.inference.decoding.deadline`).
    """

    decoder: KVCacheDecoder
    decode: Decode
    prompt_ids: list[int]
    max_new_tokens: int
    sampler: Sampler
    eos_token_ids: frozenset[int]
    stop: tuple[str, ...] = ()
    cancelled: Callable[[], bool] = _never
    deadline: float | None = None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def run(self) -> Generation:
        """Generate to the end without streaming."""
        for _ in self:
            pass
        return self

    def __iter__(self) -> Iterator[str]:
        if self.token_ids:
            raise RuntimeError("a Generation runs once; create a new one to generate again")
        clock = StepClock(self.deadline)
        if clock.expired():  # no time left even to read the prompt
            self.finish_reason = FinishReason.LENGTH
            return
        cache = self.decoder.empty_cache(capacity=len(self.prompt_ids) + self.max_new_tokens)
        clock.start()
        logits = self.decoder.forward(self.prompt_ids, cache)
        clock.stop()
        emitted = 0
        text_ids: list[int] = []
        while True:
            if self.cancelled():
                raise ClientDisconnectedError("the client disconnected; generation stopped")
            token = self.sampler(logits)
            self.token_ids.append(token)
            if token in self.eos_token_ids:
                self.finish_reason = FinishReason.STOP
                break
            text_ids.append(token)
            full = self.decode(text_ids)
            cut = _first_stop(full, self.stop)
            if cut is not None:
                self.text, self.finish_reason = full[:cut], FinishReason.STOP
                break
            self.text = full
            if len(self.token_ids) >= self.max_new_tokens:
                self.finish_reason = FinishReason.LENGTH
                break
            if not clock.room_for_step():
                self.finish_reason = FinishReason.LENGTH
                break
            safe = _safe_prefix_length(full, self.stop)
            if safe > emitted:
                yield full[emitted:safe]
                emitted = safe
            clock.start()
            logits = self.decoder.forward([token], cache)
            clock.stop()
        if len(self.text) > emitted:
            yield self.text[emitted:]


def _first_stop(text: str, stop: tuple[str, ...]) -> int | None:
    found = [index for s in stop if (index := text.find(s)) >= 0]
    return min(found) if found else None


def _safe_prefix_length(text: str, stop: tuple[str, ...]) -> int:
    """How much of ``text`` can be sent now: not a partial character, not the start of a stop sequence."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    held = 0
    for s in stop:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[end - k : end] == s[:k]:
                held = max(held, k)
                break
    return end - held
