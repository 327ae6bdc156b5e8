"""Infra fixtures: the CDK app synthesized once per session from synthetic manifests, with cdk-nag on.

No AWS account, no Docker, no network: artifacts are manifest.json files written into a temp dir
(sizes only; infra never reads the model bytes at synth time) and the app runs in ``packaging=preview``
so no pre-built Lambda dependencies are needed.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "1")

import aws_cdk as cdk
from aws_cdk.assertions import Template

from infra.app import build_app

REPO = Path(__file__).resolve().parents[2]
ACCOUNT, REGION, STAGE = "123456789012", "eu-west-1", "dev"
MB = 1024 * 1024


def function_handler(props: Mapping[str, Any]) -> str | None:
    """The maas handler a synthesized function runs: its ``Handler`` (zip), its image command, or the HTTP handler
    for a streaming model's image (the Lambda Web Adapter in front of the app under uvicorn: no handler, an entry
    point). None for functions that are not maas handlers (CDK's own)."""
    from functions.contract.deployment import HANDLERS, STREAM_SERVER_COMMAND

    image = props.get("ImageConfig") or {}
    if image.get("EntryPoint") == list(STREAM_SERVER_COMMAND):
        return HANDLERS["http"]
    handler = props.get("Handler") or (image.get("Command") or [None])[0]
    return handler if isinstance(handler, str) and handler.startswith("functions.") else None


def write_manifest(
    root: Path, name: str, task: str, sizes: Mapping[str, int], version: str = "0123456789abcdef"
) -> Path:
    """Write a valid manifest.json through the contract (infra reads only names, task, version and sizes)."""
    from functions.contract import FileEntry, Manifest, Quantization

    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        name=name,
        task=task,  # type: ignore[arg-type]
        version=version,
        inputs=[],
        outputs=[],
        quantization=Quantization(preset="fp32", method="none", weight_type="float32"),
        files={file: FileEntry(sha256="0" * 64, size_bytes=size) for file, size in sizes.items()},
    )
    return manifest.write(directory)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_catalog(path: Path, models: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a catalog.toml with ``[models.<name>]`` and its sub-tables (deploy, limits)."""
    lines: list[str] = []
    for name, entry in models.items():
        lines.append(f"[models.{name}]")
        tables = {k: v for k, v in entry.items() if isinstance(v, Mapping)}
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if k not in tables]
        for table, values in tables.items():
            lines.append(f"[models.{name}.{table}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lambda_entry(task: str = "sentence-embeddings", **deploy: Any) -> dict[str, Any]:
    """A catalog entry for a small lambda model; ``deploy`` overrides its deploy keys."""
    return {
        "task": task,
        "source": "tests:unused",
        "limits": {"max_batch": 16, "max_seq_len": 128, "max_input_chars": 4000, "truncate": True},
        "deploy": {"target": "lambda", "memory_mb": 2048, "timeout_s": 20, **deploy},
    }


def gpu_entry(task: str = "sentence-embeddings", **deploy: Any) -> dict[str, Any]:
    """A catalog entry for a gpu model; ``deploy`` overrides (a value of None removes the key)."""
    base = {"target": "gpu", "instance_type": "g5.xlarge", "min_tasks": 1, "max_tasks": 2, "timeout_s": 25}
    merged = {**base, "memory_mb": 14336, **deploy}
    return {"task": task, "source": "tests:unused", "deploy": {k: v for k, v in merged.items() if v is not None}}


@dataclass
class Synth:
    """A synthesized app: its stacks by name, their templates, and the cloud assembly directory."""

    app: cdk.App
    outdir: Path
    stacks: dict[str, cdk.Stack]
    error: Exception | None = None
    _templates: dict[str, Template] = field(default_factory=dict)

    def template(self, stack_name: str) -> Template:
        """``Template.from_stack`` for one stack (cached: the app was synthesized already)."""
        if stack_name not in self._templates:
            self._templates[stack_name] = Template.from_stack(self.stacks[stack_name])
        return self._templates[stack_name]

    def json(self, stack_name: str) -> dict[str, Any]:
        """The synthesized template file as plain JSON."""
        data: dict[str, Any] = json.loads((self.outdir / f"{stack_name}.template.json").read_text())
        return data

    def model_stacks(self) -> dict[str, str]:
        """Model name → stack name."""
        prefix = f"maas-{STAGE}-model-"
        return {name[len(prefix) :]: name for name in self.stacks if name.startswith(prefix)}

    def validation_report(self) -> dict[str, Any]:
        """CDK's policy-validation report (cdk-nag v3 writes its findings there), or an empty report."""
        path = self.outdir / "validation-report.json"
        return json.loads(path.read_text()) if path.is_file() else {"pluginReports": []}


def synthesize(tmp: Path, context: Mapping[str, Any]) -> Synth:
    """Build and synthesize the app with test context; a failed validation is recorded, not raised."""
    outdir = tmp / "cdk.out"
    # every catalog entry (the dev stage's own `models` list leaves the GPU model out: tests cover both targets)
    base = {
        "account": ACCOUNT,
        "region": REGION,
        "packaging": "preview",
        "stagingDir": str(tmp / "staging"),
        "models": "",
    }
    app = build_app({**base, **context}, outdir=str(outdir), environ={})
    error: Exception | None = None
    try:
        app.synth()
    except RuntimeError as exc:  # cdk-nag (or another validation plugin) found something
        error = exc
    stacks = {child.stack_name: child for child in app.node.children if isinstance(child, cdk.Stack)}
    return Synth(app=app, outdir=outdir, stacks=stacks, error=error)


@pytest.fixture(scope="session")
def catalog() -> dict[str, dict[str, Any]]:
    """The repo's default catalog, parsed independently of infra.config."""
    with (REPO / "catalog.toml").open("rb") as handle:
        models: dict[str, dict[str, Any]] = tomllib.load(handle)["models"]
    return models


@pytest.fixture(scope="session")
def default_app(tmp_path_factory: pytest.TempPathFactory, catalog: dict[str, dict[str, Any]]) -> Synth:
    """The default catalog with a synthetic ~24 MB artifact per model, synthesized once."""
    tmp = tmp_path_factory.mktemp("default-app")
    artifacts = tmp / "artifacts"
    for name, entry in catalog.items():
        write_manifest(artifacts, name, entry["task"], {"model.onnx": 23 * MB, "tokenizer.json": 700_000})
    return synthesize(tmp, {"artifactsDir": str(artifacts)})


VARIANT_MODELS: dict[str, dict[str, Any]] = {
    # 300 MB model: too big for a zip with the runtime, so an image; x86_64, provisioned concurrency.
    "big-classifier": lambda_entry(
        "text-classification",
        memory_mb=3008,
        architecture="x86_64",
        provisioned_concurrency=2,
        reserved_concurrency=10,
    ),
    # Read from S3 at init, custom prefixes, a reply queue, and it claims the OpenAI embeddings route.
    "s3-embedder": lambda_entry(
        model_source="s3",
        ephemeral_storage_mb=1024,
        input_prefix="inputs/custom-embedder/",
        output_prefix="outputs/custom-embedder/",
        reply_queue_arns=["arn:aws:sqs:eu-west-1:123456789012:maas-replies"],
        openai_route=True,
        batch_timeout_s=120,
    ),
    "other-embedder": lambda_entry(),
    "generator-gpu": gpu_entry("text-generation", instance_type="g5.2xlarge", timeout_s=28, memory_mb=28672),
}


@pytest.fixture(scope="session")
def variant_app(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """A second catalog exercising the other paths: image package, S3 model source, x86_64, OpenAI owner."""
    tmp = tmp_path_factory.mktemp("variant-app")
    artifacts = tmp / "artifacts"
    write_manifest(artifacts, "big-classifier", "text-classification", {"model.onnx": 300 * MB})
    write_manifest(artifacts, "s3-embedder", "sentence-embeddings", {"model.onnx": 90 * MB}, version="feedfacecafe0001")
    write_manifest(artifacts, "other-embedder", "sentence-embeddings", {"model.onnx": 23 * MB})
    write_manifest(artifacts, "generator-gpu", "text-generation", {"model.onnx": 500 * MB})
    catalog = write_catalog(tmp / "catalog.toml", VARIANT_MODELS)
    return synthesize(tmp, {"artifactsDir": str(artifacts), "catalog": str(catalog), "stage": STAGE})


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Callable[..., cdk.App]]:
    """Build (not synthesize) the app for a custom catalog: guards raise while the app is built."""

    def _build(
        entries: Mapping[str, Mapping[str, Any]], manifests: Mapping[str, int] | None = None, **context: Any
    ) -> cdk.App:
        artifacts = tmp_path / "artifacts"
        for name, entry in entries.items():
            size = (manifests or {}).get(name, 23 * MB)
            if size >= 0:
                write_manifest(artifacts, name, str(entry["task"]), {"model.onnx": size})
        catalog = write_catalog(tmp_path / "catalog.toml", entries)
        base = {
            "account": ACCOUNT,
            "region": REGION,
            "packaging": "preview",
            "stagingDir": str(tmp_path / "staging"),
            "artifactsDir": str(artifacts),
            "catalog": str(catalog),
            "nag": "false",
            "models": "",
        }
        return build_app({**base, **context}, outdir=str(tmp_path / "cdk.out"), environ={})

    yield _build
