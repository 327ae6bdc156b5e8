"""GIVEN the dev stage synthesized strictly and served on loopback as API Gateway serves it (maas_dev/gateway: the
bearer-key authorizers with their caches, the usage plans, Lambda proxy events with the authorizer's context, the
generation function's STREAM integration through the Lambda Web Adapter), every function running from its built
bundle, and a key made by `maas keys create` WHEN the stock clients call it THEN the `openai` SDK (embeddings,
completions, chat, chat streaming), `tritonclient.http` and the README's example work; without a key, or with a
malformed, unknown or revoked one, each fails cleanly with 401/403 in its protocol's error shape; 64 tokens stream as
they are generated; and a client that hangs up stops generation within a step.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from functions.web import api_keys as keys
from maas_dev.cli import app
from maas_dev.gateway.local import CREDENTIALS, LocalStage, TaskRoots, local_stage
from maas_dev.lambda_bundle import can_isolate
from tests.bundle.conftest import REGION, REPO, STAGE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_isolate(), reason="needs root and unshare to mount a read-only /var/task"),
]
STORY = "Write a very long story about a dragon who learns to cook. Make it at least 1000 words."  # 400+ tokens
CHAT = "smollm2-chat"


@pytest.fixture(scope="module")
def local(
    synthesized_stage: Path, task_roots: TaskRoots, lambda_python: Path, runtime_dir: Path
) -> Iterator[LocalStage]:
    with local_stage(
        synthesized_stage, STAGE, task_root=task_roots, python=lambda_python, runtime_dir=runtime_dir
    ) as served:
        yield served


@contextmanager
def _environ(**variables: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        yield


def _maas_keys(local: LocalStage, *args: str) -> Any:
    """`maas keys …` as an operator runs it, against the local AWS the functions use."""
    with _environ(**CREDENTIALS, AWS_DEFAULT_REGION=REGION):
        return CliRunner().invoke(app, ["keys", *args, "--stage", STAGE, "--endpoint-url", local.aws_endpoint])


def _new_key(local: LocalStage) -> str:
    result = _maas_keys(local, "create", "--tenant", "demo")
    assert result.exit_code == 0, result.output
    # the key is alone on its line; anything else the run prints (a library's warning on stderr) is not it
    (line,) = [line.strip() for line in result.output.splitlines() if keys.key_id_of(line.strip())] or [result.output]
    assert keys.key_id_of(line), result.output
    return line


@pytest.fixture(scope="module")
def key(local: LocalStage) -> str:
    return _new_key(local)


def _openai(local: LocalStage, api_key: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{local.url}/v1", api_key=api_key, max_retries=0, timeout=300)


def test_the_openai_sdk_works_with_a_bearer_key(local: LocalStage, key: str) -> None:
    client = _openai(local, key)
    embeddings = client.embeddings.create(model="minilm-embed", input=["hello there", "general kenobi"])
    assert [len(d.embedding) for d in embeddings.data] == [384, 384] and embeddings.usage.prompt_tokens > 0
    completion = client.completions.create(model=CHAT, prompt="1, 2, 3, 4,", max_tokens=8, temperature=0)
    assert completion.choices[0].text.strip().startswith("5") and completion.usage.completion_tokens == 8
    chat = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=16, temperature=0
    )
    assert "4" in (chat.choices[0].message.content or "")
    streamed = client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=16, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert text == chat.choices[0].message.content
    assert {m.id for m in client.models.list().data} >= {"minilm-embed", CHAT}  # answered by API Gateway itself


def test_tritonclient_works_with_a_bearer_key(local: LocalStage, key: str) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=local.url.removeprefix("http://"))
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"what is my balance", b"book a flight to Paris"], dtype=object))
    for binary in (True, False):
        result = client.infer(
            "intent-classifier",
            [text],
            headers={"Authorization": f"Bearer {key}"},
            outputs=[triton.InferRequestedOutput("label", binary_data=binary)],
        )
        assert result.as_numpy("label").shape[0] == 2
    assert client.is_model_ready("minilm-embed", headers={"Authorization": f"Bearer {key}"})


def test_the_readme_example_runs_against_the_deployed_path(local: LocalStage, key: str) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Calling the API") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert code, "README's 'Calling the API' has a python example"
    with _environ(MAAS_API_URL=f"{local.url}/", MAAS_API_KEY=key):
        exec(compile(code.group(1), "README.md", "exec"), {})


def test_bad_keys_fail_cleanly_in_each_protocols_shape(local: LocalStage, key: str) -> None:
    import openai
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    revoked = _new_key(local)
    assert _maas_keys(local, "revoke", keys.key_id_of(revoked) or "").exit_code == 0
    unknown = keys.new_key().key
    cases = {"missing": None, "malformed": "sk-proj-not-a-maas-key", "unknown": unknown, "revoked": revoked}
    expected = {
        "missing": (401, None),
        "malformed": (403, "malformed_api_key"),
        "unknown": (403, "invalid_api_key"),
        "revoked": (403, "revoked_api_key"),
    }
    for case, value in cases.items():
        status, code = expected[case]
        headers = {"Authorization": f"Bearer {value}"} if value else {}
        # OpenAI's SDK: a typed error (401 AuthenticationError, 403 PermissionDeniedError; a refused key: OpenAI's
        # error object)
        errors = {401: openai.AuthenticationError, 403: openai.PermissionDeniedError}
        sent = headers or {"Authorization": openai.omit}  # no key: the SDK's own header left out
        with pytest.raises(errors[status]) as raised:
            _openai(local, value or "unset").embeddings.create(model="minilm-embed", input="hi", extra_headers=sent)
        if code:
            assert raised.value.code == code and raised.value.type == "invalid_request_error", case
        # Triton's client: an InferenceServerException carrying the status and OIP's message
        client = triton.InferenceServerClient(url=local.url.removeprefix("http://"))
        text = triton.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"hi"], dtype=object))
        with pytest.raises(InferenceServerException) as failed:
            client.infer("minilm-embed", [text], headers=dict(headers))
        assert failed.value.status() == str(status) and "key" in str(failed.value).lower(), case
        # the task API: its own object shape (code, message, param) for a refused key
        answer = httpx.post(f"{local.url}/models/minilm-embed/predict", json={"inputs": "hi"}, headers=headers)
        assert answer.status_code == status, case
        body = answer.json()
        if code:
            assert body["error"]["code"] == code and body["error"]["param"] is None
        else:
            assert "Authorization: Bearer" in body["error"] and answer.headers["www-authenticate"].startswith("Bearer")


def test_the_authorizer_answer_is_cached_per_protocol(local: LocalStage, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    httpx.get(f"{local.url}/v2/models/minilm-embed", headers=headers).raise_for_status()
    httpx.get(f"{local.url}/models/minilm-embed", headers=headers).raise_for_status()
    before = local.gateway.authorizer_calls
    for path in ("/v2/models/minilm-embed", "/models/minilm-embed", "/v2/models/intent-classifier"):
        assert httpx.get(f"{local.url}{path}", headers=headers).status_code == 200
    assert local.gateway.authorizer_calls == before  # each protocol's authorizer answered once for this key


def _stream(local: LocalStage, key: str, max_tokens: int) -> tuple[list[tuple[float, dict[str, Any]]], float]:
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": STORY}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events: list[tuple[float, dict[str, Any]]] = []
    started = time.monotonic()
    with (
        httpx.Client(timeout=120) as client,
        client.stream(
            "POST", f"{local.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append((time.monotonic() - started, json.loads(line[6:])))
    return events, time.monotonic() - started


def test_64_tokens_stream_as_they_are_generated(local: LocalStage, key: str) -> None:
    _stream(local, key, 4)  # the function's environment is warm, as it is for all but a cold start
    events, total = _stream(local, key, 64)
    content = [(at, e) for at, e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
    usage = events[-1][1]["usage"]
    assert usage["completion_tokens"] == 64 and events[-2][1]["choices"][0]["finish_reason"] == "length"
    first = events[0][0]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(content)]
    apart = sum(gap > 0.002 for gap in gaps)
    print(  # the figures the report quotes
        f"\nfirst event {first * 1000:.0f} ms, first token {content[0][0] * 1000:.0f} ms, total {total * 1000:.0f} ms, "
        f"{len(content)} content events, median gap {statistics.median(gaps) * 1000:.1f} ms, {apart} gaps > 2 ms"
    )
    assert first < total / 4 and content[0][0] < total / 4
    assert len(content) >= 48 and apart >= 0.9 * len(gaps)  # one by one, not in a burst at the end


def test_a_client_that_hangs_up_stops_generation_within_a_step(local: LocalStage, key: str) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": STORY}], "max_tokens": 400, "temperature": 0}
    received, arrivals = 0, []
    with httpx.Client(timeout=120) as client:
        with client.stream(
            "POST",
            f"{local.url}/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    received += 1
                    arrivals.append(time.monotonic())
                    if received == 24:
                        break
        hung_up = time.monotonic()
    step = statistics.median(b - a for a, b in itertools.pairwise(arrivals))
    server = next(iter(local.gateway.environments.servers.values()))
    ended: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + 10
    while not ended and time.monotonic() < deadline:
        ended = [(at, json.loads(line)) for at, line in server.logs.since(hung_up) if '"stream ended early"' in line]
        time.sleep(0.05)
    assert ended, server.logs.tail()
    at, record = ended[0]
    latency = at - hung_up
    made = record["completion_tokens"]
    print(
        f"\nstep {step * 1000:.1f} ms; stopped {latency * 1000:.0f} ms after hanging up; {made} made, {received} read"
    )
    assert record["code"] == "client_disconnected"
    assert made <= received + 2  # at most the step in flight (and one already sent) after the client left
    assert latency < 2 * step + 0.25  # noticed at once, stopped before the next step
