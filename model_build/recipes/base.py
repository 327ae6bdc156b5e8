"""The recipe contract used by `model_build.build`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from functions.contract import GateResult, Quantization
from model_build.catalog import CatalogEntry
from model_build.quantize import QuantPreset
from model_build.sources import SourceModel


class Recipe(ABC):
    """Export → optimize → quantize → judge one task family.

    Files live in two directories under the work dir: ``fp32/`` (the optimized export, the parity
    baseline) and ``served/`` (what ships). ``artifact_files`` names the files of either that make
    an artifact (artifact file name → path); ``manifest_fields`` adds task-specific manifest fields.
    """

    def __init__(self, entry: CatalogEntry, source: SourceModel, work: Path) -> None:
        self.entry, self.source, self.work = entry, source, work
        self.fp32_dir, self.served_dir = work / "fp32", work / "served"
        self.fp32_dir.mkdir(parents=True, exist_ok=True)
        self.served_dir.mkdir(parents=True, exist_ok=True)

    @abstractmethod
    def export(self) -> dict[str, float]:
        """Write the optimized fp32 graph(s) into ``fp32_dir``; return metrics (e.g. fused-op counts)."""

    @abstractmethod
    def quantize(self, preset: QuantPreset) -> Quantization:
        """Write the served graph(s) into ``served_dir``."""

    @abstractmethod
    def artifact_files(self, model_dir: Path) -> dict[str, Path]: ...

    def manifest_fields(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def gates(self, fp32_artifact: Path, served_artifact: Path) -> list[GateResult]:
        """Judge staged fp32 and served artifacts (loaded through the runtime) against torch."""

    def model_bytes(self, model_dir: Path) -> int:
        return sum(p.stat().st_size for p in model_dir.glob("*.onnx"))
