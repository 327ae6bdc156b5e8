"""Dynamic micro-batching: concurrent requests share ORT runs, and each caller still gets exactly its own answer."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from functions.errors import PayloadTooLargeError
from functions.inference.batching import MicroBatcher
from functions.settings import Settings
from functions.web.app import create_app

TEXTS = [f"request number {i} asks about {topic}" for i, topic in enumerate(
    ["the weather", "a flight", "my bank balance", "a recipe", "music", "the news", "a timer", "translation"] * 2)]


def _cosine(a, b) -> float:  # type: ignore[no-untyped-def]
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


async def _concurrently(batcher: MicroBatcher, requests: list[tuple[list, dict | None]]) -> list:
    return await asyncio.gather(*(batcher.predict(inputs, params) for inputs, params in requests),
                                return_exceptions=True)


def test_concurrent_single_requests_share_runs_and_get_their_own_vectors(registry):
    pipeline = registry.get("minilm-embed")
    batcher = MicroBatcher(pipeline, max_wait_ms=20)
    results = asyncio.run(_concurrently(batcher, [([t], None) for t in TEXTS]))
    alone = [pipeline.predict([t]) for t in TEXTS]
    assert batcher.stats.items == len(TEXTS) and batcher.stats.runs < len(TEXTS) // 2
    assert batcher.stats.largest_run > 1
    for i, result in enumerate(results):
        assert len(result.outputs) == 1
        sims = [_cosine(result.outputs[0], other.outputs[0]) for other in alone]
        assert int(np.argmax(sims)) == i and sims[i] > 0.99  # its own text, not a neighbour's
        assert result.input_tokens == alone[i].input_tokens  # exact usage per caller


def test_one_bad_input_fails_only_its_own_request(registry):
    pipeline = registry.get("minilm-embed")
    too_long = "word " * (pipeline.limits.max_input_chars // 5 + 10)
    batcher = MicroBatcher(pipeline, max_wait_ms=20)
    requests = [([t], None) for t in TEXTS[:5]] + [([too_long[: pipeline.limits.max_input_chars + 1]], None)]
    results = asyncio.run(_concurrently(batcher, requests))
    assert all(not isinstance(r, Exception) and len(r.outputs) == 1 for r in results[:5])
    assert isinstance(results[5], PayloadTooLargeError)


def test_requests_with_different_parameters_are_not_merged(registry):
    pipeline = registry.get("intent-classifier")
    batcher = MicroBatcher(pipeline, max_wait_ms=20)
    requests = [([t], {"top_k": 1 + i % 3}) for i, t in enumerate(TEXTS[:9])]
    results = asyncio.run(_concurrently(batcher, requests))
    for (_, params), result in zip(requests, results, strict=True):
        assert len(result.outputs[0]) == params["top_k"]
        assert isinstance(result.outputs[0], list)
    assert batcher.stats.runs >= 3  # three parameter sets never share a run


def test_the_http_api_micro_batches_when_enabled(registry):
    app = create_app(registry, Settings(microbatch=True, microbatch_wait_ms=20))

    async def call() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            task = [client.post("/models/intent-classifier/predict", json={"inputs": t}) for t in TEXTS[:8]]
            openai = [client.post("/v1/embeddings", json={"model": "minilm-embed", "input": t}) for t in TEXTS[:8]]
            return await asyncio.gather(*task, *openai)

    responses = asyncio.run(call())
    assert [r.status_code for r in responses] == [200] * 16
    labels = [r.json()["outputs"][0] for r in responses[:8]]
    expected = [registry.get("intent-classifier").predict([t]).outputs[0] for t in TEXTS[:8]]
    assert [ranked[0]["label"] for ranked in labels] == [e[0]["label"] for e in expected]
    for text, response in zip(TEXTS[:8], responses[8:], strict=True):
        body = response.json()
        alone = registry.get("minilm-embed").predict([text])
        assert body["usage"]["prompt_tokens"] == alone.input_tokens
        assert _cosine(body["data"][0]["embedding"], alone.outputs[0]) > 0.99
    stats = {name: b.stats for name, b in app.state.batchers.items()}
    assert set(stats) == {"intent-classifier", "minilm-embed"}
    assert all(s.items == 8 and s.runs < 8 for s in stats.values())


def test_micro_batching_is_off_by_default(registry, monkeypatch):
    monkeypatch.delenv("MAAS_MICROBATCH", raising=False)
    app = create_app(registry, Settings())
    assert Settings().microbatch is False and app.state.batchers is None


def test_a_result_that_cannot_be_split_fails_its_callers_instead_of_hanging(registry, monkeypatch):
    pipeline = registry.get("minilm-embed")
    batcher = MicroBatcher(pipeline, max_wait_ms=20)
    original = pipeline.execute

    def short(features, parameters):  # type: ignore[no-untyped-def]
        return original(features, parameters)[:-1]  # one output missing: never hand out a wrong slice

    monkeypatch.setattr(pipeline, "execute", short)

    async def run() -> list:
        return await asyncio.wait_for(_concurrently(batcher, [([t], None) for t in TEXTS[:4]]), timeout=30)

    results = asyncio.run(run())
    assert len(results) == 4 and all(isinstance(r, Exception) for r in results)


def test_one_poison_request_among_30_good_ones_fails_alone_over_http(registry):
    """GIVEN micro-batching on (the GPU container's default) WHEN 30 good requests and one whose text holds a lone
    UTF-16 surrogate arrive together THEN the 30 get 200 with their own vectors and the poison one a 422 naming it."""
    app = create_app(registry, Settings(microbatch=True, microbatch_wait_ms=50))
    poison = '{"inputs": "bad \\ud800 text"}'  # valid JSON; the string it decodes to has no UTF-8 form

    async def call() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            good = [client.post("/models/minilm-embed/predict", json={"inputs": f"{TEXTS[i % 16]} {i}"})
                    for i in range(30)]
            bad = client.post("/models/minilm-embed/predict", content=poison,
                              headers={"content-type": "application/json"})
            return await asyncio.gather(*good, bad)

    for _ in range(3):  # the report saw 30 x 500 in three rounds out of three
        responses = asyncio.run(call())
        assert [r.status_code for r in responses[:30]] == [200] * 30
        assert responses[30].status_code == 422
        error = responses[30].json()["error"]
        assert error["param"] == "inputs[0]" and "surrogate" in error["message"]
    assert app.state.batchers["minilm-embed"].stats.runs < 3 * 30  # the good requests did share runs
