"""The catalog as infra deploys it: each contract entry with its built artifact and the choices synth makes.

The catalog is read by :func:`functions.contract.catalog.load_catalog`, the parser ``maas build`` uses,
so both accept and refuse the same entries. :func:`load_models` adds what only a deployment knows: the
artifact each model ships (its manifest, read through the contract's :class:`Manifest`), the package type
that fits Lambda's limits, the queue visibility timeout and the OpenAI paths each model owns. What AWS
would reject for this environment (the stage's API Gateway quota, a model too big for its memory) is
refused by :mod:`infra.guards`. Environment settings (account, region, stage, tiers) live in
:mod:`infra.settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from functions.contract import OPENAI_PATHS, Limits, Manifest, Task
from functions.contract.batch_plan import BatchSizing, batch_sizing, read_batch_rate
from functions.contract.catalog import CatalogEntry, GpuDeploy, LambdaDeploy
from functions.contract.rules import queue_visibility_s
from infra import guards
from infra.errors import MissingArtifactError

Deploy = LambdaDeploy | GpuDeploy
# Tasks whose HTTP responses stream (server-sent events, token by token): on Lambda through the Lambda Web Adapter
# in the model's image, on a GPU task straight from uvicorn; their API Gateway integrations use STREAM transfer mode.
STREAMING_TASKS = frozenset({Task.TEXT_GENERATION})


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


@dataclass(frozen=True)
class ModelSpec:
    """One catalog entry, resolved for deployment: everything a model stack needs to know."""

    entry: CatalogEntry
    artifact: Artifact
    package: Literal["zip", "image", "container"]
    openai_paths: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def task(self) -> Task:
        return self.entry.task

    @property
    def description(self) -> str:
        return self.entry.description

    @property
    def limits(self) -> Limits:
        return self.entry.limits

    @property
    def deploy(self) -> Deploy:
        return self.entry.deploy

    @property
    def target(self) -> str:
        """``lambda`` or ``gpu``."""
        return self.entry.deploy.target

    @property
    def input_prefix(self) -> str:
        return self.entry.input_prefix

    @property
    def output_prefix(self) -> str:
        return self.entry.output_prefix

    @property
    def streams(self) -> bool:
        """Whether the model's HTTP responses stream (its integrations use STREAM transfer mode)."""
        return self.entry.task in STREAMING_TASKS

    @property
    def queue_visibility_s(self) -> int:
        """The model's queue visibility timeout (the entry's own, else 6 x batch timeout + window)."""
        return queue_visibility_s(self.entry.deploy)

    def artifact_s3_prefix(self) -> str:
        """Where ``maas publish`` puts this version: ``models/<name>/<version>``."""
        return f"models/{self.name}/{self.artifact.version}"

    def batch_sizing(self, benchmarks_dir: Path, map_concurrency: int) -> BatchSizing:
        """Where the model's uploads go and how its chunked jobs are cut: its measured rate (``maas bench``, else
        its task's default) on its batch functions' memory and timeout."""
        deploy = self.entry.deploy
        memory = (deploy.batch_memory_mb or deploy.memory_mb) if isinstance(deploy, LambdaDeploy) else deploy.memory_mb
        return batch_sizing(
            read_batch_rate(benchmarks_dir, self.name, self.task),
            memory_mb=memory,
            timeout_s=deploy.batch_timeout_s,
            map_concurrency=map_concurrency,
            architecture=deploy.architecture if isinstance(deploy, LambdaDeploy) else "x86_64",
        )


def load_artifact(name: str, task: str, artifacts_dir: Path, *, allow_missing: bool) -> Artifact:
    """Read ``<artifacts_dir>/<name>/manifest.json`` through the contract and check it is this model's.

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
    where = f"model {name!r}: {path}"
    try:
        manifest = Manifest.read(directory)
    except (OSError, ValueError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise MissingArtifactError(f"{where} is not a valid manifest ({detail}); rebuild {name}") from exc
    if manifest.name != name:
        raise MissingArtifactError(f"{where} is for model {manifest.name!r}; rebuild {name}")
    if manifest.task != task:
        raise MissingArtifactError(
            f"{where} was built for task {manifest.task.value!r} but the catalog says {str(task)!r}; rebuild it"
        )
    if not manifest.files:
        raise MissingArtifactError(f"{where} lists no 'files'")
    sizes = {file_name: entry.size_bytes for file_name, entry in manifest.files.items()}
    return Artifact(name=name, version=manifest.version, task=task, directory=directory, files=sizes)


def load_models(
    catalog: Mapping[str, CatalogEntry],
    *,
    artifacts_dir: Path,
    allow_missing_artifacts: bool,
    runtime_bytes: Mapping[str, int],
    api_timeout_quota_s: int,
) -> tuple[ModelSpec, ...]:
    """Resolve every (already validated) catalog entry for this environment and apply the synth-time guards.

    ``runtime_bytes`` maps a Lambda architecture to the unzipped size of the runtime dependencies.
    """
    specs: list[ModelSpec] = []
    for name, entry in catalog.items():
        artifact = load_artifact(name, entry.task, artifacts_dir, allow_missing=allow_missing_artifacts)
        guards.check_api_timeout(name, entry.deploy, api_timeout_quota_s=api_timeout_quota_s)
        package: Literal["zip", "image", "container"] = "container"
        if isinstance(entry.deploy, LambdaDeploy):
            package = guards.check_lambda_sizing(
                name,
                entry.deploy,
                artifact_bytes=artifact.total_bytes,
                runtime_bytes=runtime_bytes[entry.deploy.architecture],
                streams=entry.task in STREAMING_TASKS,
            )
        else:
            guards.check_gpu_memory(name, entry.deploy, artifact_bytes=artifact.total_bytes)
        specs.append(ModelSpec(entry=entry, artifact=artifact, package=package))
    return _assign_openai_paths(specs)


def _assign_openai_paths(specs: list[ModelSpec]) -> tuple[ModelSpec, ...]:
    """Give each OpenAI path to one model: the one that claims it, else the first of its task.

    Two models claiming one path are refused by the contract's rules before this runs.
    """
    owner: dict[str, str] = {}
    for path in sorted({p for paths in OPENAI_PATHS.values() for p in paths}):
        candidates = [s for s in specs if path in OPENAI_PATHS.get(s.task, ())]
        claimed = [s.name for s in candidates if s.deploy.openai_route is True]
        auto = [s.name for s in candidates if s.deploy.openai_route is None]
        chosen = claimed[0] if claimed else (auto[0] if auto else None)
        if chosen:
            owner[path] = chosen
    return tuple(
        ModelSpec(
            entry=spec.entry,
            artifact=spec.artifact,
            package=spec.package,
            openai_paths=tuple(p for p, model in sorted(owner.items()) if model == spec.name),
        )
        for spec in specs
    )
