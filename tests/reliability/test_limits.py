"""Every input limit, at the limit and at limit + 1, in each protocol that exposes it.

A refusal must carry the right status, a JSON error in the protocol's own shape (OpenAI's error object on
``/v1/*``, ``{"error": "..."}`` on ``/v2/*``) and nothing internal. Limits come from the catalog (through
the artifact manifest) and from settings; the defaults follow TEI (2 MB body, 32 inputs per request).
"""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.support import assert_clean_error

EMBED = "minilm-embed"
CLASSIFIER = "intent-classifier"
MiB = 1024 * 1024


def padded_json(payload: dict[str, Any], size: int) -> bytes:
    """``payload`` as JSON padded with insignificant whitespace to exactly ``size`` bytes."""
    raw = json.dumps(payload).encode()
    assert len(raw) <= size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


# (path, payload) of a small valid request per protocol
ROUTES = {
    "task": (f"/models/{EMBED}/predict", {"inputs": ["hello"]}),
    "openai": ("/v1/embeddings", {"model": EMBED, "input": ["hello"]}),
    "oip": (
        f"/v2/models/{EMBED}/infer",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]},
    ),
}


def batch_request(
    protocol: str, texts: list[str], parameters: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    path = ROUTES[protocol][0]
    if protocol == "task":
        return path, {"inputs": texts, "parameters": parameters or {}}
    if protocol == "openai":
        return path, {"model": EMBED, "input": texts}
    return path, {
        "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        "parameters": parameters or {},
    }


def limit_figure(record, name: str, limit: Any, at: int | str, over: int, note: str = "") -> None:
    record("limits", name, {"limit": limit, "at_limit": at, "over_limit": over}, note)


def max_request_bytes(client) -> int:
    from functions.settings import get_settings

    return get_settings().max_request_bytes


@pytest.mark.parametrize("protocol", list(ROUTES))
def test_request_bytes_at_and_over_the_cap(client, record, protocol):
    limit = max_request_bytes(client)
    path, payload = ROUTES[protocol]
    headers = {"content-type": "application/json"}
    at = client.post(path, content=padded_json(payload, limit), headers=headers)
    assert at.status_code == 200, at.text
    over = client.post(path, content=padded_json(payload, limit + 1), headers=headers)
    assert_clean_error(over, 413)
    limit_figure(record, f"request bytes ({protocol})", limit, at.status_code, over.status_code)


def chunks(body: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_body_without_content_length_is_cut_at_the_cap(client, record):
    limit = max_request_bytes(client)
    path, payload = ROUTES["task"]
    headers = {"content-type": "application/json"}
    at = client.post(path, content=chunks(padded_json(payload, limit)), headers=headers)
    over = client.post(path, content=chunks(padded_json(payload, limit + 1)), headers=headers)
    assert at.status_code == 200 and "content-length" not in at.request.headers
    assert_clean_error(over, 413)
    limit_figure(record, "request bytes (chunked, no Content-Length)", limit, at.status_code, over.status_code)


@pytest.mark.parametrize("protocol", list(ROUTES))
def test_decompressed_bytes_at_and_over_the_cap(client, record, protocol):
    limit = max_request_bytes(client)
    path, payload = ROUTES[protocol]
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    at = client.post(path, content=gzip.compress(padded_json(payload, limit)), headers=headers)
    assert at.status_code == 200, at.text
    over = client.post(path, content=gzip.compress(padded_json(payload, limit + 1)), headers=headers)
    body = assert_clean_error(over, 413)
    assert "decompressed" in json.dumps(body)
    limit_figure(record, f"decompressed request bytes ({protocol})", limit, at.status_code, over.status_code)


def gzip_bomb(inflated: int) -> bytes:
    """``inflated`` zero bytes, gzip-compressed (about 1,000:1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * MiB
    parts = [compressor.compress(block) for _ in range(inflated // MiB)]
    return b"".join([*parts, compressor.flush()])


def test_a_gzip_bomb_is_refused_without_expanding_in_memory(client, record, full_run):
    # GIVEN a body of a few hundred KB that inflates to 256 MiB (1 GiB in the full run)
    inflated = (1024 if full_run else 256) * MiB
    bomb = gzip_bomb(inflated)
    assert len(bomb) < max_request_bytes(client)
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    # WHEN it is posted
    tracemalloc.start()
    started = time.perf_counter()
    response = client.post(ROUTES["task"][0], content=bomb, headers=headers)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # THEN it is refused with 413, quickly, and never held in memory beyond the cap
    assert_clean_error(response, 413)
    assert peak < 4 * max_request_bytes(client) + 4 * MiB, peak
    assert seconds < 5, seconds
    record(
        "limits",
        "gzip bomb",
        {
            "compressed_bytes": len(bomb),
            "inflates_to_bytes": inflated,
            "status": response.status_code,
            "seconds": round(seconds, 3),
            "peak_python_alloc_mib": round(peak / MiB, 1),
        },
        "decompression stops at the cap + 1 byte",
    )


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [
        ("br", b"\x0b\x02\x80{}\x03", 415),
        ("gzip, gzip", gzip.compress(gzip.compress(b"{}")), 415),
        ("gzip", b"\x1f\x8b\x08\x00not really gzip", 400),
        ("gzip", gzip.compress(b'{"inputs": ["hello"]}')[:-6], 400),
        ("deflate", b"garbage", 400),
    ],
    ids=["brotli", "stacked-gzip", "corrupt-gzip", "truncated-gzip", "corrupt-deflate"],
)
def test_unsupported_or_malformed_encodings_are_refused(client, record, request, encoding, body, status):
    response = client.post(
        ROUTES["task"][0], content=body, headers={"content-type": "application/json", "content-encoding": encoding}
    )
    assert_clean_error(response, status)
    record("limits", f"Content-Encoding: {encoding} ({request.node.callspec.id})", {"status": response.status_code})


def test_deflate_and_plain_identity_bodies_are_accepted(client):
    payload = json.dumps({"inputs": ["hello"]}).encode()
    for encoding, body in (("deflate", zlib.compress(payload)), ("identity", payload)):
        response = client.post(
            ROUTES["task"][0], content=body, headers={"content-type": "application/json", "content-encoding": encoding}
        )
        assert response.status_code == 200, (encoding, response.text)


@pytest.mark.parametrize("protocol", list(ROUTES))
def test_batch_items_at_and_over_max_batch(client, registry, record, protocol):
    limit = registry.get(EMBED).limits.max_batch
    path, body = batch_request(protocol, [f"text {i}" for i in range(limit)])
    at = client.post(path, json=body)
    assert at.status_code == 200, at.text
    path, body = batch_request(protocol, [f"text {i}" for i in range(limit + 1)])
    over = client.post(path, json=body)
    assert_clean_error(over, 413)
    limit_figure(record, f"inputs per request ({protocol})", limit, at.status_code, over.status_code)


def words_with_tokens(registry, n: int) -> str:
    """A text that the model's tokenizer turns into exactly ``n`` tokens, special tokens included."""
    encoder = registry.get(EMBED).encoder
    text = " ".join(["a"] * (n - 2))
    assert encoder.count_tokens(text) == n
    return text


@pytest.mark.parametrize("protocol", ["task", "oip"])
def test_tokens_per_input_at_and_over_max_seq_len_when_truncation_is_off(client, registry, record, protocol):
    limit = registry.get(EMBED).limits.max_seq_len
    path, body = batch_request(protocol, [words_with_tokens(registry, limit)], {"truncate": False})
    at = client.post(path, json=body)
    assert at.status_code == 200, at.text
    path, body = batch_request(protocol, [words_with_tokens(registry, limit + 1)], {"truncate": False})
    over = client.post(path, json=body)
    assert_clean_error(over, 413)
    limit_figure(record, f"tokens per input, truncate=false ({protocol})", limit, at.status_code, over.status_code)


def test_tokens_per_input_over_the_limit_are_truncated_by_default(client, registry, record):
    limit = registry.get(EMBED).limits.max_seq_len
    at = client.post(ROUTES["task"][0], json={"inputs": [words_with_tokens(registry, limit)]})
    over = client.post(ROUTES["task"][0], json={"inputs": [words_with_tokens(registry, limit + 1)]})
    assert at.json()["truncated"] == [False] and over.json()["truncated"] == [True]
    assert over.json()["usage"]["input_tokens"] == limit
    limit_figure(
        record,
        "tokens per input, default truncate=true (task)",
        limit,
        at.status_code,
        over.status_code,
        "over the limit: 200 with truncated=[true], input_tokens = limit",
    )


def test_tokens_per_batch_at_the_limit(client, registry, record):
    # The per-batch token bound is max_batch x max_seq_len; a full batch of full-length inputs is served.
    limits = registry.get(EMBED).limits
    text = words_with_tokens(registry, limits.max_seq_len)
    at = client.post(ROUTES["task"][0], json={"inputs": [text] * limits.max_batch, "parameters": {"truncate": False}})
    assert at.status_code == 200 and at.json()["usage"]["input_tokens"] == limits.max_batch * limits.max_seq_len
    over = client.post(ROUTES["task"][0], json={"inputs": [text] * (limits.max_batch + 1)})
    assert_clean_error(over, 413)
    limit_figure(
        record,
        "tokens per request (task)",
        limits.max_batch * limits.max_seq_len,
        at.status_code,
        over.status_code,
        "bounded as max_batch x max_seq_len; no separate per-batch token setting",
    )


@pytest.mark.parametrize(
    ("model", "protocol"), [(EMBED, "task"), (EMBED, "openai"), (EMBED, "oip"), (CLASSIFIER, "task")]
)
def test_characters_per_input_at_and_over_max_input_chars(client, registry, record, model, protocol):
    limit = registry.get(model).limits.max_input_chars
    path, at_body = batch_request(protocol, ["a" * limit])
    over_path, over_body = batch_request(protocol, ["a" * (limit + 1)])
    if model != EMBED:
        path = over_path = f"/models/{model}/predict"
    at = client.post(path, json=at_body)
    assert at.status_code == 200, at.text
    over = client.post(over_path, json=over_body)
    assert_clean_error(over, 413)
    limit_figure(record, f"characters per input ({model}, {protocol})", limit, at.status_code, over.status_code)


def test_oip_shape_cannot_smuggle_a_larger_batch(client, registry, record):
    # GIVEN 33 texts declared as a [1, 33] tensor (shape[0] says 1)
    limit = registry.get(EMBED).limits.max_batch
    texts = [f"t{i}" for i in range(limit + 1)]
    body = {"inputs": [{"name": "text", "shape": [1, limit + 1], "datatype": "BYTES", "data": texts}]}
    # THEN the inputs are counted, not the first dimension
    assert_clean_error(client.post(ROUTES["oip"][0], json=body), 413)
    record("limits", "OIP [1, 33] BYTES tensor (batch smuggling)", {"status": 413})


def test_new_token_limits_of_generation_models(record):
    from types import SimpleNamespace

    from functions.errors import InvalidInputError, PayloadTooLargeError

    generation = pytest.importorskip("functions.inference.pipelines.generation")
    owner = SimpleNamespace(
        name="gen", config=SimpleNamespace(max_new_tokens=512, context_length=1024, default_max_new_tokens=64)
    )
    budget = generation.GenerationPipeline.new_token_budget
    assert budget(owner, 10, 512) == 512
    with pytest.raises(InvalidInputError):
        budget(owner, 10, 513)
    limit_figure(
        record,
        "new tokens per request (generation, unit)",
        512,
        "accepted",
        422,
        "InvalidInputError (422) above the model's max_new_tokens",
    )
    assert budget(owner, 600, 424) == 424
    with pytest.raises(PayloadTooLargeError):
        budget(owner, 600, 425)
    limit_figure(record, "prompt + new tokens vs context (generation, unit)", 1024, "accepted", 413)


def png_bytes(width: int, height: int, pad_to: int | None = None) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    raw = buffer.getvalue()
    return raw + b"\0" * (pad_to - len(raw)) if pad_to else raw  # trailing bytes after IEND are ignored


def test_image_bytes_and_pixels_at_and_over_their_limits(record):
    from functions.errors import PayloadTooLargeError
    from functions.inference.image_config import ImagePreprocessing
    from functions.inference.images import decode_image

    config = ImagePreprocessing(size=8, max_image_bytes=4096, max_image_pixels=64 * 64)
    assert decode_image(png_bytes(8, 8, pad_to=4096), config).image.size == (8, 8)
    with pytest.raises(PayloadTooLargeError):
        decode_image(png_bytes(8, 8, pad_to=4097), config)
    limit_figure(record, "image bytes (decode_image)", 4096, "accepted", 413, "catalog default 8 MiB; scaled down here")
    assert decode_image(png_bytes(64, 64), config).image.size == (64, 64)
    with pytest.raises(PayloadTooLargeError):
        decode_image(png_bytes(64, 65), config)
    limit_figure(
        record, "image pixels (decode_image)", 64 * 64, "accepted", 413, "catalog default 40 MP; read from the header"
    )


def test_an_unexpected_failure_is_a_500_that_leaks_nothing(client, registry, monkeypatch, record):
    # GIVEN a model that fails with an internal error naming a file path (as real exceptions do)
    pipeline = registry.get(EMBED)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom in /work/main/functions/inference/session.py line 42 at 0x7f3a2b1c9d80")

    for method in ("execute",):  # every protocol runs the model through execute
        monkeypatch.setattr(pipeline, method, broken)
    # WHEN each protocol calls it THEN a 500 in the protocol's shape says only to quote the request id
    for protocol in ROUTES:
        path, body = ROUTES[protocol]
        response = client.post(path, json=body, headers={"x-request-id": f"rid-{protocol}"})
        error = assert_clean_error(response, 500)
        assert f"rid-{protocol}" in json.dumps(error) and "boom" not in response.text
    record("limits", "unexpected internal error (all protocols)", {"status": 500, "leaks": 0},
           "message: 'internal error; quote request id <id>'")  # fmt: skip
