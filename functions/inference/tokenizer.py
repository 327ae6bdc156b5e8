"""Text → token ids with HF ``tokenizers`` (Rust); padding to the longest sequence of whatever batch runs.

Tokenizing and padding are two steps: :meth:`TextEncoder.tokenize` works per request (and refuses a bad
input as that input's own error), :meth:`TextEncoder.collate` pads the sequences of one run, which may
hold several requests merged by the batching core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from functions.errors import InvalidInputError, PayloadTooLargeError


@dataclass(frozen=True)
class TokenizedText:
    """One input's tokens, unpadded."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EncodedBatch:
    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_type_ids: np.ndarray  # int64 [batch, seq]
    token_counts: list[int]  # tokens actually fed per input (after truncation)
    truncated: list[bool]

    def feeds(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


def check_text(text: str, param: str) -> None:
    """Refuse text that is not valid Unicode (a lone UTF-16 surrogate such as ``\\ud800``): it has no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{param} is not valid Unicode: character {exc.start} is a lone surrogate ({text[exc.start]!r}); "
            "send UTF-8 text (\\u escapes of surrogates must come in valid pairs)",
            param=param,
        ) from None


class TextEncoder:
    """Tokenizes with the model's own tokenizer.json and enforces the model's limits.

    Truncation policy: with ``truncate=True`` (the default for encoders, as sentence-transformers
    does) texts longer than ``max_seq_len`` tokens are cut to it and the response says so; with
    ``truncate=False`` such a text is refused with 413.
    """

    def __init__(self, tokenizer_path: Path, *, max_seq_len: int, max_input_chars: int) -> None:
        self.max_seq_len = max_seq_len
        self.max_input_chars = max_input_chars
        self._full = Tokenizer.from_file(str(tokenizer_path))
        self._full.no_truncation()
        self._full.no_padding()
        self._truncating = Tokenizer.from_file(str(tokenizer_path))
        self._truncating.enable_truncation(max_length=max_seq_len)
        self._truncating.no_padding()
        pad_id = self._full.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    def count_tokens(self, text: str) -> int:
        return len(self._full.encode(text).ids)

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[TokenizedText]:
        """One request's texts as tokens; an input over the limits, or not valid text, fails alone (4xx)."""
        if not texts:
            raise InvalidInputError("inputs is empty: send at least one text", param="inputs")
        for index, text in enumerate(texts):
            if len(text) > self.max_input_chars:
                raise PayloadTooLargeError(
                    f"inputs[{index}] has {len(text)} characters; this model accepts at most "
                    f"{self.max_input_chars} per input",
                    param=f"inputs[{index}]",
                )
            check_text(text, f"inputs[{index}]")
        encodings = self._encode_each(self._full, texts)
        lengths = [len(e.ids) for e in encodings]
        too_long = [i for i, n in enumerate(lengths) if n > self.max_seq_len]
        if too_long and not truncate:
            first = too_long[0]
            raise PayloadTooLargeError(
                f"inputs[{first}] has {lengths[first]} tokens; the model's limit is {self.max_seq_len}. "
                "Shorten it, or set parameters.truncate=true to cut it to the limit",
                param=f"inputs[{first}]",
            )
        if too_long:
            cut = self._encode_each(self._truncating, [texts[i] for i in too_long])
            for i, encoding in zip(too_long, cut, strict=True):
                encodings[i] = encoding
        cut_set = set(too_long)
        return [TokenizedText(list(e.ids), list(e.type_ids), i in cut_set) for i, e in enumerate(encodings)]

    @staticmethod
    def _encode_each(tokenizer: Tokenizer, texts: Sequence[str]) -> list[Encoding]:
        """``encode_batch``; should the Rust side refuse the batch, find the input it refused and blame it alone."""
        try:
            return list(tokenizer.encode_batch(list(texts), add_special_tokens=True))
        except Exception:
            for index, text in enumerate(texts):
                try:
                    tokenizer.encode(text, add_special_tokens=True)
                except Exception as exc:
                    raise InvalidInputError(
                        f"inputs[{index}] could not be tokenized: {str(exc)[:200]}", param=f"inputs[{index}]"
                    ) from exc
            raise

    def collate(self, items: Sequence[TokenizedText]) -> EncodedBatch:
        """Pad a run's sequences to the longest of them."""
        batch, width = len(items), max(item.length for item in items)
        input_ids = np.full((batch, width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((batch, width), dtype=np.int64)
        token_type_ids = np.zeros((batch, width), dtype=np.int64)
        for row, item in enumerate(items):
            n = item.length
            input_ids[row, :n] = item.ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = item.type_ids
        return EncodedBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            token_counts=[item.length for item in items],
            truncated=[item.truncated for item in items],
        )

    def encode(self, texts: Sequence[str], *, truncate: bool) -> EncodedBatch:
        """Tokenize and pad in one go (one request that runs alone)."""
        return self.collate(self.tokenize(texts, truncate=truncate))
