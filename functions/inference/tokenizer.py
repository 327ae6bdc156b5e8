"""Text → padded id tensors with HF ``tokenizers`` (Rust), padding to the batch's longest sequence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from functions.errors import InvalidInputError, PayloadTooLargeError


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


class TextEncoder:
    """Tokenizes a batch with the model's own tokenizer.json and enforces the model's limits.

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
        pad_token = "[PAD]"
        pad_id = self._full.token_to_id(pad_token)
        self.pad_id = 0 if pad_id is None else pad_id

    def count_tokens(self, text: str) -> int:
        return len(self._full.encode(text).ids)

    def encode(self, texts: list[str], *, truncate: bool) -> EncodedBatch:
        for index, text in enumerate(texts):
            if len(text) > self.max_input_chars:
                raise PayloadTooLargeError(
                    f"inputs[{index}] has {len(text)} characters; this model accepts at most "
                    f"{self.max_input_chars} per input",
                    param=f"inputs[{index}]",
                )
        if not texts:
            raise InvalidInputError("inputs is empty: send at least one text", param="inputs")
        encodings = self._full.encode_batch(texts, add_special_tokens=True)
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
            cut = self._truncating.encode_batch([texts[i] for i in too_long], add_special_tokens=True)
            for i, encoding in zip(too_long, cut, strict=True):
                encodings[i] = encoding
        batch, width = len(encodings), max(len(e.ids) for e in encodings)
        input_ids = np.full((batch, width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((batch, width), dtype=np.int64)
        token_type_ids = np.zeros((batch, width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            input_ids[row, :n] = encoding.ids
            attention_mask[row, :n] = encoding.attention_mask
            token_type_ids[row, :n] = encoding.type_ids
        too_long_set = set(too_long)
        return EncodedBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            token_counts=[len(e.ids) for e in encodings],
            truncated=[i in too_long_set for i in range(batch)],
        )
