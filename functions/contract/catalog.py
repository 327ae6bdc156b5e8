"""The model catalog (``catalog.toml``): one typed entry per model, read the same way by ``maas build`` and
``cdk synth``.

An entry says what to build (``source``, ``task``, ``quantization``, ``gates``), what a request may ask
(``limits``, shipped in the artifact's manifest) and where it runs (``deploy``, a union on ``target``:
``lambda`` or ``gpu``). :func:`load_catalog` parses the file, refuses unknown keys and wrong types, and
applies every rule that depends on the entries alone (:mod:`functions.contract.rules`): an entry one
command accepts, the other accepts too. Rules that need a deployment environment (the stage's API
Gateway timeout quota, the built artifact's size) belong to infra.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from functions.contract import rules
from functions.contract.errors import CatalogError, GpuSettingsError
from functions.contract.manifest import NAME_PATTERN, Limits
from functions.contract.tasks import Task

# Quantization presets the build knows (model_build/quantize.py implements each; a test keeps both equal).
QUANTIZATION_PRESETS = (
    "fp32",
    "fp16",
    "int8-dynamic-matmul-per-channel",
    "int8-dynamic-ffn-outliers",
    "int8-dynamic-ffn-both-outliers",
    "int8-dynamic-ffn-outliers-plain-ln",
    "int8-dynamic-ffn-both-outliers-plain-ln",
    "int8-dynamic-ffn-outliers-plain-ln-tanh-gelu",
    "int8-dynamic-ffn-both-outliers-plain-ln-tanh-gelu",
    "int8-dynamic-ffn-blockwise",
    "int8-dynamic-early-ffn-blockwise",
    "int8-dynamic-early-ffn-both-blockwise",
    "int8-dynamic-ffn-both-blockwise",
    "int8-static-qdq-per-channel",
    "int4-weight-only",
    "int8-weight-only",
    "int4-source-grid",
    "int4-source-grid-fp32-head",
    "int4-source-grid-int8-head",
    "int4-source-grid-int8-compute",
    "int4-source-grid-int8-folded",
)
DEFAULT_PRESET = "int8-dynamic-matmul-per-channel"


class _Table(BaseModel):
    """A catalog table: unknown keys are refused and TOML values are never coerced ("2048" is not 2048)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Gates(_Table):
    """Quality gates. A build fails when any configured gate is not met."""

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
    quantized_greedy_match: float | None = Field(
        None, ge=0, le=1, description="text generation: share of the parity prompts whose served greedy "
        "continuation equals torch's (default 0.75)"
    )  # fmt: skip
    max_size_ratio: float | None = Field(None, gt=0, le=1, description="served model / fp32 export size")
    max_size_mb: float | None = Field(None, gt=0)
    min_heldout: int = Field(200, ge=1, description="refuse to judge quality on fewer held-out inputs")


class CommonDeploy(_Table):
    """Deploy keys both targets share; every optional key has a safe default."""

    timeout_s: int = Field(20, ge=0, description="one API request, end to end")
    api_timeout_s: int = Field(29, ge=0, description="API Gateway's integration timeout for the model's routes")
    batch_timeout_s: int = Field(300, ge=0, description="one S3 object or one batch of queued messages")
    queue_visibility_timeout_s: int | None = Field(None, ge=0)
    max_receive_count: int = Field(3, ge=0)
    batch_size: int = Field(10, ge=0)
    batching_window_s: int = Field(0, ge=0)
    input_prefix: str | None = Field(None, min_length=1)
    output_prefix: str | None = Field(None, min_length=1)
    openai_route: bool | None = None
    reply_queue_arns: tuple[str, ...] = Field((), strict=False)


class LambdaDeploy(CommonDeploy):
    """``target = "lambda"``: three functions (HTTP, S3, SQS) from one package."""

    target: Literal["lambda"] = "lambda"
    memory_mb: int = Field(2048, ge=0)
    architecture: Literal["arm64", "x86_64"] = "arm64"
    provisioned_concurrency: int = Field(0, ge=0)
    reserved_concurrency: int | None = Field(None, ge=0)
    package: Literal["auto", "zip", "image"] = "auto"
    model_source: Literal["bundled", "s3"] = "bundled"
    ephemeral_storage_mb: int = Field(512, ge=0)
    batch_max_concurrency: int = Field(5, ge=0)
    batch_memory_mb: int | None = Field(None, ge=0)
    # Reserved concurrency of the S3 and SQS functions (0 = unreserved); unset = the stage's default.
    batch_reserved_concurrency: int | None = Field(None, ge=0)
    # Lambda SnapStart on the published versions (zip only, not with provisioned concurrency, /tmp ≤ 512 MB).
    snap_start: bool = False
    # How a new version reaches the `live` alias: at once, or a CodeDeploy canary/linear shift rolled back
    # automatically when the model's alarms fire.
    rollout: Literal[
        "all-at-once", "canary-10-percent-5-minutes", "canary-10-percent-15-minutes", "linear-10-percent-every-minute"
    ] = "all-at-once"


class GpuDeploy(CommonDeploy):
    """``target = "gpu"``: uvicorn in a CUDA container on ECS with EC2 GPU capacity."""

    target: Literal["gpu"]
    instance_type: str
    min_tasks: int = Field(ge=0)
    max_tasks: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    cpu_units: int | None = Field(None, ge=0)
    # Requests in flight or waiting per task (the server publishes it, functions/telemetry.py) that scaling
    # tracks: a task above it adds tasks, below it removes them. Keep it under the server's MAAS_MAX_CONCURRENCY.
    scale_in_flight_per_task: int = Field(8, ge=0)
    worker_min_tasks: int = Field(0, ge=0)
    worker_max_tasks: int | None = Field(None, ge=0)
    worker_backlog_per_task: int = Field(100, ge=0)


