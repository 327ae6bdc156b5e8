"""Typed, validated deployment configuration: ``catalog.toml`` + each artifact's manifest.

:func:`load_models` turns the catalog into :class:`ModelSpec` objects, each carrying its resolved
package type, queue visibility timeout, S3 prefixes and OpenAI routes. Everything that AWS would
reject at deploy time (or accept and then break at run time) is refused here by :mod:`infra.guards`
with an error that names the model and the key to change. Environment settings (account, region,
stage, tiers, tenants) live in :mod:`infra.settings`.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from infra import guards
from infra.errors import CatalogError, GpuSettingsError, MissingArtifactError

_T = TypeVar("_T")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
TASKS = (
    "sentence-embeddings",
    "text-classification",
    "text-generation",
    "translation",
    "image-classification",
)
# The OpenAI-compatible paths a task answers. OpenAI clients name the model in the body, so each path
# has one owning model per API (see ``openai_route``); every model also answers them under its own
# ``/models/<name>/v1/...`` prefix.
OPENAI_PATHS: dict[str, tuple[str, ...]] = {
    "sentence-embeddings": ("/v1/embeddings",),
    "text-generation": ("/v1/completions", "/v1/chat/completions"),
}


@dataclass(frozen=True)
class ModelLimits:
    """What one request may ask of the model (``[models.<name>.limits]``); shapes API validation."""

    max_batch: int = 32
    max_seq_len: int = 256
    max_input_chars: int = 20_000
    truncate: bool = True


@dataclass(frozen=True)
class Artifact:
    """The parts of ``manifest.json`` infra needs: version for S3 paths, file sizes for package sizing."""

    name: str
    version: str
    task: str
    directory: Path
    files: Mapping[str, int]
    built: bool = True

    @property
    def total_bytes(self) -> int:
        """Sum of the artifact's files as listed in the manifest (the manifest itself is negligible)."""
        return sum(self.files.values())


@dataclass(frozen=True, kw_only=True)
class CommonDeploy:
    """Deploy keys shared by both targets; every optional key has a safe default."""

    timeout_s: int
    memory_mb: int
    api_timeout_s: int = 29
    batch_timeout_s: int = 300
    queue_visibility_timeout_s: int | None = None
    max_receive_count: int = 3
    batch_size: int = 10
    batching_window_s: int = 0
    input_prefix: str | None = None
    output_prefix: str | None = None
    openai_route: bool | None = None
    reply_queue_arns: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LambdaDeploy(CommonDeploy):
    """``target = "lambda"``: three functions (HTTP, S3, SQS) from one package."""

    target: Literal["lambda"] = "lambda"
    architecture: Literal["arm64", "x86_64"] = "arm64"
    provisioned_concurrency: int = 0
    reserved_concurrency: int | None = None
    package: Literal["auto", "zip", "image"] = "auto"
    model_source: Literal["bundled", "s3"] = "bundled"
    ephemeral_storage_mb: int = 512
    batch_max_concurrency: int = 5
    batch_memory_mb: int | None = None


@dataclass(frozen=True, kw_only=True)
class GpuDeploy(CommonDeploy):
    """``target = "gpu"``: uvicorn in a CUDA container on ECS with EC2 GPU capacity."""

    target: Literal["gpu"] = "gpu"
    instance_type: str
    min_tasks: int
    max_tasks: int
    cpu_units: int | None = None
    scale_cpu_percent: int = 60
    worker_min_tasks: int = 0
    worker_max_tasks: int | None = None
    worker_backlog_per_task: int = 100


Deploy = LambdaDeploy | GpuDeploy


@dataclass(frozen=True)
class ModelSpec:
    """One catalog model, validated and resolved: everything a model stack needs to know."""

    name: str
    task: str
    description: str
    limits: ModelLimits
    deploy: Deploy
    artifact: Artifact
    input_prefix: str
    output_prefix: str
    queue_visibility_s: int
    package: Literal["zip", "image", "container"]
    openai_paths: tuple[str, ...] = field(default=())

    @property
    def target(self) -> str:
        """``lambda`` or ``gpu``."""
        return self.deploy.target

    def artifact_s3_prefix(self) -> str:
        """Where ``maas publish`` puts this version: ``models/<name>/<version>``."""
        return f"models/{self.name}/{self.artifact.version}"


