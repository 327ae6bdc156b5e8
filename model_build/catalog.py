"""The model catalog (``catalog.toml``): typed, validated entries. Adding a model = adding an entry."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from functions.manifest import Limits, Task

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = REPO_ROOT / "catalog.toml"


class CatalogError(ValueError):
    """The catalog is missing, malformed, or names a model that is not in it."""


class Gates(BaseModel):
    """Quality gates. A build fails when any configured gate is not met."""

    model_config = ConfigDict(extra="forbid")

    fp32_max_abs_diff: float = Field(1e-4, gt=0, description="fp32 ONNX vs torch, final outputs")
    quantized_mean_cosine: float | None = Field(None, gt=0, le=1)
    quantized_min_cosine: float | None = Field(None, gt=0, le=1)
    quantized_top1_agreement: float | None = Field(None, gt=0, le=1)
    quantized_top5_overlap: float | None = Field(None, gt=0, le=1)
    quantized_decisive_top1_agreement: float | None = Field(
        None, gt=0, le=1, description="top-1 agreement where torch's top-2 margin is decisive (≥ 0.1)"
    )
    labelled_top1_accuracy: float | None = Field(None, gt=0, le=1, description="served pipeline on labelled inputs")
    quantized_max_perplexity_increase: float | None = Field(None, gt=0, description="relative, e.g. 0.02 = +2%")
    max_size_ratio: float | None = Field(None, gt=0, le=1, description="served model / fp32 export size")
    max_size_mb: float | None = Field(None, gt=0)
    min_heldout: int = Field(200, ge=1, description="refuse to judge quality on fewer held-out inputs")


class Deploy(BaseModel):
    """Where and how infra deploys the model; infra validates the target-specific keys."""

    model_config = ConfigDict(extra="allow")

    target: Literal["lambda", "gpu"] = "lambda"
    memory_mb: int = Field(2048, ge=128, le=122880)
    timeout_s: int = Field(20, ge=1, le=900)


class CatalogEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    task: Task
    source: str
    quantization: str = "int8-dynamic-matmul-per-channel"
    gates: Gates = Field(default_factory=lambda: Gates())
    limits: Limits = Field(default_factory=lambda: Limits())
    deploy: Deploy = Field(default_factory=lambda: Deploy())

    @model_validator(mode="after")
    def _known_preset(self) -> CatalogEntry:
        from model_build.quantize import get_preset

        get_preset(self.quantization)
        return self


def catalog_path() -> Path:
    return Path(os.environ.get("MAAS_CATALOG", DEFAULT_CATALOG))


def load_catalog(path: Path | None = None) -> dict[str, CatalogEntry]:
    path = path or catalog_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"catalog {path} not found (set MAAS_CATALOG or run from the repo root)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog {path} is not valid TOML: {exc}") from exc
    entries: dict[str, CatalogEntry] = {}
    for name, body in raw.get("models", {}).items():
        try:
            entries[name] = CatalogEntry.model_validate({"name": name, **body})
        except ValidationError as exc:
            raise CatalogError(f"catalog entry [models.{name}] is invalid:\n{exc}") from exc
    return entries


def get_entry(name: str, path: Path | None = None) -> CatalogEntry:
    catalog = load_catalog(path)
    if name not in catalog:
        raise CatalogError(f"model {name!r} is not in the catalog; known: {', '.join(sorted(catalog))}")
    return catalog[name]
