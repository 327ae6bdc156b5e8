"""Loaded models by name. Built once per process (Lambda init / server start), never per request."""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from functions.contract import Manifest
from functions.errors import ArtifactError, MaasError, ModelNotFoundError, ModelNotReadyError
from functions.inference.loader import resolve_artifact
from functions.inference.pipelines import Pipeline, pipeline_class
from functions.inference.session import resolve_providers
from functions.settings import Settings, get_settings
from functions.telemetry import logger


def load_pipeline(
    uri: str,
    *,
    cache_dir: Path,
    intra_op_threads: int = 0,
    warmup: bool = True,
    s3_client: Any = None,
    providers: list[str] | None = None,
) -> Pipeline[Any]:
    directory, manifest = resolve_artifact(uri, cache_dir, s3_client=s3_client)
    return pipeline_for(directory, manifest, intra_op_threads=intra_op_threads, warmup=warmup, providers=providers)


def pipeline_for(
    directory: Path,
    manifest: Manifest,
    *,
    intra_op_threads: int = 0,
    warmup: bool = True,
    providers: list[str] | None = None,
) -> Pipeline[Any]:
    cls = pipeline_class(manifest.task)
    if cls is None:
        raise ArtifactError(f"{manifest.name}: task {manifest.task} is not served by this runtime version")
    try:
        pipeline = cls(directory, manifest, intra_op_threads=intra_op_threads, providers=providers)
        if warmup:
            pipeline.warmup()
    except MaasError:
        raise
    except Exception as exc:  # onnxruntime/tokenizers refuse the files: a load failure, never a crashed process
        logger.exception("artifact files refused at session creation", extra={"model": manifest.name})
        raise ArtifactError(
            f"{manifest.name}: ONNX Runtime or the tokenizer could not load the artifact ({type(exc).__name__}); "
            "rebuild it with `maas build` for this runtime version"
        ) from exc
    return pipeline


class ModelRegistry:
    """The models this process serves, plus the ones that failed to load (reported, not hidden)."""

    def __init__(self) -> None:
        self._pipelines: dict[str, Pipeline[Any]] = {}
        self.failures: dict[str, str] = {}
        self.failure_codes: dict[str, str] = {}
        self.load_seconds: dict[str, float] = {}

    def add(self, pipeline: Pipeline[Any]) -> None:
        self._pipelines[pipeline.name] = pipeline

    def load(self, uri: str, settings: Settings, *, s3_client: Any = None) -> Pipeline[Any] | None:
        started = time.perf_counter()
        try:
            pipeline = load_pipeline(
                uri,
                cache_dir=settings.cache_dir,
                intra_op_threads=settings.intra_op_threads,
                warmup=settings.warmup,
                s3_client=s3_client,
                providers=resolve_providers(settings.execution_providers),
            )
        except MaasError as exc:
            self.failures[uri] = exc.message
            self.failure_codes[uri] = exc.code
            logger.error("model failed to load", extra={"uri": uri, "error": exc.message})
            return None
        self.load_seconds[pipeline.name] = time.perf_counter() - started
        self.add(pipeline)
        logger.info(
            "model loaded",
            extra={
                "model": pipeline.name,
                "version": pipeline.manifest.version,
                "seconds": round(self.load_seconds[pipeline.name], 3),
            },
        )
        return pipeline

    def get(self, name: str) -> Pipeline[Any]:
        pipeline = self._pipelines.get(name)
        if pipeline is not None:
            return pipeline
        if self.failures:
            raise ModelNotReadyError(
                f"model {name!r} is not loaded: {len(self.failures)} artifact(s) failed to load; see /v2/health/ready"
            )
        raise ModelNotFoundError(
            f"model {name!r} is not served here; available: {', '.join(sorted(self._pipelines)) or 'none'}",
            param="model",
        )

    def names(self) -> list[str]:
        return sorted(self._pipelines)

    def pipelines(self) -> list[Pipeline[Any]]:
        return [self._pipelines[name] for name in self.names()]

    def failure_summary(self) -> list[dict[str, str]]:
        """What readiness may tell any caller: one stable code per artifact that failed to load.

        The messages name local paths and S3 URIs, so they go to the logs only (logged at load time)."""
        return [{"code": self.failure_codes.get(uri, ArtifactError.code)} for uri in self.failures]

    @property
    def ready(self) -> bool:
        return bool(self._pipelines) and not self.failures


def registry_from_settings(settings: Settings) -> ModelRegistry:
    registry = ModelRegistry()
    for uri in settings.model_uris():
        registry.load(uri, settings)
    return registry


@lru_cache(maxsize=1)
def get_registry() -> ModelRegistry:
    """The process-wide registry, loaded from MAAS_MODELS on first use (Lambda's init phase)."""
    return registry_from_settings(get_settings())
