"""`maas build`: export → optimize → quantize → validate → package, failing on any unmet gate."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from functions.inference.registry import pipeline_for
from functions.manifest import GateResult, Manifest
from model_build import validate
from model_build.catalog import REPO_ROOT, CatalogEntry
from model_build.export import export_text_encoder
from model_build.optimize import optimize_graph
from model_build.package import write_artifact
from model_build.quantize import get_preset, quantize
from model_build.sources import SourceModel, load_source

Progress = Callable[[str], None]


def artifacts_root() -> Path:
    return Path(os.environ.get("MAAS_ARTIFACTS_DIR", REPO_ROOT / "artifacts"))


def work_root() -> Path:
    return Path(os.environ.get("MAAS_BUILD_DIR", REPO_ROOT / "build"))


@dataclass
class BuildResult:
    manifest: Manifest
    artifact_dir: Path
    fp32_model: Path
    seconds: float


def build_model(
    entry: CatalogEntry,
    *,
    artifact_dir: Path | None = None,
    work_dir: Path | None = None,
    progress: Progress = lambda step: None,
    source: SourceModel | None = None,
) -> BuildResult:
    """Build one catalog entry into a validated artifact; raise ``validate.GateError`` on a failed gate."""
    started = time.perf_counter()
    artifact_dir = artifact_dir or artifacts_root() / entry.name
    work = work_dir or work_root() / entry.name
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], object]) -> object:
        progress(name)
        t0 = time.perf_counter()
        result = fn()
        timings[f"seconds_{name.split()[0].lower()}"] = round(time.perf_counter() - t0, 3)
        return result

    preset = get_preset(entry.quantization)
    source = source or step("Load torch model", lambda: load_source(entry.source, task=entry.task))  # type: ignore[assignment]
    assert isinstance(source, SourceModel)
    exported, fp32, served = work / "export.onnx", work / "fp32.onnx", work / "model.onnx"
    step("Export to ONNX (dynamo)", lambda: export_text_encoder(source, exported))
    fused = step("Optimize graph", lambda: optimize_graph(source, exported, fp32))
    quant = step(f"Quantize ({preset.name})", lambda: quantize(fp32, served, preset))

    def evaluate() -> list[GateResult]:
        texts = validate.heldout_texts(entry.task)
        fp32_pipe = pipeline_for(
            *_stage(work / "stage-fp32", fp32, entry, source, get_preset("fp32").record()), warmup=False
        )
        served_pipe = pipeline_for(*_stage(work / "stage-served", served, entry, source, quant), warmup=False)  # type: ignore[arg-type]
        reference = validate.torch_outputs(source, fp32_pipe, texts)
        results = [
            validate.enough_heldout(len(texts), entry.gates),
            validate.parity_gate(reference, validate.runtime_outputs(fp32_pipe, texts), entry.gates),
            *validate.quality_gates(entry.task, reference, validate.runtime_outputs(served_pipe, texts), entry.gates),
            *validate.size_gates(fp32.stat().st_size, served.stat().st_size, entry.gates),
        ]
        return results

    gates: list[GateResult] = step("Validate against torch", evaluate)  # type: ignore[assignment]
    metrics = {
        "fp32_bytes": float(fp32.stat().st_size),
        "model_bytes": float(served.stat().st_size),
        **{f"fused_{k}": float(v) for k, v in dict(fused).items()},  # type: ignore[call-overload]
        **timings,
    }
    failed = [g for g in gates if not g.passed]
    if failed:
        write_artifact(
            work / "rejected",
            model_path=served,
            entry=entry,
            source=source,
            quantization=quant,
            gates=gates,
            metrics=metrics,
        )  # type: ignore[arg-type]
        raise validate.GateError(entry.name, failed)
    progress("Package artifact")
    manifest = write_artifact(
        artifact_dir,
        model_path=served,
        entry=entry,
        source=source,
        quantization=quant,
        gates=gates,
        metrics=metrics,  # type: ignore[arg-type]
    )
    return BuildResult(manifest, artifact_dir, fp32, time.perf_counter() - started)


def _stage(
    directory: Path, model: Path, entry: CatalogEntry, source: SourceModel, quant: object
) -> tuple[Path, Manifest]:
    manifest = write_artifact(directory, model_path=model, entry=entry, source=source, quantization=quant)  # type: ignore[arg-type]
    return directory, manifest