Deploy = Annotated[LambdaDeploy | GpuDeploy, Field(discriminator="target")]


class CatalogEntry(_Table):
    """One ``[models.<name>]`` table."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    task: Task = Field(strict=False)
    source: str = Field(min_length=1)
    quantization: Literal[QUANTIZATION_PRESETS] = DEFAULT_PRESET  # type: ignore[valid-type]
    gates: Gates = Field(default_factory=lambda: Gates())
    limits: Limits = Field(default_factory=lambda: Limits(), strict=False)
    deploy: Deploy = Field(default_factory=lambda: LambdaDeploy())

    @model_validator(mode="before")
    @classmethod
    def _lambda_by_default(cls, data: Any) -> Any:
        """A ``deploy`` table without a target (or no table at all) deploys to Lambda."""
        if isinstance(data, Mapping) and isinstance(data.get("deploy"), Mapping) and "target" not in data["deploy"]:
            return {**data, "deploy": {"target": "lambda", **data["deploy"]}}
        return data

    @property
    def target(self) -> str:
        """``lambda`` or ``gpu``."""
        return self.deploy.target

    @property
    def input_prefix(self) -> str:
        """Where S3 batch inputs for this model arrive: ``inputs/<name>/`` unless the entry says otherwise."""
        return self.deploy.input_prefix or f"inputs/{self.name}/"

    @property
    def output_prefix(self) -> str:
        """Where its results are written: ``outputs/<name>/`` unless the entry says otherwise."""
        return self.deploy.output_prefix or f"outputs/{self.name}/"


def load_catalog(path: Path) -> dict[str, CatalogEntry]:
    """Read ``catalog.toml``: every entry typed and checked, in file order. Raises a :class:`CatalogError`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(
            f"catalog {path} not found (set MAAS_CATALOG, pass -c catalog=<path>, or run from the repo root)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog {path} is not valid TOML: {exc}") from exc
    return parse_catalog(raw.get("models"), where=str(path))


def parse_catalog(models: Any, *, where: str = "catalog") -> dict[str, CatalogEntry]:
    """The ``[models]`` table as typed entries, after the rules that span entries (prefixes, OpenAI routes)."""
    if not isinstance(models, Mapping) or not models:
        raise CatalogError(f"{where} has no [models.<name>] entries")
    entries = {str(name): parse_entry(str(name), table) for name, table in models.items()}
    rules.check_catalog(list(entries.values()))
    return entries


def parse_entry(name: str, table: Any) -> CatalogEntry:
    """One ``[models.<name>]`` table as a typed entry, checked by the rules that need only the entry."""
    if not isinstance(table, Mapping):
        raise CatalogError(f"[models.{name}] must be a table")
    try:
        entry = CatalogEntry.model_validate({"name": name, **table})
    except ValidationError as exc:
        raise _explain(name, table, exc) from None
    rules.check_entry(entry)
    return entry


def _explain(name: str, table: Mapping[str, Any], exc: ValidationError) -> CatalogError:
    """The first problem pydantic found, worded as what to change in ``catalog.toml``."""
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"] if not (isinstance(part, str) and part in ("lambda", "gpu"))]
    key = ".".join(loc) or "entry"
    section = key.rpartition(".")[0]
    kind, value = first["type"], first.get("input")
    if kind == "extra_forbidden":
        unknown = sorted(str(e["loc"][-1]) for e in exc.errors() if e["type"] == "extra_forbidden")
        model = _section_model(section, table)
        allowed = ", ".join(sorted(set(model.model_fields) - {"name"})) if model else ""
        where = f"{section} " if section else ""
        return CatalogError(f"model {name!r}: unknown {where}key(s) {', '.join(unknown)}; allowed: {allowed}")
    if kind == "missing":
        missing = [str(e["loc"][-1]) for e in exc.errors() if e["type"] == "missing"]
        target = (table.get("deploy") or {}).get("target") if section.startswith("deploy") else None
        error = GpuSettingsError if target == "gpu" else CatalogError
        suffix = f" for target {target!r}" if target else ""
        return error(f"model {name!r}: [{section or 'models.' + name}] needs {', '.join(missing)}{suffix}")
    if kind == "union_tag_invalid":
        target = (table.get("deploy") or {}).get("target")
        return CatalogError(f'model {name!r}: deploy.target must be "lambda" or "gpu", got {target!r}')
    expected = {
        "int_type": "an integer",
        "float_type": "a number",
        "bool_type": "true or false",
        "string_type": "a string",
        "tuple_type": "a list of strings",
        "model_type": "a table",
        "dict_type": "a table",
    }.get(kind)
    if expected:
        return CatalogError(f"model {name!r}: {key} must be {expected}, got {value!r}")
    if kind in ("literal_error", "enum"):
        return CatalogError(f"model {name!r}: {key} must be {first['ctx']['expected']}, got {value!r}")
    return CatalogError(f"model {name!r}: {key} = {value!r}: {first['msg']}")


def _section_model(section: str, table: Mapping[str, Any]) -> type[BaseModel] | None:
    if not section:
        return CatalogEntry
    if section == "deploy":
        return GpuDeploy if (table.get("deploy") or {}).get("target") == "gpu" else LambdaDeploy
    sections: dict[str, type[BaseModel]] = {"gates": Gates, "limits": Limits}
    return sections.get(section)
