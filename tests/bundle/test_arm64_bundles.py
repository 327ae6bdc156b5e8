"""GIVEN the dev stage synthesized strictly as it ships — every Lambda model on arm64, the catalog's default — WHEN
each Lambda model's HTTP function runs from its arm64 bundle (a zip unzipped, or the image's task root) in Lambda's
CPython 3.13 for aarch64 (Debian 13's, under QEMU user mode: maas_dev.emulation), in the same sandbox as the x86_64
bundle test (read-only /var/task, `-I -S`, an unprivileged user, the template's environment) over every HTTP event
in events/ that targets it THEN every response is right, the answers are the x86_64 runtime's (same labels, the same
greedy chat reply from the exact int4 build, embeddings to cosine 0.99), and the bundle's native code is all
AArch64; and on Graviton's cores (Neoverse N1 and V1, emulated) the encoders' bundles meet every quality gate of the
catalog over the build's held-out set.

This is what deploys: the x86_64 bundle test runs the same stage rebuilt for this machine's CPU. Emulation says
nothing about arm64's speed (docs/benchmarks/README.md); it proves the wheels, the bytecode and the answers.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maas_dev.emulation import Arm64Python
from maas_dev.gateway.local import TaskRoots
from maas_dev.lambda_bundle import BundleRun, can_isolate
from tests.bundle.conftest import REPO
from tests.bundle.test_lambda_bundles import (
    EVENTS,
    NEVER_IMPORTED,
    Function,
    _authorizer_event,
    _check,
    _run,
    _targets,
    model_functions,
)
from tests.conftest import EVENTS_DIR, ensure_artifact

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_isolate(), reason="needs root and unshare to mount a read-only /var/task"),
]

ELF_MACHINE = {0xB7: "aarch64", 0x3E: "x86_64"}  # e_machine of an ELF header


def _elf_machine(path: Path) -> str | None:
    with path.open("rb") as handle:
        header = handle.read(20)
    if header[:4] != b"\x7fELF":
        return None
    return ELF_MACHINE.get(int.from_bytes(header[18:20], "little"), f"e_machine {header[18:20].hex()}")


@dataclasses.dataclass(frozen=True)
class Arm64Stage:
    """The arm64 stage's model functions, their task roots, the emulated Python and the local AWS they run with."""

    functions: list[Function]
    roots: TaskRoots
    python: Arm64Python
    aws: dict[str, str]
    runtime_dir: Path

    def run(self, function: Function, events: list[dict[str, Any]], cpu: str | None = None) -> BundleRun:
        python = dataclasses.replace(self.python, cpu=cpu) if cpu else self.python
        return _run(function, events, self.roots, self.aws, python.python, self.runtime_dir, emulator=python.emulator)


@pytest.fixture(scope="module")
def arm64(
    synthesized_arm64_stage: Path,
    arm64_task_roots: TaskRoots,
    arm64_python: Arm64Python,
    aws: dict[str, str],
    runtime_dir: Path,
) -> Arm64Stage:
    return Arm64Stage(model_functions(synthesized_arm64_stage), arm64_task_roots, arm64_python, aws, runtime_dir)


@pytest.fixture(scope="module")
def x86_chat() -> Iterator[Any]:
    """The x86_64 runtime (this process) serving the generation model: the app, as `maas serve` runs it."""
    from fastapi.testclient import TestClient

    from functions.inference.registry import registry_from_settings
    from functions.settings import Settings
    from functions.web.app import create_app

    registry = registry_from_settings(Settings(models=str(ensure_artifact("smollm2-chat"))))
    with TestClient(create_app(registry, Settings())) as client:
        yield client


def _streamed_text(sse: str) -> str:
    """The content an OpenAI chat stream carries, its deltas joined."""
    chunks = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def _same_answer(name: str, body: str, registry: Any, x86_chat: Any) -> None:
    """The arm64 answer against the x86_64 runtime's (this process) for the same request."""
    if name not in (
        "apigw_v1_predict_embed.json",
        "apigw_v2_oip_infer_intent.json",
        "apigw_v2_chat_completions_stream.json",
    ):
        return  # the others' answers are checked by _check (the image's label)
    event = json.loads((EVENTS_DIR / name).read_text())
    request = json.loads(base64.b64decode(event["body"]) if event.get("isBase64Encoded") else event["body"])
    if "chat" in name:  # greedy: the served exact int4 build gives the same tokens on Graviton as here
        expected = _streamed_text(x86_chat.post("/v1/chat/completions", json=request).text)
        assert expected and _streamed_text(body) == expected, (body[-800:], expected)
        return
    answer = json.loads(body)
    if name == "apigw_v1_predict_embed.json":
        expected = np.asarray(registry.get("minilm-embed").predict(request["inputs"], {}).outputs, dtype=np.float32)
        got = np.asarray(answer["outputs"], dtype=np.float32)
        cosine = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        # not bit-equal: Graviton2's INT8 kernels round differently (the gate test checks quality against torch)
        assert got.shape == expected.shape and cosine.min() >= 0.99, cosine
    elif name == "apigw_v2_oip_infer_intent.json":
        texts = request["inputs"][0]["data"]
        expected = [o[0]["label"] for o in registry.get("intent-classifier").predict(texts, {"top_k": 1}).outputs]
        labels = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
        assert labels == expected, (labels, expected)


