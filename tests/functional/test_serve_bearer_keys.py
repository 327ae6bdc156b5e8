"""GIVEN `maas serve` with API keys (MAAS_API_KEYS) WHEN the stock `openai` SDK calls it with its usual bearer key
THEN it is served, as by the deployed API; a wrong bearer key is refused (401) as a wrong x-api-key is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

KEY = "serve-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_server(registry: Any) -> Iterator[str]:
    from functions.settings import Settings
    from maas_dev.server import BackgroundServer

    with BackgroundServer(registry, settings=Settings(api_keys=KEY)) as server:
        yield server.url


def test_the_openai_sdk_calls_a_keyed_local_server_with_its_bearer_key(keyed_server: str) -> None:
    import openai
    from openai import OpenAI

    served = OpenAI(base_url=f"{keyed_server}/v1", api_key=KEY, max_retries=0)
    assert len(served.embeddings.create(model="minilm-embed", input="hello").data[0].embedding) == 384
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"{keyed_server}/v1", api_key=KEY + "x", max_retries=0).embeddings.create(
            model="minilm-embed", input="hello"
        )


def test_bearer_and_x_api_key_are_read_exactly(keyed_server: str) -> None:
    import httpx

    url = f"{keyed_server}/models"
    assert httpx.get(url, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert httpx.get(url, headers={"x-api-key": KEY}).status_code == 200
    for headers in ({"Authorization": f"Basic {KEY}"}, {"Authorization": f"Bearer {KEY[:-1]}"}, {}):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401 and "Bearer" in refused.headers["www-authenticate"]