def load_catalog(path: Path) -> dict[str, dict[str, Any]]:
    """Parse ``catalog.toml`` and return its ``[models.*]`` tables in file order."""
    if not path.is_file():
        raise CatalogError(f"catalog {path} not found: pass -c catalog=<path> or run from the repo root")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path} is not valid TOML: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogError(f"{path} has no [models.<name>] entries")
    return models


def load_artifact(name: str, task: str, artifacts_dir: Path, *, allow_missing: bool) -> Artifact:
    """Read ``<artifacts_dir>/<name>/manifest.json`` as plain JSON and check what infra relies on.

    With ``allow_missing`` a model without a manifest becomes an empty, unbuilt artifact (version
    ``unbuilt``) so the infrastructure can be previewed before any model is built.
    """
    directory = artifacts_dir / name
    path = directory / "manifest.json"
    if not path.is_file():
        if allow_missing:
            return Artifact(name=name, version="unbuilt", task=task, directory=directory, files={}, built=False)
        raise MissingArtifactError(
            f"model {name!r}: no manifest at {path}. Build it first (`maas build {name}`), point the app "
            f"at the built artifacts with -c artifactsDir=<dir>, or preview without artifacts with "
            f"-c allowMissingArtifacts=true"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MissingArtifactError(f"model {name!r}: {path} is not readable JSON: {exc}") from exc
    where = f"model {name!r}: {path}"
    if not isinstance(manifest, dict):
        raise MissingArtifactError(f"{where} must hold a JSON object")
    if manifest.get("name") != name:
        raise MissingArtifactError(f"{where} is for model {manifest.get('name')!r}; rebuild {name}")
    if manifest.get("task") != task:
        raise MissingArtifactError(
            f"{where} was built for task {manifest.get('task')!r} but the catalog says {task!r}; rebuild it"
        )
    version = manifest.get("version")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise MissingArtifactError(f"{where} has no valid 'version' (got {version!r})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise MissingArtifactError(f"{where} lists no 'files'")
    sizes: dict[str, int] = {}
    for file_name, entry in files.items():
        size = entry.get("size_bytes") if isinstance(entry, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise MissingArtifactError(f"{where}: files.{file_name}.size_bytes must be a byte count")
        if "/" in file_name or "\\" in file_name or file_name.startswith("."):
            raise MissingArtifactError(f"{where}: file name {file_name!r} must be a plain name")
        sizes[file_name] = size
    return Artifact(name=name, version=version, task=task, directory=directory, files=sizes)


def load_models(
    catalog: Mapping[str, Mapping[str, Any]],
    *,
    artifacts_dir: Path,
    allow_missing_artifacts: bool,
    runtime_bytes: Mapping[str, int],
    api_timeout_quota_s: int,
) -> tuple[ModelSpec, ...]:
    """Validate every catalog entry, read its manifest and apply the synth-time guards.

    ``runtime_bytes`` maps a Lambda architecture to the unzipped size of the runtime dependencies.
    """
    specs: list[ModelSpec] = []
    for name, entry in catalog.items():
        if not NAME_RE.fullmatch(name):
            raise CatalogError(f"model name {name!r} must match {NAME_RE.pattern} (it becomes a URL path)")
        if not isinstance(entry, Mapping):
            raise CatalogError(f"[models.{name}] must be a table")
        task = entry.get("task")
        if task not in TASKS:
            raise CatalogError(f"model {name!r}: task {task!r} is not one of {', '.join(TASKS)}")
        deploy = parse_deploy(name, entry.get("deploy"))
        limits = _parse_table(name, "limits", entry.get("limits") or {}, ModelLimits, CatalogError)
        artifact = load_artifact(name, task, artifacts_dir, allow_missing=allow_missing_artifacts)
        input_prefix = deploy.input_prefix or f"inputs/{name}/"
        output_prefix = deploy.output_prefix or f"outputs/{name}/"
        guards.check_reply_queues(name, deploy.reply_queue_arns)
        visibility = guards.check_timeouts(name, deploy, api_timeout_quota_s=api_timeout_quota_s)
        package: Literal["zip", "image", "container"] = "container"
        if isinstance(deploy, LambdaDeploy):
            package = guards.check_lambda_sizing(
                name, deploy, artifact_bytes=artifact.total_bytes, runtime_bytes=runtime_bytes[deploy.architecture]
            )
        else:
            guards.check_gpu(name, deploy, artifact_bytes=artifact.total_bytes)
        specs.append(
            ModelSpec(
                name=name,
                task=str(task),
                description=str(entry.get("description", "")),
                limits=limits,
                deploy=deploy,
                artifact=artifact,
                input_prefix=input_prefix,
                output_prefix=output_prefix,
                queue_visibility_s=visibility,
                package=package,
            )
        )
    guards.check_prefixes([(s.name, s.input_prefix, s.output_prefix) for s in specs])
    return _assign_openai_paths(specs)


def parse_deploy(name: str, table: object) -> Deploy:
    """Build the typed deploy settings of one model from its ``[deploy]`` table."""
    if not isinstance(table, Mapping):
        raise CatalogError(f"model {name!r}: missing [models.{name}.deploy] table with a target")
    target = table.get("target")
    if target == "lambda":
        return _parse_table(name, "deploy", table, LambdaDeploy, CatalogError)
    if target == "gpu":
        return _parse_table(name, "deploy", table, GpuDeploy, GpuSettingsError)
    raise CatalogError(f'model {name!r}: deploy.target must be "lambda" or "gpu", got {target!r}')


def _parse_table(
    name: str, section: str, table: Mapping[str, Any], cls: type[_T], missing_error: type[Exception]
) -> _T:
    """Check a TOML table against a dataclass: no unknown keys, right types, required keys present."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise CatalogError(
            f"model {name!r}: unknown {section} key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
        )
    missing = [k for k, f in known.items() if f.default is MISSING and f.default_factory is MISSING and k not in table]
    if missing:
        target = f" for target {table.get('target')!r}" if section == "deploy" else ""
        raise missing_error(f"model {name!r}: [{section}] needs {', '.join(missing)}{target}")
    values = {key: _coerce(name, f"{section}.{key}", value, hints[key]) for key, value in table.items()}
    return cls(**values)


def _coerce(name: str, key: str, value: Any, hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, key, value, inner[0])
    if origin is Literal:
        if value not in args:
            raise CatalogError(f"model {name!r}: {key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise CatalogError(f"model {name!r}: {key} must be a list of strings, got {value!r}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise CatalogError(f"model {name!r}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CatalogError(f"model {name!r}: {key} must be an integer, got {value!r}")
        if value < 0:
            raise CatalogError(f"model {name!r}: {key} must not be negative, got {value}")
        return value
    if hint is str:
        if not isinstance(value, str) or not value:
            raise CatalogError(f"model {name!r}: {key} must be a non-empty string, got {value!r}")
        return value
    raise CatalogError(f"model {name!r}: {key} has an unsupported type {hint!r}")  # pragma: no cover


def _assign_openai_paths(specs: list[ModelSpec]) -> tuple[ModelSpec, ...]:
    """Give each OpenAI path to one model: the one that claims it, else the first of its task."""
    owner: dict[str, str] = {}
    for path in sorted({p for paths in OPENAI_PATHS.values() for p in paths}):
        candidates = [s for s in specs if path in OPENAI_PATHS.get(s.task, ())]
        claimed = [s.name for s in candidates if s.deploy.openai_route is True]
        if len(claimed) > 1:
            raise CatalogError(
                f"models {', '.join(claimed)} all set openai_route = true for {path}; only one model can own it"
            )
        auto = [s.name for s in candidates if s.deploy.openai_route is None]
        chosen = claimed[0] if claimed else (auto[0] if auto else None)
        if chosen:
            owner[path] = chosen
    return tuple(
        replace(spec, openai_paths=tuple(p for p, model in sorted(owner.items()) if model == spec.name))
        for spec in specs
    )
