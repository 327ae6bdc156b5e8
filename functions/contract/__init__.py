"""The one home of every contract between the build, the runtime and the infrastructure.

- :mod:`.tasks` — the tasks maas serves and the OpenAI paths each answers;
- :mod:`.manifest` — the artifact: files with sha256, tensors, limits, gates, metrics;
- :mod:`.catalog` and :mod:`.rules` — ``catalog.toml``, typed and checked the same way for ``maas build``
  and ``cdk synth``; :mod:`.aws_limits` — the AWS limits those rules check against;
- :mod:`.deployment` — handler paths, container commands, environment variable names, fixed paths.

It imports pydantic and nothing else of maas's dependencies, so ``model_build`` and ``infra`` can read
it without the runtime's libraries, and nothing here can drift from a second copy. This package's own
namespace holds what the runtime reads (tasks, the manifest, the errors); the catalog, its rules and the
AWS limits are imported from their modules by those that need them (the build and infra), so a Lambda
function never builds the catalog's models at init.
"""

from __future__ import annotations

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
    "CatalogError",
    "ConfigError",
    "FileEntry",
    "GateResult",
    "GpuSettingsError",
    "Limits",
    "Manifest",
    "Quantization",
    "RecursiveTriggerError",
    "Task",
    "TensorSpec",
    "TimeoutRuleError",
    "content_version",
    "sha256_file",
]