def test_every_lambda_model_serves_its_http_events_from_its_arm64_bundle(
    arm64: Arm64Stage, registry: Any, x86_chat: Any
) -> None:
    http = [f for f in arm64.functions if f.kind == "http"]
    assert {f.model for f in http} == {"minilm-embed", "intent-classifier", "smollm2-chat", "efficientnet-lite0"}
    events = [(path.name, json.loads(path.read_text())) for path in EVENTS if not _authorizer_event(path)]
    served = set()
    for function in http:
        root = arm64.roots(function.definition)
        natives = {str(p.relative_to(root)): _elf_machine(p) for p in root.rglob("*.so*") if p.is_file()}
        assert natives and set(natives.values()) == {"aarch64"}, {k: v for k, v in natives.items() if v != "aarch64"}
        mine = [(name, event) for name, event in events if _targets(event, function)]
        run = arm64.run(function, [e for _, e in mine])
        where = f"{function.model} http (arm64)"
        assert not run.modules & NEVER_IMPORTED, (where, run.modules & NEVER_IMPORTED)
        for (name, _), result in zip(mine, run.results, strict=True):
            _check(name, function, result, arm64.aws)
            _same_answer(name, result["response"]["body"], registry, x86_chat)
            served.add(name)
    http_events = {name for name, event in events if "Records" not in event and "source" not in event}
    assert served >= {n for n in http_events if not n.startswith(("sfn_", "eventbridge_"))}, served


def _predict_event(model: str, texts: list[str], parameters: dict[str, Any]) -> dict[str, Any]:
    """The sample API Gateway (REST) task-API event, for ``model`` with ``texts``."""
    event = json.loads((EVENTS_DIR / "apigw_v1_predict_embed.json").read_text())
    event["path"] = f"/models/{model}/predict"
    event["pathParameters"] = {"proxy": f"{model}/predict"}
    event["body"] = json.dumps({"inputs": texts, "parameters": parameters})
    return event


@pytest.mark.parametrize("cpu", ["neoverse-n1", "neoverse-v1"])  # Graviton2 (dot product), Graviton3 (+ i8mm, SVE)
@pytest.mark.parametrize("model", ["minilm-embed", "intent-classifier"])
def test_the_arm64_bundle_meets_the_catalog_gates_on_lambdas_cpu(
    model: str, cpu: str, arm64: Arm64Stage, registry: Any
) -> None:
    """The build's quality gates are measured on the build machine's CPU; onnxruntime picks other INT8 kernels on
    Graviton (by its features; the answers are not bit-equal to x86-64's). The deployed bundle, on each Graviton
    core Lambda's arm64 may run on, over the build's own held-out set, against torch fp32 on the same token ids:
    every quality gate holds."""
    from functions.contract.catalog import load_catalog
    from model_build import validate
    from model_build.sources import load_source

    entry = load_catalog(REPO / "catalog.toml")[model]
    pipeline = registry.get(model)  # x86_64, this process: the tokenizer for torch's inputs
    texts = validate.heldout_texts(entry.task)
    reference = validate.torch_outputs(load_source(entry.source, task=entry.task), pipeline, texts)
    limit = pipeline.limits.max_batch
    chunks = [texts[i : i + limit] for i in range(0, len(texts), limit)]
    labels = list(pipeline.manifest.labels or [])
    parameters = {"top_k": 1} if labels else {}
    (function,) = [f for f in arm64.functions if f.model == model and f.kind == "http"]
    run = arm64.run(function, [_predict_event(model, chunk, parameters) for chunk in chunks], cpu=cpu)
    outputs = []
    for result in run.results:
        assert result["ok"] and result["response"]["statusCode"] == 200, result
        outputs.extend(json.loads(result["response"]["body"])["outputs"])
    if labels:  # top-1 agreement needs the arm64 argmax only: its label, one-hot
        served = np.zeros((len(outputs), len(labels)), dtype=np.float32)
        served[np.arange(len(outputs)), [labels.index(o[0]["label"]) for o in outputs]] = 1
    else:
        served = np.asarray(outputs, dtype=np.float32)
    results = validate.quality_gates(entry.task, reference, served, entry.gates)
    assert results and all(r.passed for r in results), [r.model_dump() for r in results]
