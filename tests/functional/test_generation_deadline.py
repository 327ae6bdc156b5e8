"""GIVEN smollm2-chat deployed with a short request time (the integration or function timeout) WHEN a request asks
for more tokens than fit in it — the issue's max_batch 4 x 512 tokens, a chat of 512, streamed or not, through
uvicorn's app or Lambda's Mangum path — THEN the answer comes back in time, every generation that ran out of time
says finish_reason "length", and the usage counts exactly the tokens made."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.test_generation import MODEL, artifact, registry  # noqa: F401  (module fixtures)

pytestmark = [pytest.mark.slow]
TIMEOUT_S = 4.0  # MAAS_REQUEST_TIMEOUT_S: 3 s of generation after the margin, far from 4 x 512 tokens
LONG = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # greedy continues the count past 500 tokens
STORY = "Write a very long story about a dragon who learns to cook. Make it at least 1000 words."  # 400+ tokens


@pytest.fixture(scope="module")
def client(registry: Any) -> Iterator[Any]:  # noqa: F811
    from fastapi.testclient import TestClient

    from functions.settings import Settings
    from functions.web.app import create_app

    app = create_app(registry, Settings(request_timeout_s=TIMEOUT_S))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_task_api_batch_of_four_by_512_answers_in_time(client: Any, registry: Any) -> None:  # noqa: F811
    response, elapsed = _timed(
        lambda: client.post(
            f"/models/{MODEL}/predict", json={"inputs": [LONG] * 4, "parameters": {"max_new_tokens": 512}}
        )
    )
    assert response.status_code == 200, response.text
    assert elapsed < TIMEOUT_S
    outputs = response.json()["outputs"]
    assert [o["finish_reason"] for o in outputs] == ["length"] * 4
    assert 0 < outputs[0]["generated_tokens"] < 512
    pipeline = registry.get(MODEL)
    for output in outputs:  # the counts are those of the text returned
        assert len(pipeline.tokenizer.encode(output["generated_text"], add_special_tokens=False).ids) == pytest.approx(
            output["generated_tokens"], abs=2
        )


def test_chat_of_512_tokens_stops_in_time_with_its_usage(client: Any) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": STORY}], "max_tokens": 512, "temperature": 0}
    response, elapsed = _timed(lambda: client.post("/v1/chat/completions", json=body))
    assert response.status_code == 200 and elapsed < TIMEOUT_S
    answer = response.json()
    assert answer["choices"][0]["finish_reason"] == "length"
    usage = answer["usage"]
    assert (
        0 < usage["completion_tokens"] < 512
        and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )


def test_streamed_chat_ends_in_time_with_a_length_chunk_and_usage(client: Any) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": STORY}],
        "max_tokens": 512,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    def stream() -> list[dict[str, Any]]:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        return [json.loads(line[6:]) for line in lines[:-1]]

    chunks, elapsed = _timed(stream)
    assert elapsed < TIMEOUT_S
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["length"]
    assert 0 < chunks[-1]["usage"]["completion_tokens"] < 512


def test_completions_of_two_prompts_share_the_time(client: Any) -> None:
    body = {"model": MODEL, "prompt": [LONG, LONG], "max_tokens": 512, "temperature": 0}
    response, elapsed = _timed(lambda: client.post("/v1/completions", json=body))
    assert response.status_code == 200 and elapsed < TIMEOUT_S
    answer = response.json()
    assert [c["finish_reason"] for c in answer["choices"]] == ["length", "length"]
    assert answer["usage"]["completion_tokens"] > 0


def test_lambda_invocation_time_left_bounds_generation(artifact: Path, registry: Any) -> None:  # noqa: F811
    """Behind Mangum the Lambda context's remaining time is the deadline (here shorter than the function's)."""
    from functions.context import DeadlineContext
    from functions.settings import Settings
    from functions.web.app import create_app
    from functions.web.lambda_events import LambdaHttpAdapter
    from tests.conftest import EVENTS_DIR

    adapter = LambdaHttpAdapter(create_app(registry, Settings(request_timeout_s=28)))
    event = json.loads((EVENTS_DIR / "apigw_v1_predict_embed.json").read_text())
    event.update(
        resource="/v1/chat/completions",
        path="/v1/chat/completions",
        pathParameters=None,
        body=json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": STORY}], "max_tokens": 512, "temperature": 0}
        ),
    )
    response, elapsed = _timed(lambda: adapter(event, DeadlineContext(3.0, function_name="maas-test")))
    assert response["statusCode"] == 200 and elapsed < 3.0
    assert json.loads(response["body"])["choices"][0]["finish_reason"] == "length"
