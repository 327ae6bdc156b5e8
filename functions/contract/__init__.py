"""The one home of every contract between the build, the runtime and the infrastructure.

- :mod:`.tasks` — the tasks maas serves and the OpenAI paths each answers;
- :mod:`.manifest` — the artifact: files with sha256, tensors, limits, gates, metrics;
- :mod:`.catalog` and :mod:`.rules` — ``catalog.toml``, typed and checked the same way for ``maas build``
  and ``cdk synth``; :mod:`.aws_limits` — the AWS limits those rules check against;
- :mod:`.deployment` — handler paths, container commands, environment variable names, fixed paths.

It imports pydantic and nothing else of maas's dependencies, so ``model_build`` and ``infra`` can read
it without the runtime's libraries, and nothing here can drift from a second copy.
"""

from __future__ import annotations

from functions.contract.catalog import CatalogEntry, Gates, GpuDeploy, LambdaDeploy, load_catalog, parse_catalog
from functions.contract.errors import (
    CatalogError,
    ConfigError,
    GpuSettingsError,
    RecursiveTriggerError,
    TimeoutRuleError,
)
from functions.contract.manifest import (
    MANIFEST_FILE,
    FileEntry,
    GateResult,
    Limits,
    Manifest,
    Quantization,
    TensorSpec,
    content_version,
    sha256_file,
)
from functions.contract.tasks import OPENAI_PATHS, Task

__all__ = [
    "MANIFEST_FILE",
    "OPENAI_PATHS",
    "CatalogEntry",
    "CatalogError",
    "ConfigError",
    "FileEntry",
    "GateResult",
    "Gates",
    "GpuDeploy",
    "GpuSettingsError",
    "LambdaDeploy",
    "Limits",
    "Manifest",
    "Quantization",
    "RecursiveTriggerError",
    "Task",
    "TensorSpec",
    "TimeoutRuleError",
    "content_version",
    "load_catalog",
    "parse_catalog",
    "sha256_file",
]
