"""`maas build`: export → optimize → quantize → validate → package, failing on any unmet gate.

Task-specific work lives in recipes (`model_build/recipes/`); this module only orchestrates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from functions.contract import Manifest, Quantization
from model_build import validate
from model_build.catalog import REPO_ROOT, CatalogEntry
from model_build.package import write_artifact
from model_build.quantize import get_preset
from model_build.recipes import Recipe, recipe_for
from model_build.sources import SourceModel, load_source

Progress = Callable[[str], None]
T = TypeVar("T")


def artifacts_root() -> Path:
    return Path(os.environ.get("MAAS_ARTIFACTS_DIR", REPO_ROOT / "artifacts"))


def work_root() -> Path:
    return Path(os.environ.get("MAAS_BUILD_DIR", REPO_ROOT / "build"))


@dataclass
class BuildResult:
    manifest: Manifest
    artifact_dir: Path
    fp32_dir: Path
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

    def step(label: str, key: str, fn: Callable[[], T]) -> T:
        progress(label)
        t0 = time.perf_counter()
        result = fn()
        timings[f"seconds_{key}"] = round(time.perf_counter() - t0, 3)
        return result

    preset = get_preset(entry.quantization)
    if source is None:
        source = step("Load torch model", "load", lambda: load_source(entry.source, task=entry.task))
    recipe: Recipe = recipe_for(entry.task)(entry, source, work)
    export_metrics = step("Export to ONNX and optimize", "export", recipe.export)
    quant = step(f"Quantize ({preset.name})", "quantize", lambda: recipe.quantize(preset))

    def stage(name: str, model_dir: Path, quantization: Quantization) -> Path:
        write_artifact(work / name, entry=entry, files=recipe.artifact_files(model_dir),
                       quantization=quantization, fields=recipe.manifest_fields())
        return work / name

    def judge() -> list:  # type: ignore[type-arg]
        fp32_stage = stage("stage-fp32", recipe.fp32_dir, get_preset("fp32").record())
        served_stage = stage("stage-served", recipe.served_dir, quant)
        return recipe.gates(fp32_stage, served_stage)

    gates = step("Validate against torch", "validate", judge)
    metrics = {
        "fp32_bytes": float(recipe.model_bytes(recipe.fp32_dir)),
        "model_bytes": float(recipe.model_bytes(recipe.served_dir)),
        **export_metrics,
        **timings,
    }
    package = {"entry": entry, "files": recipe.artifact_files(recipe.served_dir), "quantization": quant,
               "fields": recipe.manifest_fields(), "gates": gates, "metrics": metrics}
    failed = [g for g in gates if not g.passed]
    if failed:
        write_artifact(work / "rejected", **package)  # type: ignore[arg-type]
        raise validate.GateError(entry.name, failed)
    progress("Package artifact")
    manifest = write_artifact(artifact_dir, **package)  # type: ignore[arg-type]
    return BuildResult(manifest, artifact_dir, recipe.fp32_dir, time.perf_counter() - started)
