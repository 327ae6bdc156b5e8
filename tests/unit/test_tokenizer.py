"""The runtime tokenizer: same ids as transformers' tokenizer, padding to the longest, truncation policy."""

from __future__ import annotations

import numpy as np
import pytest

from functions.errors import InvalidInputError, PayloadTooLargeError
from functions.inference.tokenizer import TextEncoder


@pytest.fixture(scope="module")
def encoder():
    from model_build.sources.minilm import minilm_dir

    return TextEncoder(minilm_dir() / "tokenizer.json", max_seq_len=16, max_input_chars=200)


def test_ids_match_transformers_tokenizer(encoder):
    from transformers import AutoTokenizer

    from model_build.sources.minilm import minilm_dir

    texts = ["Hello, World!", "naïve café — São Paulo 😀", "short"]
    hf = AutoTokenizer.from_pretrained(str(minilm_dir()))(texts, padding=True, return_tensors="np")
    ours = encoder.encode(texts, truncate=True)
    assert np.array_equal(ours.input_ids, hf["input_ids"])
    assert np.array_equal(ours.attention_mask, hf["attention_mask"])


def test_pads_to_the_longest_in_the_batch_not_a_fixed_length(encoder):
    batch = encoder.encode(["a", "a b c"], truncate=True)
    assert batch.input_ids.shape == (2, 5)
    assert batch.attention_mask.sum(1).tolist() == [3, 5]


def test_truncation_policy(encoder):
    long_text = "word " * 40
    cut = encoder.encode([long_text], truncate=True)
    assert cut.input_ids.shape[1] == 16 and cut.truncated == [True] and cut.input_ids[0, -1] == 102  # [SEP] kept
    with pytest.raises(PayloadTooLargeError, match="16"):
        encoder.encode([long_text], truncate=False)


def test_character_cap_and_empty_batch(encoder):
    with pytest.raises(PayloadTooLargeError, match="200"):
        encoder.encode(["x" * 201], truncate=True)
    with pytest.raises(InvalidInputError):
        encoder.encode([], truncate=True)


def test_empty_string_is_a_valid_input(encoder):
    batch = encoder.encode([""], truncate=True)
    assert batch.token_counts == [2]  # [CLS] [SEP]
