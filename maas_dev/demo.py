"""`maas demo`: build the default models, serve them on loopback, call every protocol, print, stop."""

from __future__ import annotations

import json
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel

from model_build.catalog import load_catalog

DEFAULT_MODELS = ("minilm-embed", "intent-classifier")


def _ensure_built(console: Console, rebuild: bool) -> list[str]:
    from model_build.build import artifacts_root, build_model

    catalog = load_catalog()
    dirs = []
    for name in DEFAULT_MODELS:
        target = artifacts_root() / name
        if rebuild or not (target / "manifest.json").is_file():
            with console.status(f"building {name} (export → optimize → quantize → validate)…"):
                result = build_model(catalog[name], progress=lambda step, n=name: console.log(f"{n}: {step}"))
            gates = ", ".join(f"{g.name}={g.value:.4g}" for g in result.manifest.gates)
            console.log(f"[green]built {name}[/green] in {result.seconds:.0f}s: {gates}")
        dirs.append(str(target))
    return dirs


def _show(console: Console, title: str, payload: Any) -> None:
    text = json.dumps(payload, indent=2)
    if len(text) > 1600:
        text = text[:1600] + "\n…"
    console.print(Panel(text, title=title, expand=False))


def run_demo(console: Console, *, rebuild: bool = False) -> None:
    import logging

    from functions.inference.registry import registry_from_settings
    from functions.settings import Settings
    from maas_dev.server import BackgroundServer

    logging.getLogger("maas").setLevel(logging.WARNING)  # keep per-request access logs out of the demo
    uris = _ensure_built(console, rebuild)
    registry = registry_from_settings(Settings(models=",".join(uris)))
    if not registry.ready:
        raise SystemExit(f"models failed to load: {registry.failures}")
    with BackgroundServer(registry) as server:
        console.rule(f"maas serving {', '.join(registry.names())} on {server.url}")
        http = httpx.Client(base_url=server.url, timeout=30)

        r = http.post("/models/minilm-embed/predict", json={"inputs": ["A man is eating food.", "A man eats a meal."]})
        vectors = r.json()["outputs"]
        cosine = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
        _show(
            console,
            "task API  POST /models/minilm-embed/predict",
            {
                "status": r.status_code,
                "dims": len(vectors[0]),
                "first 5": vectors[0][:5],
                "cosine(sentence 1, sentence 2)": round(cosine, 4),
                "usage": r.json()["usage"],
            },
        )
        r = http.post(
            "/models/intent-classifier/predict",
            json={
                "inputs": [
                    "I lost my credit card",
                    "can you connect me to a human agent",
                    "what's the weather tomorrow",
                ],
                "parameters": {"top_k": 2},
            },
        )
        _show(console, "task API  POST /models/intent-classifier/predict", r.json()["outputs"])

        _demo_openai(console, server.url)
        _demo_oip(console, server.url)

        r = http.post("/models/minilm-embed/predict", json={"inputs": "x", "parameters": {"top_k": 3}})
        _show(console, f"bad input → {r.status_code}", r.json())
        r = http.post("/models/no-such-model/predict", json={"inputs": "x"})
        _show(console, f"unknown model → {r.status_code}", r.json())
    console.rule("server stopped")


def _demo_openai(console: Console, url: str) -> None:
    try:
        from openai import OpenAI
    except ImportError:  # runtime-only install: same route over plain HTTP
        r = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm-embed", "input": ["hello world"]})
        _show(console, "OpenAI  POST /v1/embeddings (httpx)", {"dims": len(r.json()["data"][0]["embedding"])})
        return
    client = OpenAI(base_url=f"{url}/v1", api_key="local")
    result = client.embeddings.create(model="minilm-embed", input=["hello world", "serverless inference"])
    _show(
        console,
        "OpenAI SDK  client.embeddings.create",
        {
            "models": [m.id for m in client.models.list().data],
            "dims": len(result.data[0].embedding),
            "first 5": result.data[0].embedding[:5],
            "usage": result.usage.model_dump(),
        },
    )


def _demo_oip(console: Console, url: str) -> None:
    try:
        import numpy as np
        import tritonclient.http as triton
    except ImportError:
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["I lost my credit card"]}]}
        r = httpx.post(f"{url}/v2/models/intent-classifier/infer", json=body)
        _show(console, "OIP v2  POST /v2/models/intent-classifier/infer (httpx)", r.json()["outputs"][:2])
        return
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    texts = np.array([b"I lost my credit card", b"play some jazz music"], dtype=object)
    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(texts, binary_data=True)
    result = client.infer(
        "intent-classifier",
        [tensor],
        outputs=[triton.InferRequestedOutput("label"), triton.InferRequestedOutput("score")],
    )
    _show(
        console,
        "tritonclient.http  InferenceServerClient.infer (binary tensors)",
        {
            "server_ready": client.is_server_ready(),
            "labels": [x.decode() for x in result.as_numpy("label")],
            "scores": [round(float(x), 4) for x in result.as_numpy("score")],
        },
    )
