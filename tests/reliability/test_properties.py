"""Hypothesis properties at the tokenizer, pipeline, codec and HTTP boundaries.

Whatever text arrives — empty, huge, control characters, NUL, lone combining marks, RTL overrides, emoji,
mixed batches — the runtime either answers with well-formed output or refuses with a typed error (413/422);
it never crashes, never returns NaN, never exceeds the model's limits.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.errors import InvalidInputError, MaasError, PayloadTooLargeError
from tests.reliability.conftest import FULL
from tests.reliability.support import assert_clean_error

EXAMPLES = 400 if FULL else 40
PROFILE = settings(max_examples=EXAMPLES, deadline=None, derandomize=not FULL, suppress_health_check=list(HealthCheck))
ODD = "\x00\x01\x1b\x7f\u0085\u200b\u200d\u202e\u2028\ufeff\ufffd\U0001f600\U0001f469\u200d\U0001f4bb\u0301\u05d0\u0627"

# Text as hostile clients send it: any code point (incl. controls), odd ones weighted in, sometimes very long.
texts = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(ODD), max_size=300),
    st.builds(lambda piece, n: piece * n, st.text(min_size=1, max_size=8), st.integers(1, 6000)),
    st.just(""),
)
batches = st.lists(texts, min_size=0, max_size=40)
_outcomes: Counter[str] = Counter()
_batch_cosines: list[float] = []


def _classify(call: Any) -> str:
    try:
        call()
    except PayloadTooLargeError:
        return "413"
    except InvalidInputError:
        return "422"
    return "ok"


@pytest.fixture(scope="module")
def embedder(registry):
    return registry.get("minilm-embed")


@given(batch=batches, truncate=st.booleans())
@PROFILE
def test_tokenizer_answers_or_refuses_with_a_typed_error(embedder, batch, truncate):
    encoder, limits = embedder.encoder, embedder.limits
    try:
        encoded = encoder.encode(batch, truncate=truncate)
    except PayloadTooLargeError:
        too_long_chars = any(len(t) > limits.max_input_chars for t in batch)
        assert too_long_chars or not truncate
        _outcomes["tokenizer 413"] += 1
        return
    except InvalidInputError:
        assert not batch  # the only 422 here: an empty batch
        _outcomes["tokenizer 422"] += 1
        return
    _outcomes["tokenizer ok"] += 1
    n = len(batch)
    assert encoded.input_ids.shape[0] == n and encoded.input_ids.shape[1] <= limits.max_seq_len
    assert encoded.attention_mask.sum(axis=1).tolist() == encoded.token_counts
    assert all(2 <= c <= limits.max_seq_len for c in encoded.token_counts)
    assert encoded.input_ids.min() >= 0 and encoded.input_ids.max() < encoder._full.get_vocab_size()


@given(batch=st.lists(texts, min_size=1, max_size=32))
@settings(parent=PROFILE, max_examples=max(10, EXAMPLES // 4))
def test_embeddings_are_finite_unit_vectors_for_any_text(embedder, batch):
    batch = [t[: embedder.limits.max_input_chars] for t in batch]
    vectors, _ = embedder.embed(batch)
    _outcomes["embed ok"] += 1
    assert vectors.shape == (len(batch), embedder.manifest.embedding_dim)
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


@given(batch=st.lists(texts, min_size=1, max_size=4))
@settings(parent=PROFILE, max_examples=max(10, EXAMPLES // 4))
def test_a_text_embeds_the_same_alone_and_in_a_mixed_batch(embedder, batch):
    batch = [t[:2000] for t in batch]
    together, _ = embedder.embed(batch)
    alone, _ = embedder.embed(batch[:1])
    cosine = float(together[0] @ alone[0])
    _batch_cosines.append(cosine)
    # Not identical: dynamic INT8 picks activation scales per batch, padding included (reported in the figures)
    assert cosine > 0.9


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@given(
    inputs=st.one_of(texts, st.lists(texts, max_size=40), json_values),
    parameters=st.one_of(st.just({}), st.fixed_dictionaries({}, optional={"top_k": json_values}), json_values),
)
@PROFILE
def test_task_api_never_fails_on_any_json(client, inputs, parameters):
    body = {"inputs": inputs, "parameters": parameters}
    response = client.post("/models/intent-classifier/predict", json=body)
    _outcomes[f"task api {response.status_code}"] += 1
    if response.status_code == 200:
        outputs = response.json()["outputs"]
        assert len(outputs) == (1 if isinstance(inputs, str) else len(inputs))
        assert all(math.isfinite(o[0]["score"]) for o in outputs)
    else:
        assert_clean_error(response, (413, 422))


@given(body=st.binary(max_size=2000), header=st.one_of(st.none(), st.integers(-5, 2100).map(str), st.text(max_size=5)))
@PROFILE
def test_oip_codec_parses_or_refuses_any_bytes(body, header):
    from functions.protocols.oip.codec import parse_infer_request

    try:
        parse_infer_request(body, header)
    except InvalidInputError:
        _outcomes["oip codec 422"] += 1
        return
    _outcomes["oip codec ok"] += 1


def _oip_binary(texts_: list[bytes], declared: int, shape: list[int]) -> tuple[bytes, str]:
    payload = b"".join(len(t).to_bytes(4, "little") + t for t in texts_)
    header = json.dumps(
        {"inputs": [{"name": "text", "shape": shape, "datatype": "BYTES",
                     "parameters": {"binary_data_size": declared}}]}
    ).encode()  # fmt: skip
    return header + payload, str(len(header))


@given(raw=st.lists(st.binary(max_size=40), min_size=1, max_size=8), skew=st.integers(-3, 3), lie=st.booleans())
@PROFILE
def test_oip_binary_tensors_with_hostile_lengths_are_refused_cleanly(client, raw, skew, lie):
    size = sum(4 + len(t) for t in raw)
    body, header = _oip_binary(raw, size + skew, [len(raw) + (1 if lie else 0)])
    response = client.post(
        "/v2/models/minilm-embed/infer",
        content=body,
        headers={"inference-header-content-length": header, "content-type": "application/octet-stream"},
    )
    _outcomes[f"oip binary {response.status_code}"] += 1
    if response.status_code != 200:
        assert_clean_error(response, (413, 422))


@given(body=st.binary(max_size=3000), wrap=st.booleans())
@PROFILE
def test_any_gzip_body_is_answered_without_a_server_error(client, body, wrap):
    content = gzip.compress(body) if wrap else body
    response = client.post(
        "/models/minilm-embed/predict",
        content=content,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    _outcomes[f"gzip body {response.status_code}"] += 1
    assert_clean_error(response, (400, 413, 422)) if response.status_code != 200 else None


def test_zz_record_property_outcomes(record):
    # Runs after the properties above (file order): the outcome mix they produced, for the report.
    if not _outcomes:
        pytest.skip("run with the property tests")
    record(
        "fuzz",
        "hypothesis properties",
        {"examples_per_property": EXAMPLES, "outcomes": dict(sorted(_outcomes.items())), "unexpected_exceptions": 0},
    )
    if _batch_cosines:
        record(
            "fuzz",
            "same text alone vs in a mixed batch (cosine)",
            {
                "examples": len(_batch_cosines),
                "min": round(min(_batch_cosines), 4),
                "mean": round(sum(_batch_cosines) / len(_batch_cosines), 4),
            },
            "INT8 dynamic quantization scales activations per batch, padding included: batch-dependent vectors",
        )


def test_errors_are_maas_errors():
    assert issubclass(PayloadTooLargeError, MaasError) and issubclass(InvalidInputError, MaasError)
